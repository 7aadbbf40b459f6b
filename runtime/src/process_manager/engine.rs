//! One input (an event, a fired deadline) on one instance, top to bottom: take the instance's
//! turn, load it, finish the previous commit's effects, decide whether the input is new, run
//! the handler, commit the new record with optimistic concurrency, carry out its effects.

use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use tracing::Instrument;
use uuid::Uuid;

use super::command::Commands;
use super::context::{Input, ProcessContext};
use super::deadlines::Deadlines;
use super::definition::ProcessManager;
use super::metrics::ProcessMetrics;
use super::record::{self, DeadlineFired, InstanceCommitted, Outbox};
use super::step::{self, Admission, Verdict};
use crate::error::HumanDuration;
use crate::event::{EncodedEvent, Event, RawEvent};
use crate::event_set::EventSet;
use crate::id::AggregateId;
use crate::lanes;
use crate::store::{AggregateKey, EventStore, ExpectedVersion, NewEvent, StoreError};
use crate::subscriber::{EventContext, HandlerError};

/// How often a commit that lost a race with another process reloads and decides again,
/// before the input goes back to the subscriber's retries.
const CONFLICT_ATTEMPTS: u32 = 8;
/// The instance as this process last saw it.
#[derive(Clone)]
pub(super) struct Instance {
    pub(super) record: InstanceCommitted,
    pub(super) version: u64,
    /// This process carried out the record's outbox. A record read from the store has not,
    /// as far as this process knows: its effects run again, idempotently.
    pub(super) carried_out: bool,
}

/// What arrived for an instance.
pub(crate) enum Arrival<E> {
    /// `event` is taken by the first attempt; a retry after a conflict decodes `encoded`.
    Event {
        event: Option<E>,
        encoded: EncodedEvent,
        context: EventContext,
    },
    Deadline {
        fired: DeadlineFired,
        context: EventContext,
    },
}

pub(crate) struct Engine<P, S, D> {
    pub(super) instances: S,
    pub(super) deadlines: D,
    pub(super) commands: Commands,
    pub(super) clock: super::Clock,
    cache: Mutex<LruCache<String, Instance>>,
    start_wait: Duration,
    pub(super) metrics: ProcessMetrics,
    _manager: PhantomData<fn() -> P>,
}

impl<P: ProcessManager, S: EventStore, D: Deadlines> Engine<P, S, D> {
    pub(crate) fn new(
        instances: S,
        deadlines: D,
        commands: Commands,
        clock: super::Clock,
        cache_capacity: NonZeroUsize,
        start_wait: Duration,
    ) -> Self {
        Engine {
            instances,
            deadlines,
            commands,
            clock,
            cache: Mutex::new(LruCache::new(cache_capacity)),
            start_wait,
            metrics: ProcessMetrics::new(P::NAME),
            _manager: PhantomData,
        }
    }

    /// Handles one arrival: `Ok` once its commit and effects are done (or it is not for a live
    /// instance), so the subscriber acks it.
    pub(crate) async fn handle(&self, arrival: Arrival<P::Event>) -> Result<(), HandlerError> {
        let instance = match &arrival {
            Arrival::Event {
                event: Some(event), ..
            } => P::correlate(event),
            Arrival::Event { event: None, .. } => {
                return Err(HandlerError::permanent(
                    "an event arrived without its event",
                ));
            }
            Arrival::Deadline { context, .. } => {
                if context.aggregate_type != record::aggregate_type(P::NAME, "deadline") {
                    // Another process manager's deadline in a shared instance store.
                    return Ok(());
                }
                context.aggregate_id.clone()
            }
        };
        let id = AggregateId::new(instance.as_str()).map_err(|error| {
            HandlerError::permanent(format!(
                "correlation id {instance:?} cannot be an instance id: {error}"
            ))
        })?;
        let span = tracing::info_span!(
            "jetsource.process_manager.handle",
            process_manager = P::NAME,
            instance = %instance,
        );
        self.handle_started(AggregateKey::new(P::NAME, id), arrival)
            .instrument(span)
            .await
            .map_err(|error| in_instance::<P>(&instance, error))
    }

    /// Handles the arrival; one that needs its instance started waits for that (outside the
    /// instance's turn, so the start event can take it) up to the configured time, then
    /// fails as retryable: the subscriber retries it with back-off, then dead-letters it.
    async fn handle_started(
        &self,
        key: AggregateKey,
        arrival: Arrival<P::Event>,
    ) -> Result<(), HandlerError> {
        use backon::BackoffBuilder;
        let waiting = Instant::now();
        let mut pauses = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_jitter()
            .without_max_times()
            .build();
        let mut arrival = arrival;
        loop {
            match self.handle_traced(&key, arrival).await? {
                None => return Ok(()),
                Some(unstarted) if waiting.elapsed() < self.start_wait => {
                    arrival = unstarted;
                    let pause = pauses.next().unwrap_or(Duration::from_millis(100));
                    tokio::time::sleep(pause).await;
                }
                Some(_) => {
                    return Err(HandlerError::retryable(format!(
                        "no start event created the instance (waited {})",
                        HumanDuration(self.start_wait)
                    )))
                }
            }
        }
    }

