//! The subscriber fixture shows whether a handler survives JetStream's redeliveries.

use std::collections::HashSet;
use std::sync::Mutex;

use jetsource::subscriber::{
    EventContext, HandlerError, Redelivery, Subscriber, SubscriberFixture,
};
use jetsource::{Event, EventSet};
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum Events {
    Deposited(Deposited),
}

// ANCHOR: naive
/// Adds every delivery: not idempotent.
#[derive(Default)]
struct Naive {
    sum: Mutex<u64>,
}

impl Subscriber for Naive {
    type Event = Events;

    async fn handle(&self, event: Events, _: &EventContext) -> Result<(), HandlerError> {
        let Events::Deposited(d) = event;
        *self.sum.lock().unwrap() += d.amount;
        Ok(())
    }
}
// ANCHOR_END: naive

// ANCHOR: careful
/// Remembers the event ids it counted: idempotent.
#[derive(Default)]
struct Careful {
    seen: Mutex<HashSet<uuid::Uuid>>,
    sum: Mutex<u64>,
    order: Mutex<Vec<(String, u64, u64)>>,
}

impl Subscriber for Careful {
    type Event = Events;

    async fn handle(&self, event: Events, ctx: &EventContext) -> Result<(), HandlerError> {
        let Events::Deposited(d) = event;
        self.order.lock().unwrap().push((
            ctx.aggregate_id.clone(),
            ctx.sequence,
            ctx.delivery_count,
        ));
        if self.seen.lock().unwrap().insert(ctx.event_id) {
            *self.sum.lock().unwrap() += d.amount;
        }
        Ok(())
    }
}
// ANCHOR_END: careful

// ANCHOR: given
fn given<S: Subscriber<Event = Events>>(subscriber: S) -> SubscriberFixture<S> {
    SubscriberFixture::new(subscriber)
        .given("account", "a1", Deposited { amount: 5 }.into())
        .given("account", "a2", Deposited { amount: 7 }.into())
        .given("account", "a1", Deposited { amount: 11 }.into())
}
// ANCHOR_END: given

// ANCHOR: naive_test
#[tokio::test]
async fn a_naive_handler_double_counts_under_redelivery() {
    let once = given(Naive::default());
    once.deliver(Redelivery::None).await;
    assert_eq!(*once.subscriber().sum.lock().unwrap(), 23);

    let crashed = given(Naive::default());
    let calls = crashed.deliver(Redelivery::CrashBeforeAck).await;
    assert_eq!(calls.len(), 6);
    assert_eq!(*crashed.subscriber().sum.lock().unwrap(), 46);
}
// ANCHOR_END: naive_test

#[tokio::test]
async fn an_idempotent_handler_counts_once_and_sees_metadata() {
    for redelivery in [
        Redelivery::None,
        Redelivery::Duplicates,
        Redelivery::CrashBeforeAck,
    ] {
        let fixture = given(Careful::default());
        let calls = fixture.deliver(redelivery).await;
        assert!(calls.iter().all(|c| c.result.is_ok()));
        assert_eq!(
            *fixture.subscriber().sum.lock().unwrap(),
            23,
            "{redelivery:?}"
        );
    }
    let fixture = given(Careful::default());
    let calls = fixture.deliver(Redelivery::Duplicates).await;
    assert_eq!(calls[0].ctx.event_id, calls[1].ctx.event_id);
    assert_eq!(calls[1].ctx.delivery_count, 2);
    assert_eq!(
        *fixture.subscriber().order.lock().unwrap(),
        vec![
            ("a1".to_owned(), 1, 1),
            ("a1".to_owned(), 1, 2),
            ("a2".to_owned(), 1, 1),
            ("a2".to_owned(), 1, 2),
            ("a1".to_owned(), 2, 1),
            ("a1".to_owned(), 2, 2),
        ]
    );
}
