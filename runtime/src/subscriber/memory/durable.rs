//! The durable state of in-memory subscribers, kept in their [`InMemoryStore`]: what the
//! JetStream server keeps for a durable consumer (how far it read, the events delivered and not
//! acknowledged with their handler attempts), the subscriber's dead letters, the ones redriven
//! back to it, and its completion log.
//!
//! Every change that decides an event's fate (an ack with its completion, a dead letter) is
//! made under one lock, so no crash can separate a completion from its ack here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use uuid::Uuid;

use crate::store::{InMemoryStore, StoredEvent};
use crate::subscriber::dead_letter::{DeadLetterReason, InMemoryDeadLetter};

/// The durable consumers of one store, by durable name.
///
/// Kept among the store's [`Attachments`](crate::attachments::Attachments) (see
/// [`Durables::of`]): they live as long as the store, as a JetStream server keeps its
/// consumers, while the store itself knows nothing of subscribers.
#[derive(Default)]
pub(crate) struct Durables {
    by_name: Mutex<HashMap<String, Arc<Durable>>>,
}

impl Durables {
    /// The durable consumers of `store`.
    pub(crate) fn of(store: &InMemoryStore) -> Arc<Durables> {
        store.attachments().get_or_default::<Durables>()
    }

    /// The durable `name`, if a subscriber ever started with it.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Durable>> {
        lock(&self.by_name).get(name).cloned()
    }

    /// The durable `name`; a new one starts reading after `start_after()`. An existing one
    /// keeps its position, as a JetStream durable consumer does.
    pub(crate) fn get_or_create(
        &self,
        name: &str,
        start_after: impl FnOnce() -> u64,
    ) -> Arc<Durable> {
        lock(&self.by_name)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Durable::new(name, start_after())))
            .clone()
    }
}

/// Where a delivered event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The store's log, at this position.
    Log(u64),
    /// The subscriber's redrive queue, with this redrive number.
    Redrive(u64),
}

/// An event handed to the subscriber, not acknowledged yet.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Shared with the per-event loop, which holds it through every attempt.
    pub(crate) event: Arc<StoredEvent>,
    pub(crate) source: Source,
    /// Handler attempts made on it before this delivery (in earlier runs, or before the
    /// acknowledgement was forgotten), since it was read from the log or redriven.
    pub(crate) attempts_before: u64,
    /// For a redriven dead letter, the attempts its letter recorded.
    pub(crate) redriven_after: Option<u64>,
}

/// One durable consumer.
pub(crate) struct Durable {
    name: String,
    state: Mutex<State>,
    /// Bumped when something a running subscriber must look at again changed (a redrive, a
    /// forgotten acknowledgement).
    changes: watch::Sender<u64>,
    running: AtomicBool,
}

struct State {
    /// The last log position read, whether the event was delivered or filtered out.
    cursor: u64,
    /// The highest cursor ever: an event read again at or below it was delivered before.
    high_water: u64,
    /// Log positions delivered and not acknowledged, with the handler attempts made on each.
    unacked: BTreeMap<u64, u64>,
    completions: Completions,
    dead_letters: Vec<InMemoryDeadLetter>,
    last_dead_letter: u64,
    /// Redriven dead letters not handled yet, by redrive number.
    redriven: BTreeMap<u64, Redriven>,
    last_redrive: u64,
}

struct Redriven {
    event: Arc<StoredEvent>,
    /// Handler attempts since the redrive.
    attempts: u64,
    /// The attempts its dead letter recorded: the handler's count goes on from there.
    letter_attempts: u64,
}

