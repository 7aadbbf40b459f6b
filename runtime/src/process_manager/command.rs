//! Commands a process manager sends to aggregates: data that is stored with the instance
//! before it runs, and the typed rejection that comes back.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::repository::{ExecuteError, Repository};
use crate::store::{CommandMetadata, EventStore};

/// A command as data: what a process manager sends with
/// [`ProcessContext::send`](super::ProcessContext::send). It is stored with the instance's state before it runs, so it
/// must serialize; it runs through a [`Repository`] with a command id, so it is applied once.
///
/// ```
/// use jetsource::process_manager::Command;
/// # use jetsource::{Aggregate, Apply, Event, EventSet};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "reserved", version = 1)]
/// # struct Reserved { order: String }
/// # #[derive(EventSet)]
/// # enum StockEvent { Reserved(Reserved) }
/// # #[derive(Aggregate, Default)]
/// # #[aggregate(name = "stock", events = StockEvent)]
/// # struct Stock { available: u32 }
/// # impl Apply<Reserved> for Stock { fn apply(&mut self, _: Reserved) { self.available -= 1; } }
/// #[derive(Serialize, Deserialize)]
/// struct Reserve { order: String }
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// enum ReserveRejected { OutOfStock }
///
/// impl Command for Reserve {
///     const NAME: &'static str = "reserve";
///     type Aggregate = Stock;
///     type Rejection = ReserveRejected;
///     fn decide(&self, stock: &Stock) -> Result<Vec<StockEvent>, ReserveRejected> {
///         if stock.available == 0 {
///             return Err(ReserveRejected::OutOfStock);
///         }
///         Ok(vec![Reserved { order: self.order.clone() }.into()])
///     }
/// }
/// ```
pub trait Command: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The command's name, unique among the commands of one [`Commands`] router.
    const NAME: &'static str;
    /// The aggregate it runs on.
    type Aggregate: Aggregate;
    /// Why the aggregate refuses it; it comes back to the process manager as a [`Rejected`].
    type Rejection: Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static;

    /// Decides the events, or refuses.
    fn decide(
        &self,
        state: &Self::Aggregate,
    ) -> Result<Vec<<Self::Aggregate as Aggregate>::Event>, Self::Rejection>;
}

/// A command stored with an instance, waiting to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutgoingCommand {
    /// [`Command::NAME`].
    pub(crate) name: String,
    pub(crate) aggregate_id: String,
    pub(crate) payload: serde_json::Value,
}

/// A command its aggregate refused, before it is matched to a `#[rejected]` handler by its
/// command type ([`Rejection::command`], [`Rejected::from_rejection`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The command's [`Command::NAME`].
    pub command: String,
    /// The aggregate it was sent to.
    pub aggregate_id: String,
    /// The command id it ran with.
    pub command_id: String,
    pub(crate) payload: serde_json::Value,
    pub(crate) reason: serde_json::Value,
}

impl Rejection {
    /// The typed rejection, when it is one of command `C`'s; `None` for another command, or
    /// when the stored command or reason no longer deserializes as `C`'s.
    pub fn typed<C: Command>(&self) -> Option<Rejected<C>> {
        if self.command != C::NAME {
            return None;
        }
        Some(Rejected {
            command: serde_json::from_value(self.payload.clone()).ok()?,
            reason: serde_json::from_value(self.reason.clone()).ok()?,
            aggregate_id: self.aggregate_id.clone(),
            command_id: self.command_id.clone(),
        })
    }
}

/// A command of type `C` that its aggregate refused: what a `#[rejected]` handler takes.
#[derive(Debug)]
#[non_exhaustive]
pub struct Rejected<C: Command> {
    /// The command as it was sent.
    pub command: C,
    /// Why the aggregate refused it.
    pub reason: C::Rejection,
    /// The aggregate it was sent to.
    pub aggregate_id: String,
    /// The command id it ran with.
    pub command_id: String,
}

impl<C: Command> Rejected<C> {
    /// Same as [`Rejection::typed`].
    pub fn from_rejection(rejection: &Rejection) -> Option<Self> {
        rejection.typed()
    }
}

