//! Crash recovery with default settings: a subscriber process SIGKILLed with deliveries in
//! flight is replaced by a new process, which handles the dead process's deliveries at once
//! instead of after the ack wait (30 s), keeps each aggregate in order and handles no completed
//! event again. Once as a single process, once as the only member of a partitioned group (the
//! new member takes every partition over once the dead member's entry and pins lapse).
//!
//! The worker processes are this test binary again, running the ignored
//! `crash_recovery_worker`; they report what they handle as `support::workers` describes.
//! `CRASH_SOAK_ROUNDS=<n>` kills and replaces the worker `n` times (default 1).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jetsource::subscriber::SubscriberConfig;
use jetsource::StreamConfig;
use support::subscriber::seed;
use support::workers::{
    assert_in_order_but_repeats, assert_repeats_only, run_worker, spawn_worker, Harness,
    TestProcess,
};
use uuid::Uuid;

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

/// One worker process: runs the subscriber until it is killed. Ignored in normal runs; the
/// tests below start it in child processes.
#[test]
#[ignore = "a worker process of the crash recovery tests"]
fn crash_recovery_worker() {
    let partitions = std::env::var(WORKER_PARTITIONS)
        .ok()
        .map(|p| p.parse().expect("partition count"));
    // Slow enough that the kill finds hundreds of deliveries in flight.
    let work = Duration::from_millis(30);
    run_worker(stream_config(), config(partitions), REPORTS, work);
}

/// Worker `id`, with the subscriber scaled out over `partitions` if given.
fn spawn(id: usize, url: &str, partitions: Option<u16>) -> TestProcess {
    let env = partitions.map(|count| (WORKER_PARTITIONS, count.to_string()));
    spawn_worker("crash_recovery_worker", id, url, env)
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
    let Harness {
        server,
        store,
        client,
        reports,
    } = Harness::start(stream_config(), REPORTS).await;

    let mut worker = spawn(0, &server.url(), partitions);
    let expected = seed(&store, AGGREGATES, 1..=PER_ROUND * rounds as u64).await;
    let mut measured = Vec::new();
    for round in 0..rounds {
        reports
            .wait_for(
                "the worker to handle events",
                Duration::from_secs(60),
                |r| r.iter().filter(|r| r.worker == round).count() >= BEFORE_KILL,
            )
            .await;
        worker.kill();
        let pending_at_kill = ack_pending(&client, partitions).await;
        let started = Instant::now();
        worker = spawn(round + 1, &server.url(), partitions);
        let next = round + 1;
        reports
            .wait_for(
                "the new worker to handle an event",
                Duration::from_secs(60),
                |r| r.iter().any(|r| r.worker == next),
            )
            .await;
        let first_handled = reports
            .snapshot()
            .iter()
            .find(|r| r.worker == next)
            .map(|r| r.at - started)
            .expect("a report of the new worker");
        // What the dead process held: everything appended and not handled yet, once the last
        // round's worker takes over.
        let all_handled = if round + 1 == rounds {
            reports
                .wait_for("every event to be handled", Duration::from_secs(60), |r| {
                    let seen: HashSet<Uuid> = r.iter().map(|r| r.event_id).collect();
                    expected.is_subset(&seen)
                })
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
    let reports = reports.finish();
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

    // Handled again only if its first handler was killed before completing it (every worker
    // before the current one was), and never twice by one process.
    let mut by_worker: HashSet<(usize, Uuid)> = HashSet::new();
    for report in &reports {
        assert!(
            by_worker.insert((report.worker, report.event_id)),
            "worker {} handled event {} twice",
            report.worker,
            report.event_id
        );
    }
    let again = assert_repeats_only(&reports, &expected, |first, again| first < again.worker);
    assert_in_order_but_repeats(&reports, AGGREGATES, PER_ROUND * rounds as u64);
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
