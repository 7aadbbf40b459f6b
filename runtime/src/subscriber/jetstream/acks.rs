//! Acks and naks, and the acks of completion rounds the completion log stored.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio::sync::mpsc;

use super::delivery::{Completion, Done, Shared};
use super::router::Router;
use crate::subscriber::config::AckMode;
use crate::subscriber::handler::Subscriber;

/// Acks a round of completions the completion log stored and reports them done. Fast acks
/// only queue a publish, so the dispatcher sends them itself; confirmed acks wait for the
/// server, so a task sends those and reports through `done_tx`.
pub(super) async fn acked<S: Subscriber>(
    shared: &Arc<Shared<S>>,
    round: Vec<Completion>,
    router: &mut Router,
    done_tx: &mpsc::UnboundedSender<Done>,
) {
    match shared.config.ack_mode {
        AckMode::Fast => {
            for Completion { msg, report } in round {
                ack(shared, &msg).await;
                router.done(report);
            }
        }
        AckMode::Confirmed => {
            let shared = shared.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let acks = round.into_iter().map(|Completion { msg, report }| {
                    let (shared, done_tx) = (&shared, &done_tx);
                    async move {
                        ack(shared, &msg).await;
                        let _ = done_tx.send(report);
                    }
                });
                futures::future::join_all(acks).await;
            });
        }
    }
}

pub(super) async fn nak(msg: &Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "nak failed; the message comes back after the ack wait");
    }
}

pub(super) async fn ack<S: Subscriber>(shared: &Shared<S>, msg: &Message) {
    let result = match shared.config.ack_mode {
        AckMode::Fast => msg.ack().await,
        AckMode::Confirmed => {
            use backon::BackoffBuilder;
            // Three more tries, 200 ms apart give or take jitter.
            let mut delays = backon::ConstantBuilder::default()
                .with_delay(Duration::from_millis(200))
                .with_max_times(3)
                .with_jitter()
                .build();
            let mut result = msg.double_ack().await;
            while result.is_err() {
                let Some(delay) = delays.next() else { break };
                tokio::time::sleep(delay).await;
                result = msg.double_ack().await;
            }
            result
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "ack failed; a redelivery will be skipped as a duplicate");
    }
}