/// How one command ran.
#[derive(Debug)]
pub(crate) enum CommandOutcome {
    Applied,
    Rejected(serde_json::Value),
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandFailure {
    /// No [`Commands::route`] for its name: fixed by deploying a router that has one.
    #[error("no route for command {0:?}")]
    NoRoute(String),
    /// The stored command or its rejection does not (de)serialize as its type.
    #[error("command {name:?} does not fit its type")]
    Payload {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// Loading or appending failed.
    #[error("command {name:?} on {aggregate_id:?} failed")]
    Repository {
        name: String,
        aggregate_id: String,
        #[source]
        source: crate::RepositoryError,
    },
}

impl CommandFailure {
    /// Whether trying again later can succeed: the store may come back; a missing route or a
    /// payload that does not fit stays so until an operator changes the deployment.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            CommandFailure::NoRoute(_) | CommandFailure::Payload { .. } => false,
            CommandFailure::Repository { source, .. } => {
                use crate::{RepositoryError, StoreError};
                // An aggregate id or event that no store takes, or history that does not
                // replay, stays so.
                !matches!(
                    source,
                    RepositoryError::InvalidId(_)
                        | RepositoryError::Decode { .. }
                        | RepositoryError::Encode(_)
                        | RepositoryError::Store(StoreError::InvalidInput(_))
                )
            }
        }
    }
}

type Route = Arc<
    dyn Fn(
            OutgoingCommand,
            CommandMetadata,
        ) -> BoxFuture<'static, Result<CommandOutcome, CommandFailure>>
        + Send
        + Sync,
>;

/// Where a process manager's commands run: one [`Repository`] per command type.
///
/// ```
/// # use jetsource::process_manager::{Command, Commands};
/// # use jetsource::{Aggregate, Apply, Event, EventSet, InMemoryStore, Repository};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize)]
/// # #[event(name = "reserved", version = 1)]
/// # struct Reserved {}
/// # #[derive(EventSet)]
/// # enum StockEvent { Reserved(Reserved) }
/// # #[derive(Aggregate, Default)]
/// # #[aggregate(name = "stock", events = StockEvent)]
/// # struct Stock {}
/// # impl Apply<Reserved> for Stock { fn apply(&mut self, _: Reserved) {} }
/// # #[derive(Serialize, Deserialize)]
/// # struct Reserve {}
/// # impl Command for Reserve {
/// #     const NAME: &'static str = "reserve";
/// #     type Aggregate = Stock;
/// #     type Rejection = ();
/// #     fn decide(&self, _: &Stock) -> Result<Vec<StockEvent>, ()> { Ok(vec![Reserved {}.into()]) }
/// # }
/// let stock = Repository::<Stock, _>::new(InMemoryStore::new());
/// let commands = Commands::new().route::<Reserve, _>(stock);
/// assert!(commands.routes("reserve"));
/// ```
#[derive(Clone, Default)]
pub struct Commands {
    routes: BTreeMap<&'static str, Route>,
}

impl fmt::Debug for Commands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.routes.keys()).finish()
    }
}

impl Commands {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs commands of type `C` on `repository`. A second route for the same
    /// [`Command::NAME`] replaces the first.
    pub fn route<C, S>(mut self, repository: Repository<C::Aggregate, S>) -> Self
    where
        C: Command,
        S: EventStore + Clone,
    {
        let route: Route = Arc::new(move |command: OutgoingCommand, metadata| {
            let repository = repository.clone();
            Box::pin(async move {
                let payload = |source| CommandFailure::Payload {
                    name: C::NAME.to_owned(),
                    source,
                };
                let decoded: C = serde_json::from_value(command.payload).map_err(payload)?;
                let outcome = repository
                    .execute_with(&command.aggregate_id, metadata, |state| {
                        decoded.decide(state)
                    })
                    .await;
                match outcome {
                    Ok(_) => Ok(CommandOutcome::Applied),
                    Err(ExecuteError::Rejected(reason)) => Ok(CommandOutcome::Rejected(
                        serde_json::to_value(reason).map_err(payload)?,
                    )),
                    Err(ExecuteError::Repository(source)) => Err(CommandFailure::Repository {
                        name: C::NAME.to_owned(),
                        aggregate_id: command.aggregate_id,
                        source,
                    }),
                }
            })
        });
        self.routes.insert(C::NAME, route);
        self
    }

    /// Whether commands named `name` have a route.
    pub fn routes(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    pub(crate) async fn run(
        &self,
        command: OutgoingCommand,
        metadata: CommandMetadata,
    ) -> Result<CommandOutcome, CommandFailure> {
        let Some(route) = self.routes.get(command.name.as_str()) else {
            return Err(CommandFailure::NoRoute(command.name));
        };
        route(command, metadata).await
    }
}
