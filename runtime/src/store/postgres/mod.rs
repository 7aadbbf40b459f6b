//! The PostgreSQL backend: events in a table, appended in the application's transactions, and
//! relayed to JetStream for subscribers.
//!
//! # Layout
//! `schema.rs` ships the tables and the `jetsource_append` function as sqlx migrations;
//! `store.rs` runs the store contract on them (an append is one call of that function);
//! `rows.rs` turns events into columns and rows back into events.
//!
//! # Concurrency
//! `jetsource_append` takes a transaction-scoped advisory lock per aggregate before it reads the
//! aggregate's version, so appends to one aggregate take turns and a stale expected version is a
//! clean [`StoreError::Conflict`](crate::StoreError::Conflict) (no unique-violation error that
//! would abort the caller's transaction). The unique (type, id, sequence) constraint still guards
//! against writers that bypass the function.

mod checkpoint;
mod relay;
mod rows;
mod schema;
mod status;
mod store;

pub use relay::{Relay, RelayConfig, RelayError, RelayHandle, MAX_BATCH};
pub use schema::migrator;
pub use status::{backlog, relay_status, relay_statuses, Backlog, RelayStatus};
pub use store::PgStore;
