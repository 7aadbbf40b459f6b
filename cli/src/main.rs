//! `jetsource`: the operations CLI for jetsource event stores on NATS JetStream.
//!
//! Lists streams and consumers with their lag, prints one aggregate's events with decoded
//! metadata (from a stream or a PostgreSQL event store), follows a stream, lists and redrives
//! dead letters, shows or creates the stream configuration the runtime would create, and shows
//! how far the relays of a PostgreSQL event store are. Run `jetsource --help` for the commands.

mod args;
mod commands;
mod connect;
mod database;
mod error;
mod protobuf;
mod render;
mod store;
mod subject;

use std::io::ErrorKind;
use std::process::ExitCode;

use crate::args::Cli;
use crate::error::{redact, CliError};

fn main() -> ExitCode {
    let cli = Cli::from_command_line();
    // Collected before the command runs: whatever an error says, these never reach the terminal.
    let mut secrets = cli.connection.secrets();
    secrets.extend(cli.database.secrets());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `jetsource events ... | head` closes the pipe early: that is the reader's choice,
        // not a failure.
        Err(CliError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", redact(&e.to_string(), &secrets));
            ExitCode::FAILURE
        }
    }
}
