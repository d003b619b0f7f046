//! Consumers: applications, the plans of a proxy, and subscriptions.
//!
//! An application (owned like a proxy: by a team, or by the token that
//! made it) holds keys and subscribes to proxies under a plan. A plan
//! belongs to a proxy and says which models its subscribers may call and
//! whether a subscription waits for the proxy owner's approval. An
//! application's keys work on the proxies it is actively subscribed to,
//! and only there: admin sends them to those proxies' gateways with the
//! plan's models as their scope (`gateways::build_config`).
//!
//! Subscription states: `pending` (waiting for approval), `active`,
//! `suspended` (by the proxy's owner; resumable), `closed` (final).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portcullis_config::{InboundKind, KeyScopeFile, Resource};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::crypto::{display_prefix, new_secret, sha256_hex};
use crate::db::{audit, bump, new_id, now_ms, parse_time, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::{Owner, authorize};
use crate::slug::slugify;

/// Body of `POST /applications`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

fn application_json(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "name": r.try_get::<String, _>("name")?,
        "description": r.try_get::<Option<String>, _>("description")?,
        "owner": Owner::from_row(r)?,
        "created_at": rfc3339(r.try_get("created_at")?),
    }))
}

/// The application `id` if `caller` may act for it (404 otherwise, as for
/// proxies: another owner's application is not named).
async fn owned(st: &AppState, caller: &Caller, id: &str) -> ApiResult<sqlx::any::AnyRow> {
    let row = sqlx::query("SELECT * FROM applications WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(&st.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("application", id))?;
    if !caller.may_access(Owner::from_row(&row)?.as_ref()) {
        return Err(ApiError::not_found("application", id));
    }
    Ok(row)
}

/// `POST /applications`.
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Body(input): Body<CreateApplication>,
) -> ApiResult<impl IntoResponse> {
    let name = input.name.trim().to_owned();
    let id = slugify(&name);
    if id.is_empty() {
        return Err(ApiError::invalid("name", "must contain a letter or digit"));
    }
    let mut tx = st.pool.begin().await?;
    if sqlx::query("SELECT id FROM applications WHERE id = $1 OR name = $2")
        .bind(id.clone())
        .bind(name.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "name",
            format!("an application named `{name}` (id `{id}`) exists"),
        ));
    }
    let (team, token) = caller.owner().columns();
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO applications (id, name, description, owner_team, owner_token, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.clone())
    .bind(name.clone())
    .bind(input.description.clone())
    .bind(team)
    .bind(token)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "application.create",
        &format!("applications/{id}"),
        Some(json!({"name": name})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM applications WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(application_json(&row)?)))
}

/// `GET /applications`: those the caller may act for.
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows = sqlx::query("SELECT * FROM applications ORDER BY name")
        .fetch_all(&st.pool)
        .await?;
    let mut items = Vec::new();
    for r in &rows {
        if caller.may_access(Owner::from_row(r)?.as_ref()) {
            items.push(application_json(r)?);
        }
    }
    Ok(Json(json!({ "items": items })))
}

/// `GET /applications/{id}`: with its subscriptions.
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = owned(&st, &caller, &id).await?;
    let mut out = application_json(&row)?;
    out["subscriptions"] = json!(subscriptions_of(&st, &id).await?);
    Ok(Json(out))
}

/// `DELETE /applications/{id}`: its subscriptions end and its keys stop
/// working.
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    owned(&st, &caller, &id).await?;
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    for sql in [
        "DELETE FROM subscriptions WHERE application_id = $1",
        "DELETE FROM application_keys WHERE application_id = $1",
        "DELETE FROM applications WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id.clone()).execute(&mut *tx).await?;
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "application.delete",
        &format!("applications/{id}"),
        None,
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------ keys

/// Body of `POST /applications/{id}/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

fn key_json(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let expires: Option<i64> = r.try_get("expires_at")?;
    let revoked: Option<i64> = r.try_get("revoked_at")?;
    let status = if revoked.is_some() {
        "revoked"
    } else if expires.is_some_and(|e| e <= now_ms()) {
        "expired"
    } else {
        "active"
    };
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "application_id": r.try_get::<String, _>("application_id")?,
        "name": r.try_get::<String, _>("name")?,
        "prefix": r.try_get::<String, _>("prefix")?,
        "created_at": rfc3339(r.try_get("created_at")?),
        "expires_at": expires.map(rfc3339),
        "revoked_at": revoked.map(rfc3339),
        "last_used_at": r.try_get::<Option<i64>, _>("last_used_at")?.map(rfc3339),
        "status": status,
    }))
}

