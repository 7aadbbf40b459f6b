//! Scale-out: the processes running one subscriber share its work by partition.
//!
//! - A partition stream `<stream>_P<n>` sources the event stream and rewrites each subject
//!   `<prefix>.<type>.<id>.<event>` to `<prefix>.<p>.<type>.<id>.<event>`, where the server
//!   derives `p` from the aggregate type and id (`{{partition(n,1,2)}}`). The event store and
//!   its subjects stay as they are; an aggregate's events all land in one partition, in order.
//! - Each partition has its own durable consumer `<durable>_p<p>` in a pinned-client priority
//!   group, so the server delivers a partition to one process at a time: a fence that holds
//!   even while two processes briefly disagree about who owns it.
//! - Processes announce themselves in a key-value bucket whose entries expire after the member
//!   TTL, and each owns the partitions `p` with `members[p % members.len()] == self` over the
//!   sorted live members. A process giving a partition up finishes and acks what it runs,
//!   `nak`s the rest and releases the pin; a process that died loses its pin after the TTL.
//!   The lane that receives a partition holds new messages until the previous owner's
//!   unacknowledged ones came back (the dispatcher's gate), so order survives the move; once it
//!   holds the pin, a previous owner that is gone has them redelivered at once (`recovery`).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::consumer::{partition_stream_name, PRIORITY_GROUP};
use super::lane::{open_lane, LaneBase, PartitionLane};
use crate::error::ErrorChain;
use crate::subscriber::error::SubscriberError;
use crate::subscriber::handler::Subscriber;

/// The bucket where the processes of one subscriber announce themselves.
pub(crate) fn members_bucket(stream: &str, durable: &str) -> String {
    format!("jetsource_members_{stream}_{durable}")
}

/// The process owning `partition` among the sorted live `members`.
fn owner(members: &[String], partition: u16) -> Option<&str> {
    if members.is_empty() {
        return None;
    }
    Some(members[usize::from(partition) % members.len()].as_str())
}

struct RunningLane {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SubscriberError>>,
}

/// The lanes this process runs. Dropped without a graceful stop (the subscriber was aborted),
/// it aborts them too, like a crash.
#[derive(Default)]
struct Lanes(HashMap<u16, RunningLane>);

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in self.0.values() {
            lane.task.abort();
        }
    }
}

/// One process's membership in a scaled-out subscriber.
pub(crate) struct Group<S: Subscriber> {
    base: LaneBase<S>,
    partitions: u16,
    partition_stream: stream::Stream,
    members: kv::Store,
    me: String,
    lanes: Lanes,
}

