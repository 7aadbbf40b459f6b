//! The fulfilment process manager under faults: orders are placed (and some paid) while the
//! process running the process manager, a child process, is SIGKILLed at random moments, and
//! the nats-server is SIGKILLed and restarted once (on a 3-node cluster with R3 streams: the
//! node leading the instance stream is SIGKILLed instead). Afterwards, from the stored events:
//! - every order ended exactly once (`Order::endings`, and its events), as its kind demands:
//!   paid ones shipped, unpaid ones cancelled by their deadline, never before it was due, out
//!   of stock ones cancelled by the rejected reservation, racing ones (paid around the moment
//!   the deadline fires) either way, consistently;
//! - no command was applied twice: at most one `stock_reserved` and one `stock_released` per
//!   order, and the stock adds up (each SKU holds exactly what its orders need, so a second
//!   reservation would refuse a later order);
//! - no deadline was handled after its cancel or the instance's completion: the instance log
//!   has no commit after the completing one, and each deadline commit handled the pending
//!   generation; a paid order never has its stock released;
//! - nothing was dead-lettered;
//! - deadline lateness (the `order_cancelled` event's timestamp minus the due time the
//!   `deadline_fired` event carries) is reported as p50/p99 over the deadlines that fell due
//!   while a process had been up for a margin and stayed up for the 2 s target.
//!
//! CI runs the short versions (300 orders, 2 process kills, 1 server restart; the cluster: 150
//! orders, 1 process kill, 1 leader kill). The soak mode is
//! `PM_SOAK_INSTANCES=10000 PM_SOAK_KILLS=5 cargo test -p jetsource-tests --test
//! process_manager_crash -- --nocapture` (`PM_SOAK_RATE` orders placed a second, default 40;
//! `PM_SEED` replays a run's plan and kill times); RELIABILITY.md keeps its last figures.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use jetsource::process_manager::{self, ProcessConfig};
use jetsource::testing::nats_server::{NatsCluster, NatsServer};
use jetsource::{
    CommandMetadata, EventSet, EventStore, JetStreamConnectOptions, JetStreamStore, StoredEvent,
};
use support::fulfilment::domain::{
    Fulfilment, Order, OrderEvent, OrderPlaced, OrderStatus, Payment, PaymentReceived, Stock,
    StockEvent,
};
use support::fulfilment::Shop;
use support::workers::TestProcess;

const URLS_VAR: &str = "JETSOURCE_PM_CHILD_URLS";
const REPLICAS_VAR: &str = "JETSOURCE_PM_CHILD_REPLICAS";
/// How long an input an aborted process held waits before the server hands it to the next.
const ACK_WAIT: Duration = Duration::from_secs(2);
/// Paid orders' payment window. A payment is sent once the instance exists, so the process
/// manager must handle it before this passes: the longest it can be held up is a kill (an ack
/// wait plus a start), a server restart or an election (under 10 s here) and the retry back-off
/// (at most 1 s), even twice in a row, well inside 30 s.
const PAID_WINDOW: Duration = Duration::from_secs(30);
/// Racing orders: paid 1-2 s after the instance exists, with a 1.5 s window.
const RACING_WINDOW: Duration = Duration::from_millis(1_500);
/// The lateness target: a deadline counts when a process was up from its due time for this long.
const TARGET: Duration = Duration::from_secs(2);
/// ... and had been up (and the servers too) this long before: an ack wait, a start, a catch-up.
const MARGIN: Duration = Duration::from_secs(5);
/// How long the test waits for any one thing before it fails, saying what it waited for.
const PATIENCE: Duration = Duration::from_secs(120);
const SKUS: usize = 16;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The events store (SHOP) and the instance store (FULFILMENT), with a shop on the first.
struct World {
    events: JetStreamStore,
    instances: JetStreamStore,
    shop: Shop<JetStreamStore>,
}

