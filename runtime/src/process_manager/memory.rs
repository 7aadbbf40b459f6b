//! Process managers on the in-memory store, with deadlines on a [`VirtualClock`].

use std::sync::Arc;

use super::command::Commands;
use super::deadlines::{Clock, InMemoryDeadlines, VirtualClock};
use super::definition::ProcessManager;
use super::engine::Engine;
use super::record::aggregate_type;
use super::run::{check, DeadlineInputs, EventInputs, ProcessConfig, ProcessManagerHandle};
use crate::store::InMemoryStore;
use crate::subscriber::{start_in_memory as subscribe, SubscriberError};

/// Runs process manager `P` on in-memory stores, with the same semantics as on JetStream:
/// `events` holds the handled events, `instances` the instances and fired deadlines (it may
/// be the same store); `commands` routes the commands; deadlines wait on `clock` and fire when
/// it is advanced past them.
pub async fn start_in_memory<P: ProcessManager>(
    events: &InMemoryStore,
    instances: &InMemoryStore,
    commands: Commands,
    clock: VirtualClock,
    config: ProcessConfig,
) -> Result<ProcessManagerHandle, SubscriberError> {
    check::<P>(&config)?;
    let deadlines = InMemoryDeadlines {
        clock: clock.clone(),
        store: instances.clone(),
        fired_type: aggregate_type(P::NAME, "deadline"),
    };
    let engine = Arc::new(Engine::<P, _, _>::new(
        instances.clone(),
        deadlines,
        commands,
        Clock::Virtual(clock),
        config.cache_capacity,
        config.start_wait,
    ));
    let events = subscribe(events, EventInputs(engine.clone()), config.events).await?;
    let deadlines = subscribe(instances, DeadlineInputs(engine), config.deadlines).await?;
    Ok(ProcessManagerHandle { events, deadlines })
}
