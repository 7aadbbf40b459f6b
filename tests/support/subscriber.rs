//! What the subscriber tests share, whatever the backend: deposits to append, seeding,
//! waiting for a condition, and a subscriber that records what it handled.

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jetsource::subscriber::{EventContext, HandlerError, Subscriber};
use jetsource::{
    AggregateId, AggregateKey, Codec, Event, EventSet, EventStore, ExpectedVersion, NewEvent,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::HandlingLog;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
pub struct Deposited {
    pub amount: u64,
}

/// Stored on the same aggregates as deposits; handled only where a test says so.
#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "noted", version = 1)]
pub struct Noted {
    pub text: String,
}

/// What most test subscribers handle: only deposits.
#[derive(EventSet, Debug, Clone, PartialEq)]
pub enum Handled {
    Deposited(Deposited),
}

/// An event as a caller would append it, with a JSON payload given as is.
pub fn new_event(name: &'static str, version: u32, payload: &[u8]) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        name,
        version,
        codec: Codec::Json,
        payload: payload.to_vec().into(),
        timestamp: SystemTime::now(),
        correlation_id: "corr".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

/// `event`, encoded by its derive.
pub fn encoded(event: impl Event) -> NewEvent {
    let encoded = event.encode().expect("encode");
    new_event(encoded.name, encoded.version, &encoded.payload)
}

pub fn deposit(amount: u64) -> NewEvent {
    encoded(Deposited { amount })
}

pub fn note(text: &str) -> NewEvent {
    encoded(Noted { text: text.into() })
}

/// The key of account `id`.
pub fn account(id: &str) -> AggregateKey {
    AggregateKey::new("account", AggregateId::new(id).expect("valid id"))
}

/// An appended event: its id and store position.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub id: Uuid,
    pub position: u64,
}

/// Appends `event` to account `id`.
pub async fn append<St: EventStore>(store: &St, id: &str, event: NewEvent) -> Appended {
    let event_id = event.id;
    let outcome = store
        .append(&account(id), ExpectedVersion::Any, None, vec![event])
        .await
        .expect("append");
    Appended {
        id: event_id,
        position: outcome.last_position,
    }
}

/// Appends deposits `amounts` to each of `aggregates` accounts `a0`, `a1`, ..., in parallel
/// across accounts. Returns every event id.
pub async fn seed<St: EventStore>(
    store: &St,
    aggregates: usize,
    amounts: RangeInclusive<u64>,
) -> HashSet<Uuid> {
    let mut tasks = Vec::new();
    for a in 0..aggregates {
        let (store, amounts) = (store.clone(), amounts.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in amounts {
                ids.push(append(&store, &format!("a{a}"), deposit(n)).await.id);
                if n % 10 == 0 {
                    // Let other accounts' appends interleave with this one's.
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.expect("seed task"));
    }
    all
}

/// Polls `done` until it holds; panics naming `what` after a generous hang guard.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Records every handler call of a [`Recording`]: per account the amounts in handling order,
/// per event id the completed calls, the delivery counts, and the most concurrent calls.
#[derive(Default)]
pub struct Recorder {
    pub log: HandlingLog,
    pub delivery_counts: Mutex<Vec<u64>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Recorder {
    /// Distinct events completed.
    pub fn completed(&self) -> usize {
        self.log.completed()
    }

    /// Completed calls, repeats included.
    pub fn calls(&self) -> u32 {
        self.log.completions.lock().unwrap().values().sum()
    }

    /// Completions beyond the first of each event.
    pub fn duplicates(&self) -> u32 {
        self.log.duplicates()
    }

    /// The most handler calls that ran at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// The amounts account `id` was handled with, in handling order.
    pub fn amounts_of(&self, id: &str) -> Option<Vec<u64>> {
        self.log.order.lock().unwrap().get(id).cloned()
    }

    /// Asserts that `aggregates` accounts were each handled with amounts `1..=per_aggregate`, in
    /// that order.
    pub fn assert_in_order(&self, aggregates: usize, per_aggregate: u64) {
        let order = self.log.order.lock().unwrap();
        assert_eq!(order.len(), aggregates);
        let expected: Vec<u64> = (1..=per_aggregate).collect();
        for (aggregate, amounts) in order.iter() {
            assert_eq!(amounts, &expected, "aggregate {aggregate} out of order");
        }
    }
}

/// Handles deposits, recording them in its [`Recorder`].
#[derive(Clone)]
pub struct Recording {
    rec: Arc<Recorder>,
    /// Sleep this long in each call, so that calls overlap.
    work: Duration,
}

impl Recording {
    pub fn new(rec: &Arc<Recorder>, work: Duration) -> Self {
        Recording {
            rec: rec.clone(),
            work,
        }
    }
}

impl Subscriber for Recording {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(d) = event;
        let now = self.rec.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.rec.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        self.rec.in_flight.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(ctx.aggregate_type, "account");
        assert_eq!(ctx.event_name, "deposited");
        self.rec.log.record_value(ctx, d.amount);
        self.rec
            .delivery_counts
            .lock()
            .unwrap()
            .push(ctx.delivery_count);
        Ok(())
    }
}
