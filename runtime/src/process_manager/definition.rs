//! What a process manager is: its state, the events it handles, how they map to instances, and
//! its handlers. `#[jetsource::process_manager]` implements it; nothing here depends on a
//! backend.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::command::Rejection;
use super::context::ProcessContext;
use crate::event_set::EventSet;
use crate::subscriber::HandlerError;

/// A workflow across aggregates: one instance per correlation id, whose state, outgoing
/// commands and deadlines are committed together for each event or deadline it handles.
///
/// Write it with `#[jetsource::process_manager(name = "...", correlate = field)]` on an `impl`
/// block of handlers; the attribute implements this trait. See the [module](super) docs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jetsource process manager",
    label = "not a process manager",
    note = "put `#[jetsource::process_manager(name = \"...\", correlate = field)]` on an `impl {Self}` block of handlers"
)]
pub trait ProcessManager: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The process manager's name: one NATS subject token. Its instances are stored as
    /// aggregates of this type, and its consumers are named after it.
    const NAME: &'static str;
    /// The deadline names its handlers handle.
    const DEADLINES: &'static [&'static str];
    /// The events it handles.
    type Event: EventSet;

    /// The id of the instance `event` belongs to.
    fn correlate(event: &Self::Event) -> String;

    /// Whether `event` creates an instance when none exists (a `#[start]` handler).
    fn starts(event: &Self::Event) -> bool;

    /// Handles an event on the instance's state.
    fn handle(
        &mut self,
        event: Self::Event,
        cx: &mut ProcessContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Handles deadline `deadline`, one of [`ProcessManager::DEADLINES`], when it fires.
    fn on_deadline(
        &mut self,
        deadline: &str,
        cx: &mut ProcessContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Handles a command that its aggregate rejected.
    fn on_rejected(
        &mut self,
        rejection: Rejection,
        cx: &mut ProcessContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}
