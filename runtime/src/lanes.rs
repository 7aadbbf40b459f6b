//! One lane per aggregate and store: commands on the same aggregate through one store (and its
//! clones, whichever repository sends them) run one after the other, so they never conflict
//! with each other, only with other processes; commands on different aggregates run in
//! parallel. A second store opened in the same process counts as another process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::store::AggregateKey;

/// A lane's name: the store's [`EventStore::lane_scope`](crate::EventStore::lane_scope) and the
/// aggregate.
type LaneKey = (usize, AggregateKey);

static LANES: LazyLock<Mutex<HashMap<LaneKey, Arc<AsyncMutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// Holds a lane until dropped.
pub(crate) struct Lane {
    key: LaneKey,
    guard: Option<OwnedMutexGuard<()>>,
}

/// Waits for the lane of `key` in the store of `scope`, in arrival order (tokio's mutex is
/// fair).
pub(crate) async fn enter(scope: usize, key: &AggregateKey) -> Lane {
    let key = (scope, key.clone());
    let lane = {
        let mut lanes = LANES.lock().unwrap_or_else(|p| p.into_inner());
        lanes.entry(key.clone()).or_default().clone()
    };
    Lane {
        key,
        guard: Some(lane.lock_owned().await),
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Forget a lane nobody waits for: the map holds one reference, a waiter another.
        let mut lanes = LANES.lock().unwrap_or_else(|p| p.into_inner());
        if lanes
            .get(&self.key)
            .is_some_and(|lane| Arc::strong_count(lane) == 1)
        {
            lanes.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateId;

    #[tokio::test]
    async fn one_aggregate_waits_others_do_not_and_unused_lanes_are_forgotten() {
        let a = AggregateKey::new("lane_test", AggregateId::new("a").unwrap());
        let b = AggregateKey::new("lane_test", AggregateId::new("b").unwrap());
        let held = enter(1, &a).await;
        let other = tokio::time::timeout(std::time::Duration::from_secs(5), enter(1, &b)).await;
        assert!(other.is_ok(), "another aggregate's lane is free");
        let other_store = tokio::time::timeout(std::time::Duration::from_secs(5), enter(2, &a));
        assert!(other_store.await.is_ok(), "another store's lane is free");
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { drop(enter(1, &a).await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        waiting.await.unwrap();
        drop(other);
        let lanes = LANES.lock().unwrap();
        assert!(lanes.keys().all(|(_, key)| *key != a && *key != b));
    }
}
