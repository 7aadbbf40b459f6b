//! One module per command; [`run`] connects (when the command needs a server) and dispatches.

mod dead_letters;
mod events;
mod stream_config;
mod streams;
mod tail;

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream;

use crate::args::{Cli, Command, DeadLettersCommand, StreamConfigCommand};
use crate::connect;
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
    let options = connect::options(&cli.connection)?;
    let session = Session {
        client: connect::connect(&options).await?,
        request_timeout: options.request_timeout,
    };
    let result = dispatch(&session, cli.command, types.as_ref(), &mut out).await;
    out.flush()?;
    result
}

/// The checks of names and filters given on the command line, before connecting: a typo gets
/// a message that names it, without waiting for a server.
fn check_arguments(command: &Command) -> Result<(), CliError> {
    let prefix = match command {
        Command::Events(args) => {
            check_aggregate("type", &args.aggregate_type)?;
            check_aggregate("id", &args.aggregate_id)?;
            args.stream.prefix.as_deref()
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
        Command::Streams | Command::StreamConfig(_) => None,
    };
    prefix.map_or(Ok(()), check_prefix)
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
    }
}
