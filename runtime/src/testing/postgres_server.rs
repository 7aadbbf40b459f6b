//! Throwaway PostgreSQL servers for tests: loopback only, a temporary data directory, a free
//! port, killed and removed on drop. A test can crash one ([`PostgresServer::kill`]) and start it
//! again on the same port and data directory without touching any other PostgreSQL on the
//! machine (such as a shared server on 5432).
//!
//! The binaries (`initdb` and `postgres`) are taken from the first of these directories that
//! holds both: `POSTGRES_BIN_DIR`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu packages), then `PATH`.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (the temporary directory they
//! create is owned by uid 0), `initdb` and `postgres` run as the `postgres` system user: the
//! directory is handed to that user and the processes are spawned with its uid and gid (no
//! `su` or `runuser` in between, so the child the harness holds is the postmaster itself). The
//! parents of the temporary directory (`TMPDIR`, `/tmp` by default) must then be searchable by
//! that user. Otherwise they run as the current user.
//!
//! The cluster is created with `initdb --auth=trust -U postgres --no-locale -E UTF8`, so anyone
//! on loopback connects as `postgres` without a password. The server listens on 127.0.0.1 only,
//! with `fsync` and `full_page_writes` off: committed data survives a killed process (the
//! operating system still has it), not a machine crash. `synchronous_commit` stays on, or a
//! commit could return before its WAL record left shared memory and a [`PostgresServer::kill`]
//! would lose it.
//!
//! ```no_run
//! use jetsource::testing::postgres_server::PostgresServer;
//! let mut server = PostgresServer::start();
//! let url = server.url(); // postgres://postgres@127.0.0.1:<port>/postgres
//! server.kill(); // SIGKILL, as in a crash
//! server.restart(); // crash recovery, same port and data
//! assert_eq!(url, server.url());
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start or restart (crash recovery included) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the processes of a killed server get to exit on their own before they are killed.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// A running PostgreSQL server on 127.0.0.1, with a database `postgres` and a superuser
/// `postgres` that needs no password.
///
/// ```no_run
/// use jetsource::testing::postgres_server::PostgresServer;
/// let mut server = PostgresServer::start();
/// server.stop(); // clean shutdown
/// assert!(!server.is_running());
/// server.restart();
/// assert!(server.is_running());
/// ```
pub struct PostgresServer {
    bin_dir: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PostgresServer {
    /// Creates a cluster in a temporary directory and starts a server on a free port.
    ///
    /// # Panics
    /// When no PostgreSQL binaries are found, `initdb` fails, or the server does not accept
    /// connections within 30 s (with its log).
    pub fn start() -> Self {
        let bin_dir = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("jetsource-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let run_as = run_as(dir.path());
        let mut server = PostgresServer {
            bin_dir,
            port: free_port(),
            run_as,
            dir,
            child: None,
        };
        server.init_db();
        // The port was free a moment ago; another test may have taken it since.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if attempts < 5 && port_taken(&log) => server.port = free_port(),
                Err(log) => panic!(
                    "postgres exited before it accepted connections on port {}; its log:\n{log}",
                    server.port
                ),
            }
        }
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`PGDATA`), kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server's Unix socket, or `None` when the temporary directory's
    /// path is too long for one (then only TCP is served).
    pub fn socket_dir(&self) -> Option<PathBuf> {
        let dir = self.dir.path().to_path_buf();
        // sun_path holds 107 bytes; the socket is `<dir>/.s.PGSQL.<port>` plus a `.lock` file.
        (dir.as_os_str().len() + "/.s.PGSQL.65535.lock".len() < 100).then_some(dir)
    }

    /// Whether the postmaster is running (not killed, stopped or exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the server logged since it was last (re)started: after a restart that followed
    /// [`kill`](Self::kill), its crash recovery.
    pub fn log(&self) -> String {
        read_to_string(&self.log_path())
    }