impl World {
    /// Connects (creating the streams the first time), retrying while a server restarts or a
    /// young cluster cannot place the streams yet.
    async fn connect(urls: &[String], replicas: usize) -> World {
        let options = JetStreamConnectOptions::new(urls.to_vec())
            .request_timeout(Duration::from_secs(5))
            .max_reconnect_delay(Duration::from_millis(250));
        let shop = support::config("SHOP").replicas(replicas);
        let fulfilment =
            (support::config("FULFILMENT").replicas(replicas)).allow_message_schedules(true);
        let events = retry("connect to SHOP", || {
            JetStreamStore::connect(options.clone(), shop.clone())
        })
        .await;
        let instances = retry("connect to FULFILMENT", || {
            JetStreamStore::connect(options.clone(), fulfilment.clone())
        })
        .await;
        World {
            shop: Shop::new(events.clone()),
            events,
            instances,
        }
    }
}

/// The process the crash tests start and SIGKILL: this test binary run with only this test,
/// which the `#[ignore]` keeps out of ordinary runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the process-manager process of the crash tests"]
async fn process_manager_process() {
    let urls: Vec<String> = (std::env::var(URLS_VAR).expect("started by a crash test"))
        .split(',')
        .map(str::to_owned)
        .collect();
    let replicas = env_number(REPLICAS_VAR).expect("started by a crash test") as usize;
    let world = World::connect(&urls, replicas).await;
    // Short ack waits so a successor picks up what a killed process held; quick, unending
    // retries so an outage delays inputs (by at most a second after it ends) but never
    // dead-letters them.
    let mut config = ProcessConfig::new("fulfilment").concurrency(32);
    for subscriber in [&mut config.events, &mut config.deadlines] {
        *subscriber = (subscriber.clone().ack_wait(ACK_WAIT))
            .max_deliver(10_000)
            .backoff([100, 250, 500, 1_000].map(Duration::from_millis));
    }
    let _running = retry("start the process manager", || {
        let (commands, config) = (world.shop.commands(), config.clone());
        let world = &world;
        async move {
            process_manager::start::<Fulfilment>(&world.events, &world.instances, commands, config)
                .await
        }
    })
    .await;
    std::future::pending::<()>().await;
}

/// A process-manager process, SIGKILLed when dropped (also when the test fails).
fn spawn_process(urls: &[String], replicas: usize) -> TestProcess {
    TestProcess::spawn(
        "process_manager_process",
        [
            (URLS_VAR, urls.join(",")),
            (REPLICAS_VAR, replicas.to_string()),
        ],
    )
}

/// A small seeded generator (xorshift64*): the plan and the kill times follow from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// Paid as soon as the instance exists, long before the deadline: ships.
    Paid,
    /// Paid around the moment the deadline fires: ships or is cancelled, once.
    Racing,
    /// Never paid: cancelled by its deadline, its stock released.
    Unpaid,
    /// For a SKU without stock: cancelled by the rejected reservation.
    OutOfStock,
}

struct Planned {
    id: String,
    kind: Kind,
    sku: String,
    window: Duration,
    /// For racing orders: how long after the instance exists the payment is sent.
    pay_after: Duration,
}

fn plan(instances: usize, rng: &mut Rng) -> Vec<Planned> {
    (0..instances)
        .map(|n| {
            let kind = match rng.below(10) {
                0..=3 => Kind::Paid,
                4 => Kind::Racing,
                5..=7 => Kind::Unpaid,
                _ => Kind::OutOfStock,
            };
            let (window, pay_after) = match kind {
                Kind::Paid => (PAID_WINDOW, Duration::ZERO),
                Kind::Racing => (RACING_WINDOW, rng.millis(1_000, 2_000)),
                Kind::Unpaid | Kind::OutOfStock => (rng.millis(1_000, 3_000), Duration::ZERO),
            };
            let sku = match kind {
                Kind::OutOfStock => "none".to_owned(),
                _ => format!("sku-{}", n % SKUS),
            };
            Planned {
                id: format!("o-{n}"),
                kind,
                sku,
                window,
                pay_after,
            }
        })
        .collect()
}

