//! The subscriber's settings.

use std::time::{Duration, SystemTime};

use super::error::SubscriberError;
use crate::error::HumanDuration;

/// Short, so that a partition of a process that died moves within about 2 s: its member entry
/// and its pin both lapse after this long without a beat (every quarter of it) or a pull.
const DEFAULT_MEMBER_TTL: Duration = Duration::from_millis(1_500);

/// Where a new durable consumer starts. An existing consumer keeps its position.
///
/// ```
/// use jetsource::subscriber::DeliverFrom;
/// let from = DeliverFrom::Position(42);
/// assert_ne!(from, DeliverFrom::All);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliverFrom {
    /// From the first event of the stream (the default).
    #[default]
    All,
    /// Only events stored after the consumer is created.
    New,
    /// From this stream position (stream sequence) on.
    Position(u64),
    /// From the first event stored at or after this time.
    Time(SystemTime),
}

/// How a completed message is acknowledged.
///
/// Measured on a 2-core machine against nats-server 2.15 (see the crate's benchmark notes):
/// a plain `ack()` consumes about 18 times faster than `double_ack()`. The completion log
/// already covers a lost ack, so [`AckMode::Fast`] is the default.
///
/// ```
/// use jetsource::subscriber::AckMode;
/// assert_eq!(AckMode::default(), AckMode::Fast);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// Fire-and-forget `ack()`; a lost ack means a redelivery the idempotency check absorbs.
    #[default]
    Fast,
    /// `double_ack()`: waits for the server to confirm each ack.
    Confirmed,
}

/// How the subscriber makes sure a handler never sees an event it completed.
///
/// ```
/// use std::time::Duration;
/// use jetsource::subscriber::Idempotency;
/// let idem = Idempotency::Markers { ttl: Duration::from_secs(3600) };
/// assert_ne!(idem, Idempotency::Off);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Idempotency {
    /// After the handler succeeds and before the ack, the event id is stored in the stream
    /// `<stream>_<durable>_DONE` (subject `jetsource_done.<stream>.<durable>`, payload the
    /// concatenated 16-byte ids, entries expire after `ttl`). Completions are group-committed:
    /// all that finish while one write is in flight go out as the next single message.
    /// Messages that may have been handled before (delivery count above 1, a stream position not
    /// above one this process already received, which is what a server that lost its latest
    /// consumer state sends, or redriven dead letters) are looked up in memory: the ids this
    /// process completed (the latest million) and, loaded at start, those of the log's last
    /// ten minutes before its newest entry.
    ///
    /// Cost, measured by `cargo bench --bench subscriber` (release build, 2 busy cores shared
    /// with nats-server 2.15, file storage, 100,000 events over 200 aggregates, concurrency 16,
    /// medians of 3 to 5 rounds, ratios within one run): 0.80 to 0.94 times the throughput of
    /// a raw pull-consume-`ack()` loop (median of four runs 0.87; raw 38-60k events/s), where
    /// [`Idempotency::Off`] reaches 0.95 to 1.07. The limit is per-aggregate order: an
    /// aggregate's next event waits until the previous one's completion is stored (about one
    /// write round trip), so fewer, busier aggregates cost more. Earlier versions: one
    /// key-value entry per event 0.33; one task and channel per completion 0.68 to 0.72.
    Markers {
        /// How long completed ids are remembered; longer than any redelivery can take.
        ttl: Duration,
    },
    /// No bookkeeping: the handler itself is idempotent, or keeps its own checkpoint (like the
    /// PostgreSQL projection, which stores it in the read model's transaction).
    Off,
}

