//! Deadlines held by nats-server message schedules (ADR-51, server 2.12+) in the stream of an
//! instance store.
//!
//! A deadline is one message on `<prefix>.<schedule type>.<instance>.<deadline>` with headers
//! `Nats-Schedule: @at <RFC 3339 time>` and `Nats-Schedule-Target: <prefix>.<fired type>.
//! <instance>.<fired event>`, and the fired event's payload and jetsource headers. What
//! nats-server 2.15.1 does with it (measured by `tests/process_manager_schedules.rs`, and read
//! in the server's `scheduler.go` and `stream.go`):
//! - It stores the schedule and adds `Nats-Rollup: sub`, so a new schedule on the subject
//!   replaces the old one: sending a deadline again is idempotent, and rescheduling is a send.
//! - When due it stores a copy on the target with every header of the schedule except
//!   `Nats-Schedule*`, `Nats-Expected-*`, `Nats-Msg-Id`, `Nats-TTL` and `Nats-Rollup`, adds
//!   `Nats-Scheduler: <schedule subject>` and `Nats-Schedule-Next: purge`, and then purges the
//!   schedule. The copy is therefore an ordinary jetsource event of (fired type, instance).
//! - `@at` takes RFC 3339 with or without fractions of a second; a time in the past fires at
//!   once. The server looks for due schedules at most every 250 ms: a past one is stored
//!   250 ms after it was sent, a future one 0 to 250 ms after it is due, never before;
//!   1,000 due at the same instant all fired within 30 ms of it.
//! - Schedules survive restarts; one that fell due while the server was down fires at once.
//! - Purging the schedule's subject cancels it. A cancel racing the fire may come too late:
//!   the fired event can still be stored, so whoever handles it must check it is still wanted.
//! - The fire is stored before the schedule is purged: a crash between the two fires the
//!   deadline again after recovery, with the same event id.
//!
//! The schedule itself is a message of the stream until it fires: `read_all` and consumers of
//! `<prefix>.>` see it as event `<deadline>` of (schedule type, instance), and a subscriber of
//! events named `<deadline>` would take it for one; hence a deadline may not be named like the
//! fired event, and schedule types should be used for nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::header::{NATS_SCHEDULE, NATS_SCHEDULE_TARGET};
use serde::Deserialize;

use crate::id::validate_token;
use crate::store::jetstream::{headers, ApiError, JetStreamError, JetStreamStore};
use crate::store::NewEvent;
use crate::wire;

/// JetStream error code: the stream does not allow message schedules.
const SCHEDULES_DISABLED: u64 = 10188;

/// Deadlines held by nats-server message schedules in the stream of `store` (which needs
/// `allow_message_schedules`).
#[derive(Debug, Clone)]
pub(crate) struct JetStreamDeadlines {
    store: JetStreamStore,
}

impl JetStreamDeadlines {
    pub(crate) fn new(store: JetStreamStore) -> Self {
        JetStreamDeadlines { store }
    }

