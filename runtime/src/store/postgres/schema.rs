//! The store's tables and append function, shipped as sqlx migrations.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::SqlSafeStr;

/// The migrations, oldest first: (version, description, SQL). The files live in
/// `runtime/migrations/postgres/`, so an application that keeps its own migrations can copy them.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    20261129000001,
    "jetsource event store",
    include_str!("../../../migrations/postgres/20261129000001_jetsource_event_store.sql"),
)];

/// The migrations that create and update the store's tables (`jetsource_events`,
/// `jetsource_snapshots`, `jetsource_relays`) and its append function in the first schema of the
/// connection's `search_path`.
///
/// Run it with `migrator().run(&pool)`, or [`PgStore::migrate`](super::PgStore::migrate). An
/// application whose own `sqlx::migrate!` migrations share the `_sqlx_migrations` table sets
/// `ignore_missing` on both migrators, or copies the files of `migrations/postgres/` into its
/// own migrations folder instead.
pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator::with_migrations(migrations)
}
