//! Scale-out across operating-system processes: three processes run one subscriber over six
//! partitions against a spawned nats-server. They share the work; one is killed with SIGKILL
//! in the middle of the stream; the other two take its partitions over; every event is handled,
//! each aggregate's in order, and only events the killed process had not completed are seen
//! twice.
//!
//! The worker processes are this test binary again, running the ignored `scale_out_worker`.
//! Handlers report to a core NATS subject on the connection that also carries their acks, so
//! the order of the reports on the server is the order of the handling.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    AggregateId, AggregateKey, Event, EventSet, EventStore, ExpectedVersion,
    JetStreamConnectOptions, JetStreamStore, NewEvent, StreamConfig,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const WORKER_URL: &str = "JETSOURCE_SCALE_OUT_URL";
const WORKER_ID: &str = "JETSOURCE_SCALE_OUT_ID";
const REPORTS: &str = "scale_out.reports";
const STREAM: &str = "SCALE";
const DURABLE: &str = "scaled";
const PARTITIONS: u16 = 6;
const AGGREGATES: usize = 48;
/// Events per aggregate in each of the two phases (before and after the kill).
const PER_PHASE: u64 = 20;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum Handled {
    Deposited(Deposited),
}

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

/// Reports `<worker> <aggregate> <sequence> <event id>` for every handled event.
struct Reporter {
    client: async_nats::Client,
    worker: String,
}

impl Subscriber for Reporter {
    type Event = Handled;

    async fn handle(&self, event: Handled, ctx: &EventContext) -> Result<(), HandlerError> {
        let Handled::Deposited(deposited) = event;
        if deposited.amount != ctx.sequence {
            return Err(HandlerError::permanent(
                "payload does not match its version",
            ));
        }
        // Some work, so that the kill finds handlers running.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let report = format!(
            "{} {} {} {}",
            self.worker, ctx.aggregate_id, ctx.sequence, ctx.event_id
        );
        self.client
            .publish(REPORTS, report.into())
            .await
            .map_err(HandlerError::retryable)
    }
}

/// One worker process: runs the subscriber until it is killed. Ignored in normal runs; the
/// test below starts it in child processes.
#[test]
#[ignore = "a worker process of three_processes_share_the_partitions_and_survive_a_kill"]
fn scale_out_worker() {
    let (Ok(url), Ok(worker)) = (std::env::var(WORKER_URL), std::env::var(WORKER_ID)) else {
        panic!("run by three_processes_share_the_partitions_and_survive_a_kill");
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let store = JetStreamStore::connect(JetStreamConnectOptions::new([url]), stream_config())
            .await
            .expect("connect");
        let reporter = Reporter {
            client: store.client().clone(),
            worker,
        };
        let _running = subscriber::start(&store, reporter, config())
            .await
            .expect("start the subscriber");
        std::future::pending::<()>().await;
    });
}

/// The worker processes; killed when dropped, so a failing test leaves none behind.
struct Workers(Vec<Child>);

impl Workers {
    fn spawn(count: usize, url: &str) -> Self {
        let mut workers = Workers(Vec::new());
        for worker in 0..count {
            workers.add(worker, url);
        }
        workers
    }

