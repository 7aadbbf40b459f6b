//! What can go wrong, phrased for the person at the terminal.

use jetsource::JetStreamError;

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
    /// The server refused the credentials.
    #[error("the NATS server at {servers} refused the {method}: authorization failed")]
    Auth {
        /// The server URLs, without credentials.
        servers: String,
        /// Which credentials, e.g. `password of user "ops"` (never the secret itself).
        method: String,
    },
    /// The `.creds` file could not be read.
    #[error("cannot read the creds file {path}: {reason}")]
    CredsFile {
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
    #[error("invalid aggregate {what}: {reason}")]
    InvalidAggregate {
        /// `type` or `id`.
        what: &'static str,
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
    /// A failed request: `what` says what was being done.
    pub fn request(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CliError::Request {
            what: what.into(),
            reason: reason.to_string(),
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
            other => CliError::request(what, other),
        }
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
    fn redaction_replaces_every_secret() {
        let secrets = vec!["pw".to_owned(), "ops:pw".to_owned(), String::new()];
        assert_eq!(
            redact("nats://ops:pw@host refused pw", &secrets),
            "nats://***@host refused ***"
        );
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
