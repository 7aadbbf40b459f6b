//! Security against spawned servers: user/password, token, nkey, TLS and mutual TLS. The right
//! credentials append and load; wrong ones fail with a typed error; no secret ever shows in an
//! error's `Display` or `Debug`, in what jetsource and async-nats log (captured here through
//! `tracing` at TRACE level), or in the server's log. A user allowed only to read its subjects
//! reads, and its appends are refused and store nothing.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use jetsource::testing::nats_server::{Auth, NatsServer, Permissions, ServerOptions, Tls, User};
use jetsource::{
    ErrorChain, EventStore, ExpectedVersion, JetStreamConnectOptions, JetStreamError,
    JetStreamStore, StoreError,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use support::{event, key};

// ---------------------------------------------------------------------------------------------
// Captured logs.

/// Everything logged through `tracing` by this test process, as text.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Asserts that no secret appears in any of `texts` (labelled), nor in the captured logs or the
/// server's log, and that the captured logs hold this test's connections (so the search is not
/// vacuous).
fn assert_secrets_hidden(secrets: &[&str], texts: &[(&str, String)], server: &NatsServer) {
    let logs = captured_logs();
    assert!(
        logs.contains("jetsource") || logs.contains("async_nats"),
        "the log capture saw nothing; the search below would prove nothing"
    );
    let server_log = server.log();
    assert!(!server_log.is_empty(), "the server log is empty");
    for secret in secrets {
        for (label, text) in texts {
            assert!(!text.contains(secret), "{label} shows a secret: {text}");
        }
        assert!(!logs.contains(secret), "a secret was logged");
        assert!(!server_log.contains(secret), "the server logged a secret");
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting.

async fn connect(options: JetStreamConnectOptions) -> Result<JetStreamStore, JetStreamError> {
    JetStreamStore::connect(
        options.connection_timeout(Duration::from_secs(3)),
        support::config("SECURE"),
    )
    .await
}

/// The right options work end to end: append an event, load it back.
async fn assert_append_and_load(options: JetStreamConnectOptions, id: &str) {
    let store = connect(options)
        .await
        .unwrap_or_else(|e| panic!("right credentials refused: {}", ErrorChain(&e)));
    let k = key("account", id);
    let outcome = store
        .append(
            &k,
            ExpectedVersion::Any,
            None,
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap();
    let loaded = store.load(&k, 1).await.unwrap();
    assert_eq!(
        loaded.last().map(|e| e.sequence),
        Some(outcome.last_sequence)
    );
}

/// Connects with `options`, expects a failure, and returns it with its `Display` and `Debug`.
async fn refused(
    options: JetStreamConnectOptions,
    label: &str,
) -> (JetStreamError, Vec<(String, String)>) {
    let options_debug = format!("{options:?}");
    let error = match connect(options).await {
        Ok(_) => panic!("{label}: wrong credentials were accepted"),
        Err(error) => error,
    };
    // Shown with `--nocapture`: what a user would read for each refusal.
    println!("{label}: {}", ErrorChain(&error));
    let texts = vec![
        (format!("{label}: Display"), error.to_string()),
        (format!("{label}: chain"), ErrorChain(&error).to_string()),
        (format!("{label}: Debug"), format!("{error:?}")),
        (format!("{label}: options Debug"), options_debug),
    ];
    (error, texts)
}

fn labelled(texts: &[(String, String)]) -> Vec<(&str, String)> {
    texts.iter().map(|(l, t)| (l.as_str(), t.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    logs();
    let (password, wrong) = ("pw-Right-7f3a9c", "pw-Wrong-5be21d");
    let server = NatsServer::with_auth(Auth::UserPassword {
        user: "app".into(),
        password: password.into(),
    });
    let options = || JetStreamConnectOptions::new([server.url()]);
    assert_append_and_load(options().user_password("app", password), "up-1").await;

    let mut texts = Vec::new();
    for (label, attempt) in [
        ("wrong password", options().user_password("app", wrong)),
        ("wrong user", options().user_password("intruder", password)),
        ("no credentials", options()),
    ] {
        let (error, shown) = refused(attempt, label).await;
        assert!(
            matches!(error, JetStreamError::Auth(_)),
            "{label}: {error:?}"
        );
        texts.extend(shown);
    }
    assert_secrets_hidden(&[password, wrong], &labelled(&texts), &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    logs();
    let (token, wrong) = ("tok-Right-0c8e41", "tok-Wrong-93d7aa");
    let server = NatsServer::with_auth(Auth::Token(token.into()));
    let options = || JetStreamConnectOptions::new([server.url()]);
    assert_append_and_load(options().token(token), "tok-1").await;

    let mut texts = Vec::new();
    for (label, attempt) in [
        ("wrong token", options().token(wrong)),
        ("no credentials", options()),
    ] {
        let (error, shown) = refused(attempt, label).await;
        assert!(
            matches!(error, JetStreamError::Auth(_)),
            "{label}: {error:?}"
        );
        texts.extend(shown);
    }
    assert_secrets_hidden(&[token, wrong], &labelled(&texts), &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey() {
    logs();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let other_seed = nkeys::KeyPair::new_user().seed().unwrap();
    let server = NatsServer::with_auth(Auth::NKey {
        public_key: user.public_key(),
    });
    let options = || JetStreamConnectOptions::new([server.url()]);
    assert_append_and_load(options().nkey_seed(seed.clone()), "nk-1").await;

    let mut texts = Vec::new();
    let (error, shown) =
        refused(options().nkey_seed(other_seed.clone()), "other user's seed").await;
    assert!(matches!(error, JetStreamError::Auth(_)), "{error:?}");
    texts.extend(shown);
    // A seed that is no seed at all cannot sign the server's nonce: an unusable option.
    let garbage = format!("{}garbage", &seed[..20]);
    let (error, shown) = refused(options().nkey_seed(garbage.clone()), "garbage seed").await;
    assert!(
        matches!(&error, JetStreamError::InvalidConnectOption { option, .. }
            if option.contains("nkey seed")),
        "{error:?}"
    );
    texts.extend(shown);
    assert_secrets_hidden(&[&seed, &other_seed, &garbage], &labelled(&texts), &server);
}

// ---------------------------------------------------------------------------------------------
// TLS with a CA made by the test.

/// A certificate authority and the PEM files it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_key: KeyPair,
    ca: Certificate,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki { dir, ca_key, ca };
        pki.write("ca.pem", &pki.ca.pem());
        pki
    }

    fn write(&self, file: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Signs a certificate for `usage`; returns (certificate, key) files and the key's PEM.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let key_pem = key.serialize_pem();
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}-key.pem"), &key_pem),
            key_pem,
        )
    }
}

/// The base64 body of a PEM private key: what would show if the key leaked.
fn key_material(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn tls_server(pki: &Pki, verify_clients: bool) -> NatsServer {
    let (cert_file, key_file, _) = pki.issue("server", ExtendedKeyUsagePurpose::ServerAuth);
    let mut tls = Tls::new(cert_file, key_file);
    if verify_clients {
        tls = tls.client_ca(pki.ca_file());
    }
    NatsServer::start_with_options(ServerOptions::new().tls(tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca() {
    logs();
    let pki = Pki::new("jetsource");
    let server = tls_server(&pki, false);
    let options = || JetStreamConnectOptions::new([server.url()]);
    assert_append_and_load(options().ca_file(pki.ca_file()), "tls-1").await;

    let stranger = Pki::new("stranger");
    for (label, attempt) in [
        ("system roots only", options().require_tls(true)),
        ("another CA", options().ca_file(stranger.ca_file())),
        ("plain text", options()),
    ] {
        // The client refusing the server is a connection failure, not a refused credential.
        let (error, _) = refused(attempt, label).await;
        assert!(
            matches!(&error, JetStreamError::Connect(_)
                if ErrorChain(&error).to_string().contains("certificate")),
            "{label}: {error:?}"
        );
    }
    // What the server saw: TLS handshakes that failed, and no plain-text client.
    assert!(server.log().contains("TLS"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    logs();
    let pki = Pki::new("jetsource");
    let server = tls_server(&pki, true);
    let (cert, key_file, key_pem) = pki.issue("client", ExtendedKeyUsagePurpose::ClientAuth);
    let options = || JetStreamConnectOptions::new([server.url()]).ca_file(pki.ca_file());
    assert_append_and_load(options().client_cert(&cert, &key_file), "mtls-1").await;

    let stranger = Pki::new("stranger");
    let (stranger_cert, stranger_key, stranger_pem) =
        stranger.issue("intruder", ExtendedKeyUsagePurpose::ClientAuth);
    let mut texts = Vec::new();
    for (label, attempt) in [
        ("no client certificate", options()),
        (
            "client certificate of another CA",
            options().client_cert(&stranger_cert, &stranger_key),
        ),
    ] {
        // The server refusing the client's certificate is a refused credential.
        let (error, shown) = refused(attempt, label).await;
        assert!(
            matches!(error, JetStreamError::Auth(_)),
            "{label}: {error:?}"
        );
        texts.extend(shown);
    }
    let (client_key, stranger_key) = (key_material(&key_pem), key_material(&stranger_pem));
    assert_secrets_hidden(&[&client_key, &stranger_key], &labelled(&texts), &server);
}

// ---------------------------------------------------------------------------------------------
// Subject permissions.

/// The JetStream API subjects a reader of stream `stream` needs: stream and bucket lookups,
/// direct and leader gets, and the short-lived consumers large loads use. No publish to event
/// subjects, no stream or consumer administration beyond that.
fn reader_permissions(stream: &str) -> Permissions {
    Permissions::default()
        .allow_publish("$JS.API.INFO")
        .allow_publish(format!("$JS.API.STREAM.INFO.{stream}"))
        .allow_publish(format!("$JS.API.STREAM.INFO.KV_{stream}_SNAPSHOTS"))
        .allow_publish(format!("$JS.API.STREAM.MSG.GET.{stream}"))
        .allow_publish(format!("$JS.API.DIRECT.GET.{stream}"))
        .allow_publish(format!("$JS.API.DIRECT.GET.{stream}.>"))
        .allow_publish(format!("$JS.API.CONSUMER.CREATE.{stream}.>"))
        .allow_publish(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"))
        .allow_publish(format!("$JS.API.CONSUMER.DELETE.{stream}.>"))
        .allow_subscribe("_INBOX.>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_reads_and_cannot_append() {
    logs();
    let server = NatsServer::start_with_options(ServerOptions::new().auth(Auth::Users(vec![
        User::new("writer", "writer-pw"),
        User::new("reader", "reader-pw").permissions(reader_permissions("SECURE")),
    ])));
    let url = server.url();
    let as_user = |user: &str, password: &str| {
        JetStreamConnectOptions::new([url.clone()])
            .user_password(user, password)
            .request_timeout(Duration::from_secs(2))
    };
    let writer = connect(as_user("writer", "writer-pw")).await.unwrap();
    let k = key("account", "perm-1");
    // 200 events: enough for the load to go through a short-lived consumer (128 or more).
    for chunk in 0..20 {
        writer
            .append(
                &k,
                ExpectedVersion::Exact(chunk * 10),
                None,
                support::events("deposited", 10),
            )
            .await
            .unwrap();
    }

    let reader = connect(as_user("reader", "reader-pw")).await.unwrap();
    assert_eq!(reader.load(&k, 1).await.unwrap().len(), 200);
    assert_eq!(reader.load(&k, 195).await.unwrap().len(), 6);
    assert_eq!(reader.read_all(1, 50).await.unwrap().len(), 50);

    let started = Instant::now();
    let error = reader
        .append(
            &k,
            ExpectedVersion::Exact(200),
            None,
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    // The server refuses the publish with an asynchronous `-ERR` and never answers the request;
    // the store matches that `-ERR` to the waiting append and names the subject.
    assert!(
        matches!(&error, StoreError::Backend(inner)
            if matches!(inner.downcast_ref::<JetStreamError>(),
                Some(JetStreamError::PermissionDenied { subject })
                    if subject == "secure.account.perm-1.deposited")),
        "{error:?}"
    );
    assert!(
        ErrorChain(&error)
            .to_string()
            .contains("permissions violation"),
        "{error}"
    );
    // At once, not at the request timeout (2 s here): the refusal ends the wait.
    assert!(waited < Duration::from_secs(1), "took {waited:?}");
    let refusal = "Permissions Violation for Publish to \"secure.account.perm-1.deposited\"";
    let deadline = Instant::now() + Duration::from_secs(2);
    while !captured_logs().contains(refusal) {
        assert!(
            Instant::now() < deadline,
            "the refusal was not logged:\n{}",
            captured_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing was stored: the writer still sees 200 events.
    let fresh = connect(as_user("writer", "writer-pw")).await.unwrap();
    assert_eq!(fresh.load(&k, 1).await.unwrap().len(), 200);
}

// ANCHOR: subscriber_permissions
/// What a subscriber `durable` of stream `stream` needs, and nothing more: the store's lookups,
/// its own durable consumer (pull and ack), its dead-letter stream and redrive consumer, and its
/// completion log. No publish to event subjects.
fn subscriber_permissions(stream: &str, durable: &str) -> Permissions {
    let dlq = format!("{stream}_DLQ");
    let done = format!("{stream}_{durable}_DONE");
    let redrive = format!("{durable}_redrive");
    let mut permissions = Permissions::default()
        .allow_publish("$JS.API.INFO")
        .allow_publish(format!("$JS.API.STREAM.INFO.{stream}"))
        .allow_publish(format!("$JS.API.STREAM.INFO.KV_{stream}_SNAPSHOTS"))
        // Reading an aggregate's last event, which an append looks up first.
        .allow_publish(format!("$JS.API.STREAM.MSG.GET.{stream}"))
        .allow_subscribe("_INBOX.>");
    for own_stream in [&dlq, &done] {
        permissions = permissions
            .allow_publish(format!("$JS.API.STREAM.INFO.{own_stream}"))
            .allow_publish(format!("$JS.API.STREAM.CREATE.{own_stream}"));
    }
    for (on, consumer) in [(stream, durable), (dlq.as_str(), redrive.as_str())] {
        permissions = permissions
            .allow_publish(format!("$JS.API.CONSUMER.CREATE.{on}.{consumer}"))
            .allow_publish(format!("$JS.API.CONSUMER.CREATE.{on}.{consumer}.>"))
            .allow_publish(format!("$JS.API.CONSUMER.INFO.{on}.{consumer}"))
            .allow_publish(format!("$JS.API.CONSUMER.MSG.NEXT.{on}.{consumer}"))
            .allow_publish(format!("$JS.ACK.{on}.{consumer}.>"));
    }
    permissions
        // The lane's presence, which a successor asks before it takes a dead lane's deliveries.
        .allow_publish(format!("jetsource_lane.{stream}.{durable}"))
        .allow_subscribe(format!("jetsource_lane.{stream}.{durable}"))
        // Dead letters of this subscriber only.
        .allow_publish(format!("jetsource_dlq.{stream}.dead.{durable}"))
        // The completion log: written, and its tail read back at start.
        .allow_publish(format!("jetsource_done.{stream}.{durable}"))
        .allow_publish(format!("$JS.API.STREAM.MSG.GET.{done}"))
        .allow_publish(format!("$JS.API.CONSUMER.CREATE.{done}.>"))
        .allow_publish(format!("$JS.API.CONSUMER.MSG.NEXT.{done}.>"))
        .allow_publish(format!("$JS.API.CONSUMER.DELETE.{done}.>"))
}
// ANCHOR_END: subscriber_permissions

#[derive(jetsource::Event, serde::Serialize, serde::Deserialize)]
#[event(name = "deposited", version = 1)]
struct Deposited {
    n: u64,
}

#[derive(jetsource::EventSet)]
enum Deposits {
    Deposited(Deposited),
}

/// Counts what it handles.
#[derive(Clone, Default)]
struct Counting(Arc<std::sync::atomic::AtomicU64>);

impl jetsource::subscriber::Subscriber for Counting {
    type Event = Deposits;

    async fn handle(
        &self,
        _: Deposits,
        _: &jetsource::subscriber::EventContext,
    ) -> Result<(), jetsource::subscriber::HandlerError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_user_allowed_only_its_own_subjects_consumes_and_cannot_append() {
    logs();
    let server = NatsServer::start_with_options(ServerOptions::new().auth(Auth::Users(vec![
        User::new("writer", "writer-pw"),
        User::new("billing", "billing-pw").permissions(subscriber_permissions("SECURE", "billing")),
    ])));
    let url = server.url();
    let as_user = |user: &str, password: &str| {
        JetStreamConnectOptions::new([url.clone()])
            .user_password(user, password)
            .request_timeout(Duration::from_secs(2))
    };
    let writer = connect(as_user("writer", "writer-pw")).await.unwrap();
    let k = key("account", "sub-1");
    writer
        .append(
            &k,
            ExpectedVersion::Exact(0),
            None,
            support::events("deposited", 20),
        )
        .await
        .unwrap();

    let billing = connect(as_user("billing", "billing-pw")).await.unwrap();
    let counted = Counting::default();
    let config =
        jetsource::subscriber::SubscriberConfig::new("billing").ack_wait(Duration::from_secs(1));
    let running = jetsource::subscriber::start(&billing, counted.clone(), config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", captured_logs()));
    // Read-your-writes needs nothing beyond the consumer's and the stream's info.
    running
        .wait_for(20, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", captured_logs()));
    assert_eq!(counted.0.load(std::sync::atomic::Ordering::SeqCst), 20);
    let stats = running.shutdown().await.unwrap();
    assert_eq!(stats.handled, 20);

    let error = billing
        .append(
            &k,
            ExpectedVersion::Exact(20),
            None,
            vec![event("deposited", "{}")],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Backend(inner)
            if matches!(inner.downcast_ref::<JetStreamError>(),
                Some(JetStreamError::PermissionDenied { .. }))),
        "{error:?}"
    );
    assert_eq!(writer.load(&k, 1).await.unwrap().len(), 20);
}
