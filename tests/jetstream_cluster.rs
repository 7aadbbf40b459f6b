//! The JetStream store on a 3-node loopback cluster with a replicated (R3) stream: optimistic
//! concurrency conflicts are detected by the stream leader (the clustered error 10164 is the
//! store's typed conflict) and no acknowledged event is lost.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use jetsource::testing::nats_server::NatsCluster;
use jetsource::{
    Aggregate, Apply, Event, EventSet, EventStore, ExpectedVersion, JetStreamConnectOptions,
    JetStreamError, JetStreamStore, Repository, StoreError,
};
use serde::{Deserialize, Serialize};
use support::{events, key};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "incremented", version = 1)]
struct Incremented {
    by: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum CounterEvent {
    Incremented(Incremented),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq)]
#[aggregate(name = "counter", events = CounterEvent)]
struct Counter {
    total: u64,
}

impl Apply<Incremented> for Counter {
    fn apply(&mut self, event: Incremented) {
        self.total += event.by;
    }
}

// ANCHOR: r3
/// Connects to one server of the cluster (with the others as fallbacks); requests time out
/// after `timeout`. The stream has three replicas.
async fn connect_on(
    urls: Vec<String>,
    timeout: Duration,
) -> Result<JetStreamStore, JetStreamError> {
    JetStreamStore::connect(
        JetStreamConnectOptions::new(urls).request_timeout(timeout),
        support::config("CLUSTERED").replicas(3),
    )
    .await
}
// ANCHOR_END: r3

/// A store on server `first` of the cluster. A lookup through another node right after the
/// stream was created may time out while the stream's replicas settle (seen on a loaded 2-core
/// machine): connecting is tried again, up to a minute.
async fn store_on(cluster: &NatsCluster, first: usize, timeout: Duration) -> JetStreamStore {
    let mut urls = cluster.urls();
    urls.rotate_left(first);
    let started = std::time::Instant::now();
    loop {
        match connect_on(urls.clone(), timeout).await {
            Ok(store) => return store,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("connecting to the cluster through n{first} failed, again: {e}");
            }
            Err(e) => panic!("connect to the cluster: {e:?}"),
        }
    }
}

/// Waits until `store` can read the new stream through the server it is connected to (the
/// replicas' responders appear on the other nodes a moment after the stream is created).
async fn until_ready(store: &JetStreamStore) {
    let probe = key("probe", "p");
    for _ in 0..200 {
        if store.load(&probe, 1).await.is_ok() && store.read_all(1, 1).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replicated stream never became readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_stream_detects_conflicts_and_loses_no_acknowledged_event() {
    let mut cluster = NatsCluster::start();
    // The first store creates the R3 stream and bucket; the others find them. Their requests
    // time out quickly, so the ones caught by the node failure below fail fast.
    let a = store_on(&cluster, 0, Duration::from_secs(20)).await;
    let b = store_on(&cluster, 1, Duration::from_secs(2)).await;
    let c = store_on(&cluster, 2, Duration::from_secs(2)).await;
    for store in [&a, &b, &c] {
        until_ready(store).await;
    }
    let client = async_nats::connect(cluster.urls()[2].as_str())
        .await
        .unwrap();
    let info = async_nats::jetstream::new(client)
        .get_stream("CLUSTERED")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);

    // A stale writer: `b` knows version 0, `a` appends, `b` appends on version 0. Its cache
    // agrees with its expectation, so the server's guard (error 10164 on a clustered stream)
    // is what refuses it.
    let k = key("acct", "x");
    assert!(b.load(&k, 1).await.unwrap().is_empty());
    a.append(&k, ExpectedVersion::Exact(0), None, events("deposited", 1))
        .await
        .unwrap();
    let refused = b
        .append(&k, ExpectedVersion::Exact(0), None, events("deposited", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::Conflict {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{refused:?}"
    );
    // Also for a multi-event commit (an atomic batch guarded by its first message).
    c.load(&k, 1).await.unwrap();
    a.append(&k, ExpectedVersion::Exact(1), None, events("deposited", 1))
        .await
        .unwrap();
    let refused = c
        .append(&k, ExpectedVersion::Exact(1), None, events("deposited", 3))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Conflict { .. }),
        "{refused:?}"
    );
    assert_eq!(c.load(&k, 1).await.unwrap().len(), 2);

    // Racing writers through all three servers: every acknowledged command is stored once.
    let writers = [a.clone(), b.clone(), c.clone(), a.clone()]
        .into_iter()
        .map(|store| {
            let repo = Repository::<Counter, _>::new(store).with_conflict_retries(10_000);
            tokio::spawn(async move {
                let mut acknowledged = 0u64;
                for _ in 0..40 {
                    let done = repo
                        .execute("shared", |_: &Counter| {
                            Ok::<_, std::convert::Infallible>(vec![Incremented { by: 1 }.into()])
                        })
                        .await
                        .expect("command succeeds within the retries");
                    acknowledged += done.appended as u64;
                }
                acknowledged
            })
        })
        .collect::<Vec<_>>();
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.unwrap();
    }
    assert_eq!(acknowledged, 160);
    let shared = key("counter", "shared");
    for store in [&a, &b, &c] {
        let stored = store.load(&shared, 1).await.unwrap();
        assert!(stored.iter().map(|e| e.sequence).eq(1..=acknowledged));
        assert!(stored.windows(2).all(|w| w[0].position < w[1].position));
    }
    let fresh = store_on(&cluster, 1, Duration::from_secs(20)).await;
    let total = Repository::<Counter, _>::new(fresh)
        .load("shared")
        .await
        .unwrap()
        .state
        .total;
    assert_eq!(total, acknowledged);

    // One node is killed while two writers go on through the others: an append may fail
    // while the stream elects a new leader, but every acknowledged event stays.
    let survivors = [b.clone(), c.clone()];
    let writers = survivors
        .iter()
        .cloned()
        .map(|store| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for _ in 0..30 {
                    let event = events("deposited", 1);
                    let id = event[0].id;
                    if store
                        .append(&shared, ExpectedVersion::Any, None, event)
                        .await
                        .is_ok()
                    {
                        acknowledged.push(id);
                    }
                }
                acknowledged
            })
        })
        .collect::<Vec<_>>();
    cluster.servers_mut()[0].stop();
    let mut acknowledged_ids = HashSet::new();
    for writer in writers {
        acknowledged_ids.extend(writer.await.unwrap());
    }
    assert!(!acknowledged_ids.is_empty());
    let fresh = store_on(&cluster, 1, Duration::from_secs(20)).await;
    let stored = fresh.load(&shared, 1).await.unwrap();
    assert!(stored
        .iter()
        .map(|e| e.sequence)
        .eq(1..=stored.len() as u64));
    let stored_ids = stored.iter().map(|e| e.id).collect::<HashSet<_>>();
    assert!(acknowledged_ids.is_subset(&stored_ids));
    assert!(stored.len() >= 160 + acknowledged_ids.len());
}
