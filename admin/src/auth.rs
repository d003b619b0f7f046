//! Who is calling: bearer tokens with a role (`admin` does everything;
//! `developer` manages proxies, keys, policy attachments and deployments,
//! but not providers or gateway registration, and only those its team or
//! token owns: see `ownership`), and gateway tokens, which only fetch their
//! configuration and heartbeat.
//!
//! Tokens are stored as SHA-256 hashes. The first start creates an admin
//! token (from `PORTCULLIS_ADMIN_TOKEN` when set, else a random one that is
//! printed once).

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::crypto::{display_prefix, new_secret, sha256_hex};
use crate::db::{audit, bump, new_id, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body, Query};

/// The environment variable that may hold the bootstrap admin token.
pub const ADMIN_TOKEN_ENV: &str = "PORTCULLIS_ADMIN_TOKEN";

/// A role of an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Developer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "developer" => Some(Role::Developer),
            _ => None,
        }
    }
}

/// An authenticated API user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// The team the token belongs to; what it creates belongs to the team.
    pub team: Option<String>,
}

impl Caller {
    /// The audit log's "who".
    pub fn actor(&self) -> String {
        match &self.team {
            Some(t) => format!("{} ({}, team {t})", self.name, self.role.as_str()),
            None => format!("{} ({})", self.name, self.role.as_str()),
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self, what: &str) -> ApiResult<()> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} needs the admin role; this token is a developer token"
            )))
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send an API token as `Authorization: Bearer <token>`")
        })?;
        let row = sqlx::query(
            "SELECT id, name, role, team FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(token))
        .fetch_optional(&state.pool)
        .await?;
        let row = row.ok_or_else(|| ApiError::unauthorized("unknown or revoked API token"))?;
        let role: String = row.try_get("role")?;
        Ok(Caller {
            token_id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: Role::parse(&role)
                .ok_or_else(|| ApiError::internal(format!("bad role {role}")))?,
            team: row.try_get("team")?,
        })
    }
}

/// An authenticated managed gateway.
#[derive(Debug, Clone)]
pub struct GatewayCaller {
    pub id: String,
    pub name: String,
}

impl FromRequestParts<AppState> for GatewayCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<GatewayCaller> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("send the gateway token as a bearer token"))?;
        let row = sqlx::query("SELECT id, name FROM gateways WHERE token_sha256 = $1")
            .bind(sha256_hex(token))
            .fetch_optional(&state.pool)
            .await?;
        let row = row.ok_or_else(|| ApiError::unauthorized("unknown gateway token"))?;
        Ok(GatewayCaller {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
        })
    }
}

/// Creates the first admin token if there is none. With `env_token` that
/// token is (also) accepted; returns the token to print when one was
/// generated.
pub async fn bootstrap(
    pool: &sqlx::AnyPool,
    env_token: Option<String>,
) -> anyhow::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    if let Some(token) = env_token.filter(|t| !t.trim().is_empty()) {
        let token = token.trim().to_owned();
        let exists = sqlx::query("SELECT id FROM api_tokens WHERE token_sha256 = $1")
            .bind(sha256_hex(&token))
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            insert_token(&mut tx, "bootstrap", Role::Admin, None, &token).await?;
        }
        tx.commit().await?;
        return Ok(None);
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM api_tokens")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if count > 0 {
        return Ok(None);
    }
    let token = new_secret("pat-");
    insert_token(&mut tx, "bootstrap", Role::Admin, None, &token).await?;
    tx.commit().await?;
    Ok(Some(token))
}

async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    name: &str,
    role: Role,
    team: Option<&str>,
    token: &str,
) -> Result<String, sqlx::Error> {
    let id = new_id("tok");
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, team, token_sha256, prefix, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.clone())
    .bind(name.to_owned())
    .bind(role.as_str())
    .bind(team.map(str::to_owned))
    .bind(sha256_hex(token))
    .bind(display_prefix(token))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

// ------------------------------------------------------------ /tokens

/// Body of `POST /tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
    /// The team the token acts for: proxies it creates belong to the team,
    /// and a developer token sees and changes the team's proxies only.
    #[serde(default)]
    pub team: Option<String>,
}

fn token_json(row: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(json!({
        "id": row.try_get::<String, _>("id")?,
        "name": row.try_get::<String, _>("name")?,
        "role": row.try_get::<String, _>("role")?,
        "team": row.try_get::<Option<String>, _>("team")?,
        "prefix": row.try_get::<String, _>("prefix")?,
        "created_at": rfc3339(row.try_get("created_at")?),
        "status": if revoked.is_some() { "revoked" } else { "active" },
        "revoked_at": revoked.map(rfc3339),
    }))
}

