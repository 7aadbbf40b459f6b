//! The typed stream configuration and its validation.

use std::time::Duration;

use async_nats::jetstream::stream;

use super::error::JetStreamError;
use crate::error::HumanDuration;
use crate::id::{validate_token, InvalidToken};

/// Where the stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk (the default): survives server restarts.
    File,
    /// In memory: fast, lost when the server stops.
    Memory,
}

/// The stream one bounded context's events live in, as jetsource creates it.
///
/// Events go to subjects `<prefix>.<aggregate_type>.<aggregate_id>.<event_name>`; the stream
/// captures `<prefix>.>`. Snapshots go to the key-value bucket [`StreamConfig::snapshot_bucket`].
///
/// ```
/// use std::time::Duration;
/// use jetsource::{JetStreamStorage, StreamConfig};
/// let config = StreamConfig::new("ORDERS", "orders")
///     .storage(JetStreamStorage::Memory)
///     .replicas(1)
///     .duplicate_window(Duration::from_secs(30));
/// assert_eq!(config.subject_filter(), "orders.>");
/// assert!(config.validate().is_ok());
/// assert!(StreamConfig::new("BAD NAME", "orders").validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The stream name (`A-Z a-z 0-9 _ -`).
    pub name: String,
    /// The subject prefix: one or more subject tokens separated by `.`.
    pub prefix: String,
    /// File (default) or memory storage.
    pub storage: Storage,
    /// Replicas (1 on a single server; 3 or 5 in a cluster).
    pub replicas: usize,
    /// Drop events older than this; zero (the default) keeps them forever.
    pub max_age: Duration,
    /// Drop the oldest events beyond this many bytes; -1 (the default) means unlimited.
    pub max_bytes: i64,
    /// Refuse messages larger than this many bytes; -1 (the default) means the server's limit.
    pub max_message_size: i32,
    /// How long the server remembers `Nats-Msg-Id`s (command ids within this window are
    /// deduplicated by the server; older ones by jetsource's durable check).
    pub duplicate_window: Duration,
    /// Lets loads read through the direct-get API (required: jetsource loads that way).
    pub allow_direct: bool,
    /// Lets multi-event commands commit as one atomic batch (required for them).
    pub allow_atomic_publish: bool,
    /// Lets the stream hold message schedules (nats-server 2.12+, off by default): process
    /// managers' instance stores need it, since their deadlines are schedules the server fires.
    /// It also turns on the stream's `allow_rollup`, which a schedule needs to replace the one
    /// before it; with rollups on, anyone allowed to publish to the stream can purge it with a
    /// `Nats-Rollup` header, so keep events that must last in a stream without schedules. The
    /// server refuses to turn schedules off again on a stream that has them.
    pub allow_message_schedules: bool,
    /// The key-value bucket that holds snapshots; `<name>_SNAPSHOTS` by default.
    pub snapshot_bucket: String,
    /// Update an existing stream whose settings differ instead of failing with
    /// [`JetStreamError::ConfigConflict`].
    pub update_existing: bool,
}

