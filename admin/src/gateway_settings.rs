//! Gateway settings: what a managed gateway takes from admin besides its
//! proxies (TLS certificates, Redis, OTLP, timeouts, limits, provider CA
//! bundles, policy engine limits), for one gateway
//! (`/gateways/{id}/settings`) or a group of gateways
//! (`/gateway-groups/{name}/settings`). A gateway's own settings apply over
//! its group's, field by field. The shape and its checks are the config
//! crate's (`portcullis_config::settings`), shared with the gateway.
//!
//! `PATCH` takes a JSON merge patch (RFC 7386): a field given replaces the
//! stored one, `null` removes it, the rest stays; secrets (TLS keys, the
//! Redis URL) are never shown back, only whether they are set, and so
//! survive edits of other fields without being sent again.

use axum::Json;
use axum::extract::{Path, State};
use portcullis_config::settings::{GatewaySettings, merge_patch, parse_settings};
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::db::{audit, bump, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::slug::slugify;

/// Settings stored for `scope` (`gateway:<id>` or `group:<name>`), secrets
/// opened; empty when none.
async fn load(st: &AppState, scope: &str) -> ApiResult<(GatewaySettings, Option<i64>)> {
    let row =
        sqlx::query("SELECT settings, secrets, updated_at FROM gateway_settings WHERE scope = $1")
            .bind(scope.to_owned())
            .fetch_optional(&st.pool)
            .await?;
    let Some(row) = row else {
        return Ok((GatewaySettings::default(), None));
    };
    let clear: GatewaySettings =
        serde_json::from_str(&row.try_get::<String, _>("settings")?).map_err(ApiError::internal)?;
    let secrets = match row.try_get::<Option<String>, _>("secrets")? {
        Some(sealed) => {
            let plain = st.sealer.open(scope, &sealed).map_err(ApiError::internal)?;
            serde_json::from_slice(&plain).map_err(ApiError::internal)?
        }
        None => Value::Null,
    };
    Ok((
        clear.with_secrets(&secrets),
        Some(row.try_get("updated_at")?),
    ))
}

/// The settings a gateway is handed: its group's, then its own over them.
pub async fn effective(st: &AppState, gateway_id: &str) -> ApiResult<GatewaySettings> {
    let group: Option<String> = sqlx::query("SELECT group_name FROM gateways WHERE id = $1")
        .bind(gateway_id.to_owned())
        .fetch_optional(&st.pool)
        .await?
        .map(|r| r.try_get("group_name"))
        .transpose()?
        .flatten();
    let own = load(st, &format!("gateway:{gateway_id}")).await?.0;
    let Some(group) = group else {
        return Ok(own);
    };
    let base = load(st, &format!("group:{group}")).await?.0;
    Ok(combine(&base, &own))
}

/// `own` over `base`, field by field (a merge patch of `own` on `base`;
/// secrets included, so a gateway may bring its own TLS key).
fn combine(base: &GatewaySettings, own: &GatewaySettings) -> GatewaySettings {
    let mut v = serde_json::to_value(base).unwrap_or_default();
    merge_patch(&mut v, &serde_json::to_value(own).unwrap_or_default());
    // Both sides passed `check`; their combination has the same fields.
    serde_json::from_value(v).unwrap_or_else(|_| own.clone())
}

fn view(scope_key: &str, scope_value: &str, s: &GatewaySettings, updated: Option<i64>) -> Value {
    json!({
        scope_key: scope_value,
        "settings": s.to_view(),
        "updated_at": updated.map(rfc3339),
    })
}

/// Applies `patch` to the settings of `scope` and stores them; answers
/// the stored settings (without secrets).
async fn patch_scope(
    st: &AppState,
    caller: &Caller,
    scope: &str,
    patch: &Value,
) -> ApiResult<(GatewaySettings, i64)> {
    if !patch.is_object() {
        return Err(ApiError::invalid(
            "(body)",
            "must be a JSON object (a merge patch)",
        ));
    }
    let (current, _) = load(st, scope).await?;
    let mut v = serde_json::to_value(&current).map_err(ApiError::internal)?;
    // A new certificate list must carry its keys: the stored keys belong
    // to the certificates they came with.
    merge_patch(&mut v, patch);
    let settings = parse_settings(&v).map_err(|e| ApiError::invalid(e.path, e.message))?;
    settings
        .check()
        .map_err(|e| ApiError::invalid(e.path, e.message))?;
    for id in settings.provider_ca.keys().filter(|id| *id != "*") {
        let exists = sqlx::query("SELECT id FROM providers WHERE id = $1")
            .bind(id.clone())
            .fetch_optional(&st.pool)
            .await?;
        if exists.is_none() {
            return Err(ApiError::invalid(
                format!("provider_ca.{id}"),
                format!("no provider with id `{id}`"),
            ));
        }
    }
    let clear = serde_json::to_string(&settings.without_secrets()).map_err(ApiError::internal)?;
    let secrets = settings.secrets();
    let sealed = match secrets.as_object().is_some_and(|o| !o.is_empty()) {
        true => Some(
            st.sealer
                .seal(
                    scope,
                    &serde_json::to_vec(&secrets).map_err(ApiError::internal)?,
                )
                .map_err(ApiError::internal)?,
        ),
        false => None,
    };
    let now = now_ms();
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO gateway_settings (scope, settings, secrets, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope) DO UPDATE SET settings = $2, secrets = $3, updated_at = $4",
    )
    .bind(scope.to_owned())
    .bind(clear)
    .bind(sealed)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // The audit log says which fields changed, never a secret's value.
    let fields: Vec<&String> = patch
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "gateway.settings",
        scope,
        Some(json!({ "fields": fields })),
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok((settings, now))
}

