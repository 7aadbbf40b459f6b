//! Given/when/then for a process manager, without a store: the handlers run with the runtime's
//! rules ([`super::step`]) on one instance, on virtual time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::command::{Command, Rejection};
use super::context::{Input, ProcessContext};
use super::definition::ProcessManager;
use super::record::{InstanceCommitted, Outbox};
use super::step::{self, Admission, Verdict};
use crate::subscriber::HandlerError;

/// Tests a process manager's decisions: feed it events, deadlines and rejections, and look at
/// the commands, deadline changes and state each one leads to.
///
/// Events are taken as coming from one aggregate each, in order; [`ProcessFixture::when`]
/// skips what the runtime would skip (an event for an instance that no start event created,
/// anything after [`ProcessContext::complete`]), and [`ProcessFixture::when_deadline`] a
/// deadline that is not pending. Time starts at the Unix epoch and moves only with
/// [`ProcessFixture::advance`] and `when_deadline` (to the deadline's due time).
pub struct ProcessFixture<P: ProcessManager> {
    state: Option<(P, InstanceCommitted)>,
    /// The correlation id of the event that created the instance.
    instance: String,
    now: SystemTime,
    sequence: u64,
}

/// A command a handler sent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentCommand {
    /// [`Command::NAME`].
    pub name: String,
    /// The aggregate it goes to.
    pub aggregate_id: String,
    /// The command's serde form.
    pub payload: serde_json::Value,
}

impl SentCommand {
    /// The command, if it is a `C`.
    pub fn typed<C: Command>(&self) -> Option<C> {
        (self.name == C::NAME)
            .then(|| serde_json::from_value(self.payload.clone()).ok())
            .flatten()
    }
}

/// What one input led to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Then {
    /// Whether the handler ran (`false`: the runtime would have skipped the input).
    pub handled: bool,
    /// The commands sent, in order.
    pub commands: Vec<SentCommand>,
    /// The deadlines set, with their due times.
    pub scheduled: BTreeMap<String, SystemTime>,
    /// The pending deadlines cancelled (by `cancel` or by completing).
    pub cancelled: Vec<String>,
    /// Whether the instance completed.
    pub completed: bool,
}

impl<P: ProcessManager> Default for ProcessFixture<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: ProcessManager> ProcessFixture<P> {
    /// No instance yet, at the Unix epoch.
    pub fn new() -> Self {
        ProcessFixture {
            state: None,
            instance: String::new(),
            now: SystemTime::UNIX_EPOCH,
            sequence: 0,
        }
    }

    /// Handles `events` in order, as history.
    pub async fn given<E: Into<P::Event>>(
        mut self,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Self, HandlerError> {
        for event in events {
            self.when(event).await?;
        }
        Ok(self)
    }

    /// Handles `event`.
    pub async fn when(&mut self, event: impl Into<P::Event>) -> Result<Then, HandlerError> {
        let event = event.into();
        self.sequence += 1;
        let admission = Admission::Event {
            source: "fixture/events".to_owned(),
            sequence: self.sequence,
            starts: P::starts(&event),
        };
        let instance = match &self.state {
            Some(_) => self.instance.clone(),
            None => P::correlate(&event),
        };
        let input = Input::AggregateEvent {
            event_id: uuid::Uuid::nil(),
            aggregate_type: "fixture".to_owned(),
            aggregate_id: "events".to_owned(),
            sequence: self.sequence,
        };
        let record = self.state.as_ref().map(|(_, record)| record);
        if step::admits(record, &admission) != Verdict::Run {
            return Ok(Then::skipped());
        }
        self.run(&instance, input, Handled::Event(event)).await
    }

    /// Moves time to deadline `name`'s due time (if later) and handles it, when pending.
    pub async fn when_deadline(&mut self, name: &str) -> Result<Then, HandlerError> {
        let pending =
            (self.state.as_ref()).and_then(|(_, record)| record.deadlines.get(name).copied());
        let Some(pending) = pending else {
            return Ok(Then::skipped());
        };
        self.now = self.now.max(pending.due);
        let instance = self.instance();
        let input = Input::Deadline {
            name: name.to_owned(),
        };
        self.run(&instance, input, Handled::Deadline(name)).await
    }

    /// Handles the rejection of `command`, sent to `aggregate_id`, for `reason`.
    pub async fn when_rejected<C: Command>(
        &mut self,
        aggregate_id: &str,
        command: C,
        reason: C::Rejection,
    ) -> Result<Then, HandlerError> {
        let rejection = Rejection {
            command: C::NAME.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            command_id: "fixture".to_owned(),
            payload: serde_json::to_value(command).map_err(HandlerError::permanent)?,
            reason: serde_json::to_value(reason).map_err(HandlerError::permanent)?,
        };
        // As in the runtime, also after completion: the completing handler's commands may be
        // the ones refused, and their compensation still runs.
        if self.state.is_none() {
            return Ok(Then::skipped());
        }
        let instance = self.instance();
        self.run(&instance, Input::Rejections, Handled::Rejection(rejection))
            .await
    }

    /// Moves virtual time on.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The virtual time.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The instance's state, once an event created it.
    pub fn state(&self) -> Option<&P> {
        self.state.as_ref().map(|(state, _)| state)
    }

    /// The pending deadlines and when they are due.
    pub fn pending_deadlines(&self) -> BTreeMap<String, SystemTime> {
        (self.state.as_ref().into_iter())
            .flat_map(|(_, record)| record.deadlines.iter())
            .map(|(name, pending)| (name.clone(), pending.due))
            .collect()
    }

    /// Whether the instance completed.
    pub fn is_completed(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|(_, record)| record.completed)
    }

