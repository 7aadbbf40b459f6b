//! A process manager's metric handles (names in [`crate::observability`]), registered once.

use std::time::SystemTime;

use crate::observability::{
    DEADLINES_CANCELLED, DEADLINES_FIRED, DEADLINES_SCHEDULED, DEADLINE_LATENESS_SECONDS,
    INSTANCES_COMPLETED, INSTANCES_STARTED, PROCESS_COMMANDS,
};

#[derive(Debug, Clone)]
pub(crate) struct ProcessMetrics {
    started: metrics::Counter,
    completed: metrics::Counter,
    scheduled: metrics::Counter,
    cancelled: metrics::Counter,
    fired: metrics::Counter,
    lateness: metrics::Histogram,
    applied: metrics::Counter,
    rejected: metrics::Counter,
}

impl ProcessMetrics {
    pub(crate) fn new(manager: &'static str) -> Self {
        let label = ("process_manager", manager);
        ProcessMetrics {
            started: metrics::counter!(INSTANCES_STARTED, &[label]),
            completed: metrics::counter!(INSTANCES_COMPLETED, &[label]),
            scheduled: metrics::counter!(DEADLINES_SCHEDULED, &[label]),
            cancelled: metrics::counter!(DEADLINES_CANCELLED, &[label]),
            fired: metrics::counter!(DEADLINES_FIRED, &[label]),
            lateness: metrics::histogram!(DEADLINE_LATENESS_SECONDS, &[label]),
            applied: metrics::counter!(PROCESS_COMMANDS, &[label, ("outcome", "applied")]),
            rejected: metrics::counter!(PROCESS_COMMANDS, &[label, ("outcome", "rejected")]),
        }
    }

    pub(crate) fn started(&self) {
        self.started.increment(1);
    }

    pub(crate) fn completed(&self) {
        self.completed.increment(1);
    }

    pub(crate) fn deadline_scheduled(&self) {
        self.scheduled.increment(1);
    }

    pub(crate) fn deadline_cancelled(&self) {
        self.cancelled.increment(1);
    }

    /// A deadline due at `due` is handled at `now` (zero lateness when early, as on a
    /// virtual clock moved past it).
    pub(crate) fn deadline_fired(&self, now: SystemTime, due: SystemTime) {
        self.fired.increment(1);
        let late = now.duration_since(due).unwrap_or_default();
        self.lateness.record(late.as_secs_f64());
    }

    pub(crate) fn command_applied(&self) {
        self.applied.increment(1);
    }

    pub(crate) fn command_rejected(&self) {
        self.rejected.increment(1);
    }
}