impl<S: Subscriber> Group<S> {
    /// Creates (or opens) the partition stream and the members bucket.
    pub(crate) async fn join(base: LaneBase<S>, partitions: u16) -> Result<Self, SubscriberError> {
        let mut events = base
            .js
            .get_stream(&base.stream)
            .await
            .map_err(|e| SubscriberError::js(format!("opening stream {}", base.stream), e))?;
        let replicas = events
            .info()
            .await
            .map_err(|e| SubscriberError::js(format!("reading stream {}", base.stream), e))?
            .config
            .num_replicas;
        let prefix = &base.prefix;
        let transform = stream::SubjectTransform {
            source: format!("{prefix}.*.*.*"),
            destination: format!(
                "{prefix}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"
            ),
        };
        let name = partition_stream_name(&base.stream, partitions);
        let partition_stream = base
            .js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                storage: base.placement.storage,
                num_replicas: replicas,
                sources: Some(vec![stream::Source {
                    name: base.stream.clone(),
                    subject_transforms: vec![transform],
                    ..Default::default()
                }]),
                ..Default::default()
            })
            .await
            .map_err(|e| SubscriberError::js(format!("creating partition stream {name}"), e))?;
        let bucket = members_bucket(&base.stream, &base.config.durable_name);
        let members = match base.js.get_key_value(&bucket).await {
            Ok(members) => {
                align_member_ttl(&base.js, &bucket, base.config.member_ttl).await;
                members
            }
            Err(_) => base
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    max_age: base.config.member_ttl,
                    storage: base.placement.storage,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| SubscriberError::js(format!("creating bucket {bucket}"), e))?,
        };
        Ok(Group {
            base,
            partitions,
            partition_stream,
            members,
            me: Uuid::now_v7().simple().to_string(),
            lanes: Lanes::default(),
        })
    }

    /// Announces this process and rebalances every quarter of the member TTL until `stop`;
    /// then stops every lane gracefully and leaves.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SubscriberError> {
        let beat = (self.base.config.member_ttl / 4).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(member = %self.me, partitions = self.partitions, "joined the subscriber group");
        let mut detached = false;
        loop {
            tokio::select! {
                changed = stop.changed(), if !detached => match changed {
                    // The handle was dropped: the subscriber runs on, as documented.
                    Err(_) => detached = true,
                    Ok(()) if *stop.borrow() => break,
                    Ok(()) => {}
                },
                _ = tick.tick() => self.rebalance().await,
            }
        }
        let all: Vec<u16> = self.lanes.0.keys().copied().collect();
        self.release(all).await;
        if let Err(e) = self.members.delete(&self.me).await {
            tracing::warn!(error = %e, "leaving the group failed; the entry expires");
        }
        tracing::info!(member = %self.me, "left the subscriber group");
        Ok(())
    }

    async fn rebalance(&mut self) {
        if let Err(e) = self.members.put(&self.me, Bytes::new()).await {
            tracing::warn!(error = %e, "announcing this process failed");
            return;
        }
        let members = match self.live_members().await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "reading the group's members failed");
                return;
            }
        };
        self.reap().await;
        let mine: Vec<bool> = (0..self.partitions)
            .map(|p| owner(&members, p) == Some(self.me.as_str()))
            .collect();
        // Released first, so the processes taking them over get the pins.
        let lost: Vec<u16> = (self.lanes.0.keys().copied())
            .filter(|&p| !mine[usize::from(p)])
            .collect();
        if !lost.is_empty() {
            tracing::info!(?lost, members = members.len(), "handing partitions over");
            self.release(lost).await;
        }
        for partition in 0..self.partitions {
            if mine[usize::from(partition)] && !self.lanes.0.contains_key(&partition) {
                self.take(partition).await;
            }
        }
    }

    async fn live_members(&self) -> Result<Vec<String>, SubscriberError> {
        let keys = self
            .members
            .keys()
            .await
            .map_err(|e| SubscriberError::js("listing the group's members", e))?;
        let mut members: Vec<String> = keys
            .try_collect()
            .await
            .map_err(|e| SubscriberError::js("listing the group's members", e))?;
        members.sort();
        Ok(members)
    }

    /// Forgets lanes that ended on their own (an error), so the next round reopens them.
    async fn reap(&mut self) {
        let ended: Vec<u16> = (self.lanes.0.iter())
            .filter(|(_, lane)| lane.task.is_finished())
            .map(|(&p, _)| p)
            .collect();
        for partition in ended {
            if let Some(lane) = self.lanes.0.remove(&partition) {
                match lane.task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(partition, error = %ErrorChain(&e), "a partition lane failed")
                    }
                    Err(e) => tracing::error!(partition, error = %e, "a partition lane panicked"),
                }
            }
        }
    }

    async fn take(&mut self, partition: u16) {
        let (stop, stopped) = watch::channel(false);
        let lane = PartitionLane {
            stream: self.partition_stream.clone(),
            index: partition,
            pin_ttl: self.base.config.member_ttl,
            // One lane per process-group handles redriven dead letters.
            redrive: partition == 0,
        };
        match open_lane(&self.base, Some(lane), stopped).await {
            Ok(dispatcher) => {
                tracing::info!(partition, "partition taken");
                let task = tokio::spawn(dispatcher.run());
                self.lanes.0.insert(partition, RunningLane { stop, task });
            }
            Err(e) => {
                tracing::warn!(partition, error = %ErrorChain(&e), "cannot open the partition; retrying")
            }
        }
    }

    /// Stops the lanes of `partitions` gracefully, then releases their pins.
    async fn release(&mut self, partitions: Vec<u16>) {
        let lanes: Vec<(u16, RunningLane)> = partitions
            .into_iter()
            .filter_map(|p| self.lanes.0.remove(&p).map(|lane| (p, lane)))
            .collect();
        for (_, lane) in &lanes {
            let _ = lane.stop.send(true);
        }
        for (partition, lane) in lanes {
            match lane.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(partition, error = %ErrorChain(&e), "a partition lane failed")
                }
                Err(e) => tracing::error!(partition, error = %e, "a partition lane panicked"),
            }
            let consumer = format!("{}_p{partition}", self.base.config.durable_name);
            if let Err(e) = self
                .partition_stream
                .unpin_consumer(&consumer, PRIORITY_GROUP)
                .await
            {
                // Not pinned any more (or never was): the next owner pulls freely.
                tracing::debug!(partition, error = %e, "releasing the pin failed");
            }
        }
    }
}

/// Entries of a bucket created with another member TTL (the default was 10 s before 1.5 s)
/// would outlive a dead process by that much: its expiry follows the configuration.
async fn align_member_ttl(js: &async_nats::jetstream::Context, bucket: &str, ttl: Duration) {
    let name = format!("KV_{bucket}");
    let stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, bucket, "reading the members bucket failed");
            return;
        }
    };
    let mut config = stream.cached_info().config.clone();
    if config.max_age == ttl {
        return;
    }
    tracing::info!(bucket, from = ?config.max_age, to = ?ttl, "member TTL changed");
    config.max_age = ttl;
    // The server refuses a duplicate window longer than the age limit.
    config.duplicate_window = config.duplicate_window.min(ttl);
    if let Err(e) = js.update_stream(config).await {
        tracing::warn!(error = %e, bucket, "updating the member TTL failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_round_robin_over_sorted_members() {
        let members = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let owners: Vec<_> = (0..6).map(|p| owner(&members, p).unwrap()).collect();
        assert_eq!(owners, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(owner(&[], 3), None);
    }
}