/// `POST /applications/{id}/keys`: the key is in the answer only.
pub async fn create_key(
    State(st): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    Body(input): Body<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    owned(&st, &caller, &app).await?;
    let name = input.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let now = now_ms();
    let expires = match &input.expires_at {
        Some(t) => {
            let at = parse_time("expires_at", t)?;
            if at <= now {
                return Err(ApiError::invalid("expires_at", "must be in the future"));
            }
            Some(at)
        }
        None => None,
    };
    let key = new_secret("pc-");
    let id = new_id("key");
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO application_keys (id, application_id, name, prefix, key_sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.clone())
    .bind(app.clone())
    .bind(name.clone())
    .bind(display_prefix(&key))
    .bind(sha256_hex(&key))
    .bind(now)
    .bind(expires)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "application.key.create",
        &format!("applications/{app}/keys/{id}"),
        Some(json!({"name": name})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM application_keys WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    let mut out = key_json(&row)?;
    out["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /applications/{id}/keys`.
pub async fn list_keys(
    State(st): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    owned(&st, &caller, &app).await?;
    let rows = sqlx::query(
        "SELECT * FROM application_keys WHERE application_id = $1 ORDER BY created_at, id",
    )
    .bind(app)
    .fetch_all(&st.pool)
    .await?;
    let items = rows.iter().map(key_json).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /applications/{id}/keys/{key}/revoke`.
pub async fn revoke_key(
    State(st): State<AppState>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    owned(&st, &caller, &app).await?;
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    let done = sqlx::query(
        "UPDATE application_keys SET revoked_at = $1 WHERE id = $2 AND application_id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(key.clone())
    .bind(app.clone())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row = sqlx::query("SELECT * FROM application_keys WHERE id = $1 AND application_id = $2")
        .bind(key.clone())
        .bind(app.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("key", &key))?;
    if done == 0 {
        return Err(ApiError::conflict("id", "the key is already revoked"));
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "application.key.revoke",
        &format!("applications/{app}/keys/{key}"),
        None,
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(key_json(&row)?))
}

// ------------------------------------------------------------ plans

/// Body of `POST /proxies/{id}/plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    pub name: String,
    /// Model patterns subscribers may call (`*` matches any run of
    /// characters); empty: every model of the proxy.
    #[serde(default)]
    pub models: Vec<String>,
    /// Client formats subscribers may use (`openai`, `anthropic`,
    /// `gemini`); empty: every one the proxy serves.
    #[serde(default)]
    pub inbound: Vec<InboundKind>,
    /// Resources subscribers may use (`chat/completions`, `embeddings`,
    /// `models`); empty: every one the proxy offers.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Whether a subscription waits for the proxy owner's approval.
    #[serde(default)]
    pub needs_approval: bool,
    /// Token and request quotas per subscription: token-rate-limit's
    /// `limits` (`{metric, limit, window}`).
    #[serde(default)]
    pub limits: Vec<Value>,
    /// Spend caps per subscription: budget's `budgets` (`{amount, period}`).
    #[serde(default)]
    pub budgets: Vec<Value>,
}

/// Body of `PATCH /proxies/{id}/plans/{plan}`: the fields given replace
/// the plan's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPatch {
    pub models: Option<Vec<String>>,
    pub inbound: Option<Vec<InboundKind>>,
    pub resources: Option<Vec<Resource>>,
    pub needs_approval: Option<bool>,
    pub limits: Option<Vec<Value>>,
    pub budgets: Option<Vec<Value>>,
}

fn plan_json(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let list = |col: &str| -> ApiResult<Value> {
        serde_json::from_str(&r.try_get::<String, _>(col)?).map_err(ApiError::internal)
    };
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "proxy_id": r.try_get::<String, _>("proxy_id")?,
        "name": r.try_get::<String, _>("name")?,
        "models": list("models")?,
        "inbound": list("inbound")?,
        "resources": list("resources")?,
        "needs_approval": r.try_get::<i64, _>("needs_approval")? != 0,
        "limits": list("limits")?,
        "budgets": list("budgets")?,
        "created_at": rfc3339(r.try_get("created_at")?),
    }))
}

fn check_models(models: &[String]) -> ApiResult<()> {
    let scope = KeyScopeFile {
        models: models.to_vec(),
        ..Default::default()
    };
    match scope.problem() {
        Some((field, message)) => Err(ApiError::invalid(field, message)),
        None => Ok(()),
    }
}