    /// Starts worker `id`, reporting as `id`.
    fn add(&mut self, id: usize, url: &str) {
        let exe = std::env::current_exe().expect("test binary path");
        let child = Command::new(exe)
            .args(["--exact", "scale_out_worker", "--ignored", "--nocapture"])
            .env(WORKER_URL, url)
            .env(WORKER_ID, id.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a worker process");
        self.0.push(child);
    }

    fn kill(&mut self, worker: usize) {
        // SIGKILL: no shutdown code runs, nothing is acked on the way out.
        self.0[worker].kill().expect("kill the worker");
        self.0[worker].wait().expect("reap the worker");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone)]
struct Report {
    worker: String,
    aggregate: String,
    sequence: u64,
    event_id: Uuid,
}

fn parse(report: &[u8]) -> Report {
    let text = std::str::from_utf8(report).expect("utf-8 report");
    let fields: Vec<&str> = text.split(' ').collect();
    Report {
        worker: fields[0].to_owned(),
        aggregate: fields[1].to_owned(),
        sequence: fields[2].parse().expect("sequence"),
        event_id: fields[3].parse().expect("event id"),
    }
}

/// Appends deposits `from..=to` to every aggregate, aggregates in parallel, two events per
/// commit (atomic batches, which the partition stream must source like single events).
async fn append_phase(store: &JetStreamStore, from: u64, to: u64) -> HashSet<Uuid> {
    let mut tasks = Vec::new();
    for a in 0..AGGREGATES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = AggregateKey::new("account", AggregateId::new(format!("a{a}")).unwrap());
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

fn deposit(amount: u64) -> NewEvent {
    let encoded = Deposited { amount }.encode().expect("encode");
    NewEvent {
        id: Uuid::now_v7(),
        name: encoded.name,
        version: encoded.version,
        codec: encoded.codec,
        payload: encoded.payload.into(),
        timestamp: SystemTime::now(),
        correlation_id: "scale-out".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

/// Waits until `done` holds for the reports so far; panics naming `what` after `limit`.
async fn wait_for(
    reports: &Mutex<Vec<Report>>,
    what: &str,
    limit: Duration,
    done: impl Fn(&[Report]) -> bool,
) {
    let start = Instant::now();
    while !done(&reports.lock().unwrap()) {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what} ({} reports)",
            reports.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// Starts collecting the workers' reports.
async fn collect_reports(
    client: &async_nats::Client,
) -> (Arc<Mutex<Vec<Report>>>, tokio::task::JoinHandle<()>) {
    let mut subscription = client.subscribe(REPORTS).await.expect("subscribe");
    client.flush().await.expect("flush");
    let reports = Arc::new(Mutex::new(Vec::<Report>::new()));
    let collector = {
        let reports = reports.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                reports.lock().unwrap().push(parse(&message.payload));
            }
        })
    };
    (reports, collector)
}

/// A server, a store on it, and the reports of the workers handling its events.
struct Harness {
    server: NatsServer,
    store: JetStreamStore,
    client: async_nats::Client,
    reports: Arc<Mutex<Vec<Report>>>,
    collector: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let server = NatsServer::start();
        let store = JetStreamStore::connect(
            JetStreamConnectOptions::new([server.url()]),
            stream_config(),
        )
        .await
        .expect("connect");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let (reports, collector) = collect_reports(&client).await;
        Harness {
            server,
            store,
            client,
            reports,
            collector,
        }
    }
}

/// Each aggregate's handled sequences, in the order they were handled.
fn sequences_by_aggregate(reports: &[Report]) -> HashMap<&str, Vec<u64>> {
    let mut by_aggregate: HashMap<&str, Vec<u64>> = HashMap::new();
    for report in reports {
        by_aggregate
            .entry(report.aggregate.as_str())
            .or_default()
            .push(report.sequence);
    }
    by_aggregate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_partitions_and_survive_a_kill() {
    let Harness {
        server,
        store,
        client,
        reports,
        collector,
    } = Harness::start().await;

    let mut workers = Workers::spawn(3, &server.url());
    wait_for_members(&client, 3).await;

    let mut expected = append_phase(&store, 1, PER_PHASE).await;
    let before_kill = expected.len() / 2;
    wait_for(
        &reports,
        "every worker to handle events",
        Duration::from_secs(60),
        |r| {
            let workers: HashSet<&str> = r.iter().map(|r| r.worker.as_str()).collect();
            workers.len() == 3 && r.len() >= before_kill
        },
    )
    .await;
    workers.kill(0);
    let killed_at = reports.lock().unwrap().len();
    expected.extend(append_phase(&store, PER_PHASE + 1, 2 * PER_PHASE).await);
    wait_for(
        &reports,
        "every event to be handled",
        Duration::from_secs(120),
        |r| {
            let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
            expected.is_subset(&seen)
        },
    )
    .await;
    // Anything still to come (a late duplicate) would be counted too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    collector.abort();
    let reports = reports.lock().unwrap().clone();

    // Shared: each process handled a part before the kill.
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for report in &reports[..killed_at] {
        *per_worker.entry(report.worker.as_str()).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 3, "work per process: {per_worker:?}");
    // The survivors took the killed process's partitions over.
    let after: HashSet<&str> = reports[killed_at..]
        .iter()
        .map(|r| r.worker.as_str())
        .collect();
    assert!(
        !after.contains("0"),
        "the killed worker reported after the kill"
    );
    assert_eq!(after.len(), 2, "survivors handling events: {after:?}");

    // Exactly once, except events the killed process handled but had not completed.
    let mut first_handler: HashMap<Uuid, &str> = HashMap::new();
    let mut duplicates = 0;
    for report in &reports {
        match first_handler.entry(report.event_id) {
            Entry::Occupied(first) => {
                duplicates += 1;
                assert_eq!(
                    *first.get(),
                    "0",
                    "event {} handled twice though its first handler was alive",
                    report.event_id
                );
            }
            Entry::Vacant(first) => {
                first.insert(&report.worker);
            }
        }
    }
    assert_eq!(first_handler.len(), expected.len());

    // Each aggregate in order: a repeat is only ever the event just before (handled again after
    // the kill), never an older one or a skip.
    let by_aggregate = sequences_by_aggregate(&reports);
    assert_eq!(by_aggregate.len(), AGGREGATES);
    for (aggregate, mut sequences) in by_aggregate {
        sequences.dedup();
        let expected: Vec<u64> = (1..=2 * PER_PHASE).collect();
        assert_eq!(sequences, expected, "order of aggregate {aggregate}");
    }
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
        collector,
    } = Harness::start().await;
    let mut workers = Workers::spawn(1, &server.url());
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
    wait_for(
        &reports,
        "the first process to handle events alone",
        Duration::from_secs(60),
        |r| r.len() >= 200,
    )
    .await;
    let joined_at = reports.lock().unwrap().len();
    workers.add(1, &server.url());
    workers.add(2, &server.url());
    wait_for_members(&client, 3).await;
    let expected = appending.await.expect("append task");
    wait_for(
        &reports,
        "every event to be handled",
        Duration::from_secs(120),
        |r| {
            let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
            expected.is_subset(&seen)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    collector.abort();
    let reports = reports.lock().unwrap().clone();

    assert!(
        reports[..joined_at].iter().all(|r| r.worker == "0"),
        "only the first process worked before the others joined"
    );
    let joined: HashSet<&str> = reports[joined_at..]
        .iter()
        .map(|r| r.worker.as_str())
        .collect();
    assert!(
        joined.contains("1") && joined.contains("2"),
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
