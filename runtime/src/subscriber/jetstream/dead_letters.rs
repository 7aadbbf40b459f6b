//! The dead-letter stream: where messages a subscriber cannot handle go, and how they come back.
//!
//! One stream per event stream, `<stream>_DLQ`, capturing `jetsource_dlq.<stream>.>`. A dead
//! letter of subscriber `d` is stored on `jetsource_dlq.<stream>.dead.<d>` with the original
//! payload, the original `Jetsource-*` headers and `Jetsource-Dlq-*` headers saying why.
//! Redriving moves it to `jetsource_dlq.<stream>.redrive.<d>`, which the running subscriber
//! consumes beside its events (redriven events are not re-appended to the event stream: that
//! would store the event twice). A redriven letter keeps its `Jetsource-Dlq-Delivery-Count`, so
//! the subscriber numbers its attempts on from there (see `process.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;

use super::placement::Placement;
use crate::subscriber::dead_letter::{DeadLetter, DeadLetterReason};
use crate::subscriber::error::SubscriberError;
use crate::wire::{self, EventMetadata};
use crate::JetStreamStore;

pub(crate) const REASON: &str = "Jetsource-Dlq-Reason";
pub(crate) const ERROR: &str = "Jetsource-Dlq-Error";
pub(crate) const SUBJECT: &str = "Jetsource-Dlq-Subject";
pub(crate) const STREAM: &str = "Jetsource-Dlq-Stream";
pub(crate) const STREAM_SEQ: &str = "Jetsource-Dlq-Stream-Sequence";
pub(crate) const DELIVERIES: &str = "Jetsource-Dlq-Delivery-Count";
pub(crate) const SUBSCRIBER: &str = "Jetsource-Dlq-Subscriber";
pub(crate) const TIME: &str = "Jetsource-Dlq-Time";
const MSG_ID: &str = "Nats-Msg-Id";

pub(crate) fn stream_name(event_stream: &str) -> String {
    format!("{event_stream}_DLQ")
}

pub(crate) fn base_subject(event_stream: &str) -> String {
    format!("jetsource_dlq.{event_stream}")
}

pub(crate) fn dead_subject(event_stream: &str, durable: &str) -> String {
    format!("{}.dead.{durable}", base_subject(event_stream))
}

pub(crate) fn redrive_subject(event_stream: &str, durable: &str) -> String {
    format!("{}.redrive.{durable}", base_subject(event_stream))
}

/// Creates the dead-letter stream if it is missing.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    event_stream: &str,
    placement: Placement,
) -> Result<stream::Stream, SubscriberError> {
    js.get_or_create_stream(stream::Config {
        name: stream_name(event_stream),
        subjects: vec![format!("{}.>", base_subject(event_stream))],
        storage: placement.storage,
        num_replicas: placement.replicas,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| SubscriberError::js("creating the dead-letter stream", e))
}

/// Keeps one header value free of control characters and reasonably short.
fn header_safe(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1_000)
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// What a dead letter is built from.
pub(crate) struct DeadLetterDraft<'a> {
    pub event_stream: &'a str,
    pub durable: &'a str,
    pub reason: DeadLetterReason,
    pub error: &'a str,
    pub original_subject: &'a str,
    pub position: u64,
    pub deliveries: u64,
    /// Dedupe key: `m:<stream seq>` for events, `r:<dlq seq>` for redriven letters.
    pub dedupe: String,
}

/// The headers of a dead letter: the original ones except NATS control headers and old
/// `Jetsource-Dlq-*` ones, plus the reasons.
pub(crate) fn dead_letter_headers(
    original: Option<&HeaderMap>,
    draft: &DeadLetterDraft<'_>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name == MSG_ID {
                // The event's own message id carries its command id, which would be lost with
                // the NATS headers; a letter's (`dlq:...`) is not the event's.
                let own = values.first().filter(|id| !id.as_str().starts_with("dlq:"));
                if let Some(msg_id) = own {
                    headers.insert(crate::wire::ORIGINAL_MSG_ID_HEADER, msg_id.as_str());
                }
                continue;
            }
            if name.starts_with("Nats-") || name.starts_with("Jetsource-Dlq-") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    headers.insert(REASON, draft.reason.as_str());
    headers.insert(ERROR, header_safe(draft.error).as_str());
    headers.insert(SUBJECT, header_safe(draft.original_subject).as_str());
    headers.insert(STREAM, draft.event_stream);
    headers.insert(STREAM_SEQ, draft.position.to_string().as_str());
    headers.insert(DELIVERIES, draft.deliveries.to_string().as_str());
    headers.insert(SUBSCRIBER, draft.durable);
    headers.insert(TIME, nanos.to_string().as_str());
    headers.insert(
        MSG_ID,
        format!("dlq:{}:{}", draft.durable, draft.dedupe).as_str(),
    );
    headers
}

