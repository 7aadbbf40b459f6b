//! Crash recovery with default settings: a subscriber process SIGKILLed with deliveries in
//! flight is replaced by a new process, which handles the dead process's deliveries at once
//! instead of after the ack wait (30 s), keeps each aggregate in order and handles no completed
//! event again. Once as a single process, once as the only member of a partitioned group (the
//! new member takes every partition over once the dead member's entry and pins lapse).
//!
//! The worker processes are this test binary again, running the ignored
//! `crash_recovery_worker`. Handlers report to a core NATS subject on the connection that also
//! carries their acks, so the order of the reports is the order of the handling.
//! `CRASH_SOAK_ROUNDS=<n>` kills and replaces the worker `n` times (default 1).

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

const WORKER_URL: &str = "JETSOURCE_CRASH_URL";
const WORKER_ID: &str = "JETSOURCE_CRASH_ID";
const WORKER_PARTITIONS: &str = "JETSOURCE_CRASH_PARTITIONS";
const REPORTS: &str = "crash_recovery.reports";
const STREAM: &str = "CRASH";
const DURABLE: &str = "recovering";
const AGGREGATES: usize = 40;
/// Events per aggregate for each kill.
const PER_ROUND: u64 = 25;
/// Handled by the current process before it is killed.
const BEFORE_KILL: usize = 100;
/// The default ack wait: without recovery nothing the dead process held comes back sooner.
const ACK_WAIT: Duration = Duration::from_secs(30);

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum Handled {
    Deposited(Deposited),
}

/// Defaults but the durable name (and, scaled out, the partition count).
fn config(partitions: Option<u16>) -> SubscriberConfig {
    let config = SubscriberConfig::new(DURABLE);
    match partitions {
        Some(count) => config.partitions(count),
        None => config,
    }
}

fn stream_config() -> StreamConfig {
    StreamConfig::new(STREAM, "crash")
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
        // Slow enough that the kill finds hundreds of deliveries in flight.
        tokio::time::sleep(Duration::from_millis(30)).await;
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
/// tests below start it in child processes.
#[test]
#[ignore = "a worker process of the crash recovery tests"]
fn crash_recovery_worker() {
    let (Ok(url), Ok(worker)) = (std::env::var(WORKER_URL), std::env::var(WORKER_ID)) else {
        panic!("run by the crash recovery tests");
    };
    let partitions = std::env::var(WORKER_PARTITIONS)
        .ok()
        .map(|p| p.parse().expect("partition count"));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let store = JetStreamStore::connect(JetStreamConnectOptions::new([url]), stream_config())
            .await
            .expect("connect");
        let reporter = Reporter {
            client: store.client().clone(),
            worker,
        };
        let _running = subscriber::start(&store, reporter, config(partitions))
            .await
            .expect("start the subscriber");
        std::future::pending::<()>().await;
    });
}

/// The worker process; killed when dropped, so a failing test leaves none behind.
struct Worker(Child);

impl Worker {
    fn spawn(id: usize, url: &str, partitions: Option<u16>) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                "crash_recovery_worker",
                "--ignored",
                "--nocapture",
            ])
            .env(WORKER_URL, url)
            .env(WORKER_ID, id.to_string())
            .stdout(Stdio::null());
        if let Some(count) = partitions {
            command.env(WORKER_PARTITIONS, count.to_string());
        }
        Worker(command.spawn().expect("spawn a worker process"))
    }

    /// SIGKILL: no shutdown code runs, nothing is acked or nak'ed on the way out.
    fn kill(mut self) {
        self.0.kill().expect("kill the worker");
        self.0.wait().expect("reap the worker");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone)]
struct Report {
    worker: usize,
    aggregate: String,
    sequence: u64,
    event_id: Uuid,
    at: Instant,
}

fn parse(report: &[u8], at: Instant) -> Report {
    let text = std::str::from_utf8(report).expect("utf-8 report");
    let fields: Vec<&str> = text.split(' ').collect();
    Report {
        worker: fields[0].parse().expect("worker"),
        aggregate: fields[1].to_owned(),
        sequence: fields[2].parse().expect("sequence"),
        event_id: fields[3].parse().expect("event id"),
        at,
    }
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
        correlation_id: "crash-recovery".into(),
        causation_id: None,
        headers: BTreeMap::new(),
    }
}