/// Runs `attempt` until it succeeds; panics after `PATIENCE`.
async fn retry<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if start.elapsed() > PATIENCE => panic!("{what}: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Places the order and pays it as its kind says. Both commands carry ids and decide nothing
/// when already done, so retrying them through outages applies each once.
async fn run_order(world: Arc<World>, order: Arc<Planned>) {
    let placed = OrderPlaced {
        order_id: order.id.clone(),
        sku: order.sku.clone(),
        pay_within_ms: order.window.as_millis() as u64,
    };
    retry(&format!("place {}", order.id), || {
        let placed = placed.clone();
        let metadata = CommandMetadata::default().command_id(format!("place-{}", order.id));
        (world.shop.orders).execute_with(&order.id, metadata, move |o: &Order| {
            let events = match o.status {
                OrderStatus::New => vec![placed.clone().into()],
                _ => vec![],
            };
            Ok::<_, Infallible>(events)
        })
    })
    .await;
    if !matches!(order.kind, Kind::Paid | Kind::Racing) {
        return;
    }
    // A payment handled before the placement would find no instance and be skipped (only the
    // placement starts one), and the events of two aggregates have no order between them: so
    // the payment waits until the process manager has handled the placement.
    let key = support::key("fulfilment", &order.id);
    let mut pause = Duration::from_millis(20);
    let start = Instant::now();
    while !(world.instances.load(&key, 1).await).is_ok_and(|events| !events.is_empty()) {
        assert!(start.elapsed() < PATIENCE, "no instance for {}", order.id);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    tokio::time::sleep(order.pay_after).await;
    retry(&format!("pay {}", order.id), || {
        let metadata = CommandMetadata::default().command_id(format!("pay-{}", order.id));
        (world.shop.payments).execute_with(&order.id, metadata, |p: &Payment| {
            let paid = PaymentReceived {
                order_id: order.id.clone(),
                amount: 10,
            };
            let events = if p.received == 0 {
                vec![paid.into()]
            } else {
                vec![]
            };
            Ok::<_, Infallible>(events)
        })
    })
    .await;
}

/// When processes were up and the servers out, to pick the deadlines whose lateness counts.
#[derive(Default)]
struct Timeline {
    up: Vec<(SystemTime, SystemTime)>,
    outages: Vec<(SystemTime, SystemTime)>,
}

impl Timeline {
    /// Whether a deadline due at `due` fell while a process had been up for `MARGIN` and
    /// stayed up for `TARGET`, away from any server outage.
    fn counts(&self, due: SystemTime) -> bool {
        let up = (self.up.iter()).any(|(from, to)| *from + MARGIN <= due && due + TARGET <= *to);
        let out =
            (self.outages.iter()).any(|(from, to)| *from <= due + TARGET && due <= *to + MARGIN);
        up && !out
    }
}

/// The single server or the cluster, with the disturbance each test inflicts once.
enum Servers {
    Single(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Servers {
    fn urls(&self) -> Vec<String> {
        match self {
            Servers::Single(server) => vec![server.url()],
            Servers::Cluster(cluster) => cluster.urls(),
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Servers::Single(_) => 1,
            Servers::Cluster(_) => 3,
        }
    }

    /// SIGKILLs the server and restarts it, or SIGKILLs the node leading FULFILMENT and waits
    /// for the survivors to elect another; returns the outage and what happened.
    async fn disturb(&mut self) -> ((SystemTime, SystemTime), String) {
        let from = SystemTime::now();
        match self {
            Servers::Single(server) => {
                tokio::task::block_in_place(|| {
                    server.stop();
                    std::thread::sleep(Duration::from_millis(500));
                    server.restart();
                });
                let to = SystemTime::now();
                let down = to.duration_since(from).unwrap_or_default();
                (
                    (from, to),
                    format!("server SIGKILLed, back after {down:.1?}"),
                )
            }
            Servers::Cluster(cluster) => {
                let urls = cluster.urls();
                let js = observer(&urls).await;
                let leader = elected_leader_of(&js, "FULFILMENT").await;
                let shop_leader = leader_of(&js, "SHOP").await;
                let killed = Instant::now();
                tokio::task::block_in_place(|| cluster.servers_mut()[leader].stop());
                let survivor = observer(&[urls[(leader + 1) % 3].clone()]).await;
                loop {
                    match leader_of(&survivor, "FULFILMENT").await {
                        Some(now) if now != leader => break,
                        _ => assert!(killed.elapsed() < PATIENCE, "no new leader"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let elected = killed.elapsed();
                let also = if shop_leader == Some(leader) {
                    " (and SHOP's)"
                } else {
                    ""
                };
                let what = format!(
                    "node n{leader}, FULFILMENT's leader{also}, SIGKILLed; new leader after {elected:.1?}"
                );
                ((from, SystemTime::now()), what)
            }
        }
    }
}

async fn observer(urls: &[String]) -> async_nats::jetstream::Context {
    let client = retry("connect an observer", || async_nats::connect(urls.to_vec())).await;
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_millis(500));
    js
}

/// The node leading `stream`, asking until one is elected.
async fn elected_leader_of(js: &async_nats::jetstream::Context, stream: &str) -> usize {
    let start = Instant::now();
    loop {
        match leader_of(js, stream).await {
            Some(leader) => return leader,
            None => assert!(start.elapsed() < PATIENCE, "{stream} has no leader"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node (`n<i>` in the harness) leading `stream` now.
async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> Option<usize> {
    let info = js.get_stream(stream).await.ok()?.get_info().await.ok()?;
    info.cluster?.leader?.strip_prefix('n')?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_once_through_process_kills_and_a_server_restart() {
    crash_run(Servers::Single(Box::new(NatsServer::start())), 300, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_once_through_process_kills_and_a_stream_leader_kill() {
    crash_run(Servers::Cluster(NatsCluster::start()), 150, 1).await;
}

async fn crash_run(mut servers: Servers, instances: usize, kills: usize) {
    let soak = env_number("PM_SOAK_INSTANCES").is_some();
    let instances = env_number("PM_SOAK_INSTANCES").map_or(instances, |n| n as usize);
    let kills = env_number("PM_SOAK_KILLS").map_or(kills, |n| n as usize);
    let rate = env_number("PM_SOAK_RATE")
        .unwrap_or(if soak { 40 } else { 30 })
        .max(1);
    let seed = env_number("PM_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!("seed {seed} (PM_SEED={seed} replays the plan and the kill times)");
    let mut rng = Rng(seed);
    let plan: Vec<Arc<Planned>> = plan(instances, &mut rng)
        .into_iter()
        .map(Arc::new)
        .collect();
    let (urls, replicas) = (servers.urls(), servers.replicas());
    let world = Arc::new(World::connect(&urls, replicas).await);

    // Each SKU holds exactly what its orders need: a reservation applied twice would leave a
    // later order out of stock.
    let mut needed: BTreeMap<&str, u32> = BTreeMap::new();
    for order in plan.iter().filter(|o| o.kind != Kind::OutOfStock) {
        *needed.entry(order.sku.as_str()).or_default() += 1;
    }
    for (sku, quantity) in &needed {
        world.shop.add_stock(sku, *quantity).await;
    }

    // Disturbances at random moments of the placing: `kills` process kills and one server
    // restart (or leader kill) among them.
    let placing = Duration::from_secs_f64(instances as f64 / rate as f64);
    let mut moments: Vec<Duration> = (0..=kills)
        .map(|_| placing.mul_f64(0.1 + 0.8 * rng.below(1_000) as f64 / 1_000.0))
        .collect();
    moments.sort();
    let server_moment = rng.below(moments.len() as u64) as usize;

    let mut timeline = Timeline::default();
    let mut process = spawn_process(&urls, replicas);
    let mut up_since = SystemTime::now();
    let started = Instant::now();
    let placer = tokio::spawn({
        let (world, plan) = (world.clone(), plan.clone());
        async move {
            let mut orders = tokio::task::JoinSet::new();
            for (n, order) in plan.into_iter().enumerate() {
                tokio::time::sleep_until(
                    (started + placing.mul_f64(n as f64 / instances as f64)).into(),
                )
                .await;
                orders.spawn(run_order(world.clone(), order));
            }
            let last_placed = Instant::now();
            while let Some(done) = orders.join_next().await {
                done.expect("an order task panicked");
            }
            last_placed
        }
    });
    let mut notes = Vec::new();
    for (n, moment) in moments.iter().enumerate() {
        tokio::time::sleep_until((started + *moment).into()).await;
        let at = started.elapsed();
        if n == server_moment {
            let (outage, what) = servers.disturb().await;
            timeline.outages.push(outage);
            notes.push(format!("{at:.1?}: {what}"));
        } else {
            process.kill();
            timeline.up.push((up_since, SystemTime::now()));
            notes.push(format!("{at:.1?}: process SIGKILLed"));
            process = spawn_process(&urls, replicas);
            up_since = SystemTime::now();
        }
    }
    let last_placed = placer.await.expect("placing");

    wait_for_endings(&world, &plan).await;
    // Deadlines cancelled too late fire anyway: give the last ones time to fire and be
    // (rightly) ignored before the instance log is read.
    let all_due = last_placed + PAID_WINDOW + Duration::from_secs(5);
    tokio::time::sleep_until(all_due.into()).await;
    process.kill();
    timeline.up.push((up_since, SystemTime::now()));

    let report = check(&world, &plan, &needed, &timeline).await;
    eprintln!(
        "{instances} orders at {rate}/s ({:?}); {notes:?}; {:.1?} in all",
        report.kinds,
        started.elapsed()
    );
    eprintln!("racing orders: {:?}", report.racing);
    let lateness = &report.lateness;
    let at = |p| percentile(lateness, p).unwrap_or_default();
    eprintln!(
        "deadline lateness over {} of {} deadline cancellations (those due while a process was \
         up): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        lateness.len(),
        report.deadline_cancels,
        at(0.50),
        at(0.99),
        at(1.0),
    );
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    // The soak holds the target, over thousands of deadlines. The short CI runs (debug
    // build, kills seconds apart, other tests beside) only report it: one run on the cluster
    // measured every deadline about 12 s late after a leader kill and a process kill 4 s apart
    // (seed 1796015293983612343), which the soaks, with disturbances spread out, never showed.
    if soak {
        assert!(
            !lateness.is_empty(),
            "no deadline fell due while a process was up"
        );
        let p99 = at(0.99);
        assert!(
            p99 < TARGET,
            "deadline lateness p99 {p99:?} is not under {TARGET:?}"
        );
    }
}

/// Polls until every order has ended; panics with the ones that did not after `PATIENCE`
/// without progress.
async fn wait_for_endings(world: &World, plan: &[Arc<Planned>]) {
    let mut open: Vec<String> = plan.iter().map(|o| o.id.clone()).collect();
    let mut progress = Instant::now();
    while !open.is_empty() {
        let before = open.len();
        open = futures::stream::iter(open)
            .map(|id| async move {
                let ended = (world.shop.orders.load(&id).await).is_ok_and(|o| {
                    matches!(
                        o.state.status,
                        OrderStatus::Shipped | OrderStatus::Cancelled
                    )
                });
                (!ended).then_some(id)
            })
            .buffer_unordered(16)
            .filter_map(|id| async move { id })
            .collect()
            .await;
        if open.len() < before {
            progress = Instant::now();
        }
        assert!(
            progress.elapsed() < PATIENCE,
            "{} orders never ended, among them {:?}; dead letters: {:?}",
            open.len(),
            &open[..open.len().min(10)],
            dead_letters(world).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many inputs each of the process manager's subscribers dead-lettered.
async fn dead_letters(world: &World) -> [u64; 2] {
    let js = async_nats::jetstream::new(world.events.client().clone());
    let mut counts = [0; 2];
    for (count, stream) in counts.iter_mut().zip(["SHOP_DLQ", "FULFILMENT_DLQ"]) {
        if let Ok(mut stream) = js.get_stream(stream).await {
            *count = stream.info().await.map_or(0, |info| info.state.messages);
        }
    }
    counts
}

/// What the stored events say about one order.
#[derive(Default)]
struct Facts {
    placed_at: Option<SystemTime>,
    shipped: u32,
    cancelled: Vec<(String, SystemTime)>,
    reserved: u32,
    released: u32,
    /// The due time of its fired deadline (each fire of one generation carries the same).
    due: Option<SystemTime>,
    /// Its instance's commits, oldest first.
    commits: Vec<serde_json::Value>,
}

struct Report {
    failures: Vec<String>,
    kinds: BTreeMap<Kind, usize>,
    racing: BTreeMap<&'static str, usize>,
    deadline_cancels: usize,
    /// Sorted.
    lateness: Vec<Duration>,
}

async fn read_all(store: &JetStreamStore) -> Vec<StoredEvent> {
    retry("read the stream", || store.read_all(1, usize::MAX)).await
}

async fn facts(world: &World) -> HashMap<String, Facts> {
    let mut facts: HashMap<String, Facts> = HashMap::new();
    for event in read_all(&world.events).await {
        let id = event.aggregate_id.clone();
        match event.aggregate_type.as_str() {
            "order" => {
                let at = event.timestamp;
                let order = facts.entry(id).or_default();
                match OrderEvent::decode(event.raw()).expect("an order event") {
                    Some(OrderEvent::Placed(_)) => order.placed_at = Some(at),
                    Some(OrderEvent::Shipped(_)) => order.shipped += 1,
                    Some(OrderEvent::Cancelled(c)) => order.cancelled.push((c.reason, at)),
                    None => {}
                }
            }
            "stock" => match StockEvent::decode(event.raw()).expect("a stock event") {
                Some(StockEvent::Reserved(r)) => facts.entry(r.order_id).or_default().reserved += 1,
                Some(StockEvent::Released(r)) => facts.entry(r.order_id).or_default().released += 1,
                _ => {}
            },
            _ => {}
        }
    }
    for event in read_all(&world.instances).await {
        let id = event.aggregate_id.clone();
        match (event.aggregate_type.as_str(), event.name.as_str()) {
            ("fulfilment", "instance_committed") => {
                let commit =
                    serde_json::from_slice(&event.payload).expect("a JSON instance record");
                facts.entry(id).or_default().commits.push(commit);
            }
            ("fulfilment_deadline", "deadline_fired") => {
                let order = facts.entry(id).or_default();
                order.due = Some(
                    order
                        .due
                        .map_or(event.timestamp, |due| due.min(event.timestamp)),
                );
            }
            _ => {}
        }
    }
    facts
}

/// Walks an instance's commits (the runtime's stored record): nothing after the completing
/// commit, and a deadline handled only while it was the pending generation.
fn check_instance_log(commits: &[serde_json::Value]) -> Result<(), String> {
    let mut previous: Option<&serde_json::Value> = None;
    for commit in commits {
        let input = commit["outbox"]["input"].as_str().unwrap_or_default();
        if let Some(before) = previous {
            if before["completed"] == true {
                return Err(format!(
                    "a commit for input {input:?} after the instance completed"
                ));
            }
        }
        if let Some(deadline) = input.strip_prefix("deadline-") {
            let (name, generation) = deadline.rsplit_once('-').unwrap_or((deadline, ""));
            let pending = previous.map(|p| &p["deadlines"][name]["generation"]);
            if pending.and_then(|g| g.as_u64()).map(|g| g.to_string())
                != Some(generation.to_owned())
            {
                return Err(format!(
                    "deadline {deadline:?} handled while {pending:?} was pending"
                ));
            }
        }
        previous = Some(commit);
    }
    match previous {
        Some(last) if last["completed"] == true => Ok(()),
        _ => Err("the instance never completed".to_owned()),
    }
}

impl Facts {
    /// (due, cancelled at) when the order was cancelled by its deadline.
    fn deadline_cancel(&self) -> Option<(SystemTime, SystemTime)> {
        match (self.cancelled.as_slice(), self.due) {
            ([(reason, cancelled)], Some(due)) if reason == "not paid in time" => {
                Some((due, *cancelled))
            }
            _ => None,
        }
    }
}

/// One order's ending, commands and instance log, as its kind allows.
fn check_order(order: &Planned, f: &Facts) -> Result<(), String> {
    let cancels: Vec<&str> = f
        .cancelled
        .iter()
        .map(|(reason, _)| reason.as_str())
        .collect();
    // (shipped, cancel reasons, reserved, released)
    let outcome = (f.shipped, cancels.as_slice(), f.reserved, f.released);
    let shipped = (1, &[][..], 1, 0);
    let overdue = (0, &["not paid in time"][..], 1, 1);
    let allowed = match order.kind {
        Kind::Paid => vec![shipped],
        Kind::Racing => vec![shipped, overdue],
        Kind::Unpaid => vec![overdue],
        Kind::OutOfStock => vec![(0, &["out of stock"][..], 0, 0)],
    };
    if !allowed.contains(&outcome) {
        return Err(format!(
            "(shipped, cancels, reserved, released) are {outcome:?}, not one of {allowed:?}"
        ));
    }
    check_instance_log(&f.commits)?;
    if let (Some(placed), Some((due, cancelled))) = (f.placed_at, f.deadline_cancel()) {
        // Never early: due at least a window after the placement, and handled no sooner.
        if due < placed + order.window || cancelled < due {
            return Err(format!(
                "placed {placed:?}, due {due:?}, cancelled {cancelled:?}"
            ));
        }
    }
    Ok(())
}

async fn check(
    world: &World,
    plan: &[Arc<Planned>],
    needed: &BTreeMap<&str, u32>,
    timeline: &Timeline,
) -> Report {
    let facts = facts(world).await;
    let mut report = Report {
        failures: Vec::new(),
        kinds: BTreeMap::new(),
        racing: BTreeMap::new(),
        deadline_cancels: 0,
        lateness: Vec::new(),
    };
    let none = Facts::default();
    for order in plan {
        *report.kinds.entry(order.kind).or_default() += 1;
        let f = facts.get(&order.id).unwrap_or(&none);
        if let Err(error) = check_order(order, f) {
            let (id, kind) = (&order.id, order.kind);
            report.failures.push(format!("{id} ({kind:?}): {error}"));
        }
        if order.kind == Kind::Racing {
            let outcome = if f.shipped == 1 {
                "shipped"
            } else {
                "cancelled"
            };
            *report.racing.entry(outcome).or_default() += 1;
        }
        if let Some((due, cancelled)) = f.deadline_cancel() {
            report.deadline_cancels += 1;
            if timeline.counts(due) {
                let lateness = cancelled.duration_since(due).unwrap_or_default();
                report.lateness.push(lateness);
            }
        }
    }
    // The aggregates agree with their events: ended once, as the events say.
    let disagreeing: Vec<String> = futures::stream::iter(plan)
        .map(|order| async {
            let f = facts.get(&order.id).unwrap_or(&none);
            let status = match f.shipped {
                0 => OrderStatus::Cancelled,
                _ => OrderStatus::Shipped,
            };
            let state = (world.shop.orders.load(&order.id).await)
                .map(|o| (o.state.status, o.state.endings))
                .map_err(|e| e.to_string());
            (state != Ok((status, 1)))
                .then(|| format!("{}: the order aggregate is {state:?}", order.id))
        })
        .buffer_unordered(16)
        .filter_map(|failure| async { failure })
        .collect()
        .await;
    report.failures.extend(disagreeing);
    for (sku, added) in needed {
        let orders = plan
            .iter()
            .filter(|o| o.sku == *sku)
            .filter_map(|o| facts.get(&o.id));
        let (reserved, released) =
            orders.fold((0, 0), |(a, b), f| (a + f.reserved, b + f.released));
        let stock: Stock = world.shop.stock_of(sku).await;
        let expected = (added - reserved + released, reserved - released);
        if (stock.available, stock.reserved) != expected {
            report.failures.push(format!(
                "{sku}: (available, reserved) ({}, {}), its events say {expected:?}",
                stock.available, stock.reserved
            ));
        }
    }
    let dead = dead_letters(world).await;
    if dead != [0, 0] {
        report
            .failures
            .push(format!("dead letters (SHOP_DLQ, FULFILMENT_DLQ): {dead:?}"));
    }
    report.lateness.sort();
    report
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * p).round() as usize).copied()
}

/// The instance-log check fails on what it is there to catch.
#[test]
fn the_instance_log_check_catches_a_commit_after_completion_and_a_stale_deadline() {
    let commit = |input: &str, completed: bool, pending: Option<u64>| {
        let deadlines = match pending {
            Some(generation) => serde_json::json!({ "payment": { "generation": generation } }),
            None => serde_json::json!({}),
        };
        serde_json::json!({ "completed": completed, "deadlines": deadlines, "outbox": { "input": input } })
    };
    let placed = commit("e-1", false, Some(1));
    let fired = commit("deadline-payment-1", true, None);
    assert_eq!(check_instance_log(&[placed.clone(), fired.clone()]), Ok(()));
    let paid = commit("e-2", true, None);
    assert!(check_instance_log(&[placed.clone(), paid.clone(), fired.clone()]).is_err());
    let cancelled = commit("e-2", false, None);
    assert!(check_instance_log(&[placed.clone(), cancelled, fired]).is_err());
    assert!(
        check_instance_log(&[placed.clone(), commit("deadline-payment-2", true, None)]).is_err()
    );
    assert!(check_instance_log(&[placed]).is_err(), "never completed");
}
