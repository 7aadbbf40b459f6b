//! A bounded map aggregate -> (version, last stream sequence, known command ids), so appends to
//! warm aggregates need no lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::store::{AggregateKey, AppendOutcome, StoredEvent};

/// At most this many command ids are remembered per aggregate; past it the aggregate's command
/// ids count as unknown and the next append with a command id scans the aggregate again.
const MAX_COMMANDS_PER_AGGREGATE: usize = 4096;

/// How many recent (version, stream sequence) pairs are kept per aggregate, so a writer that
/// fell a few versions behind catches up from where it stopped instead of from the start.
const RECENT_POSITIONS: usize = 256;

/// What the store knows about one aggregate at `version`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AggregateState {
    /// The aggregate's version: its number of events.
    pub version: u64,
    /// Stream sequence of its last event (0: none).
    pub last_seq: u64,
    /// The first outcome of every command id of the aggregate up to `version`, when known.
    pub commands: Option<HashMap<String, AppendOutcome>>,
    /// Recent (version, stream sequence) pairs, oldest first.
    pub recent: VecDeque<(u64, u64)>,
}

impl AggregateState {
    /// Builds the state from an aggregate's whole history, in order.
    pub fn from_history(events: &[StoredEvent]) -> Self {
        let mut state = AggregateState {
            commands: Some(HashMap::new()),
            ..Default::default()
        };
        state.extend(events);
        state
    }

    /// The stream sequence of the aggregate's event `version`, if it is among the recent ones.
    pub fn position_of(&self, version: u64) -> Option<u64> {
        if version == self.version && self.last_seq != 0 {
            return Some(self.last_seq);
        }
        self.recent
            .iter()
            .rev()
            .find(|(v, _)| *v == version)
            .map(|(_, seq)| *seq)
    }

    /// Records that the aggregate's event `version` is at stream sequence `seq`.
    pub fn remember(&mut self, version: u64, seq: u64) {
        self.version = version;
        self.last_seq = seq;
        if self.recent.len() == RECENT_POSITIONS {
            self.recent.pop_front();
        }
        self.recent.push_back((version, seq));
    }

    /// Adds the events that follow `version`, in order.
    pub fn extend(&mut self, events: &[StoredEvent]) {
        for event in events {
            self.remember(event.sequence, event.position);
            if let (Some(command), Some(commands)) = (&event.command_id, &mut self.commands) {
                commands
                    .entry(command.clone())
                    .and_modify(|o| {
                        o.last_sequence = event.sequence;
                        o.last_position = event.position;
                    })
                    .or_insert(AppendOutcome {
                        first_sequence: event.sequence,
                        last_sequence: event.sequence,
                        last_position: event.position,
                        duplicate: false,
                    });
            }
        }
        self.trim();
    }

    /// Records a successful append.
    pub fn appended(&mut self, outcome: AppendOutcome, command_id: Option<&str>) {
        self.remember(outcome.last_sequence, outcome.last_position);
        if let (Some(command), Some(commands)) = (command_id, &mut self.commands) {
            commands.insert(command.to_owned(), outcome);
        }
        self.trim();
    }

    fn trim(&mut self) {
        if self
            .commands
            .as_ref()
            .is_some_and(|c| c.len() > MAX_COMMANDS_PER_AGGREGATE)
        {
            self.commands = None;
        }
    }
}

/// The bounded cache.
pub(crate) struct Cache {
    capacity: usize,
    map: Mutex<HashMap<AggregateKey, AggregateState>>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AggregateKey, AggregateState>> {
        // Entries are replaced whole, so a poisoned map still holds consistent entries.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &AggregateKey) -> Option<AggregateState> {
        self.lock().get(key).cloned()
    }

    /// Stores `state` unless a newer one is there already.
    pub fn put(&self, key: &AggregateKey, state: AggregateState) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        if let Some(existing) = map.get(key) {
            if existing.version > state.version {
                return;
            }
        } else if map.len() >= self.capacity {
            // Evict an arbitrary entry: cheap, and a miss only costs one lookup.
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(key.clone(), state);
    }

    pub fn remove(&self, key: &AggregateKey) {
        self.lock().remove(key);
    }
}
