//! PostgreSQL stores for tests: each on its own schema of the machine's database, so tests
//! running at once never see each other's events.

use jetsource::projection::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use jetsource::projection::sqlx::{self, PgPool};
use jetsource::PgStore;

/// The machine's PostgreSQL (scripts/start-postgres.sh makes sure it runs).
pub const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A pool whose connections work in schema `schema`, created empty (dropped first if a previous
/// run left it).
pub async fn fresh_schema_pool(schema: &str) -> PgPool {
    let admin = PgPool::connect(DATABASE)
        .await
        .expect("PostgreSQL answers on 127.0.0.1:5432 (scripts/start-postgres.sh)");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop the test schema");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
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