/// Publishes a dead letter and waits for the server to store it.
pub(crate) async fn publish(
    js: &jetstream::Context,
    headers: HeaderMap,
    payload: Bytes,
    draft: &DeadLetterDraft<'_>,
) -> Result<(), String> {
    let subject = dead_subject(draft.event_stream, draft.durable);
    let ack = js
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

/// Reads and redrives the dead letters of a store's stream.
///
/// ```no_run
/// # async fn run(store: jetsource::JetStreamStore) -> Result<(), Box<dyn std::error::Error>> {
/// use jetsource::subscriber::DeadLetters;
/// let dead = DeadLetters::open(&store).await?;
/// let moved = dead.redrive("billing").await?;
/// println!("{moved} dead letters handed back to the billing subscriber");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    event_stream: String,
}

impl DeadLetters {
    /// Opens (creating if needed) the dead-letter stream of `store`'s event stream.
    pub async fn open(store: &JetStreamStore) -> Result<Self, SubscriberError> {
        let js = jetstream::new(store.client().clone());
        let event_stream = store.config().name.clone();
        ensure_stream(&js, &event_stream, Placement::of(store)).await?;
        Ok(DeadLetters { js, event_stream })
    }

    /// The dead letters of subscriber `durable`, oldest first.
    pub async fn list(&self, durable: &str) -> Result<Vec<DeadLetter>, SubscriberError> {
        Ok(self
            .read(durable)
            .await?
            .into_iter()
            .filter_map(|(seq, msg)| parse(seq, &msg))
            .collect())
    }

    /// Hands every dead letter of subscriber `durable` back to it: each is moved to the
    /// subscriber's redrive subject, which the running subscriber consumes (the handler runs
    /// again; a failure dead-letters it again). Returns how many were moved.
    ///
    /// A redrive is an operator's explicit "try again": the letter gets a new round of up to
    /// [`max_deliver`](crate::subscriber::SubscriberConfig::max_deliver) attempts, with the
    /// usual back-off, even if its attempts so far already reached it. The attempts are
    /// numbered on from the ones the letter records
    /// ([`EventContext::delivery_count`](crate::subscriber::EventContext::delivery_count) of a
    /// letter dead-lettered after 3 attempts starts at 4), and a letter that fails again is
    /// dead-lettered again with the total.
    pub async fn redrive(&self, durable: &str) -> Result<usize, SubscriberError> {
        let letters = self.read(durable).await?;
        self.move_to_redrive(durable, letters).await
    }

    /// Like [`DeadLetters::redrive`], but hands back only the dead letters of subscriber
    /// `durable` that `select` picks; the others stay where they are. Messages on the dead
    /// subject that are not readable dead letters (no reason or subject header) are never
    /// picked. Returns how many were moved.
    ///
    /// ```no_run
    /// # async fn run(store: jetsource::JetStreamStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use jetsource::subscriber::{DeadLetterReason, DeadLetters};
    /// let dead = DeadLetters::open(&store).await?;
    /// // The handler bug is fixed; payloads that cannot be decoded stay dead-lettered.
    /// let moved = dead
    ///     .redrive_matching("billing", |letter| letter.reason == DeadLetterReason::Permanent)
    ///     .await?;
    /// println!("{moved} dead letters handed back to the billing subscriber");
    /// # Ok(()) }
    /// ```
    pub async fn redrive_matching(
        &self,
        durable: &str,
        select: impl Fn(&DeadLetter) -> bool,
    ) -> Result<usize, SubscriberError> {
        let letters = self
            .read(durable)
            .await?
            .into_iter()
            .filter(|(seq, msg)| parse(*seq, msg).is_some_and(|letter| select(&letter)))
            .collect();
        self.move_to_redrive(durable, letters).await
    }