async fn gateway_exists(st: &AppState, id: &str) -> ApiResult<()> {
    sqlx::query("SELECT id FROM gateways WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(&st.pool)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("gateway", id))
}

/// `GET /gateways/{id}/settings`: the gateway's own settings, its group's,
/// and the effective combination it is handed.
pub async fn get_gateway(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("reading gateway settings")?;
    gateway_exists(&st, &id).await?;
    let (own, updated) = load(&st, &format!("gateway:{id}")).await?;
    let mut out = view("gateway", &id, &own, updated);
    let group: Option<String> = sqlx::query("SELECT group_name FROM gateways WHERE id = $1")
        .bind(id.clone())
        .fetch_one(&st.pool)
        .await?
        .try_get("group_name")?;
    out["group"] = json!(group);
    out["effective"] = effective(&st, &id).await?.to_view();
    Ok(Json(out))
}

/// `PATCH /gateways/{id}/settings`.
pub async fn patch_gateway(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(patch): Body<Value>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("changing gateway settings")?;
    gateway_exists(&st, &id).await?;
    let (s, at) = patch_scope(&st, &caller, &format!("gateway:{id}"), &patch).await?;
    let mut out = view("gateway", &id, &s, Some(at));
    out["effective"] = effective(&st, &id).await?.to_view();
    Ok(Json(out))
}

/// A group name as given, checked: letters, digits and hyphens.
fn group_name(name: &str) -> ApiResult<String> {
    if name.is_empty() || slugify(name) != name {
        return Err(ApiError::invalid(
            "group",
            "must be lowercase letters, digits and single hyphens",
        ));
    }
    Ok(name.to_owned())
}

/// `GET /gateway-groups/{name}/settings`: the group's settings and its
/// members.
pub async fn get_group(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("reading gateway settings")?;
    let name = group_name(&name)?;
    let (s, updated) = load(&st, &format!("group:{name}")).await?;
    let mut out = view("group", &name, &s, updated);
    let members = sqlx::query("SELECT id FROM gateways WHERE group_name = $1 ORDER BY id")
        .bind(name.clone())
        .fetch_all(&st.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    out["gateways"] = json!(members);
    Ok(Json(out))
}

/// `PATCH /gateway-groups/{name}/settings`.
pub async fn patch_group(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(patch): Body<Value>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("changing gateway settings")?;
    let name = group_name(&name)?;
    let (s, at) = patch_scope(&st, &caller, &format!("group:{name}"), &patch).await?;
    Ok(Json(view("group", &name, &s, Some(at))))
}

/// Checks a group name given in a gateway's body (`POST`/`PATCH
/// /gateways`).
pub fn check_group(name: &str) -> ApiResult<String> {
    group_name(name)
}
