//! Crash recovery: a lane that starts on a consumer whose previous lane died hands the dead
//! lane's deliveries back to the server at once, instead of waiting an ack wait for them.
//!
//! Every running lane subscribes to [`lane_subject`] and answers requests on it. A lane that
//! starts with unacknowledged deliveries on its consumer (or, partitioned, that just received
//! the partition's pin) asks that subject first. The server answers "no responders" only when
//! no connection subscribes to it: the lane that held those deliveries ended (a SIGKILLed
//! process's connection closes with it). Any answer, or none in time (a process frozen, a host
//! gone without closing its connection, a user not allowed the subject), leaves them to the
//! ack wait as before, so a live lane never sees its messages taken while its handlers run.
//!
//! Handing back is a `nak` for every stream sequence between the consumer's ack floor and the
//! last delivery made before this lane received anything: the server skips sequences that are
//! not pending, and queues the pending ones for redelivery in the order the naks arrive (stream
//! order), exactly as if their ack wait had expired now. Sequences this lane received are never
//! included: a nak of a delivery the lane holds would have it delivered twice. (A partition lane
//! probes when it receives the pin and hands back at its first fresh delivery, bounding the span
//! below that delivery's sequence: deliveries it received before are redeliveries it holds, and
//! any the server sends after it are newer.) Delivery counts are kept, so the redeliveries are checked against the
//! completion log; acknowledged messages are not delivered again. (The consumer reset API of
//! nats-server 2.14 would redeliver everything after the ack floor, acknowledged or not, and
//! restart the delivery sequence the dispatcher watches for gaps.)

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::Info;
use async_nats::{Client, RequestErrorKind, Subscriber};
use bytes::Bytes;

use crate::subscriber::error::SubscriberError;

/// How long a probe waits for a live lane's answer; a lane answers from its dispatcher loop,
/// which is never busy that long.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// The widest span of stream sequences handed back by naks (one small publish each, about
/// 100,000 a second here); a wider one waits for the ack wait.
pub(super) const SWEEP_LIMIT: u64 = 50_000;

/// The subject every running lane of `consumer` on `stream` answers on.
fn lane_subject(stream: &str, consumer: &str) -> String {
    format!("jetsource_lane.{stream}.{consumer}")
}

/// Subscribes a starting lane to its [`lane_subject`], and makes sure the server knows the
/// subscription before the lane handles anything, so no later probe misses it.
pub(super) async fn subscribe_lane(
    client: &Client,
    stream: &str,
    consumer: &str,
) -> Result<Subscriber, SubscriberError> {
    let subscription = client
        .subscribe(lane_subject(stream, consumer))
        .await
        .map_err(|e| SubscriberError::js("announcing the lane", e))?;
    client
        .flush()
        .await
        .map_err(|e| SubscriberError::js("announcing the lane", e))?;
    Ok(subscription)
}

/// What a probe learned about the lanes of a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Predecessor {
    /// No connection subscribes to the lane subject: no lane of this consumer runs.
    Gone,
    /// A lane answered: it may still be handling what it holds.
    Running,
    /// No answer in time, or the request failed: assume a lane still runs.
    Unknown,
}

/// Asks whether a lane of the consumer behind `subject` runs anywhere.
async fn probe(client: &Client, subject: &str) -> Predecessor {
    match tokio::time::timeout(PROBE_WAIT, client.request(subject.to_owned(), Bytes::new())).await {
        Ok(Ok(_)) => Predecessor::Running,
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Predecessor::Gone,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, subject, "probing for a running lane failed");
            Predecessor::Unknown
        }
        Err(_) => Predecessor::Unknown,
    }
}

/// The consumer state a hand-back covers: stream sequences `(floor, last]`, and the newest
/// delivery sequence.
#[derive(Debug, Clone, Copy)]
struct Span {
    floor: u64,
    last: u64,
    delivery: u64,
}

impl Span {
    fn of(info: &Info) -> Self {
        Span {
            floor: info.ack_floor.stream_sequence,
            last: info.delivered.stream_sequence,
            delivery: info.delivered.consumer_sequence,
        }
    }
}

