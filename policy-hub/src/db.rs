//! Storage: policies, versions and content-addressed module bytes.
//!
//! One set of migrations and queries serves SQLite (the default, a file
//! under the data directory) and Postgres (scale-out), through sqlx's
//! `any` driver: portable SQL only, `$n` placeholders (SQLite reads them
//! as numbered parameters), integers as BIGINT, JSON and times as TEXT.
//! Tables are prefixed `hub_` and the migration table is the hub's own, so
//! the hub can share a Postgres database with the admin service.

use portcullis_types::policy::{
    Capability, CompleteReads, PolicyCategory, PolicyManifest, PolicyPhase, PolicyVersion,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::borrow::Cow;

use crate::error::ApiError;

/// The hub's migrations, embedded so the binary needs no files at run time.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "policies",
        include_str!("../migrations/0001_policies.sql"),
    ),
    (
        2,
        "complete_reads",
        include_str!("../migrations/0002_complete_reads.sql"),
    ),
    (
        3,
        "request_reads",
        include_str!("../migrations/0003_request_reads.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A handle on the hub's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

/// A version to store: a validated manifest (with `sha256` set) and its module.
pub struct NewVersion<'a> {
    pub manifest: &'a PolicyManifest,
    pub module: &'a [u8],
    pub publisher: &'a str,
}

/// Filters and page of a listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub category: Option<PolicyCategory>,
    pub capability: Option<Capability>,
    /// Case-insensitive substring of name, display name or description.
    pub text: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// A version without its schema, defaults and docs: what listings show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionSummary {
    pub name: String,
    pub version: String,
    pub category: PolicyCategory,
    pub display_name: String,
    pub description: String,
    pub phases: Vec<PolicyPhase>,
    pub capabilities: Vec<Capability>,
    pub digest: String,
    pub size: u64,
    pub publisher: String,
    pub published_at: String,
    pub yanked: bool,
}

/// What `publish` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Created,
    /// The version existed (with this digest); nothing changed.
    Exists {
        digest: String,
    },
}