impl Durable {
    fn new(name: &str, start_after: u64) -> Self {
        Durable {
            name: name.to_owned(),
            state: Mutex::new(State {
                cursor: start_after,
                high_water: start_after,
                unacked: BTreeMap::new(),
                completions: Completions::default(),
                dead_letters: Vec::new(),
                last_dead_letter: 0,
                redriven: BTreeMap::new(),
                last_redrive: 0,
            }),
            changes: watch::channel(0).0,
            running: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Claims the durable for one running subscriber; `None` while another runs on it.
    pub(crate) fn lease(self: &Arc<Self>) -> Option<Lease> {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Lease(self.clone()))
    }

    /// Tells about redrives and forgotten acknowledgements.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The last log position read.
    pub(crate) fn cursor(&self) -> u64 {
        self.state().cursor
    }

    /// Every log event delivered before and not acknowledged, in position order: a new run
    /// hands these out before anything newer.
    pub(crate) fn unacknowledged_deliveries(&self, store: &InMemoryStore) -> Vec<Delivery> {
        let state = self.state();
        state
            .unacked
            .iter()
            .filter_map(|(&position, &attempts)| {
                Some(Delivery {
                    event: Arc::new(store.event_at(position)?),
                    source: Source::Log(position),
                    attempts_before: attempts,
                    redriven_after: None,
                })
            })
            .collect()
    }

    /// Reads on from the cursor: up to `max` events whose names are `wanted`, recorded as
    /// delivered; the others are passed over for good.
    pub(crate) fn read(
        &self,
        store: &InMemoryStore,
        wanted: &HashSet<&'static str>,
        max: usize,
    ) -> Vec<Delivery> {
        if max == 0 {
            return Vec::new();
        }
        let mut state = self.state();
        let (events, reached) =
            store.read_wanted(state.cursor, max, |e| wanted.contains(e.name.as_str()));
        let high_water = state.high_water;
        let deliveries = events
            .into_iter()
            .map(|event| {
                let position = event.position;
                let attempts_before = u64::from(position <= high_water);
                state.unacked.insert(position, attempts_before);
                Delivery {
                    event: Arc::new(event),
                    source: Source::Log(position),
                    attempts_before,
                    redriven_after: None,
                }
            })
            .collect();
        state.cursor = reached;
        state.high_water = state.high_water.max(reached);
        deliveries
    }

    /// Redriven dead letters with a redrive number above `seen`, in redrive order.
    pub(crate) fn redriven_after(&self, seen: u64) -> Vec<Delivery> {
        self.state()
            .redriven
            .range(seen + 1..)
            .map(|(&number, letter)| Delivery {
                event: letter.event.clone(),
                source: Source::Redrive(number),
                attempts_before: letter.attempts,
                redriven_after: Some(letter.letter_attempts),
            })
            .collect()
    }

    /// Counts a handler attempt on `source`, so a later run continues the count.
    pub(crate) fn attempt_started(&self, source: Source) {
        let mut state = self.state();
        let attempts = match source {
            Source::Log(position) => state.unacked.get_mut(&position),
            Source::Redrive(number) => state.redriven.get_mut(&number).map(|r| &mut r.attempts),
        };
        if let Some(attempts) = attempts {
            *attempts += 1;
        }
    }

    /// Whether `id` is in the completion log.
    pub(crate) fn is_completed(&self, id: Uuid) -> bool {
        self.state().completions.contains(id)
    }

    /// Acknowledges `source`; with `completed`, records the event id in the completion log for
    /// that long in the same step.
    pub(crate) fn acknowledge(&self, source: Source, completed: Option<(Uuid, Duration)>) {
        let mut state = self.state();
        state.settle(source);
        if let Some((id, ttl)) = completed {
            state.completions.insert(id, ttl);
        }
    }

    /// Stores a dead letter of `event` and acknowledges `source` in the same step.
    pub(crate) fn dead_letter(
        &self,
        source: Source,
        event: StoredEvent,
        reason: DeadLetterReason,
        error: String,
        delivery_count: u64,
    ) {
        let mut state = self.state();
        state.settle(source);
        state.last_dead_letter += 1;
        let letter = InMemoryDeadLetter {
            dead_letter_sequence: state.last_dead_letter,
            subscriber: self.name.clone(),
            reason,
            error,
            event_id: event.id,
            event_name: event.name.clone(),
            event_version: event.version,
            event,
            delivery_count,
            dead_lettered_at: SystemTime::now(),
        };
        state.dead_letters.push(letter);
    }

    /// The dead letters, oldest first.
    pub(crate) fn dead_letters(&self) -> Vec<InMemoryDeadLetter> {
        self.state().dead_letters.clone()
    }

    /// Moves the dead letters `select` picks to the redrive queue, in their order; returns
    /// how many.
    pub(crate) fn redrive(&self, select: impl Fn(&InMemoryDeadLetter) -> bool) -> usize {
        let moved = {
            let mut state = self.state();
            let (picked, kept) = std::mem::take(&mut state.dead_letters)
                .into_iter()
                .partition::<Vec<_>, _>(|letter| select(letter));
            state.dead_letters = kept;
            for letter in &picked {
                state.last_redrive += 1;
                let number = state.last_redrive;
                let redriven = Redriven {
                    event: Arc::new(letter.event.clone()),
                    attempts: 0,
                    letter_attempts: letter.delivery_count,
                };
                state.redriven.insert(number, redriven);
            }
            picked.len()
        };
        if moved > 0 {
            self.changed();
        }
        moved
    }

    /// Forgets the acknowledgements of the log events at `position` and later: they are read
    /// and delivered again.
    pub(crate) fn redeliver_from(&self, position: u64) {
        {
            let mut state = self.state();
            let from = position.max(1);
            state.cursor = state.cursor.min(from - 1);
            // Pending ones are read again too, keeping every unacknowledged event at or below
            // the cursor, so a new run's redeliveries still come before anything it reads.
            state.unacked.retain(|&p, _| p < from);
        }
        self.changed();
    }

    /// Every log position up to this one is acknowledged or was passed over.
    pub(crate) fn acknowledged_through(&self) -> u64 {
        let state = self.state();
        match state.unacked.keys().next() {
            Some(&first) => first - 1,
            None => state.cursor,
        }
    }

    /// The log positions delivered and not acknowledged.
    pub(crate) fn unacknowledged(&self) -> Vec<u64> {
        self.state().unacked.keys().copied().collect()
    }
}

impl State {
    /// Removes a delivered event from what is pending.
    fn settle(&mut self, source: Source) {
        match source {
            Source::Log(position) => {
                self.unacked.remove(&position);
            }
            Source::Redrive(number) => {
                self.redriven.remove(&number);
            }
        }
    }
}

/// The right to run a subscriber on a durable; released when dropped (also when the running
/// subscriber is aborted).
pub(crate) struct Lease(Arc<Durable>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// Completed event ids, each kept for its time to live.
#[derive(Default)]
struct Completions {
    ids: HashSet<Uuid>,
    /// When each id expires, in insertion order. Ids whose expiry does not fit an `Instant`
    /// are kept for good and are not listed.
    expiring: VecDeque<(Instant, Uuid)>,
}

impl Completions {
    fn insert(&mut self, id: Uuid, ttl: Duration) {
        let now = Instant::now();
        self.expire(now);
        if self.ids.insert(id) {
            if let Some(at) = now.checked_add(ttl) {
                self.expiring.push_back((at, id));
            }
        }
    }

    fn contains(&mut self, id: Uuid) -> bool {
        self.expire(Instant::now());
        self.ids.contains(&id)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.expiring.front() {
            if at > now {
                break;
            }
            self.expiring.pop_front();
            self.ids.remove(&id);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is a few map operations that cannot panic halfway, so a
    // poisoned lock (a panic elsewhere while holding it) still guards consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_expire_after_their_ttl() {
        let mut completions = Completions::default();
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        completions.insert(old, Duration::ZERO);
        completions.insert(new, Duration::from_secs(3600));
        assert!(!completions.contains(old));
        assert!(completions.contains(new));
    }

    #[test]
    fn a_lease_is_exclusive_until_dropped() {
        let durable = Arc::new(Durable::new("d", 0));
        let lease = durable.lease().expect("first lease");
        assert!(durable.lease().is_none());
        drop(lease);
        assert!(durable.lease().is_some());
    }

    #[test]
    fn acknowledged_through_stops_before_the_first_pending_position() {
        let durable = Durable::new("d", 0);
        {
            let mut state = durable.state();
            state.cursor = 10;
            state.unacked.insert(4, 0);
            state.unacked.insert(7, 1);
        }
        assert_eq!(durable.acknowledged_through(), 3);
        durable.acknowledge(Source::Log(4), None);
        assert_eq!(durable.acknowledged_through(), 6);
        durable.acknowledge(Source::Log(7), None);
        assert_eq!(durable.acknowledged_through(), 10);
    }

    #[test]
    fn redelivering_from_a_position_rewinds_the_cursor_and_drops_later_pending_ones() {
        let durable = Durable::new("d", 0);
        {
            let mut state = durable.state();
            state.cursor = 10;
            state.high_water = 10;
            state.unacked.insert(3, 2);
            state.unacked.insert(8, 0);
        }
        durable.redeliver_from(5);
        assert_eq!(durable.cursor(), 4);
        assert_eq!(durable.unacknowledged(), vec![3]);
    }
}