    /// `Ok(Some(arrival))`: the instance does not exist, and the arrival does not start it.
    async fn handle_traced(
        &self,
        key: &AggregateKey,
        arrival: Arrival<P::Event>,
    ) -> Result<Option<Arrival<P::Event>>, HandlerError> {
        let key = key.clone();
        // Inputs of one instance in this process take turns: the events and the deadlines
        // subscribers never race each other to commit.
        let _turn = lanes::enter(self.lane_scope(), &key).await;
        let mut arrival = Some(arrival);
        let starts = match &arrival {
            Some(Arrival::Event {
                event: Some(event), ..
            }) => P::starts(event),
            _ => false,
        };
        let (mut current, mut fresh) = self.cached_or_loaded(&key, starts).await?;
        for _ in 0..CONFLICT_ATTEMPTS {
            if let Some(instance) = current.as_mut() {
                self.carry_out(&key, instance).await?;
            }
            let input = match self.admit(current.as_ref(), &mut arrival)? {
                (Verdict::Run, input) => input,
                (Verdict::Skip, input) if !fresh => {
                    // Another process may have moved the instance on since this one cached it
                    // (a deadline it scheduled is not pending here yet): check the store.
                    arrival = Some(input);
                    (current, fresh) = (self.load(&key).await?, true);
                    continue;
                }
                (Verdict::Skip, _) => {
                    self.remember(&key, current);
                    return Ok(None);
                }
                (Verdict::NotStarted, input) => return Ok(Some(input)),
            };
            match self
                .decide_and_commit(&key, current.as_ref(), input)
                .await?
            {
                Committed::Done(mut instance) => {
                    let outcome = self.carry_out(&key, &mut instance).await;
                    self.remember(&key, Some(instance));
                    return outcome.map(|()| None);
                }
                Committed::Conflict(input) => {
                    arrival = Some(input);
                    (current, fresh) = (self.load(&key).await?, true);
                }
            }
        }
        Err(HandlerError::retryable(format!(
            "instance {} kept changing under {CONFLICT_ATTEMPTS} attempts",
            key.id
        )))
    }

    /// The arrival with what becomes of it on `current` (see [`step::admits`]).
    fn admit(
        &self,
        current: Option<&Instance>,
        arrival: &mut Option<Arrival<P::Event>>,
    ) -> Result<(Verdict, Arrival<P::Event>), HandlerError> {
        let Some(taken) = arrival.take() else {
            return Err(HandlerError::permanent("an input arrived twice"));
        };
        let record = current.map(|instance| &instance.record);
        let admission = match &taken {
            Arrival::Event {
                event,
                encoded,
                context,
            } => Admission::Event {
                source: source(context),
                sequence: context.sequence,
                starts: match event {
                    Some(event) => P::starts(event),
                    None => P::starts(&decode_again::<P>(encoded)?),
                },
            },
            Arrival::Deadline { fired, .. } => Admission::Deadline(fired),
        };
        Ok((step::admits(record, &admission), taken))
    }

    async fn decide_and_commit(
        &self,
        key: &AggregateKey,
        current: Option<&Instance>,
        mut arrival: Arrival<P::Event>,
    ) -> Result<Committed<P::Event>, HandlerError> {
        let now = self.clock.now();
        let (mut record, version) = match current {
            Some(instance) => (instance.record.clone(), instance.version),
            None => (InstanceCommitted::new(serde_json::Value::Null), 0),
        };
        let mut state: P = match current {
            Some(_) => serde_json::from_value(record.state.clone()).map_err(|error| {
                HandlerError::permanent(format!(
                    "the stored state of instance {} does not deserialize: {error}",
                    key.id
                ))
            })?,
            None => P::default(),
        };
        let (input_id, correlation_id, input) = describe(&arrival);
        let mut cx = ProcessContext::new(key.id.to_string(), input, now, current.is_none());
        let mut fired_due = None;
        let outcome = match &mut arrival {
            Arrival::Event { event, encoded, .. } => {
                let event = match event.take() {
                    Some(event) => event,
                    None => decode_again::<P>(encoded)?,
                };
                state.handle(event, &mut cx).await
            }
            Arrival::Deadline { fired, .. } => {
                fired_due = record
                    .deadlines
                    .remove(&fired.deadline)
                    .map(|pending| pending.due);
                state.on_deadline(&fired.deadline, &mut cx).await
            }
        };
        outcome?;
        cx.check(P::DEADLINES)?;
        if let Arrival::Event { context, .. } = &arrival {
            record.handled.insert(source(context), context.sequence);
        }
        let created = current.is_none();
        let outbox = Outbox {
            input: input_id,
            correlation_id,
            ..Outbox::default()
        };
        step::finish_record(&mut record, &state, cx, outbox)?;
        let Some(version) = self.commit(key, version, &record).await? else {
            return Ok(Committed::Conflict(arrival));
        };
        if created {
            self.metrics.started();
        }
        if let Some(due) = fired_due {
            self.metrics.deadline_fired(now, due);
        }
        Ok(Committed::Done(Instance {
            record,
            version,
            carried_out: false,
        }))
    }

