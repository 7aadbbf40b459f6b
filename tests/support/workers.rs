//! Tests that run their code in operating-system processes they can SIGKILL: a [`TestProcess`]
//! is this test binary again, running only one ignored test. For the subscriber ones, a
//! [`Reporter`] in each worker process tells the test what it handled on a core NATS subject
//! (on the connection that also carries its acks, so the order of the reports is the order of
//! the handling), and [`Reports`] collects and checks what they told.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{JetStreamConnectOptions, JetStreamStore, StreamConfig};
use uuid::Uuid;

use super::subscriber::Handled;

/// The server [`spawn_worker`] gives a worker process.
const WORKER_URL: &str = "JETSOURCE_WORKER_URL";
/// The number a worker process reports as.
const WORKER_ID: &str = "JETSOURCE_WORKER_ID";

/// A child process running one ignored test of this test binary; SIGKILLed when dropped, so a
/// failing test leaves none behind.
pub struct TestProcess {
    child: Child,
    test: String,
}

impl TestProcess {
    /// Starts this test binary running only the ignored test `test`, with `env` set.
    pub fn spawn<K, V>(test: &str, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let child = Command::new(std::env::current_exe().expect("test binary path"))
            .args(["--exact", test, "--ignored", "--nocapture"])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the process running {test}: {e}"));
        TestProcess {
            child,
            test: test.to_owned(),
        }
    }

    /// SIGKILL: no shutdown code runs, nothing is acked or nak'ed on the way out. Panics if the
    /// process had exited by itself (its panic went to stderr): the test would measure nothing.
    pub fn kill(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the process running {} exited by itself: {status}",
                self.test
            );
        }
        self.child.kill().expect("SIGKILL the process");
        self.child.wait().expect("reap the process");
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts worker `id` on the server at `url`: the ignored test `test`, which calls
/// [`run_worker`], with `env` besides.
pub fn spawn_worker(
    test: &str,
    id: usize,
    url: &str,
    env: impl IntoIterator<Item = (&'static str, String)>,
) -> TestProcess {
    let own = [(WORKER_URL, url.to_owned()), (WORKER_ID, id.to_string())];
    TestProcess::spawn(test, own.into_iter().chain(env))
}

/// The body of a worker test: runs a [`Reporter`] publishing to `subject` (handling each event
/// for `work`) with `config` on the stream of `stream`, until the process is killed.
pub fn run_worker(
    stream: StreamConfig,
    config: SubscriberConfig,
    subject: &'static str,
    work: Duration,
) {
    let (Ok(url), Ok(worker)) = (std::env::var(WORKER_URL), std::env::var(WORKER_ID)) else {
        panic!("a worker process, started by a test through spawn_worker");
    };
    let worker = worker.parse().expect("worker id");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let store = JetStreamStore::connect(JetStreamConnectOptions::new([url]), stream)
            .await
            .expect("connect");
        let reporter = Reporter {
            client: store.client().clone(),
            worker,
            subject,
            work,
        };
        let _running = subscriber::start(&store, reporter, config)
            .await
            .expect("start the subscriber");
        std::future::pending::<()>().await;
    });
}

/// Reports `<worker> <aggregate> <sequence> <event id>` for every handled deposit.
pub struct Reporter {
    client: async_nats::Client,
    worker: usize,
    subject: &'static str,
    /// Handlers sleep this long, so that a kill finds them running.
    work: Duration,
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
        tokio::time::sleep(self.work).await;
        let report = format!(
            "{} {} {} {}",
            self.worker, ctx.aggregate_id, ctx.sequence, ctx.event_id
        );
        self.client
            .publish(self.subject, report.into())
            .await
            .map_err(HandlerError::retryable)
    }
}