    /// Publishes (or replaces) the schedule on subject
    /// `<prefix>.<schedule_type>.<instance>.<deadline>`. When `due` comes, the server publishes
    /// `fired`'s payload with its jetsource headers to
    /// `<prefix>.<fired_type>.<instance>.<fired.name>`, so a jetsource subscriber on that store
    /// decodes it as event `fired.name` of aggregate (`fired_type`, `instance`), at version 1.
    ///
    /// `due` is sent to the nanosecond; a `due` in the past fires at once.
    pub(crate) async fn schedule(
        &self,
        schedule_type: &str,
        fired_type: &str,
        instance: &str,
        deadline: &str,
        fired: &NewEvent,
        due: SystemTime,
    ) -> Result<(), JetStreamError> {
        let config = self.store.config();
        let what = format!("deadline {deadline:?} of {schedule_type}/{instance}");
        tokens(&[
            ("schedule type", schedule_type),
            ("fired type", fired_type),
            ("instance", instance),
            ("deadline", deadline),
            ("fired event name", fired.name),
        ])?;
        if !config.allow_message_schedules {
            return Err(JetStreamError::InvalidConfig(format!(
                "stream {} holds {what}, but its StreamConfig does not allow_message_schedules",
                config.name
            )));
        }
        if deadline == fired.name {
            // Subscribers filter on the last subject token: one of `fired.name` would take the
            // pending schedule for the fired event.
            return Err(JetStreamError::request(
                format!("schedule {what}"),
                format!("a deadline may not be named like the event it fires ({deadline:?})"),
            ));
        }
        let at = rfc3339(due).ok_or_else(|| {
            JetStreamError::request(
                format!("schedule {what}"),
                format!("its due time {due:?} is after the year 9999, beyond RFC 3339"),
            )
        })?;
        let bytes = headers::message_size(fired, None);
        let max = self.store.max_payload();
        if max > 0 && bytes > max {
            return Err(JetStreamError::EventTooLarge {
                event: fired.name.to_owned(),
                bytes,
                max,
            });
        }
        let stem = wire::aggregate_subject(&config.prefix, schedule_type, instance);
        let subject = format!("{stem}.{deadline}");
        let target = wire::subject(&config.prefix, fired_type, instance, fired.name);
        let mut message_headers = headers::encode(fired, 1);
        message_headers.insert(NATS_SCHEDULE, format!("@at {at}").as_str());
        message_headers.insert(NATS_SCHEDULE_TARGET, target.as_str());
        let client = self.store.client();
        let publish = async {
            let request = async_nats::Request::new()
                .headers(message_headers)
                .payload(fired.payload.clone());
            let reply = client
                .send_request(subject.clone(), request)
                .await
                .map_err(|e| JetStreamError::from_request(e, &subject))?;
            let ack = answer(&reply, &subject)?;
            match ack.seq {
                Some(_) => Ok(()),
                // No message id is sent, so the server has nothing to call a duplicate.
                None => Err(JetStreamError::Protocol(format!(
                    "the ack of the schedule on {subject} names no stream sequence"
                ))),
            }
        };
        match self.store.unless_refused(&stem, publish).await {
            Err(JetStreamError::Api {
                err_code: SCHEDULES_DISABLED,
                ..
            }) => Err(JetStreamError::InvalidConfig(format!(
                "stream {} holds {what}, but the server's stream does not allow message \
                 schedules (error {SCHEDULES_DISABLED})",
                config.name
            ))),
            other => other,
        }
    }

    /// Cancels it: purges the schedule subject (a schedule that is gone is not an error).
    pub(crate) async fn cancel(
        &self,
        schedule_type: &str,
        instance: &str,
        deadline: &str,
    ) -> Result<(), JetStreamError> {
        tokens(&[
            ("schedule type", schedule_type),
            ("instance", instance),
            ("deadline", deadline),
        ])?;
        let config = self.store.config();
        let subject = wire::subject(&config.prefix, schedule_type, instance, deadline);
        let api = format!("$JS.API.STREAM.PURGE.{}", config.name);
        let body = serde_json::json!({ "filter": subject }).to_string();
        let client = self.store.client();
        let purge = async {
            let reply = client
                .request(api.clone(), body.into())
                .await
                .map_err(|e| JetStreamError::from_request(e, &api))?;
            let answer = answer(&reply, &api)?;
            if answer.success {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&reply.payload);
                Err(JetStreamError::Protocol(format!(
                    "the purge of {subject} neither succeeded nor failed: {text}"
                )))
            }
        };
        self.store
            .unless_refused("$JS.API.STREAM.PURGE", purge)
            .await
    }
}

/// Checks that each named value is one subject token.
fn tokens(values: &[(&str, &str)]) -> Result<(), JetStreamError> {
    for (what, value) in values {
        validate_token(value).map_err(|source| JetStreamError::InvalidInput {
            what: format!("{what} {value:?}"),
            source,
        })?;
    }
    Ok(())
}