    /// Moves `letters` (read from the dead subject of `durable`) to its redrive subject.
    async fn move_to_redrive(
        &self,
        durable: &str,
        letters: Vec<(u64, async_nats::jetstream::message::StreamMessage)>,
    ) -> Result<usize, SubscriberError> {
        let stream = self
            .js
            .get_stream(stream_name(&self.event_stream))
            .await
            .map_err(|e| SubscriberError::js("opening the dead-letter stream", e))?;
        let subject = redrive_subject(&self.event_stream, durable);
        let mut moved = 0;
        for (seq, msg) in letters {
            let mut headers = msg.headers.clone();
            headers.insert(MSG_ID, format!("redrive:{seq}").as_str());
            self.js
                .publish_with_headers(subject.clone(), headers, msg.payload.clone())
                .await
                .map_err(|e| SubscriberError::js("publishing a redriven dead letter", e))?
                .await
                .map_err(|e| SubscriberError::js("publishing a redriven dead letter", e))?;
            stream
                .delete_message(seq)
                .await
                .map_err(|e| SubscriberError::js("deleting a redriven dead letter", e))?;
            moved += 1;
        }
        tracing::info!(durable, moved, "redrove dead letters");
        Ok(moved)
    }

    /// Every stored message on the dead subject of `durable`, through an ordered consumer that
    /// is gone when this returns.
    async fn read(
        &self,
        durable: &str,
    ) -> Result<Vec<(u64, async_nats::jetstream::message::StreamMessage)>, SubscriberError> {
        let subject = dead_subject(&self.event_stream, durable);
        let stream = self
            .js
            .get_stream(stream_name(&self.event_stream))
            .await
            .map_err(|e| SubscriberError::js("opening the dead-letter stream", e))?;
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(msg) => msg.sequence,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(SubscriberError::js("reading dead letters", e)),
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| SubscriberError::js("reading dead letters", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| SubscriberError::js("reading dead letters", e))?;
        let mut out = Vec::new();
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| SubscriberError::js("reading dead letters", e))?;
            let info = msg
                .info()
                .map_err(|e| SubscriberError::js("reading dead letters", e))?;
            let seq = info.stream_sequence;
            let pending = info.pending;
            out.push((
                seq,
                async_nats::jetstream::message::StreamMessage {
                    subject: msg.subject.clone(),
                    sequence: seq,
                    headers: msg.headers.clone().unwrap_or_default(),
                    payload: msg.payload.clone(),
                    time: info.published,
                },
            ));
            if seq >= last || pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

fn parse(seq: u64, msg: &async_nats::jetstream::message::StreamMessage) -> Option<DeadLetter> {
    let get = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned());
    let mut headers = BTreeMap::new();
    for (name, values) in msg.headers.iter() {
        if let Some(value) = values.first() {
            headers.insert(name.to_string(), value.as_str().to_owned());
        }
    }
    let nanos: u64 = get(TIME).and_then(|t| t.parse().ok()).unwrap_or(0);
    let subject = get(SUBJECT)?;
    let event = event_metadata(&subject, &headers);
    Some(DeadLetter {
        dead_letter_sequence: seq,
        subscriber: get(SUBSCRIBER)?,
        reason: DeadLetterReason::parse(&get(REASON)?)?,
        error: get(ERROR).unwrap_or_default(),
        position: get(STREAM_SEQ)?.parse().ok()?,
        event_id: event.as_ref().map(|e| e.id),
        event_version: event.as_ref().map(|e| e.version),
        event_name: event.map(|e| e.name),
        subject,
        delivery_count: get(DELIVERIES).and_then(|d| d.parse().ok()).unwrap_or(0),
        dead_lettered_at: UNIX_EPOCH + Duration::from_nanos(nanos),
        headers,
        payload: msg.payload.clone(),
    })
}