impl StreamConfig {
    /// A file-backed, single-replica stream named `name` for subjects under `prefix`.
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        let name = name.into();
        StreamConfig {
            snapshot_bucket: format!("{name}_SNAPSHOTS"),
            name,
            prefix: prefix.into(),
            storage: Storage::File,
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_message_size: -1,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            allow_atomic_publish: true,
            allow_message_schedules: false,
            update_existing: false,
        }
    }

    /// Sets the storage.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the maximum event age.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets the maximum stream size in bytes.
    pub fn max_bytes(mut self, max_bytes: i64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets the maximum message size in bytes.
    pub fn max_message_size(mut self, bytes: i32) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the server's deduplication window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Lets the stream hold message schedules (process managers' deadlines).
    pub fn allow_message_schedules(mut self, allow: bool) -> Self {
        self.allow_message_schedules = allow;
        self
    }

    /// Sets the snapshot bucket name.
    pub fn snapshot_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.snapshot_bucket = bucket.into();
        self
    }

    /// Allows updating an existing stream whose settings differ.
    pub fn update_existing(mut self, update: bool) -> Self {
        self.update_existing = update;
        self
    }

    /// The subject filter the stream captures: `<prefix>.>`.
    pub fn subject_filter(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// Checks names, prefix and the settings jetsource relies on, without contacting a server.
    pub fn validate(&self) -> Result<(), JetStreamError> {
        let invalid = |reason: String| Err(JetStreamError::InvalidConfig(reason));
        for (what, value) in [
            ("stream name", &self.name),
            ("snapshot bucket", &self.snapshot_bucket),
        ] {
            if value.is_empty()
                || value.len() > 200
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return invalid(format!(
                    "{what} {value:?} must be 1 to 200 characters of A-Z a-z 0-9 _ -"
                ));
            }
        }
        if self.prefix.is_empty() {
            return invalid("the subject prefix is empty".into());
        }
        for token in self.prefix.split('.') {
            if let Err(e) = validate_token(token) {
                let prefix = &self.prefix;
                return invalid(match e {
                    InvalidToken::Empty => format!(
                        "subject prefix {prefix:?} has an empty token (`..`, or `.` at an end)"
                    ),
                    e if token == prefix => format!("subject prefix {prefix:?} is invalid: {e}"),
                    e => format!("subject prefix {prefix:?} has the token {token:?}, but {e}"),
                });
            }
            if token.starts_with('$') {
                return invalid(format!(
                    "subject prefix {:?} starts a token with `$`, reserved for the server",
                    self.prefix
                ));
            }
        }
        if self.replicas == 0 || self.replicas > 5 {
            return invalid(format!("replicas must be 1 to 5, not {}", self.replicas));
        }
        if !self.allow_direct {
            return invalid("allow_direct must be on: loads read through direct get".into());
        }
        if !self.allow_atomic_publish {
            return invalid(
                "allow_atomic_publish must be on: multi-event commands commit as one batch".into(),
            );
        }
        if self.duplicate_window.is_zero() {
            return invalid("duplicate_window must be positive".into());
        }
        if !self.max_age.is_zero() && self.duplicate_window > self.max_age {
            return invalid(format!(
                "duplicate_window ({}) cannot exceed max_age ({})",
                HumanDuration(self.duplicate_window),
                HumanDuration(self.max_age)
            ));
        }
        Ok(())
    }

    /// The async-nats stream configuration this maps to.
    pub(crate) fn to_nats(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![self.subject_filter()],
            storage: match self.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_message_size: self.max_message_size,
            duplicate_window: self.duplicate_window,
            allow_direct: self.allow_direct,
            allow_atomic_publish: self.allow_atomic_publish,
            allow_message_schedules: self.allow_message_schedules,
            // Each schedule rolls up its subject (so a new one replaces the old): the server
            // turns this on for schedules unless it is pedantic, which would refuse the stream.
            allow_rollup: self.allow_message_schedules,
            ..Default::default()
        }
    }

    /// The first setting where `existing` differs from this configuration.
    pub(crate) fn conflict_with(&self, existing: &stream::Config) -> Option<JetStreamError> {
        let wanted = self.to_nats();
        let differ = |field: &'static str, existing: String, wanted: String| {
            Some(JetStreamError::ConfigConflict {
                stream: self.name.clone(),
                field,
                existing,
                wanted,
            })
        };
        if existing.subjects != wanted.subjects {
            return differ(
                "subjects",
                format!("{:?}", existing.subjects),
                format!("{:?}", wanted.subjects),
            );
        }
        if existing.storage != wanted.storage {
            return differ(
                "storage",
                format!("{:?}", existing.storage),
                format!("{:?}", wanted.storage),
            );
        }
        if existing.num_replicas != wanted.num_replicas {
            return differ(
                "replicas",
                existing.num_replicas.to_string(),
                wanted.num_replicas.to_string(),
            );
        }
        if existing.max_age != wanted.max_age {
            return differ(
                "max_age",
                max_age(existing.max_age),
                max_age(wanted.max_age),
            );
        }
        if existing.max_bytes != wanted.max_bytes {
            return differ(
                "max_bytes",
                existing.max_bytes.to_string(),
                wanted.max_bytes.to_string(),
            );
        }
        if existing.max_message_size != wanted.max_message_size {
            return differ(
                "max_message_size",
                existing.max_message_size.to_string(),
                wanted.max_message_size.to_string(),
            );
        }
        if existing.duplicate_window != wanted.duplicate_window {
            return differ(
                "duplicate_window",
                HumanDuration(existing.duplicate_window).to_string(),
                HumanDuration(wanted.duplicate_window).to_string(),
            );
        }
        if existing.allow_direct != wanted.allow_direct {
            return differ(
                "allow_direct",
                existing.allow_direct.to_string(),
                wanted.allow_direct.to_string(),
            );
        }
        if existing.allow_atomic_publish != wanted.allow_atomic_publish {
            return differ(
                "allow_atomic_publish",
                existing.allow_atomic_publish.to_string(),
                wanted.allow_atomic_publish.to_string(),
            );
        }
        if existing.allow_message_schedules != wanted.allow_message_schedules {
            return differ(
                "allow_message_schedules",
                existing.allow_message_schedules.to_string(),
                wanted.allow_message_schedules.to_string(),
            );
        }
        None
    }
}

/// A stream's `max_age` as people write it; zero keeps events forever.
fn max_age(age: Duration) -> String {
    if age.is_zero() {
        "0s (no limit)".into()
    } else {
        HumanDuration(age).to_string()
    }
}
