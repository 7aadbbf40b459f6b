//! A running process manager: two subscribers sharing one engine, one on the handled events
//! and one on the fired deadlines, started by the backend's `start` with a [`ProcessConfig`].

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use super::deadlines::Deadlines;
use super::definition::ProcessManager;
use super::engine::{Arrival, Engine};
use super::record::FiredDeadlines;
use crate::event::Event;
use crate::store::EventStore;
use crate::subscriber::{
    EventContext, HandlerError, Idempotency, Subscriber, SubscriberConfig, SubscriberError,
    SubscriberHandle, SubscriberStats,
};

/// How a process manager runs: the configuration of its two subscribers (retries, back-off,
/// dead letters, concurrency and partitions work as for any [`Subscriber`]) and its cache.
///
/// ```
/// use jetsource::process_manager::ProcessConfig;
/// let config = ProcessConfig::new("fulfilment").concurrency(64);
/// assert_eq!(config.events.durable_name, "fulfilment");
/// assert_eq!(config.deadlines.durable_name, "fulfilment-deadlines");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// The subscriber on the handled events, durable name `<name>` by default.
    pub events: SubscriberConfig,
    /// The subscriber on the fired deadlines (in the instance store), durable name
    /// `<name>-deadlines` by default.
    pub deadlines: SubscriberConfig,
    /// Instances kept in memory between inputs (least recently used go first); one not kept
    /// is read from the instance store, and the effects of its last commit are carried out
    /// again (idempotently).
    pub cache_capacity: NonZeroUsize,
    /// How long an event that does not start an instance waits, in this process, for the
    /// instance's start event (which may come from another aggregate, handled in parallel or
    /// by another partition) before it fails as retryable: the events subscriber then retries
    /// it after its back-off, and dead-letters it once its attempts are spent (an event for an
    /// instance that never starts). 2 s by default.
    pub start_wait: Duration,
}

impl ProcessConfig {
    /// Defaults for process manager `name` ([`ProcessManager::NAME`]).
    pub fn new(name: &str) -> Self {
        // The instance record is each input's idempotency record (an aggregate's newest
        // sequence handled, the pending deadline generations): no completion log is needed.
        ProcessConfig {
            events: SubscriberConfig::new(name).idempotency(Idempotency::Off),
            deadlines: SubscriberConfig::new(format!("{name}-deadlines"))
                .idempotency(Idempotency::Off),
            cache_capacity: NonZeroUsize::new(10_000).expect("not zero"),
            start_wait: Duration::from_secs(2),
        }
    }

    /// How many instances are handled at once, on each of the two subscribers.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.events = self.events.concurrency(concurrency);
        self.deadlines = self.deadlines.concurrency(concurrency);
        self
    }

    /// Scales out over processes: both subscribers split their work into `count` partitions
    /// (see [`SubscriberConfig::partitions`]).
    pub fn partitions(mut self, count: u16) -> Self {
        self.events = self.events.partitions(count);
        self.deadlines = self.deadlines.partitions(count);
        self
    }

    /// See [`ProcessConfig::start_wait`].
    pub fn start_wait(mut self, wait: Duration) -> Self {
        self.start_wait = wait;
        self
    }

    /// See [`ProcessConfig::cache_capacity`].
    pub fn cache_capacity(mut self, capacity: NonZeroUsize) -> Self {
        self.cache_capacity = capacity;
        self
    }
}

/// A running process manager. Dropping it leaves it running; call
/// [`ProcessManagerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct ProcessManagerHandle {
    pub(crate) events: SubscriberHandle,
    pub(crate) deadlines: SubscriberHandle,
}

/// What a process manager handled, per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessStats {
    /// The events subscriber's counters.
    pub events: SubscriberStats,
    /// The deadlines subscriber's counters.
    pub deadlines: SubscriberStats,
}

impl ProcessManagerHandle {
    /// The counters so far.
    pub fn stats(&self) -> ProcessStats {
        ProcessStats {
            events: self.events.stats(),
            deadlines: self.deadlines.stats(),
        }
    }

    /// Stops both subscribers gracefully (see [`SubscriberHandle::shutdown`]).
    pub async fn shutdown(self) -> Result<ProcessStats, SubscriberError> {
        let events = self.events.shutdown().await;
        let deadlines = self.deadlines.shutdown().await;
        Ok(ProcessStats {
            events: events?,
            deadlines: deadlines?,
        })
    }

    /// Stops at once, like a crash (see [`SubscriberHandle::abort`]).
    pub async fn abort(self) {
        self.events.abort().await;
        self.deadlines.abort().await;
    }
}

/// The events subscriber.
pub(crate) struct EventInputs<P, S, D>(pub(crate) Arc<Engine<P, S, D>>);

impl<P: ProcessManager, S: EventStore, D: Deadlines> Subscriber for EventInputs<P, S, D> {
    type Event = P::Event;

    async fn handle(&self, event: P::Event, ctx: &EventContext) -> Result<(), HandlerError> {
        use crate::event_set::EventSet as _;
        let encoded = event.encode().map_err(HandlerError::permanent)?;
        let arrival = Arrival::Event {
            event: Some(event),
            encoded,
            context: ctx.clone(),
        };
        self.0.handle(arrival).await
    }
}

/// The deadlines subscriber.
pub(crate) struct DeadlineInputs<P, S, D>(pub(crate) Arc<Engine<P, S, D>>);

impl<P: ProcessManager, S: EventStore, D: Deadlines> Subscriber for DeadlineInputs<P, S, D> {
    type Event = FiredDeadlines;

    async fn handle(&self, event: FiredDeadlines, ctx: &EventContext) -> Result<(), HandlerError> {
        let FiredDeadlines::Fired(fired) = event;
        let arrival = Arrival::Deadline {
            fired,
            context: ctx.clone(),
        };
        self.0.handle(arrival).await
    }
}

/// The checks both backends' `start` make.
pub(crate) fn check<P: ProcessManager>(config: &ProcessConfig) -> Result<(), SubscriberError> {
    config.events.validate()?;
    config.deadlines.validate()?;
    if config.events.durable_name == config.deadlines.durable_name {
        return Err(SubscriberError::InvalidConfig(format!(
            "process manager {}: its events and deadlines subscribers need two durable names",
            P::NAME
        )));
    }
    let reserved = [
        <super::record::DeadlineFired as Event>::NAME,
        <super::record::InstanceCommitted as Event>::NAME,
    ];
    if let Some(name) = (P::DEADLINES.iter()).find(|name| reserved.contains(name)) {
        return Err(SubscriberError::InvalidConfig(format!(
            "process manager {}: deadline name {name:?} is reserved for the runtime's own events",
            P::NAME
        )));
    }
    Ok(())
}
