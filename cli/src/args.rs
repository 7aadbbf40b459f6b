//! The command line: global connection flags and one subcommand per operation.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use jetsource::subscriber::DeadLetterReason;
use jetsource::{JetStreamStorage, StreamConfig};

use crate::protobuf::MessageMapping;

/// Operate jetsource event stores on NATS JetStream and PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "jetsource", version, propagate_version = true)]
#[command(
    after_help = "Connection flags work before or after the command; NATS_URL, NATS_USER, \
                  NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY, NATS_CA, NATS_CERT and \
                  NATS_KEY set them from the environment. With --database (or \
                  JETSOURCE_DATABASE_URL), `events` reads a PostgreSQL event store instead of a \
                  stream, and `relay-status` shows its relays."
)]
pub struct Cli {
    /// How to reach the server.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// How to reach a PostgreSQL event store.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach and authenticate to the NATS server.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// NATS server URL; several, comma-separated, to fail over between cluster members.
    #[arg(
        long,
        short = 's',
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        global = true
    )]
    pub server: String,
    /// User name (with --password).
    #[arg(long, env = "NATS_USER", global = true)]
    pub user: Option<String>,
    /// Password (with --user); prefer NATS_PASSWORD, which other users cannot see in `ps`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Authentication token; prefer NATS_TOKEN, which other users cannot see in `ps`.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`), for a server that knows the user by its public
    /// nkey.
    #[arg(long, value_name = "FILE", env = "NATS_NKEY", global = true)]
    pub nkey: Option<PathBuf>,
    /// A CA certificate (PEM) to verify the server with; turns TLS on.
    #[arg(long, value_name = "FILE", env = "NATS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS (with --tls-key).
    #[arg(long, value_name = "FILE", env = "NATS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "NATS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Require TLS, also without --tls-ca (the system's roots verify the server).
    #[arg(long, global = true)]
    pub tls: bool,
    /// How long connecting, and then each request, may take (e.g. 500ms, 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
}

impl ConnectionArgs {
    /// The values that must never be printed: password, token, nkey seed, and any password
    /// inside a server URL (`nats://user:password@host`).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .password
            .iter()
            .chain(self.token.iter())
            .cloned()
            .collect();
        secrets.extend(
            self.nkey
                .as_deref()
                .and_then(|path| crate::connect::read_seed(path).ok()),
        );
        for url in self.server.split(',') {
            if let Some(userinfo) = url.split_once("://").and_then(|(_, rest)| {
                rest.split_once('@')
                    .map(|(userinfo, _)| userinfo.to_owned())
            }) {
                // `user:password` or a bare token; the whole userinfo is secret enough.
                secrets.extend(userinfo.split_once(':').map(|(_, pw)| pw.to_owned()));
                secrets.push(userinfo);
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

/// How to reach a PostgreSQL event store (`jetsource::PgStore`'s tables).
#[derive(Debug, Args)]
#[command(next_help_heading = "PostgreSQL")]
pub struct DatabaseArgs {
    /// PostgreSQL URL of a jetsource event store, e.g. postgres://ops@db:5432/bank: `events`
    /// reads its tables instead of a stream, and `relay-status` reads its relays. Prefer
    /// JETSOURCE_DATABASE_URL or PGPASSWORD for a password, which other users cannot see in
    /// `ps`.
    #[arg(
        long,
        value_name = "URL",
        env = "JETSOURCE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database: Option<String>,
    /// The schema of the store's tables, exactly as named (it becomes the connection's
    /// search_path); by default the database's search_path decides (usually `public`).
    #[arg(
        long,
        value_name = "NAME",
        env = "JETSOURCE_DATABASE_SCHEMA",
        global = true
    )]
    pub schema: Option<String>,
    /// Whether --database was set by JETSOURCE_DATABASE_URL rather than on the command line
    /// ([`Cli::from_command_line`] sets it): only a flag given on the command line conflicts
    /// with `events --stream`.
    #[arg(skip)]
    pub database_from_env: bool,
}

impl DatabaseArgs {
    /// The password in the database URL, as written and percent-decoded: never printed.
    pub fn secrets(&self) -> Vec<String> {
        self.database
            .as_deref()
            .map(crate::database::url_secrets)
            .unwrap_or_default()
    }
}

impl Cli {
    /// The command line of this process, parsed (clap exits on an error or `--help`), with
    /// [`DatabaseArgs::database_from_env`] set.
    pub fn from_command_line() -> Self {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.database.database_from_env =
            matches.value_source("database") == Some(ValueSource::EnvVariable);
        cli
    }
}

/// One operation.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List streams and, per stream, its consumers with their lag and unacknowledged messages.
    Streams,
    /// Print one aggregate's events in order, with their decoded metadata and payloads.
    ///
    /// From the JetStream stream --stream, or, without --stream, from the PostgreSQL event store
    /// --database (JETSOURCE_DATABASE_URL), in the schema --schema. Both print the same.
    Events(EventsArgs),
    /// Follow a stream: print each new message as it is stored.
    Tail(TailArgs),
    /// List or redrive the dead letters of a subscriber.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Show or create the stream configuration jetsource uses for a bounded context.
    #[command(subcommand)]
    StreamConfig(StreamConfigCommand),
    /// Show how far the relays of a PostgreSQL event store are: published, unpublished, lag.
    ///
    /// Reads the store at --database (JETSOURCE_DATABASE_URL), schema --schema. Per relay:
    /// the events it published, the committed events it has not published yet, how long the
    /// oldest of those has waited (its lag), and when the relay last recorded progress. Without
    /// any relay checkpoint yet, every event is unpublished.
    RelayStatus(RelayStatusArgs),
    /// Quarantine one event of an aggregate, so that replay leaves it out from then on.
    ///
    /// For an event that no longer decodes, which makes every load of its aggregate fail
    /// (`cannot replay <type>/<id> at sequence N`). Appends a `$quarantine` record that names
    /// the event and says who quarantined it (--by) and why (--reason) to the same aggregate:
    /// the aggregate then loads and takes commands without the event. Nothing is deleted:
    /// `events` still shows the event, and the record after it. Quarantining an event again
    /// changes nothing. Writes to the JetStream stream --stream, or, without --stream, to the
    /// PostgreSQL event store --database (JETSOURCE_DATABASE_URL).
    Quarantine(QuarantineArgs),
}

