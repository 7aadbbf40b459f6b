//! The throwaway PostgreSQL harness, `jetsource::testing::postgres_server`: committed rows
//! survive a SIGKILL and a restart, a clean stop and restart, servers side by side, and nothing
//! left behind on drop. It never touches the shared server on 127.0.0.1:5432.

use std::time::{Duration, Instant};

use jetsource::projection::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use jetsource::testing::postgres_server::PostgresServer;

/// Connects, giving up after 10 s so a hung server fails the test instead of stalling it.
async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
        Ok(result) => result,
        Err(_) => panic!("connecting to {url} took more than 10 s"),
    }
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    // Safe to assert: the table names are the tests' own literals.
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .expect("count rows")
}

/// The shared server, if there is one, must not be what the harness hands out.
fn assert_not_the_shared_server(server: &PostgresServer) {
    assert_ne!(server.port(), 5432);
    assert!(server.url().starts_with("postgres://postgres@127.0.0.1:"));
}

#[tokio::test]
async fn committed_rows_survive_a_kill_and_a_restart() {
    let started = Instant::now();
    let mut server = PostgresServer::start();
    eprintln!("start: {:?}", started.elapsed());
    assert_not_the_shared_server(&server);
    let url = server.url();
    let port = server.port();

    let mut conn = connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE crash (id bigint PRIMARY KEY, note text NOT NULL)")
        .execute(&mut conn)
        .await
        .expect("create table");
    for id in 0..100_i64 {
        sqlx::query("INSERT INTO crash (id, note) VALUES ($1, $2)")
            .bind(id)
            .bind(format!("row {id}"))
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    // An open transaction at the crash: its row must not survive.
    let mut open = connect(&url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut open)
        .await
        .expect("begin");
    sqlx::query("INSERT INTO crash (id, note) VALUES (1000, 'uncommitted')")
        .execute(&mut open)
        .await
        .expect("insert uncommitted");

    let killed = Instant::now();
    server.kill();
    eprintln!("kill: {:?}", killed.elapsed());
    assert!(!server.is_running());
    assert!(
        connect(&url).await.is_err(),
        "a killed server accepts connections"
    );
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a connection to a killed server still answers"
    );

    let restarted = Instant::now();
    server.restart();
    eprintln!("restart after kill: {:?}", restarted.elapsed());
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.url(), url);
    let log = server.log();
    assert!(
        log.contains("not properly shut down") || log.contains("was interrupted"),
        "no crash recovery in the log:\n{log}"
    );

    let mut conn = connect(&url).await.expect("connect after restart");
    assert_eq!(count(&mut conn, "crash").await, 100);
    let note: String = sqlx::query_scalar("SELECT note FROM crash WHERE id = 99")
        .fetch_one(&mut conn)
        .await
        .expect("read a row");
    assert_eq!(note, "row 99");
    let uncommitted: i64 = sqlx::query_scalar("SELECT count(*) FROM crash WHERE id = 1000")
        .fetch_one(&mut conn)
        .await
        .expect("count uncommitted");
    assert_eq!(uncommitted, 0, "an uncommitted row survived the crash");
}

#[tokio::test]
async fn a_clean_stop_and_restart_keep_the_data() {
    let mut server = PostgresServer::start();
    let url = server.url();
    let mut conn = connect(&url).await.expect("connect");
    sqlx::query("CREATE TABLE kept AS SELECT generate_series(1, 10) AS n")
        .execute(&mut conn)
        .await
        .expect("create table");
    drop(conn);

    let stopped = Instant::now();
    server.stop();
    eprintln!("stop: {:?}", stopped.elapsed());
    assert!(!server.is_running());
    assert!(
        connect(&url).await.is_err(),
        "a stopped server accepts connections"
    );

    let restarted = Instant::now();
    server.restart();
    eprintln!("restart after stop: {:?}", restarted.elapsed());
    let log = server.log();
    assert!(
        !log.contains("not properly shut down"),
        "a clean stop needed crash recovery:\n{log}"
    );
    let mut conn = connect(&url).await.expect("connect after restart");
    assert_eq!(count(&mut conn, "kept").await, 10);

    // Restarting a running server stops it cleanly first.
    drop(conn);
    server.restart();
    let mut conn = connect(&url).await.expect("connect after a second restart");
    assert_eq!(count(&mut conn, "kept").await, 10);
}

#[tokio::test]
async fn two_servers_run_side_by_side() {
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(PostgresServer::start);
        let b = scope.spawn(PostgresServer::start);
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    assert_not_the_shared_server(&a);
    assert_not_the_shared_server(&b);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());

    let mut conn_a = connect(&a.url()).await.expect("connect a");
    let mut conn_b = connect(&b.url()).await.expect("connect b");
    sqlx::query("CREATE TABLE only_in_a (n int)")
        .execute(&mut conn_a)
        .await
        .expect("create in a");
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(&mut conn_b)
        .await
        .expect("look up in b");
    assert_eq!(
        in_b, None,
        "a table created in one server shows in the other"
    );

    // Each server reports its own port.
    for (conn, server) in [(&mut conn_a, &a), (&mut conn_b, &b)] {
        let port: String = sqlx::query_scalar("SHOW port")
            .fetch_one(conn)
            .await
            .expect("show port");
        assert_eq!(port, server.port().to_string());
    }
}

#[tokio::test]
async fn drop_removes_the_server_and_its_directory() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir = server.data_dir();
    let conn = connect(&url).await.expect("connect");
    assert!(dir.is_dir());

    drop(server);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(
        connect(&url).await.is_err(),
        "a dropped server accepts connections"
    );
    let _ = conn.close().await;
}
