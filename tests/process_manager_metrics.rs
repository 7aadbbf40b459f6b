//! A process manager's metrics through the `metrics` facade, on the in-memory store and a
//! virtual clock (a binary of its own: the recorder is global).

mod support;

use std::time::{Duration, SystemTime};

use jetsource::observability::{
    DEADLINES_CANCELLED, DEADLINES_FIRED, DEADLINES_SCHEDULED, DEADLINE_LATENESS_SECONDS,
    INSTANCES_COMPLETED, INSTANCES_STARTED, PROCESS_COMMANDS,
};
use jetsource::process_manager::{self, ProcessConfig, VirtualClock};
use jetsource::InMemoryStore;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use support::fulfilment::domain::{Fulfilment, OrderStatus};
use support::fulfilment::{eventually, Shop};

#[tokio::test]
async fn instances_deadlines_lateness_and_commands_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install the metrics recorder");

    let store = InMemoryStore::new();
    let shop = Shop::new(store.clone());
    let clock = VirtualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    shop.add_stock("sku-1", 5).await;
    let running = process_manager::start_in_memory::<Fulfilment>(
        &store,
        &store,
        shop.commands(),
        clock.clone(),
        ProcessConfig::new("fulfilment"),
    )
    .await
    .unwrap();
    let window = Duration::from_secs(60);
    shop.place("paid", "sku-1", window).await;
    shop.place("late", "sku-1", window).await;
    shop.pay("paid").await;
    eventually("paid shipped", || async {
        shop.order("paid").await.0 == OrderStatus::Shipped
    })
    .await;
    eventually("both deadlines set, one cancelled", || async {
        clock.pending() == 1
    })
    .await;
    clock
        .advance(window + Duration::from_secs(3))
        .await
        .unwrap();
    eventually("late cancelled", || async {
        shop.stock_of("sku-1").await.reserved == 1
    })
    .await;
    running.shutdown().await.unwrap();

    let metrics = snapshotter.snapshot().into_vec();
    let value = |name: &str, outcome: Option<&str>| {
        (metrics.iter())
            .find(|(key, _, _, _)| {
                let labels: Vec<_> = key.key().labels().map(|l| (l.key(), l.value())).collect();
                key.key().name() == name
                    && labels.contains(&("process_manager", "fulfilment"))
                    && outcome.is_none_or(|outcome| labels.contains(&("outcome", outcome)))
            })
            .map(|(_, _, _, value)| value)
    };
    let counter = |name: &str, outcome: Option<&str>| match value(name, outcome) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(counter(INSTANCES_STARTED, None), 2);
    assert_eq!(counter(INSTANCES_COMPLETED, None), 2);
    assert_eq!(counter(DEADLINES_SCHEDULED, None), 2);
    assert_eq!(counter(DEADLINES_CANCELLED, None), 1, "the paid order's");
    assert_eq!(counter(DEADLINES_FIRED, None), 1, "the late order's");
    // Reserve twice, Ship, Cancel and Release.
    assert_eq!(counter(PROCESS_COMMANDS, Some("applied")), 5);
    match value(DEADLINE_LATENESS_SECONDS, None) {
        // The clock jumped 3 s past the due time before the deadline was handled.
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(
                samples.iter().map(|s| s.into_inner()).collect::<Vec<_>>(),
                [3.0]
            )
        }
        other => panic!("lateness: {other:?}"),
    }
}
