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

/// The part of an [`AggregateState`] an append needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// The aggregate's version.
    pub version: u64,
    /// Stream sequence of its last event (0: none).
    pub last_seq: u64,
    /// The first outcome of the append's command id, if it ran before.
    pub prior: Option<AppendOutcome>,
}

impl AggregateState {
    /// What an append with `command_id` needs, or `None` when the command ids are unknown.
    pub fn head(&self, command_id: Option<&str>) -> Option<Head> {
        let prior = match (command_id, &self.commands) {
            (None, _) => None,
            (Some(_), None) => return None,
            (Some(command), Some(commands)) => commands.get(command).copied(),
        };
        Some(Head {
            version: self.version,
            last_seq: self.last_seq,
            prior,
        })
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

    /// What an append needs to know about `key`, copied out under the lock (never the whole
    /// state): `None` when the aggregate is not cached, or when `command_id` is given and the
    /// aggregate's command ids are not known.
    pub fn head(&self, key: &AggregateKey, command_id: Option<&str>) -> Option<Head> {
        self.lock().get(key)?.head(command_id)
    }

    /// The stream sequence of `key`'s event `version`, if the cache knows it.
    pub fn position_of(&self, key: &AggregateKey, version: u64) -> Option<u64> {
        self.lock().get(key)?.position_of(version)
    }

    /// Records an append made on top of version `before`, in place. An entry that moved on
    /// meanwhile is left alone; a missing one restarts with unknown command ids.
    pub fn appended(
        &self,
        key: &AggregateKey,
        before: u64,
        outcome: AppendOutcome,
        command_id: Option<&str>,
    ) {
        {
            let mut map = self.lock();
            match map.get_mut(key) {
                Some(state) if state.version == before => {
                    state.appended(outcome, command_id);
                    return;
                }
                Some(_) => return,
                None => {}
            }
        }
        let mut state = AggregateState::default();
        state.remember(outcome.last_sequence, outcome.last_position);
        self.put(key, state);
    }

    /// Records events read from version `from` on, in place when the entry ends right before
    /// them; otherwise they start a new entry (with unknown command ids).
    pub fn extend(&self, key: &AggregateKey, from: u64, events: &[StoredEvent]) {
        {
            let mut map = self.lock();
            if let Some(state) = map.get_mut(key) {
                if state.version + 1 == from {
                    state.extend(events);
                    return;
                }
            }
        }
        let mut state = AggregateState::default();
        state.extend(events);
        self.put(key, state);
    }

    /// Extends `key`'s entry with the events that follow it, in place, when the entry ends
    /// right before `from` and knows its command ids. False when it does not (then nothing
    /// changed).
    pub fn extend_known(&self, key: &AggregateKey, from: u64, events: &[StoredEvent]) -> bool {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(state) if state.version + 1 == from && state.commands.is_some() => {
                state.extend(events);
                true
            }
            _ => false,
        }
    }

    /// Stores `state` unless a newer one is there already. A newer entry that does not know
    /// its command ids gives way to an older one that does: a cache behind the stream only
    /// costs a conflict and a catch-up, while unknown command ids make every idempotent append
    /// read the aggregate's whole history.
    pub fn put(&self, key: &AggregateKey, state: AggregateState) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.lock();
        if let Some(existing) = map.get(key) {
            let complete_over_unknown = existing.commands.is_none() && state.commands.is_some();
            if existing.version > state.version && !complete_over_unknown {
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

pub(crate) use crate::store::outcome_of;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::jetstream::fixture::key;

    fn event(sequence: u64, command: &str) -> StoredEvent {
        crate::store::jetstream::fixture::event(sequence, Some(command))
    }

    #[test]
    fn a_complete_state_replaces_a_newer_one_without_command_ids() {
        let cache = Cache::new(10);
        let outcome = AppendOutcome {
            first_sequence: 3,
            last_sequence: 3,
            last_position: 30,
            duplicate: false,
        };
        // An append the cache had no entry for: version known, command ids not.
        cache.appended(&key(), 2, outcome, Some("c3"));
        assert!(cache.head(&key(), Some("c4")).is_none());
        // A scan that read up to version 2 must still land, or every idempotent append scans.
        cache.put(
            &key(),
            AggregateState::from_history(&[event(1, "c1"), event(2, "c2")]),
        );
        let head = cache.head(&key(), Some("c4")).expect("command ids known");
        assert_eq!(head.version, 2);
        // A newer complete state is not replaced by an older one.
        cache.put(&key(), AggregateState::from_history(&[event(1, "c1")]));
        assert_eq!(cache.head(&key(), None).unwrap().version, 2);
    }

    #[test]
    fn extending_in_place_needs_the_next_version_and_known_command_ids() {
        let cache = Cache::new(10);
        cache.put(&key(), AggregateState::from_history(&[event(1, "c1")]));
        assert!(!cache.extend_known(&key(), 3, &[event(3, "c3")]), "a gap");
        assert!(cache.extend_known(&key(), 2, &[event(2, "c2")]));
        let head = cache.head(&key(), Some("c2")).unwrap();
        assert_eq!(head.version, 2);
        assert_eq!(head.prior.map(|p| p.first_sequence), Some(2));
    }
}
