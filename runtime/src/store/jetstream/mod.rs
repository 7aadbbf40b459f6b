//! The NATS JetStream backend.
//!
//! # Layout
//! One stream per bounded context captures `<prefix>.>`; each event is one message on
//! `<prefix>.<aggregate_type>.<aggregate_id>.<event_name>` with its metadata in `Jetsource-*`
//! headers (event id, name, version, codec, aggregate sequence, correlation, causation, command
//! id, timestamp in Unix nanoseconds; user headers as `Jetsource-H-<name>`, and `traceparent`
//! also under its own name). The event's position is its stream sequence.
//!
//! # Concurrency
//! Every append carries `Nats-Expected-Last-Subject-Sequence` (the stream sequence of the
//! aggregate's last event) with `Nats-Expected-Last-Subject-Sequence-Subject:
//! <prefix>.<type>.<id>.*`, so two writers can never both write version `n`; errors 10071 and
//! 10164 (the clustered form, also returned while another write to the aggregate is in flight)
//! become [`StoreError::Conflict`]. Users only see aggregate versions (the `Jetsource-Sequence`
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
//! refuses more than 50 per stream with error 10210, which is retried with backoff).
//!
//! The trade-off, measured by `benches/jetstream.rs` (2 cores, loopback, nats-server 2.15.1,
//! file storage, 100 aggregates in parallel, 10 commands of 10 events each): raw atomic batches
//! reach 0.75k-3.9k events/s depending on the run (2.7k in the run below), jetsource 0.82x-1.6x
//! that in the same run (0.91x); one message carrying the whole commit reaches 325k-430k
//! events/s, 100x-540x the batch (122x in the run below; an earlier run measured 60x). We keep
//! atomic batches anyway: with one message per commit, several events would share one stream
//! sequence (the store contract gives each event its own increasing `position`, which
//! subscribers checkpoint on), and the event names would vanish from subjects, which
//! subscribers and consumers filter on. Commands that emit one event, the common case, pay
//! nothing for this choice.
//!
//! # Idempotency
//! With a command id, each message carries `Nats-Msg-Id: <type>.<id>:<command>:<n>` (the server
//! drops repeats inside its `duplicate_window`) and `Jetsource-Command-Id`. Beyond the window the
//! check is durable: before appending, the store knows every command id in the aggregate's
//! history (from the load that preceded the command, or from a scan on a cold cache), and the OCC
//! guard makes that knowledge exact at the moment of the write. A retry after any time returns
//! the first outcome with `duplicate: true`.
//!
//! # Loads
//! A load first knows how many events to expect: from the cache, or on a miss from one lookup of
//! the aggregate's last event through the stream leader (which also answers an empty or
//! up-to-date load by itself). At least 128 expected events: the load drains a short-lived pull
//! consumer (filtered on `<prefix>.<type>.<id>.*`, memory storage, one replica, no acks, pulled
//! in pages of 500 like async-nats' ordered consumer, every delivery checked for gaps) until it
//! reports nothing pending, then deletes it before returning; a 5 s inactivity threshold removes
//! it should the process die first. When no consumer can be created (for example error 10026,
//! the stream's consumer limit) or one delivers out of order, the load goes on by direct get
//! from the last event read. Smaller loads, and `read_all`, use batched direct get
//! (`$JS.API.DIRECT.GET.<stream>` with `{"seq", "batch", "next_by_subj"}`), which creates
//! nothing on the server. A load from a later version starts after the cached tail or the
//! snapshot's position. On a replicated stream direct get may be answered by a follower that is
//! a moment behind; a load that missed the newest events only makes the next append conflict
//! and catch up.
//!
//! Why a consumer: the server streams a consumer's messages faster than it answers a batched
//! direct get (1,000 events: 9-16 ms against 16-18 ms), enough to pay for its creation and
//! deletion (one round trip each).
//!
//! # Figures
//! `cargo bench --bench jetstream`, one run (2 cores, loopback, nats-server 2.15.1, file
//! storage; runs differ by up to 2x, so only ratios within a run are compared). Ranges are over
//! five runs (four for cold loads, whose path changed after the first).
//!
//! | workload | jetsource | raw async-nats | ratio (range) |
//! |---|---|---|---|
//! | OCC appends, 100 aggregates in parallel | 34.6k events/s | 36.9k (same headers) | 0.94 (0.89-1.09) |
//! | same, raw with only the 3 OCC/name headers | 34.6k events/s | 45.5k | 0.76 (0.73-0.82) |
//! | warm commands (load + decide + append, `Repository::with_cache`) | 35.3k/s | 36.9k | 0.96 (0.84-0.99); 1.02x jetsource appends (0.85-1.10) |
//! | load 1,000 events, cache warm | 13.0 ms | 11.5 ms (ordered consumer, left behind) | 1.13 (0.77-1.20) |
//! | load 1,000 events, cache cold | 11.3 ms | 11.5 ms | 0.98 (0.82-1.31) |
//! | load with a snapshot at 990 (+10 events) | 0.7 ms | 0.7 ms (KV get + direct get) | 1.06 (0.90-1.92; sub-millisecond) |
//!
//! The appends' gap to raw publishes with only the three OCC/name headers is the metadata every
//! event carries (event id, version, codec, aggregate version, correlation id, timestamp: about
//! 250 more header bytes that the server parses and stores): raw publishes with the same
//! headers run at 0.71-0.82x of the minimal ones too. A profile of the client shows its time in
//! async-nats header maps (allocation, hashing, serialisation), with nothing of jetsource's own
//! near the top.
//!
//! # Snapshots
//! In the key-value bucket [`StreamConfig::snapshot_bucket`], one key per aggregate.

mod append;
mod cache;
mod config;
mod connect;
mod error;
pub(crate) mod headers;
mod load;
mod publish;
mod refusals;
mod snapshot;
mod store;

pub use config::{Storage, StreamConfig};
pub use connect::{ConnectOptions, Credentials};
pub use error::JetStreamError;
pub use publish::{PublishError, PublishReceipt, Publisher};
pub use store::JetStreamStore;