/// `POST /tokens`: a new API token, shown once.
pub async fn create_token(
    State(st): State<AppState>,
    caller: Caller,
    Body(body): Body<CreateToken>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin("creating API tokens")?;
    let name = body.name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let team = body.team.as_deref().map(str::trim);
    if let Some(t) = team
        && !crate::ownership::valid_team(t)
    {
        return Err(ApiError::invalid(
            "team",
            "1 to 64 lowercase letters, digits and hyphens",
        ));
    }
    let token = new_secret("pat-");
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    let id = insert_token(&mut tx, name, body.role, team, &token).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "token.create",
        &format!("tokens/{id}"),
        Some(json!({"name": name, "role": body.role, "team": team})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let mut out = token_json(&row)?;
    tx.commit().await?;
    out["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /tokens`.
pub async fn list_tokens(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin("listing API tokens")?;
    let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
        .fetch_all(&st.pool)
        .await?;
    let items = rows.iter().map(token_json).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /tokens/{id}/revoke`.
pub async fn revoke_token(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("revoking API tokens")?;
    let mut tx = st.pool.begin().await?;
    let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("token", &id))?;
    if id == caller.token_id {
        return Err(ApiError::conflict("id", "a token cannot revoke itself"));
    }
    let seq = bump(&mut tx).await?;
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_none() {
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "token.revoke",
        &format!("tokens/{id}"),
        None,
    )
    .await?;
    let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let out = token_json(&row)?;
    tx.commit().await?;
    Ok(Json(out))
}

/// `GET /me`: who the calling token is (id, name, role, team), so a
/// client such as the console can offer only what the role may do.
pub async fn me(caller: Caller) -> Json<Value> {
    Json(json!({
        "token_id": caller.token_id,
        "name": caller.name,
        "role": caller.role.as_str(),
        "team": caller.team,
    }))
}

/// `GET /audit`: newest first; `?limit=` (default 100, at most 1000) and
/// `?before=<seq>` to page; `?action=` and `?resource=` (a prefix) filter.
pub async fn list_audit(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("reading the audit log")?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    // Filters narrow the query itself, so a page holds `limit` matching
    // entries however rare they are. The resource prefix is compared with
    // `substr` rather than LIKE: LIKE's case rules differ between SQLite
    // and Postgres, and its wildcards would need escaping.
    let mut sql = String::from("SELECT * FROM audit_log WHERE seq < $1");
    let mut binds: Vec<String> = Vec::new();
    if let Some(action) = q.action.as_deref().filter(|a| !a.is_empty()) {
        binds.push(action.to_owned());
        sql.push_str(&format!(" AND action = ${}", binds.len() + 1));
    }
    if let Some(prefix) = q.resource.as_deref().filter(|r| !r.is_empty()) {
        binds.push(prefix.to_owned());
        sql.push_str(&format!(
            " AND substr(resource, 1, {}) = ${}",
            prefix.chars().count(),
            binds.len() + 1
        ));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", binds.len() + 2));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(q.before.unwrap_or(i64::MAX));
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.bind(limit).fetch_all(&st.pool).await?;
    let items = rows
        .iter()
        .map(|r| {
            let detail: Option<String> = r.try_get("detail")?;
            Ok(json!({
                "id": r.try_get::<String, _>("id")?,
                "seq": r.try_get::<i64, _>("seq")?,
                "at": rfc3339(r.try_get("at")?),
                "actor": r.try_get::<String, _>("actor")?,
                "action": r.try_get::<String, _>("action")?,
                "resource": r.try_get::<String, _>("resource")?,
                "detail": detail.and_then(|d| serde_json::from_str::<Value>(&d).ok()),
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// Query of `GET /audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub before: Option<i64>,
    /// Only entries of this action (`key.create`).
    pub action: Option<String>,
    /// Only entries whose resource starts with this (`proxies/chat`).
    pub resource: Option<String>,
}

/// Issues a fresh token named `name`, revoking earlier ones of that name:
/// `portcullis up` uses one per start to drive its own API (demo setup).
pub async fn issue_token(pool: &sqlx::AnyPool, name: &str, role: Role) -> anyhow::Result<String> {
    let token = new_secret("pat-");
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(name.to_owned())
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, name, role, None, &token).await?;
    tx.commit().await?;
    Ok(token)
}
