//! The JetStream backend's typed errors.

use std::error::Error;

/// A boxed error of the NATS client (or of anything else), kept as a source.
type Source = Box<dyn Error + Send + Sync>;

/// Why connecting to JetStream, preparing the stream, or talking to the server failed.
///
/// Store operations return it inside [`StoreError::Backend`](crate::StoreError::Backend); get it
/// back with `downcast_ref`. Its message names what failed; what the client or the server said
/// is its [`source`](std::error::Error::source) (print both with
/// [`ErrorChain`](crate::ErrorChain)):
///
/// ```
/// use jetsource::{JetStreamError, StoreError};
/// let err = StoreError::Backend(Box::new(JetStreamError::Timeout));
/// if let StoreError::Backend(inner) = &err {
///     assert!(matches!(inner.downcast_ref::<JetStreamError>(), Some(JetStreamError::Timeout)));
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    /// The server refused the credentials (user/password, token, nkey, creds file, client
    /// certificate); the client's error is the source.
    #[error("the NATS server refused the credentials")]
    Auth(#[source] Source),
    /// The server could not be reached, or TLS failed; the client's error is the source.
    #[error("cannot connect to NATS")]
    Connect(#[source] Source),
    /// The store configuration is invalid (caught before anything is sent).
    #[error("invalid JetStream store configuration: {0}")]
    InvalidConfig(String),
    /// A connect option cannot be used: a server URL that does not parse, a creds file that
    /// cannot be read, an nkey seed or creds file that cannot sign the server's nonce. Nothing
    /// was sent.
    #[error("cannot use {option}")]
    InvalidConnectOption {
        /// The option, with its value when that is no secret (`server URL "nats://..."`,
        /// `creds file /etc/nats/app.creds`).
        option: String,
        /// What is wrong with it.
        #[source]
        source: Source,
    },
    /// The stream exists with another configuration than the one asked for; nothing was changed.
    #[error(
        "stream {stream} exists with {field} = {existing}, but the configuration asks for \
         {wanted}; change the configuration, or allow updates with `StreamConfig::update_existing`"
    )]
    ConfigConflict {
        /// The stream name.
        stream: String,
        /// The differing setting.
        field: &'static str,
        /// Its value on the server.
        existing: String,
        /// The value the configuration asks for.
        wanted: String,
    },
    /// A value that must be one NATS subject token (a publisher topic) is not.
    #[error("{what} cannot be a subject token")]
    InvalidInput {
        /// Which value: `publisher topic "a.b"`.
        what: String,
        /// What is wrong with it.
        #[source]
        source: crate::InvalidToken,
    },
    /// The connection's user may not publish to the subject: the server refused the append,
    /// and nothing was stored. Grant the publish permission, or append with another user.
    #[error("the NATS server refused to publish to {subject}: permissions violation")]
    PermissionDenied {
        /// The refused subject.
        subject: String,
    },
    /// The server did not answer in time; an append may or may not have happened (retrying
    /// with the same command id is safe).
    #[error("NATS request timed out")]
    Timeout,
    /// The server answered with a JetStream API error.
    #[error("JetStream error {err_code} (status {code}): {description}")]
    Api {
        /// The HTTP-like status.
        code: u16,
        /// The JetStream error code (10071: wrong last sequence, ...).
        err_code: u64,
        /// The server's description.
        description: String,
    },
    /// The stream or a bucket does not exist, or no server answered.
    #[error("no JetStream responder for {0}; is the stream there and JetStream enabled?")]
    NoResponders(String),
    /// The server answered something this client cannot read.
    #[error("unexpected JetStream reply: {0}")]
    Protocol(String),
    /// A request or another call of the NATS client failed (connection lost, a JetStream API
    /// error while managing streams, ...); the client's error is the source.
    #[error("cannot {operation}")]
    Request {
        /// What was being done: `create stream ORDERS`, `read the snapshot of account/a1`.
        operation: String,
        /// What the client said.
        #[source]
        source: Source,
    },
    /// A client-side failure that comes with no error of its own (a subscription that ended).
    #[error("NATS client error: {0}")]
    Client(String),
    /// Appends with [`ExpectedVersion::Any`](crate::ExpectedVersion::Any) kept losing the race.
    #[error("gave up after {attempts} concurrent-append retries on {aggregate}")]
    Contention {
        /// The aggregate.
        aggregate: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// An event (payload plus metadata) is larger than the server accepts; nothing was sent.
    #[error("event {event} of {bytes} bytes exceeds the server's max payload ({max} bytes)")]
    EventTooLarge {
        /// The event's wire name.
        event: String,
        /// Its size with metadata (an upper bound).
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
    /// The snapshot is larger than the server accepts.
    #[error("snapshot of {bytes} bytes exceeds the server's max payload ({max} bytes)")]
    SnapshotTooLarge {
        /// Encoded size.
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
}

impl From<JetStreamError> for crate::StoreError {
    fn from(error: JetStreamError) -> Self {
        crate::StoreError::Backend(Box::new(error))
    }
}

impl JetStreamError {
    /// `operation` failed with the client's `error`.
    pub(crate) fn request(operation: impl Into<String>, error: impl Into<Source>) -> Self {
        JetStreamError::Request {
            operation: operation.into(),
            source: error.into(),
        }
    }

    /// A failed request to `target` (what the no-responders message names).
    pub(crate) fn from_request(error: async_nats::RequestError, target: &str) -> Self {
        use async_nats::RequestErrorKind;
        match error.kind() {
            RequestErrorKind::TimedOut => JetStreamError::Timeout,
            RequestErrorKind::NoResponders => JetStreamError::NoResponders(target.to_owned()),
            _ => JetStreamError::request(format!("send a request to {target}"), error),
        }
    }
}

impl From<async_nats::RequestError> for JetStreamError {
    fn from(error: async_nats::RequestError) -> Self {
        JetStreamError::from_request(error, "the server")
    }
}

impl From<async_nats::SubscribeError> for JetStreamError {
    fn from(error: async_nats::SubscribeError) -> Self {
        JetStreamError::request("subscribe", error)
    }
}

impl From<async_nats::PublishError> for JetStreamError {
    fn from(error: async_nats::PublishError) -> Self {
        JetStreamError::request("publish", error)
    }
}