    fn instance(&self) -> String {
        self.instance.clone()
    }

    async fn run(
        &mut self,
        instance: &str,
        input: Input,
        handled: Handled<'_, P::Event>,
    ) -> Result<Then, HandlerError> {
        let is_new = self.state.is_none();
        if is_new {
            self.instance = instance.to_owned();
        }
        let (mut state, mut record) = match self.state.take() {
            Some(existing) => existing,
            None => (
                P::default(),
                InstanceCommitted::new(serde_json::Value::Null),
            ),
        };
        let before = record.clone();
        let mut cx = ProcessContext::new(instance.to_owned(), input, self.now, is_new);
        let outcome = match handled {
            Handled::Event(event) => state.handle(event, &mut cx).await,
            Handled::Deadline(name) => {
                // It is pending (checked by the caller); handled, it is not, unless the handler
                // sets it again.
                record.deadlines.remove(name);
                state.on_deadline(name, &mut cx).await
            }
            Handled::Rejection(rejection) => state.on_rejected(rejection, &mut cx).await,
        };
        if let Err(error) = outcome.and_then(|()| cx.check(P::DEADLINES)) {
            // A failed handler changes nothing, as in the runtime.
            if !is_new {
                self.state = Some((state_before(&before)?, before));
            }
            return Err(error);
        }
        step::finish_record(&mut record, &state, cx, Outbox::default())?;
        let outbox = &record.outbox;
        let then = Then {
            handled: true,
            commands: (outbox.commands.iter())
                .map(|command| SentCommand {
                    name: command.name.clone(),
                    aggregate_id: command.aggregate_id.clone(),
                    payload: command.payload.clone(),
                })
                .collect(),
            scheduled: (outbox.schedule.iter())
                .map(|deadline| (deadline.name.clone(), deadline.due))
                .collect(),
            cancelled: outbox.cancel.clone(),
            completed: record.completed,
        };
        self.state = Some((state, record));
        Ok(then)
    }
}

/// What a fixture step hands the handlers.
enum Handled<'a, E> {
    Event(E),
    Deadline(&'a str),
    Rejection(Rejection),
}

/// The state as the record last stored it.
fn state_before<P: ProcessManager>(record: &InstanceCommitted) -> Result<P, HandlerError> {
    serde_json::from_value(record.state.clone()).map_err(HandlerError::permanent)
}

impl Then {
    fn skipped() -> Self {
        Then {
            handled: false,
            commands: Vec::new(),
            scheduled: BTreeMap::new(),
            cancelled: Vec::new(),
            completed: false,
        }
    }
}
