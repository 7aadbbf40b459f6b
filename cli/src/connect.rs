//! From the connection flags to a connected client, through the runtime's
//! [`JetStreamConnectOptions`].
//!
//! The runtime connects only inside `JetStreamStore::connect`, which also creates the stream;
//! most commands here must not create anything, so [`connect`] maps the same options onto
//! async-nats itself, the way the runtime does.

use std::time::Duration;

use async_nats::{ConnectErrorKind, ServerAddr};
use jetsource::{JetStreamConnectOptions, JetStreamCredentials};

use crate::args::ConnectionArgs;
use crate::error::{printable_url, CliError};

/// The runtime's connection options for these flags.
///
/// Which credentials go together is checked here rather than by clap: its `requires` and
/// `conflicts_with` misjudge global flags given before the subcommand.
pub fn options(args: &ConnectionArgs) -> Result<JetStreamConnectOptions, CliError> {
    let urls = args
        .server
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty());
    let mut options = JetStreamConnectOptions::new(urls)
        .name("jetsource-cli")
        .connection_timeout(args.timeout)
        .request_timeout(args.timeout);
    let kinds = [
        args.user.is_some() || args.password.is_some(),
        args.token.is_some(),
        args.creds.is_some(),
    ];
    if kinds.iter().filter(|given| **given).count() > 1 {
        return Err(CliError::Credentials(
            "give only one of --user/--password, --token and --creds",
        ));
    }
    match (&args.user, &args.password) {
        (Some(user), Some(password)) => options = options.user_password(user, password),
        (Some(_), None) => {
            return Err(CliError::Credentials(
                "--user needs --password (or NATS_PASSWORD)",
            ))
        }
        (None, Some(_)) => {
            return Err(CliError::Credentials(
                "--password needs --user (or NATS_USER)",
            ))
        }
        (None, None) => {}
    }
    if let Some(token) = &args.token {
        options = options.token(token);
    }
    if let Some(creds) = &args.creds {
        options = options.creds_file(creds);
    }
    Ok(options)
}

/// The servers of `options`, fit to print.
pub fn printable_servers(options: &JetStreamConnectOptions) -> String {
    options
        .urls
        .iter()
        .map(|url| printable_url(url))
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects with `options`.
pub async fn connect(options: &JetStreamConnectOptions) -> Result<async_nats::Client, CliError> {
    let servers = printable_servers(options);
    if options.urls.is_empty() {
        return Err(CliError::InvalidServerUrl {
            url: "\"\"".into(),
            reason: "no server URL given".into(),
        });
    }
    let addrs = options
        .urls
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| CliError::InvalidServerUrl {
                    url: printable_url(url),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut nats = async_nats::ConnectOptions::new();
    nats = match &options.credentials {
        JetStreamCredentials::UserPassword { user, password } => {
            nats.user_and_password(user.clone(), password.clone())
        }
        JetStreamCredentials::Token(token) => nats.token(token.clone()),
        JetStreamCredentials::NKeySeed(seed) => nats.nkey(seed.clone()),
        JetStreamCredentials::CredsFile(path) => {
            nats.credentials_file(path)
                .await
                .map_err(|e| CliError::CredsFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
        }
        JetStreamCredentials::None => nats,
    };
    if let Some(name) = &options.name {
        nats = nats.name(name);
    }
    if let Some(ca) = &options.ca_file {
        nats = nats.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &options.client_cert {
        nats = nats.add_client_certificate(cert.clone(), key.clone());
    }
    if options.require_tls {
        nats = nats.require_tls(true);
    }
    let max_delay = options.max_reconnect_delay;
    nats = nats
        .max_reconnects(options.max_reconnects)
        .reconnect_delay_callback(move |attempts| {
            let exponential = 10u64.saturating_mul(1 << attempts.min(16));
            Duration::from_millis(exponential).min(max_delay)
        })
        .connection_timeout(options.connection_timeout)
        .request_timeout(Some(options.request_timeout));
    nats.connect(addrs).await.map_err(|e| match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            CliError::Auth {
                servers,
                method: credentials_kind(&options.credentials),
            }
        }
        _ => CliError::Connect {
            servers,
            reason: e.to_string(),
        },
    })
}

/// Which credentials were presented, without their secret part.
fn credentials_kind(credentials: &JetStreamCredentials) -> String {
    match credentials {
        JetStreamCredentials::UserPassword { user, .. } => format!("password of user {user:?}"),
        JetStreamCredentials::Token(_) => "token".into(),
        JetStreamCredentials::NKeySeed(_) => "nkey".into(),
        JetStreamCredentials::CredsFile(path) => format!("creds file {}", path.display()),
        JetStreamCredentials::None => {
            "connection without credentials (pass --user/--password, --token or --creds)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    #[test]
    fn flags_map_to_the_runtime_options() {
        let cli = Cli::parse_from([
            "jetsource",
            "--server",
            "nats://a:4222, nats://b:4222",
            "--token",
            "t0k",
            "--timeout",
            "3s",
            "streams",
        ]);
        let options = options(&cli.connection).unwrap();
        assert_eq!(options.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            options.credentials,
            JetStreamCredentials::Token("t0k".into())
        );
        assert_eq!(options.request_timeout, Duration::from_secs(3));
        assert_eq!(credentials_kind(&options.credentials), "token");
    }

    #[test]
    fn credentials_that_do_not_go_together_are_refused() {
        for (args, expected) in [
            (
                &["--user", "ops"][..],
                "--user needs --password (or NATS_PASSWORD)",
            ),
            (
                &["--password", "pw"],
                "--password needs --user (or NATS_USER)",
            ),
            (
                &["--user", "ops", "--password", "pw", "--token", "t"],
                "give only one of --user/--password, --token and --creds",
            ),
            (
                &["--token", "t", "--creds", "x.creds"],
                "give only one of --user/--password, --token and --creds",
            ),
        ] {
            let mut argv = vec!["jetsource"];
            argv.extend_from_slice(args);
            argv.push("streams");
            let cli = Cli::parse_from(argv);
            let err = options(&cli.connection).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }
}
