//! Where deadlines wait until they are due: nats-server's message schedules on JetStream
//! (`jetstream/schedule.rs`), a virtual clock in memory. Either hands a due deadline back as a
//! `deadline_fired` event in the instance store, which the deadlines subscriber delivers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::id::AggregateId;
use crate::store::{AggregateKey, EventStore, ExpectedVersion, InMemoryStore, NewEvent};

pub(crate) type DeadlineFailure = Box<dyn std::error::Error + Send + Sync>;

/// Holds deadlines until they are due. Both operations are idempotent: the runtime repeats
/// them after a crash.
pub(crate) trait Deadlines: Send + Sync + 'static {
    /// Sets (or replaces) deadline `deadline` of `instance`: at `due`, `fired` is stored.
    fn schedule(
        &self,
        instance: &str,
        deadline: &str,
        fired: NewEvent,
        due: SystemTime,
    ) -> impl Future<Output = Result<(), DeadlineFailure>> + Send;

    /// Drops deadline `deadline` of `instance` if it has not fired.
    fn cancel(
        &self,
        instance: &str,
        deadline: &str,
    ) -> impl Future<Output = Result<(), DeadlineFailure>> + Send;
}

/// The time a process manager's handlers see and its deadlines are due by.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    #[cfg_attr(not(feature = "jetstream"), allow(dead_code))]
    Wall,
    Virtual(VirtualClock),
}

impl Clock {
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::Wall => SystemTime::now(),
            Clock::Virtual(clock) => clock.now(),
        }
    }
}

/// Virtual time for process managers in memory: deadlines fire when a test advances it, not
/// when the wall clock says.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use jetsource::process_manager::VirtualClock;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let clock = VirtualClock::new(SystemTime::UNIX_EPOCH);
/// clock.advance(Duration::from_secs(60)).await.unwrap();
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
/// assert_eq!(clock.pending(), 0);
/// # });
/// ```
#[derive(Clone)]
pub struct VirtualClock {
    inner: Arc<Mutex<ClockState>>,
}

struct ClockState {
    now: SystemTime,
    /// (where the fired event goes, deadline name) -> what fires, when, in which store.
    pending: HashMap<(AggregateKey, String), Pending>,
}

struct Pending {
    fired: NewEvent,
    due: SystemTime,
    store: InMemoryStore,
}

impl std::fmt::Debug for VirtualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        (f.debug_struct("VirtualClock"))
            .field("now", &state.now)
            .field("pending", &state.pending.len())
            .finish()
    }
}

impl VirtualClock {
    /// A clock that reads `start` until advanced.
    pub fn new(start: SystemTime) -> Self {
        VirtualClock {
            inner: Arc::new(Mutex::new(ClockState {
                now: start,
                pending: HashMap::new(),
            })),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> SystemTime {
        self.lock().now
    }

    /// How many deadlines wait.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Moves time on by `by` and stores every deadline due by then, earliest first (each in
    /// the in-memory instance store of its process manager, where its deadlines subscriber
    /// picks it up).
    pub async fn advance(&self, by: Duration) -> Result<(), crate::StoreError> {
        let due = {
            let mut state = self.lock();
            state.now += by;
            let now = state.now;
            let keys: Vec<_> = (state.pending.iter())
                .filter(|(_, pending)| pending.due <= now)
                .map(|(key, _)| key.clone())
                .collect();
            let mut due: Vec<_> = (keys.into_iter())
                .filter_map(|key| state.pending.remove(&key).map(|pending| (key, pending)))
                .collect();
            due.sort_by_key(|(_, pending)| pending.due);
            due
        };
        for ((key, _), pending) in due {
            (pending.store)
                .append(&key, ExpectedVersion::Any, None, vec![pending.fired])
                .await?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Deadlines of one process manager on a [`VirtualClock`].
pub(crate) struct InMemoryDeadlines {
    pub(crate) clock: VirtualClock,
    pub(crate) store: InMemoryStore,
    pub(crate) fired_type: &'static str,
}

impl Deadlines for InMemoryDeadlines {
    async fn schedule(
        &self,
        instance: &str,
        deadline: &str,
        fired: NewEvent,
        due: SystemTime,
    ) -> Result<(), DeadlineFailure> {
        let key = (self.key(instance)?, deadline.to_owned());
        let pending = Pending {
            fired,
            due,
            store: self.store.clone(),
        };
        self.clock.lock().pending.insert(key, pending);
        // Like a server's overdue schedule: one already due fires at once.
        self.clock.advance(Duration::ZERO).await?;
        Ok(())
    }

    async fn cancel(&self, instance: &str, deadline: &str) -> Result<(), DeadlineFailure> {
        let key = (self.key(instance)?, deadline.to_owned());
        self.clock.lock().pending.remove(&key);
        Ok(())
    }
}

impl InMemoryDeadlines {
    fn key(&self, instance: &str) -> Result<AggregateKey, DeadlineFailure> {
        Ok(AggregateKey::new(
            self.fired_type,
            AggregateId::new(instance)?,
        ))
    }
}
