//! Observability against a spawned nats-server: tracing spans and their fields, metrics through
//! the `metrics` facade, correlation and causation flowing from a handled event into the
//! command its handler runs, and (feature `opentelemetry`) one trace from the request that
//! appended an event to the handler and the command it ran.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jetsource::observability::{
    CONSUMER_LAG, EVENTS_APPENDED, EVENTS_DEAD_LETTERED, EVENTS_HANDLED, EVENTS_RETRIED,
    HANDLER_SECONDS,
};
use jetsource::subscriber::{self, EventContext, HandlerError, Subscriber, SubscriberConfig};
use jetsource::testing::nats_server::NatsServer;
use jetsource::{
    Aggregate, AggregateId, AggregateKey, Apply, CommandMetadata, Event, EventSet, EventStore,
    JetStreamConnectOptions, JetStreamStore, Repository, StreamConfig,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[event(name = "audited", version = 1)]
struct Audited {
    amount: u64,
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(EventSet, Debug, Clone, PartialEq)]
enum AuditEvent {
    Audited(Audited),
}

#[derive(Aggregate, Default)]
#[aggregate(name = "account", events = AccountEvent)]
struct Account {
    balance: u64,
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: Deposited) {
        self.balance += e.amount;
    }
}

#[derive(Aggregate, Default)]
#[aggregate(name = "audit", events = AuditEvent)]
struct Audit {
    entries: u64,
}

impl Apply<Audited> for Audit {
    fn apply(&mut self, _: Audited) {
        self.entries += 1;
    }
}

// ANCHOR: auditor
/// Audits every deposit with a command of its own; fails once retryably on amount 2 and
/// permanently on amount 13.
struct Auditor {
    audits: Repository<Audit, JetStreamStore>,
    failed_once: Mutex<bool>,
}

impl Subscriber for Auditor {
    type Event = AccountEvent;

    async fn handle(&self, event: AccountEvent, ctx: &EventContext) -> Result<(), HandlerError> {
        let AccountEvent::Deposited(d) = event;
        if d.amount == 13 {
            return Err(HandlerError::permanent("unlucky amount"));
        }
        if d.amount == 2 && !std::mem::replace(&mut *self.failed_once.lock().unwrap(), true) {
            return Err(HandlerError::retryable("audit database busy"));
        }
        // No metadata: the ids must come from the handled event.
        self.audits
            .execute(&ctx.aggregate_id, |_| {
                Ok::<_, std::convert::Infallible>(vec![Audited { amount: d.amount }.into()])
            })
            .await
            .map_err(HandlerError::retryable)?;
        Ok(())
    }
}
// ANCHOR_END: auditor

type SpanRecords = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

/// Records every span's name and fields (also those recorded after creation).
struct SpanLog(SpanRecords);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

#[derive(Clone, Copy)]
struct Index(usize);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut records = self.0.lock().unwrap();
        records.push((attrs.metadata().name().to_owned(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(records.len() - 1));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let Some(Index(index)) = span.extensions().get::<Index>().copied() else {
            return;
        };
        values.record(&mut Fields(&mut self.0.lock().unwrap()[index].1));
    }
}

struct Telemetry {
    spans: SpanRecords,
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    metrics: Snapshotter,
}

/// One tracing subscriber and one metrics recorder for this test binary.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        // ANCHOR: telemetry
        let recorder = DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        recorder.install().expect("install the metrics recorder");
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let spans = SpanRecords::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("jetsource-test")))
            .with(SpanLog(spans.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("install tracing");
        // ANCHOR_END: telemetry
        Telemetry {
            spans,
            exporter,
            provider,
            metrics,
        }
    })
}

type Metrics = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// The value of the metric `name` whose labels include all of `labels`.
fn metric<'m>(metrics: &'m Metrics, name: &str, labels: &[(&str, &str)]) -> Option<&'m DebugValue> {
    metrics
        .iter()
        .find(|(key, _, _, _)| {
            key.key().name() == name
                && labels.iter().all(|(k, v)| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
        })
        .map(|(_, _, _, value)| value)
}