/// The metadata of the event a letter holds, from its original subject and headers; `None`
/// when the message was no readable jetsource event (the reason a letter is `corrupt`).
fn event_metadata(subject: &str, headers: &BTreeMap<String, String>) -> Option<EventMetadata> {
    let (_, parts) = wire::split_subject(subject)?;
    let headers = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    EventMetadata::decode(parts, headers).ok()
}

/// The handler attempts a dead letter records, read when it comes back through a redrive; 0
/// for a message without the header (never a letter of this runtime).
pub(crate) fn recorded_attempts(headers: Option<&HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(DELIVERIES))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jetstream::headers;

    #[test]
    fn a_letter_keeps_the_events_command_id_but_not_its_own_message_id() {
        let mut original = HeaderMap::new();
        original.insert(
            crate::wire::EVENT_HEADER,
            "1 3 0190a1b27c3d7e4f8a9b0c1d2e3f4a5b 1 json 7",
        );
        original.insert(MSG_ID, "account.a1:cmd-7:0");
        let draft = DeadLetterDraft {
            event_stream: "BANK",
            durable: "mailer",
            reason: DeadLetterReason::Undecodable,
            error: "bad",
            original_subject: "bank.account.a1.opened",
            position: 9,
            deliveries: 1,
            dedupe: "m:9".into(),
        };
        let letter = dead_letter_headers(Some(&original), &draft);
        let event = headers::decode("account.a1.opened", 9, &letter, Bytes::new()).unwrap();
        assert_eq!(event.command_id.as_deref(), Some("cmd-7"));
        // Dead-lettered again (after a redrive): the letter's own id is not taken for the event's.
        let again = dead_letter_headers(Some(&letter), &draft);
        assert_eq!(
            again
                .get(crate::wire::ORIGINAL_MSG_ID_HEADER)
                .map(|v| v.as_str()),
            Some("account.a1:cmd-7:0")
        );
    }

    fn stored(headers: HeaderMap) -> async_nats::jetstream::message::StreamMessage {
        async_nats::jetstream::message::StreamMessage {
            subject: "jetsource_dlq.BANK.dead.mailer".into(),
            sequence: 4,
            headers,
            payload: Bytes::new(),
            time: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn draft(reason: DeadLetterReason, deliveries: u64) -> DeadLetterDraft<'static> {
        DeadLetterDraft {
            event_stream: "BANK",
            durable: "mailer",
            reason,
            error: "bad",
            original_subject: "bank.account.a1.opened",
            position: 9,
            deliveries,
            dedupe: "m:9".into(),
        }
    }

    #[test]
    fn a_letter_names_its_events_id_name_and_version() {
        let id = uuid::Uuid::from_u128(0x0190a1b2_7c3d_7e4f_8a9b_0c1d2e3f4a5b);
        let mut original = HeaderMap::new();
        original.insert(
            crate::wire::EVENT_HEADER,
            "1 3 0190a1b27c3d7e4f8a9b0c1d2e3f4a5b 2 json 7",
        );
        let draft = draft(DeadLetterReason::Permanent, 4);
        let headers = dead_letter_headers(Some(&original), &draft);
        assert_eq!(recorded_attempts(Some(&headers)), 4);
        let letter = parse(4, &stored(headers)).expect("a readable letter");
        assert_eq!(letter.event_id, Some(id));
        assert_eq!(letter.event_name.as_deref(), Some("opened"));
        assert_eq!(letter.event_version, Some(2));
        assert_eq!(letter.delivery_count, 4);
    }

    #[test]
    fn a_letter_of_a_message_without_metadata_has_no_event_fields() {
        let draft = draft(DeadLetterReason::Corrupt, 1);
        let letter = parse(4, &stored(dead_letter_headers(None, &draft))).expect("a letter");
        assert_eq!(letter.reason, DeadLetterReason::Corrupt);
        assert_eq!(letter.subject, "bank.account.a1.opened");
        assert_eq!(
            (letter.event_id, letter.event_name, letter.event_version),
            (None, None, None)
        );
        assert_eq!(recorded_attempts(None), 0);
    }
}
