//! Quarantining a poisoned event, so that its aggregate loads and takes commands again.
//!
//! One event that no longer decodes (a malformed payload, a version newer than the code) makes
//! every load of its aggregate fail with [`RepositoryError::Decode`](crate::RepositoryError).
//! [`quarantine`] appends a record, the reserved event [`QUARANTINE_EVENT`], to the same
//! aggregate: it names the event (sequence, id, name, version) and says who quarantined it and
//! why. From then on replay leaves out the quarantined event and the record itself: they never
//! reach `apply`, so the aggregate loads as if the event had not happened, and takes commands.
//! Nothing is deleted: the original bytes stay in the history (`EventStore::load`, the CLI's
//! `events`) for a later repair.
//!
//! The record is appended through the ordinary [`EventStore::append`], expecting the
//! aggregate's current version, so it behaves the same on every store. Its name starts with
//! [`RESERVED_NAME_PREFIX`], which no user event can have: subscribers, whose filters name the
//! events they handle, never receive it.
//!
//! ```
//! use jetsource::quarantine::{quarantine, Quarantine};
//! use jetsource::{AggregateId, AggregateKey, Codec, EventStore, ExpectedVersion, InMemoryStore, NewEvent};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let key = AggregateKey::new("account", AggregateId::new("a1").unwrap());
//! # let event = NewEvent { id: uuid::Uuid::now_v7(), name: "deposited", version: 9,
//! #     codec: Codec::Json, payload: "{}".into(), timestamp: std::time::SystemTime::now(),
//! #     correlation_id: "c".into(), causation_id: None, headers: Default::default() };
//! # store.append(&key, ExpectedVersion::Exact(0), None, vec![event]).await.unwrap();
//! // Event 1 is `deposited` version 9, which this code cannot read.
//! let done = quarantine(
//!     &store,
//!     &key,
//!     Quarantine::event(1, "deposited").by("alice").because("written by a rolled-back release"),
//! )
//! .await
//! .unwrap();
//! assert!(done.appended);
//! assert_eq!((done.record.sequence, done.record.record_sequence), (1, 2));
//! assert_eq!(store.load(&key, 1).await.unwrap()[0].version, 9); // still there
//! # });
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DecodeError;
use crate::event::Codec;
use crate::id::InvalidId;
use crate::store::contract::allowing_reserved_names;
pub use crate::store::contract::RESERVED_NAME_PREFIX;
use crate::store::{AggregateKey, EventStore, ExpectedVersion, NewEvent, StoreError, StoredEvent};

/// The reserved name of a quarantine record.
pub const QUARANTINE_EVENT: &str = "$quarantine";

/// The version of the record's JSON payload.
const RECORD_VERSION: u32 = 1;

/// How many times a quarantine is tried again after another writer appended to the aggregate
/// between reading its history and appending the record.
const CONFLICT_RETRIES: u32 = 10;

/// What to quarantine, and the audit trail: who and why.
///
/// ```
/// let q = jetsource::quarantine::Quarantine::event(7, "deposited")
///     .by("alice@ops")
///     .because("payload written by the 2.3.0 bug, see INC-42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    sequence: u64,
    name: String,
    event_id: Option<Uuid>,
    by: String,
    reason: String,
}

impl Quarantine {
    /// The event at aggregate sequence `sequence`, which must be named `name` (the operator's
    /// check that the sequence is the event they mean).
    pub fn event(sequence: u64, name: impl Into<String>) -> Self {
        Quarantine {
            sequence,
            name: name.into(),
            event_id: None,
            by: String::new(),
            reason: String::new(),
        }
    }

    /// Also requires the event's id to be `id`.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Who quarantines it (required).
    pub fn by(mut self, who: impl Into<String>) -> Self {
        self.by = who.into();
        self
    }

    /// Why (required).
    pub fn because(mut self, why: impl Into<String>) -> Self {
        self.reason = why.into();
        self
    }
}

/// A quarantine record as stored in an aggregate's history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantineRecord {
    /// The sequence of the quarantined event.
    pub sequence: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its stored version.
    pub version: u32,
    /// Who quarantined it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (millisecond precision).
    pub at: SystemTime,
    /// The sequence of the record itself.
    pub record_sequence: u64,
}

/// What [`quarantine`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantined {
    /// The record that quarantines the event: the new one, or the earlier one when the event
    /// was quarantined already.
    pub record: QuarantineRecord,
    /// Whether this call appended the record (`false`: the event was quarantined before and
    /// nothing changed, so repeating a quarantine is harmless).
    pub appended: bool,
}