/// Which jetsource event stream, identified by name; the prefix is read from the stream.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// The event stream's name.
    #[arg(long)]
    pub stream: String,
    /// The stream's subject prefix; by default the `<prefix>` of its one `<prefix>.>` subject.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// Which aggregate, in which store: the stream --stream, or without it the PostgreSQL event
/// store of --database (`events`, `quarantine`).
#[derive(Debug, Args)]
pub struct AggregateArgs {
    /// The event stream; without it, the PostgreSQL event store of --database.
    // Each command words this help itself (`mut_arg`): one reads the stream, one writes to it.
    #[arg(long)]
    pub stream: Option<String>,
    /// The stream's subject prefix (with --stream); by default the `<prefix>` of its one
    /// `<prefix>.>` subject.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The aggregate type name (`Aggregate::TYPE`, e.g. `account`).
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
}

/// `quarantine`: one event of one aggregate, and the audit trail.
#[derive(Debug, Args)]
#[command(mut_arg("stream", |arg| arg.help(
    "The event stream to write to; without it, the PostgreSQL event store of --database"
)))]
pub struct QuarantineArgs {
    /// The aggregate and its store.
    #[command(flatten)]
    pub aggregate: AggregateArgs,
    /// The event's sequence in the aggregate: the N of `version N:` in the `events` listing.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub sequence: u64,
    /// The event's name, as `events` lists it: nothing is quarantined unless the event at
    /// that sequence has this name.
    pub event_name: String,
    /// Also require the event to have this id (`event id:` in the `events` listing).
    #[arg(long, value_name = "UUID")]
    pub event_id: Option<uuid::Uuid>,
    /// Who quarantines the event, kept in the record (e.g. an email address).
    #[arg(long)]
    pub by: String,
    /// Why, kept in the record (e.g. an incident number).
    #[arg(long)]
    pub reason: String,
}

