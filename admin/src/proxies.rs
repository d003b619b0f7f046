//! `/proxies`: a proxy is a base path on the gateways it is deployed to,
//! with its routes to providers, inbound formats, enabled resources and
//! attached policies. Every change stores a new immutable revision;
//! deployments pin a revision, so editing a proxy never changes what a
//! gateway serves until the new revision is deployed.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_config::proxy_rules;
use portcullis_config::{
    InboundKind, KeyFile, PromptGuardFile, ProviderKind, ProxyFile, Resource, RouteFile,
    RoutingFile, SemanticServiceFile, TopicFile, effective_base_url, url_origin,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::db::{audit, bump, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::{Owner, authorize};
use crate::policies::Attachment;
use crate::slug::{CONTEXT_RULE, normalise_context, slugify, valid_context, valid_url};

/// What a revision holds: the whole proxy as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxySpec {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub context: String,
    /// The provider of the default route (used when `routes` is empty).
    pub provider: String,
    pub inbound: Vec<InboundKind>,
    pub resources: Vec<Resource>,
    /// Routes; `provider` names a provider id. Empty: one route to `provider`.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_service: Option<SemanticServiceFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_guard: Option<PromptGuardFile>,
    pub track_stream_tokens: bool,
    /// Attached policies, in chain order.
    #[serde(default)]
    pub policies: Vec<Attachment>,
}

impl ProxySpec {
    /// Every provider id the proxy reaches.
    pub fn provider_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.provider.as_str())
            .chain(self.routes.iter().map(|r| r.provider.as_str()))
            .chain(self.semantic_service.iter().map(|s| s.provider.as_str()))
    }

    /// The routes the gateway gets.
    fn effective_routes(&self) -> Vec<RouteFile> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        match serde_json::from_value(json!({ "provider": self.provider })) {
            Ok(r) => vec![r],
            Err(_) => Vec::new(),
        }
    }

    /// The gateway's form of this proxy, with `keys`.
    pub fn to_file(&self, id: &str, keys: Vec<KeyFile>) -> ApiResult<ProxyFile> {
        // Built through JSON so fields the shared schema gains later (all
        // optional) need no change here.
        let mut v = json!({
            "name": self.name,
            "id": id,
            "context": self.context,
            "inbound": self.inbound,
            "resources": self.resources,
            "track_stream_tokens": self.track_stream_tokens,
            "routes": self.effective_routes(),
            "keys": keys,
        });
        if let Some(r) = &self.routing {
            v["routing"] = serde_json::to_value(r).map_err(ApiError::internal)?;
        }
        if let Some(s) = &self.semantic_service {
            v["semantic_service"] = serde_json::to_value(s).map_err(ApiError::internal)?;
        }
        if let Some(g) = &self.prompt_guard {
            v["prompt_guard"] = serde_json::to_value(g).map_err(ApiError::internal)?;
        }
        if !self.policies.is_empty() {
            crate::policies::add_to_proxy_file(&mut v, &self.policies)?;
        }
        // A proxy is served with all its guardrails or not at all: never
        // without attachments the schema could not carry.
        serde_json::from_value(v).map_err(|e| {
            ApiError::internal(format!(
                "proxy `{id}` cannot be expressed in the gateway configuration: {e}"
            ))
        })
    }
}

/// Body of `POST /proxies` (`name` required) and `PATCH /proxies/{id}`.
///
/// The optional settings (`description`, `routes`, `routing`,
/// `semantic_service`, `prompt_guard`) tell an absent field (`None`: keep
/// it) from JSON `null` (`Some(None)`: remove it; `routes` back to the one
/// default route).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyInput {
    pub name: Option<String>,
    pub provider: Option<String>,
    pub version: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    pub context: Option<String>,
    pub inbound: Option<Vec<InboundKind>>,
    pub resources: Option<Vec<Resource>>,
    #[serde(default, deserialize_with = "nullable")]
    pub routes: Option<Option<Vec<RouteFile>>>,
    #[serde(default, deserialize_with = "nullable")]
    pub routing: Option<Option<RoutingFile>>,
    #[serde(default, deserialize_with = "nullable")]
    pub semantic_service: Option<Option<SemanticServiceFile>>,
    #[serde(default, deserialize_with = "nullable")]
    pub prompt_guard: Option<Option<PromptGuardFile>>,
    pub track_stream_tokens: Option<bool>,
}

