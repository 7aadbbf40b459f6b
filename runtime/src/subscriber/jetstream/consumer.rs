//! The durable consumers a lane pulls from: their filter subjects, start position and
//! configuration.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy, PriorityPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream;

use crate::event_set::EventSet;
use crate::subscriber::config::{DeliverFrom, SubscriberConfig};
use crate::subscriber::error::SubscriberError;

/// The priority group of partition consumers: one pinned process per partition.
pub(crate) const PRIORITY_GROUP: &str = "jetsource";

/// The partition stream shared by every scaled-out subscriber of `stream` with `partitions`.
pub(super) fn partition_stream_name(stream: &str, partitions: u16) -> String {
    format!("{stream}_P{partitions}")
}

/// `<prefix>.*.*.<name>` for every handled name.
pub(crate) fn filter_subjects<E: EventSet>(prefix: &str) -> Vec<String> {
    E::known_names()
        .iter()
        .map(|name| format!("{prefix}.*.*.{name}"))
        .collect()
}

/// `<prefix>.<partition>.*.*.<name>` for every handled name: the partition stream's subjects.
pub(super) fn partition_filters<E: EventSet>(prefix: &str, partition: u16) -> Vec<String> {
    E::known_names()
        .iter()
        .map(|name| format!("{prefix}.{partition}.*.*.{name}"))
        .collect()
}

pub(super) fn deliver_policy(from: DeliverFrom) -> DeliverPolicy {
    match from {
        DeliverFrom::All => DeliverPolicy::All,
        DeliverFrom::New => DeliverPolicy::New,
        DeliverFrom::Position(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        },
        DeliverFrom::Time(at) => {
            let nanos = at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            match async_nats::datetime::from_nanos(nanos as i128) {
                Ok(start_time) => DeliverPolicy::ByStartTime { start_time },
                Err(e) => {
                    tracing::warn!(error = %e, "start time out of range; delivering all");
                    DeliverPolicy::All
                }
            }
        }
    }
}

/// Creates the durable consumer, or updates an existing one to `config` (filter subjects, ack
/// wait and pending limit may change). An existing consumer keeps its start position, as
/// [`DeliverFrom`] promises: the server refuses to change it, so a subscriber restarted with
/// another `deliver_from` resumes instead of failing to start. `pin_ttl` makes it a partition
/// consumer: one pinned process at a time.
pub(super) async fn ensure_consumer(
    stream: &stream::Stream,
    config: &SubscriberConfig,
    filters: Vec<String>,
    name: &str,
    deliver_policy: DeliverPolicy,
    pin_ttl: Option<Duration>,
) -> Result<Consumer<pull::Config>, SubscriberError> {
    let (priority_policy, priority_groups, priority_timeout) = match pin_ttl {
        Some(ttl) => (
            PriorityPolicy::PinnedClient,
            vec![PRIORITY_GROUP.to_owned()],
            ttl,
        ),
        None => (PriorityPolicy::None, Vec::new(), Duration::ZERO),
    };
    let deliver_policy = match stream.consumer_info(name).await {
        Ok(existing) => existing.config.deliver_policy,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => deliver_policy,
        Err(e) => return Err(SubscriberError::js(format!("reading consumer {name}"), e)),
    };
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subjects: filters,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // The runtime counts attempts and dead-letters itself; the server never drops a
            // message silently.
            max_deliver: -1,
            max_ack_pending: config.max_ack_pending as i64,
            deliver_policy,
            priority_policy,
            priority_groups,
            priority_timeout,
            ..Default::default()
        })
        .await
        .map_err(|e| SubscriberError::js(format!("creating consumer {name}"), e))
}

/// Deletes a subscriber's durable consumers on `event_stream`, so its next start begins at
/// `deliver_from` again: the consumer on the event stream and, scaled out, those of every
/// partition. Missing ones are fine.
#[cfg(feature = "postgres")]
pub(crate) async fn delete_consumers(
    js: &async_nats::jetstream::Context,
    event_stream: &str,
    config: &SubscriberConfig,
) -> Result<(), SubscriberError> {
    let durable = &config.durable_name;
    let mut doomed = vec![(event_stream.to_owned(), durable.clone())];
    if let Some(partitions) = config.partitions {
        let partition_stream = partition_stream_name(event_stream, partitions);
        doomed
            .extend((0..partitions).map(|p| (partition_stream.clone(), format!("{durable}_p{p}"))));
    }
    for (stream_name, consumer) in doomed {
        let stream = match js.get_stream(&stream_name).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                continue
            }
            Err(e) => {
                return Err(SubscriberError::js(
                    format!("opening stream {stream_name}"),
                    e,
                ))
            }
        };
        if let Err(e) = stream.delete_consumer(&consumer).await {
            let missing = matches!(e.kind(), stream::ConsumerErrorKind::JetStream(ref j)
                if j.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND);
            if !missing {
                return Err(SubscriberError::js(
                    format!("deleting consumer {consumer}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}
