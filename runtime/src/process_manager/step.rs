//! The rules of one step of an instance, shared by the runtime and the fixture: whether an
//! input is handled, and how a handler's effects change the record.

use super::context::ProcessContext;
use super::definition::ProcessManager;
use super::record::{DeadlineFired, InstanceCommitted, Outbox, PendingDeadline, ScheduledDeadline};
use crate::subscriber::HandlerError;

/// An input as far as admission goes.
pub(crate) enum Admission<'a> {
    Event {
        /// `<aggregate type>/<aggregate id>`.
        source: String,
        sequence: u64,
        starts: bool,
    },
    Deadline(&'a DeadlineFired),
}

/// What becomes of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Run,
    Skip,
    /// An event that does not start an instance, for an instance that does not exist (yet: its
    /// start event may come from another aggregate, handled elsewhere or later).
    NotStarted,
}

/// Whether the input runs: not for a completed instance; an event only if it starts the
/// instance or the instance exists, and only once (an aggregate's events arrive in order, so a
/// sequence at or below the one handled is a redelivery); a deadline only if it is the pending
/// generation of its name (not cancelled, replaced or handled).
pub(crate) fn admits(record: Option<&InstanceCommitted>, admission: &Admission) -> Verdict {
    let run = |run: bool| if run { Verdict::Run } else { Verdict::Skip };
    if record.is_some_and(|record| record.completed) {
        return Verdict::Skip;
    }
    match (admission, record) {
        (Admission::Event { starts: true, .. }, None) => Verdict::Run,
        (Admission::Event { starts: false, .. }, None) => Verdict::NotStarted,
        (
            Admission::Event {
                source, sequence, ..
            },
            Some(record),
        ) => {
            let handled = record.handled.get(source).copied();
            run(handled.is_none_or(|handled| handled < *sequence))
        }
        (Admission::Deadline(_), None) => Verdict::Skip,
        (Admission::Deadline(fired), Some(record)) => run((record.deadlines)
            .get(&fired.deadline)
            .is_some_and(|pending| pending.generation == fired.generation)),
    }
}

/// Folds the handler's effects into the record: new generations for scheduled deadlines,
/// pending ones dropped when cancelled or when the instance completes.
pub(crate) fn finish_record<P: ProcessManager>(
    record: &mut InstanceCommitted,
    state: &P,
    cx: ProcessContext,
    mut outbox: Outbox,
) -> Result<(), HandlerError> {
    record.state = serde_json::to_value(state).map_err(|error| {
        HandlerError::permanent(format!("the state does not serialize: {error}"))
    })?;
    let effects = cx.effects;
    outbox.commands = effects.commands;
    for name in effects.cancelled {
        if record.deadlines.remove(&name).is_some() {
            outbox.cancel.push(name);
        }
    }
    for (name, due) in effects.scheduled {
        let generation = record.next_generation;
        record.next_generation += 1;
        record
            .deadlines
            .insert(name.clone(), PendingDeadline { generation, due });
        outbox.schedule.push(ScheduledDeadline {
            name,
            generation,
            due,
        });
    }
    if effects.completed {
        record.completed = true;
        outbox.schedule.clear();
        outbox
            .cancel
            .extend(std::mem::take(&mut record.deadlines).into_keys());
    }
    record.outbox = outbox;
    Ok(())
}