/// `events`: one aggregate's history.
#[derive(Debug, Args)]
#[command(mut_arg("stream", |arg| arg.help(
    "The event stream to read; without it, the PostgreSQL event store of --database"
)))]
pub struct EventsArgs {
    /// The aggregate and its store.
    #[command(flatten)]
    pub aggregate: AggregateArgs,
    /// Start at this aggregate version.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub from_version: u64,
    /// How Protobuf payloads are decoded.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// How Protobuf payloads are decoded (`events`, `tail` and `dead-letters list`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Protobuf decoding")]
pub struct DecodeArgs {
    /// A serialized google.protobuf.FileDescriptorSet (`protoc --include_imports
    /// --descriptor_set_out=FILE`, `buf build -o FILE`): Protobuf payloads whose message type it
    /// holds are printed as JSON. Without it they are printed as hex bytes.
    #[arg(long, value_name = "FILE", env = "JETSOURCE_DESCRIPTOR_SET")]
    pub descriptor_set: Option<PathBuf>,
    /// Decode event EVENT's payloads as message type MESSAGE (full name, e.g.
    /// `order_placed=shop.OrderPlaced`); `EVENT@VERSION=MESSAGE` for one schema version only.
    /// Repeatable. Unmapped events use the one message type whose name in snake_case is the
    /// event name (`shop.OrderPlaced` for `order_placed`).
    #[arg(
        long = "message",
        value_name = "EVENT=MESSAGE",
        requires = "descriptor_set",
        value_parser = clap::value_parser!(MessageMapping)
    )]
    pub messages: Vec<MessageMapping>,
}

/// `relay-status`: the relays of a PostgreSQL event store.
#[derive(Debug, Args)]
pub struct RelayStatusArgs {
    /// Only this relay (its name in `jetsource_relays`); by default every relay.
    pub relay: Option<String>,
    /// For monitoring: after printing, fail (exit 1) when a relay's oldest unpublished event has
    /// waited longer than this (e.g. `30s`).
    #[arg(long, value_parser = parse_duration)]
    pub max_lag: Option<Duration>,
}

/// `tail`: follow new messages.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The stream to follow.
    #[arg(long)]
    pub stream: String,
    /// Only messages on these subjects (NATS wildcards `*` and `>` allowed), e.g.
    /// `bank.account.*.deposited`.
    #[arg(long)]
    pub subject: Option<String>,
    /// Stop after this many messages (default: follow until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// How Protobuf payloads are decoded.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// `dead-letters ...`.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List a subscriber's dead letters, oldest first, with why each was given up and the
    /// event (decoded metadata and payload).
    List(ListArgs),
    /// Hand a subscriber's dead letters back to it (all, or those matching the filters); the
    /// running subscriber handles them again.
    Redrive(RedriveArgs),
}

/// Whose dead letters.
#[derive(Debug, Args)]
pub struct DeadLetterTarget {
    /// The event stream the subscriber consumes.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The subscriber's durable name.
    #[arg(long)]
    pub durable: String,
}

/// `dead-letters list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Whose dead letters.
    #[command(flatten)]
    pub target: DeadLetterTarget,
    /// How Protobuf payloads are decoded.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// `dead-letters redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// Whose dead letters.
    #[command(flatten)]
    pub target: DeadLetterTarget,
    /// Only dead letters given up for this reason: permanent, max_deliver, undecodable,
    /// unknown_event, future_version or corrupt.
    #[arg(long, value_parser = parse_reason)]
    pub reason: Option<DeadLetterReason>,
    /// Only dead letters whose original subject matches this filter (NATS wildcards `*` and
    /// `>`), e.g. `bank.account.acc-1.*`. With --reason, both must match.
    #[arg(long)]
    pub subject_filter: Option<String>,
}

/// `stream-config ...`.
#[derive(Debug, Subcommand)]
pub enum StreamConfigCommand {
    /// Print, as JSON, the stream configuration the runtime would create (no server needed).
    Show(StreamSettings),
    /// Create the stream and its snapshot bucket as the runtime would, then print the
    /// configuration the server holds. An existing stream that matches is left as it is.
    Create(CreateArgs),
}

/// `stream-config create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The configuration.
    #[command(flatten)]
    pub settings: StreamSettings,
    /// Update an existing stream whose settings differ, instead of failing.
    #[arg(long)]
    pub update_existing: bool,
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    /// On disk: survives server restarts.
    File,
    /// In memory: lost when the server stops.
    Memory,
}

