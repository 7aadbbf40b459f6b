//! Process managers: workflows across aggregates, with deadlines held by the broker.
//!
//! A process manager reacts to events of several aggregates, keeps state per instance (one
//! per correlation id), sends commands to aggregates and sets deadlines. Write it as an `impl`
//! block of handlers under `#[jetsource::process_manager(name = "...", correlate = field)]`.
//!
//! For each input (an event, or a deadline that fired) the runtime:
//! 1. takes the instance's turn in this process, and loads it (from its cache, or the
//!    newest `instance_committed` event of aggregate (`<name>`, instance id) in the instance
//!    store);
//! 2. carries out what the instance's previous commit asked for, if this process has not
//!    (after a crash, or when another process committed last): every effect is idempotent;
//! 3. admits the input or skips it: an event already handled (a redelivery), a deadline that
//!    was cancelled, replaced or already handled, anything for a completed instance; an event
//!    that does not start an instance that does not exist waits for its start event
//!    ([`ProcessConfig::start_wait`]), then fails as retryable;
//! 4. runs the handler on the state with a [`ProcessContext`], which records the commands to
//!    send, the deadlines to set or cancel and whether the instance completes;
//! 5. commits the new state with those effects as one event, with optimistic concurrency on
//!    the instance (a conflict with another process reloads and runs the handler again);
//! 6. carries out the effects: deadlines are set or cancelled, then each command runs through
//!    its [`Repository`](crate::Repository) with a command id made of the process manager,
//!    the instance, the input and the command's index, so it is applied once however often
//!    this is redone; commands the aggregate rejects go to the `#[rejected]` handlers, whose
//!    effects are committed and carried out the same way;
//! 7. only then lets the subscriber acknowledge the input.
//!
//! Failures are a subscriber's: a [`HandlerError::Retryable`](crate::subscriber::HandlerError)
//! is retried with back-off, then the input is dead-lettered with the reason (its aggregate id
//! is the instance's for a deadline), and can be redriven.
//!
//! Deadlines are held by the broker, not by a timer in the process: on JetStream a nats-server
//! message schedule on subject `<prefix>.<name>_schedule.<instance>.<deadline>` (the instance
//! store's stream needs `StreamConfig::allow_message_schedules`); when
//! due, the server stores a `deadline_fired` event of aggregate (`<name>_deadline`, instance),
//! which the deadlines subscriber delivers. In memory a [`VirtualClock`] holds them.
//!
//! [`ProcessFixture`] runs the handlers with the same rules and no store: given these events,
//! when this event or deadline, then these commands, deadline changes and state.

mod command;
mod context;
mod deadlines;
mod definition;
mod effects;
mod engine;
mod fixture;
#[cfg(feature = "jetstream")]
mod jetstream;
mod memory;
mod metrics;
mod record;
mod run;
mod step;

pub use command::{Command, Commands, Rejected, Rejection};
pub use context::{Input, ProcessContext};
pub use deadlines::VirtualClock;
pub use definition::ProcessManager;
pub use fixture::{ProcessFixture, SentCommand, Then};
#[cfg(feature = "jetstream")]
pub use jetstream::start;
pub use memory::start_in_memory;
pub use run::{ProcessConfig, ProcessManagerHandle, ProcessStats};

pub(crate) use deadlines::Clock;
