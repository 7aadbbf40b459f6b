//! Reaching a PostgreSQL event store: the URL and schema flags to a checked connection pool and
//! the runtime's [`PgStore`] on it.

use std::time::Duration;

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, ConnectOptions, Connection, PgConnection, PgPool};
use jetsource::PgStore;

use crate::args::DatabaseArgs;
use crate::error::{chain, CliError};

/// A connected PostgreSQL event store.
pub struct Database {
    /// The runtime's store on its tables.
    pub store: PgStore,
    /// The schema that holds them, e.g. `public`.
    pub schema: String,
}

impl Database {
    /// The pool the store reads through.
    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Where events are read, for the output: `PostgreSQL schema <schema>`.
    pub fn place(&self) -> String {
        format!("PostgreSQL schema {}", self.schema)
    }
}

/// Connects to the store `args` names, `command` being the command that needs it (for the
/// message when no URL is given), each connection attempt and statement limited to `timeout`.
///
/// One connection is made first and checked: the database answers, the schema exists and holds
/// a `jetsource_events` table. Its errors name the URL without its password.
pub async fn connect(
    args: &DatabaseArgs,
    command: &str,
    timeout: Duration,
) -> Result<Database, CliError> {
    let Some(url) = args.database.as_deref() else {
        return Err(CliError::Arguments(format!(
            "{command} reads a PostgreSQL event store: give --database <URL> (or set \
             JETSOURCE_DATABASE_URL)"
        )));
    };
    let mut options: PgConnectOptions =
        url.parse()
            .map_err(|e: sqlx::Error| CliError::InvalidDatabaseUrl {
                url: printable_url(url),
                reason: chain(&e),
            })?;
    let printable = printable_options(&options);
    options = options
        .application_name("jetsource-cli")
        .options([("statement_timeout", timeout.as_millis().max(1))]);
    if let Some(schema) = &args.schema {
        // sqlx 0.9 escapes the spaces and backslashes of a startup option itself.
        options = options.options([("search_path", quote_identifier(schema))]);
    }
    let unreachable = |reason: String| CliError::DatabaseConnect {
        url: printable.clone(),
        reason,
    };
    let mut connection = tokio::time::timeout(timeout, options.connect())
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {}",
                crate::render::duration(timeout)
            ))
        })?
        .map_err(|e| unreachable(chain(&e)))?;
    let schema = check_store(&mut connection, args.schema.as_deref(), &printable).await;
    // Closing is a courtesy to the server; the checks' answer is what matters.
    let _ = connection.close().await;
    let schema = schema?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(timeout)
        .connect_lazy_with(options);
    Ok(Database {
        store: PgStore::new(pool),
        schema,
    })
}

/// The schema whose `jetsource_events` table the connection's unqualified names reach, or an
/// error saying why there is none.
async fn check_store(
    connection: &mut PgConnection,
    schema: Option<&str>,
    url: &str,
) -> Result<String, CliError> {
    let failed = |e: sqlx::Error| CliError::request(format!("reading {url}"), &e);
    let (current, store): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT current_schema(), \
             (SELECT n.nspname::TEXT FROM pg_class c \
              JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.oid = to_regclass('jetsource_events'))",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(failed)?;
    let no_store = |problem: String| CliError::NoEventStore {
        url: url.to_owned(),
        problem,
    };
    match (store, current, schema) {
        (Some(store), _, _) => Ok(store),
        (None, None, Some(schema)) => Err(no_store(format!(
            "it has no schema {schema:?} (check --schema)"
        ))),
        (None, None, None) => Err(no_store(
            "its search_path names no existing schema (give --schema)".into(),
        )),
        (None, Some(current), Some(_)) => Err(no_store(format!(
            "schema {current} has no table jetsource_events (check --schema, or run the \
             store's migrations)"
        ))),
        (None, Some(current), None) => Err(no_store(format!(
            "schema {current} has no table jetsource_events (give --schema, or run the store's \
             migrations)"
        ))),
    }
}

/// `name` as a quoted SQL identifier: the schema exactly as written, whatever its case.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The address of parsed options, with the user and never the password:
/// `postgres://ops@db:5432/bank`.
fn printable_options(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_owned(),
    };
    let host = if host.contains(':') && !host.starts_with('[') && !host.starts_with('/') {
        format!("[{host}]")
    } else {
        host
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        options.get_username(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// A URL that did not parse, fit to print: the user info of `scheme://user:password@host...`
/// cut to the user, and `password=` parameters dropped.
pub fn printable_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let address = match address.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{user}@{host}")
        }
        None => address.to_owned(),
    };
    let query = query
        .map(|query| {
            query
                .split('&')
                .filter(|pair| !pair.starts_with("password="))
                .collect::<Vec<_>>()
                .join("&")
        })
        .filter(|query| !query.is_empty())
        .map(|query| format!("?{query}"))
        .unwrap_or_default();
    format!("{scheme}{address}{query}")
}

/// The secrets a database URL holds: its password (as written and percent-decoded) and any
/// `password=` parameter.
pub fn url_secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut secrets = Vec::new();
    if let Some((userinfo, _)) = address.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_owned());
        }
    }
    secrets.extend(
        query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("password="))
            .map(str::to_owned),
    );
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    secrets
}

/// `%xx` escapes decoded (an invalid one kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_urls_keep_the_user_and_drop_the_password() {
        assert_eq!(
            printable_url("postgres://ops:s3cr%2Ft@db:5432/bank?sslmode=require&password=x"),
            "postgres://ops@db:5432/bank?sslmode=require"
        );
        assert_eq!(printable_url("postgres://db/bank"), "postgres://db/bank");
        assert_eq!(printable_url("ops:pw@db"), "ops@db");
        let options: PgConnectOptions = "postgres://ops:pw@db.example:6543/bank".parse().unwrap();
        assert_eq!(
            printable_options(&options),
            "postgres://ops@db.example:6543/bank"
        );
    }

    #[test]
    fn url_secrets_are_the_passwords_as_written_and_decoded() {
        assert_eq!(
            url_secrets("postgres://ops:s3cr%2Ft@db/bank?password=p2"),
            ["p2", "s3cr%2Ft", "s3cr/t"]
        );
        assert!(url_secrets("postgres://ops@db/bank").is_empty());
    }

    #[test]
    fn schemas_are_quoted_with_their_quotes_doubled() {
        assert_eq!(
            quote_identifier("My \"odd\" schema\\"),
            "\"My \"\"odd\"\" schema\\\""
        );
    }
}