const SUMMARY_COLUMNS: &str = "v.name, v.version, v.category, v.display_name, v.description, \
     v.phases, v.capabilities, v.digest, v.size, v.publisher, v.published_at, v.yanked";

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://...`)
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        if !is_sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        let in_memory = is_sqlite && (url.contains(":memory:") || url.contains("mode=memory"));
        let mut url = url.to_string();
        // Create the SQLite file on first start.
        if is_sqlite && !in_memory && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        // Every connection to `sqlite::memory:` is its own empty database.
        let max = if in_memory { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect();
        let migrator = Migrator {
            migrations: Cow::Owned(migrations),
            table_name: Cow::Borrowed("_portcullis_hub_migrations"),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Stores a version and its module in one transaction, so a version is
    /// never visible without its module. The first publisher of a name owns
    /// it: another publisher gets `Forbidden` unless it is `admin`.
    pub async fn publish(&self, v: NewVersion<'_>) -> Result<Published, ApiError> {
        let m = v.manifest;
        let sha = m
            .sha256
            .as_deref()
            .ok_or_else(|| ApiError::Internal("sha256 not set".into()))?;
        let digest = format!("sha256:{sha}");
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await?;

        // A write first: SQLite takes its write lock here rather than
        // failing a read-to-write upgrade later, and the no-op UPDATE locks
        // the policy row on Postgres, so concurrent publishes of one policy
        // serialise and `latest_version` cannot be computed from a stale view.
        sqlx::query(
            "INSERT INTO hub_policies (name, owner, latest_version, created_at) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&m.name)
        .bind(v.publisher)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE hub_policies SET name = name WHERE name = $1")
            .bind(&m.name)
            .execute(&mut *tx)
            .await?;
        let owner: String = sqlx::query_scalar("SELECT owner FROM hub_policies WHERE name = $1")
            .bind(&m.name)
            .fetch_one(&mut *tx)
            .await?;
        if owner != v.publisher && v.publisher != crate::ADMIN_PUBLISHER {
            return Err(ApiError::Forbidden(format!(
                "policy `{}` belongs to publisher `{owner}`",
                m.name
            )));
        }
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT digest FROM hub_policy_versions WHERE name = $1 AND version = $2",
        )
        .bind(&m.name)
        .bind(&m.version)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(digest) = existing {
            return Ok(Published::Exists { digest });
        }

        sqlx::query(
            "INSERT INTO hub_modules (digest, size, content) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&digest)
        .bind(v.module.len() as i64)
        .bind(v.module.to_vec())
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO hub_policy_versions (name, version, category, display_name, description, \
             phases, capabilities, settings_schema, default_settings, docs, digest, size, publisher, \
             published_at, yanked, complete_reads, request_reads) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, $15, $16)",
        )
        .bind(&m.name)
        .bind(&m.version)
        .bind(m.category.as_str())
        .bind(&m.display_name)
        .bind(&m.description)
        .bind(to_json(&m.phases)?)
        .bind(to_json(&m.capabilities)?)
        .bind(to_json(&m.settings_schema)?)
        .bind(to_json(&m.defaults)?)
        .bind(&m.docs)
        .bind(&digest)
        .bind(v.module.len() as i64)
        .bind(v.publisher)
        .bind(&now)
        .bind(m.complete_reads.as_str())
        .bind(m.request_reads.as_ref().map(to_json).transpose()?)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Lost a race with a publish of the same version.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ApiError::Conflict {
                    message: format!("{}@{} was published concurrently", m.name, m.version),
                    field: Some("manifest.version".into()),
                });
            }
            Err(e) => return Err(e.into()),
        }
        update_latest(&mut tx, &m.name).await?;
        tx.commit().await?;
        Ok(Published::Created)
    }

    /// Sets or clears a version's yanked flag; `None` when it does not exist.
    pub async fn set_yanked(
        &self,
        name: &str,
        version: &str,
        yanked: bool,
    ) -> Result<Option<()>, ApiError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE hub_policy_versions SET yanked = $1 WHERE name = $2 AND version = $3",
        )
        .bind(i64::from(yanked))
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        update_latest(&mut tx, name).await?;
        tx.commit().await?;
        Ok(Some(()))
    }

    /// The publisher of a version, to authorise a yank.
    pub async fn publisher_of(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<String>, ApiError> {
        Ok(sqlx::query_scalar(
            "SELECT publisher FROM hub_policy_versions WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// One page of policies, each shown by its latest non-yanked version,
    /// ordered by name; and the number of matches.
    pub async fn list(&self, f: &ListFilter) -> Result<(Vec<VersionSummary>, u64), ApiError> {
        let mut conditions = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(c) = f.category {
            args.push(c.as_str().to_string());
            conditions.push(format!("v.category = ${}", args.len()));
        }
        if let Some(c) = f.capability {
            // Capabilities are a JSON array of known names: the quoted name
            // cannot occur in it except as an element.
            args.push(format!("%\"{}\"%", c.as_str()));
            conditions.push(format!("v.capabilities LIKE ${}", args.len()));
        }
        if let Some(text) = &f.text {
            args.push(format!("%{}%", escape_like(&text.to_lowercase())));
            let n = args.len();
            conditions.push(format!(
                "(LOWER(v.name) LIKE ${n} ESCAPE '\\' OR LOWER(v.display_name) LIKE ${n} ESCAPE '\\' \
                 OR LOWER(v.description) LIKE ${n} ESCAPE '\\')"
            ));
        }
        let mut filter = String::new();
        for c in &conditions {
            filter.push_str(" AND ");
            filter.push_str(c);
        }
        let from = format!(
            "FROM hub_policies p JOIN hub_policy_versions v \
             ON v.name = p.name AND v.version = p.latest_version \
             WHERE p.latest_version IS NOT NULL{filter}"
        );

        let count_sql = format!("SELECT COUNT(*) {from}");
        let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql));
        for a in &args {
            count = count.bind(a.clone());
        }
        let total = count.fetch_one(&self.pool).await?;

        let page_sql = format!(
            "SELECT {SUMMARY_COLUMNS} {from} ORDER BY v.name LIMIT {} OFFSET {}",
            f.limit, f.offset
        );
        let mut page = sqlx::query(AssertSqlSafe(page_sql));
        for a in &args {
            page = page.bind(a.clone());
        }
        let rows = page.fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    /// A policy's latest non-yanked version (if any) and all its versions,
    /// yanked ones included and marked, newest first.
    pub async fn policy(
        &self,
        name: &str,
    ) -> Result<Option<(Option<String>, Vec<VersionSummary>)>, ApiError> {
        let latest: Option<Option<String>> =
            sqlx::query_scalar("SELECT latest_version FROM hub_policies WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let Some(latest) = latest else {
            return Ok(None);
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM hub_policy_versions v WHERE v.name = $1"
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        let mut versions = rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // Newest first in plain semver order (a pre-release of 2.0 above 1.x),
        // unlike `latest_version`, which prefers stable releases.
        versions.sort_by(|a, b| {
            let key = |v: &str| semver::Version::parse(v).ok();
            key(&b.version).cmp(&key(&a.version))
        });
        Ok(Some((latest, versions)))
    }

    /// One version's full record, yanked or not.
    pub async fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PolicyVersion>, ApiError> {
        let row = sqlx::query(
            "SELECT name, version, category, display_name, description, phases, capabilities, \
             settings_schema, default_settings, docs, digest, size, publisher, published_at, yanked, \
             complete_reads, request_reads FROM hub_policy_versions WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let digest: String = row.try_get("digest")?;
        let sha256 = digest.strip_prefix("sha256:").map(str::to_string);
        let manifest = PolicyManifest {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            category: parse_category(&row.try_get::<String, _>("category")?)?,
            display_name: row.try_get("display_name")?,
            description: row.try_get("description")?,
            phases: from_json(&row.try_get::<String, _>("phases")?)?,
            capabilities: from_json(&row.try_get::<String, _>("capabilities")?)?,
            settings_schema: from_json(&row.try_get::<String, _>("settings_schema")?)?,
            defaults: from_json(&row.try_get::<String, _>("default_settings")?)?,
            complete_reads: CompleteReads::parse(&row.try_get::<String, _>("complete_reads")?)
                .unwrap_or_default(),
            request_reads: row
                .try_get::<Option<String>, _>("request_reads")?
                .map(|s| from_json(&s))
                .transpose()?,
            docs: row.try_get("docs")?,
            sha256,
        };
        Ok(Some(PolicyVersion {
            manifest,
            digest,
            size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
            publisher: row.try_get("publisher")?,
            published_at: row.try_get("published_at")?,
            yanked: row.try_get::<i64, _>("yanked")? != 0,
        }))
    }

    /// Whether the hub has a module, without reading its bytes.
    pub async fn module_exists(&self, digest: &str) -> Result<bool, ApiError> {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM hub_modules WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?;
        Ok(size.is_some())
    }

    /// A module's bytes by digest (`sha256:<hex>`).
    pub async fn module(&self, digest: &str) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(
            sqlx::query_scalar("SELECT content FROM hub_modules WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// Recomputes `latest_version` of `name` inside the caller's transaction:
/// the highest non-yanked version, stable releases before pre-releases
/// (as cargo picks them), NULL when every version is yanked.
async fn update_latest(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
) -> Result<(), ApiError> {
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM hub_policy_versions WHERE name = $1 AND yanked = 0",
    )
    .bind(name)
    .fetch_all(&mut **tx)
    .await?;
    let latest = versions.into_iter().max_by_key(|v| semver_key(v));
    sqlx::query("UPDATE hub_policies SET latest_version = $1 WHERE name = $2")
        .bind(latest)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ordering key: stable releases above pre-releases, then semver order.
/// Unparsable versions (never stored: publish validates) sort lowest.
fn semver_key(v: &str) -> (bool, bool, semver::Version) {
    match semver::Version::parse(v) {
        Ok(s) => (true, s.pre.is_empty(), s),
        Err(_) => (false, false, semver::Version::new(0, 0, 0)),
    }
}

fn summary_from_row(row: &AnyRow) -> Result<VersionSummary, ApiError> {
    Ok(VersionSummary {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        category: parse_category(&row.try_get::<String, _>("category")?)?,
        display_name: row.try_get("display_name")?,
        description: row.try_get("description")?,
        phases: from_json(&row.try_get::<String, _>("phases")?)?,
        capabilities: from_json(&row.try_get::<String, _>("capabilities")?)?,
        digest: row.try_get("digest")?,
        size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
        publisher: row.try_get("publisher")?,
        published_at: row.try_get("published_at")?,
        yanked: row.try_get::<i64, _>("yanked")? != 0,
    })
}

fn parse_category(s: &str) -> Result<PolicyCategory, ApiError> {
    PolicyCategory::parse(s).ok_or_else(|| ApiError::Internal(format!("stored category `{s}`")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ApiError> {
    serde_json::to_string(v).map_err(|e| ApiError::Internal(format!("serialise: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    serde_json::from_str(s).map_err(|e| ApiError::Internal(format!("stored JSON: {e}")))
}

/// Escapes LIKE wildcards so search text matches literally.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_versions_rank_above_prereleases() {
        let mut v = ["1.0.0", "2.0.0-rc.1", "1.10.0", "1.9.0"];
        v.sort_by_key(|s| semver_key(s));
        assert_eq!(v.last(), Some(&"1.10.0"));
        assert_eq!(v.first(), Some(&"2.0.0-rc.1"));
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
