//! One module per command; [`run`] connects (to the NATS server, or to PostgreSQL for
//! `relay-status` and `events --database`) and dispatches.

mod dead_letters;
mod events;
mod quarantine;
mod relay_status;
mod stream_config;
mod streams;
mod tail;

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;

use jetsource::AggregateKey;

use crate::args::{
    AggregateArgs, Cli, Command, DatabaseArgs, DeadLettersCommand, EventsArgs, QuarantineArgs,
    StreamArgs, StreamConfigCommand,
};
use crate::connect;
use crate::database::{self, Database};
use crate::error::{check_aggregate, check_prefix, CliError};
use crate::protobuf::ProtobufTypes;
use crate::subject::SubjectFilter;

/// What every command that talks to the server gets.
pub struct Session {
    /// The connected client.
    pub client: async_nats::Client,
    /// How long one request may take.
    pub request_timeout: Duration,
}

impl Session {
    /// A JetStream context with the request timeout.
    pub fn jetstream(&self) -> jetstream::Context {
        let mut js = jetstream::new(self.client.clone());
        js.set_timeout(self.request_timeout);
        js
    }
}

/// Runs the command, writing its report to standard output.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    // Showing a configuration needs no server: it is what the runtime would create.
    if let Command::StreamConfig(StreamConfigCommand::Show(settings)) = &cli.command {
        return stream_config::show(settings, &mut out);
    }
    // Before connecting, so that an unusable descriptor set fails at once.
    let types = match &cli.command {
        Command::Events(args) => ProtobufTypes::load(&args.decode)?,
        Command::Tail(args) => ProtobufTypes::load(&args.decode)?,
        Command::DeadLetters(DeadLettersCommand::List(args)) => ProtobufTypes::load(&args.decode)?,
        _ => None,
    };
    check_arguments(&cli.command)?;
    let result = match reads_database(&cli.command, &cli.database)? {
        Some(command_name) => {
            let database =
                database::connect(&cli.database, command_name, cli.connection.timeout).await?;
            dispatch_database(&database, cli.command, types.as_ref(), &mut out).await
        }
        None => {
            let options = connect::options(&cli.connection)?;
            let session = Session {
                client: connect::connect(&options).await?,
                request_timeout: options.request_timeout,
            };
            dispatch(&session, cli.command, types.as_ref(), &mut out).await
        }
    };
    out.flush()?;
    result
}

/// Whether `command` reads a PostgreSQL event store rather than the NATS server: its name if
/// so. `relay-status` always does; `events` without --stream does (and needs --database).
fn reads_database(
    command: &Command,
    database: &DatabaseArgs,
) -> Result<Option<&'static str>, CliError> {
    match command {
        Command::RelayStatus(_) => Ok(Some("relay-status")),
        Command::Events(args) => {
            let source = Source::of("events", ["read", "reads"], &args.aggregate);
            Ok(source.is_database(database)?.then_some("events"))
        }
        Command::Quarantine(args) => {
            let source = Source::of("quarantine", ["write to", "writes to"], &args.aggregate);
            Ok(source.is_database(database)?.then_some("quarantine"))
        }
        _ => Ok(None),
    }
}

/// The store flags of a command that works on a stream or a PostgreSQL event store.
struct Source<'a> {
    command: &'static str,
    /// `read` or `write to`, and as in "it reads".
    verb: [&'static str; 2],
    stream: &'a Option<String>,
    prefix: &'a Option<String>,
}

impl<'a> Source<'a> {
    fn of(command: &'static str, verb: [&'static str; 2], aggregate: &'a AggregateArgs) -> Self {
        Source {
            command,
            verb,
            stream: &aggregate.stream,
            prefix: &aggregate.prefix,
        }
    }

    /// Whether the command uses PostgreSQL (`true`) or a stream (`false`): --stream chooses
    /// the stream, also when JETSOURCE_DATABASE_URL is set, but --database given on the
    /// command line beside it is a contradiction.
    fn is_database(&self, database: &DatabaseArgs) -> Result<bool, CliError> {
        let (command, [verb, verbs]) = (self.command, self.verb);
        let usage = |text: String| Err(CliError::Arguments(text));
        match (self.stream, &database.database) {
            (Some(_), Some(_)) if !database.database_from_env => usage(format!(
                "{command} {verbs} one store: give --stream (a JetStream stream) or --database \
                 (a PostgreSQL event store), not both"
            )),
            (Some(_), _) => Ok(false),
            (None, _) if self.prefix.is_some() => {
                usage("--prefix is the subject prefix of --stream: give --stream too".to_owned())
            }
            (None, Some(_)) => Ok(true),
            (None, None) => usage(format!(
                "{command} needs --stream <STREAM> to {verb} a JetStream stream, or --database \
                 <URL> (or JETSOURCE_DATABASE_URL) to {verb} a PostgreSQL event store"
            )),
        }
    }
}

