//! UTC times written in attributes: `"2026-01-31T08:00:00Z"`, optionally with a fraction of a
//! second. Parsed at compile time, so a typo is a compile error, not a consumer that starts
//! at the wrong place.

/// Seconds and nanoseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, or `None`
/// when `text` is not such a time (or is before 1970).
pub fn parse_utc(text: &str) -> Option<(u64, u32)> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = text.split_once(['T', 't'])?;
    let mut date = date.splitn(3, '-');
    let year: i64 = number(date.next()?, 4)?;
    let month: i64 = number(date.next()?, 2)?;
    let day: i64 = number(date.next()?, 2)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock = clock.splitn(3, ':');
    let hour: i64 = number(clock.next()?, 2)?;
    let minute: i64 = number(clock.next()?, 2)?;
    let second: i64 = number(clock.next()?, 2)?;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(digits) if (1..=9).contains(&digits.len()) => {
            let value: u32 = number(digits, digits.len())?;
            value * 10u32.pow(9 - digits.len() as u32)
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some((u64::try_from(seconds).ok()?, nanos))
}

/// `digits` ASCII digits exactly.
fn number<T: std::str::FromStr>(text: &str, digits: usize) -> Option<T> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utc_times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_utc("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
        assert_eq!(
            parse_utc("2026-01-31T08:00:00.25Z"),
            Some((1_769_846_400, 250_000_000))
        );
        assert_eq!(parse_utc("2024-02-29T23:59:59Z"), Some((1_709_251_199, 0)));
    }

    #[test]
    fn refuses_what_is_not_a_utc_time() {
        for bad in [
            "2026-01-31",
            "2026-01-31T08:00:00",
            "2026-01-31T08:00:00+01:00",
            "2026-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-1-01T00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "later",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
