//! How to reach the NATS servers: URLs, credentials, TLS and reconnects.

use super::refusals::Refusals;
use std::path::PathBuf;
use std::time::Duration;

use super::error::JetStreamError;

/// Credentials presented to the server.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials.
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An nkey seed (`SU...`).
    NKeySeed(String),
    /// A `.creds` file (JWT plus nkey seed).
    CredsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::NKeySeed(_) => f.write_str("NKeySeed(***)"),
            Credentials::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Connection settings for [`JetStreamStore::connect`](crate::JetStreamStore::connect).
///
/// ```
/// use std::time::Duration;
/// use jetsource::JetStreamConnectOptions;
/// let options = JetStreamConnectOptions::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
///     .name("orders-service")
///     .user_password("orders", "s3cret")
///     .ca_file("/etc/nats/ca.pem")
///     .max_reconnects(Some(60))
///     .request_timeout(Duration::from_secs(5));
/// assert_eq!(options.urls.len(), 2);
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Server URLs; the client picks one and fails over to the others.
    pub urls: Vec<String>,
    /// The connection name the server shows in its monitoring.
    pub name: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
    /// A CA certificate (PEM) to verify the server with; turns TLS on.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Require TLS even without a CA file.
    pub require_tls: bool,
    /// Give up reconnecting after this many attempts (`None`: never give up).
    pub max_reconnects: Option<usize>,
    /// The longest wait between reconnect attempts.
    pub max_reconnect_delay: Duration,
    /// Keep retrying when no server is reachable at start, instead of failing.
    pub retry_on_initial_connect: bool,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
    /// How long a request (publish ack, load, lookup) may take.
    pub request_timeout: Duration,
}

impl ConnectOptions {
    /// Options for these server URLs, without credentials.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConnectOptions {
            urls: urls.into_iter().map(Into::into).collect(),
            name: None,
            credentials: Credentials::None,
            ca_file: None,
            client_cert: None,
            require_tls: false,
            max_reconnects: None,
            max_reconnect_delay: Duration::from_secs(4),
            retry_on_initial_connect: false,
            connection_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Sets the connection name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Authenticates with a user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Credentials::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// Authenticates with an nkey seed.
    pub fn nkey_seed(mut self, seed: impl Into<String>) -> Self {
        self.credentials = Credentials::NKeySeed(seed.into());
        self
    }

