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
    /// Creating or reading the consumer, the dead-letter stream or the completion log failed.
    #[error("JetStream {what} failed: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// What the client or server said.
        reason: String,
    },
    /// The subscriber's task panicked or was aborted.
    #[error("subscriber task ended abnormally: {0}")]
    Task(String),
}

#[cfg(feature = "jetstream")]
impl SubscriberError {
    pub(crate) fn js(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SubscriberError::JetStream {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
