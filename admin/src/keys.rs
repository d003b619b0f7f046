//! `/proxies/{id}/keys`: the keys applications call a proxy with. A key is
//! shown once, when created; only its SHA-256 (what gateways compare) and a
//! short prefix (to recognise it in listings) are stored. Revoking or
//! expiring a key removes it from every gateway's next configuration, which
//! gateways pick up within seconds.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::crypto::{display_prefix, new_secret, sha256_hex};
use crate::db::{audit, bump, new_id, now_ms, parse_time, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::authorize;
use crate::proxies::load_required;
use portcullis_config::KeyScopeFile;

/// Body of `POST /proxies/{id}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// RFC 3339; the key stops working then.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// What the key may use (models, inbound formats, resources); default
    /// everything its proxy offers.
    #[serde(default)]
    pub scope: Option<KeyScopeFile>,
}

fn key_json(r: &sqlx::any::AnyRow, now: i64) -> ApiResult<Value> {
    let expires: Option<i64> = r.try_get("expires_at")?;
    let revoked: Option<i64> = r.try_get("revoked_at")?;
    let last_used: Option<i64> = r.try_get("last_used_at")?;
    let status = if revoked.is_some() {
        "revoked"
    } else if expires.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "proxy_id": r.try_get::<String, _>("proxy_id")?,
        "name": r.try_get::<String, _>("name")?,
        "prefix": r.try_get::<String, _>("prefix")?,
        "created_at": rfc3339(r.try_get("created_at")?),
        "expires_at": expires.map(rfc3339),
        "revoked_at": revoked.map(rfc3339),
        "last_used_at": last_used.map(rfc3339),
        "status": status,
        "scope": r
            .try_get::<Option<String>, _>("scope")?
            .and_then(|s| serde_json::from_str::<Value>(&s).ok()),
    }))
}

/// `POST /proxies/{id}/keys`: the key is in the answer, and nowhere else ever.
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy_id): Path<String>,
    Body(body): Body<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    authorize(&st, &caller, &proxy_id, "key.create").await?;
    let name = body.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let now = now_ms();
    let expires = match &body.expires_at {
        Some(t) => {
            let at = parse_time("expires_at", t)?;
            if at <= now {
                return Err(ApiError::invalid("expires_at", "must be in the future"));
            }
            Some(at)
        }
        None => None,
    };
    let scope = match body.scope.filter(|s| *s != KeyScopeFile::default()) {
        Some(s) => {
            if let Some((field, message)) = s.problem() {
                return Err(ApiError::invalid(format!("scope.{field}"), message));
            }
            Some(serde_json::to_string(&s).map_err(ApiError::internal)?)
        }
        None => None,
    };
    let mut tx = st.pool.begin().await?;
    load_required(&mut tx, &proxy_id).await?;
    let key = new_secret("pc-");
    let id = new_id("key");
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO api_keys (id, proxy_id, name, prefix, key_sha256, created_at, expires_at, scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.clone())
    .bind(proxy_id.clone())
    .bind(name.clone())
    .bind(display_prefix(&key))
    .bind(sha256_hex(&key))
    .bind(now)
    .bind(expires)
    .bind(scope.clone())
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "key.create",
        &format!("proxies/{proxy_id}/keys/{id}"),
        Some(json!({"name": name, "scope": scope.as_deref().and_then(|s| serde_json::from_str::<Value>(s).ok())})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let mut out = key_json(&row, now)?;
    tx.commit().await?;
    st.changed();
    out["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /proxies/{id}/keys`.
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy_id, "key.list").await?;
    let rows = sqlx::query("SELECT * FROM api_keys WHERE proxy_id = $1 ORDER BY created_at, id")
        .bind(proxy_id)
        .fetch_all(&st.pool)
        .await?;
    let now = now_ms();
    let items = rows
        .iter()
        .map(|r| key_json(r, now))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /proxies/{id}/keys/{key}/revoke`.
pub async fn revoke(
    State(st): State<AppState>,
    caller: Caller,
    Path((proxy_id, key_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy_id, "key.revoke").await?;
    let mut tx = st.pool.begin().await?;
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1 AND proxy_id = $2")
        .bind(key_id.clone())
        .bind(proxy_id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("key", &key_id))?;
    let seq = bump(&mut tx).await?;
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_none() {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(key_id.clone())
            .execute(&mut *tx)
            .await?;
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "key.revoke",
        &format!("proxies/{proxy_id}/keys/{key_id}"),
        None,
    )
    .await?;
    let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await?;
    let out = key_json(&row, now_ms())?;
    tx.commit().await?;
    st.changed();
    Ok(Json(out))
}
