//! Scale-out across operating-system processes: three processes run one subscriber over six
//! partitions against a spawned nats-server. They share the work; one is killed with SIGKILL
//! in the middle of the stream; the other two take its partitions over; every event is handled,
//! each aggregate's in order, and only events the killed process had not completed are seen
//! twice.
//!
//! The worker processes are this test binary again, running the ignored `scale_out_worker`;
//! they report what they handle as `support::workers` describes.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetsource::subscriber::SubscriberConfig;
use jetsource::{EventStore, ExpectedVersion, JetStreamStore, NewEvent, StreamConfig};
use support::subscriber::{account, deposit};
use support::workers::{
    assert_in_order_but_repeats, assert_repeats_only, run_worker, sequences_by_aggregate,
    spawn_worker, Harness, TestProcess,
};
use uuid::Uuid;

const REPORTS: &str = "scale_out.reports";
const STREAM: &str = "SCALE";
const DURABLE: &str = "scaled";
const PARTITIONS: u16 = 6;
const AGGREGATES: usize = 48;
/// Events per aggregate in each of the two phases (before and after the kill).
const PER_PHASE: u64 = 20;

// ANCHOR: scale_out_config
fn config() -> SubscriberConfig {
    SubscriberConfig::new(DURABLE)
        .partitions(PARTITIONS)
        .member_ttl(Duration::from_secs(2))
        .ack_wait(Duration::from_secs(2))
        .concurrency(4)
}
// ANCHOR_END: scale_out_config

fn stream_config() -> StreamConfig {
    StreamConfig::new(STREAM, "scale")
}

/// One worker process: runs the subscriber until it is killed. Ignored in normal runs; the
/// tests below start it in child processes.
#[test]
#[ignore = "a worker process of the scale-out tests"]
fn scale_out_worker() {
    // Some work, so that the kill finds handlers running.
    let work = Duration::from_millis(2);
    run_worker(stream_config(), config(), REPORTS, work);
}

/// Worker processes `ids`.
fn spawn(ids: std::ops::Range<usize>, url: &str) -> Vec<TestProcess> {
    ids.map(|id| spawn_worker("scale_out_worker", id, url, []))
        .collect()
}

/// Appends deposits `from..=to` to every aggregate, aggregates in parallel, two events per
/// commit (atomic batches, which the partition stream must source like single events).
async fn append_phase(store: &JetStreamStore, from: u64, to: u64) -> HashSet<Uuid> {
    let mut tasks = Vec::new();
    for a in 0..AGGREGATES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = account(&format!("a{a}"));
            let mut ids = Vec::new();
            let mut n = from;
            while n <= to {
                let commit: Vec<NewEvent> = (n..=to.min(n + 1)).map(deposit).collect();
                ids.extend(commit.iter().map(|e| e.id));
                n += commit.len() as u64;
                store
                    .append(&key, ExpectedVersion::Any, None, commit)
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.expect("append task"));
    }
    all
}

/// Waits until `count` worker processes announce themselves in the group's bucket.
async fn wait_for_members(client: &async_nats::Client, count: usize) {
    let js = async_nats::jetstream::new(client.clone());
    let bucket = format!("jetsource_members_{STREAM}_{DURABLE}");
    let start = Instant::now();
    loop {
        let members = match js.get_key_value(&bucket).await {
            Ok(kv) => match kv.keys().await {
                Ok(keys) => keys.count().await,
                Err(_) => 0,
            },
            Err(_) => 0,
        };
        if members == count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{count} workers did not join (members: {members})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_partitions_and_survive_a_kill() {
    let Harness {
        server,
        store,
        client,
        reports,
    } = Harness::start(stream_config(), REPORTS).await;

    let mut workers = spawn(0..3, &server.url());
    wait_for_members(&client, 3).await;

    let mut expected = append_phase(&store, 1, PER_PHASE).await;
    let before_kill = expected.len() / 2;
    reports
        .wait_for(
            "every worker to handle events",
            Duration::from_secs(60),
            |r| {
                let workers: HashSet<usize> = r.iter().map(|r| r.worker).collect();
                workers.len() == 3 && r.len() >= before_kill
            },
        )
        .await;
    workers[0].kill();
    let killed_at = reports.len();
    expected.extend(append_phase(&store, PER_PHASE + 1, 2 * PER_PHASE).await);
    reports
        .wait_for("every event to be handled", Duration::from_secs(120), |r| {
            let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
            expected.is_subset(&seen)
        })
        .await;
    // Anything still to come (a late duplicate) would be counted too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reports = reports.finish();

    // Shared: each process handled a part before the kill.
    let mut per_worker: HashMap<usize, usize> = HashMap::new();
    for report in &reports[..killed_at] {
        *per_worker.entry(report.worker).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 3, "work per process: {per_worker:?}");
    // The survivors took the killed process's partitions over.
    let after: HashSet<usize> = reports[killed_at..].iter().map(|r| r.worker).collect();
    assert!(
        !after.contains(&0),
        "the killed worker reported after the kill"
    );
    assert_eq!(after.len(), 2, "survivors handling events: {after:?}");

    // Exactly once, except events the killed process handled but had not completed.
    let duplicates = assert_repeats_only(&reports, &expected, |first, _| first == 0);

    // Each aggregate in order: a repeat is only ever the event just before (handled again after
    // the kill), never an older one or a skip.
    assert_in_order_but_repeats(&reports, AGGREGATES, 2 * PER_PHASE);
    eprintln!(
        "{} events, {} reports, {duplicates} handled again after the kill, before the kill: {per_worker:?}",
        expected.len(),
        reports.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_joining_take_partitions_over_without_a_duplicate_or_a_reorder() {
    let Harness {
        server,
        store,
        client,
        reports,
    } = Harness::start(stream_config(), REPORTS).await;
    let mut workers = spawn(0..1, &server.url());
    wait_for_members(&client, 1).await;

    // Events keep coming while the group grows: the partitions move with work in flight.
    let appending = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            for round in 0..2 * PER_PHASE {
                ids.extend(append_phase(&store, round + 1, round + 1).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        })
    };
    reports
        .wait_for(
            "the first process to handle events alone",
            Duration::from_secs(60),
            |r| r.len() >= 200,
        )
        .await;
    let joined_at = reports.len();
    workers.extend(spawn(1..3, &server.url()));
    wait_for_members(&client, 3).await;
    let expected = appending.await.expect("append task");
    reports
        .wait_for("every event to be handled", Duration::from_secs(120), |r| {
            let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
            expected.is_subset(&seen)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reports = reports.finish();

    assert!(
        reports[..joined_at].iter().all(|r| r.worker == 0),
        "only the first process worked before the others joined"
    );
    let joined: HashSet<usize> = reports[joined_at..].iter().map(|r| r.worker).collect();
    assert!(
        joined.contains(&1) && joined.contains(&2),
        "the joining processes took partitions over: {joined:?}"
    );
    // A graceful handover finishes or returns everything: nothing is handled twice.
    let distinct: HashSet<Uuid> = reports.iter().map(|r| r.event_id).collect();
    assert_eq!(distinct.len(), reports.len(), "an event was handled twice");
    assert_eq!(distinct, expected);
    let by_aggregate = sequences_by_aggregate(&reports);
    for (aggregate, sequences) in by_aggregate {
        let expected: Vec<u64> = (1..=2 * PER_PHASE).collect();
        assert_eq!(sequences, expected, "order of aggregate {aggregate}");
    }
    eprintln!(
        "{} events; {joined_at} handled by the first process before the others joined",
        reports.len()
    );
}
