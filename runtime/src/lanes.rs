//! One lane per aggregate and store: commands on the same aggregate through one store (and its
//! clones, whichever repository sends them) run one after the other, so they never conflict
//! with each other, only with other processes; commands on different aggregates run in
//! parallel. A second store opened in the same process counts as another process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::store::AggregateKey;

/// Lanes by the store's [`EventStore::lane_scope`](crate::EventStore::lane_scope), then by
/// aggregate.
type Lanes = HashMap<usize, HashMap<AggregateKey, Arc<AsyncMutex<()>>>>;

static LANES: LazyLock<Mutex<Lanes>> = LazyLock::new(Mutex::default);

/// Holds a lane until dropped.
pub(crate) struct Lane {
    guard: Option<OwnedMutexGuard<()>>,
}

/// Waits for the lane of `key` in the store of `scope`, in arrival order (tokio's mutex is
/// fair).
pub(crate) async fn enter(scope: usize, key: &AggregateKey) -> Lane {
    let lane = {
        let mut lanes = LANES.lock().unwrap_or_else(|p| p.into_inner());
        let scope = lanes.entry(scope).or_default();
        match scope.get(key) {
            Some(lane) => lane.clone(),
            None => scope.entry(key.clone()).or_default().clone(),
        }
    };
    Lane {
        guard: Some(lane.lock_owned().await),
    }
}

/// Lanes kept before unused ones are forgotten: keeping a busy aggregate's lane spares its
/// next command an allocation and a second map update.
const KEPT_LANES: usize = 4096;

impl Drop for Lane {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut lanes = LANES.lock().unwrap_or_else(|p| p.into_inner());
        if lanes.values().map(HashMap::len).sum::<usize>() > KEPT_LANES {
            // Forget lanes nobody holds or waits for: the map holds their only reference.
            for scope in lanes.values_mut() {
                scope.retain(|_, lane| Arc::strong_count(lane) > 1);
            }
            lanes.retain(|_, scope| !scope.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateId;

    #[tokio::test]
    async fn one_aggregate_waits_and_others_do_not() {
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
    }

    #[tokio::test]
    async fn unused_lanes_are_forgotten_past_the_limit() {
        for n in 0..=KEPT_LANES + 1 {
            let key = AggregateKey::new("lane_limit", AggregateId::new(format!("k{n}")).unwrap());
            drop(enter(7, &key).await);
        }
        let lanes = LANES.lock().unwrap();
        assert!(lanes.get(&7).map_or(0, HashMap::len) <= KEPT_LANES);
    }
}
