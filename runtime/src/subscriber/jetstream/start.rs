//! Starting a JetStream subscriber: one lane over the whole stream, or a place in a group
//! sharing its partitions.

use std::sync::Arc;

use async_nats::jetstream;
use tokio::sync::watch;
use tracing::Instrument;

use super::dead_letters;
use super::group::Group;
use super::lane::{open_lane, LaneBase};
use super::placement::Placement;
use super::progress::JetStreamProgress;
use crate::event_set::EventSet;
use crate::subscriber::config::SubscriberConfig;
use crate::subscriber::error::SubscriberError;
use crate::subscriber::handle::{Counters, SubscriberHandle};
use crate::subscriber::handler::{Subscriber, SubscriberDefinition};
use crate::JetStreamStore;

/// Starts `subscriber` on `store`'s stream: creates (or updates) the durable consumer, the
/// dead-letter stream and the completion log, then consumes in the background.
///
/// ```no_run
/// # use jetsource::subscriber::{self, SubscriberConfig, Subscriber};
/// # async fn run<S: Subscriber>(store: jetsource::JetStreamStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start(&store, s, SubscriberConfig::new("audit").concurrency(32)).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start<S: Subscriber>(
    store: &JetStreamStore,
    subscriber: S,
    config: SubscriberConfig,
) -> Result<SubscriberHandle, SubscriberError> {
    config.validate()?;
    if let Some(declared) = &config.stream {
        if *declared != store.config().name {
            return Err(SubscriberError::InvalidConfig(format!(
                "subscriber {} is written for stream {declared}, but the store's stream is {}",
                config.durable_name,
                store.config().name
            )));
        }
    }
    if <S::Event as EventSet>::NAMES.is_empty() {
        return Err(SubscriberError::InvalidConfig(
            "the subscriber's event set has no event types".into(),
        ));
    }
    let js = jetstream::new(store.client().clone());
    let stream = store.config().name.clone();
    let placement = Placement::of(store);
    let dead_letters = dead_letters::ensure_stream(&js, &stream, placement).await?;
    let counters = Arc::new(Counters::default());
    let span = tracing::info_span!("subscriber", durable = %config.durable_name);
    let base = LaneBase {
        js,
        subscriber: Arc::new(subscriber),
        prefix: store.config().prefix.clone(),
        stream,
        placement,
        dead_letters,
        counters: counters.clone(),
        config,
    };
    let progress = Arc::new(JetStreamProgress::open(&base.js, &base.stream, &base.config).await?);
    let (shutdown, stop) = watch::channel(false);
    let task = match base.config.partitions {
        None => {
            let lane = open_lane(&base, None, stop).await?;
            tokio::spawn(lane.run().instrument(span))
        }
        Some(count) => {
            let group = Group::join(base, count).await?;
            tokio::spawn(group.run(stop).instrument(span))
        }
    };
    Ok(SubscriberHandle::new(shutdown, task, counters, progress))
}

/// [`start`]s `subscriber` with its own [`SubscriberDefinition::subscriber_config`].
///
/// ```no_run
/// # use jetsource::subscriber::{self, SubscriberDefinition};
/// # async fn run<S: SubscriberDefinition>(store: jetsource::JetStreamStore, s: S) -> Result<(), Box<dyn std::error::Error>> {
/// let handle = subscriber::start_defined(&store, s).await?;
/// # let _ = handle; Ok(()) }
/// ```
pub async fn start_defined<S: SubscriberDefinition>(
    store: &JetStreamStore,
    subscriber: S,
) -> Result<SubscriberHandle, SubscriberError> {
    start(store, subscriber, S::subscriber_config()).await
}