/// The policy attachments that enforce a plan's quotas and budgets on its
/// subscribers: token-rate-limit and budget keyed by subscription, at the
/// hub's latest versions, checked against their settings schemas (so a
/// negative quota or an unknown period is a 422 naming the plan's field,
/// `limits[0].limit`). The gateway runs them only for keys used under the
/// plan (`plans` of the attachment, `plan` of the key).
async fn plan_attachments(st: &AppState, limits: &[Value], budgets: &[Value]) -> ApiResult<Value> {
    let mut out = Vec::new();
    for (field, policy, settings) in [
        (
            "limits",
            "token-rate-limit",
            json!({"limits": limits, "key": "subscription"}),
        ),
        (
            "budgets",
            "budget",
            json!({"budgets": budgets, "per": "subscription"}),
        ),
    ] {
        if settings[field].as_array().is_none_or(Vec::is_empty) {
            continue;
        }
        let described = st.hub.policy(policy).await?;
        let Some(version) = described["latest_version"].as_str() else {
            return Err(ApiError::invalid(
                field,
                format!("the policy hub has no `{policy}` policy to enforce {field} with"),
            ));
        };
        let pv = crate::policies::resolve(st, policy, version, None).await?;
        crate::policies::check_settings(&pv, &settings).map_err(|mut e| {
            // `settings/limits/0/limit` -> `limits[0].limit`
            if let Some(f) = e.field.take() {
                let mut name = String::new();
                for part in f
                    .trim_start_matches("settings")
                    .split('/')
                    .filter(|p| !p.is_empty())
                {
                    if part.bytes().all(|b| b.is_ascii_digit()) {
                        name.push_str(&format!("[{part}]"));
                    } else {
                        if !name.is_empty() {
                            name.push('.');
                        }
                        name.push_str(part);
                    }
                }
                // The schema's words, under the plan's field name rather
                // than the policy's settings pointer.
                if let Some((_, why)) = e.message.split_once("`: ") {
                    e.message = format!("{name}: {why}");
                }
                e.field = Some(name);
            }
            e
        })?;
        out.push(json!({
            "name": policy,
            "version": version,
            "sha256": crate::policies::pinned_digest(&pv)?,
            "settings": settings,
        }));
    }
    Ok(Value::Array(out))
}

/// `POST /proxies/{id}/plans` (the proxy's owner or an admin).
pub async fn create_plan(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy): Path<String>,
    Body(input): Body<CreatePlan>,
) -> ApiResult<impl IntoResponse> {
    authorize(&st, &caller, &proxy, "plan.create").await?;
    let name = input.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    check_models(&input.models)?;
    // The hub is asked before the transaction opens.
    let attachments = plan_attachments(&st, &input.limits, &input.budgets).await?;
    let id = new_id("plan");
    let mut tx = st.pool.begin().await?;
    if sqlx::query("SELECT id FROM plans WHERE proxy_id = $1 AND name = $2")
        .bind(proxy.clone())
        .bind(name.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "name",
            format!("proxy `{proxy}` has a plan named `{name}`"),
        ));
    }
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO plans (id, proxy_id, name, models, needs_approval, limits, budgets, attachments, inbound, resources, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.clone())
    .bind(proxy.clone())
    .bind(name.clone())
    .bind(json!(input.models).to_string())
    .bind(i64::from(input.needs_approval))
    .bind(json!(input.limits).to_string())
    .bind(json!(input.budgets).to_string())
    .bind(attachments.to_string())
    .bind(json!(input.inbound).to_string())
    .bind(json!(input.resources).to_string())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "plan.create",
        &format!("proxies/{proxy}/plans/{id}"),
        Some(
            json!({"name": name, "models": input.models, "inbound": input.inbound,
                    "resources": input.resources, "needs_approval": input.needs_approval,
                    "limits": input.limits, "budgets": input.budgets}),
        ),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM plans WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    Ok((StatusCode::CREATED, Json(plan_json(&row)?)))
}

