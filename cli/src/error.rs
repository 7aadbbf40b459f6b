//! What can go wrong, phrased for the person at the terminal.

use jetsource::{AggregateId, ErrorChain, InvalidId, JetStreamError, MAX_ID_BYTES};

/// A failed command. Each message is one line that says what failed and, where it helps, what
/// to do; [`redact`] removes secrets before it is printed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A server URL does not parse.
    #[error("invalid server URL {url}: {reason}")]
    InvalidServerUrl {
        /// The URL, without credentials.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No server could be reached.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The server URLs, without credentials.
        servers: String,
        /// What the client said.
        reason: String,
    },
    /// The connection flags combine credentials that do not go together.
    #[error("{0}")]
    Credentials(&'static str),
    /// Flags that do not go together, or a flag a command needs is missing.
    #[error("{0}")]
    Arguments(String),
    /// The database URL does not parse.
    #[error("invalid database URL {url}: {reason}")]
    InvalidDatabaseUrl {
        /// The URL, without its password.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// PostgreSQL could not be reached, or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    DatabaseConnect {
        /// The database's address, without the password.
        url: String,
        /// What the client or server said.
        reason: String,
    },
    /// The database answers, but the schema holds no jetsource event store.
    #[error("no jetsource event store at {url}: {problem}")]
    NoEventStore {
        /// The database's address, without the password.
        url: String,
        /// What is missing.
        problem: String,
    },
    /// `relay-status <name>` names a relay without a checkpoint row.
    #[error("no relay named {name:?} has a checkpoint in {place} ({known})")]
    RelayNotFound {
        /// The name given.
        name: String,
        /// Where the store is, e.g. `PostgreSQL schema public`.
        place: String,
        /// The relays there are, e.g. `relays: audit, orders`.
        known: String,
    },
    /// `relay-status --max-lag`: a relay lags more than allowed.
    #[error("relay {name} lags {lag} behind in {place}, more than --max-lag {max}")]
    RelayLags {
        /// The relay, or `(none yet)` when no relay has started.
        name: String,
        /// Where the store is.
        place: String,
        /// How long its oldest unpublished event has waited.
        lag: String,
        /// The limit given.
        max: String,
    },
    /// The server refused the credentials.
    #[error("the NATS server at {servers} refused the {method}: authorization failed")]
    Auth {
        /// The server URLs, without credentials.
        servers: String,
        /// Which credentials, e.g. `password of user "ops"` (never the secret itself).
        method: String,
    },
    /// The `.creds` file or the nkey seed file could not be read.
    #[error("cannot read the {what} {path}: {reason}")]
    CredsFile {
        /// `creds file` or `nkey seed file`.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The server has no stream of that name.
    #[error("stream {0} does not exist on the server (`jetsource streams` lists them)")]
    StreamNotFound(String),
    /// The stream exists but is not laid out as jetsource lays out event streams.
    #[error("stream {stream} is not a jetsource event stream: {problem}")]
    NotJetsourceStream {
        /// The stream.
        stream: String,
        /// What does not fit.
        problem: String,
    },
    /// The stream settings given are invalid.
    #[error("invalid stream configuration: {0}")]
    InvalidStreamConfig(String),
    /// `stream-config create` found the stream with other settings.
    #[error(
        "stream {stream} exists with {field} = {existing}, but the configuration asks for \
         {wanted}; nothing was changed (pass --update-existing to change the stream)"
    )]
    ConfigConflict {
        /// The stream.
        stream: String,
        /// The differing setting.
        field: String,
        /// Its value on the server.
        existing: String,
        /// The value asked for.
        wanted: String,
    },
    /// An aggregate type or id cannot be a subject token.
    #[error("invalid aggregate {what} {value:?}: {reason}")]
    InvalidAggregate {
        /// `type` or `id`.
        what: &'static str,
        /// The value given (cut to 64 characters).
        value: String,
        /// Why.
        reason: String,
    },
    /// A subject prefix (`--prefix`) is not one or more subject tokens.
    #[error("invalid subject prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// Why.
        reason: String,
    },
    /// A subject filter is malformed.
    #[error("invalid subject filter {filter:?}: {reason}")]
    InvalidSubjectFilter {
        /// The filter.
        filter: String,
        /// Why.
        reason: &'static str,
    },
    /// The `--descriptor-set` file cannot be used, or a `--message` names no type in it.
    #[error("descriptor set {path}: {reason}")]
    DescriptorSet {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Two `--message` flags map the same event (and version) to different types.
    #[error("--message {first} and --message {second} map the same event to different types")]
    ConflictingMessageMappings {
        /// The first mapping.
        first: String,
        /// The second.
        second: String,
    },
    /// `quarantine` names an aggregate without events.
    #[error("no events for {aggregate} in {place}: nothing to quarantine (check the type and id)")]
    UnknownAggregate {
        /// The aggregate, `type/id`.
        aggregate: String,
        /// Where the store is, e.g. `stream BANK`.
        place: String,
    },
    /// `quarantine` names a sequence the aggregate does not have.
    #[error(
        "{aggregate} in {place} has no event {sequence}: its last is {version} (`jetsource \
         events` lists them)"
    )]
    NoSuchEvent {
        /// The aggregate.
        aggregate: String,
        /// Where the store is.
        place: String,
        /// The sequence given.
        sequence: u64,
        /// The aggregate's last sequence.
        version: u64,
    },
    /// The event at the sequence `quarantine` names is not the one described.
    #[error(
        "event {sequence} of {aggregate} {what} {found}, not {expected}; nothing was quarantined"
    )]
    EventMismatch {
        /// The aggregate.
        aggregate: String,
        /// The sequence given.
        sequence: u64,
        /// `is` (the name) or `has id`.
        what: &'static str,
        /// What was given.
        expected: String,
        /// What is stored.
        found: String,
    },
    /// `quarantine` names a quarantine record.
    #[error(
        "event {sequence} of {aggregate} is a quarantine record, which replay leaves out \
         already; nothing was quarantined"
    )]
    IsQuarantineRecord {
        /// The aggregate.
        aggregate: String,
        /// The sequence given.
        sequence: u64,
    },
    /// A request to the server failed.
    #[error("{what} failed: {reason}")]
    Request {
        /// What was being done, e.g. `listing streams`.
        what: String,
        /// What the client or server said.
        reason: String,
    },
    /// Writing to standard output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// A failed request: `what` says what was being done, `error` (with its sources) why.
    pub fn request(what: impl Into<String>, error: &dyn std::error::Error) -> Self {
        CliError::Request {
            what: what.into(),
            reason: chain(error),
        }
    }

    /// Maps an error of the runtime's JetStream store, met while `what`.
    pub fn from_store(what: &str, error: JetStreamError) -> Self {
        match error {
            JetStreamError::InvalidConfig(reason) => CliError::InvalidStreamConfig(reason),
            // The runtime's hint names its Rust API; the CLI's names the flag.
            JetStreamError::ConfigConflict {
                stream,
                field,
                existing,
                wanted,
            } => CliError::ConfigConflict {
                stream,
                field: field.to_owned(),
                existing,
                wanted,
            },
            other => CliError::request(what, &other),
        }
    }
}

