//! PostgreSQL stores for tests: each on its own schema of the machine's database, so tests
//! running at once never see each other's events.

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, AssertSqlSafe, PgPool};
use jetsource::{EventStore, JetStreamStore, PgStore, StoredEvent};

/// The machine's PostgreSQL (scripts/start-postgres.sh makes sure it runs).
pub const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A pool whose connections work in schema `schema`, created empty (dropped first if a previous
/// run left it).
pub async fn fresh_schema_pool(schema: &str) -> PgPool {
    let admin = PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL answers on 127.0.0.1:5432 (scripts/start-postgres.sh)");
    // Safe to assert: the schema names are the tests' own literals.
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("drop the test schema");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create the test schema");
    admin.close().await;
    let options: PgConnectOptions = DATABASE.parse().expect("database url");
    PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .expect("connect to the test schema")
}

/// A migrated store in a fresh schema `schema`.
pub async fn pg_store(schema: &str) -> PgStore {
    let store = PgStore::new(fresh_schema_pool(schema).await);
    store.migrate().await.expect("migrations run");
    store
}

/// What the stream holds, in stream order.
pub async fn stream_events(stream: &JetStreamStore) -> Vec<StoredEvent> {
    stream.read_all(1, 100_000).await.expect("read the stream")
}

/// An event as the relay must carry it: everything but the store-specific position.
fn without_position(event: &StoredEvent) -> StoredEvent {
    StoredEvent {
        position: 0,
        ..event.clone()
    }
}

/// Asserts that the stream holds exactly the committed events of `store`, each once, and each
/// aggregate's in sequence order.
pub async fn assert_stream_mirrors(store: &PgStore, stream: &JetStreamStore) {
    let committed = store.read_all(1, 100_000).await.unwrap();
    let published = stream_events(stream).await;
    let mut expected: Vec<_> = committed.iter().map(without_position).collect();
    let mut got: Vec<_> = published.iter().map(without_position).collect();
    let order = |e: &StoredEvent| (e.aggregate_type.clone(), e.aggregate_id.clone(), e.sequence);
    // Per aggregate, the stream's order must already be sequence order.
    for pair in published.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if (&a.aggregate_type, &a.aggregate_id) == (&b.aggregate_type, &b.aggregate_id) {
            assert!(a.sequence < b.sequence, "{a:?} published before {b:?}");
        }
    }
    expected.sort_by_key(order);
    got.sort_by_key(order);
    assert_eq!(got.len(), expected.len(), "published vs committed events");
    assert_eq!(got, expected);
}
