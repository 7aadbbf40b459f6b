//! Aggregates: state rebuilt by replaying its events.

use crate::error::{DecodeError, EncodeError};
use crate::event_set::EventSet;

/// How an aggregate is snapshotted: the schema version of its serialized state and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Bumped whenever the state's serialized form changes; a stored snapshot of another schema
    /// version is ignored and the aggregate is replayed in full.
    pub schema_version: u32,
    /// Take a snapshot each time the aggregate's version crosses a multiple of this many events.
    pub every: u64,
}

/// Aggregate state. Derive it with `#[derive(Aggregate)]` and implement [`Apply`] for each event.
///
/// ```
/// use jetsource::{Aggregate, Apply, Event, EventSet};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
/// #[event(name = "deposited", version = 1)]
/// struct Deposited { amount: u64 }
///
/// #[derive(EventSet, Debug, PartialEq)]
/// enum AccountEvent { Deposited(Deposited) }
///
/// #[derive(Aggregate, Default)]
/// #[aggregate(name = "account", events = AccountEvent)]
/// struct Account { balance: u64 }
///
/// impl Apply<Deposited> for Account {
///     fn apply(&mut self, event: Deposited) { self.balance += event.amount; }
/// }
///
/// let mut account = Account::default();
/// account.apply_event(AccountEvent::Deposited(Deposited { amount: 7 }));
/// assert_eq!(account.balance, 7);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jetsource aggregate",
    label = "not an aggregate",
    note = "add `#[derive(jetsource::Aggregate)]` and `#[aggregate(name = \"...\", events = YourEventSet)]`"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type's name: one NATS subject token.
    const TYPE: &'static str;
    /// The events this aggregate is built from.
    type Event: EventSet;
    /// Snapshot policy, when the aggregate opted in with `snapshot(...)`.
    const SNAPSHOT: Option<SnapshotPolicy> = None;

    /// Applies one event to the state.
    fn apply_event(&mut self, event: Self::Event);

    /// Serializes the state for a snapshot (JSON); `None` when snapshots are off.
    fn encode_snapshot(&self) -> Option<Result<Vec<u8>, EncodeError>> {
        None
    }

    /// Restores the state from a snapshot written by [`Aggregate::encode_snapshot`].
    fn decode_snapshot(_bytes: &[u8]) -> Option<Result<Self, DecodeError>> {
        None
    }
}

/// Applies one event type to aggregate state. The aggregate derive requires one impl per
/// variant of its event set.
///
/// ```
/// struct Counter(u64);
/// struct Incremented;
/// impl jetsource::Apply<Incremented> for Counter {
///     fn apply(&mut self, _: Incremented) { self.0 += 1; }
/// }
/// let mut c = Counter(0);
/// jetsource::Apply::apply(&mut c, Incremented);
/// assert_eq!(c.0, 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` does not apply event `{E}`",
    label = "missing `impl Apply<{E}> for {Self}`",
    note = "every event of an aggregate's event set needs `impl jetsource::Apply<{E}> for {Self}`"
)]
pub trait Apply<E> {
    /// Changes the state by one event. Must not fail: the event already happened.
    fn apply(&mut self, event: E);
}