fn counter(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    match metric(metrics, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

fn spans_named(telemetry: &Telemetry, name: &str) -> Vec<BTreeMap<String, String>> {
    (telemetry.spans.lock().unwrap().iter())
        .filter(|(n, _)| n == name)
        .map(|(_, fields)| fields.clone())
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_metrics_causation_and_one_trace_from_request_to_handler() {
    let telemetry = telemetry();
    let server = NatsServer::start();
    let store = JetStreamStore::connect(
        JetStreamConnectOptions::new([server.url()]),
        StreamConfig::new("OBSERVED", "observed"),
    )
    .await
    .expect("connect");
    let accounts = Repository::<Account, _>::new(store.clone());
    let auditor = Auditor {
        audits: Repository::new(store.clone()),
        failed_once: Mutex::new(false),
    };
    let config = SubscriberConfig::new("auditor")
        .ack_wait(Duration::from_secs(1))
        .backoff([Duration::from_millis(20)]);
    let running = subscriber::start(&store, auditor, config)
        .await
        .expect("start");

    // The request: one deposit per account, inside a span of the caller's own.
    // ANCHOR: request
    for (account, amount) in [("a1", 1), ("a2", 2), ("a13", 13)] {
        let meta = CommandMetadata::default().correlation_id(format!("req-{account}"));
        accounts
            .execute_with(account, meta, |_| {
                Ok::<_, std::convert::Infallible>(vec![Deposited { amount }.into()])
            })
            .instrument(tracing::info_span!("request", account))
            .await
            .expect("deposit");
    }
    // ANCHOR_END: request
    wait_for("two audits and one dead letter", || {
        running.stats().handled == 2 && running.stats().dead_lettered == 1
    })
    .await;
    // The lag gauge is refreshed every ack wait.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    running.shutdown().await.expect("shutdown");

    // Correlation and causation: the audit command took them from the handled deposit.
    // ANCHOR: causation
    for account in ["a1", "a2"] {
        let deposit = store
            .load(&key("account", account), 1)
            .await
            .expect("load deposit");
        let audit = store
            .load(&key("audit", account), 1)
            .await
            .expect("load audit");
        assert_eq!(audit.len(), 1, "one audit of {account}");
        assert_eq!(audit[0].correlation_id, format!("req-{account}"));
        assert_eq!(
            audit[0].causation_id.as_deref(),
            Some(deposit[0].id.to_string().as_str())
        );
        assert!(
            audit[0].headers.contains_key("traceparent"),
            "the audit carries the trace"
        );
    }
    // ANCHOR_END: causation

    // Spans with their fields.
    let appends = spans_named(telemetry, "jetsource.append");
    let deposit_append = appends
        .iter()
        .find(|f| f.get("aggregate_type").map(String::as_str) == Some("account"))
        .expect("an append span of an account");
    assert_eq!(deposit_append["first_event"], "deposited");
    assert_eq!(deposit_append["version"], "1");
    assert!(deposit_append["position"].parse::<u64>().expect("position") > 0);
    let handles = spans_named(telemetry, "jetsource.handle");
    let handled_a1 = handles
        .iter()
        .find(|f| f.get("aggregate_id").map(String::as_str) == Some("a1"))
        .expect("a handle span of a1");
    assert_eq!(handled_a1["event"], "deposited");
    assert_eq!(handled_a1["subscriber"], "auditor");
    assert_eq!(handled_a1["version"], "1");
    let executes = spans_named(telemetry, "jetsource.execute");
    assert!(executes.iter().any(
        |f| f.get("aggregate_type").map(String::as_str) == Some("audit")
            && f.get("version").map(String::as_str) == Some("1")
    ));
    assert!(!spans_named(telemetry, "jetsource.load").is_empty());

    // Metrics (a snapshot drains the recorder: take one).
    // ANCHOR: metrics
    let metrics: Metrics = telemetry.metrics.snapshot().into_vec();
    assert!(counter(&metrics, EVENTS_APPENDED, &[("aggregate_type", "account")]) >= 3);
    assert!(counter(&metrics, EVENTS_APPENDED, &[("aggregate_type", "audit")]) >= 2);
    assert_eq!(
        counter(&metrics, EVENTS_HANDLED, &[("subscriber", "auditor")]),
        2
    );
    assert_eq!(
        counter(&metrics, EVENTS_RETRIED, &[("subscriber", "auditor")]),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            EVENTS_DEAD_LETTERED,
            &[("subscriber", "auditor"), ("reason", "permanent")]
        ),
        1
    );
    match metric(&metrics, HANDLER_SECONDS, &[("subscriber", "auditor")]) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 4),
        other => panic!("handler latency histogram: {other:?}"),
    }
    match metric(&metrics, CONSUMER_LAG, &[("subscriber", "auditor")]) {
        Some(DebugValue::Gauge(lag)) => assert_eq!(lag.into_inner(), 0.0),
        other => panic!("consumer lag gauge: {other:?}"),
    }
    // ANCHOR_END: metrics

    // One trace: request -> execute -> append, and on the consumer side handle -> execute of the
    // audit, all with the request's trace id.
    telemetry.provider.force_flush().expect("flush spans");
    let exported = telemetry.exporter.get_finished_spans().expect("spans");
    let request = exported
        .iter()
        .find(|s| {
            s.name == "request"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "account" && kv.value.as_str() == "a1")
        })
        .expect("the request span of a1");
    let trace = request.span_context.trace_id();
    let handle = exported
        .iter()
        .find(|s| {
            s.name == "jetsource.handle"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "aggregate_id" && kv.value.as_str() == "a1")
        })
        .expect("the handler span of a1");
    assert_eq!(
        handle.span_context.trace_id(),
        trace,
        "the handler continues the request's trace"
    );
    let audit_execute = exported.iter().find(|s| {
        s.name == "jetsource.execute"
            && s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == "aggregate_type" && kv.value.as_str() == "audit")
            && s.span_context.trace_id() == trace
    });
    assert!(
        audit_execute.is_some(),
        "the handler's command belongs to the same trace"
    );
}

fn key(ty: &'static str, id: &str) -> AggregateKey {
    AggregateKey::new(ty, AggregateId::new(id).expect("id"))
}