    /// Appends the record at `version`; `None` when another process committed first.
    pub(super) async fn commit(
        &self,
        key: &AggregateKey,
        version: u64,
        record: &InstanceCommitted,
    ) -> Result<Option<u64>, HandlerError> {
        let encoded = record.encode().map_err(HandlerError::permanent)?;
        let event = NewEvent {
            id: Uuid::now_v7(),
            name: encoded.name,
            version: encoded.version,
            codec: encoded.codec,
            payload: Bytes::from(encoded.payload),
            timestamp: SystemTime::now(),
            correlation_id: record.outbox.correlation_id.clone(),
            causation_id: Some(record.outbox.input.clone()),
            headers: Default::default(),
        };
        let appended = (self.instances)
            .append(key, ExpectedVersion::Exact(version), None, vec![event])
            .await;
        match appended {
            Ok(outcome) => {
                if record.completed {
                    self.metrics.completed();
                }
                Ok(Some(outcome.last_sequence))
            }
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(error) => Err(HandlerError::retryable(error)),
        }
    }

    /// The instance, and whether it was read from the store just now. For a start event that
    /// finds nothing cached, no instance, without a read: it usually creates its instance, and
    /// the commit at version 0 finds out otherwise (a conflict reloads).
    async fn cached_or_loaded(
        &self,
        key: &AggregateKey,
        starts: bool,
    ) -> Result<(Option<Instance>, bool), HandlerError> {
        let cached = self.lock_cache().get(key.id.as_str()).cloned();
        match cached {
            Some(instance) => Ok((Some(instance), false)),
            None if starts => Ok((None, false)),
            None => Ok((self.load(key).await?, true)),
        }
    }

    /// The newest record from the store: each commit holds the whole instance.
    pub(super) async fn load(&self, key: &AggregateKey) -> Result<Option<Instance>, HandlerError> {
        let events = (self.instances)
            .load(key, 1)
            .await
            .map_err(HandlerError::retryable)?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        let raw = RawEvent {
            name: &last.name,
            version: last.version,
            codec: last.codec,
            payload: &last.payload,
        };
        let record = InstanceCommitted::decode_stored(raw).map_err(|error| {
            HandlerError::permanent(format!(
                "instance {} has a record that does not decode: {error}",
                key.id
            ))
        })?;
        Ok(Some(Instance {
            record,
            version: last.sequence,
            carried_out: false,
        }))
    }

    fn remember(&self, key: &AggregateKey, instance: Option<Instance>) {
        if let Some(instance) = instance {
            self.lock_cache().put(key.id.to_string(), instance);
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LruCache<String, Instance>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lane_scope(&self) -> usize {
        // One lane per engine: two engines (tests, two process managers) never share turns.
        self as *const Self as usize
    }
}

enum Committed<E> {
    Done(Instance),
    Conflict(Arrival<E>),
}

/// Names the instance in a failure, so a dead letter says which instance it stopped.
fn in_instance<P: ProcessManager>(instance: &str, error: HandlerError) -> HandlerError {
    let wrap = |source| InstanceFailed {
        manager: P::NAME,
        instance: instance.to_owned(),
        source,
    };
    match error {
        HandlerError::Retryable(source) => HandlerError::Retryable(Box::new(wrap(source))),
        HandlerError::Permanent(source) => HandlerError::Permanent(Box::new(wrap(source))),
    }
}

/// A failure of one instance's input.
#[derive(Debug, thiserror::Error)]
#[error("process manager {manager}, instance {instance}")]
struct InstanceFailed {
    manager: &'static str,
    instance: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// The event again, for an attempt after a conflict (the handler took the first by value).
fn decode_again<P: ProcessManager>(encoded: &EncodedEvent) -> Result<P::Event, HandlerError> {
    let raw = RawEvent {
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: &encoded.payload,
    };
    match P::Event::decode(raw) {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(HandlerError::permanent("a handled event no longer decodes")),
        Err(error) => Err(HandlerError::permanent(error)),
    }
}

/// The aggregate an event came from, as the record's `handled` key.
fn source(context: &EventContext) -> String {
    format!("{}/{}", context.aggregate_type, context.aggregate_id)
}

fn describe<E>(arrival: &Arrival<E>) -> (String, String, Input) {
    match arrival {
        Arrival::Event { context, .. } => (
            context.event_id.to_string(),
            context.correlation_id.clone(),
            Input::AggregateEvent {
                event_id: context.event_id,
                aggregate_type: context.aggregate_type.clone(),
                aggregate_id: context.aggregate_id.clone(),
                sequence: context.sequence,
            },
        ),
        Arrival::Deadline { fired, context } => (
            format!("deadline-{}-{}", fired.deadline, fired.generation),
            context.correlation_id.clone(),
            Input::Deadline {
                name: fired.deadline.clone(),
            },
        ),
    }
}
