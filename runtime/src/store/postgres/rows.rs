//! Events as rows: the columns an append sends, and a loaded row back into a [`StoredEvent`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::codec::Codec;
use crate::store::{NewEvent, StoreError, StoredEvent};

/// The columns every read selects. [`stored_event`] reads them by their place in this list
/// (a lookup by name hashes the name for every column of every row: about 5% of a load).
/// A literal rather than a `const`, so that a query can `concat!` it into static SQL: sqlx
/// takes a `&'static str` as safe, where a `format!` would need `AssertSqlSafe`.
macro_rules! event_columns {
    () => {
        "position, aggregate_type, aggregate_id, sequence, event_id, name, version, codec, \
         payload, occurred_at_ns, correlation_id, causation_id, command_id, \
         headers::TEXT AS headers"
    };
}
pub(crate) use event_columns;

/// The place of each column in `event_columns!`.
mod column {
    pub const POSITION: usize = 0;
    pub const AGGREGATE_TYPE: usize = 1;
    pub const AGGREGATE_ID: usize = 2;
    pub const SEQUENCE: usize = 3;
    pub const EVENT_ID: usize = 4;
    pub const NAME: usize = 5;
    pub const VERSION: usize = 6;
    pub const CODEC: usize = 7;
    pub const PAYLOAD: usize = 8;
    pub const OCCURRED_AT_NS: usize = 9;
    pub const CORRELATION_ID: usize = 10;
    pub const CAUSATION_ID: usize = 11;
    pub const COMMAND_ID: usize = 12;
    pub const HEADERS: usize = 13;
}

/// One array per column of `jetsource_append`'s events, in the events' order.
#[derive(Default)]
pub(crate) struct EventColumns {
    pub ids: Vec<Uuid>,
    pub names: Vec<&'static str>,
    pub versions: Vec<i32>,
    pub codecs: Vec<&'static str>,
    pub payloads: Vec<Vec<u8>>,
    pub occurred_at_ns: Vec<i64>,
    pub correlation_ids: Vec<String>,
    pub causation_ids: Vec<Option<String>>,
    pub headers: Vec<String>,
}

impl EventColumns {
    /// The columns of events that passed the store contract's checks.
    pub(crate) fn of(events: Vec<NewEvent>) -> Self {
        let mut columns = EventColumns::default();
        for event in events {
            columns.ids.push(event.id);
            columns.names.push(event.name);
            columns.versions.push(event.version as i32);
            columns.codecs.push(event.codec.as_str());
            columns.payloads.push(event.payload.to_vec());
            columns.occurred_at_ns.push(unix_nanos(event.timestamp));
            columns.correlation_ids.push(event.correlation_id);
            columns.causation_ids.push(event.causation_id);
            columns.headers.push(headers_json(&event.headers));
        }
        columns
    }
}

/// Nanoseconds since 1970 (the contract refused earlier times); saturates in the year 2262.
fn unix_nanos(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

fn headers_json(headers: &BTreeMap<String, String>) -> String {
    if headers.is_empty() {
        return "{}".to_owned();
    }
    // A map of strings always serializes.
    serde_json::to_string(headers).expect("string map serializes")
}

/// A row of `event_columns!` as a stored event.
pub(crate) fn stored_event(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let position: i64 = row.try_get(column::POSITION).map_err(backend)?;
    let position = position as u64;
    let corrupt = |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        StoreError::Corrupt {
            position,
            reason,
            source,
        }
    };
    let codec: &str = row.try_get(column::CODEC).map_err(backend)?;
    let Some(codec) = Codec::parse(codec) else {
        return Err(corrupt(format!("codec {codec:?} is unknown"), None));
    };
    let version: i32 = row.try_get(column::VERSION).map_err(backend)?;
    let version = u32::try_from(version)
        .map_err(|_| corrupt(format!("version {version} is negative"), None))?;
    let occurred_at_ns: i64 = row.try_get(column::OCCURRED_AT_NS).map_err(backend)?;
    let occurred = u64::try_from(occurred_at_ns).map_err(|_| {
        corrupt(
            format!("occurred_at_ns {occurred_at_ns} is before 1970"),
            None,
        )
    })?;
    let headers: &str = row.try_get(column::HEADERS).map_err(backend)?;
    let headers: BTreeMap<String, String> = serde_json::from_str(headers).map_err(|e| {
        corrupt(
            "headers are not a JSON object of strings".into(),
            Some(e.into()),
        )
    })?;
    let sequence: i64 = row.try_get(column::SEQUENCE).map_err(backend)?;
    let payload: Vec<u8> = row.try_get(column::PAYLOAD).map_err(backend)?;
    Ok(StoredEvent {
        id: row.try_get(column::EVENT_ID).map_err(backend)?,
        aggregate_type: row.try_get(column::AGGREGATE_TYPE).map_err(backend)?,
        aggregate_id: row.try_get(column::AGGREGATE_ID).map_err(backend)?,
        sequence: sequence as u64,
        position,
        name: row.try_get(column::NAME).map_err(backend)?,
        version,
        codec,
        payload: payload.into(),
        timestamp: UNIX_EPOCH + Duration::from_nanos(occurred),
        correlation_id: row.try_get(column::CORRELATION_ID).map_err(backend)?,
        causation_id: row.try_get(column::CAUSATION_ID).map_err(backend)?,
        command_id: row.try_get(column::COMMAND_ID).map_err(backend)?,
        headers,
    })
}

/// A database failure as a store error, keeping it as the source.
pub(crate) fn backend(error: sqlx::Error) -> StoreError {
    StoreError::Backend(Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::column;

    /// `stored_event` reads each column at the place `column` gives it.
    #[test]
    fn column_places_follow_the_select_list() {
        let names: Vec<&str> = event_columns!()
            .split(',')
            .map(|c| c.split_whitespace().last().expect("a column"))
            .collect();
        let places = [
            ("position", column::POSITION),
            ("aggregate_type", column::AGGREGATE_TYPE),
            ("aggregate_id", column::AGGREGATE_ID),
            ("sequence", column::SEQUENCE),
            ("event_id", column::EVENT_ID),
            ("name", column::NAME),
            ("version", column::VERSION),
            ("codec", column::CODEC),
            ("payload", column::PAYLOAD),
            ("occurred_at_ns", column::OCCURRED_AT_NS),
            ("correlation_id", column::CORRELATION_ID),
            ("causation_id", column::CAUSATION_ID),
            ("command_id", column::COMMAND_ID),
            ("headers", column::HEADERS),
        ];
        assert_eq!(names.len(), places.len());
        for (name, place) in places {
            assert_eq!(names[place], name);
        }
    }
}