/// One handled event, as a [`Reporter`] told it.
#[derive(Debug, Clone)]
pub struct Report {
    pub worker: usize,
    pub aggregate: String,
    pub sequence: u64,
    pub event_id: Uuid,
    /// When the test received it.
    pub at: Instant,
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

/// The reports of every worker, in the order they arrived.
pub struct Reports {
    received: Arc<Mutex<Vec<Report>>>,
    collector: tokio::task::JoinHandle<()>,
}

impl Reports {
    /// Starts collecting the reports on `subject`; workers started after this are all heard.
    pub async fn collect(client: &async_nats::Client, subject: &str) -> Self {
        let mut subscription = client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let received = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let report = parse(&message.payload, Instant::now());
                    received.lock().unwrap().push(report);
                }
            })
        };
        Reports {
            received,
            collector,
        }
    }

    /// Waits until `done` holds for the reports so far; panics naming `what` after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&[Report]) -> bool) {
        let start = Instant::now();
        while !done(&self.received.lock().unwrap()) {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what} ({} reports)",
                self.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many reports arrived so far.
    pub fn len(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The reports so far.
    pub fn snapshot(&self) -> Vec<Report> {
        self.received.lock().unwrap().clone()
    }

    /// Stops collecting; every report that arrived.
    pub fn finish(self) -> Vec<Report> {
        self.collector.abort();
        self.snapshot()
    }
}

/// A server, a store of `stream` on it, and the reports of the workers handling its events.
pub struct Harness {
    pub server: NatsServer,
    pub store: JetStreamStore,
    /// A connection of the test's own, for looking at the server's side.
    pub client: async_nats::Client,
    pub reports: Reports,
}

impl Harness {
    /// Starts the server and collects the reports on `subject`.
    pub async fn start(stream: StreamConfig, subject: &str) -> Self {
        let server = NatsServer::start();
        let store = JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), stream)
            .await
            .expect("connect");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let reports = Reports::collect(&client, subject).await;
        Harness {
            server,
            store,
            client,
            reports,
        }
    }
}

/// Asserts that as many distinct events as `expected` holds were handled (the tests wait for
/// each of them first), and that an event handled again was first handled by a worker
/// `may_repeat(first, again)` allows (one killed before completing it). Returns how many
/// reports were repeats.
pub fn assert_repeats_only(
    reports: &[Report],
    expected: &HashSet<Uuid>,
    may_repeat: impl Fn(usize, &Report) -> bool,
) -> usize {
    let mut first_handler: HashMap<Uuid, usize> = HashMap::new();
    let mut repeats = 0;
    for report in reports {
        match first_handler.entry(report.event_id) {
            Entry::Occupied(first) => {
                repeats += 1;
                assert!(
                    may_repeat(*first.get(), report),
                    "event {} handled again by worker {} though its first handler, worker {}, \
                     was alive",
                    report.event_id,
                    report.worker,
                    first.get()
                );
            }
            Entry::Vacant(first) => {
                first.insert(report.worker);
            }
        }
    }
    assert_eq!(first_handler.len(), expected.len());
    repeats
}

/// Each aggregate's handled sequences, in the order they were handled.
pub fn sequences_by_aggregate(reports: &[Report]) -> HashMap<&str, Vec<u64>> {
    let mut by_aggregate: HashMap<&str, Vec<u64>> = HashMap::new();
    for report in reports {
        by_aggregate
            .entry(report.aggregate.as_str())
            .or_default()
            .push(report.sequence);
    }
    by_aggregate
}

/// Asserts that `aggregates` aggregates were each handled `1..=per_aggregate` in order, where
/// a repeat is only ever the event just before (handled again after a kill), never an older one
/// or a skip.
pub fn assert_in_order_but_repeats(reports: &[Report], aggregates: usize, per_aggregate: u64) {
    let by_aggregate = sequences_by_aggregate(reports);
    assert_eq!(by_aggregate.len(), aggregates);
    let expected: Vec<u64> = (1..=per_aggregate).collect();
    for (aggregate, mut sequences) in by_aggregate {
        sequences.dedup();
        assert_eq!(sequences, expected, "order of aggregate {aggregate}");
    }
}