/// A present field: `Some(None)` for `null`, `Some(Some(v))` for a value
/// (an absent one is `None` through `#[serde(default)]`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A proxy row with its current revision.
pub struct Proxy {
    pub id: String,
    /// `None`: made before ownership existed; only admins reach it.
    pub owner: Option<Owner>,
    pub revision: i64,
    pub spec: ProxySpec,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Loads a proxy and its current spec.
pub async fn load<'e, E>(exec: E, id: &str) -> ApiResult<Option<Proxy>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT p.id, p.owner_team, p.owner_token, p.current_revision, p.created_at, p.updated_at, r.spec FROM proxies p \
         JOIN proxy_revisions r ON r.proxy_id = p.id AND r.revision = p.current_revision WHERE p.id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(exec)
    .await?;
    row.map(|r| proxy_from_row(&r)).transpose()
}

fn proxy_from_row(r: &sqlx::any::AnyRow) -> ApiResult<Proxy> {
    Ok(Proxy {
        id: r.try_get("id")?,
        owner: Owner::from_row(r)?,
        revision: r.try_get("current_revision")?,
        spec: serde_json::from_str(&r.try_get::<String, _>("spec")?).map_err(ApiError::internal)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Loads a proxy inside `tx`, 404 if absent.
pub async fn load_required(tx: &mut Transaction<'_, Any>, id: &str) -> ApiResult<Proxy> {
    load(&mut **tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", id))
}

async fn exists(tx: &mut Transaction<'_, Any>, id: String) -> ApiResult<bool> {
    let row = sqlx::query("SELECT id FROM providers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_some())
}

/// Only admins decide where provider credentials go. A route's `base_url`
/// sends the provider's stored key to another host, and `models: []` lets
/// the client's model string reach the provider's URL unchecked: a
/// developer token may keep what an admin set on a route (same provider,
/// same value), but may not set or change either. 403 naming the field.
pub fn check_destinations(
    caller: &Caller,
    old: Option<&ProxySpec>,
    new: &ProxySpec,
) -> ApiResult<()> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    let kept =
        |pred: &dyn Fn(&RouteFile) -> bool| old.is_some_and(|o| o.routes.iter().any(|r| pred(r)));
    for (i, r) in new.routes.iter().enumerate() {
        if let Some(url) = &r.base_url
            && !kept(&|o| o.provider == r.provider && o.base_url.as_ref() == Some(url))
        {
            return Err(ApiError::forbidden(
                "only an admin may set a route's base_url: it decides which host receives the provider's credentials; this token is a developer token",
            )
            .field(format!("routes[{i}].base_url")));
        }
        if r.models.as_ref().is_some_and(Vec::is_empty)
            && !kept(&|o| o.provider == r.provider && o.models.as_ref().is_some_and(Vec::is_empty))
        {
            return Err(ApiError::forbidden(
                "only an admin may open a route to any model (`models: []`); list the models this route serves, or leave `models` out for the provider's list",
            )
            .field(format!("routes[{i}].models")));
        }
    }
    Ok(())
}

/// The gateway's rule (`build_route`): a route that overrides its
/// provider's base URL and uses the provider's stored credentials must stay
/// on the provider's own origin, or the credentials would go to another
/// host. Refused here too, so admin never accepts what gateways refuse.
async fn credentials_stay_home(
    tx: &mut Transaction<'_, Any>,
    i: usize,
    provider: &str,
    route_url: &str,
) -> ApiResult<()> {
    let Some(row) = sqlx::query("SELECT kind, spec, credentials FROM providers WHERE id = $1")
        .bind(provider.to_owned())
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(()); // the caller names the missing provider
    };
    if row.try_get::<Option<String>, _>("credentials")?.is_none() {
        return Ok(());
    }
    let kind: ProviderKind = serde_json::from_value(json!(row.try_get::<String, _>("kind")?))
        .map_err(ApiError::internal)?;
    let spec: Value =
        serde_json::from_str(&row.try_get::<String, _>("spec")?).map_err(ApiError::internal)?;
    let home = effective_base_url(kind, spec["base_url"].as_str(), spec["region"].as_str());
    if url_origin(route_url).is_none()
        || url_origin(route_url) != home.as_deref().and_then(url_origin)
    {
        return Err(ApiError::invalid(
            format!("routes[{i}].base_url"),
            format!(
                "sends provider `{provider}`'s credentials to another host than the provider's own ({}); give this route its own `api_key`, or create a provider for that host",
                home.as_deref().unwrap_or("none")
            ),
        ));
    }
    Ok(())
}

/// Checks a spec against the providers that exist, naming the field.
pub async fn validate(tx: &mut Transaction<'_, Any>, spec: &ProxySpec) -> ApiResult<()> {
    if spec.version.trim().is_empty() {
        return Err(ApiError::invalid("version", "must not be empty"));
    }
    if !valid_context(&spec.context) {
        return Err(ApiError::invalid("context", CONTEXT_RULE));
    }
    if spec.inbound.is_empty() {
        return Err(ApiError::invalid(
            "inbound",
            "enable at least one inbound format",
        ));
    }
    if spec.resources.is_empty() {
        return Err(ApiError::invalid(
            "resources",
            "enable at least one resource",
        ));
    }
    if !exists(tx, spec.provider.clone()).await? {
        return Err(ApiError::invalid(
            "provider",
            format!("no provider `{}`", spec.provider),
        ));
    }
    for (i, r) in spec.routes.iter().enumerate() {
        if !exists(tx, r.provider.clone()).await? {
            return Err(ApiError::invalid(
                format!("routes[{i}].provider"),
                format!("no provider `{}`", r.provider),
            ));
        }
        if let Some(k) = &r.api_key
            && k.env.is_some()
        {
            return Err(ApiError::invalid(
                format!("routes[{i}].api_key.env"),
                "managed gateways take provider keys from the provider's credentials or a request header",
            ));
        }
        if let Some(u) = &r.base_url
            && !valid_url(u)
        {
            return Err(ApiError::invalid(
                format!("routes[{i}].base_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(u) = &r.base_url
            && r.api_key.is_none()
        {
            credentials_stay_home(tx, i, &r.provider, u).await?;
        }
    }
    if let Some(s) = &spec.semantic_service {
        let kind = sqlx::query("SELECT kind FROM providers WHERE id = $1")
            .bind(s.provider.clone())
            .fetch_optional(&mut **tx)
            .await?;
        let kind: String = match kind {
            Some(r) => r.try_get("kind")?,
            None => {
                return Err(ApiError::invalid(
                    "semantic_service.provider",
                    format!("no provider `{}`", s.provider),
                ));
            }
        };
        if kind == "anthropic" || kind == "bedrock" {
            return Err(ApiError::invalid(
                "semantic_service.provider",
                format!(
                    "provider type `{kind}` offers no embeddings; use openai, azure-openai, mistral, gemini or openai-compatible"
                ),
            ));
        }
    }
    // Managed gateways read no local files: utterances come inline or by
    // upload.
    let topics = spec
        .routes
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| {
            r.topics
                .iter()
                .enumerate()
                .map(move |(ti, t)| (format!("routes[{ri}].topics[{ti}]"), t))
        })
        .chain(spec.prompt_guard.iter().flat_map(|g| {
            g.deny
                .iter()
                .enumerate()
                .map(|(ti, t)| (format!("prompt_guard.deny[{ti}]"), t))
        }));
    for (path, topic) in topics {
        if topic.utterances_file.is_some() {
            return Err(ApiError::invalid(
                format!("{path}.utterances_file"),
                "give the utterances inline or upload them (PUT .../topics/{topic}/utterances); managed gateways read no local files",
            ));
        }
    }
    // The gateway's own rules, on the form gateways get: admin refuses
    // exactly what they would (tests/e2e/admin.rs,
    // admin_and_the_gateway_refuse_the_same_proxies).
    let file = spec.to_file(&slugify(&spec.name), Vec::new())?;
    proxy_rules::check(&file).map_err(|e| ApiError::invalid(e.field, e.message))
}

/// Stores `spec` as the proxy's next revision and makes it current.
pub async fn save_revision(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    current: i64,
    spec: &ProxySpec,
    actor: &str,
) -> ApiResult<i64> {
    let next = current + 1;
    let now = now_ms();
    sqlx::query("INSERT INTO proxy_revisions (proxy_id, revision, spec, created_at, created_by) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.to_owned())
        .bind(next)
        .bind(serde_json::to_string(spec).map_err(ApiError::internal)?)
        .bind(now)
        .bind(actor.to_owned())
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE proxies SET current_revision = $1, name = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(next)
    .bind(spec.name.clone())
    .bind(now)
    .bind(id.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(next)
}

fn apply(spec: &mut ProxySpec, input: ProxyInput) {
    if let Some(v) = input.name {
        spec.name = v.trim().to_owned();
    }
    if let Some(v) = input.provider {
        spec.provider = v;
    }
    if let Some(v) = input.version {
        spec.version = v.trim().to_owned();
    }
    if let Some(v) = input.description {
        spec.description = v.filter(|d| !d.is_empty());
    }
    if let Some(v) = input.context {
        spec.context = normalise_context(&v);
    }
    if let Some(v) = input.inbound {
        spec.inbound = v;
    }
    if let Some(v) = input.resources {
        spec.resources = v;
    }
    if let Some(v) = input.routes {
        spec.routes = v.unwrap_or_default();
    }
    if let Some(v) = input.routing {
        spec.routing = v;
    }
    if let Some(v) = input.semantic_service {
        spec.semantic_service = v;
    }
    if let Some(v) = input.prompt_guard {
        spec.prompt_guard = v;
    }
    if let Some(v) = input.track_stream_tokens {
        spec.track_stream_tokens = v;
    }
}

/// The API view of a proxy, with where it is deployed and its invoke URLs.
pub async fn view(st: &AppState, p: &Proxy) -> ApiResult<Value> {
    let rows = sqlx::query(
        "SELECT d.id, d.gateway_id, d.revision, d.context, d.deployed_at, g.name, g.url FROM deployments d \
         JOIN gateways g ON g.id = d.gateway_id WHERE d.proxy_id = $1 AND d.status = 'Active' ORDER BY d.seq DESC",
    )
    .bind(p.id.clone())
    .fetch_all(&st.pool)
    .await?;
    let mut gateways = Vec::new();
    for r in &rows {
        let url: String = r.try_get("url")?;
        let context: String = r.try_get("context")?;
        let base = invoke_base(&url, &context);
        gateways.push(json!({
            "gateway_id": r.try_get::<String, _>("gateway_id")?,
            "gateway": r.try_get::<String, _>("name")?,
            "deployment_id": r.try_get::<String, _>("id")?,
            "revision": r.try_get::<i64, _>("revision")?,
            "deployed_at": rfc3339(r.try_get("deployed_at")?),
            "base_url": base,
            "invoke_url": format!("{base}/chat/completions"),
        }));
    }
    let s = &p.spec;
    Ok(json!({
        "id": p.id,
        "owner": p.owner,
        "name": s.name,
        "version": s.version,
        "description": s.description,
        "context": s.context,
        "provider": s.provider,
        "inbound": s.inbound,
        "resources": s.resources,
        "routes": s.routes,
        "routing": s.routing,
        "semantic_service": s.semantic_service,
        "prompt_guard": s.prompt_guard,
        "track_stream_tokens": s.track_stream_tokens,
        "policies": s.policies,
        "revision": p.revision,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "deployed_gateways": gateways,
    }))
}

/// `{gateway-url}{context}` without a doubled or trailing slash.
pub fn invoke_base(gateway_url: &str, context: &str) -> String {
    let g = gateway_url.trim_end_matches('/');
    if context == "/" {
        g.to_owned()
    } else {
        format!("{g}{context}")
    }
}

/// `POST /proxies`.
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Body(input): Body<ProxyInput>,
) -> ApiResult<impl IntoResponse> {
    let name = match &input.name {
        Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
        Some(_) => return Err(ApiError::invalid("name", "must not be empty")),
        None => return Err(ApiError::invalid("name", "missing field `name`")),
    };
    let id = slugify(&name);
    if id.is_empty() {
        return Err(ApiError::invalid("name", "must contain a letter or digit"));
    }
    let mut tx = st.pool.begin().await?;
    let provider = match &input.provider {
        Some(p) => p.clone(),
        None => {
            // The product default: the most recently updated provider.
            let row = sqlx::query("SELECT id FROM providers ORDER BY updated_seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) => r.try_get("id")?,
                None => {
                    return Err(ApiError::invalid(
                        "provider",
                        "no provider exists yet; create one first",
                    ));
                }
            }
        }
    };
    let mut spec = ProxySpec {
        name: name.clone(),
        version: "v1.0".into(),
        description: None,
        context: format!("/{id}"),
        provider,
        inbound: vec![InboundKind::Openai],
        resources: vec![
            Resource::ChatCompletions,
            Resource::Embeddings,
            Resource::Models,
            Resource::Responses,
            Resource::Completions,
            Resource::Moderations,
        ],
        routes: Vec::new(),
        routing: None,
        semantic_service: None,
        prompt_guard: None,
        track_stream_tokens: true,
        policies: Vec::new(),
    };
    apply(&mut spec, input);
    check_destinations(&caller, None, &spec)?;
    validate(&mut tx, &spec).await?;
    let clash = sqlx::query("SELECT id, name FROM proxies WHERE id = $1 OR name = $2")
        .bind(id.clone())
        .bind(name.clone())
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(r) = clash {
        let other: String = r.try_get("name")?;
        return Err(ApiError::conflict(
            "name",
            format!("proxy `{other}` already has the id `{id}`; choose another name"),
        ));
    }
    let seq = bump(&mut tx).await?;
    let now = now_ms();
    // The creator's team owns the proxy, or the creating token when it has
    // no team.
    let owner = caller.owner();
    let (team, token) = owner.columns();
    sqlx::query("INSERT INTO proxies (id, name, current_revision, created_at, updated_at, owner_team, owner_token) VALUES ($1, $2, 0, $3, $3, $4, $5)")
        .bind(id.clone())
        .bind(name.clone())
        .bind(now)
        .bind(team)
        .bind(token)
        .execute(&mut *tx)
        .await?;
    save_revision(&mut tx, &id, 0, &spec, &caller.actor()).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "proxy.create",
        &format!("proxies/{id}"),
        Some(json!({"name": name, "revision": 1, "owner": owner})),
    )
    .await?;
    let p = load_required(&mut tx, &id).await?;
    tx.commit().await?;
    st.changed();
    Ok((StatusCode::CREATED, Json(view(&st, &p).await?)))
}

/// `GET /proxies`: every proxy for admins, the caller's own for developers.
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let visible = caller.visible_proxies(1);
    let sql = format!(
        "SELECT p.id, p.owner_team, p.owner_token, p.current_revision, p.created_at, p.updated_at, r.spec FROM proxies p \
         JOIN proxy_revisions r ON r.proxy_id = p.id AND r.revision = p.current_revision {} ORDER BY p.created_at, p.id",
        visible
            .as_ref()
            .map(|(cond, _)| format!("WHERE {cond}"))
            .unwrap_or_default()
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some((_, value)) = visible {
        query = query.bind(value);
    }
    let rows = query.fetch_all(&st.pool).await?;
    let mut items = Vec::new();
    for r in &rows {
        items.push(view(&st, &proxy_from_row(r)?).await?);
    }
    Ok(Json(json!({ "items": items })))
}

/// `GET /proxies/{id}`.
pub async fn get(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "proxy.get").await?;
    let p = load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    Ok(Json(view(&st, &p).await?))
}

/// `PATCH /proxies/{id}`: a new revision.
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<ProxyInput>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "proxy.update").await?;
    let mut tx = st.pool.begin().await?;
    let p = load_required(&mut tx, &id).await?;
    if let Some(n) = &input.name {
        if n.trim().is_empty() {
            return Err(ApiError::invalid("name", "must not be empty"));
        }
        let clash = sqlx::query("SELECT id FROM proxies WHERE name = $1 AND id <> $2")
            .bind(n.trim().to_owned())
            .bind(id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(ApiError::conflict(
                "name",
                format!("a proxy named `{}` exists", n.trim()),
            ));
        }
    }
    let mut spec = p.spec.clone();
    apply(&mut spec, input);
    let target = format!("proxies/{id}");
    commit_change(&st, tx, &caller, p, spec, "proxy.update", &target).await
}

/// Validates `spec`, the edited spec of `p`, and stores it as `p`'s next
/// revision, audited as `action` on `target`, then wakes the gateways. An
/// unchanged spec makes no revision. Answers the proxy's view.
async fn commit_change(
    st: &AppState,
    mut tx: Transaction<'_, Any>,
    caller: &Caller,
    p: Proxy,
    spec: ProxySpec,
    action: &str,
    target: &str,
) -> ApiResult<Json<Value>> {
    check_destinations(caller, Some(&p.spec), &spec)?;
    validate(&mut tx, &spec).await?;
    if spec == p.spec {
        // Nothing changed: no new revision.
        tx.rollback().await?;
        return Ok(Json(view(st, &p).await?));
    }
    let seq = bump(&mut tx).await?;
    let rev = save_revision(&mut tx, &p.id, p.revision, &spec, &caller.actor()).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        action,
        target,
        Some(json!({"revision": rev})),
    )
    .await?;
    let p = load_required(&mut tx, &p.id).await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(view(st, &p).await?))
}

/// The topic named `name` in `spec`: a route's topic or a denied topic.
fn topic_mut<'a>(spec: &'a mut ProxySpec, name: &str) -> Option<&'a mut TopicFile> {
    let guard = spec.prompt_guard.iter_mut().flat_map(|g| g.deny.iter_mut());
    spec.routes
        .iter_mut()
        .flat_map(|r| r.topics.iter_mut())
        .chain(guard)
        .find(|t| t.name == name)
}

