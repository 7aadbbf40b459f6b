//! Events another store committed, published into this store's stream: the PostgreSQL relay's
//! side of JetStream. They get the subjects and wire format of this store's own appends, so
//! subscribers cannot tell them apart.

use super::append::{self, Outgoing, Published};
use super::{headers, JetStreamError, JetStreamStore};
use crate::store::{StoreError, StoredEvent};
use crate::wire;

impl JetStreamStore {
    /// The sequence of the newest event of aggregate `<aggregate_type>/<aggregate_id>` in the
    /// stream, 0 when it has none; read through the stream leader.
    pub(crate) async fn relayed_version(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<u64, StoreError> {
        let shared = &self.inner;
        let filter = wire::aggregate_filter(&shared.config.prefix, aggregate_type, aggregate_id);
        let aggregate = format!("{aggregate_type}/{aggregate_id}");
        let last = super::commit::last_event(shared, &filter, &aggregate).await?;
        Ok(last.map_or(0, |event| event.sequence))
    }

    /// Publishes `event` and waits for its ack: `true` when the stream stored it, `false` when
    /// it was a duplicate of an earlier publish. The caller keeps at most one event per
    /// aggregate in flight, so a failure can never store an aggregate's later event without
    /// its earlier one.
    ///
    /// The message's `Nats-Msg-Id` is the event's own: `<type>.<id>:<command>:<sequence>` when
    /// a command appended it (readers take the command id from it), else the event id.
    pub(crate) async fn publish_relayed(&self, event: &StoredEvent) -> Result<bool, StoreError> {
        let message = relayed_message(&self.inner.config.prefix, event);
        match append::single(&self.inner.client, message).await? {
            Published::Stored(_) => Ok(true),
            Published::Duplicate(_) => Ok(false),
            // The relay's messages carry no expectation that could fail.
            Published::Conflict => Err(JetStreamError::Protocol(
                "a relayed event without an OCC guard was refused as a conflict".into(),
            )
            .into()),
        }
    }
}

fn relayed_message(prefix: &str, event: &StoredEvent) -> Outgoing {
    let mut hdrs = headers::encode_stored(event);
    let (ty, id) = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
    let msg_id = match &event.command_id {
        Some(command) => wire::message_id(ty, id, command, event.sequence as usize),
        None => event.id.hyphenated().to_string(),
    };
    hdrs.insert(headers::name::MSG_ID, msg_id.as_str());
    Outgoing {
        subject: wire::subject(prefix, ty, id, &event.name),
        headers: hdrs,
        payload: event.payload.clone(),
    }
}
