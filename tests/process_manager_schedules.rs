//! nats-server message schedules (ADR-51), which hold process managers' deadlines, measured on
//! a real server: what a fired message carries, when it fires, replacing and cancelling a
//! schedule, restarts, and the stream setting. Each test waits for a condition with a
//! deadline; a schedule that must not fire is shown not to by a later marker schedule that does
//! (the server fires due schedules in time order). Run with `--nocapture` to see the lateness
//! of each fire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use jetsource::testing::nats_server::NatsServer;
use jetsource::wire::{self, EventHeader};
use jetsource::{
    Codec, EventStore, JetStreamConnectOptions, JetStreamError, JetStreamStore, StreamConfig,
};

/// Generous bound for "fires soon": fires take under a second here.
const FIRE_WITHIN: Duration = Duration::from_secs(10);

/// A stream `SCHED` capturing `sched.>` that may hold message schedules.
async fn schedules_stream(client: &async_nats::Client) -> stream::Stream {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: "SCHED".into(),
            subjects: vec!["sched.>".into()],
            allow_message_schedules: true,
            ..Default::default()
        })
        .await
        .expect("create a stream with allow_msg_schedules")
}

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("connect to the harness server")
}

/// `t` in RFC 3339, UTC, whole seconds (`...:05Z`) or with nanoseconds (`...:05.123456789Z`).
fn rfc3339(t: SystemTime, fraction: bool) -> String {
    let since = t.duration_since(UNIX_EPOCH).expect("after 1970");
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if fraction {
        text.push_str(&format!(".{:09}", since.subsec_nanos()));
    }
    text.push('Z');
    text
}

/// `t` rounded up to a whole second.
fn ceil_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(since.as_secs() + u64::from(since.subsec_nanos() > 0))
}

/// Publishes a schedule on `subject` for `target` with pattern `@at <at>`, `extra` headers and
/// `payload`, and returns the server's answer: the ack, or the error.
async fn publish_schedule(
    client: &async_nats::Client,
    subject: &str,
    target: &str,
    at: &str,
    extra: &[(&str, &str)],
    payload: &'static str,
) -> serde_json::Value {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Schedule", format!("@at {at}").as_str());
    headers.insert("Nats-Schedule-Target", target);
    for (name, value) in extra {
        headers.insert(*name, *value);
    }
    let reply = client
        .request_with_headers(subject.to_owned(), headers, payload.into())
        .await
        .expect("the server answers a publish");
    serde_json::from_slice(&reply.payload).expect("a JSON answer")
}

/// Publishes an empty message with `headers` to `subject` and asserts that it is stored.
async fn client_publish(client: &async_nats::Client, subject: &str, headers: &[(&str, &str)]) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    let reply = client
        .request_with_headers(subject.to_owned(), map, bytes::Bytes::new())
        .await
        .expect("the server answers a publish");
    stored(&serde_json::from_slice(&reply.payload).expect("a JSON answer"));
}

/// Asserts that `ack` stored a message, and returns its stream sequence.
fn stored(ack: &serde_json::Value) -> u64 {
    assert!(ack.get("error").is_none(), "refused: {ack}");
    assert_ne!(ack["duplicate"], true, "a duplicate: {ack}");
    ack["seq"].as_u64().expect("an ack with a sequence")
}

/// The JetStream error code of a refused publish.
fn error_code(ack: &serde_json::Value) -> u64 {
    ack["error"]["err_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("not refused: {ack}"))
}

/// A stored message as the tests look at it.
#[derive(Debug, Clone)]
struct Stored {
    subject: String,
    sequence: u64,
    headers: HeaderMap,
    payload: bytes::Bytes,
    /// When the server stored it.
    time: SystemTime,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }

    /// How long after `due` the server stored it (negative: before).
    fn late_ms(&self, due: SystemTime) -> i128 {
        match self.time.duration_since(due) {
            Ok(late) => late.as_millis() as i128,
            Err(early) => -(early.duration().as_millis() as i128),
        }
    }
}

fn to_stored(message: jetstream::message::StreamMessage) -> Stored {
    let nanos = u64::try_from(message.time.unix_timestamp_nanos()).expect("after 1970");
    Stored {
        subject: message.subject.to_string(),
        sequence: message.sequence,
        headers: message.headers,
        payload: message.payload,
        time: UNIX_EPOCH + Duration::from_nanos(nanos),
    }
}

/// The last message on `subject`, if there is one.
async fn last_on(stream: &stream::Stream, subject: &str) -> Option<Stored> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Some(to_stored(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => None,
        Err(e) => panic!("cannot read the last message on {subject}: {e}"),
    }
}