/// Utterances of a plain-text upload, by the gateway's `utterances_file`
/// rule: one per line, trimmed; blank lines and lines starting with `#`
/// skipped; duplicates dropped (the gateway drops them too).
pub fn parse_utterances(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| seen.insert(*l))
        .map(str::to_owned)
        .collect()
}

/// `GET /proxies/{id}/topics/{topic}/utterances`: the topic's utterances
/// as `text/plain`, one per line.
pub async fn get_utterances(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, topic)): Path<(String, String)>,
) -> ApiResult<Response> {
    authorize(&st, &caller, &id, "proxy.topic.get").await?;
    let mut p = load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let t = topic_mut(&mut p.spec, &topic).ok_or_else(|| ApiError::not_found("topic", &topic))?;
    let mut text = t.utterances.join("\n");
    text.push('\n');
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `PUT /proxies/{id}/topics/{topic}/utterances`: replaces the topic's
/// utterances with those of a `text/plain` body (see [`parse_utterances`]);
/// a new revision.
pub async fn put_utterances(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let is_text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    if !is_text {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the utterances as text/plain, one per line",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    authorize(&st, &caller, &id, "proxy.topic.utterances").await?;
    let utterances = parse_utterances(text);
    if utterances.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "no utterances: give one per line (blank lines and lines starting with `#` are skipped)",
        ));
    }
    let mut tx = st.pool.begin().await?;
    let p = load_required(&mut tx, &id).await?;
    let mut spec = p.spec.clone();
    let t = topic_mut(&mut spec, &topic).ok_or_else(|| ApiError::not_found("topic", &topic))?;
    t.utterances = utterances;
    t.utterances_file = None;
    let target = format!("proxies/{id}/topics/{topic}");
    commit_change(&st, tx, &caller, p, spec, "proxy.topic.utterances", &target).await
}

