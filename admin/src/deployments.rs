//! `/proxies/{id}/deployments`: a deployment puts a proxy's current revision
//! on one gateway. Deploying again replaces the proxy's active deployment
//! on that gateway; two proxies may not share a base path on one gateway.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::db::{audit, bump, new_id, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::{authorize, load_owner};
use crate::proxies::{ProxySpec, invoke_base, load_required};

/// Body of `POST /proxies/{id}/deployments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployInput {
    /// Gateway id or name.
    pub gateway: String,
    /// An earlier revision of the proxy to deploy (a rollback); default
    /// the current one.
    #[serde(default)]
    pub revision: Option<i64>,
}

fn deployment_json(r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let url: String = r.try_get("gateway_url")?;
    let context: String = r.try_get("context")?;
    let stopped: Option<i64> = r.try_get("stopped_at")?;
    let base = invoke_base(&url, &context);
    let proxy_id: String = r.try_get("proxy_id")?;
    let mut status: String = r.try_get("status")?;
    // An active deployment the gateway reported it could not load.
    let error = match status.as_str() {
        "Active" => crate::gateways::load_error(
            r.try_get::<Option<String>, _>("gateway_proxy_errors")?
                .as_deref(),
            &proxy_id,
        ),
        _ => None,
    };
    if error.is_some() {
        status = "Failed".into();
    }
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "proxy_id": proxy_id,
        "gateway_id": r.try_get::<String, _>("gateway_id")?,
        "gateway": r.try_get::<String, _>("gateway_name")?,
        "revision": r.try_get::<i64, _>("revision")?,
        "context": context,
        "status": status,
        "error": error,
        "deployed_at": rfc3339(r.try_get("deployed_at")?),
        "stopped_at": stopped.map(rfc3339),
        "invoke_url": format!("{base}/chat/completions"),
    }))
}

/// A deployment with its gateway's name and URL, then `$rest`.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT d.*, g.name AS gateway_name, g.url AS gateway_url, g.proxy_errors AS gateway_proxy_errors FROM deployments d JOIN gateways g ON g.id = d.gateway_id ",
            $rest
        )
    };
}