/// Why a quarantine was refused or failed; nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// The aggregate id cannot be one NATS subject token.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// `by` or `because` was not given: a quarantine without its audit trail is refused.
    #[error("a quarantine needs {0}")]
    Incomplete(&'static str),
    /// The aggregate has no event at that sequence.
    #[error("{aggregate} has no event at sequence {sequence} (its version is {version})")]
    NoSuchEvent {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The sequence given.
        sequence: u64,
        /// The aggregate's version: its last sequence, 0 when it has no events.
        version: u64,
    },
    /// The event at that sequence has another name than the one given.
    #[error("event {sequence} of {aggregate} is {found:?}, not {expected:?}")]
    NameMismatch {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The sequence given.
        sequence: u64,
        /// The name given.
        expected: String,
        /// The stored name.
        found: String,
    },
    /// The event at that sequence has another id than the one given.
    #[error("event {sequence} of {aggregate} has id {found}, not {expected}")]
    IdMismatch {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The sequence given.
        sequence: u64,
        /// The id given.
        expected: Uuid,
        /// The stored id.
        found: Uuid,
    },
    /// The event at that sequence is a quarantine record; replay leaves records out already.
    #[error("event {sequence} of {aggregate} is a quarantine record, not an event to quarantine")]
    IsRecord {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The sequence given.
        sequence: u64,
    },
    /// A quarantine record in the history cannot be read.
    #[error("cannot read the quarantine record at sequence {sequence} of {aggregate}")]
    Record {
        /// The aggregate.
        aggregate: AggregateKey,
        /// The record's sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// The store failed, or other writers kept appending to the aggregate until the retries
    /// ran out (a [`StoreError::Conflict`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The record's JSON payload.
#[derive(Serialize, Deserialize)]
struct Payload {
    sequence: u64,
    event_id: Uuid,
    name: String,
    version: u32,
    by: String,
    reason: String,
    at_unix_ms: u64,
}

/// Quarantines one event of aggregate `key` in `store`: checks that the event exists with the
/// name (and id) given, and appends a [`QUARANTINE_EVENT`] record, unless the event is
/// quarantined already (then it returns the earlier record and appends nothing).
///
/// Works without the aggregate's Rust type (the CLI uses it). A [`Repository`] of the
/// aggregate should use [`Repository::quarantine`] instead, which also drops its cached state;
/// any other process's cached state is caught by optimistic concurrency (its next command
/// conflicts and reloads).
///
/// [`Repository`]: crate::Repository
/// [`Repository::quarantine`]: crate::Repository::quarantine
pub async fn quarantine<S: EventStore>(
    store: &S,
    key: &AggregateKey,
    quarantine: Quarantine,
) -> Result<Quarantined, QuarantineError> {
    if quarantine.by.trim().is_empty() {
        return Err(QuarantineError::Incomplete("who quarantines (by)"));
    }
    if quarantine.reason.trim().is_empty() {
        return Err(QuarantineError::Incomplete("a reason (because)"));
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let history = store.load(key, 1).await?;
        let target = check(key, &history, &quarantine)?;
        if let Some(record) = records(&history)
            .map(|record| record.map_err(|(sequence, source)| record_error(key, sequence, source)))
            .find(|record| {
                record
                    .as_ref()
                    .map_or(true, |r| r.sequence == quarantine.sequence)
            })
        {
            return Ok(Quarantined {
                record: record?,
                appended: false,
            });
        }
        let version = history.last().map_or(0, |e| e.sequence);
        let (event, record) = new_record(target, &quarantine, version + 1);
        let append = store.append(key, ExpectedVersion::Exact(version), None, vec![event]);
        match allowing_reserved_names(append).await {
            Ok(_) => {
                return Ok(Quarantined {
                    record,
                    appended: true,
                })
            }
            Err(StoreError::Conflict { .. }) if attempts <= CONFLICT_RETRIES => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// The event `quarantine` names in `history`, if it is there as described.
fn check<'h>(
    key: &AggregateKey,
    history: &'h [StoredEvent],
    quarantine: &Quarantine,
) -> Result<&'h StoredEvent, QuarantineError> {
    let sequence = quarantine.sequence;
    let Some(target) = history.iter().find(|e| e.sequence == sequence) else {
        return Err(QuarantineError::NoSuchEvent {
            aggregate: key.clone(),
            sequence,
            version: history.last().map_or(0, |e| e.sequence),
        });
    };
    if target.name == QUARANTINE_EVENT {
        return Err(QuarantineError::IsRecord {
            aggregate: key.clone(),
            sequence,
        });
    }
    if target.name != quarantine.name {
        return Err(QuarantineError::NameMismatch {
            aggregate: key.clone(),
            sequence,
            expected: quarantine.name.clone(),
            found: target.name.clone(),
        });
    }
    match quarantine.event_id {
        Some(expected) if expected != target.id => Err(QuarantineError::IdMismatch {
            aggregate: key.clone(),
            sequence,
            expected,
            found: target.id,
        }),
        _ => Ok(target),
    }
}

/// The record quarantining `target`, as the event to append at `record_sequence` and as read
/// back.
fn new_record(
    target: &StoredEvent,
    quarantine: &Quarantine,
    record_sequence: u64,
) -> (NewEvent, QuarantineRecord) {
    let now = SystemTime::now();
    let at_unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let payload = Payload {
        sequence: target.sequence,
        event_id: target.id,
        name: target.name.clone(),
        version: target.version,
        by: quarantine.by.clone(),
        reason: quarantine.reason.clone(),
        at_unix_ms,
    };
    // A struct of strings and numbers always serializes.
    let bytes = serde_json::to_vec(&payload).unwrap_or_default();
    let event = NewEvent {
        id: Uuid::now_v7(),
        name: QUARANTINE_EVENT,
        version: RECORD_VERSION,
        codec: Codec::Json,
        payload: bytes.into(),
        timestamp: now,
        correlation_id: Uuid::now_v7().to_string(),
        // What the record is about, as a causation link tools already follow.
        causation_id: Some(target.id.to_string()),
        headers: Default::default(),
    };
    (event, payload.into_record(record_sequence))
}

impl Payload {
    fn into_record(self, record_sequence: u64) -> QuarantineRecord {
        QuarantineRecord {
            sequence: self.sequence,
            event_id: self.event_id,
            name: self.name,
            version: self.version,
            by: self.by,
            reason: self.reason,
            at: UNIX_EPOCH + Duration::from_millis(self.at_unix_ms),
            record_sequence,
        }
    }
}

/// The quarantine record `event` is, or `None` when it is not one.
pub fn record_of(event: &StoredEvent) -> Option<Result<QuarantineRecord, DecodeError>> {
    if event.name != QUARANTINE_EVENT {
        return None;
    }
    let malformed = |source: Box<dyn std::error::Error + Send + Sync>| DecodeError::Malformed {
        name: event.name.clone(),
        version: event.version,
        codec: event.codec,
        source,
    };
    let decoded = match (event.version, event.codec) {
        (RECORD_VERSION, Codec::Json) => serde_json::from_slice::<Payload>(&event.payload)
            .map(|payload| payload.into_record(event.sequence))
            .map_err(|e| malformed(Box::new(e))),
        (RECORD_VERSION, found) => Err(DecodeError::CodecMismatch {
            name: event.name.clone(),
            version: event.version,
            expected: Codec::Json,
            found,
        }),
        (version, _) if version > RECORD_VERSION => Err(DecodeError::FutureVersion {
            name: event.name.clone(),
            version,
            latest: RECORD_VERSION,
        }),
        (version, _) => Err(DecodeError::UnknownVersion {
            name: event.name.clone(),
            version,
        }),
    };
    Some(decoded)
}

/// The quarantine records among `events`, in order; an unreadable one as its sequence and why.
fn records(
    events: &[StoredEvent],
) -> impl Iterator<Item = Result<QuarantineRecord, (u64, DecodeError)>> + '_ {
    events.iter().filter_map(|event| {
        record_of(event).map(|record| record.map_err(|error| (event.sequence, error)))
    })
}

fn record_error(key: &AggregateKey, sequence: u64, source: DecodeError) -> QuarantineError {
    QuarantineError::Record {
        aggregate: key.clone(),
        sequence,
        source,
    }
}

/// The sequences replay leaves out of `events`: the events their quarantine records name and
/// the records themselves. An unreadable record is its sequence and why.
pub(crate) fn left_out(events: &[StoredEvent]) -> Result<Retracted, (u64, DecodeError)> {
    let mut retracted = Retracted::default();
    for record in records(events) {
        let record = record?;
        retracted.events.insert(record.sequence);
        retracted.records.insert(record.record_sequence);
    }
    Ok(retracted)
}

/// What quarantine records take out of a history.
#[derive(Debug, Default)]
pub(crate) struct Retracted {
    /// The quarantined events' sequences.
    pub(crate) events: BTreeSet<u64>,
    /// The records' own sequences.
    pub(crate) records: BTreeSet<u64>,
}

impl Retracted {
    /// Whether replay leaves the event at `sequence` out.
    pub(crate) fn skips(&self, sequence: u64) -> bool {
        self.events.contains(&sequence) || self.records.contains(&sequence)
    }

    /// The earliest quarantined event, if any.
    pub(crate) fn earliest(&self) -> Option<u64> {
        self.events.first().copied()
    }
}
