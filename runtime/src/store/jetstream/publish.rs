//! Publishing events that belong to no aggregate: integration events and notifications.

use std::time::SystemTime;

use uuid::Uuid;

use super::append::{self, Outgoing, Published};
use super::{headers, JetStreamError, JetStreamStore};
use crate::error::EncodeError;
use crate::event::Event;
use crate::id::AggregateId;
use crate::observability;
use crate::store::{contract, AggregateKey, CommandMetadata, NewEvent, StoreError};
use crate::wire;

/// Where a published event was stored.
///
/// ```
/// let receipt = jetsource::PublishReceipt { event_id: uuid::Uuid::nil(), position: 7, duplicate: false };
/// assert!(!receipt.duplicate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream sequence, to hand to a subscriber's `wait_for`; for a duplicate, which
    /// stored nothing, the sequence of the first publish with that message id.
    pub position: u64,
    /// The message id was published before, inside the stream's duplicate window.
    pub duplicate: bool,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The server refused it or could not be reached; see [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<JetStreamError> for PublishError {
    fn from(error: JetStreamError) -> Self {
        PublishError::Store(error.into())
    }
}

/// A typed publisher of events outside aggregates, on a topic of the store's stream.
///
/// Events go to `<prefix>.<topic>.<key>.<event name>` with the same `Jetsource-*` headers as
/// aggregate events, so the same subscribers consume them: in order per key, filtered by name,
/// upcast, retried, dead-lettered. They carry no aggregate version (`EventContext::sequence` is
/// 0) and no optimistic concurrency; `Nats-Msg-Id` (the command id of the metadata, else the
/// event id) lets the server drop a retried publish inside the stream's duplicate window. Use a
/// topic that names no aggregate type.
///
/// ```no_run
/// use jetsource::{AggregateId, CommandMetadata, Event, JetStreamStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "newsletter_sent", version = 1)]
/// struct NewsletterSent { issue: u32 }
///
/// # async fn run(store: JetStreamStore) -> Result<(), Box<dyn std::error::Error>> {
/// let notifications = store.publisher("notifications")?;
/// let key = AggregateId::new("customer-42")?;
/// let meta = CommandMetadata::default().command_id("send-issue-7-to-42");
/// let receipt = notifications.publish(&key, &NewsletterSent { issue: 7 }, &meta).await?;
/// println!("stored at {}", receipt.position);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher {
    store: JetStreamStore,
    topic: &'static str,
}

impl JetStreamStore {
    /// A publisher on `topic` (`A-Z a-z 0-9 _ -`, one subject token).
    pub fn publisher(&self, topic: &'static str) -> Result<Publisher, JetStreamError> {
        crate::id::validate_token(topic).map_err(|source| JetStreamError::InvalidInput {
            what: format!("publisher topic {topic:?}"),
            source,
        })?;
        Ok(Publisher {
            store: self.clone(),
            topic,
        })
    }
}

impl Publisher {
    /// Publishes `event` under `key` and waits for the server's ack.
    pub async fn publish<E: Event>(
        &self,
        key: &AggregateId,
        event: &E,
        metadata: &CommandMetadata,
    ) -> Result<PublishReceipt, PublishError> {
        let encoded = event.encode()?;
        let id = Uuid::now_v7();
        let message_id = metadata
            .command_id
            .clone()
            .unwrap_or_else(|| id.to_string());
        let mut headers = metadata.headers.clone();
        observability::inject_trace(&mut headers);
        let new_event = NewEvent {
            id,
            name: encoded.name,
            version: encoded.version,
            codec: encoded.codec,
            payload: encoded.payload.into(),
            timestamp: SystemTime::now(),
            correlation_id: metadata
                .correlation_id
                .clone()
                .or_else(observability::inherited_correlation)
                .unwrap_or_else(|| Uuid::now_v7().to_string()),
            causation_id: metadata
                .causation_id
                .clone()
                .or_else(observability::inherited_causation)
                .or_else(|| metadata.command_id.clone()),
            headers,
        };
        let topic_key = AggregateKey::new(self.topic, key.clone());
        contract::check_append(
            &topic_key,
            Some(&message_id),
            std::slice::from_ref(&new_event),
        )
        .map_err(StoreError::from)?;
        let bytes = headers::message_size(&new_event, metadata.command_id.as_deref());
        let max = self.store.max_payload();
        if max > 0 && bytes > max {
            return Err(JetStreamError::EventTooLarge {
                event: new_event.name.to_owned(),
                bytes,
                max,
            }
            .into());
        }
        let mut message_headers = headers::encode(&new_event, 0);
        // With a command id, the wire's message id (which readers take the command id from);
        // without, the event id alone, which names no command.
        let msg_id = match &metadata.command_id {
            Some(command) => wire::message_id(self.topic, key.as_str(), command, 0),
            None => format!("{}.{key}:{message_id}", self.topic),
        };
        message_headers.insert(headers::name::MSG_ID, msg_id.as_str());
        let prefix = &self.store.config().prefix;
        let stem = format!("{prefix}.{}.{key}", self.topic);
        let outgoing = Outgoing {
            subject: format!("{stem}.{}", new_event.name),
            headers: message_headers,
            payload: new_event.payload,
        };
        let published = self
            .store
            .unless_refused(&stem, append::single(self.store.client(), outgoing))
            .await?;
        match published {
            Published::Stored(position) => {
                metrics::counter!(observability::EVENTS_APPENDED, "aggregate_type" => self.topic)
                    .increment(1);
                Ok(PublishReceipt {
                    event_id: id,
                    position,
                    duplicate: false,
                })
            }
            Published::Duplicate(first) => Ok(PublishReceipt {
                event_id: id,
                position: first,
                duplicate: true,
            }),
            Published::Conflict => Err(JetStreamError::Protocol(
                "a publish without a concurrency guard reported a conflict".into(),
            )
            .into()),
        }
    }
}
