//! What the runtime stores about an instance, as events of its own: each commit is one
//! `instance_committed` event of aggregate (`<name>`, instance id) holding the whole record, so
//! the newest event is the instance and a commit is one optimistic-concurrency append. Fired
//! deadlines arrive as `deadline_fired` events of aggregate (`<name>_deadline`, instance id).

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::command::OutgoingCommand;

/// Everything about one instance after a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, crate::Event)]
#[event(name = "instance_committed", version = 1)]
pub(crate) struct InstanceCommitted {
    /// The process manager's state (its serde form).
    pub(crate) state: serde_json::Value,
    pub(crate) completed: bool,
    /// For each aggregate (`<type>/<id>`) whose events reached the instance, the newest
    /// sequence handled: its events arrive in order, so anything at or below is a redelivery.
    pub(crate) handled: BTreeMap<String, u64>,
    /// The pending deadlines by name.
    pub(crate) deadlines: BTreeMap<String, PendingDeadline>,
    /// The generation the next scheduled deadline gets: a fired deadline whose generation is
    /// not the pending one was cancelled or replaced, and is ignored.
    pub(crate) next_generation: u64,
    /// What the commit asked for, carried out after it (again, after a crash: every effect is
    /// idempotent).
    pub(crate) outbox: Outbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingDeadline {
    pub(crate) generation: u64,
    pub(crate) due: SystemTime,
}

/// The effects of one commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outbox {
    /// What the commit handled (an event id, `deadline-<name>-<generation>`, or
    /// `rejections-<version>`): the commands' ids are made of it.
    pub(crate) input: String,
    pub(crate) correlation_id: String,
    pub(crate) commands: Vec<OutgoingCommand>,
    pub(crate) schedule: Vec<ScheduledDeadline>,
    pub(crate) cancel: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduledDeadline {
    pub(crate) name: String,
    pub(crate) generation: u64,
    pub(crate) due: SystemTime,
}

/// A deadline as the server (or the virtual clock) hands it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, crate::Event)]
#[event(name = "deadline_fired", version = 1)]
pub(crate) struct DeadlineFired {
    pub(crate) deadline: String,
    pub(crate) generation: u64,
}

#[derive(Debug, crate::EventSet)]
pub(crate) enum FiredDeadlines {
    Fired(DeadlineFired),
}

impl InstanceCommitted {
    pub(crate) fn new(state: serde_json::Value) -> Self {
        InstanceCommitted {
            state,
            completed: false,
            handled: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            next_generation: 1,
            outbox: Outbox::default(),
        }
    }
}

/// The aggregate types of a process manager's instances, fired deadlines and schedules,
/// as the `&'static str` an [`AggregateKey`](crate::AggregateKey) takes; made once per name.
pub(crate) fn aggregate_type(manager: &'static str, suffix: &str) -> &'static str {
    static NAMES: LazyLock<Mutex<BTreeMap<String, &'static str>>> = LazyLock::new(Mutex::default);
    if suffix.is_empty() {
        return manager;
    }
    let name = format!("{manager}_{suffix}");
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    names
        .entry(name)
        .or_insert_with_key(|name| Box::leak(name.clone().into_boxed_str()))
}
