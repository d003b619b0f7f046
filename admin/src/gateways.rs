//! `/gateways`: registering the gateways proxies are deployed to, their
//! status from heartbeats, and the two endpoints a managed gateway calls
//! with its gateway token: its configuration (long-poll) and heartbeats.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_config::{
    FileConfig, KeyFile, PolicyAttachmentFile, PolicyEmbeddingsFile, PolicyEngineFile,
    PolicyHubFile, ProviderFile, ProviderKind, ProxyFile,
};
use portcullis_types::managed::{DeployedProxy, Heartbeat, ManagedConfig, ProxyLoadFailure};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

use crate::auth::{Caller, GatewayCaller};
use crate::crypto::{new_secret, sha256_hex};
use crate::db::{self, audit, bump, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body, Query};
use crate::providers::Provider;
use crate::proxies::{ProxySpec, invoke_base};
use crate::slug::{slugify, valid_url};
use crate::{AppState, PolicyEmbeddings};

/// Body of `POST /gateways`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterInput {
    pub name: String,
    /// The base URL clients use to reach the gateway (`https://gw.example.com`).
    pub url: String,
    /// The group whose settings the gateway takes (`/gateway-groups/{name}/settings`).
    #[serde(default)]
    pub group: Option<String>,
}

/// A gateway as `caller` may see it: a developer sees only the deployments
/// of proxies it owns, and not the last configuration error (which may be
/// about another owner's proxy).
async fn gateway_json(st: &AppState, caller: &Caller, r: &sqlx::any::AnyRow) -> ApiResult<Value> {
    let id: String = r.try_get("id")?;
    let url: String = r.try_get("url")?;
    let last_seen: Option<i64> = r.try_get("last_seen_at")?;
    let active = last_seen.is_some_and(|t| now_ms() - t <= st.heartbeat_window.as_millis() as i64);
    let last_error: Option<String> = r.try_get("last_error")?;
    let visible = caller.visible_proxies(2);
    let sql = format!(
        "SELECT d.id, d.proxy_id, d.revision, d.context, d.deployed_at, p.name FROM deployments d \
         JOIN proxies p ON p.id = d.proxy_id WHERE d.gateway_id = $1 AND d.status = 'Active' {} ORDER BY d.context",
        visible
            .as_ref()
            .map(|(cond, _)| format!("AND {cond}"))
            .unwrap_or_default()
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.clone());
    if let Some((_, value)) = visible {
        query = query.bind(value);
    }
    let rows = query.fetch_all(&st.pool).await?;
    let last_error = last_error.filter(|_| caller.role == crate::auth::Role::Admin);
    let left_out: Option<String> = r.try_get("proxy_errors")?;
    let deployments = rows
        .iter()
        .map(|d| {
            let context: String = d.try_get("context")?;
            let proxy_id: String = d.try_get("proxy_id")?;
            let error = load_error(left_out.as_deref(), &proxy_id);
            Ok(json!({
                "deployment_id": d.try_get::<String, _>("id")?,
                "status": if error.is_some() { "Failed" } else { "Active" },
                "error": error,
                "proxy_id": proxy_id,
                "proxy": d.try_get::<String, _>("name")?,
                "revision": d.try_get::<i64, _>("revision")?,
                "deployed_at": rfc3339(d.try_get("deployed_at")?),
                "invoke_url": format!("{}/chat/completions", invoke_base(&url, &context)),
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json!({
        "id": id,
        "name": r.try_get::<String, _>("name")?,
        "url": url,
        "status": if active { "Active" } else { "Not Active" },
        "last_seen_at": last_seen.map(rfc3339),
        "config_version": r.try_get::<Option<String>, _>("config_version")?,
        "proxies_served": r.try_get::<i64, _>("proxies_served")?,
        "last_error": last_error.and_then(|e| serde_json::from_str::<Value>(&e).ok()),
        "group": r.try_get::<Option<String>, _>("group_name")?,
        "restart_required": r
            .try_get::<Option<String>, _>("restart_required")?
            .and_then(|e| serde_json::from_str::<Value>(&e).ok())
            .unwrap_or_else(|| json!([])),
        "created_at": rfc3339(r.try_get("created_at")?),
        "deployments": deployments,
    }))
}

/// `POST /gateways`: the gateway token is in the answer only.
pub async fn register(
    State(st): State<AppState>,
    caller: Caller,
    Body(input): Body<RegisterInput>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin("registering gateways")?;
    let name = input.name.trim().to_owned();
    let id = slugify(&name);
    if id.is_empty() {
        return Err(ApiError::invalid("name", "must contain a letter or digit"));
    }
    let url = input.url.trim().trim_end_matches('/').to_owned();
    if !valid_url(&url) {
        return Err(ApiError::invalid(
            "url",
            "must be an http:// or https:// URL",
        ));
    }
    let group = input
        .group
        .as_deref()
        .map(crate::gateway_settings::check_group)
        .transpose()?;
    let mut tx = st.pool.begin().await?;
    let clash = sqlx::query("SELECT id FROM gateways WHERE id = $1 OR name = $2")
        .bind(id.clone())
        .bind(name.clone())
        .fetch_optional(&mut *tx)
        .await?;
    if clash.is_some() {
        return Err(ApiError::conflict(
            "name",
            format!("a gateway named `{name}` (id `{id}`) exists"),
        ));
    }
    let token = new_secret("gwt-");
    let seq = bump(&mut tx).await?;
    sqlx::query("INSERT INTO gateways (id, name, url, token_sha256, created_at, group_name) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id.clone())
        .bind(name.clone())
        .bind(url.clone())
        .bind(sha256_hex(&token))
        .bind(now_ms())
        .bind(group.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "gateway.register",
        &format!("gateways/{id}"),
        Some(json!({"name": name, "url": url, "group": group})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM gateways WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut out = gateway_json(&st, &caller, &row).await?;
    out["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(out)))
}

/// Registers `name` if needed and gives it a fresh token (`portcullis up`
/// runs its own gateway and so needs its token on every start).
pub async fn ensure_gateway(pool: &AnyPool, name: &str, url: &str) -> anyhow::Result<String> {
    let id = slugify(name);
    let token = new_secret("gwt-");
    let mut tx = pool.begin().await?;
    let seq = sqlx::query("UPDATE meta SET v = v + 1 WHERE k = 'generation' RETURNING v")
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>(0)?;
    let exists = sqlx::query("SELECT id FROM gateways WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_some() {
        sqlx::query("UPDATE gateways SET token_sha256 = $1, url = $2 WHERE id = $3")
            .bind(sha256_hex(&token))
            .bind(url.to_owned())
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query("INSERT INTO gateways (id, name, url, token_sha256, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.clone())
            .bind(name.to_owned())
            .bind(url.to_owned())
            .bind(sha256_hex(&token))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
    }
    audit(
        &mut tx,
        seq,
        "portcullis up",
        "gateway.ensure",
        &format!("gateways/{id}"),
        Some(json!({"url": url})),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    Ok(token)
}

/// `GET /gateways`.
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let rows = sqlx::query("SELECT * FROM gateways ORDER BY name")
        .fetch_all(&st.pool)
        .await?;
    let mut items = Vec::new();
    for r in &rows {
        items.push(gateway_json(&st, &caller, r).await?);
    }
    Ok(Json(json!({ "items": items })))
}

/// `GET /gateways/{id}`: also whether the gateway serves the newest config.
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query("SELECT * FROM gateways WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&st.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("gateway", &id))?;
    let mut out = gateway_json(&st, &caller, &row).await?;
    let (cfg, _) = build_config(&st, &id).await?;
    out["in_sync"] = json!(out["config_version"] == json!(cfg.version));
    out["current_version"] = json!(cfg.version);
    Ok(Json(out))
}

/// Body of `PATCH /gateways/{id}`: a merge patch of `url` and `group`
/// (`null` takes the gateway out of its group).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateInput {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub group: Option<Option<String>>,
}

/// A field that is present (even `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// `PATCH /gateways/{id}`: its URL or its group.
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<UpdateInput>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("changing gateways")?;
    let url = match &input.url {
        Some(u) => {
            let u = u.trim().trim_end_matches('/').to_owned();
            if !valid_url(&u) {
                return Err(ApiError::invalid(
                    "url",
                    "must be an http:// or https:// URL",
                ));
            }
            Some(u)
        }
        None => None,
    };
    let group = match &input.group {
        Some(Some(g)) => Some(Some(crate::gateway_settings::check_group(g)?)),
        Some(None) => Some(None),
        None => None,
    };
    let mut tx = st.pool.begin().await?;
    if sqlx::query("SELECT id FROM gateways WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("gateway", &id));
    }
    let seq = bump(&mut tx).await?;
    if let Some(u) = &url {
        sqlx::query("UPDATE gateways SET url = $1 WHERE id = $2")
            .bind(u.clone())
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(g) = &group {
        sqlx::query("UPDATE gateways SET group_name = $1 WHERE id = $2")
            .bind(g.clone())
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "gateway.update",
        &format!("gateways/{id}"),
        Some(json!({"url": url, "group": group})),
    )
    .await?;
    let row = sqlx::query("SELECT * FROM gateways WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(gateway_json(&st, &caller, &row).await?))
}

/// `DELETE /gateways/{id}`: refused while proxies are deployed on it.
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin("removing gateways")?;
    let mut tx = st.pool.begin().await?;
    if sqlx::query("SELECT id FROM gateways WHERE id = $1")
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("gateway", &id));
    }
    let active =
        sqlx::query("SELECT proxy_id FROM deployments WHERE gateway_id = $1 AND status = 'Active'")
            .bind(id.clone())
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(r) = active {
        let p: String = r.try_get("proxy_id")?;
        return Err(ApiError::conflict(
            "id",
            format!("proxy `{p}` is deployed on this gateway; stop it first"),
        ));
    }
    let seq = bump(&mut tx).await?;
    sqlx::query("DELETE FROM deployments WHERE gateway_id = $1")
        .bind(id.clone())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM gateways WHERE id = $1")
        .bind(id.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "gateway.delete",
        &format!("gateways/{id}"),
        None,
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------ managed gateways

/// The configuration of gateway `id`, and when the next of its keys
/// expires (the config changes then without any write).
pub async fn build_config(
    st: &AppState,
    gateway_id: &str,
) -> ApiResult<(ManagedConfig, Option<i64>)> {
    let now = now_ms();
    let deps = sqlx::query(
        "SELECT d.id, d.proxy_id, d.revision, r.spec FROM deployments d \
         JOIN proxy_revisions r ON r.proxy_id = d.proxy_id AND r.revision = d.revision \
         WHERE d.gateway_id = $1 AND d.status = 'Active' ORDER BY d.proxy_id",
    )
    .bind(gateway_id.to_owned())
    .fetch_all(&st.pool)
    .await?;
    let key_rows = sqlx::query(
        "SELECT k.id, k.proxy_id, k.name, k.key_sha256, k.expires_at, k.scope FROM api_keys k \
         JOIN deployments d ON d.proxy_id = k.proxy_id AND d.gateway_id = $1 AND d.status = 'Active' \
         WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2) ORDER BY k.proxy_id, k.created_at, k.id",
    )
    .bind(gateway_id.to_owned())
    .bind(now)
    .fetch_all(&st.pool)
    .await?;
    let mut keys: BTreeMap<String, Vec<KeyFile>> = BTreeMap::new();
    let mut next_expiry: Option<i64> = None;
    for k in &key_rows {
        let expires: Option<i64> = k.try_get("expires_at")?;
        if let Some(e) = expires {
            next_expiry = Some(next_expiry.map_or(e, |n| n.min(e)));
        }
        // The expiry travels with the key: the gateway refuses it on time
        // by itself, even when it cannot hear admin's next configuration.
        // The key's id travels too: limits and metrics count by it, so
        // two keys named alike never share a limit.
        let mut entry = json!({
            "name": k.try_get::<String, _>("name")?,
            "id": k.try_get::<String, _>("id")?,
            "sha256": k.try_get::<String, _>("key_sha256")?,
        });
        if let Some(e) = expires {
            entry["expires_at"] = json!(crate::db::rfc3339(e));
        }
        if let Some(scope) = k.try_get::<Option<String>, _>("scope")? {
            entry["scope"] = serde_json::from_str(&scope).map_err(ApiError::internal)?;
        }
        let entry: KeyFile = serde_json::from_value(entry).map_err(ApiError::internal)?;
        keys.entry(k.try_get("proxy_id")?).or_default().push(entry);
    }
    // Keys of applications actively subscribed to a deployed proxy, with
    // their plan's models as scope.
    let app_keys = sqlx::query(
        "SELECT ak.id, ak.name, ak.key_sha256, ak.expires_at, a.id AS app_id, a.name AS app_name, s.id AS sub_id, s.proxy_id, pl.id AS plan_id, pl.models, pl.inbound, pl.resources \
         FROM application_keys ak JOIN applications a ON a.id = ak.application_id \
         JOIN subscriptions s ON s.application_id = ak.application_id AND s.status = 'active' \
         JOIN plans pl ON pl.id = s.plan_id \
         JOIN deployments d ON d.proxy_id = s.proxy_id AND d.gateway_id = $1 AND d.status = 'Active' \
         WHERE ak.revoked_at IS NULL AND (ak.expires_at IS NULL OR ak.expires_at > $2) ORDER BY s.proxy_id, ak.created_at, ak.id",
    )
    .bind(gateway_id.to_owned())
    .bind(now)
    .fetch_all(&st.pool)
    .await?;
    for k in &app_keys {
        let expires: Option<i64> = k.try_get("expires_at")?;
        if let Some(e) = expires {
            next_expiry = Some(next_expiry.map_or(e, |n| n.min(e)));
        }
        // The plan's scope is the key's on that proxy.
        let mut scope = serde_json::Map::new();
        for field in ["models", "inbound", "resources"] {
            let list: Value = serde_json::from_str(&k.try_get::<String, _>(field)?)
                .map_err(ApiError::internal)?;
            if list.as_array().is_some_and(|l| !l.is_empty()) {
                scope.insert(field.to_owned(), list);
            }
        }
        let mut entry = json!({
            "name": format!("{}/{}", k.try_get::<String, _>("app_name")?, k.try_get::<String, _>("name")?),
            "id": k.try_get::<String, _>("id")?,
            "sha256": k.try_get::<String, _>("key_sha256")?,
            "application": k.try_get::<String, _>("app_id")?,
            "subscription": k.try_get::<String, _>("sub_id")?,
            "plan": k.try_get::<String, _>("plan_id")?,
        });
        if let Some(e) = expires {
            entry["expires_at"] = json!(crate::db::rfc3339(e));
        }
        if !scope.is_empty() {
            entry["scope"] = Value::Object(scope);
        }
        let entry: KeyFile = serde_json::from_value(entry).map_err(ApiError::internal)?;
        keys.entry(k.try_get("proxy_id")?).or_default().push(entry);
    }
    // The policies that enforce plans' quotas and budgets, per proxy, each
    // limited to its plan's subscribers; they run before the proxy's own
    // attachments, so a request over its plan's quota costs nothing more.
    let plan_rows = sqlx::query(
        "SELECT pl.id, pl.proxy_id, pl.attachments FROM plans pl \
         JOIN deployments d ON d.proxy_id = pl.proxy_id AND d.gateway_id = $1 AND d.status = 'Active' \
         WHERE pl.attachments <> '[]' ORDER BY pl.proxy_id, pl.created_at, pl.id",
    )
    .bind(gateway_id.to_owned())
    .fetch_all(&st.pool)
    .await?;
    let mut plan_policies: BTreeMap<String, Vec<PolicyAttachmentFile>> = BTreeMap::new();
    for r in &plan_rows {
        let plan: String = r.try_get("id")?;
        let mut atts: Vec<PolicyAttachmentFile> =
            serde_json::from_str(&r.try_get::<String, _>("attachments")?)
                .map_err(ApiError::internal)?;
        for a in &mut atts {
            a.plans = vec![plan.clone()];
        }
        plan_policies
            .entry(r.try_get("proxy_id")?)
            .or_default()
            .extend(atts);
    }
    let providers = crate::providers::load_all(st, &st.pool).await?;
    let mut secrets = BTreeMap::new();
    let mut used = HashSet::new();
    let mut proxies = Vec::new();
    let mut deployments = Vec::new();
    for d in &deps {
        let proxy_id: String = d.try_get("proxy_id")?;
        let spec: ProxySpec =
            serde_json::from_str(&d.try_get::<String, _>("spec")?).map_err(ApiError::internal)?;
        used.extend(spec.provider_ids().map(str::to_owned));
        let mut file = spec.to_file(&proxy_id, keys.remove(&proxy_id).unwrap_or_default())?;
        if let Some(mut plan_atts) = plan_policies.remove(&proxy_id) {
            plan_atts.append(&mut file.policies);
            file.policies = plan_atts;
        }
        proxies.push(file);
        deployments.push(DeployedProxy {
            deployment_id: d.try_get("id")?,
            revision: d.try_get("revision")?,
            proxy_id,
        });
    }
    let with_policies = proxies.iter().any(|p: &ProxyFile| !p.policies.is_empty());
    // The policies' embeddings endpoint reaches its provider with the
    // provider's key, handed over in `secrets` like every provider key.
    let embeddings = match &st.policy_embeddings {
        Some(e) if with_policies => policy_embeddings_url(e, &providers).map(|url| {
            used.insert(e.provider.clone());
            (e, url)
        }),
        _ => None,
    };
    // A provider deleted under a deployed revision cannot happen (delete
    // refuses); if the row is gone anyway the gateway reports the dangling
    // route and keeps its previous config.
    let provider_files: Vec<ProviderFile> = providers
        .values()
        .filter(|p| used.contains(&p.id))
        .map(|p| p.to_file(&mut secrets))
        .collect();
    let embeddings = embeddings.map(|(e, url)| PolicyEmbeddingsFile {
        model: e.model.clone(),
        api_key_env: provider_files
            .iter()
            .find(|p| p.name == e.provider)
            .and_then(|p| p.api_key_env.clone()),
        // The endpoint is the provider's own, which admins chose (plain
        // http included, as for its routes): gateways accept it as such.
        allow_insecure_http: needs_insecure_opt_in(&url).then_some(true),
        url,
        ca_file: None,
    });
    let config: FileConfig = serde_json::from_value(json!({})).map_err(ApiError::internal)?;
    // Gateways fetch attached policies from the same hub admin validated
    // their settings against.
    let hub = st
        .hub
        .base_url()
        .filter(|_| with_policies)
        .map(|url| PolicyHubFile {
            url: url.to_owned(),
            cache_dir: None,
            timeout_ms: None,
            // Gateways bring their own CA bundle (`--ca-file`).
            ca_file: None,
            // Admin took this URL at start only if it is https, loopback,
            // or its operator opted in to plain http: gateways follow.
            allow_insecure_http: needs_insecure_opt_in(url).then_some(true),
        });
    let policy_engine = (hub.is_some() || embeddings.is_some()).then(|| PolicyEngineFile {
        hub,
        embeddings,
        ..PolicyEngineFile::default()
    });
    let mut config = FileConfig {
        providers: provider_files,
        proxies,
        policy_engine,
        ..config
    };
    crate::gateway_settings::effective(st, gateway_id)
        .await?
        .apply(&mut config, &mut secrets);
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&config).map_err(ApiError::internal)?);
    hasher.update(serde_json::to_vec(&secrets).map_err(ApiError::internal)?);
    let version = hex::encode(&hasher.finalize()[..12]);
    Ok((
        ManagedConfig {
            version,
            config,
            secrets,
            deployments,
        },
        next_expiry,
    ))
}

/// The full `/embeddings` URL of the policies' embeddings provider, or
/// none (logged) when the provider is gone or speaks no OpenAI-style
/// embeddings with a bearer key (the policy engine's only form).
fn policy_embeddings_url(
    e: &PolicyEmbeddings,
    providers: &BTreeMap<String, Provider>,
) -> Option<String> {
    let Some(p) = providers.get(&e.provider) else {
        tracing::warn!(provider = %e.provider, "policy embeddings provider does not exist; policy_engine.embeddings omitted");
        return None;
    };
    let base = match p.kind {
        ProviderKind::Openai | ProviderKind::Mistral | ProviderKind::OpenaiCompatible => {
            p.spec.base_url.as_deref().or(p.kind.default_base_url())
        }
        _ => None,
    };
    match base {
        Some(b) => Some(format!("{}/embeddings", b.trim_end_matches('/'))),
        None => {
            tracing::warn!(provider = %e.provider, kind = p.kind.label(), "policy embeddings need an openai, mistral or openai-compatible provider with a base URL; policy_engine.embeddings omitted");
            None
        }
    }
}

/// Query of `GET /gateway/config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigQuery {
    /// Seconds to wait for a change when `If-None-Match` matches (0 to 60).
    pub wait: Option<u64>,
}

/// `GET /gateway/config`: the calling gateway's configuration. With
/// `If-None-Match: <version>` and `?wait=N`, answers as soon as the
/// configuration differs from that version, or 304 after N seconds.
pub async fn config(
    State(st): State<AppState>,
    gw: GatewayCaller,
    headers: HeaderMap,
    Query(q): Query<ConfigQuery>,
) -> ApiResult<Response> {
    let wait = q.wait.unwrap_or(0);
    if wait > 60 {
        return Err(ApiError::invalid("wait", "at most 60 seconds"));
    }
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Subscribe before reading, so a change between the read and the wait
    // is not missed.
    let mut changes = st.changes.subscribe();
    loop {
        let generation = db::generation(&st.pool).await?;
        let (cfg, next_expiry) = build_config(&st, &gw.id).await?;
        if known.as_deref() != Some(cfg.version.as_str()) {
            let etag = format!("\"{}\"", cfg.version);
            return Ok(([(header::ETAG, etag)], Json(cfg)).into_response());
        }
        // Wait for a change made here (notified at once), one made by
        // another admin replica (the generation, polled every second), a
        // key expiring, or the deadline.
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(StatusCode::NOT_MODIFIED.into_response());
            }
            let mut nap = (deadline - now).min(Duration::from_secs(1));
            if let Some(e) = next_expiry {
                let until = Duration::from_millis((e - now_ms()).max(0) as u64);
                nap = nap.min(until);
            }
            tokio::select! {
                _ = changes.changed() => break,
                _ = tokio::time::sleep(nap) => {
                    if next_expiry.is_some_and(|e| e <= now_ms()) {
                        break;
                    }
                    if db::generation(&st.pool).await? != generation {
                        break;
                    }
                }
            }
        }
    }
}

/// `POST /gateway/heartbeat`: the calling gateway is alive, serves
/// `version`, maybe failed to load a newer one, and authenticated requests
/// with the keys in `keys_used` (which sets their `last_used_at`).
pub async fn heartbeat(
    State(st): State<AppState>,
    gw: GatewayCaller,
    Body(hb): Body<Heartbeat>,
) -> ApiResult<StatusCode> {
    let now = now_ms();
    let error = match &hb.error {
        Some(e) => Some(serde_json::to_string(e).map_err(ApiError::internal)?),
        None => None,
    };
    let proxy_errors = match hb.proxy_errors.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&hb.proxy_errors).map_err(ApiError::internal)?),
    };
    let restart_required = match hb.restart_required.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&hb.restart_required).map_err(ApiError::internal)?),
    };
    // Heartbeats are not audited (machine traffic, every few seconds) and
    // do not bump the generation: they change no gateway's configuration
    // (`last_used_at` is not part of it).
    let mut tx = st.pool.begin().await?;
    sqlx::query(
        "UPDATE gateways SET last_seen_at = $1, config_version = $2, proxies_served = $3, last_error = $4, \
         last_error_at = CASE WHEN $4 IS NULL THEN last_error_at ELSE $1 END, proxy_errors = $6, \
         restart_required = $7 WHERE id = $5",
    )
    .bind(now)
    .bind(hb.version.clone())
    .bind(hb.proxies as i64)
    .bind(error)
    .bind(gw.id.clone())
    .bind(proxy_errors)
    .bind(restart_required)
    .execute(&mut *tx)
    .await?;
    // Key uses: only keys of proxies deployed to this gateway (a gateway
    // cannot touch other keys), only ever forward, never past admin's
    // clock. The map is sorted by hash, so concurrent heartbeats lock rows
    // in the same order.
    for (sha256, at) in &hb.keys_used {
        let at = (*at).min(now);
        if at <= 0 {
            continue;
        }
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE key_sha256 = $2 \
             AND (last_used_at IS NULL OR last_used_at < $1) \
             AND proxy_id IN (SELECT proxy_id FROM deployments WHERE gateway_id = $3 AND status = 'Active')",
        )
        .bind(at)
        .bind(sha256.to_ascii_lowercase())
        .bind(gw.id.clone())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE application_keys SET last_used_at = $1 WHERE key_sha256 = $2 \
             AND (last_used_at IS NULL OR last_used_at < $1) \
             AND application_id IN (SELECT s.application_id FROM subscriptions s JOIN deployments d \
             ON d.proxy_id = s.proxy_id AND d.gateway_id = $3 AND d.status = 'Active' WHERE s.status = 'active')",
        )
        .bind(at)
        .bind(sha256.to_ascii_lowercase())
        .bind(gw.id.clone())
        .execute(&mut *tx)
        .await?;
    }
    // Spend: once per batch (a gateway sends a batch again until it is
    // acknowledged), only for proxies deployed to this gateway, added to
    // what the same gateway reported before for that row.
    let mut fresh = true;
    if let Some(batch) = hb.spend_batch.as_deref().filter(|_| !hb.spend.is_empty()) {
        fresh = sqlx::query(
            "INSERT INTO spend_batches (gateway_id, batch_id, received_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(gw.id.clone())
        .bind(batch.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // A week is far longer than a gateway retries a batch.
        sqlx::query("DELETE FROM spend_batches WHERE gateway_id = $1 AND received_at < $2")
            .bind(gw.id.clone())
            .bind(now - 7 * 86_400_000)
            .execute(&mut *tx)
            .await?;
    }
    // The hour rows: this hour, by admin's clock (the gateway reports
    // days only); older than eight days they go.
    let hour = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:00")
        .to_string();
    if fresh && !hb.spend.is_empty() {
        let cutoff = chrono::DateTime::from_timestamp_millis(now - 8 * 86_400_000)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:00")
            .to_string();
        sqlx::query("DELETE FROM spend_hours WHERE hour < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
    }
    for r in hb.spend.iter().filter(|_| fresh) {
        if r.day.len() != 10 || !r.cost.is_finite() || r.cost < 0.0 {
            continue;
        }
        // The same row into the daily table and, with the hour after the
        // day ($6), into the hourly one.
        for (sql, hourly) in [
            (
                "INSERT INTO spend (gateway_id, proxy_id, key_id, model, day, requests, input_tokens, output_tokens, cost) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                 WHERE EXISTS (SELECT 1 FROM deployments WHERE gateway_id = $1 AND proxy_id = $2) \
                 ON CONFLICT (gateway_id, proxy_id, key_id, model, day) DO UPDATE SET \
                 requests = spend.requests + excluded.requests, input_tokens = spend.input_tokens + excluded.input_tokens, \
                 output_tokens = spend.output_tokens + excluded.output_tokens, cost = spend.cost + excluded.cost",
                false,
            ),
            (
                "INSERT INTO spend_hours (gateway_id, proxy_id, key_id, model, day, hour, requests, input_tokens, output_tokens, cost) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
                 WHERE EXISTS (SELECT 1 FROM deployments WHERE gateway_id = $1 AND proxy_id = $2) \
                 ON CONFLICT (gateway_id, proxy_id, key_id, model, hour) DO UPDATE SET \
                 requests = spend_hours.requests + excluded.requests, input_tokens = spend_hours.input_tokens + excluded.input_tokens, \
                 output_tokens = spend_hours.output_tokens + excluded.output_tokens, cost = spend_hours.cost + excluded.cost",
                true,
            ),
        ] {
            let mut q = sqlx::query(sql)
                .bind(gw.id.clone())
                .bind(r.proxy_id.clone())
                .bind(r.key_id.clone())
                .bind(r.model.clone())
                .bind(r.day.clone());
            if hourly {
                q = q.bind(hour.clone());
            }
            q.bind(r.requests.min(i64::MAX as u64) as i64)
                .bind(r.input_tokens.min(i64::MAX as u64) as i64)
                .bind(r.output_tokens.min(i64::MAX as u64) as i64)
                .bind(r.cost)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    if let Some(e) = &hb.error {
        tracing::warn!(gateway = %gw.name, version = %e.version, field = %e.field, message = %e.message, "gateway rejected a configuration");
    }
    for e in &hb.proxy_errors {
        tracing::warn!(gateway = %gw.name, proxy = %e.proxy_id, field = %e.field, message = %e.message, "gateway left a proxy out");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Why the gateway whose last heartbeat reported `proxy_errors` (JSON, as
/// stored) left `proxy_id` out, as `{field, message}` with the field
/// relative to the proxy; `None` when it serves it.
pub(crate) fn load_error(proxy_errors: Option<&str>, proxy_id: &str) -> Option<Value> {
    let errors: Vec<ProxyLoadFailure> = serde_json::from_str(proxy_errors?).ok()?;
    let e = errors.into_iter().find(|e| e.proxy_id == proxy_id)?;
    // `proxies[3].routes[0].deployment` names the gateway file's index,
    // which means nothing to the proxy's owner: keep what follows.
    let field = match e.field.strip_prefix("proxies[") {
        Some(rest) => rest.split_once("].").map_or(e.field.as_str(), |(_, f)| f),
        None => e.field.as_str(),
    };
    Some(json!({ "field": field, "message": e.message }))
}

/// Whether a URL is plain `http://` to another machine, which gateways
/// refuse unless told it is accepted.
fn needs_insecure_opt_in(url: &str) -> bool {
    portcullis_net::check_control_url(url, "", false, "").is_err()
}
