//! What the dispatcher hands the workers, what they share, and what they report back.

use std::sync::Arc;

use async_nats::jetstream::{self, Message};
use tokio::sync::watch;

use super::done_log::DoneLog;
use crate::observability::SubscriberMetrics;
use crate::subscriber::config::SubscriberConfig;
use crate::subscriber::handle::Counters;
use crate::subscriber::handler::Subscriber;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    Events,
    Redrive,
}

pub(crate) struct Delivery {
    pub(super) msg: Message,
    pub(super) source: Source,
    /// Stream sequence in the stream the message was delivered from.
    pub(super) seq: u64,
    /// The event's subject and position in the event stream, when the message carries them.
    pub(super) origin: Option<(String, u64)>,
    /// Server deliveries of this message, from 1.
    pub(super) delivered: u64,
    /// The ordering key `<type>.<id>`.
    pub(super) key: String,
    /// Check the idempotency markers even on a first delivery: the message is not newer than
    /// one this process (or the consumer) saw before, so the server's consumer state may have
    /// been rolled back (a server crash loses its most recent acks and delivery counts).
    pub(super) verify: bool,
}

impl Delivery {
    /// What tells the dispatcher this delivery is over.
    pub(super) fn report(&self) -> Done {
        Done {
            key: self.key.clone(),
            source: self.source,
            seq: self.seq,
        }
    }
}

/// What a lane's dispatcher and workers share.
pub(crate) struct Shared<S: Subscriber> {
    pub(super) subscriber: Arc<S>,
    pub(super) config: SubscriberConfig,
    pub(super) js: jetstream::Context,
    pub(super) prefix: String,
    pub(super) stream: String,
    pub(super) done: Option<DoneLog<Completion>>,
    pub(super) counters: Arc<Counters>,
    pub(super) metrics: SubscriberMetrics,
    /// Set by the dispatcher once it stopped pulling: workers `nak` what has not started.
    pub(super) shutdown: watch::Receiver<bool>,
}

/// A delivery is over: its aggregate's next message may go out.
pub(super) struct Done {
    pub(super) key: String,
    pub(super) source: Source,
    pub(super) seq: u64,
}

/// A handled message waiting for its completion to be stored before its ack and report.
pub(crate) struct Completion {
    pub(super) msg: Message,
    pub(super) report: Done,
}
