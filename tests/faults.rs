//! Faults against nats-servers spawned on loopback (issue #6): a server SIGKILLed in the
//! middle of a stream of appends and restarted from the same store, many writers racing on a
//! few aggregates, and a consumer ten times slower than its producer. Every test records what
//! the store acknowledged and checks the stored history against that record, so a lost,
//! duplicated, reordered or gapped event fails it.
//!
//! `JETSOURCE_SOAK=1` runs longer variants (more kills, commands and events); the command and
//! the figures of the last run are in RELIABILITY.md.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, AggregateKey, AppendOutcome, Apply, CommandMetadata, Event, EventSet, EventStore,
    ExpectedVersion, JetStreamConnectOptions, JetStreamError, JetStreamStore, NewEvent, Repository,
    StoreError, StoredEvent,
};
use serde::{Deserialize, Serialize};
use support::{key, HandlingLog};
use uuid::Uuid;

/// Whether the long variants run (`JETSOURCE_SOAK=1`).
fn soak() -> bool {
    std::env::var_os("JETSOURCE_SOAK").is_some_and(|v| !v.is_empty() && v != "0")
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Aggregate, Default, Debug, Clone, PartialEq)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account {
    balance: u64,
    deposits: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, event: Deposited) {
        self.balance += event.amount;
        self.deposits += 1;
    }
}

/// A `deposited` event carrying `amount`, as the repository would encode it.
fn deposit(amount: u64) -> NewEvent {
    let mut event = support::event("deposited", "{}");
    event.payload = serde_json::to_vec(&Deposited { amount })
        .expect("encode")
        .into();
    event
}

fn account(id: usize) -> AggregateKey {
    key("account", &format!("a{id}"))
}

/// The JetStream error inside `error`, if it is one; what a failed append may be, since
/// conflicts are retried by the store for `ExpectedVersion::Any`.
fn jetstream_error(error: &StoreError) -> Option<&JetStreamError> {
    match error {
        StoreError::Backend(inner) => inner.downcast_ref::<JetStreamError>(),
        _ => None,
    }
}

/// A store on `url` whose requests give up after `timeout`, reconnecting at least every 250 ms
/// (so the time to recover measures the server, not the client's back-off).
async fn store_on(url: String, stream: &str, timeout: Duration) -> JetStreamStore {
    JetStreamStore::connect(
        JetStreamConnectOptions::new([url])
            .request_timeout(timeout)
            .max_reconnect_delay(Duration::from_millis(250)),
        support::config(stream),
    )
    .await
    .expect("connect to the harness server")
}

/// Every event of `aggregates` aggregates through a fresh store (cold cache), asserting each
/// aggregate's versions are exactly 1..=n (no gap, no duplicate) at increasing positions.
async fn gapless_histories(
    store: &JetStreamStore,
    aggregates: usize,
) -> BTreeMap<usize, Vec<StoredEvent>> {
    let mut histories = BTreeMap::new();
    for a in 0..aggregates {
        let events = store
            .load(&account(a), 1)
            .await
            .expect("load after the run");
        let versions: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(
            versions, expected,
            "aggregate a{a}: versions must be 1..=n without gap or duplicate"
        );
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "aggregate a{a}: positions must increase with versions"
        );
        histories.insert(a, events);
    }
    histories
}

/// How often each command id occurs in `histories`.
fn command_counts(histories: &BTreeMap<usize, Vec<StoredEvent>>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in histories.values().flatten() {
        let command = event
            .command_id
            .clone()
            .expect("every event of these tests carries a command id");
        *counts.entry(command).or_default() += 1;
    }
    counts
}

/// One append of the kill test: its command, aggregate and event, and when it was started.
#[derive(Clone)]
struct Attempt {
    command: String,
    aggregate: usize,
    event: NewEvent,
    started: Instant,
}

#[derive(Default)]
struct Journal {
    acknowledged: Vec<(Attempt, AppendOutcome, Instant)>,
    failed: Vec<(Attempt, String)>,
}