/// The server's answer to a publish or a purge.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    success: bool,
    #[serde(default)]
    error: Option<ApiError>,
}

/// Reads the server's reply to a request on `subject`: its answer, or its API error.
fn answer(reply: &async_nats::Message, subject: &str) -> Result<Answer, JetStreamError> {
    if reply.status.is_some_and(|status| status.as_u16() == 503) {
        return Err(JetStreamError::NoResponders(subject.to_owned()));
    }
    let answer: Answer = serde_json::from_slice(&reply.payload).map_err(|e| {
        let text = String::from_utf8_lossy(&reply.payload);
        JetStreamError::request(format!("read the server's reply {text:?} on {subject}"), e)
    })?;
    match answer.error {
        Some(error) => Err(JetStreamError::Api {
            code: error.code,
            err_code: error.err_code,
            description: error.description,
        }),
        None => Ok(answer),
    }
}

/// `t` as RFC 3339 in UTC (`2026-11-30T08:15:00.25Z`), which `@at` takes; times before 1970 as
/// 1970 (they are past, which is all the server needs to know); `None` after the year 9999,
/// which RFC 3339 cannot write.
fn rfc3339(t: SystemTime) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = time::OffsetDateTime::UNIX_EPOCH.checked_add(since.try_into().ok()?)?;
    at.format(&Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_writes_utc_with_nanoseconds() {
        let at = |secs, nanos| rfc3339(UNIX_EPOCH + Duration::new(secs, nanos)).unwrap();
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            at(1_796_083_199, 999_999_999),
            "2026-11-30T23:59:59.999999999Z"
        );
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            None
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)).unwrap(),
            "1970-01-01T00:00:00Z"
        );
    }
}

