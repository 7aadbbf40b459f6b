//! A given/when/then fixture for subscribers: no server, just the handler, fed the way the
//! runtime feeds it, including the redeliveries JetStream can produce.

use std::collections::HashMap;
use std::time::SystemTime;

use uuid::Uuid;

use super::handler::{EventContext, HandlerError, Subscriber};
use crate::event::{EncodedEvent, RawEvent};
use crate::event_set::EventSet;

/// How the events are delivered to the handler.
///
/// ```
/// use jetsource::subscriber::Redelivery;
/// assert_ne!(Redelivery::Duplicates, Redelivery::CrashBeforeAck);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Each event once, in order.
    None,
    /// Each event twice in a row (an ack that got lost), the second time with delivery count 2.
    Duplicates,
    /// Every event once, then every event again with delivery count 2: the process crashed
    /// after its handlers ran and before any ack or completion record reached the server.
    CrashBeforeAck,
}

/// One handler call the fixture made.
#[derive(Debug)]
pub struct FixtureCall {
    /// What the handler was given besides the event.
    pub ctx: EventContext,
    /// What it returned.
    pub result: Result<(), HandlerError>,
}

/// Given events, when delivered (possibly more than once), then check the handler's effects.
///
/// Each given event goes through its codec and back before the handler sees it, gets an event
/// id, its aggregate's next sequence and the next stream position, exactly like a stored event.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Mutex;
/// use jetsource::subscriber::{EventContext, HandlerError, Redelivery, Subscriber, SubscriberFixture};
/// # use jetsource::{Event, EventSet};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "deposited", version = 1)]
/// # struct Deposited { amount: u64 }
/// # #[derive(EventSet)]
/// # enum Events { Deposited(Deposited) }
///
/// /// Sums deposits, remembering which events it counted.
/// #[derive(Default)]
/// struct Total { seen: Mutex<HashSet<uuid::Uuid>>, sum: Mutex<u64> }
///
/// impl Subscriber for Total {
///     type Event = Events;
///     async fn handle(&self, event: Events, ctx: &EventContext) -> Result<(), HandlerError> {
///         let Events::Deposited(d) = event;
///         if self.seen.lock().unwrap().insert(ctx.event_id) {
///             *self.sum.lock().unwrap() += d.amount;
///         }
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let fixture = SubscriberFixture::new(Total::default())
///     .given("account", "a1", Deposited { amount: 5 }.into())
///     .given("account", "a1", Deposited { amount: 7 }.into());
/// let calls = fixture.deliver(Redelivery::CrashBeforeAck).await;
/// assert_eq!(calls.len(), 4);
/// assert_eq!(*fixture.subscriber().sum.lock().unwrap(), 12); // idempotent
/// # });
/// ```
pub struct SubscriberFixture<S: Subscriber> {
    subscriber: S,
    given: Vec<Given>,
    sequences: HashMap<(String, String), u64>,
}

struct Given {
    encoded: EncodedEvent,
    ctx: EventContext,
}

impl<S: Subscriber> SubscriberFixture<S> {
    /// A fixture around `subscriber`, with no events yet.
    pub fn new(subscriber: S) -> Self {
        SubscriberFixture {
            subscriber,
            given: Vec::new(),
            sequences: HashMap::new(),
        }
    }

    /// Adds an event of aggregate `aggregate_type`/`aggregate_id`.
    ///
    /// # Panics
    /// If the event cannot be encoded, naming it.
    #[track_caller]
    pub fn given(mut self, aggregate_type: &str, aggregate_id: &str, event: S::Event) -> Self {
        let name = event.event_name();
        let encoded = event
            .encode()
            .unwrap_or_else(|e| panic!("given event `{name}` does not encode: {e}"));
        let sequence = self
            .sequences
            .entry((aggregate_type.to_owned(), aggregate_id.to_owned()))
            .or_insert(0);
        *sequence += 1;
        let ctx = EventContext {
            event_id: Uuid::now_v7(),
            event_name: encoded.name.to_owned(),
            event_version: encoded.version,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            sequence: *sequence,
            position: self.given.len() as u64 + 1,
            timestamp: SystemTime::now(),
            correlation_id: Uuid::now_v7().to_string(),
            causation_id: None,
            command_id: None,
            headers: Default::default(),
            delivery_count: 1,
            redriven: false,
        };
        self.given.push(Given { encoded, ctx });
        self
    }

    /// The subscriber, to check its effects.
    pub fn subscriber(&self) -> &S {
        &self.subscriber
    }

    /// Delivers the given events as `redelivery` says and returns every call in order.
    ///
    /// # Panics
    /// If a given event does not decode back into the handled event set.
    pub async fn deliver(&self, redelivery: Redelivery) -> Vec<FixtureCall> {
        let order: Vec<(usize, u64)> = match redelivery {
            Redelivery::None => (0..self.given.len()).map(|i| (i, 1)).collect(),
            Redelivery::Duplicates => (0..self.given.len())
                .flat_map(|i| [(i, 1), (i, 2)])
                .collect(),
            Redelivery::CrashBeforeAck => (0..self.given.len())
                .map(|i| (i, 1))
                .chain((0..self.given.len()).map(|i| (i, 2)))
                .collect(),
        };
        let mut calls = Vec::with_capacity(order.len());
        for (index, delivery_count) in order {
            let given = &self.given[index];
            let raw = RawEvent {
                name: given.encoded.name,
                version: given.encoded.version,
                codec: given.encoded.codec,
                payload: &given.encoded.payload,
            };
            let event = match S::Event::decode(raw) {
                Ok(Some(event)) => event,
                Ok(None) => panic!("given event `{}` is retired", raw.name),
                Err(e) => panic!("given event `{}` does not decode: {e}", raw.name),
            };
            let mut ctx = given.ctx.clone();
            ctx.delivery_count = delivery_count;
            let result = self.subscriber.handle(event, &ctx).await;
            calls.push(FixtureCall { ctx, result });
        }
        calls
    }
}