/// The settings of [`StreamConfig`], as flags; unset ones keep the runtime's defaults.
#[derive(Debug, Args)]
pub struct StreamSettings {
    /// The stream name (A-Z a-z 0-9 _ -).
    #[arg(long)]
    pub name: String,
    /// The subject prefix; events go to `<prefix>.<aggregate_type>.<aggregate_id>.<event>`.
    #[arg(long)]
    pub prefix: String,
    /// File or memory storage.
    #[arg(long, value_enum, default_value_t = StorageArg::File)]
    pub storage: StorageArg,
    /// Replicas: 1 on a single server, 3 or 5 in a cluster.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Drop events older than this (e.g. 30d); unlimited by default.
    #[arg(long, value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Drop the oldest events beyond this many bytes; unlimited by default.
    #[arg(long)]
    pub max_bytes: Option<i64>,
    /// Refuse messages larger than this many bytes; the server's limit by default.
    #[arg(long)]
    pub max_message_size: Option<i32>,
    /// How long the server remembers command ids to drop repeats (e.g. 2m).
    #[arg(long, value_parser = parse_duration)]
    pub duplicate_window: Option<Duration>,
    /// The key-value bucket for snapshots; `<name>_SNAPSHOTS` by default.
    #[arg(long)]
    pub snapshot_bucket: Option<String>,
}

impl StreamSettings {
    /// The runtime's configuration with these settings (not validated yet).
    pub fn to_config(&self) -> StreamConfig {
        let mut config = StreamConfig::new(&self.name, &self.prefix)
            .storage(match self.storage {
                StorageArg::File => JetStreamStorage::File,
                StorageArg::Memory => JetStreamStorage::Memory,
            })
            .replicas(self.replicas);
        if let Some(max_age) = self.max_age {
            config = config.max_age(max_age);
        }
        if let Some(max_bytes) = self.max_bytes {
            config = config.max_bytes(max_bytes);
        }
        if let Some(size) = self.max_message_size {
            config = config.max_message_size(size);
        }
        if let Some(window) = self.duplicate_window {
            config = config.duplicate_window(window);
        }
        if let Some(bucket) = &self.snapshot_bucket {
            config = config.snapshot_bucket(bucket);
        }
        config
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 30s, 2m, 7d)"))
}

fn parse_reason(text: &str) -> Result<DeadLetterReason, String> {
    DeadLetterReason::parse(text).ok_or_else(|| {
        "expected one of permanent, max_deliver, undecodable, unknown_event, future_version, \
         corrupt"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_include_passwords_tokens_and_url_userinfo() {
        let cli = Cli::parse_from([
            "jetsource",
            "--server",
            "nats://ops:hunter2@10.0.0.1:4222,nats://10.0.0.2:4222",
            "--user",
            "ops",
            "--password",
            "pw1",
            "streams",
        ]);
        let secrets = cli.connection.secrets();
        assert!(secrets.contains(&"pw1".to_owned()));
        assert!(secrets.contains(&"hunter2".to_owned()));
        assert!(secrets.contains(&"ops:hunter2".to_owned()));
    }

    #[test]
    fn stream_settings_map_to_the_runtime_config() {
        let cli = Cli::parse_from([
            "jetsource",
            "stream-config",
            "show",
            "--name",
            "ORDERS",
            "--prefix",
            "orders",
            "--storage",
            "memory",
            "--replicas",
            "3",
            "--duplicate-window",
            "30s",
        ]);
        let Command::StreamConfig(StreamConfigCommand::Show(settings)) = cli.command else {
            panic!("parsed another command: {:?}", cli.command);
        };
        let expected = StreamConfig::new("ORDERS", "orders")
            .storage(JetStreamStorage::Memory)
            .replicas(3)
            .duplicate_window(Duration::from_secs(30));
        assert_eq!(settings.to_config(), expected);
    }

    #[test]
    fn unknown_reasons_are_refused_with_the_valid_ones() {
        let err = parse_reason("oops").unwrap_err();
        assert!(err.contains("max_deliver"), "{err}");
        assert_eq!(
            parse_reason("max_deliver"),
            Ok(DeadLetterReason::MaxDeliver)
        );
    }
}