/// The scheduler against a real server. Here rather than in `tests/`, which cannot reach
/// crate-private items; `tests/process_manager_schedules.rs` measures the server's side.
#[cfg(all(test, feature = "test-server"))]
mod server_tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::store::{EventStore, StoredEvent};
    use crate::testing::nats_server::NatsServer;
    use crate::{Codec, JetStreamConnectOptions, StreamConfig};

    /// Far beyond a fire here (under a second).
    const FIRE_WITHIN: Duration = Duration::from_secs(10);

    async fn deadlines(
        server: &NatsServer,
        schedules: bool,
    ) -> (JetStreamStore, JetStreamDeadlines) {
        let (name, prefix) = if schedules {
            ("PM", "pm")
        } else {
            ("PLAIN", "plain")
        };
        let config = StreamConfig::new(name, prefix).allow_message_schedules(schedules);
        let store = JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), config)
            .await
            .expect("connect to the harness server");
        (store.clone(), JetStreamDeadlines::new(store))
    }

    fn fired(deadline: &str) -> NewEvent {
        NewEvent {
            id: uuid::Uuid::now_v7(),
            name: "deadline_fired",
            version: 1,
            codec: Codec::Json,
            payload: format!("{{\"deadline\":\"{deadline}\"}}")
                .into_bytes()
                .into(),
            timestamp: SystemTime::now(),
            correlation_id: "order-7".into(),
            causation_id: Some("cmd-3".into()),
            headers: BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]),
        }
    }

    /// Waits for `count` fired events in the store, and returns everything in it.
    async fn await_fired(store: &JetStreamStore, count: usize) -> Vec<StoredEvent> {
        let give_up = tokio::time::Instant::now() + FIRE_WITHIN;
        loop {
            let events = store.read_all(1, 100).await.unwrap();
            if events.iter().filter(|e| e.name == "deadline_fired").count() >= count {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "{count} deadlines did not fire within {FIRE_WITHIN:?}: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_deadline_fires_as_an_event_of_the_fired_type() {
        let server = NatsServer::start();
        let (store, deadlines) = deadlines(&server, true).await;
        let event = fired("payment");
        let due = SystemTime::now() + Duration::from_millis(300);
        deadlines
            .schedule(
                "order_schedule",
                "order_deadline",
                "o-1",
                "payment",
                &event,
                due,
            )
            .await
            .unwrap();
        // Sent again (as after a crash): it replaces itself and fires once.
        deadlines
            .schedule(
                "order_schedule",
                "order_deadline",
                "o-1",
                "payment",
                &event,
                due,
            )
            .await
            .unwrap();
        let events = await_fired(&store, 1).await;
        assert_eq!(
            events.len(),
            1,
            "the schedule is gone once fired: {events:?}"
        );
        let stored = &events[0];
        assert_eq!(
            (stored.aggregate_type.as_str(), stored.aggregate_id.as_str()),
            ("order_deadline", "o-1")
        );
        assert_eq!((stored.id, stored.sequence), (event.id, 1));
        assert_eq!(stored.payload, event.payload);
        assert_eq!(stored.timestamp, event.timestamp);
        assert_eq!(stored.correlation_id, "order-7");
        assert_eq!(stored.causation_id.as_deref(), Some("cmd-3"));
        assert_eq!(stored.headers, event.headers);
    }

    #[tokio::test]
    async fn a_cancelled_or_replaced_deadline_never_fires() {
        let server = NatsServer::start();
        let (store, deadlines) = deadlines(&server, true).await;
        let now = SystemTime::now();
        let schedule = |deadline: &'static str, event: NewEvent, due: SystemTime| {
            let deadlines = deadlines.clone();
            async move {
                (deadlines
                    .schedule("s", "d", "i-1", deadline, &event, due)
                    .await)
                    .unwrap();
            }
        };
        schedule(
            "cancelled",
            fired("cancelled"),
            now + Duration::from_secs(1),
        )
        .await;
        deadlines.cancel("s", "i-1", "cancelled").await.unwrap();
        // Gone already: no error.
        deadlines.cancel("s", "i-1", "cancelled").await.unwrap();
        deadlines.cancel("s", "i-1", "never_set").await.unwrap();
        let replaced = fired("moved");
        schedule("moved", replaced.clone(), now + Duration::from_secs(1)).await;
        let moved = fired("moved");
        schedule("moved", moved.clone(), now + Duration::from_secs(2)).await;
        // Due after both: once it fired, the others would have.
        schedule("marker", fired("marker"), now + Duration::from_secs(3)).await;
        let events = await_fired(&store, 2).await;
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 2, "{events:?}");
        assert_eq!(ids[0], moved.id, "only the replacing schedule fires");
        assert!(events[0].position < events[1].position);
        assert!(
            SystemTime::now() >= now + Duration::from_secs(3),
            "the marker fired early"
        );
    }

    #[tokio::test]
    async fn what_cannot_be_scheduled_is_named() {
        let server = NatsServer::start();
        let (_, without) = deadlines(&server, false).await;
        let event = fired("late");
        let now = SystemTime::now();
        let err = (without.schedule("s", "d", "i-1", "late", &event, now).await).unwrap_err();
        assert!(
            err.to_string().contains("does not allow_message_schedules"),
            "{err}"
        );
        let (_, deadlines) = deadlines(&server, true).await;
        let err = (deadlines
            .schedule("s", "d", "i.1", "late", &event, now)
            .await)
            .unwrap_err();
        assert!(err.to_string().contains("instance \"i.1\""), "{err}");
        let err = (deadlines
            .schedule("s", "d", "i-1", "deadline_fired", &event, now)
            .await)
            .unwrap_err();
        assert!(
            err.to_string().contains("deadline \"deadline_fired\""),
            "{err}"
        );
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let err = (deadlines
            .schedule("s", "d", "i-1", "late", &event, far)
            .await)
            .unwrap_err();
        assert!(
            std::error::Error::source(&err)
                .is_some_and(|source| source.to_string().contains("year 9999")),
            "{err:?}"
        );
        let err = (deadlines.cancel("s", "*", "late").await).unwrap_err();
        assert!(
            matches!(err, JetStreamError::InvalidInput { .. }),
            "{err:?}"
        );
    }
}
