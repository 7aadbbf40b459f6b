//! Given/when/then fixtures for testing aggregates without a store.

#[cfg(feature = "test-server")]
pub mod nats_server;
#[cfg(feature = "test-server")]
pub mod postgres_server;

use std::fmt::Debug;

use crate::aggregate::Aggregate;
use crate::event::RawEvent;
use crate::event_set::EventSet;

/// Given past events, when a command runs, then expect these events or this error.
///
/// Given events go through their codec and back before they are applied, so a payload that
/// would not survive storage fails the test.
///
/// ```
/// # use jetsource::{Aggregate, Apply, Event, EventSet};
/// # use serde::{Deserialize, Serialize};
/// use jetsource::testing::AggregateFixture;
/// # #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
/// # #[event(name = "deposited", version = 1)]
/// # struct Deposited { amount: u64 }
/// # #[derive(EventSet, Debug, PartialEq)]
/// # enum AccountEvent { Deposited(Deposited) }
/// # #[derive(Aggregate, Default)]
/// # #[aggregate(name = "account", events = AccountEvent)]
/// # struct Account { balance: u64 }
/// # impl Apply<Deposited> for Account { fn apply(&mut self, e: Deposited) { self.balance += e.amount; } }
/// fn withdraw(account: &Account, amount: u64) -> Result<Vec<AccountEvent>, String> {
///     if account.balance < amount { return Err("insufficient funds".into()); }
///     Ok(vec![Deposited { amount: 0 }.into()])
/// }
///
/// AggregateFixture::<Account>::given([Deposited { amount: 5 }.into()])
///     .when(|a| withdraw(a, 10))
///     .then_expect_error("insufficient funds".to_string());
/// ```
pub struct AggregateFixture<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateFixture<A> {
    /// Starts from an aggregate that has no events.
    pub fn new() -> Self {
        AggregateFixture {
            state: A::default(),
        }
    }

    /// Starts from the state these events build.
    ///
    /// # Panics
    /// If an event cannot be encoded and decoded back, naming it.
    #[track_caller]
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            let name = event.event_name();
            let encoded = event
                .encode()
                .unwrap_or_else(|e| panic!("given event `{name}` does not encode: {e}"));
            let raw = RawEvent {
                name: encoded.name,
                version: encoded.version,
                codec: encoded.codec,
                payload: &encoded.payload,
            };
            match A::Event::decode(raw) {
                Ok(Some(decoded)) => state.apply_event(decoded),
                Ok(None) => panic!("given event `{name}` is retired by its event set"),
                Err(e) => panic!("given event `{name}` does not decode after encoding: {e}"),
            }
        }
        AggregateFixture { state }
    }

    /// Runs the command on the given state.
    pub fn when<E, F>(self, command: F) -> FixtureOutcome<A, E>
    where
        F: FnOnce(&A) -> Result<Vec<A::Event>, E>,
    {
        let result = command(&self.state);
        FixtureOutcome {
            state: self.state,
            result,
        }
    }
}

impl<A: Aggregate> Default for AggregateFixture<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of [`AggregateFixture::when`], to assert on.
pub struct FixtureOutcome<A: Aggregate, E> {
    state: A,
    result: Result<Vec<A::Event>, E>,
}

impl<A, E> FixtureOutcome<A, E>
where
    A: Aggregate,
    A::Event: PartialEq + Debug,
    E: Debug + PartialEq,
{
    /// Asserts that the command produced exactly `expected`, and returns the state after them.
    ///
    /// # Panics
    /// With both lists when they differ, or with the error when the command failed.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "the command produced other events than expected"
                );
                let mut state = self.state;
                for event in events {
                    state.apply_event(event);
                }
                state
            }
            Err(error) => panic!("expected events {expected:?}, but the command failed: {error:?}"),
        }
    }

    /// Asserts that the command failed with `expected`.
    ///
    /// # Panics
    /// When the command succeeded or failed otherwise.
    #[track_caller]
    pub fn then_expect_error(self, expected: E) {
        match self.result {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(error, expected, "the command failed with another error"),
        }
    }
}