/// Waits up to [`FIRE_WITHIN`] for a message on `subject`.
async fn fired_on(stream: &stream::Stream, subject: &str) -> Stored {
    let give_up = tokio::time::Instant::now() + FIRE_WITHIN;
    loop {
        if let Some(message) = last_on(stream, subject).await {
            return message;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "nothing fired on {subject} within {FIRE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every message in the stream, oldest first.
async fn all_messages(stream: &mut stream::Stream) -> Vec<Stored> {
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push(to_stored(message));
        }
    }
    messages
}

/// Schedules a marker for `due` and waits until it fired: every schedule due before it has
/// fired by then, or never will.
async fn await_marker(client: &async_nats::Client, stream: &stream::Stream, due: SystemTime) {
    let id = due.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let target = format!("sched.marker.m{id}.fired");
    let ack = publish_schedule(
        client,
        &format!("sched.marker.m{id}.schedule"),
        &target,
        &rfc3339(due, true),
        &[],
        "marker",
    )
    .await;
    stored(&ack);
    let fired = fired_on(stream, &target).await;
    assert!(fired.time >= due, "the marker fired before it was due");
}

#[tokio::test]
async fn a_fired_message_carries_the_schedule_headers_but_not_the_nats_schedule_ones() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let stream = schedules_stream(&client).await;
    let (subject, target) = ("sched.pm_schedule.i1.timeout", "sched.pm_deadline.i1.fired");
    let event = EventHeader {
        sequence: 1,
        id: uuid::Uuid::now_v7(),
        version: 2,
        codec: Codec::Json,
        timestamp: SystemTime::now(),
    }
    .encode();
    let extra = [
        (wire::EVENT_HEADER, event.as_str()),
        (wire::CORRELATION_HEADER, "corr-7"),
        (wire::CAUSATION_HEADER, "cause-7"),
        ("Jetsource-H-tenant", "acme"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("Nats-Msg-Id", "schedule-1"),
        // The schedule alone is checked against it: the fire must not be refused for it.
        ("Nats-Expected-Last-Subject-Sequence", "0"),
    ];
    let past = rfc3339(SystemTime::now() - Duration::from_secs(5), false);
    let ack = publish_schedule(&client, subject, target, &past, &extra, "{\"n\":1}").await;
    let schedule_seq = stored(&ack);
    let fired = fired_on(&stream, target).await;
    eprintln!(
        "fired headers: {:?}",
        fired
            .headers
            .iter()
            .map(|(name, values)| format!("{name}: {:?}", values[0].as_str()))
            .collect::<Vec<_>>()
    );
    assert_eq!(&fired.payload[..], b"{\"n\":1}");
    assert!(fired.sequence > schedule_seq);
    // Every other header is copied as it was.
    for (name, value) in &extra[..5] {
        assert_eq!(fired.header(name), Some(*value), "header {name}");
    }
    // Added: where it came from, and that the schedule was purged.
    assert_eq!(fired.header("Nats-Scheduler"), Some(subject));
    assert_eq!(fired.header("Nats-Schedule-Next"), Some("purge"));
    // Dropped: the schedule's own, the message id and the expectations.
    for gone in [
        "Nats-Schedule",
        "Nats-Schedule-Target",
        "Nats-Msg-Id",
        "Nats-Expected-Last-Subject-Sequence",
        "Nats-Rollup",
    ] {
        assert_eq!(fired.header(gone), None, "header {gone}");
    }
    let names: Vec<String> = fired.headers.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    // The schedule is gone once fired.
    assert!(last_on(&stream, subject).await.is_none());
}

#[tokio::test]
async fn a_fired_schedule_with_jetsource_headers_is_an_event_for_the_store() {
    let server = NatsServer::start();
    let config = StreamConfig::new("PM", "pm").allow_message_schedules(true);
    let store = JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), config)
        .await
        .unwrap();
    let client = store.client().clone();
    let id = uuid::Uuid::now_v7();
    let timestamp = SystemTime::now();
    let event = EventHeader {
        sequence: 1,
        id,
        version: 1,
        codec: Codec::Json,
        timestamp,
    }
    .encode();
    let extra = [
        (wire::EVENT_HEADER, event.as_str()),
        (wire::CORRELATION_HEADER, "corr-7"),
        ("Jetsource-H-tenant", "acme"),
    ];
    let due = rfc3339(SystemTime::now() + Duration::from_millis(300), true);
    let ack = publish_schedule(
        &client,
        "pm.order_schedule.o-1.payment_timeout",
        "pm.order_deadline.o-1.deadline_fired",
        &due,
        &extra,
        "{\"deadline\":\"payment_timeout\"}",
    )
    .await;
    stored(&ack);
    // Until it fires, the schedule itself reads as an event of the schedule type.
    let pending = store.read_all(1, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].aggregate_type.as_str(), pending[0].name.as_str()),
        ("order_schedule", "payment_timeout")
    );
    let give_up = tokio::time::Instant::now() + FIRE_WITHIN;
    let events = loop {
        let events = store.read_all(1, 10).await.unwrap();
        if events.iter().any(|e| e.name == "deadline_fired") {
            break events;
        }
        assert!(tokio::time::Instant::now() < give_up, "never fired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Once fired, only the fired event is left.
    assert_eq!(events.len(), 1, "{events:?}");
    let fired = &events[0];
    assert_eq!(
        (
            fired.aggregate_type.as_str(),
            fired.aggregate_id.as_str(),
            fired.name.as_str()
        ),
        ("order_deadline", "o-1", "deadline_fired")
    );
    assert_eq!((fired.id, fired.sequence, fired.version), (id, 1, 1));
    assert_eq!(fired.timestamp, timestamp);
    assert_eq!(fired.correlation_id, "corr-7");
    assert_eq!(fired.headers["tenant"], "acme");
    assert_eq!(&fired.payload[..], b"{\"deadline\":\"payment_timeout\"}");
    assert_eq!(fired.command_id, None);
}

#[tokio::test]
async fn a_message_id_on_a_schedule_makes_a_resent_schedule_a_duplicate() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let stream = schedules_stream(&client).await;
    let (subject, target) = ("sched.pm_schedule.i1.timeout", "sched.pm_deadline.i1.fired");
    let later = rfc3339(SystemTime::now() + Duration::from_secs(3600), false);
    let first = publish_schedule(
        &client,
        subject,
        target,
        &later,
        &[("Nats-Msg-Id", "d-1")],
        "a",
    )
    .await;
    let first_seq = stored(&first);
    // Moved to now under the same id: dropped inside the dedupe window, nothing replaced.
    let now = rfc3339(SystemTime::now(), false);
    let again = publish_schedule(
        &client,
        subject,
        target,
        &now,
        &[("Nats-Msg-Id", "d-1")],
        "b",
    )
    .await;
    assert_eq!(again["duplicate"], true, "{again}");
    let kept = last_on(&stream, subject).await.unwrap();
    assert_eq!(kept.sequence, first_seq);
    assert_eq!(
        kept.header("Nats-Schedule"),
        Some(format!("@at {later}").as_str())
    );
}

