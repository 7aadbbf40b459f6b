//! What a store and its clones share: the connection, the stream, what they remember of
//! aggregates, and the helpers the append and load paths need from them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::cache::Cache;
use super::config::StreamConfig;
use super::error::JetStreamError;
use super::history::Histories;
use super::read;
use super::refusals::Refusals;
use crate::store::AggregateKey;
use crate::wire;

pub(super) struct Shared {
    pub client: async_nats::Client,
    pub stream: jetstream::stream::Stream,
    pub kv: kv::Store,
    pub config: StreamConfig,
    pub timeout: Duration,
    /// Per aggregate: version, last stream sequence, command outcomes.
    pub cache: Cache,
    /// Per aggregate: its recent events.
    pub histories: Histories,
    /// (version, position) pairs learned from snapshots, so a load from `version + 1` starts
    /// at `position + 1` instead of the stream's start.
    pub anchors: Mutex<HashMap<AggregateKey, (u64, u64)>>,
    /// The server keeps at most 50 open atomic batches per stream (error 10210 past it).
    pub batches: tokio::sync::Semaphore,
    /// The server's max payload when the store was opened (reading it per append would copy
    /// the whole server info); 0 when unknown.
    pub max_payload: usize,
    /// Publishes the server refused (recorded only on connections the store opened itself).
    pub refusals: Refusals,
}

impl Shared {
    /// `<prefix>.<type>.<id>.*`: all events of the aggregate.
    pub(super) fn filter(&self, key: &AggregateKey) -> String {
        wire::aggregate_filter(&self.config.prefix, key.aggregate_type, key.id.as_str())
    }

    pub(super) fn reader(&self) -> read::Reader<'_> {
        read::Reader {
            client: &self.client,
            handle: &self.stream,
            stream: &self.config.name,
            prefix_len: self.config.prefix.len(),
            timeout: self.timeout,
        }
    }

    /// The server's max payload (0 when unknown).
    pub(super) fn max_payload(&self) -> usize {
        match self.max_payload {
            0 => self.client.server_info().max_payload,
            known => known,
        }
    }

    /// Runs `publish` (messages under `stem`) until its ack or a refusal of its subject.
    pub(super) async fn unless_refused<T>(
        &self,
        stem: &str,
        publish: impl std::future::Future<Output = Result<T, JetStreamError>>,
    ) -> Result<T, JetStreamError> {
        let timeout = self.timeout;
        self.refusals.unless_refused(stem, timeout, publish).await
    }
}
