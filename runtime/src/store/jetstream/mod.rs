//! The NATS JetStream backend.
//!
//! # Layout
//! One stream per bounded context captures `<prefix>.>`; each event is one message in the
//! [`crate::wire`] format: subject `<prefix>.<aggregate_type>.<aggregate_id>.<event_name>`, the
//! bare payload, and one `Jetsource` header with the metadata every event needs. The event's
//! position is its stream sequence. Reading a file top to bottom follows an append through
//! `store.rs` (checks) → `commit.rs` (what is known, the guard, the answer) → `append.rs` (the
//! messages and the publish protocol), and a load through `load.rs` → `read.rs`.
//!
//! # Concurrency
//! Every append carries `Nats-Expected-Last-Subject-Sequence` (the stream sequence of the
//! aggregate's last event) with `Nats-Expected-Last-Subject-Sequence-Subject:
//! <prefix>.<type>.<id>.*`, so two writers can never both write version `n`; errors 10071 and
//! 10164 (the clustered form, also returned while another write to the aggregate is in flight)
//! become [`StoreError::Conflict`]. Users only see aggregate versions (the sequence in the `Jetsource`
//! header). A bounded in-memory map keeps each recently used aggregate's (version, last stream
//! sequence, command outcomes), filled by loads and appends, so an append to a warm aggregate
//! needs no lookup; on a miss the last message of the aggregate is read through the stream
//! leader (`STREAM.MSG.GET`, never direct get, which may be stale). An append copies only what
//! it needs out of that map (two numbers and at most one outcome) and records its result in
//! place, under a lock held for neither a publish nor a clone of the entry: many aggregates
//! append in parallel over one connection.
//!
//! # Multi-event commits
//! One event is one plain publish (no batch cost). Several events of one command are published
//! as one JetStream atomic batch (`Nats-Batch-Id`/`-Sequence`/`-Commit`): all are stored or none,
//! and each event keeps its own subject, position and headers, so `read_all`, subject filters and
//! consumers see ordinary events. At most 32 batches per store are open at once (the server
//! refuses more than 50 per stream with error 10210, which is retried with backoff). One message
//! carrying a whole commit would be much faster on single-replica file streams (the README has
//! the figures), but its events would share one stream position and their names would vanish
//! from subjects, which subscribers filter on.
//!
//! # Idempotency
//! With a command id, each message carries `Nats-Msg-Id: <type>.<id>:<command>:<n>` (the server
//! drops repeats inside its `duplicate_window`; readers take the command id from it). Beyond the
//! window the check is durable: before appending, the store knows every command id in the
//! aggregate's history (from the load that preceded the command, or from a scan on a cold
//! cache), and the OCC guard makes that knowledge exact at the moment of the write. A retry
//! after any time returns the first outcome with `duplicate: true`.
//!
//! # Loads
//! The store keeps the recent events of recently used aggregates (64 MiB by default): loading
//! such an aggregate reads only what was appended after them, one batched direct get that
//! usually finds nothing. Otherwise the load starts at the closest position it knows (the
//! cached version's, a snapshot's, or the stream's start, from which the server jumps to the
//! aggregate's first message by its subject index). A first direct-get page of up to 128
//! events tells how many remain; at least 128 more are drained through a short-lived pull
//! consumer (filtered on `<prefix>.<type>.<id>.*`, memory storage, one replica, no acks, every
//! delivery checked for gaps) that is deleted before the load returns, and a 5 s inactivity
//! threshold removes it should the process die first. When no consumer can be created (for
//! example error 10026, the stream's consumer limit) or one delivers out of order, the load goes
//! on by direct get. On a replicated stream direct get may be answered by a follower that is a
//! moment behind; a load that missed the newest events only makes the next append conflict and
//! catch up. The server's cost of a read follows the distance in the stream between the
//! aggregate's first and last events read, not the stream's length: snapshots bound it for
//! long-lived aggregates.
//!
//! # Snapshots
//! In the key-value bucket [`StreamConfig::snapshot_bucket`], one key per aggregate.

mod append;
pub(crate) use append::ApiError;
mod cache;
mod commit;
mod config;
mod connect;
mod error;
pub(crate) mod headers;
mod history;
mod load;
mod publish;
mod read;
mod refusals;
#[cfg(feature = "postgres")]
mod relayed;
mod shared;
mod snapshot;
mod store;

pub use config::{Storage, StreamConfig};
pub use connect::{ConnectOptions, Credentials};
pub use error::JetStreamError;
pub use publish::{PublishError, PublishReceipt, Publisher};
pub use store::JetStreamStore;

/// Events and keys for the unit tests of this room.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::store::{AggregateKey, StoredEvent};
    use crate::{AggregateId, Codec};

    /// Aggregate `account/a1`.
    pub(crate) fn key() -> AggregateKey {
        AggregateKey::new("account", AggregateId::new("a1").unwrap())
    }

    /// Event `sequence` of `account/a1`, at position `sequence * 10`.
    pub(crate) fn event(sequence: u64, command: Option<&str>) -> StoredEvent {
        StoredEvent {
            id: uuid::Uuid::now_v7(),
            aggregate_type: "account".into(),
            aggregate_id: "a1".into(),
            sequence,
            position: sequence * 10,
            name: "deposited".into(),
            version: 1,
            codec: Codec::Json,
            payload: bytes::Bytes::from_static(b"{}"),
            timestamp: std::time::SystemTime::now(),
            correlation_id: "c".into(),
            causation_id: None,
            command_id: command.map(str::to_owned),
            headers: Default::default(),
        }
    }
}