#[tokio::test]
async fn at_takes_past_and_sub_second_times_and_never_fires_early() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let stream = schedules_stream(&client).await;

    // An hour ago: accepted, fires at once.
    let sent = SystemTime::now();
    let ack = publish_schedule(
        &client,
        "sched.t.past.schedule",
        "sched.t.past.fired",
        &rfc3339(sent - Duration::from_secs(3600), false),
        &[],
        "past",
    )
    .await;
    stored(&ack);
    let fired = fired_on(&stream, "sched.t.past.fired").await;
    eprintln!(
        "past @at: stored {} ms after the publish",
        fired.late_ms(sent)
    );

    // Whole seconds and nanoseconds, due 1 to 2.2 s from now.
    let start = SystemTime::now();
    let mut dues = Vec::new();
    for i in 0..8u32 {
        let exact = start + Duration::from_millis(1000 + 150 * u64::from(i));
        let (due, at) = if i % 2 == 0 {
            (exact, rfc3339(exact, true))
        } else {
            (ceil_second(exact), rfc3339(ceil_second(exact), false))
        };
        let ack = publish_schedule(
            &client,
            &format!("sched.t.s{i}.schedule"),
            &format!("sched.t.s{i}.fired"),
            &at,
            &[],
            "x",
        )
        .await;
        stored(&ack);
        dues.push((i, due, at));
    }
    let mut late = Vec::new();
    for (i, due, at) in dues {
        let fired = fired_on(&stream, &format!("sched.t.s{i}.fired")).await;
        let ms = fired.late_ms(due);
        eprintln!("@at {at}: stored {ms} ms after due");
        assert!(ms >= 0, "@at {at} fired {} ms early", -ms);
        late.push(ms);
    }
    late.sort_unstable();
    eprintln!("lateness ms, sorted: {late:?}");

    // Offsets other than Z are RFC 3339 too.
    let ack = publish_schedule(
        &client,
        "sched.t.offset.schedule",
        "sched.t.offset.fired",
        "2020-01-01T01:00:00+01:00",
        &[],
        "offset",
    )
    .await;
    stored(&ack);
    fired_on(&stream, "sched.t.offset.fired").await;

    // What is refused, with which code.
    for (at, why) in [
        ("tomorrow", "not RFC 3339"),
        ("2026-11-30 08:00:00Z", "a space for the T"),
        ("2026-11-30T08:00:00", "no offset"),
    ] {
        let ack = publish_schedule(
            &client,
            "sched.t.bad.schedule",
            "sched.t.bad.fired",
            at,
            &[],
            "x",
        )
        .await;
        assert_eq!(error_code(&ack), 10189, "{why}: {ack}");
    }
    let ack = publish_schedule(
        &client,
        "sched.t.self.schedule",
        "sched.t.self.schedule",
        "2020-01-01T00:00:00Z",
        &[],
        "x",
    )
    .await;
    assert_eq!(error_code(&ack), 10190, "the target is the schedule: {ack}");
    let ack = publish_schedule(
        &client,
        "sched.t.out.schedule",
        "elsewhere.fired",
        "2020-01-01T00:00:00Z",
        &[],
        "x",
    )
    .await;
    assert_eq!(
        error_code(&ack),
        10190,
        "a target outside the stream: {ack}"
    );
}