    /// Kills the postmaster with SIGKILL, as in a crash, and waits until every process it had
    /// started (backends, checkpointer, WAL writer...) noticed and exited, so that the port and
    /// the data directory are free for [`restart`](Self::restart). Clients see their connections
    /// drop. Does nothing when the server is not running.
    ///
    /// # Panics
    /// When server processes are still using the data directory after 15 s.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(pids) = self.wait_for_orphans() {
            panic!(
                "postgres processes {pids:?} still use {} after the postmaster was killed",
                self.data_dir().display()
            );
        }
    }

    /// Shuts the server down cleanly (PostgreSQL's fast shutdown: open transactions roll back,
    /// clients are disconnected, a checkpoint is written). Does nothing when it is not running.
    ///
    /// # Panics
    /// When server processes are still using the data directory after the shutdown.
    pub fn stop(&mut self) {
        self.shut_down("INT", Duration::from_secs(30));
        if let Err(pids) = self.wait_for_orphans() {
            panic!(
                "postgres processes {pids:?} still use {} after the shutdown",
                self.data_dir().display()
            );
        }
    }

    /// Starts the server again on the same port and data directory; a running server is
    /// stopped cleanly first. After [`kill`](Self::kill), PostgreSQL runs crash recovery and
    /// this returns once it accepts connections again.
    ///
    /// # Panics
    /// When the server does not accept connections within 30 s (with its log), for instance
    /// because another process took the port meanwhile.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!(
                "postgres exited before it accepted connections on port {} after a restart; \
                 its log:\n{log}",
                self.port
            );
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A command for one of the server binaries, as the `postgres` user when running as root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        #[cfg(unix)]
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when it changes the uid.
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        command
    }

    fn init_db(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", self.bin_dir.display()));
        if !output.status.success() {
            let hint = if self.run_as.is_some() {
                " (running as root, initdb ran as the `postgres` user: every parent of the \
                 temporary directory must be searchable by it; set TMPDIR otherwise)"
            } else {
                ""
            };
            panic!(
                "initdb failed with {}{hint}:\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// Starts the postmaster and waits until it accepts connections; `Err(log)` when it exits
    /// before that.
    fn spawn(&mut self) -> Result<(), String> {
        // Truncate the log so that it tells about this run only.
        let log_path = self.log_path();
        let _ = std::fs::write(&log_path, b"");
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .and_then(|file| Ok((file.try_clone()?, file)))
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_path.display()));
        let socket_dir = self
            .socket_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k", &socket_dir])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}/postgres: {e}", self.bin_dir.display()));
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until the postmaster says it is ready in `postmaster.pid` and a client gets through
    /// the startup handshake.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_probe = String::from("not tried yet");
        loop {
            let Some(child) = self.child.as_mut() else {
                unreachable!("wait_ready runs after a spawn");
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("(postgres exited with {status})\n{}", self.log()));
            }
            let pid = child.id();
            if self.pid_file_says_ready(pid) {
                match probe(self.port) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_probe = e,
                }
            }
            if Instant::now() > deadline {
                self.shut_down("QUIT", Duration::from_secs(10));
                panic!(
                    "postgres did not accept connections on port {} within {} s (last attempt: \
                     {last_probe}); its log:\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether `postmaster.pid` names this postmaster and its status line says `ready`: then it
    /// is listening on our port, not some other process that took it.
    fn pid_file_says_ready(&self, pid: u32) -> bool {
        let text = read_to_string(&self.data_dir().join("postmaster.pid"));
        let lines: Vec<&str> = text.lines().collect();
        lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
            && lines.get(3).map(|l| l.trim()) == Some(self.port.to_string().as_str())
            && lines.get(7).map(|l| l.trim()) == Some("ready")
    }

    /// Sends the postmaster `signal` (`INT`: fast shutdown, `QUIT`: immediate shutdown) and
    /// waits up to `timeout` for it to exit, then kills it.
    fn shut_down(&mut self, signal: &str, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let signalled = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !signalled || !wait_exit(&mut child, timeout) {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// Waits until no process runs in the data directory any more (a killed postmaster's
    /// children exit when they notice it is gone); kills those left after [`ORPHAN_GRACE`].
    /// `Err` lists the ones still there 5 s later. Needs `/proc` (Linux); elsewhere it returns
    /// at once.
    fn wait_for_orphans(&self) -> Result<(), Vec<u32>> {
        let data_dir = self.data_dir();
        let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
        let start = Instant::now();
        let mut killed = false;
        loop {
            let pids = processes_in(&data_dir);
            if pids.is_empty() {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited > ORPHAN_GRACE + Duration::from_secs(5) {
                return Err(pids);
            }
            if waited > ORPHAN_GRACE && !killed {
                killed = true;
                let _ = Command::new("kill")
                    .arg("-9")
                    .args(pids.iter().map(u32::to_string))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster ends its children itself, then the directory goes.
        self.shut_down("QUIT", Duration::from_secs(10));
        let _ = self.wait_for_orphans();
    }
}

/// The directory holding `initdb` and `postgres`.
///
/// # Panics
/// When none is found, saying where it looked.
pub fn bin_dir() -> PathBuf {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR").map(PathBuf::from) {
        if has_binaries(&dir) {
            return dir;
        }
        panic!(
            "POSTGRES_BIN_DIR is {}, which holds no `initdb` and `postgres`",
            dir.display()
        );
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| has_binaries(dir)) {
        return dir;
    }
    if let Some(dir) = newest_debian_bin_dir(Path::new("/usr/lib/postgresql")) {
        if has_binaries(&dir) {
            return dir;
        }
    }
    let from_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| has_binaries(dir)));
    from_path.unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (`initdb` and `postgres`) found in POSTGRES_BIN_DIR, \
             `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH; install the PostgreSQL \
             server package or point POSTGRES_BIN_DIR at its bin directory"
        )
    })
}

/// `<root>/<version>/bin` for the highest numeric version under `root`.
fn newest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let version = parse_major_minor(&name)?;
            let bin = entry.path().join("bin");
            bin.is_dir().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

/// `15` into (15, 0), `9.6` into (9, 6).
fn parse_major_minor(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(minor) => minor.parse().ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((major, minor))
}

/// The `postgres` user's uid and gid when `dir`, just created by this process, belongs to root,
/// i.e. the effective uid is 0; hands `dir` to that user.
#[cfg(unix)]
fn run_as(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let owner = dir
        .metadata()
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .uid();
    if owner != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .stderr(Stdio::null())
            .output();
        output
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the tests run as root, which PostgreSQL refuses, and there is no `postgres` \
                     user to run it as; create one or run the tests as another user"
                )
            })
    };
    let (uid, gid) = (id("-u"), id("-g"));
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot hand {} to the postgres user: {e}", dir.display()));
    Some((uid, gid))
}

#[cfg(not(unix))]
fn run_as(_dir: &Path) -> Option<(u32, u32)> {
    None
}

/// The processes whose working directory is `dir`: a PostgreSQL server's postmaster and all its
/// children run in the data directory. Empty without `/proc`. Zombies have no working directory
/// and hold nothing, so they do not count.
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            (cwd == dir).then_some(pid)
        })
        .collect()
}

/// Polls until `child` exited; false after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Whether the log says the port was taken by someone else.
fn port_taken(log: &str) -> bool {
    log.contains("could not bind") || log.contains("could not create any TCP/IP sockets")
}

/// Connects as `postgres` to the database `postgres` and waits for ReadyForQuery: the server
/// accepts connections (it answers "the database system is starting up" during recovery).
fn probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    // StartupMessage: length, protocol 3.0, then key/value pairs ending with an empty key.
    let mut body = 196_608_u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    stream.write_all(&message).map_err(|e| e.to_string())?;
    loop {
        let mut header = [0_u8; 5];
        stream.read_exact(&mut header).map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0_u8; len.saturating_sub(4)];
        stream.read_exact(&mut payload).map_err(|e| e.to_string())?;
        match header[0] {
            b'Z' => {
                // Terminate, so the server does not log an unexpected EOF.
                let _ = stream.write_all(&[b'X', 0, 0, 0, 4]);
                return Ok(());
            }
            b'E' => return Err(error_message(&payload)),
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err("the server asks for a password".to_owned())
            }
            // AuthenticationOk, ParameterStatus, BackendKeyData, notices.
            _ => {}
        }
    }
}

/// The `M` (message) field of an ErrorResponse.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "an error without a message".to_owned())
}

fn read_to_string(path: &Path) -> String {
    let mut out = String::new();
    if let Ok(mut file) = File::open(path) {
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

#[cfg(test)]
mod tests {
    use super::{error_message, parse_major_minor, port_taken};

    #[test]
    fn parses_debian_version_directories() {
        assert_eq!(parse_major_minor("15"), Some((15, 0)));
        assert_eq!(parse_major_minor("9.6"), Some((9, 6)));
        assert_eq!(parse_major_minor("lib"), None);
        assert_eq!(parse_major_minor("15.1.2"), None);
    }

    #[test]
    fn reads_the_message_of_an_error_response() {
        let payload = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
        assert_eq!(error_message(payload), "the database system is starting up");
        assert_eq!(error_message(b"\0"), "an error without a message");
    }

    #[test]
    fn recognises_a_taken_port() {
        assert!(port_taken(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!port_taken(
            "LOG:  database system is ready to accept connections"
        ));
    }
}
