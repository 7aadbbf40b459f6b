//! What a handler can do to its instance: send commands, set and cancel deadlines, complete it.
//! Nothing happens while the handler runs: the runtime commits the changes together with the
//! new state, then carries them out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::command::{Command, OutgoingCommand};
use crate::subscriber::HandlerError;

/// What a process-manager handler is given beside its state: the input it handles, and the
/// effects it asks for ([`ProcessContext::send`], [`ProcessContext::schedule`],
/// [`ProcessContext::cancel`], [`ProcessContext::complete`]). The effects are committed with the
/// instance's new state and carried out after that commit; a handler that fails asks for none.
#[derive(Debug)]
pub struct ProcessContext {
    instance: String,
    input: Input,
    now: SystemTime,
    is_new: bool,
    pub(crate) effects: Effects,
}

/// What a handler is handling.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// An event of an aggregate. (Not `Event`: a public variant of that name would make
    /// rustc print the `jetsource::Event` trait with its full path in every diagnostic.)
    AggregateEvent {
        /// Its id.
        event_id: uuid::Uuid,
        /// Its aggregate type.
        aggregate_type: String,
        /// Its aggregate id.
        aggregate_id: String,
        /// Its number within its aggregate.
        sequence: u64,
    },
    /// A deadline that fired.
    Deadline {
        /// Its name.
        name: String,
    },
    /// Commands their aggregates refused.
    Rejections,
}

/// The effects one handler asked for.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Effects {
    pub(crate) commands: Vec<OutgoingCommand>,
    /// Deadline name -> when it is due; a later `schedule` of the same name replaces it.
    pub(crate) scheduled: BTreeMap<String, SystemTime>,
    pub(crate) cancelled: Vec<String>,
    pub(crate) completed: bool,
    /// The first effect that could not be recorded (a command that does not serialize).
    #[serde(skip)]
    pub(crate) invalid: Option<String>,
}

impl ProcessContext {
    pub(crate) fn new(instance: String, input: Input, now: SystemTime, is_new: bool) -> Self {
        ProcessContext {
            instance,
            input,
            now,
            is_new,
            effects: Effects::default(),
        }
    }

    /// The instance's id (its correlation id).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What is being handled.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Whether this input created the instance.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// The time deadlines are measured from: the wall clock, or the virtual clock in memory.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// Sends `command` to aggregate `aggregate_id` after the commit. It runs with a command
    /// id made of the instance, the input and its index, so it is applied once however often
    /// the input is redone; if the aggregate refuses it, the `#[rejected]` handler for `C`
    /// gets a [`Rejected<C>`](super::Rejected).
    pub fn send<C: Command>(&mut self, aggregate_id: impl Into<String>, command: C) {
        match serde_json::to_value(&command) {
            Ok(payload) => self.effects.commands.push(OutgoingCommand {
                name: C::NAME.to_owned(),
                aggregate_id: aggregate_id.into(),
                payload,
            }),
            Err(error) => {
                let reason = format!("command {} does not serialize: {error}", C::NAME);
                self.effects.invalid.get_or_insert(reason);
            }
        }
    }

    /// Sets deadline `name` to fire `after` from [`ProcessContext::now`], replacing an earlier
    /// one of that name. The server holds it: it fires after restarts of this process and of
    /// the server.
    pub fn schedule(&mut self, name: &str, after: Duration) {
        self.schedule_at(name, self.now + after);
    }

    /// Sets deadline `name` to fire at `due`.
    pub fn schedule_at(&mut self, name: &str, due: SystemTime) {
        self.effects.cancelled.retain(|cancelled| cancelled != name);
        self.effects.scheduled.insert(name.to_owned(), due);
    }

    /// Cancels deadline `name`: it is not handled, even if it already fired and waits for
    /// delivery.
    pub fn cancel(&mut self, name: &str) {
        self.effects.scheduled.remove(name);
        if !self
            .effects
            .cancelled
            .iter()
            .any(|cancelled| cancelled == name)
        {
            self.effects.cancelled.push(name.to_owned());
        }
    }

    /// Ends the instance after this input: its deadlines are cancelled and every later input
    /// for it is ignored (also a start event, which does not create it again). The commands this
    /// handler sent still run.
    pub fn complete(&mut self) {
        self.effects.completed = true;
    }

    /// Checks what the handler asked for: every deadline is one the process manager handles.
    pub(crate) fn check(&self, deadlines: &[&str]) -> Result<(), HandlerError> {
        if let Some(invalid) = &self.effects.invalid {
            return Err(HandlerError::permanent(invalid.clone()));
        }
        match (self.effects.scheduled.keys()).find(|name| !deadlines.contains(&name.as_str())) {
            Some(unknown) => Err(HandlerError::permanent(format!(
                "deadline {unknown:?} has no #[deadline] handler (handled: {deadlines:?})"
            ))),
            None => Ok(()),
        }
    }
}
