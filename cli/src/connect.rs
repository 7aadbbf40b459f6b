//! From the connection flags to a connected client, through the runtime's
//! [`JetStreamConnectOptions::connect`]: the same credentials, TLS, reconnect and
//! permission-refusal handling a service gets.

use std::path::Path;

use async_nats::ServerAddr;
use jetsource::{JetStreamConnectOptions, JetStreamCredentials, JetStreamError};

use crate::args::ConnectionArgs;
use crate::error::{causes, chain, printable_url, CliError};

/// The runtime's connection options for these flags.
///
/// Which credentials go together is checked here rather than by clap: its `requires` and
/// `conflicts_with` misjudge global flags given before the subcommand. The nkey seed is read
/// from its file here; a creds file is only checked to be readable (the runtime reads it).
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
        args.nkey.is_some(),
    ];
    if kinds.iter().filter(|given| **given).count() > 1 {
        return Err(CliError::Credentials(
            "give only one of --user/--password, --token, --creds and --nkey",
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
        std::fs::File::open(creds).map_err(|e| CliError::CredsFile {
            what: "creds file",
            path: creds.display().to_string(),
            reason: e.to_string(),
        })?;
        options = options.creds_file(creds);
    }
    if let Some(path) = &args.nkey {
        options = options.nkey_seed(read_seed(path)?);
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => options = options.client_cert(cert, key),
        (Some(_), None) => return Err(CliError::Credentials("--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(CliError::Credentials("--tls-key needs --tls-cert")),
        (None, None) => {}
    }
    if let Some(ca) = &args.tls_ca {
        options = options.ca_file(ca);
    }
    Ok(options.require_tls(args.tls))
}

/// The nkey seed in the file at `path`: its first non-empty line, as `nsc` and `nk` write it.
pub fn read_seed(path: &Path) -> Result<String, CliError> {
    let unreadable = |reason: String| CliError::CredsFile {
        what: "nkey seed file",
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| unreadable("it is empty".into()))
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

/// Connects with `options` through the runtime. A URL that does not parse is reported before
/// connecting, by its printable form.
pub async fn connect(options: &JetStreamConnectOptions) -> Result<async_nats::Client, CliError> {
    if options.urls.is_empty() {
        return Err(CliError::InvalidServerUrl {
            url: "\"\"".into(),
            reason: "no server URL given".into(),
        });
    }
    for url in &options.urls {
        url.parse::<ServerAddr>()
            .map_err(|e| CliError::InvalidServerUrl {
                url: printable_url(url),
                reason: e.to_string(),
            })?;
    }
    let servers = printable_servers(options);
    // The runtime's words and the client's, which never hold a secret (and `main` redacts
    // every one given anyway).
    options.connect().await.map_err(|error| match error {
        JetStreamError::Auth(..) => CliError::Auth {
            servers,
            method: credentials_kind(options),
        },
        // What the client said: the runtime's message only says it could not connect.
        JetStreamError::Connect(..) => CliError::Connect {
            servers,
            reason: causes(&error),
        },
        // A creds file or nkey seed that cannot sign the server's challenge, and the like.
        other => CliError::Connect {
            servers,
            reason: chain(&other),
        },
    })
}

/// Which credentials were presented, without their secret part.
fn credentials_kind(options: &JetStreamConnectOptions) -> String {
    match &options.credentials {
        JetStreamCredentials::UserPassword { user, .. } => format!("password of user {user:?}"),
        JetStreamCredentials::Token(_) => "token".into(),
        JetStreamCredentials::NKeySeed(_) => "nkey".into(),
        JetStreamCredentials::CredsFile(path) => format!("creds file {}", path.display()),
        _ if options.urls.iter().any(|url| printable_url(url) != *url) => {
            "credentials in the server URL".into()
        }
        _ => match &options.client_cert {
            Some((cert, _)) => format!("client certificate {}", cert.display()),
            None => "connection without credentials (pass --user/--password, --token, --creds \
                     or --nkey)"
                .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;
    use std::path::PathBuf;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Cli {
        let mut argv = vec!["jetsource"];
        argv.extend_from_slice(args);
        argv.push("streams");
        Cli::parse_from(argv)
    }

    #[test]
    fn flags_map_to_the_runtime_options() {
        let cli = parse(&[
            "--server",
            "nats://a:4222, nats://b:4222",
            "--token",
            "t0k",
            "--timeout",
            "3s",
        ]);
        let options = options(&cli.connection).unwrap();
        assert_eq!(options.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            options.credentials,
            JetStreamCredentials::Token("t0k".into())
        );
        assert_eq!(options.request_timeout, Duration::from_secs(3));
        assert_eq!(options.connection_timeout, Duration::from_secs(3));
        assert_eq!(credentials_kind(&options), "token");
        assert!(!options.require_tls);
    }

    #[test]
    fn tls_flags_map_to_the_runtime_options() {
        let cli = parse(&[
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "client.pem",
            "--tls-key",
            "client-key.pem",
            "--tls",
        ]);
        let options = options(&cli.connection).unwrap();
        assert_eq!(options.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            options.client_cert,
            Some((PathBuf::from("client.pem"), PathBuf::from("client-key.pem")))
        );
        assert!(options.require_tls);
        assert_eq!(credentials_kind(&options), "client certificate client.pem");
    }

    #[test]
    fn the_nkey_seed_is_read_from_its_file() {
        let path = std::env::temp_dir().join(format!("jetsource-cli-seed-{}", std::process::id()));
        std::fs::write(&path, "\n  SUAEXAMPLESEED  \n").unwrap();
        let cli = parse(&["--nkey", path.to_str().unwrap()]);
        let options = options(&cli.connection);
        std::fs::remove_file(&path).unwrap();
        let options = options.unwrap();
        assert_eq!(
            options.credentials,
            JetStreamCredentials::NKeySeed("SUAEXAMPLESEED".into())
        );
        assert_eq!(credentials_kind(&options), "nkey");

        let cli = parse(&["--nkey", path.to_str().unwrap()]);
        let err = super::options(&cli.connection).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read the nkey seed file {}: ",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn credentials_in_the_url_are_named_without_their_secret() {
        let cli = parse(&["--server", "nats://ops:pw@host:4222"]);
        let options = options(&cli.connection).unwrap();
        assert_eq!(credentials_kind(&options), "credentials in the server URL");
        assert_eq!(printable_servers(&options), "nats://host:4222");
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
                "give only one of --user/--password, --token, --creds and --nkey",
            ),
            (
                &["--token", "t", "--creds", "x.creds"],
                "give only one of --user/--password, --token, --creds and --nkey",
            ),
            (
                &["--token", "t", "--nkey", "seed.nk"],
                "give only one of --user/--password, --token, --creds and --nkey",
            ),
            (&["--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
            (&["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
        ] {
            let err = options(&parse(args).connection).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }
}