/// `DELETE /proxies/{id}`: refused while deployed; removes its keys,
/// revisions and deployment history.
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&st, &caller, &id, "proxy.delete").await?;
    let mut tx = st.pool.begin().await?;
    load_required(&mut tx, &id).await?;
    let active =
        sqlx::query("SELECT gateway_id FROM deployments WHERE proxy_id = $1 AND status = 'Active'")
            .bind(id.clone())
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(r) = active {
        let gw: String = r.try_get("gateway_id")?;
        return Err(ApiError::conflict(
            "id",
            format!("the proxy is deployed on gateway `{gw}`; stop the deployment first"),
        ));
    }
    let seq = bump(&mut tx).await?;
    for q in [
        "DELETE FROM api_keys WHERE proxy_id = $1",
        "DELETE FROM subscriptions WHERE proxy_id = $1",
        "DELETE FROM plans WHERE proxy_id = $1",
        "DELETE FROM deployments WHERE proxy_id = $1",
        "DELETE FROM proxy_revisions WHERE proxy_id = $1",
        "DELETE FROM proxies WHERE id = $1",
    ] {
        sqlx::query(q).bind(id.clone()).execute(&mut *tx).await?;
    }
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "proxy.delete",
        &format!("proxies/{id}"),
        None,
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /proxies/{id}/revisions`: newest first.
pub async fn revisions(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "proxy.revisions").await?;
    let p = load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let rows = sqlx::query("SELECT revision, spec, created_at, created_by FROM proxy_revisions WHERE proxy_id = $1 ORDER BY revision DESC")
        .bind(id)
        .fetch_all(&st.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            let rev: i64 = r.try_get("revision")?;
            Ok(json!({
                "revision": rev,
                "current": rev == p.revision,
                "created_at": rfc3339(r.try_get("created_at")?),
                "created_by": r.try_get::<String, _>("created_by")?,
                "spec": serde_json::from_str::<Value>(&r.try_get::<String, _>("spec")?).map_err(ApiError::internal)?,
            }))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// Loads the spec of one revision.
pub async fn revision_spec<'e, E>(exec: E, id: &str, revision: i64) -> ApiResult<ProxySpec>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT spec FROM proxy_revisions WHERE proxy_id = $1 AND revision = $2")
        .bind(id.to_owned())
        .bind(revision)
        .fetch_one(exec)
        .await?;
    serde_json::from_str(&row.try_get::<String, _>("spec")?).map_err(ApiError::internal)
}
