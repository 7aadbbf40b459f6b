//! Why an event was dead-lettered, and a dead letter as each backend keeps it: the JetStream
//! one in its wire form (subject, headers, payload), the in-memory one with the stored event.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use crate::store::StoredEvent;

/// Why a message was dead-lettered.
///
/// ```
/// use jetsource::subscriber::DeadLetterReason;
/// assert_eq!(DeadLetterReason::parse("future_version"), Some(DeadLetterReason::FutureVersion));
/// assert_eq!(DeadLetterReason::MaxDeliver.as_str(), "max_deliver");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler returned [`HandlerError::Permanent`](super::HandlerError::Permanent).
    Permanent,
    /// A retryable failure persisted through `max_deliver` attempts.
    MaxDeliver,
    /// The payload could not be decoded into the handled type.
    Undecodable,
    /// No handled event type knows the stored name.
    UnknownEvent,
    /// The stored version is newer than the code knows.
    FutureVersion,
    /// The message lacks the metadata headers of a jetsource event.
    Corrupt,
}

impl DeadLetterReason {
    /// The wire form stored in `Jetsource-Dlq-Reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Permanent => "permanent",
            DeadLetterReason::MaxDeliver => "max_deliver",
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::UnknownEvent => "unknown_event",
            DeadLetterReason::FutureVersion => "future_version",
            DeadLetterReason::Corrupt => "corrupt",
        }
    }

    /// Parses [`DeadLetterReason::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "permanent" => DeadLetterReason::Permanent,
            "max_deliver" => DeadLetterReason::MaxDeliver,
            "undecodable" => DeadLetterReason::Undecodable,
            "unknown_event" => DeadLetterReason::UnknownEvent,
            "future_version" => DeadLetterReason::FutureVersion,
            "corrupt" => DeadLetterReason::Corrupt,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dead-lettered message of a JetStream subscriber, as `DeadLetters::list` returns it.
///
/// The event's id, name and version are read from its original subject and headers (wire
/// format 1 or 0); a message that carried no readable jetsource metadata (a
/// [`DeadLetterReason::Corrupt`] letter, usually) has `None` for all three.
///
/// ```
/// use jetsource::subscriber::DeadLetter;
/// fn show(letter: &DeadLetter) {
///     println!("{} at {}: {} ({})", letter.subject, letter.position, letter.reason, letter.error);
///     if let (Some(name), Some(version), Some(id)) =
///         (&letter.event_name, letter.event_version, letter.event_id)
///     {
///         println!("  event {name} v{version}, id {id}");
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub dead_letter_sequence: u64,
    /// The subscriber (durable name) that gave up on it.
    pub subscriber: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// The error text.
    pub error: String,
    /// The event's original subject.
    pub subject: String,
    /// The event's stream position.
    pub position: u64,
    /// The event id; `None` when the message had no readable jetsource metadata.
    pub event_id: Option<Uuid>,
    /// The event's wire name; `None` when the message had no readable jetsource metadata.
    pub event_name: Option<String>,
    /// The schema version the event was stored with; `None` when the message had no readable
    /// jetsource metadata.
    pub event_version: Option<u32>,
    /// Handler attempts before it was given up, in total: a letter that was redriven and
    /// failed again counts the attempts before the redrive too.
    pub delivery_count: u64,
    /// When it was dead-lettered.
    pub dead_lettered_at: SystemTime,
    /// All headers of the dead letter (the original `Jetsource-*` ones and `Jetsource-Dlq-*`).
    pub headers: BTreeMap<String, String>,
    /// The original payload.
    pub payload: Bytes,
}

/// One event an in-memory subscriber gave up on.
///
/// The in-memory store only holds events with their metadata, so unlike a JetStream
/// [`DeadLetter`] the event's id, name and version are always known.
///
/// ```
/// # use jetsource::subscriber::InMemoryDeadLetter;
/// fn show(letter: &InMemoryDeadLetter) {
///     println!("{} v{} ({}) {}/{} at {}: {} ({}, after {} attempts)",
///         letter.event_name, letter.event_version, letter.event_id,
///         letter.event.aggregate_type, letter.event.aggregate_id,
///         letter.event.position, letter.reason, letter.error, letter.delivery_count);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InMemoryDeadLetter {
    /// Its number among the subscriber's dead letters, from 1.
    pub dead_letter_sequence: u64,
    /// The subscriber (durable name) that gave up on it.
    pub subscriber: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// The error text.
    pub error: String,
    /// The event as stored: its original name, version, aggregate, position, payload and
    /// metadata.
    pub event: StoredEvent,
    /// The event id (`event.id`).
    pub event_id: Uuid,
    /// The event's wire name as stored (`event.name`).
    pub event_name: String,
    /// The schema version the event was stored with (`event.version`).
    pub event_version: u32,
    /// Handler attempts before it was given up (at least 1, also when it never decoded), in
    /// total: a letter that was redriven and failed again counts the attempts before the
    /// redrive too.
    pub delivery_count: u64,
    /// When it was dead-lettered.
    pub dead_lettered_at: SystemTime,
}
