//! `jetsource relay-status`: how far each relay of a PostgreSQL event store is, read by the
//! runtime's `jetsource::postgres::relay_statuses`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use jetsource::postgres::{backlog, relay_status, relay_statuses, RelayStatus};

use crate::args::RelayStatusArgs;
use crate::database::Database;
use crate::error::CliError;
use crate::render;

/// Prints every relay (or the one named), by name: published, unpublished, lag, last progress.
/// Without any relay checkpoint, prints the events that wait for the first relay: all of them.
pub async fn run(
    database: &Database,
    args: &RelayStatusArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let place = database.place();
    let failed = |e| CliError::request(format!("reading the relays in {place}"), &e);
    let statuses = match &args.relay {
        Some(name) => match relay_status(database.pool(), name).await.map_err(failed)? {
            Some(status) => vec![status],
            None => {
                let known = relay_statuses(database.pool()).await.map_err(failed)?;
                return Err(CliError::RelayNotFound {
                    name: name.clone(),
                    place,
                    known: match known.as_slice() {
                        [] => "no relay has one yet".to_owned(),
                        known => format!(
                            "relays: {}",
                            known
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                });
            }
        },
        None => relay_statuses(database.pool()).await.map_err(failed)?,
    };
    let now = SystemTime::now();
    if statuses.is_empty() {
        let waiting = backlog(database.pool()).await.map_err(failed)?;
        writeln!(
            out,
            "no relay has a checkpoint in {place} yet: every event is unpublished"
        )?;
        line(out, "unpublished:", &waiting.events)?;
        lag_line(out, waiting.lag, waiting.oldest)?;
        return within_max_lag(args, "(none yet)", waiting.lag, &place);
    }
    match statuses.len() {
        1 => writeln!(out, "1 relay in {place}")?,
        n => writeln!(out, "{n} relays in {place}")?,
    }
    for status in &statuses {
        print(status, now, out)?;
    }
    statuses
        .iter()
        .try_for_each(|status| within_max_lag(args, &status.name, status.lag, &place))
}

/// Fails when `--max-lag` is given and `lag` exceeds it.
fn within_max_lag(
    args: &RelayStatusArgs,
    name: &str,
    lag: Option<Duration>,
    place: &str,
) -> Result<(), CliError> {
    match (args.max_lag, lag) {
        (Some(max), Some(lag)) if lag > max => Err(CliError::RelayLags {
            name: name.to_owned(),
            place: place.to_owned(),
            lag: render::duration(round_to_millis(lag)),
            max: render::duration(max),
        }),
        _ => Ok(()),
    }
}

/// One relay: its name, then one indented line per figure.
fn print(status: &RelayStatus, now: SystemTime, out: &mut impl Write) -> Result<(), CliError> {
    writeln!(out, "\nrelay {}", status.name)?;
    line(out, "published:", &status.published)?;
    line(out, "unpublished:", &status.unpublished)?;
    lag_line(out, status.lag, status.oldest_unpublished)?;
    let ago = now.duration_since(status.last_progress).unwrap_or_default();
    line(
        out,
        "last progress:",
        &format!(
            "{} ({} ago)",
            render::time(status.last_progress),
            render::duration(round_to_millis(ago))
        ),
    )
}

/// `lag:` and how long the oldest unpublished event has waited, or that none waits.
fn lag_line(
    out: &mut impl Write,
    lag: Option<Duration>,
    oldest: Option<SystemTime>,
) -> Result<(), CliError> {
    match (lag, oldest) {
        (Some(lag), Some(oldest)) => line(
            out,
            "lag:",
            &format!(
                "{} (oldest unpublished event from {})",
                render::duration(round_to_millis(lag)),
                render::time(oldest)
            ),
        ),
        _ => line(out, "lag:", &"none (nothing waits)"),
    }
}

/// `  <label> <value>`, the values aligned as in `events`.
fn line(out: &mut impl Write, label: &str, value: &dyn std::fmt::Display) -> Result<(), CliError> {
    writeln!(out, "  {label:<14} {value}")?;
    Ok(())
}

/// Whole milliseconds: a lag read to the nanosecond says nothing more.
fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u64::MAX as u128) as u64)
}