/// A subscriber's durable consumer and delivery settings.
///
/// ```
/// use std::time::Duration;
/// use jetsource::subscriber::{DeliverFrom, SubscriberConfig};
/// let config = SubscriberConfig::new("billing")
///     .deliver_from(DeliverFrom::New)
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(8)
///     .backoff([Duration::from_millis(100), Duration::from_secs(1)])
///     .max_ack_pending(2_000)
///     .concurrency(32);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberConfig {
    /// The durable consumer name (`A-Z a-z 0-9 _ -`): the subscriber's identity on the server.
    pub durable_name: String,
    /// Where a new consumer starts.
    pub deliver_from: DeliverFrom,
    /// How long the server waits for an ack before redelivering. In-progress acks are sent every
    /// half of it while a handler runs.
    pub ack_wait: Duration,
    /// Handler attempts (deliveries and in-place retries together) before a retryable failure is
    /// dead-lettered. The server-side consumer itself never gives up, so nothing is dropped
    /// silently. A redriven dead letter gets this many attempts again.
    pub max_deliver: u32,
    /// Delays before the retries of a retryable failure; the last one repeats.
    pub backoff: Vec<Duration>,
    /// Unacknowledged messages the server lets this consumer have at once.
    pub max_ack_pending: usize,
    /// Aggregates handled in parallel.
    pub concurrency: usize,
    /// Duplicate protection; see [`Idempotency`].
    pub idempotency: Idempotency,
    /// How acks are sent.
    pub ack_mode: AckMode,
    /// Partitions shared by every process running this subscriber; `None` (the default)
    /// consumes in one process. See [`SubscriberConfig::partitions`].
    pub partitions: Option<u16>,
    /// How long a process that stopped announcing itself keeps its partitions.
    pub member_ttl: Duration,
    /// The event stream this subscriber is written for, if it names one: starting it on a
    /// store of another stream is refused instead of consuming the wrong events.
    pub stream: Option<String>,
}

impl SubscriberConfig {
    /// Defaults: deliver all, ack wait 30 s, 5 attempts, back-off 1 s, 5 s, 30 s, 1,000 pending,
    /// concurrency 16, idempotency markers kept 7 days, fast acks.
    pub fn new(durable_name: impl Into<String>) -> Self {
        SubscriberConfig {
            durable_name: durable_name.into(),
            deliver_from: DeliverFrom::All,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            max_ack_pending: 1_000,
            concurrency: 16,
            idempotency: Idempotency::Markers {
                ttl: Duration::from_secs(7 * 24 * 3600),
            },
            ack_mode: AckMode::Fast,
            partitions: None,
            member_ttl: DEFAULT_MEMBER_TTL,
            stream: None,
        }
    }

    /// Shares the work between every process that runs this subscriber (same durable name,
    /// same `count`): events are hashed by aggregate into `count` partitions (a stream
    /// `<stream>_P<count>` that sources the event stream and adds the partition token), each
    /// partition has its own durable consumer pinned to one process, and the processes, which
    /// announce themselves in a key-value bucket, divide the partitions between them. A process
    /// that stops announcing itself for [`SubscriberConfig::member_ttl`] loses its partitions to
    /// the others; an aggregate's events stay in order across the move. `concurrency` applies
    /// per partition.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jetsource::subscriber::SubscriberConfig;
    /// let config = SubscriberConfig::new("billing")
    ///     .partitions(8)
    ///     .member_ttl(Duration::from_secs(5));
    /// assert_eq!(config.partitions, Some(8));
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn partitions(mut self, count: u16) -> Self {
        self.partitions = Some(count);
        self
    }

    /// How long a silent process keeps its partitions (default 1.5 s); only with
    /// [`SubscriberConfig::partitions`]. Each process announces itself every quarter of it and
    /// pulls at least every second, so a process that dies loses its partitions about this
    /// long after; a live one that cannot reach the server for this long loses them too (and
    /// takes them back when it can), so raise it where pauses or server failovers of several
    /// seconds are common and a slower takeover is acceptable.
    pub fn member_ttl(mut self, ttl: Duration) -> Self {
        self.member_ttl = ttl;
        self
    }

