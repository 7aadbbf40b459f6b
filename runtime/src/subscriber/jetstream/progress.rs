//! How far a JetStream durable got, as the server keeps it: the consumer's ack floor and what
//! it still has to deliver or see acknowledged. Scaled out, every partition's consumer, on the
//! partition stream's own positions.

use async_nats::jetstream::{self, consumer};

use super::consumer::partition_stream_name;
use crate::subscriber::config::SubscriberConfig;
use crate::subscriber::error::SubscriberError;
use crate::subscriber::progress::{Progress, ProgressFuture};

pub(crate) struct JetStreamProgress {
    event_stream: NamedStream,
    durable: String,
    partitions: Option<(u16, NamedStream)>,
}

/// A stream handle that remembers its name for errors.
struct NamedStream {
    name: String,
    stream: jetstream::stream::Stream<()>,
}

impl NamedStream {
    async fn open(js: &jetstream::Context, name: String) -> Result<Self, SubscriberError> {
        let stream = js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| SubscriberError::js(format!("opening stream {name}"), e))?;
        Ok(NamedStream { name, stream })
    }
}

impl std::fmt::Debug for JetStreamProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamProgress")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl JetStreamProgress {
    pub(crate) async fn open(
        js: &jetstream::Context,
        event_stream: &str,
        config: &SubscriberConfig,
    ) -> Result<Self, SubscriberError> {
        let partitions = match config.partitions {
            Some(count) => {
                let name = partition_stream_name(event_stream, count);
                Some((count, NamedStream::open(js, name).await?))
            }
            None => None,
        };
        Ok(JetStreamProgress {
            event_stream: NamedStream::open(js, event_stream.to_owned()).await?,
            durable: config.durable_name.clone(),
            partitions,
        })
    }

    async fn last_position(stream: &NamedStream) -> Result<u64, SubscriberError> {
        let info = stream
            .stream
            .get_info()
            .await
            .map_err(|e| SubscriberError::js(format!("reading stream {}", stream.name), e))?;
        Ok(info.state.last_sequence)
    }

    /// Whether consumer `name` on `stream` has settled everything up to `position`, a position
    /// of that stream.
    async fn consumer_settled(
        stream: &NamedStream,
        name: &str,
        position: u64,
    ) -> Result<bool, SubscriberError> {
        let info: consumer::Info = stream
            .stream
            .consumer_info(name)
            .await
            .map_err(|e| SubscriberError::js(format!("reading consumer {name}"), e))?;
        if info.ack_floor.stream_sequence >= position {
            return Ok(true);
        }
        // A filtered consumer's ack floor stays at the last event it received: past it, the
        // events it does not handle count as settled once nothing is left to deliver or ack.
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            return Ok(false);
        }
        Ok(Self::last_position(stream).await? >= position)
    }

    /// Scaled out: `position` is an event-stream position, while the partition consumers
    /// count the partition stream's. Once the partition stream's newest message came from at
    /// or after `position`, every partition consumer must have settled up to that message.
    async fn partitions_settled(
        &self,
        count: u16,
        stream: &NamedStream,
        position: u64,
    ) -> Result<bool, SubscriberError> {
        let newest = Self::last_position(stream).await?;
        if newest == 0 {
            return Ok(false);
        }
        let message = stream.stream.get_raw_message(newest).await.map_err(|e| {
            SubscriberError::js(format!("reading message {newest} of {}", stream.name), e)
        })?;
        let sourced_up_to =
            super::dispatch::sourced_origin(Some(&message.headers)).map_or(0, |(_, origin)| origin);
        if sourced_up_to < position {
            return Ok(false);
        }
        for partition in 0..count {
            let name = format!("{}_p{partition}", self.durable);
            if !Self::consumer_settled(stream, &name, newest).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Progress for JetStreamProgress {
    fn durable(&self) -> &str {
        &self.durable
    }

    fn settled_through(&self, position: u64) -> ProgressFuture<'_, bool> {
        Box::pin(async move {
            match &self.partitions {
                None => Self::consumer_settled(&self.event_stream, &self.durable, position).await,
                Some((count, stream)) => self.partitions_settled(*count, stream, position).await,
            }
        })
    }

    fn newest(&self) -> ProgressFuture<'_, u64> {
        Box::pin(Self::last_position(&self.event_stream))
    }
}
