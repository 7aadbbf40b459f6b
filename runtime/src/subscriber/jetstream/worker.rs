//! The workers of a lane: each takes messages off the shared queue and runs the per-event loop
//! on them, one at a time.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::delivery::{Delivery, Done, Shared};
use crate::subscriber::handler::Subscriber;
use crate::subscriber::process::{process, Settled};

pub(super) async fn worker<S: Subscriber>(
    shared: Arc<Shared<S>>,
    work: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    done: mpsc::UnboundedSender<Done>,
) {
    loop {
        let next = work.lock().await.recv().await;
        let Some(delivery) = next else { break };
        let report = delivery.report();
        match process(&*shared, delivery).await {
            Settled::Done => {
                let _ = done.send(report);
            }
            // The ack waits for the group commit of the completion: the completion log hands
            // it back to the dispatcher with its round, which reports it then. The worker
            // moves on; the aggregate stays busy until then.
            Settled::AwaitingCompletion => {}
        }
    }
}