/// `POST /proxies/{id}/deployments`.
pub async fn deploy(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy_id): Path<String>,
    Body(input): Body<DeployInput>,
) -> ApiResult<impl IntoResponse> {
    authorize(&st, &caller, &proxy_id, "deployment.create").await?;
    let mut tx = st.pool.begin().await?;
    let proxy = load_required(&mut tx, &proxy_id).await?;
    let gw = sqlx::query("SELECT id FROM gateways WHERE id = $1 OR name = $1")
        .bind(input.gateway.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::invalid("gateway", format!("no gateway `{}`", input.gateway)))?;
    let gateway_id: String = gw.try_get("id")?;
    let (revision, context) = match input.revision {
        None => (proxy.revision, proxy.spec.context.clone()),
        Some(n) => {
            let spec = revision_spec(&mut tx, &proxy_id, n, proxy.revision).await?;
            (n, spec.context)
        }
    };
    let clash = sqlx::query(
        "SELECT proxy_id FROM deployments WHERE gateway_id = $1 AND status = 'Active' AND context = $2 AND proxy_id <> $3",
    )
    .bind(gateway_id.clone())
    .bind(context.clone())
    .bind(proxy_id.clone())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(r) = clash {
        let other: String = r.try_get("proxy_id")?;
        // Another owner's proxy is not named to a developer.
        let visible = match load_owner(&mut *tx, &other).await? {
            Some(owner) => caller.may_access(owner.as_ref()),
            None => false,
        };
        let who = if visible {
            format!("proxy `{other}`")
        } else {
            "another proxy".to_owned()
        };
        return Err(ApiError::conflict(
            "context",
            format!("{who} already serves `{context}` on gateway `{gateway_id}`"),
        ));
    }
    let seq = bump(&mut tx).await?;
    let now = now_ms();
    let replaced = sqlx::query(
        "SELECT id FROM deployments WHERE proxy_id = $1 AND gateway_id = $2 AND status = 'Active'",
    )
    .bind(proxy_id.clone())
    .bind(gateway_id.clone())
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| r.try_get::<String, _>("id"))
    .transpose()?;
    sqlx::query("UPDATE deployments SET status = 'Inactive', stopped_at = $1 WHERE proxy_id = $2 AND gateway_id = $3 AND status = 'Active'")
        .bind(now)
        .bind(proxy_id.clone())
        .bind(gateway_id.clone())
        .execute(&mut *tx)
        .await?;
    let id = new_id("dep");
    sqlx::query(
        "INSERT INTO deployments (id, proxy_id, gateway_id, revision, context, status, deployed_at, seq) VALUES ($1, $2, $3, $4, $5, 'Active', $6, $7)",
    )
    .bind(id.clone())
    .bind(proxy_id.clone())
    .bind(gateway_id.clone())
    .bind(revision)
    .bind(context)
    .bind(now)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "deployment.create",
        &format!("proxies/{proxy_id}/deployments/{id}"),
        Some(json!({"gateway": gateway_id, "revision": revision, "current_revision": proxy.revision, "replaced": replaced})),
    )
    .await?;
    let row = sqlx::query(select!("WHERE d.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let mut out = deployment_json(&row)?;
    tx.commit().await?;
    st.changed();
    out["replaced"] = json!(replaced);
    out["current_revision"] = json!(proxy.revision);
    Ok((StatusCode::CREATED, Json(out)))
}

/// The spec of revision `n` of a proxy, for a rollback: it must exist and
/// every provider it routes to must still exist (a gateway could not load
/// it otherwise).
async fn revision_spec(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    proxy_id: &str,
    n: i64,
    current: i64,
) -> ApiResult<ProxySpec> {
    let row = sqlx::query("SELECT spec FROM proxy_revisions WHERE proxy_id = $1 AND revision = $2")
        .bind(proxy_id.to_owned())
        .bind(n)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "revision",
                format!("proxy `{proxy_id}` has no revision {n} (revisions 1 to {current})"),
            )
        })?;
    let spec: ProxySpec =
        serde_json::from_str(&row.try_get::<String, _>("spec")?).map_err(ApiError::internal)?;
    for provider in spec.provider_ids() {
        let exists = sqlx::query("SELECT id FROM providers WHERE id = $1")
            .bind(provider.to_owned())
            .fetch_optional(&mut **tx)
            .await?;
        if exists.is_none() {
            return Err(ApiError::conflict(
                "revision",
                format!("revision {n} routes to provider `{provider}`, which no longer exists"),
            ));
        }
    }
    Ok(spec)
}

/// `GET /proxies/{id}/deployments`: history, newest first, the newest
/// marked `latest`.
pub async fn history(
    State(st): State<AppState>,
    caller: Caller,
    Path(proxy_id): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy_id, "deployment.list").await?;
    let rows = sqlx::query(select!("WHERE d.proxy_id = $1 ORDER BY d.seq DESC"))
        .bind(proxy_id)
        .fetch_all(&st.pool)
        .await?;
    let mut items = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let mut d = deployment_json(r)?;
        d["latest"] = json!(i == 0);
        items.push(d);
    }
    Ok(Json(json!({ "items": items })))
}

/// `POST /proxies/{id}/deployments/{deployment}/stop`: undeploys.
pub async fn stop(
    State(st): State<AppState>,
    caller: Caller,
    Path((proxy_id, dep_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &proxy_id, "deployment.stop").await?;
    let mut tx = st.pool.begin().await?;
    let row = sqlx::query("SELECT status FROM deployments WHERE id = $1 AND proxy_id = $2")
        .bind(dep_id.clone())
        .bind(proxy_id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment", &dep_id))?;
    if row.try_get::<String, _>("status")? != "Active" {
        return Err(ApiError::conflict(
            "id",
            "the deployment is already stopped",
        ));
    }
    let seq = bump(&mut tx).await?;
    sqlx::query("UPDATE deployments SET status = 'Inactive', stopped_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(dep_id.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "deployment.stop",
        &format!("proxies/{proxy_id}/deployments/{dep_id}"),
        None,
    )
    .await?;
    let row = sqlx::query(select!("WHERE d.id = $1"))
        .bind(dep_id)
        .fetch_one(&mut *tx)
        .await?;
    let out = deployment_json(&row)?;
    tx.commit().await?;
    st.changed();
    Ok(Json(out))
}