/// The ack subjects that `nak` every stream sequence of `span` but those in `in_hand`; `None`
/// when the span is wider than [`SWEEP_LIMIT`].
fn nak_subjects(
    stream: &str,
    consumer: &str,
    span: Span,
    in_hand: &HashSet<u64>,
) -> Option<Vec<String>> {
    let Span {
        floor,
        last,
        delivery,
    } = span;
    if last.saturating_sub(floor) > SWEEP_LIMIT {
        return None;
    }
    // The server checks only that the delivery sequence lies between its ack floor and its
    // last delivery, and that the stream sequence is pending; the newest delivery sequence
    // always does.
    Some(
        (floor + 1..=last)
            .filter(|seq| !in_hand.contains(seq))
            .map(|seq| format!("$JS.ACK.{stream}.{consumer}.1.{seq}.{delivery}.0.0"))
            .collect(),
    )
}

/// Hands the deliveries of a lane that is gone back to the server for immediate redelivery:
/// for a lane that has received nothing yet. Returns how many sequences were nak'ed, or `None`
/// when nothing was done (a lane may still run, nothing is pending elsewhere, or the span is
/// too wide).
pub(super) async fn hand_back(
    client: &Client,
    stream: &str,
    consumer: &str,
    info: &Info,
) -> Result<Option<usize>, SubscriberError> {
    if info.num_ack_pending == 0 {
        return Ok(None);
    }
    if !predecessor_gone(client, stream, consumer, info.num_ack_pending).await {
        return Ok(None);
    }
    let upto = info.delivered.stream_sequence;
    nak_span(client, stream, consumer, info, upto, &HashSet::new()).await
}

/// Whether the lane that holds `pending` unacknowledged deliveries of `consumer` is gone (no
/// connection answers on its [`lane_subject`]); says why it waits when it is not.
pub(super) async fn predecessor_gone(
    client: &Client,
    stream: &str,
    consumer: &str,
    pending: usize,
) -> bool {
    let predecessor = probe(client, &lane_subject(stream, consumer)).await;
    if predecessor != Predecessor::Gone {
        tracing::info!(
            consumer,
            ?predecessor,
            pending,
            "unacknowledged deliveries may be in a running lane's hands; waiting for them"
        );
    }
    predecessor == Predecessor::Gone
}

/// Naks every stream sequence after the ack floor up to `upto` but those `in_hand`, once a
/// probe found the lane that held them gone.
pub(super) async fn nak_span(
    client: &Client,
    stream: &str,
    consumer: &str,
    info: &Info,
    upto: u64,
    in_hand: &HashSet<u64>,
) -> Result<Option<usize>, SubscriberError> {
    let mut span = Span::of(info);
    span.last = span.last.min(upto);
    let Some(subjects) = nak_subjects(stream, consumer, span, in_hand) else {
        tracing::warn!(
            consumer,
            floor = info.ack_floor.stream_sequence,
            delivered = info.delivered.stream_sequence,
            "the unacknowledged span is too wide to hand back; waiting for the ack wait"
        );
        return Ok(None);
    };
    for subject in &subjects {
        client
            .publish(subject.clone(), Bytes::from_static(b"-NAK"))
            .await
            .map_err(|e| SubscriberError::js("handing back a dead lane's deliveries", e))?;
    }
    client
        .flush()
        .await
        .map_err(|e| SubscriberError::js("handing back a dead lane's deliveries", e))?;
    tracing::info!(
        consumer,
        pending = info.num_ack_pending,
        naked = subjects.len(),
        "the previous lane is gone: its deliveries come back now"
    );
    Ok(Some(subjects.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(floor: u64, last: u64, delivery: u64) -> Span {
        Span {
            floor,
            last,
            delivery,
        }
    }

    #[test]
    fn naks_cover_the_span_after_the_floor_but_what_is_in_hand() {
        let subjects = nak_subjects("S_P2", "d_p1", span(4, 8, 12), &HashSet::from([6]))
            .expect("a narrow span");
        assert_eq!(
            subjects,
            [
                "$JS.ACK.S_P2.d_p1.1.5.12.0.0",
                "$JS.ACK.S_P2.d_p1.1.7.12.0.0",
                "$JS.ACK.S_P2.d_p1.1.8.12.0.0",
            ]
        );
    }

    #[test]
    fn a_span_wider_than_the_limit_is_left_to_the_ack_wait() {
        let wide = span(10, 10 + SWEEP_LIMIT + 1, 3);
        assert!(nak_subjects("S", "d", wide, &HashSet::new()).is_none());
        let widest_allowed = span(10, 10 + SWEEP_LIMIT, 3);
        assert!(nak_subjects("S", "d", widest_allowed, &HashSet::new()).is_some());
    }
}