#[tokio::test]
async fn a_stream_without_schedules_refuses_them() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: "PLAIN".into(),
            subjects: vec!["plain.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ack = publish_schedule(
        &client,
        "plain.a.b.schedule",
        "plain.a.b.fired",
        "2020-01-01T00:00:00Z",
        &[],
        "x",
    )
    .await;
    assert_eq!(error_code(&ack), 10188, "{ack}");
}

#[tokio::test]
async fn a_new_schedule_on_the_subject_replaces_the_old_one() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let mut stream = schedules_stream(&client).await;
    let (subject, target) = ("sched.pm_schedule.i1.timeout", "sched.pm_deadline.i1.fired");
    let now = SystemTime::now();
    let (old_due, new_due) = (now + Duration::from_secs(1), now + Duration::from_secs(2));
    stored(
        &publish_schedule(
            &client,
            subject,
            target,
            &rfc3339(old_due, true),
            &[],
            "old",
        )
        .await,
    );
    stored(
        &publish_schedule(
            &client,
            subject,
            target,
            &rfc3339(new_due, true),
            &[],
            "new",
        )
        .await,
    );
    // One schedule is left on the subject: the new one.
    let messages = all_messages(&mut stream).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(&messages[0].payload[..], b"new");

    await_marker(&client, &stream, now + Duration::from_secs(3)).await;
    let fired: Vec<_> = (all_messages(&mut stream).await.into_iter())
        .filter(|m| m.subject == target)
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(&fired[0].payload[..], b"new");
    assert!(fired[0].time >= new_due, "fired at the old time");

    // Moved earlier (an hour to the past): fires at once, and the later one never.
    stored(
        &publish_schedule(
            &client,
            subject,
            target,
            &rfc3339(now + Duration::from_secs(4), true),
            &[],
            "later",
        )
        .await,
    );
    stored(
        &publish_schedule(
            &client,
            subject,
            target,
            &rfc3339(now - Duration::from_secs(3600), true),
            &[],
            "earlier",
        )
        .await,
    );
    await_marker(&client, &stream, now + Duration::from_secs(5)).await;
    let fired: Vec<_> = (all_messages(&mut stream).await.into_iter())
        .filter(|m| m.subject == target)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(fired, ["new", "earlier"]);
}

#[tokio::test]
async fn purging_the_schedule_subject_cancels_it() {
    let server = NatsServer::start();
    let client = connect(&server).await;
    let mut stream = schedules_stream(&client).await;
    let (subject, target) = ("sched.pm_schedule.i1.timeout", "sched.pm_deadline.i1.fired");
    let now = SystemTime::now();
    let due = now + Duration::from_secs(1);
    stored(&publish_schedule(&client, subject, target, &rfc3339(due, true), &[], "x").await);
    let purged = stream.purge().filter(subject).await.unwrap();
    assert_eq!(purged.purged, 1);
    // Purging a subject without a schedule is no error.
    let purged = stream.purge().filter(subject).await.unwrap();
    assert_eq!((purged.success, purged.purged), (true, 0));

    await_marker(&client, &stream, now + Duration::from_secs(2)).await;
    assert!(
        last_on(&stream, target).await.is_none(),
        "a cancelled schedule fired"
    );
    let left: Vec<_> = all_messages(&mut stream).await;
    assert!(
        left.iter().all(|m| m.subject.starts_with("sched.marker.")),
        "{left:?}"
    );
}