    /// Declares the event stream this subscriber consumes; the JetStream `start` refuses a
    /// store of another stream.
    ///
    /// ```
    /// use jetsource::subscriber::SubscriberConfig;
    /// let config = SubscriberConfig::new("billing").stream("BANK");
    /// assert_eq!(config.stream.as_deref(), Some("BANK"));
    /// ```
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Sets where a new consumer starts.
    pub fn deliver_from(mut self, from: DeliverFrom) -> Self {
        self.deliver_from = from;
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets the attempts before dead-lettering.
    pub fn max_deliver(mut self, attempts: u32) -> Self {
        self.max_deliver = attempts;
        self
    }

    /// Sets the retry delays.
    pub fn backoff(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = delays.into_iter().collect();
        self
    }

    /// Sets the server's limit of unacknowledged messages.
    pub fn max_ack_pending(mut self, pending: usize) -> Self {
        self.max_ack_pending = pending;
        self
    }

    /// Sets how many aggregates are handled in parallel.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the duplicate protection.
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = idempotency;
        self
    }

    /// Sets the ack mode.
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.ack_mode = mode;
        self
    }

    /// Checks the settings without contacting a server.
    pub fn validate(&self) -> Result<(), SubscriberError> {
        let invalid = |reason: String| Err(SubscriberError::InvalidConfig(reason));
        let name = &self.durable_name;
        if name.is_empty()
            || name.len() > 100
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid(format!(
                "durable name {name:?} must be 1 to 100 characters of A-Z a-z 0-9 _ -"
            ));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return invalid(format!(
                "ack_wait is {}; it must be at least 100ms",
                HumanDuration(self.ack_wait)
            ));
        }
        if self.max_deliver == 0 {
            return invalid("max_deliver must be at least 1".into());
        }
        if self.backoff.is_empty() {
            return invalid("backoff needs at least one delay".into());
        }
        if self.max_ack_pending == 0 {
            return invalid("max_ack_pending must be at least 1".into());
        }
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1".into());
        }
        if let Some(partitions) = self.partitions {
            if !(1..=1024).contains(&partitions) {
                return invalid(format!(
                    "partitions must be between 1 and 1024, not {partitions}"
                ));
            }
            if self.member_ttl < Duration::from_millis(500) {
                return invalid(format!(
                    "member_ttl is {}; it must be at least 500ms",
                    HumanDuration(self.member_ttl)
                ));
            }
            if let DeliverFrom::Position(_) = self.deliver_from {
                // Partition consumers count positions in the partition stream.
                return invalid(
                    "DeliverFrom::Position cannot be used with partitions; use DeliverFrom::Time"
                        .into(),
                );
            }
        }
        if let Idempotency::Markers { ttl } = self.idempotency {
            if ttl < Duration::from_secs(1) {
                return invalid(format!(
                    "the idempotency TTL is {}; it must be at least 1s",
                    HumanDuration(ttl)
                ));
            }
        }
        Ok(())
    }

    /// The delay before retry number `retry` (0-based); the last delay repeats.
    pub(crate) fn delay(&self, retry: usize) -> Duration {
        self.backoff
            .get(retry)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SubscriberConfig;

    #[test]
    fn backoff_repeats_the_last_delay() {
        let config = SubscriberConfig::new("x")
            .backoff([Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(config.delay(0), Duration::from_millis(10));
        assert_eq!(config.delay(1), Duration::from_millis(20));
        assert_eq!(config.delay(7), Duration::from_millis(20));
    }

    #[test]
    fn invalid_durations_are_named_with_their_values() {
        let err = SubscriberConfig::new("x")
            .ack_wait(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid subscriber configuration: ack_wait is 0s; it must be at least 100ms"
        );
        let err = SubscriberConfig::new("x")
            .partitions(2)
            .member_ttl(Duration::from_millis(250))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("member_ttl is 250ms; it must be at least 500ms"),
            "{err}"
        );
    }
}