/// `error` and each of its sources, `a: b: c`, each text once (the runtime's [`ErrorChain`]).
pub fn chain(error: &dyn std::error::Error) -> String {
    ErrorChain(error).to_string()
}

/// The sources of `error` as [`chain`] shows them, or `error` itself when it has none.
pub fn causes(error: &dyn std::error::Error) -> String {
    error.source().map_or_else(|| error.to_string(), chain)
}

/// Checks that `value` can be one subject token (the rule of aggregate ids, which aggregate
/// types follow too): [`CliError::InvalidAggregate`] naming `what` (`type` or `id`) otherwise.
pub fn check_aggregate(what: &'static str, value: &str) -> Result<AggregateId, CliError> {
    AggregateId::new(value).map_err(|e| CliError::InvalidAggregate {
        what,
        value: value.chars().take(64).collect(),
        reason: token_problem(&e),
    })
}

/// Checks `--prefix`: one or more subject tokens separated by `.`, none starting with `$`.
pub fn check_prefix(prefix: &str) -> Result<(), CliError> {
    let invalid = |reason: String| CliError::InvalidPrefix {
        prefix: prefix.to_owned(),
        reason,
    };
    if prefix.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(invalid(
                "it has an empty token (two dots, or a dot at either end)".into(),
            ));
        }
        if let Err(e) = AggregateId::new(token) {
            return Err(invalid(format!(
                "its token {token:?}: {}",
                token_problem(&e)
            )));
        }
        if token.starts_with('$') {
            return Err(invalid(format!(
                "its token {token:?} starts with `$`, which the server reserves"
            )));
        }
    }
    Ok(())
}