#[tokio::test]
async fn schedules_survive_a_restart_and_overdue_ones_fire_at_once() {
    let mut server = NatsServer::start();
    let client = connect(&server).await;
    schedules_stream(&client).await;
    let now = SystemTime::now();
    // Falls due while the server is down.
    let overdue = now + Duration::from_millis(500);
    stored(
        &publish_schedule(
            &client,
            "sched.r.overdue.schedule",
            "sched.r.overdue.fired",
            &rfc3339(overdue, true),
            &[],
            "overdue",
        )
        .await,
    );
    // Falls due after the restart.
    let after = now + Duration::from_secs(6);
    stored(
        &publish_schedule(
            &client,
            "sched.r.after.schedule",
            "sched.r.after.fired",
            &rfc3339(after, true),
            &[],
            "after",
        )
        .await,
    );
    drop(client);
    server.stop();
    // Down past the first due time: setup, not an assertion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = SystemTime::now();
    server.restart();
    let up = SystemTime::now();
    let client = connect(&server).await;
    let stream = jetstream::new(client.clone())
        .get_stream("SCHED")
        .await
        .unwrap();
    let fired = fired_on(&stream, "sched.r.overdue.fired").await;
    eprintln!(
        "overdue: stored {} ms after the restart began ({} ms to start), {} ms after due",
        fired.late_ms(restarted),
        up.duration_since(restarted).unwrap().as_millis(),
        fired.late_ms(overdue)
    );
    assert!(fired.time >= restarted);
    let fired = fired_on(&stream, "sched.r.after.fired").await;
    eprintln!(
        "after the restart: stored {} ms after due",
        fired.late_ms(after)
    );
    assert!(fired.time >= after, "fired early");
    assert!(last_on(&stream, "sched.r.after.schedule").await.is_none());
}

#[tokio::test]
async fn stream_config_allows_message_schedules_and_reports_the_difference() {
    let server = NatsServer::start();
    let connect = |config: StreamConfig| {
        JetStreamStore::connect(JetStreamConnectOptions::new([server.url()]), config)
    };
    let plain = StreamConfig::new("CFG", "cfg");
    assert!(!plain.allow_message_schedules);
    connect(plain.clone()).await.unwrap();
    let err = connect(plain.clone().allow_message_schedules(true))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            JetStreamError::ConfigConflict {
                field: "allow_message_schedules",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("allow_message_schedules = false, but the configuration asks for true"),
        "{err}"
    );
    let scheduling = plain.clone().allow_message_schedules(true);
    connect(scheduling.clone().update_existing(true))
        .await
        .unwrap();
    let store = connect(scheduling).await.unwrap();
    let mut stream = jetstream::new(store.client().clone())
        .get_stream("CFG")
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert!(info.config.allow_message_schedules);
    assert!(info.config.allow_rollup, "schedules need rollups");
    // Which lets any publisher to the stream wipe it.
    for n in 0..3 {
        let subject = format!("cfg.account.a{n}.opened");
        client_publish(store.client(), &subject, &[]).await;
    }
    client_publish(store.client(), "cfg.x.y.z", &[("Nats-Rollup", "all")]).await;
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 1, "a rollup of the whole stream");
    // The server does not turn schedules off again.
    let err = connect(plain.update_existing(true)).await.unwrap_err();
    eprintln!("turning schedules off: {err}");
    assert!(matches!(err, JetStreamError::Request { .. }), "{err:?}");
}

#[tokio::test]
async fn a_thousand_deadlines_due_together_all_fire() {
    const N: usize = 1000;
    let server = NatsServer::start();
    let client = connect(&server).await;
    let stream = schedules_stream(&client).await;
    let started = std::time::Instant::now();
    let due = SystemTime::now() + Duration::from_secs(4);
    let at = rfc3339(due, true);
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let publishes = chunk.iter().map(|i| {
            let (client, at) = (&client, &at);
            async move {
                let subject = format!("sched.bulk.i{i}.schedule");
                let target = format!("sched.bulk.i{i}.fired");
                stored(&publish_schedule(client, &subject, &target, at, &[], "x").await);
            }
        });
        futures::future::join_all(publishes).await;
    }
    let published = started.elapsed();
    eprintln!(
        "{N} schedules published, 100 in flight, in {} ms",
        published.as_millis()
    );
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: "sched.bulk.*.fired".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(4) + FIRE_WITHIN;
    loop {
        let pending = consumer.info().await.unwrap().num_pending;
        if pending as usize == N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{pending} of {N} fired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = SystemTime::now();
    eprintln!(
        "all {N} fired by {} ms after due",
        last.duration_since(due).map_or(0, |late| late.as_millis())
    );
    assert!(last >= due, "fired early");
}
