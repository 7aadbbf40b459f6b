//! How values are shown: times, payloads, byte counts.

use std::time::SystemTime;

use jetsource::Codec;

/// A UTC timestamp, e.g. `2025-06-01T12:00:00.123456789Z`.
pub fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

/// The payload, each line indented by `indent`: JSON pretty-printed, anything else (Protobuf,
/// or JSON that does not parse) as hex bytes. Without a codec (a message that is not a
/// jetsource event), JSON is recognised by parsing.
pub fn payload(codec: Option<Codec>, bytes: &[u8], indent: &str) -> String {
    let parsed_json = || serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let (label, body) = match codec {
        Some(Codec::Json) => match parsed_json() {
            Some(value) => ("json".to_owned(), pretty(&value)),
            None => ("json, but does not parse".to_owned(), hex(bytes)),
        },
        Some(Codec::Protobuf) => (format!("protobuf, {} bytes", bytes.len()), hex(bytes)),
        None if bytes.is_empty() => ("empty".to_owned(), String::new()),
        None => match parsed_json() {
            Some(value) => ("json".to_owned(), pretty(&value)),
            None => (format!("{} bytes", bytes.len()), hex(bytes)),
        },
    };
    let mut out = format!("{indent}payload ({label}):");
    for line in body.lines() {
        out.push('\n');
        out.push_str(indent);
        out.push_str("  ");
        out.push_str(line);
    }
    out
}

fn pretty(value: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are strings.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Bytes as lowercase hex pairs, 16 to a line.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn json_payloads_are_pretty_printed() {
        assert_eq!(
            payload(Some(Codec::Json), br#"{"amount":5}"#, "  "),
            "  payload (json):\n    {\n      \"amount\": 5\n    }"
        );
    }

    #[test]
    fn protobuf_and_broken_json_payloads_are_shown_as_hex() {
        let bytes: Vec<u8> = (0..18).collect();
        assert_eq!(
            payload(Some(Codec::Protobuf), &bytes, ""),
            "payload (protobuf, 18 bytes):\n  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f\n  10 11"
        );
        assert_eq!(
            payload(Some(Codec::Json), b"{\"a\"", ""),
            "payload (json, but does not parse):\n  7b 22 61 22"
        );
        assert_eq!(
            payload(None, &[0x08, 0x05], ""),
            "payload (2 bytes):\n  08 05"
        );
    }

    #[test]
    fn times_are_utc_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(time(at), "2023-11-14T22:13:20.123456789Z");
    }
}
