//! The per-aggregate queues between the dispatcher and the workers: a report that a delivery
//! is over releases its aggregate's next message.

use std::collections::{HashMap, VecDeque};

use async_nats::Subject;
use tokio::sync::mpsc;

use super::delivery::{Delivery, Done, Source};

/// Per-aggregate queues in front of a fixed pool of `concurrency` workers. An aggregate with a
/// key in `queues` has one message with a worker (or on its way to one); its later messages
/// wait in the queue and go out one at a time as the previous one completes.
pub(super) struct Router {
    pub(super) queues: HashMap<String, VecDeque<Delivery>>,
    /// Every message handed out and not completed, for in-progress acks.
    pub(super) outstanding: HashMap<(Source, u64), Subject>,
    /// Messages sent to the workers and not reported done yet.
    pub(super) in_flight: usize,
    pub(super) work: Option<mpsc::UnboundedSender<Delivery>>,
}

impl Router {
    pub(super) fn route(&mut self, d: Delivery) {
        if let Some(reply) = &d.msg.reply {
            self.outstanding.insert((d.source, d.seq), reply.clone());
        }
        if let Some(queue) = self.queues.get_mut(&d.key) {
            queue.push_back(d);
        } else {
            self.queues.insert(d.key.clone(), VecDeque::new());
            self.send(d);
        }
    }

    pub(super) fn done(&mut self, done: Done) {
        self.outstanding.remove(&(done.source, done.seq));
        self.in_flight -= 1;
        if self.work.is_none() {
            // Draining: what waits stays queued, to be nak'ed in order.
            return;
        }
        let next = match self.queues.get_mut(&done.key) {
            Some(queue) => queue.pop_front(),
            None => None,
        };
        match next {
            Some(d) => self.send(d),
            None => {
                self.queues.remove(&done.key);
            }
        }
    }

    fn send(&mut self, d: Delivery) {
        if let Some(work) = &self.work {
            // The workers live as long as the sender; a failed send means they are gone, and
            // the message comes back after the ack wait.
            if work.send(d).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// Everything still waiting behind a busy aggregate.
    pub(super) fn waiting(&mut self) -> Vec<Delivery> {
        self.queues.values_mut().flat_map(|q| q.drain(..)).collect()
    }
}