/// `PATCH /proxies/{id}/plans/{plan}` (the proxy's owner or an admin):
/// new models, quotas or budgets reach the subscribers' gateways with the
/// next configuration, like a key's changes (plans are not revisioned).
pub async fn update_plan(
    State(st): State<AppState>,
    caller: Caller,
    Path((proxy, plan)): Path<(String, String)>,
    Body(input): Body<PlanPatch>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy, "plan.update").await?;
    let current = sqlx::query("SELECT * FROM plans WHERE id = $1 AND proxy_id = $2")
        .bind(plan.clone())
        .bind(proxy.clone())
        .fetch_optional(&st.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("plan", &plan))?;
    let now = plan_json(&current)?;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let models = match input.models {
        Some(m) => m,
        None => serde_json::from_value(now["models"].clone()).map_err(ApiError::internal)?,
    };
    check_models(&models)?;
    let inbound = match input.inbound {
        Some(v) => json!(v),
        None => now["inbound"].clone(),
    };
    let resources = match input.resources {
        Some(v) => json!(v),
        None => now["resources"].clone(),
    };
    let limits = input.limits.unwrap_or_else(|| list(&now["limits"]));
    let budgets = input.budgets.unwrap_or_else(|| list(&now["budgets"]));
    let needs_approval = input
        .needs_approval
        .unwrap_or(now["needs_approval"] == json!(true));
    let attachments = plan_attachments(&st, &limits, &budgets).await?;
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "UPDATE plans SET models = $1, needs_approval = $2, limits = $3, budgets = $4, attachments = $5, \
         inbound = $6, resources = $7 WHERE id = $8",
    )
    .bind(json!(models).to_string())
    .bind(i64::from(needs_approval))
    .bind(json!(limits).to_string())
    .bind(json!(budgets).to_string())
    .bind(attachments.to_string())
    .bind(inbound.to_string())
    .bind(resources.to_string())
    .bind(plan.clone())
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "plan.update",
        &format!("proxies/{proxy}/plans/{plan}"),
        Some(
            json!({"models": models, "inbound": inbound, "resources": resources,
                    "needs_approval": needs_approval, "limits": limits, "budgets": budgets}),
        ),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM plans WHERE id = $1")
        .bind(plan)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(plan_json(&row)?))
}

/// `GET /proxies/{id}/plans`: every authenticated caller may see what it
/// could subscribe to.
pub async fn list_plans(
    State(st): State<AppState>,
    _caller: Caller,
    Path(proxy): Path<String>,
) -> ApiResult<Json<Value>> {
    let rows = sqlx::query("SELECT * FROM plans WHERE proxy_id = $1 ORDER BY name")
        .bind(proxy)
        .fetch_all(&st.pool)
        .await?;
    let items = rows.iter().map(plan_json).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /proxies/{id}/plans/{plan}`: 409 while subscriptions under it
/// are pending, active or suspended.
pub async fn delete_plan(
    State(st): State<AppState>,
    caller: Caller,
    Path((proxy, plan)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    authorize(&st, &caller, &proxy, "plan.delete").await?;
    let mut tx = st.pool.begin().await?;
    if sqlx::query("SELECT id FROM plans WHERE id = $1 AND proxy_id = $2")
        .bind(plan.clone())
        .bind(proxy.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("plan", &plan));
    }
    let open = sqlx::query(
        "SELECT COUNT(*) AS n FROM subscriptions WHERE plan_id = $1 AND status <> 'closed'",
    )
    .bind(plan.clone())
    .fetch_one(&mut *tx)
    .await?
    .try_get::<i64, _>("n")?;
    if open > 0 {
        return Err(ApiError::conflict(
            "id",
            format!("{open} subscription(s) under this plan are not closed; close them first"),
        ));
    }
    let seq = bump(&mut tx).await?;
    sqlx::query("DELETE FROM plans WHERE id = $1")
        .bind(plan.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "plan.delete",
        &format!("proxies/{proxy}/plans/{plan}"),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------ subscriptions

/// Body of `POST /applications/{id}/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub proxy: String,
    /// Plan id or name.
    pub plan: String,
}

fn subscription_json(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "application_id": r.try_get::<String, _>("application_id")?,
        "proxy_id": r.try_get::<String, _>("proxy_id")?,
        "plan_id": r.try_get::<String, _>("plan_id")?,
        "status": r.try_get::<String, _>("status")?,
        "created_at": rfc3339(r.try_get("created_at")?),
        "updated_at": rfc3339(r.try_get("updated_at")?),
    }))
}

async fn subscriptions_of(st: &AppState, app: &str) -> ApiResult<Vec<Value>> {
    let rows = sqlx::query(
        "SELECT * FROM subscriptions WHERE application_id = $1 ORDER BY created_at, id",
    )
    .bind(app.to_owned())
    .fetch_all(&st.pool)
    .await?;
    rows.iter().map(subscription_json).collect()
}