    /// Authenticates with a `.creds` file.
    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Credentials::CredsFile(path.into());
        self
    }

    /// Verifies the server with this CA certificate (turns TLS on).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (mutual TLS).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Requires TLS.
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// Sets how many reconnect attempts are made before giving up (`None`: forever).
    pub fn max_reconnects(mut self, attempts: Option<usize>) -> Self {
        self.max_reconnects = attempts;
        self
    }

    /// Sets the longest wait between reconnect attempts.
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// Keeps retrying when no server is reachable at start.
    pub fn retry_on_initial_connect(mut self, retry: bool) -> Self {
        self.retry_on_initial_connect = retry;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the connection timeout.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Connects with these options, mapping failures to typed errors: the async-nats client
    /// a [`JetStreamStore`](crate::JetStreamStore) would use, for tools that need the raw
    /// connection too.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), jetsource::JetStreamError> {
    /// let options = jetsource::JetStreamConnectOptions::new(["nats://127.0.0.1:4222"]);
    /// let client = options.connect().await?;
    /// println!("connected to {}", client.server_info().server_name);
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self) -> Result<async_nats::Client, JetStreamError> {
        self.connect_recording(Refusals::default()).await
    }

    /// Connects, recording the server's permission refusals in `refusals`.
    pub(crate) async fn connect_recording(
        &self,
        refusals: Refusals,
    ) -> Result<async_nats::Client, JetStreamError> {
        if self.urls.is_empty() {
            return Err(JetStreamError::InvalidConfig("no server URL given".into()));
        }
        let mut options = async_nats::ConnectOptions::new();
        options = match &self.credentials {
            Credentials::None => options,
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
            Credentials::NKeySeed(seed) => options.nkey(seed.clone()),
            Credentials::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                JetStreamError::InvalidConnectOption {
                    option: format!("creds file {}", path.display()),
                    source: Box::new(e),
                }
            })?,
        };
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        if self.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        // The server reports some refusals only asynchronously (`-ERR 'Permissions Violation
        // for Publish to "<subject>"'`): the refused request itself just times out. They are
        // logged and recorded, so the timed-out append can name the cause. Server errors carry
        // no credentials.
        options = options.event_callback(move |event| {
            let refusals = refusals.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let error = error.to_string();
                    tracing::warn!(%error, "the NATS server refused an operation");
                    refusals.record(&error);
                }
            }
        });
        let max_delay = self.max_reconnect_delay;
        options = options
            .max_reconnects(self.max_reconnects)
            .reconnect_delay_callback(move |attempts| {
                let exp = 10u64.saturating_mul(1 << attempts.min(16));
                Duration::from_millis(exp).min(max_delay)
            })
            .connection_timeout(self.connection_timeout)
            .request_timeout(Some(self.request_timeout));
        let addrs = self
            .urls
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>().map_err(|e| {
                    JetStreamError::InvalidConnectOption {
                        option: format!("server URL {:?}", without_userinfo(url)),
                        source: Box::new(e),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        options.connect(addrs).await.map_err(|e| {
            use async_nats::ConnectErrorKind;
            // async-nats' messages name the failure, never the credentials (tests/security.rs
            // checks it for every kind of credential).
            let refused_certificate = is_client_certificate_refusal(&e.to_string());
            match e.kind() {
                ConnectErrorKind::AuthorizationViolation => JetStreamError::Auth(Box::new(e)),
                // Signing the server's nonce failed on this side: the seed or creds file is
                // unusable, whatever the server would have said.
                ConnectErrorKind::Authentication => JetStreamError::InvalidConnectOption {
                    option: "the nkey seed or creds file to sign the server's nonce".into(),
                    source: Box::new(e),
                },
                ConnectErrorKind::Tls | ConnectErrorKind::Io if refused_certificate => {
                    JetStreamError::Auth(Box::new(e))
                }
                ConnectErrorKind::ServerParse => JetStreamError::InvalidConnectOption {
                    option: "the server addresses".into(),
                    source: Box::new(e),
                },
                _ => JetStreamError::Connect(Box::new(e)),
            }
        })
    }
}

/// `url` without the `user:password@` part a NATS URL may carry, for error messages.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// Whether a failed TLS handshake is the server refusing the client's certificate (mutual TLS):
/// the server's TLS alert, as rustls words it. async-nats passes TLS errors on as text only.
fn is_client_certificate_refusal(message: &str) -> bool {
    const ALERTS: [&str; 4] = [
        "CertificateRequired",
        "BadCertificate",
        "UnknownCA",
        "CertificateUnknown",
    ];
    message.contains("received fatal alert") && ALERTS.iter().any(|alert| message.contains(alert))
}

#[cfg(test)]
mod tests {
    use super::{is_client_certificate_refusal, without_userinfo};

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(
            without_userinfo("nats://ops:s3cret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(without_userinfo("tok@host:x"), "***@host:x");
        assert_eq!(without_userinfo("nats://host:4222"), "nats://host:4222");
    }

    #[test]
    fn client_certificate_refusals_are_told_from_other_tls_failures() {
        assert!(is_client_certificate_refusal(
            "IO error: received fatal alert: CertificateRequired"
        ));
        assert!(is_client_certificate_refusal(
            "IO error: received fatal alert: UnknownCA"
        ));
        // The client distrusting the server is a connection problem, not a refused credential.
        assert!(!is_client_certificate_refusal(
            "IO error: invalid peer certificate: UnknownIssuer"
        ));
    }
}
