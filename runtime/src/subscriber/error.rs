//! Why a subscriber could not start, or stopped.

/// Why a subscriber could not start or stopped with an error.
///
/// ```
/// use jetsource::subscriber::{SubscriberConfig, SubscriberError};
/// let err = SubscriberConfig::new("bad name").validate().unwrap_err();
/// assert!(matches!(err, SubscriberError::InvalidConfig(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// The configuration is invalid (caught before anything is sent).
    #[error("invalid subscriber configuration: {0}")]
    InvalidConfig(String),
    /// Creating or reading the consumer, the dead-letter stream or the completion log failed;
    /// what the client or the server said is the [`source`](std::error::Error::source).
    #[error("{what} failed")]
    JetStream {
        /// What was being done: `creating consumer billing`, `reading dead letters`.
        what: String,
        /// What the client or server said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The subscriber's task panicked or was aborted; the task's error is the source.
    #[error("subscriber task ended abnormally")]
    Task(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SubscriberError {
    #[cfg(feature = "jetstream")]
    pub(crate) fn js(
        what: impl Into<String>,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SubscriberError::JetStream {
            what: what.into(),
            source: error.into(),
        }
    }

    /// The subscriber's task ended with `error` instead of returning.
    pub(crate) fn task(error: tokio::task::JoinError) -> Self {
        SubscriberError::Task(Box::new(error))
    }
}