/// What is wrong with a would-be subject token, without calling it an aggregate id (the
/// runtime's [`InvalidId`] speaks of ids only).
fn token_problem(error: &InvalidId) -> String {
    match error {
        InvalidId::Empty => "it is empty".into(),
        InvalidId::TooLong { len } => {
            format!("it is {len} bytes long; the limit is {MAX_ID_BYTES}")
        }
        InvalidId::ForbiddenChar { found, .. } => {
            format!("it contains {found:?}, which cannot appear in one NATS subject token")
        }
        InvalidId::NotAscii { found, .. } => {
            format!("it contains {found:?}; only printable ASCII is allowed")
        }
        other => other.to_string(),
    }
}

/// `message` with every secret replaced by `***`: the last guard, whatever a library put into
/// an error text.
pub fn redact(message: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    // Longest first, so `user:password` is replaced whole before `password` alone.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(message.to_owned(), |text, secret| {
            text.replace(secret, "***")
        })
}

/// A server URL fit to print: `nats://user:password@host:4222` becomes `nats://host:4222`.
pub fn printable_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => match url.rsplit_once('@') {
            Some((_, host)) => host.to_owned(),
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_show_each_source_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("listing streams")]
        struct Outer(#[source] Repeating);
        /// Shows its source itself, as async-nats' errors do.
        #[derive(Debug, thiserror::Error)]
        #[error("timed out: {0}")]
        struct Repeating(#[source] std::io::Error);
        let error = Outer(Repeating(std::io::Error::other("no reply")));
        assert_eq!(chain(&error), "listing streams: timed out: no reply");
        assert_eq!(causes(&error), "timed out: no reply");
        let alone = std::io::Error::other("alone");
        assert_eq!(
            (chain(&alone), causes(&alone)),
            ("alone".into(), "alone".into())
        );
    }

    #[test]
    fn redaction_replaces_every_secret() {
        let secrets = vec!["pw".to_owned(), "ops:pw".to_owned(), String::new()];
        assert_eq!(
            redact("nats://ops:pw@host refused pw", &secrets),
            "nats://***@host refused ***"
        );
    }

    #[test]
    fn a_bad_aggregate_type_is_called_a_type_and_a_bad_prefix_a_prefix() {
        assert_eq!(
            check_aggregate("type", "acc.ount").unwrap_err().to_string(),
            "invalid aggregate type \"acc.ount\": it contains '.', which cannot appear in one \
             NATS subject token"
        );
        assert_eq!(
            check_aggregate("id", "").unwrap_err().to_string(),
            "invalid aggregate id \"\": it is empty"
        );
        check_aggregate("id", "acc-1").unwrap();
        for (prefix, expected) in [
            ("", "invalid subject prefix \"\": it is empty"),
            (
                "bank..eu",
                "invalid subject prefix \"bank..eu\": it has an empty token (two dots, or a dot \
                 at either end)",
            ),
            (
                "bank.*",
                "invalid subject prefix \"bank.*\": its token \"*\": it contains '*', which \
                 cannot appear in one NATS subject token",
            ),
            (
                "$JS.x",
                "invalid subject prefix \"$JS.x\": its token \"$JS\" starts with `$`, which \
                 the server reserves",
            ),
        ] {
            assert_eq!(check_prefix(prefix).unwrap_err().to_string(), expected);
        }
        check_prefix("orders.eu").unwrap();
    }

    #[test]
    fn printable_urls_carry_no_credentials() {
        assert_eq!(
            printable_url("nats://ops:s3cret@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(printable_url("tok@10.0.0.1:4222"), "10.0.0.1:4222");
        assert_eq!(
            printable_url("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }
}