/// Appends deposits `1..=per_aggregate` to every aggregate, aggregates in parallel.
async fn append_all(store: &JetStreamStore, per_aggregate: u64) -> HashSet<Uuid> {
    let mut tasks = Vec::new();
    for a in 0..AGGREGATES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = AggregateKey::new("account", AggregateId::new(format!("a{a}")).unwrap());
            let mut ids = Vec::new();
            for n in 1..=per_aggregate {
                let event = deposit(n);
                ids.push(event.id);
                store
                    .append(&key, ExpectedVersion::Any, None, vec![event])
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deliveries the server counts as unacknowledged on the subscriber's consumers.
async fn ack_pending(client: &async_nats::Client, partitions: Option<u16>) -> usize {
    let js = async_nats::jetstream::new(client.clone());
    let consumers: Vec<(String, String)> = match partitions {
        None => vec![(STREAM.to_owned(), DURABLE.to_owned())],
        Some(count) => (0..count)
            .map(|p| (format!("{STREAM}_P{count}"), format!("{DURABLE}_p{p}")))
            .collect(),
    };
    let mut pending = 0;
    for (stream, consumer) in consumers {
        let stream = js.get_stream(&stream).await.expect("stream");
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&consumer).await.expect("consumer");
        pending += consumer
            .info()
            .await
            .expect("consumer info")
            .num_ack_pending;
    }
    pending
}

/// What one kill and restart measured.
#[derive(Debug)]
struct Round {
    pending_at_kill: usize,
    /// From the start of the new process to its first handled event.
    first_handled: Duration,
    /// From the start of the new process until every event appended so far was handled.
    all_handled: Duration,
}

async fn kill_and_replace(partitions: Option<u16>) {
    let rounds: usize = std::env::var("CRASH_SOAK_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("CRASH_SOAK_ROUNDS"))
        .unwrap_or(1);
    let server = NatsServer::start();
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        stream_config(),
    )
    .await
    .expect("connect");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut subscription = client.subscribe(REPORTS).await.expect("subscribe");
    client.flush().await.expect("flush");
    let reports = Arc::new(Mutex::new(Vec::<Report>::new()));
    let collector = {
        let reports = reports.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let report = parse(&message.payload, Instant::now());
                reports.lock().unwrap().push(report);
            }
        })
    };

    let mut worker = Worker::spawn(0, &server.url(), partitions);
    let expected = append_all(&store, PER_ROUND * rounds as u64).await;
    let mut measured = Vec::new();
    for round in 0..rounds {
        wait_for(
            &reports,
            "the worker to handle events",
            Duration::from_secs(60),
            |r| r.iter().filter(|r| r.worker == round).count() >= BEFORE_KILL,
        )
        .await;
        worker.kill();
        let pending_at_kill = ack_pending(&client, partitions).await;
        let started = Instant::now();
        worker = Worker::spawn(round + 1, &server.url(), partitions);
        let next = round + 1;
        wait_for(
            &reports,
            "the new worker to handle an event",
            Duration::from_secs(60),
            |r| r.iter().any(|r| r.worker == next),
        )
        .await;
        let first_handled = reports
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.worker == next)
            .map(|r| r.at - started)
            .expect("a report of the new worker");
        // What the dead process held: everything appended and not handled yet, once the last
        // round's worker takes over.
        let all_handled = if round + 1 == rounds {
            wait_for(
                &reports,
                "every event to be handled",
                Duration::from_secs(60),
                |r| {
                    let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
                    expected.is_subset(&seen)
                },
            )
            .await;
            started.elapsed()
        } else {
            Duration::ZERO
        };
        measured.push(Round {
            pending_at_kill,
            first_handled,
            all_handled,
        });
    }
    // Anything still to come (a late duplicate) would be counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    collector.abort();
    let reports = reports.lock().unwrap().clone();
    drop(worker);

    for (round, m) in measured.iter().enumerate() {
        // The scenario: the killed process held deliveries the server waits for.
        assert!(m.pending_at_kill > 0, "round {round}: nothing in flight");
        // Without the hand-back the new process handles nothing until the dead one's deliveries
        // time out, an ack wait after they were delivered; half of it is far from any noise.
        assert!(
            m.first_handled < ACK_WAIT / 2,
            "round {round}: first event handled {:?} after the restart",
            m.first_handled
        );
    }
    let last = measured.last().expect("a round");
    assert!(
        last.all_handled < ACK_WAIT / 2,
        "the dead process's deliveries came back only after {:?}",
        last.all_handled
    );

    // Handled again only if its first handler was killed before completing it, and never
    // twice by one process.
    let mut first_handler: HashMap<Uuid, usize> = HashMap::new();
    let mut by_worker: HashSet<(usize, Uuid)> = HashSet::new();
    let mut again = 0;
    for report in &reports {
        assert!(
            by_worker.insert((report.worker, report.event_id)),
            "worker {} handled event {} twice",
            report.worker,
            report.event_id
        );
        match first_handler.entry(report.event_id) {
            Entry::Occupied(first) => {
                again += 1;
                assert!(
                    *first.get() < report.worker,
                    "event {} handled again though its first handler was alive",
                    report.event_id
                );
            }
            Entry::Vacant(first) => {
                first.insert(report.worker);
            }
        }
    }
    assert_eq!(first_handler.len(), expected.len());
    // Each aggregate in order: a repeat is only ever the event just before, never an older one
    // or a skip.
    let mut by_aggregate: HashMap<&str, Vec<u64>> = HashMap::new();
    for report in &reports {
        by_aggregate
            .entry(report.aggregate.as_str())
            .or_default()
            .push(report.sequence);
    }
    assert_eq!(by_aggregate.len(), AGGREGATES);
    for (aggregate, mut sequences) in by_aggregate {
        sequences.dedup();
        let expected: Vec<u64> = (1..=PER_ROUND * rounds as u64).collect();
        assert_eq!(sequences, expected, "order of aggregate {aggregate}");
    }
    let firsts: Vec<Duration> = measured.iter().map(|m| m.first_handled).collect();
    eprintln!(
        "partitions {partitions:?}: {} events, {} rounds; in flight at the kills {:?}; restart to \
         first handled {firsts:?} (max {:?}); restart to all handled {:?}; {again} handled again",
        expected.len(),
        rounds,
        measured
            .iter()
            .map(|m| m.pending_at_kill)
            .collect::<Vec<_>>(),
        firsts.iter().max(),
        last.all_handled,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_replaced_without_waiting_for_the_ack_wait() {
    kill_and_replace(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_move_without_waiting_for_the_ack_wait() {
    kill_and_replace(Some(4)).await;
}