/// Appends one event at a time with a fresh command id, recording every outcome, until `stop`.
async fn append_and_record(
    store: JetStreamStore,
    writer: usize,
    aggregates: usize,
    stop: Arc<AtomicBool>,
    journal: Arc<Mutex<Journal>>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let attempt = Attempt {
            command: format!("w{writer}-c{n}"),
            // Neighbouring writers share aggregates, so appends also race each other.
            aggregate: (writer + n) % aggregates,
            event: deposit(1),
            started: Instant::now(),
        };
        n += 1;
        let result = store
            .append(
                &account(attempt.aggregate),
                ExpectedVersion::Any,
                Some(&attempt.command),
                vec![attempt.event.clone()],
            )
            .await;
        match result {
            Ok(outcome) => {
                journal
                    .lock()
                    .unwrap()
                    .acknowledged
                    .push((attempt, outcome, Instant::now()));
            }
            Err(error) => {
                let Some(typed) = jetstream_error(&error) else {
                    panic!("an append during a server kill failed untyped: {error:?}");
                };
                let kind = format!("{typed:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
                journal.lock().unwrap().failed.push((attempt, kind));
                // No busy loop against a dead server.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until `journal` holds `count` acknowledged appends.
async fn until_acknowledged(
    journal: &Mutex<Journal>,
    count: usize,
    what: &str,
    client: &async_nats::Client,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (acknowledged, failed, recent) = {
            let journal = journal.lock().unwrap();
            let recent: Vec<String> = (journal.failed.iter().rev().take(5))
                .map(|(attempt, kind)| format!("{} {kind}", attempt.command))
                .collect();
            (journal.acknowledged.len(), journal.failed.len(), recent)
        };
        if acknowledged >= count {
            return;
        }
        // The guard is released before a failing assertion, so the writers see no poisoned lock.
        assert!(
            Instant::now() < deadline,
            "{what}: only {acknowledged} of {count} appends acknowledged after 120 s \
             ({failed} failed; latest failures: {recent:?}; client {:?}, {:?})",
            client.connection_state(),
            client.statistics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_server_sigkills_and_failed_commands_apply_once_on_retry() {
    let (kills, writers, aggregates, per_phase) = if soak() {
        (10, 32, 16, 3_000)
    } else {
        (2, 16, 8, 600)
    };
    let mut server = NatsServer::start();
    // Requests give up after 1 s, so appends caught by a kill fail fast.
    let store = store_on(server.url(), "KILLED", Duration::from_secs(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let journal = Arc::new(Mutex::new(Journal::default()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            tokio::spawn(append_and_record(
                store.clone(),
                w,
                aggregates,
                stop.clone(),
                journal.clone(),
            ))
        })
        .collect();

    let mut recoveries = Vec::new();
    for kill in 1..=kills {
        let before = journal.lock().unwrap().acknowledged.len();
        until_acknowledged(
            &journal,
            before + per_phase,
            "before a kill",
            store.client(),
        )
        .await;
        let killed_at = Instant::now();
        // SIGKILL: no flush, no goodbye; appends in flight end in timeouts or lost acks.
        tokio::task::block_in_place(|| server.stop());
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Same port, same store directory: JetStream recovers the stream from its files.
        tokio::task::block_in_place(|| server.restart());
        let acknowledged = journal.lock().unwrap().acknowledged.len();
        until_acknowledged(
            &journal,
            acknowledged + 1,
            "after a restart",
            store.client(),
        )
        .await;
        // Time from the kill to the first acknowledged append that was started after it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let recovered = loop {
            let first = journal
                .lock()
                .unwrap()
                .acknowledged
                .iter()
                .filter(|(attempt, _, _)| attempt.started > killed_at)
                .map(|(_, _, done)| *done)
                .min();
            if let Some(done) = first {
                break done.duration_since(killed_at);
            }
            assert!(
                Instant::now() < deadline,
                "kill {kill}: appends never resumed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        recoveries.push(recovered);
    }
    let before = journal.lock().unwrap().acknowledged.len();
    until_acknowledged(
        &journal,
        before + per_phase / 2,
        "after the last restart",
        store.client(),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer task");
    }

    let journal = Arc::try_unwrap(journal)
        .ok()
        .expect("writers are done")
        .into_inner()
        .unwrap();
    assert!(
        !journal.failed.is_empty(),
        "the kills must catch appends in flight, or this test proves nothing about them"
    );
    // After the restarts, through a fresh store with a cold cache.
    let fresh = store_on(server.url(), "KILLED", Duration::from_secs(10)).await;
    let histories = gapless_histories(&fresh, aggregates).await;
    let counts = command_counts(&histories);
    let by_event: HashMap<Uuid, (usize, &StoredEvent)> = histories
        .iter()
        .flat_map(|(a, events)| events.iter().map(move |e| (e.id, (*a, e))))
        .collect();
    assert_eq!(
        by_event.len(),
        histories.values().map(Vec::len).sum::<usize>(),
        "an event id is stored twice"
    );
    for (attempt, outcome, _) in &journal.acknowledged {
        assert_eq!(
            counts.get(&attempt.command),
            Some(&1),
            "acknowledged command {} must be stored exactly once",
            attempt.command
        );
        let Some((aggregate, stored)) = by_event.get(&attempt.event.id) else {
            panic!(
                "acknowledged command {} (event {}) was lost",
                attempt.command, attempt.event.id
            );
        };
        assert_eq!(*aggregate, attempt.aggregate, "{}", attempt.command);
        assert_eq!(
            (stored.sequence, stored.position),
            (outcome.last_sequence, outcome.last_position),
            "command {} is stored at another version or position than acknowledged",
            attempt.command
        );
    }
    let landed_before_retry: HashSet<&str> = journal
        .failed
        .iter()
        .map(|(attempt, _)| attempt.command.as_str())
        .filter(|command| counts.contains_key(*command))
        .collect();
    for command in &landed_before_retry {
        assert_eq!(counts[*command], 1, "failed command {command} stored twice");
    }

    // Retry every failed command with its command id, through the store that saw the kills:
    // those that had reached the server report a duplicate, the others are applied now.
    let mut applied_by_retry = 0;
    let mut duplicates = 0;
    let mut first_outcomes = HashMap::new();
    for (attempt, _) in &journal.failed {
        let outcome = store
            .append(
                &account(attempt.aggregate),
                ExpectedVersion::Any,
                Some(&attempt.command),
                vec![attempt.event.clone()],
            )
            .await
            .unwrap_or_else(|e| panic!("retry of {} failed: {e:?}", attempt.command));
        let landed = landed_before_retry.contains(attempt.command.as_str());
        assert_eq!(
            outcome.duplicate, landed,
            "retry of {}: a duplicate exactly when the first attempt had been stored",
            attempt.command
        );
        if outcome.duplicate {
            duplicates += 1;
        } else {
            applied_by_retry += 1;
        }
        first_outcomes.insert(attempt.command.clone(), outcome);
    }
    // A second retry, from a store with a cold cache, is a duplicate with the same outcome.
    let cold = store_on(server.url(), "KILLED", Duration::from_secs(10)).await;
    for (attempt, _) in &journal.failed {
        let again = cold
            .append(
                &account(attempt.aggregate),
                ExpectedVersion::Any,
                Some(&attempt.command),
                vec![deposit(1)],
            )
            .await
            .unwrap_or_else(|e| panic!("second retry of {} failed: {e:?}", attempt.command));
        let first = first_outcomes[&attempt.command];
        assert!(
            again.duplicate,
            "second retry of {} applied",
            attempt.command
        );
        assert_eq!(
            (again.last_sequence, again.last_position),
            (first.last_sequence, first.last_position),
            "second retry of {} reports another outcome",
            attempt.command
        );
    }
    let histories = gapless_histories(&cold, aggregates).await;
    let counts = command_counts(&histories);
    let stored: usize = histories.values().map(Vec::len).sum();
    for (attempt, _) in &journal.failed {
        assert_eq!(
            counts.get(&attempt.command),
            Some(&1),
            "retried command {} must be stored exactly once",
            attempt.command
        );
    }
    let failed_commands: HashSet<&str> = journal
        .failed
        .iter()
        .map(|(a, _)| a.command.as_str())
        .collect();
    assert_eq!(
        stored,
        journal.acknowledged.len() + failed_commands.len(),
        "stored events = acknowledged appends + failed commands (each once)"
    );

    let mut kinds = BTreeMap::<&str, usize>::new();
    for (_, kind) in &journal.failed {
        *kinds.entry(kind.as_str()).or_default() += 1;
    }
    eprintln!(
        "server SIGKILL: {kills} kills, {writers} writers on {aggregates} aggregates; \
         {} appends acknowledged, {} failed ({kinds:?}); of the failed, {duplicates} had been \
         stored before the kill (retry: duplicate), {applied_by_retry} applied by the retry; \
         {stored} events stored, lost 0; kill to first acknowledged append: {:?}",
        journal.acknowledged.len(),
        journal.failed.len(),
        recoveries,
    );
}

/// Commands of the many-writers test, recorded as the repository acknowledged them.
struct Committed {
    command: String,
    aggregate: usize,
    version: u64,
    attempts: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_on_few_aggregates_keep_gapless_histories_with_each_command_once() {
    let (writers, aggregates, commands) = if soak() { (32, 4, 500) } else { (32, 4, 25) };
    let server = NatsServer::start();
    // Writers of one store take turns per aggregate and never conflict with each other; the
    // writers here share 8 stores, each its own connection, as 8 processes would.
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(support::store(&server, "CROWD").await);
    }
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = &stores[w % stores.len()];
            let repo =
                Repository::<Account, _>::new(store.clone()).with_conflict_retries(1_000_000);
            tokio::spawn(async move {
                let mut done = Vec::new();
                for n in 0..commands {
                    let aggregate = (w + n) % aggregates;
                    let command = format!("w{w}-c{n}");
                    let meta = CommandMetadata::default().command_id(command.clone());
                    let committed = repo
                        .execute_with(&format!("a{aggregate}"), meta, |_: &Account| {
                            Ok::<_, std::convert::Infallible>(vec![Deposited { amount: 1 }.into()])
                        })
                        .await
                        .unwrap_or_else(|e| panic!("command {command} failed: {e:?}"));
                    assert!(
                        !committed.duplicate,
                        "command {command} ran once, yet was reported a duplicate"
                    );
                    assert_eq!(committed.appended, 1, "command {command}");
                    done.push(Committed {
                        command,
                        aggregate,
                        version: committed.version,
                        attempts: committed.attempts,
                    });
                }
                done
            })
        })
        .collect();
    let started = Instant::now();
    let mut committed = Vec::new();
    for task in tasks {
        committed.extend(task.await.expect("writer task"));
    }
    let elapsed = started.elapsed();

    let fresh = support::store(&server, "CROWD").await;
    let histories = gapless_histories(&fresh, aggregates).await;
    let counts = command_counts(&histories);
    let stored: usize = histories.values().map(Vec::len).sum();
    assert_eq!(
        stored,
        committed.len(),
        "the number of stored events equals the number of acknowledged commands"
    );
    for c in &committed {
        assert_eq!(
            counts.get(&c.command),
            Some(&1),
            "command {} stored exactly once",
            c.command
        );
        let at = &histories[&c.aggregate][c.version as usize - 1];
        assert_eq!(
            at.command_id.as_deref(),
            Some(c.command.as_str()),
            "a{} version {}: another command than the one acknowledged there",
            c.aggregate,
            c.version
        );
    }
    let repo = Repository::<Account, _>::new(fresh);
    for (a, events) in &histories {
        let loaded = repo.load(&format!("a{a}")).await.expect("replay");
        assert_eq!(loaded.state.deposits, events.len() as u64);
    }
    let conflicts: u64 = committed.iter().map(|c| u64::from(c.attempts) - 1).sum();
    let most = committed.iter().map(|c| c.attempts).max().unwrap_or(0);
    assert!(
        conflicts > 0,
        "{writers} writers on {aggregates} aggregates must conflict, or OCC was not exercised"
    );
    eprintln!(
        "many writers: {writers} writers x {commands} commands on {aggregates} aggregates in \
         {elapsed:.1?}: {} commands stored once each, {conflicts} conflicts retried (at most {most} \
         attempts for one command), per-aggregate versions {:?}, losses 0",
        committed.len(),
        histories.values().map(Vec::len).collect::<Vec<_>>(),
    );
}

/// Resident set size of this process in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A handler much slower than the producer: records per aggregate the order of what it saw and
/// per event id how often it completed.
#[derive(Default)]
struct SlowRecorder {
    log: HandlingLog,
    completed: AtomicUsize,
    work: Duration,
}

impl Subscriber for SlowRecorder {
    type Event = AccountEvent;

    async fn handle(&self, event: AccountEvent, ctx: &EventContext) -> Result<(), HandlerError> {
        let AccountEvent::Deposited(deposited) = event;
        tokio::time::sleep(self.work).await;
        // The producer puts each event's aggregate version into its amount.
        if deposited.amount != ctx.sequence {
            return Err(HandlerError::permanent(
                "payload does not match its version",
            ));
        }
        self.log.record(ctx);
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// What the sampler saw while the slow consumer ran.
#[derive(Default)]
struct Samples {
    count: AtomicU64,
    max_ack_pending: AtomicU64,
    max_num_pending: AtomicU64,
    max_rss_kib: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_at_most_max_ack_pending_and_handles_everything_once_in_order() {
    const MAX_ACK_PENDING: usize = 200;
    const DURABLE: &str = "slow";
    let (aggregates, per_aggregate) = if soak() { (200, 500) } else { (100, 200) };
    let total = aggregates * per_aggregate;
    let server = NatsServer::start();
    let store = support::store(&server, "SLOW").await;
    let recorder = Arc::new(SlowRecorder {
        // 4 handlers sleeping 2 ms each: about a tenth of the producer's rate on this machine.
        work: Duration::from_millis(2),
        ..SlowRecorder::default()
    });
    let running = subscriber::start(
        &store,
        recorder.clone(),
        SubscriberConfig::new(DURABLE)
            .max_ack_pending(MAX_ACK_PENDING)
            .concurrency(4),
    )
    .await
    .expect("start the subscriber");

    // Sample the durable consumer's state on the server and this process's memory.
    let rss_at_start = rss_kib();
    let samples = Arc::new(Samples::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let stream = async_nats::jetstream::new(client)
            .get_stream("SLOW")
            .await
            .expect("the event stream");
        let (samples, sampling) = (samples.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let info = stream
                    .consumer_info(DURABLE)
                    .await
                    .expect("consumer info of the durable");
                samples
                    .max_ack_pending
                    .fetch_max(info.num_ack_pending as u64, Ordering::Relaxed);
                samples
                    .max_num_pending
                    .fetch_max(info.num_pending, Ordering::Relaxed);
                samples.max_rss_kib.fetch_max(rss_kib(), Ordering::Relaxed);
                samples.count.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    // The producer: every aggregate appends its events as fast as the store takes them.
    let produced_from = Instant::now();
    let producers: Vec<_> = (0..aggregates)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                for version in 0..per_aggregate as u64 {
                    store
                        .append(
                            &account(a),
                            ExpectedVersion::Exact(version),
                            Some(&format!("p{a}-{version}")),
                            vec![deposit(version + 1)],
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("producer task");
    }
    let produced_in = produced_from.elapsed();
    let handled_when_produced = recorder.completed.load(Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(if soak() { 1_800 } else { 300 });
    while recorder.completed.load(Ordering::SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "the slow consumer handled only {} of {total}",
            recorder.completed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumed_in = produced_from.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let stats = running.shutdown().await.expect("shutdown");

    let max_ack_pending = samples.max_ack_pending.load(Ordering::Relaxed);
    let max_num_pending = samples.max_num_pending.load(Ordering::Relaxed);
    let rss_growth_mib = (samples.max_rss_kib.load(Ordering::Relaxed) - rss_at_start) / 1024;
    let producer_rate = total as f64 / produced_in.as_secs_f64();
    let consumer_rate = total as f64 / consumed_in.as_secs_f64();
    eprintln!(
        "slow consumer: {total} events over {aggregates} aggregates produced in {produced_in:.1?} \
         ({producer_rate:.0}/s), handled in {consumed_in:.1?} ({consumer_rate:.0}/s, \
         {:.1}x slower; {handled_when_produced} handled when the producer finished); {} samples: \
         ack pending at most {max_ack_pending} (limit {MAX_ACK_PENDING}), undelivered backlog at \
         most {max_num_pending}; RSS {} MiB at start, at most +{rss_growth_mib} MiB; {stats:?}",
        producer_rate / consumer_rate,
        samples.count.load(Ordering::Relaxed),
        rss_at_start / 1024,
    );
    assert!(
        samples.count.load(Ordering::Relaxed) >= 20,
        "too few samples of the consumer state to bound it"
    );
    assert!(
        handled_when_produced < total / 2,
        "the consumer kept up ({handled_when_produced} of {total} handled when the producer \
         finished): no backpressure was exercised"
    );
    assert!(
        max_num_pending >= (total / 4) as u64,
        "the backlog must wait on the server, not in the process: at most {max_num_pending} \
         undelivered"
    );
    assert!(
        max_ack_pending <= MAX_ACK_PENDING as u64,
        "the server let the consumer hold {max_ack_pending} unacknowledged messages, more than \
         max_ack_pending {MAX_ACK_PENDING}"
    );
    assert!(
        rss_growth_mib < 200,
        "the process grew by {rss_growth_mib} MiB while consuming a backlog"
    );

    // Everything handled exactly once, each aggregate in order.
    let completions = recorder.log.completions.lock().unwrap();
    assert_eq!(completions.len(), total, "every event handled");
    let twice = completions.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} events were handled more than once");
    let order = recorder.log.order.lock().unwrap();
    assert_eq!(order.len(), aggregates);
    let expected: Vec<u64> = (1..=per_aggregate as u64).collect();
    for (aggregate, sequences) in order.iter() {
        assert_eq!(
            sequences, &expected,
            "aggregate {aggregate} handled out of order"
        );
    }
    assert_eq!(stats.handled, total as u64);
    assert_eq!(stats.dead_lettered, 0);
}
