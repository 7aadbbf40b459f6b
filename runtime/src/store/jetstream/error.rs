//! The JetStream backend's typed errors.

/// Why connecting to JetStream, preparing the stream, or talking to the server failed.
///
/// Store operations return it inside [`StoreError::Backend`](crate::StoreError::Backend); get it
/// back with `downcast_ref`:
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
    /// The server refused the credentials (user/password, token, nkey, creds file).
    #[error("NATS server refused the credentials: {0}")]
    Auth(String),
    /// The server could not be reached, or TLS failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// The store configuration is invalid (caught before anything is sent).
    #[error("invalid JetStream store configuration: {0}")]
    InvalidConfig(String),
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
    /// An event or command carries a value that cannot be sent as a NATS subject token or header.
    #[error("cannot store {what}: {reason}")]
    InvalidInput {
        /// Which value.
        what: String,
        /// Why.
        reason: String,
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
    /// Any other client-side failure (connection lost, ...).
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

impl From<async_nats::RequestError> for JetStreamError {
    fn from(error: async_nats::RequestError) -> Self {
        use async_nats::RequestErrorKind;
        match error.kind() {
            RequestErrorKind::TimedOut => JetStreamError::Timeout,
            RequestErrorKind::NoResponders => JetStreamError::NoResponders(error.to_string()),
            _ => JetStreamError::Client(error.to_string()),
        }
    }
}

impl From<async_nats::SubscribeError> for JetStreamError {
    fn from(error: async_nats::SubscribeError) -> Self {
        JetStreamError::Client(error.to_string())
    }
}

impl From<async_nats::PublishError> for JetStreamError {
    fn from(error: async_nats::PublishError) -> Self {
        JetStreamError::Client(error.to_string())
    }
}