/// Runs a command that [`reads_database`] on `database`.
async fn dispatch_database(
    database: &Database,
    command: Command,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        Command::Events(args) => events::from_database(database, &args, types, out).await,
        Command::RelayStatus(args) => relay_status::run(database, &args, out).await,
        Command::Quarantine(args) => quarantine::from_database(database, &args, out).await,
        // `reads_database` sends no other command here.
        _ => Err(CliError::Arguments(
            "only events, quarantine and relay-status use a PostgreSQL event store".into(),
        )),
    }
}

/// The checks of names and filters given on the command line, before connecting: a typo gets
/// a message that names it, without waiting for a server.
fn check_arguments(command: &Command) -> Result<(), CliError> {
    let prefix = match command {
        Command::Events(EventsArgs { aggregate, .. })
        | Command::Quarantine(QuarantineArgs { aggregate, .. }) => {
            check_aggregate("type", &aggregate.aggregate_type)?;
            check_aggregate("id", &aggregate.aggregate_id)?;
            aggregate.prefix.as_deref()
        }
        Command::DeadLetters(DeadLettersCommand::List(args)) => {
            args.target.stream.prefix.as_deref()
        }
        Command::DeadLetters(DeadLettersCommand::Redrive(args)) => {
            if let Some(filter) = &args.subject_filter {
                SubjectFilter::parse(filter)?;
            }
            args.target.stream.prefix.as_deref()
        }
        Command::Tail(args) => {
            if let Some(subject) = &args.subject {
                SubjectFilter::parse(subject)?;
            }
            None
        }
        Command::Streams | Command::StreamConfig(_) | Command::RelayStatus(_) => None,
    };
    prefix.map_or(Ok(()), check_prefix)
}

/// The aggregate's key.
fn key(aggregate: &AggregateArgs) -> Result<AggregateKey, CliError> {
    // Checked before connecting too (`check_arguments`); here the id is made.
    let id = check_aggregate("id", &aggregate.aggregate_id)?;
    // `AggregateKey` takes the type as `&'static str` (in code it is a compile-time name).
    // This process works on one aggregate and exits, so leaking this one string costs nothing.
    let aggregate_type: &'static str = Box::leak(aggregate.aggregate_type.clone().into_boxed_str());
    Ok(AggregateKey::new(aggregate_type, id))
}

/// The stream flags of a command that [`reads_database`] found to work on a stream.
fn stream_args(aggregate: &AggregateArgs) -> StreamArgs {
    StreamArgs {
        stream: aggregate.stream.clone().unwrap_or_default(),
        prefix: aggregate.prefix.clone(),
    }
}

async fn dispatch(
    session: &Session,
    command: Command,
    types: Option<&ProtobufTypes>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match command {
        Command::Streams => streams::run(session, out).await,
        Command::Events(args) => events::run(session, &args, types, out).await,
        Command::Tail(args) => tail::run(session, &args, types, out).await,
        Command::DeadLetters(DeadLettersCommand::List(args)) => {
            dead_letters::list(session, &args, types, out).await
        }
        Command::DeadLetters(DeadLettersCommand::Redrive(args)) => {
            dead_letters::redrive(session, &args, out).await
        }
        Command::StreamConfig(StreamConfigCommand::Show(settings)) => {
            stream_config::show(&settings, out)
        }
        Command::StreamConfig(StreamConfigCommand::Create(args)) => {
            stream_config::create(session, &args, out).await
        }
        Command::Quarantine(args) => quarantine::run(session, &args, out).await,
        // `reads_database` sends it to `dispatch_database`.
        Command::RelayStatus(_) => Err(CliError::Arguments(
            "relay-status reads a PostgreSQL event store: give --database <URL>".into(),
        )),
    }
}
