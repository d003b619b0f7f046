//! The database: one pool through sqlx's `any` driver so the same queries
//! and migrations run on SQLite (the embedded default) and Postgres
//! (scale-out). Queries therefore stick to the common subset: `$n`
//! placeholders, TEXT and BIGINT columns, `RETURNING`, `ON CONFLICT`.

use std::borrow::Cow;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::error::{ApiError, ApiResult};

/// Migrations, embedded so the binary carries its schema.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "ownership",
        include_str!("../migrations/0002_ownership.sql"),
    ),
    (
        3,
        "proxy_errors",
        include_str!("../migrations/0003_proxy_errors.sql"),
    ),
    (
        4,
        "gateway_settings",
        include_str!("../migrations/0004_gateway_settings.sql"),
    ),
    (
        5,
        "spend_and_key_scopes",
        include_str!("../migrations/0005_spend_and_key_scopes.sql"),
    ),
    (
        6,
        "applications",
        include_str!("../migrations/0006_applications.sql"),
    ),
    (
        7,
        "plan_limits",
        include_str!("../migrations/0007_plan_limits.sql"),
    ),
    (
        8,
        "spend_hours",
        include_str!("../migrations/0008_spend_hours.sql"),
    ),
];

/// Opens the database at `url` (`sqlite://path`, `sqlite::memory:`,
/// `postgres://...`) and brings its schema up to date.
pub async fn connect(url: &str) -> anyhow::Result<AnyPool> {
    install_default_drivers();
    let memory = url.starts_with("sqlite::memory:") || url.contains("mode=memory");
    let url = if url.starts_with("sqlite://") && !url.contains('?') && !memory {
        // Create the file on first start.
        Cow::Owned(format!("{url}?mode=rwc"))
    } else {
        Cow::Borrowed(url)
    };
    let mut opts = AnyPoolOptions::new();
    if memory {
        // Every connection to `:memory:` is a database of its own.
        opts = opts
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else if url.starts_with("sqlite:") {
        // SQLite has one writer, and a deferred transaction that reads
        // before it writes fails at once ("database is locked", not
        // retried) when another connection wrote meanwhile: a heartbeat
        // beside a key creation was a 500. One connection serialises
        // them; admin's statements are short and nothing waits holding it.
        opts = opts.max_connections(1);
    } else {
        opts = opts.max_connections(10);
    }
    let pool = opts.connect(&url).await?;
    migrator().run(&pool).await?;
    Ok(pool)
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(v, name, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 (UTC, milliseconds) for a stored time.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Parses an RFC 3339 time given by a client.
pub fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::invalid(field, format!("not an RFC 3339 time ({e})")))
}

/// A new opaque id with a type prefix (`dep_...`), time-ordered.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Bumps the change counter inside `tx` and returns the new value. Every
/// mutation calls this, so the counter orders events and tells waiting
/// gateways that something changed.
pub async fn bump(tx: &mut Transaction<'_, Any>) -> ApiResult<i64> {
    let row = sqlx::query("UPDATE meta SET v = v + 1 WHERE k = 'generation' RETURNING v")
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// The change counter.
pub async fn generation(pool: &AnyPool) -> ApiResult<i64> {
    let row = sqlx::query("SELECT v FROM meta WHERE k = 'generation'")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Whether a database error is a unique-constraint violation (both drivers).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || d.message().contains("UNIQUE constraint failed")
                || d.message().contains("duplicate key")
        }
        _ => false,
    }
}

/// Records an audit entry inside the mutation's transaction, so an entry
/// exists exactly when the change does.
pub async fn audit(
    tx: &mut Transaction<'_, Any>,
    seq: i64,
    actor: &str,
    action: &str,
    resource: &str,
    detail: Option<serde_json::Value>,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, seq, at, actor, action, resource, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id("aud"))
    .bind(seq)
    .bind(now_ms())
    .bind(actor.to_owned())
    .bind(action.to_owned())
    .bind(resource.to_owned())
    .bind(detail.map(|d| d.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
