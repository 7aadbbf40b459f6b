//! The JetStream backend: everything a subscriber keeps and does on a NATS server.
//!
//! [`start`] opens one lane over the whole event stream, or joins a `group` that shares the
//! stream's partitions between processes, one lane per partition. A lane is one dispatcher
//! task and a fixed pool of `concurrency` workers.
//!
//! The dispatcher pulls from the durable consumer (and the redrive consumer), routes each
//! message to its aggregate's worker queue, sends in-progress acks for every message it handed
//! out and has not seen completed, and gates delivery after a start or reconnect (see
//! `dispatch::Gate`). An aggregate has at most one message with the workers at a time; its
//! later ones wait in its queue. Each worker runs the backend-neutral per-event loop
//! (`subscriber::process`) over `backend`'s acks, naks and dead letters.
//!
//! With the completion log, a worker hands a handled message to the log's writer and moves
//! on; the writer returns each stored round to the dispatcher, which acks its messages and
//! only then releases their aggregates' next events. So no handler starts before its
//! aggregate's previous completion is durable, and no task or channel is paid per event.
//!
//! Imports run one way, with no circle: `start` on top, then `group`, `lane`, `dispatch`, the
//! workers' files (`worker`, `backend`, `acks`, `router`), and at the bottom `delivery`,
//! `consumer`, `dead_letters`, `done_log` and `placement`. Nothing imports this file.

mod acks;
mod backend;
mod consumer;
mod dead_letters;
mod delivery;
mod dispatch;
mod done_log;
mod group;
mod lane;
mod placement;
mod progress;
mod recovery;
mod router;
mod start;
mod worker;

#[cfg(feature = "postgres")]
pub(crate) use consumer::delete_consumers;
pub use dead_letters::DeadLetters;
#[cfg(feature = "postgres")]
pub(crate) use progress::JetStreamProgress;
pub use start::{start, start_defined};
