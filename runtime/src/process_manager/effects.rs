//! The effects of a commit, carried out after it: deadlines set and cancelled, then commands
//! run through their repositories with ids made of the instance, the input and their index;
//! refused commands go to the `#[rejected]` handlers, whose commit has effects of its own.

use bytes::Bytes;
use uuid::Uuid;

use super::command::{CommandOutcome, Rejection};
use super::context::{Input, ProcessContext};
use super::deadlines::Deadlines;
use super::definition::ProcessManager;
use super::engine::{Engine, Instance};
use super::record::{DeadlineFired, Outbox, ScheduledDeadline};
use super::step;
use crate::event::Event;
use crate::store::{AggregateKey, CommandMetadata, EventStore, NewEvent};
use crate::subscriber::HandlerError;

/// How many rounds of rejections (a rejection handler whose commands are rejected again) one
/// input may cause before it is a permanent failure.
const REJECTION_ROUNDS: u32 = 16;

impl<P: ProcessManager, S: EventStore, D: Deadlines> Engine<P, S, D> {
    /// Carries out the outbox of `instance`'s record unless this process did: deadlines, then
    /// commands; rejected commands go to the rejection handlers, whose commit has an outbox of
    /// its own, carried out in turn.
    pub(super) async fn carry_out(
        &self,
        key: &AggregateKey,
        instance: &mut Instance,
    ) -> Result<(), HandlerError> {
        for _ in 0..REJECTION_ROUNDS {
            if instance.carried_out {
                return Ok(());
            }
            self.apply_deadlines(key, &instance.record.outbox).await?;
            let rejections = self.run_commands(key, &instance.record.outbox).await?;
            if rejections.is_empty() {
                instance.carried_out = true;
                return Ok(());
            }
            match self.handle_rejections(key, instance, rejections).await? {
                Some(next) => *instance = next,
                None => match self.load(key).await? {
                    Some(reloaded) => *instance = reloaded,
                    None => return Ok(()),
                },
            }
        }
        Err(HandlerError::permanent(format!(
            "instance {}: its commands were rejected {REJECTION_ROUNDS} rounds in a row",
            key.id
        )))
    }

    async fn apply_deadlines(
        &self,
        key: &AggregateKey,
        outbox: &Outbox,
    ) -> Result<(), HandlerError> {
        let instance = key.id.as_str();
        for name in &outbox.cancel {
            (self.deadlines)
                .cancel(instance, name)
                .await
                .map_err(HandlerError::Retryable)?;
            self.metrics.deadline_cancelled();
        }
        for deadline in &outbox.schedule {
            let fired = fired_event(deadline, &outbox.correlation_id)?;
            (self.deadlines)
                .schedule(instance, &deadline.name, fired, deadline.due)
                .await
                .map_err(HandlerError::Retryable)?;
            self.metrics.deadline_scheduled();
        }
        Ok(())
    }

    async fn run_commands(
        &self,
        key: &AggregateKey,
        outbox: &Outbox,
    ) -> Result<Vec<Rejection>, HandlerError> {
        let mut rejections = Vec::new();
        for (index, command) in outbox.commands.iter().enumerate() {
            let command_id = format!("{}:{}:{}:{index}", P::NAME, key.id, outbox.input);
            let metadata = CommandMetadata::default()
                .command_id(command_id.clone())
                .correlation_id(outbox.correlation_id.clone())
                .causation_id(outbox.input.clone());
            match self.commands.run(command.clone(), metadata).await {
                Ok(CommandOutcome::Applied) => self.metrics.command_applied(),
                Ok(CommandOutcome::Rejected(reason)) => {
                    self.metrics.command_rejected();
                    rejections.push(Rejection {
                        command: command.name.clone(),
                        aggregate_id: command.aggregate_id.clone(),
                        command_id,
                        payload: command.payload.clone(),
                        reason,
                    });
                }
                Err(error) if error.is_retryable() => return Err(HandlerError::retryable(error)),
                Err(error) => return Err(HandlerError::permanent(error)),
            }
        }
        Ok(rejections)
    }

    /// Commits what the rejection handlers decide; `None` when another process moved the
    /// instance on first (it carried out this outbox, rejections included, before it did).
    async fn handle_rejections(
        &self,
        key: &AggregateKey,
        instance: &Instance,
        rejections: Vec<Rejection>,
    ) -> Result<Option<Instance>, HandlerError> {
        let mut record = instance.record.clone();
        let mut state: P = serde_json::from_value(record.state.clone())
            .map_err(|error| HandlerError::permanent(format!("stored state: {error}")))?;
        let now = self.clock.now();
        let mut cx = ProcessContext::new(key.id.to_string(), Input::Rejections, now, false);
        for rejection in rejections {
            state.on_rejected(rejection, &mut cx).await?;
        }
        cx.check(P::DEADLINES)?;
        let outbox = Outbox {
            input: format!("rejections-{}", instance.version),
            correlation_id: record.outbox.correlation_id.clone(),
            ..Outbox::default()
        };
        step::finish_record(&mut record, &state, cx, outbox)?;
        Ok(self
            .commit(key, instance.version, &record)
            .await?
            .map(|version| Instance {
                record,
                version,
                carried_out: false,
            }))
    }
}

fn fired_event(
    deadline: &ScheduledDeadline,
    correlation_id: &str,
) -> Result<NewEvent, HandlerError> {
    let fired = DeadlineFired {
        deadline: deadline.name.clone(),
        generation: deadline.generation,
    };
    let encoded = fired.encode().map_err(HandlerError::permanent)?;
    Ok(NewEvent {
        id: Uuid::now_v7(),
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: Bytes::from(encoded.payload),
        timestamp: deadline.due,
        correlation_id: correlation_id.to_owned(),
        causation_id: None,
        headers: Default::default(),
    })
}