/// `POST /applications/{id}/subscriptions`: `active` at once, or
/// `pending` when the plan needs approval.
pub async fn subscribe(
    State(st): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
    Body(input): Body<Subscribe>,
) -> ApiResult<impl IntoResponse> {
    owned(&st, &caller, &app).await?;
    let mut tx = st.pool.begin().await?;
    let plan = sqlx::query("SELECT * FROM plans WHERE proxy_id = $1 AND (id = $2 OR name = $2)")
        .bind(input.proxy.clone())
        .bind(input.plan.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "plan",
                format!("proxy `{}` has no plan `{}`", input.proxy, input.plan),
            )
        })?;
    let plan_id: String = plan.try_get("id")?;
    let open = sqlx::query(
        "SELECT id FROM subscriptions WHERE application_id = $1 AND proxy_id = $2 AND status <> 'closed'",
    )
    .bind(app.clone())
    .bind(input.proxy.clone())
    .fetch_optional(&mut *tx)
    .await?;
    if open.is_some() {
        return Err(ApiError::conflict(
            "proxy",
            format!(
                "application `{app}` already subscribes to `{}`",
                input.proxy
            ),
        ));
    }
    let status = if plan.try_get::<i64, _>("needs_approval")? != 0 {
        "pending"
    } else {
        "active"
    };
    let id = new_id("sub");
    let now = now_ms();
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "INSERT INTO subscriptions (id, application_id, proxy_id, plan_id, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id.clone())
    .bind(app.clone())
    .bind(input.proxy.clone())
    .bind(plan_id.clone())
    .bind(status)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "subscription.create",
        &format!("applications/{app}/subscriptions/{id}"),
        Some(json!({"proxy": input.proxy, "plan": plan_id, "status": status})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    Ok((StatusCode::CREATED, Json(subscription_json(&row)?)))
}

/// `GET /applications/{id}/subscriptions`.
pub async fn list_subscriptions(
    State(st): State<AppState>,
    caller: Caller,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    owned(&st, &caller, &app).await?;
    Ok(Json(json!({ "items": subscriptions_of(&st, &app).await? })))
}

/// `GET /proxies/{id}/subscriptions` (the proxy's owner or an admin): who
/// subscribes to the proxy and in which state, so its owner can approve
/// pending subscriptions without knowing the applications (which stay
/// private to their owners: only their ids are shown).
pub async fn list_proxy_subscriptions(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy, "subscription.list").await?;
    let rows =
        sqlx::query("SELECT * FROM subscriptions WHERE proxy_id = $1 ORDER BY created_at, id")
            .bind(proxy)
            .fetch_all(&st.pool)
            .await?;
    let items = rows
        .iter()
        .map(subscription_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /subscriptions/{id}/{action}`: `approve` (pending to active),
/// `suspend` (active to suspended), `resume` (suspended to active) by the
/// proxy's owner or an admin; `close` (any state but closed) also by the
/// application's owner.
pub async fn transition(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&st.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("subscription", &id))?;
    let proxy: String = row.try_get("proxy_id")?;
    let app: String = row.try_get("application_id")?;
    let status: String = row.try_get("status")?;
    let (from, to): (&[&str], &str) = match action.as_str() {
        "approve" => (&["pending"], "active"),
        "suspend" => (&["active"], "suspended"),
        "resume" => (&["suspended"], "active"),
        "close" => (&["pending", "active", "suspended"], "closed"),
        _ => {
            return Err(ApiError::not_found("subscription action", &action));
        }
    };
    // The proxy's side decides everything; the application's owner may
    // only leave.
    let proxy_owner = crate::ownership::load_owner(&st.pool, &proxy)
        .await?
        .flatten();
    let proxy_side = caller.role == Role::Admin || caller.may_access(proxy_owner.as_ref());
    if !proxy_side {
        let app_side = owned(&st, &caller, &app).await.is_ok();
        if !(app_side && action == "close") {
            return Err(ApiError::forbidden(format!(
                "only the owner of proxy `{proxy}` may {action} its subscriptions"
            )));
        }
    }
    if !from.contains(&status.as_str()) {
        return Err(ApiError::conflict(
            "status",
            format!(
                "the subscription is {status}; {action} needs it {}",
                from.join(" or ")
            ),
        ));
    }
    let mut tx = st.pool.begin().await?;
    let seq = bump(&mut tx).await?;
    sqlx::query("UPDATE subscriptions SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(to)
        .bind(now_ms())
        .bind(id.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        &format!("subscription.{action}"),
        &format!("applications/{app}/subscriptions/{id}"),
        Some(json!({"from": status, "to": to})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(subscription_json(&row)?))
}
