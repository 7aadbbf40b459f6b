//! Process managers on JetStream: the two subscribers, and deadlines as nats-server message
//! schedules in the instance store's stream.

use std::sync::Arc;
use std::time::SystemTime;

use super::schedule::JetStreamDeadlines;
use crate::process_manager::command::Commands;
use crate::process_manager::deadlines::{Clock, DeadlineFailure, Deadlines};
use crate::process_manager::definition::ProcessManager;
use crate::process_manager::engine::Engine;
use crate::process_manager::record::aggregate_type;
use crate::process_manager::run::{
    check, DeadlineInputs, EventInputs, ProcessConfig, ProcessManagerHandle,
};
use crate::store::{JetStreamStore, NewEvent};
use crate::subscriber::{self, SubscriberError};

/// Runs process manager `P`: its events subscriber reads `events`; its instances, deadline
/// schedules and fired deadlines live in `instances`, a stream of their own with
/// [`StreamConfig::allow_message_schedules`](crate::StreamConfig); `commands` routes the
/// commands it sends.
pub async fn start<P: ProcessManager>(
    events: &JetStreamStore,
    instances: &JetStreamStore,
    commands: Commands,
    config: ProcessConfig,
) -> Result<ProcessManagerHandle, SubscriberError> {
    check::<P>(&config)?;
    if instances.config().name == events.config().name {
        // Schedules turn the stream's rollups on: one message could wipe the events.
        return Err(SubscriberError::InvalidConfig(format!(
            "process manager {}: its instances need a stream of their own, not the events' \
             stream {}, which message schedules would open to rollups",
            P::NAME,
            events.config().name
        )));
    }
    if !instances.config().allow_message_schedules {
        return Err(SubscriberError::InvalidConfig(format!(
            "process manager {}: stream {} holds its deadlines and needs allow_message_schedules",
            P::NAME,
            instances.config().name
        )));
    }
    let deadlines = ScheduledDeadlines {
        schedules: JetStreamDeadlines::new(instances.clone()),
        schedule_type: aggregate_type(P::NAME, "schedule"),
        fired_type: aggregate_type(P::NAME, "deadline"),
    };
    let engine = Arc::new(Engine::<P, _, _>::new(
        instances.clone(),
        deadlines,
        commands,
        Clock::Wall,
        config.cache_capacity,
        config.start_wait,
    ));
    let events = subscriber::start(events, EventInputs(engine.clone()), config.events).await?;
    let deadlines = subscriber::start(instances, DeadlineInputs(engine), config.deadlines).await;
    match deadlines {
        Ok(deadlines) => Ok(ProcessManagerHandle { events, deadlines }),
        Err(error) => {
            let _ = events.shutdown().await;
            Err(error)
        }
    }
}

/// One process manager's deadlines: schedules on `<prefix>.<name>_schedule.<instance>.<deadline>`
/// that fire into `<prefix>.<name>_deadline.<instance>.deadline_fired`.
struct ScheduledDeadlines {
    schedules: JetStreamDeadlines,
    schedule_type: &'static str,
    fired_type: &'static str,
}

impl Deadlines for ScheduledDeadlines {
    async fn schedule(
        &self,
        instance: &str,
        deadline: &str,
        fired: NewEvent,
        due: SystemTime,
    ) -> Result<(), DeadlineFailure> {
        let (schedule_type, fired_type) = (self.schedule_type, self.fired_type);
        (self.schedules)
            .schedule(schedule_type, fired_type, instance, deadline, &fired, due)
            .await?;
        Ok(())
    }

    async fn cancel(&self, instance: &str, deadline: &str) -> Result<(), DeadlineFailure> {
        (self.schedules)
            .cancel(self.schedule_type, instance, deadline)
            .await?;
        Ok(())
    }
}
