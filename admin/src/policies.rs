//! Policies on a proxy: the catalogue comes from the policy hub; attaching
//! one validates its settings against the JSON Schema the hub publishes
//! for that version (422 naming the JSON pointer of a bad setting). Each
//! attach, update or detach is a new proxy revision.
//!
//! An attachment pins the module: admin records the SHA-256 the hub's
//! manifest gives for the exact version when it is attached (or its
//! version changed), and gateways refuse a module with any other digest,
//! so neither the hub nor the network between hub and gateway can change
//! the code a proxy runs after it was attached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portcullis_types::policy::{PolicyPhase, PolicyVersion, valid_policy_name, valid_sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::db::{audit, bump, new_id};
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::authorize;
use crate::proxies::{load_required, save_revision, view};

/// What happens to a request when the policy fails (traps, times out):
/// the gateway's own type, so an attachment reaches gateways unchanged.
pub use portcullis_config::OnError;

/// A policy attached to a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub id: String,
    pub name: String,
    pub version: String,
    /// The module's SHA-256 (hex), from the hub's manifest of `version`
    /// when attached. `None` only for attachments made before pinning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub settings: Value,
    /// Phases to run in; default: every phase the policy declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PolicyPhase>,
    /// Position in the chain (ascending; ties keep attachment order).
    pub order: i64,
    pub on_error: OnError,
}

/// Why the hub could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the policy hub has no {0}")]
    NotFound(String),
    #[error("the policy hub is unreachable: {0}")]
    Unreachable(String),
    #[error("the policy hub answered badly: {0}")]
    Bad(String),
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match &e {
            HubError::NotFound(_) => ApiError::invalid("name", e.to_string()),
            HubError::Unreachable(_) | HubError::Bad(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hub_unavailable",
                format!(
                    "{e}; settings cannot be validated, so nothing was attached. Try again when the hub is up."
                ),
            ),
        }
    }
}

/// The policy hub, as admin needs it.
#[async_trait]
pub trait PolicyHub: Send + Sync {
    /// One published version with its settings schema.
    async fn version(&self, name: &str, version: &str) -> Result<PolicyVersion, HubError>;
    /// The catalogue (the hub's `GET /api/v1/policies` body, passed on).
    async fn catalogue(&self) -> Result<Value, HubError>;
    /// One policy with its versions (the hub's `GET /api/v1/policies/{name}`).
    async fn policy(&self, name: &str) -> Result<Value, HubError> {
        Err(HubError::NotFound(format!("policy `{name}`")))
    }
    /// Where gateways fetch attached policies from, if they can.
    fn base_url(&self) -> Option<&str> {
        None
    }
}

/// The hub over HTTP.
pub struct HttpHub {
    base: String,
    client: reqwest::Client,
}

impl HttpHub {
    /// A client for the hub at `base_url`, trusting what `tls` says.
    pub fn new(
        base_url: &str,
        tls: &portcullis_net::ClientTls,
    ) -> Result<HttpHub, portcullis_net::TlsError> {
        Ok(HttpHub {
            base: base_url.trim_end_matches('/').to_owned(),
            client: tls.builder()?.timeout(Duration::from_secs(5)).build()?,
        })
    }

    async fn get(&self, path: &str, what: &str) -> Result<Value, HubError> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| {
                HubError::Unreachable(format!(
                    "{}: {}",
                    self.base,
                    portcullis_net::error_chain(&e)
                ))
            })?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(HubError::NotFound(what.to_owned()));
        }
        if !r.status().is_success() {
            return Err(HubError::Bad(format!("status {} for {path}", r.status())));
        }
        r.json().await.map_err(|e| HubError::Bad(e.to_string()))
    }
}

#[async_trait]
impl PolicyHub for HttpHub {
    fn base_url(&self) -> Option<&str> {
        Some(&self.base)
    }

    async fn version(&self, name: &str, version: &str) -> Result<PolicyVersion, HubError> {
        let v = self
            .get(
                &format!("/api/v1/policies/{name}/versions/{version}"),
                &format!("policy `{name}` version `{version}`"),
            )
            .await?;
        serde_json::from_value(v).map_err(|e| HubError::Bad(format!("manifest: {e}")))
    }

    async fn catalogue(&self) -> Result<Value, HubError> {
        self.get("/api/v1/policies", "policy catalogue").await
    }

    async fn policy(&self, name: &str) -> Result<Value, HubError> {
        self.get(
            &format!("/api/v1/policies/{name}"),
            &format!("policy `{name}`"),
        )
        .await
    }
}

/// Used when no hub is configured: attaching is a clear 503.
pub struct NoHub;

#[async_trait]
impl PolicyHub for NoHub {
    async fn version(&self, _: &str, _: &str) -> Result<PolicyVersion, HubError> {
        Err(HubError::Unreachable(
            "no hub is configured (start admin with --hub-url)".into(),
        ))
    }
    async fn catalogue(&self) -> Result<Value, HubError> {
        self.version("", "").await.map(|_| Value::Null)
    }
}

/// A shared hub client.
pub type Hub = Arc<dyn PolicyHub>;

/// Validates `settings` against the version's schema; 422 naming the JSON
/// pointer of the first bad setting.
pub fn check_settings(pv: &PolicyVersion, settings: &Value) -> ApiResult<()> {
    let validator = jsonschema::validator_for(&pv.manifest.settings_schema).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "hub_bad_schema",
            format!(
                "the hub's settings schema for {}@{} does not compile: {e}",
                pv.manifest.name, pv.manifest.version
            ),
        )
    })?;
    if let Some(err) = validator.iter_errors(settings).next() {
        let pointer = err.instance_path().to_string();
        return Err(ApiError::invalid(
            format!("settings{pointer}"),
            format!(
                "settings at `{}`: {err}",
                if pointer.is_empty() { "/" } else { &pointer }
            ),
        ));
    }
    Ok(())
}

/// Puts the attachments into a proxy's gateway config (`policies`), when
/// the shared schema has that field; until the policy engine lands the
/// attachments are kept in revisions only.
pub fn add_to_proxy_file(v: &mut Value, attachments: &[Attachment]) -> ApiResult<()> {
    if attachments.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&Attachment> = attachments.iter().collect();
    sorted.sort_by_key(|a| a.order);
    let entries: Vec<Value> = sorted
        .iter()
        .map(|a| {
            // The gateway runs each policy in the phases its manifest
            // declares; the attachment's phase is kept in the admin record.
            let mut e = json!({
                "name": a.name,
                "version": a.version,
                "settings": a.settings,
                "on_error": a.on_error,
            });
            if let Some(d) = &a.sha256 {
                e["sha256"] = json!(d);
            }
            e
        })
        .collect();
    v["policies"] = Value::Array(entries);
    Ok(())
}

/// Body of `POST /proxies/{id}/policies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachInput {
    pub name: String,
    pub version: String,
    /// The module digest the caller expects; refused unless the hub's
    /// manifest for `version` has it.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub settings: Option<Value>,
    #[serde(default)]
    pub phase: Option<PolicyPhase>,
    #[serde(default)]
    pub order: Option<i64>,
    #[serde(default)]
    pub on_error: Option<OnError>,
}

/// Body of `PATCH /proxies/{id}/policies/{attachment}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentPatch {
    pub version: Option<String>,
    pub settings: Option<Value>,
    pub phase: Option<PolicyPhase>,
    pub order: Option<i64>,
    pub on_error: Option<OnError>,
}

pub(crate) async fn resolve(
    st: &AppState,
    name: &str,
    version: &str,
    phase: Option<PolicyPhase>,
) -> ApiResult<PolicyVersion> {
    if !valid_policy_name(name) {
        return Err(ApiError::invalid(
            "name",
            "lowercase letters, digits and hyphens",
        ));
    }
    if version.trim().is_empty() {
        return Err(ApiError::invalid("version", "must not be empty"));
    }
    let pv = st.hub.version(name, version).await.map_err(|e| match e {
        HubError::NotFound(_) => ApiError::invalid("version", e.to_string()),
        other => other.into(),
    })?;
    if let Some(p) = phase
        && !pv.manifest.phases.contains(&p)
    {
        return Err(ApiError::invalid(
            "phase",
            format!(
                "{name}@{version} runs in {:?}, not {p:?}",
                pv.manifest.phases
            ),
        ));
    }
    Ok(pv)
}

/// The module digest of a resolved version, as attachments pin it.
pub(crate) fn pinned_digest(pv: &PolicyVersion) -> ApiResult<String> {
    pv.module_sha256()
        .map(str::to_ascii_lowercase)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "hub_bad_manifest", e))
}

/// `GET /policies`: what can be attached, from the hub.
pub async fn catalogue(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(st.hub.catalogue().await?))
}

/// 404 for a name or version that cannot be one, before it is put in a
/// hub URL.
fn check_ref(name: &str, version: Option<&str>) -> ApiResult<()> {
    if !valid_policy_name(name) {
        return Err(ApiError::not_found("policy", name));
    }
    // Semantic versions only use these characters; anything else (a
    // slash, a dot-dot segment) must not reach the hub's URL.
    if let Some(v) = version
        && (v.is_empty()
            || v.len() > 64
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c)))
    {
        return Err(ApiError::not_found("policy version", v));
    }
    Ok(())
}

/// `GET /policies/{name}`: one policy of the hub's catalogue with its
/// published versions.
pub async fn policy(
    State(st): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    check_ref(&name, None)?;
    match st.hub.policy(&name).await {
        Err(HubError::NotFound(_)) => Err(ApiError::not_found("policy", &name)),
        r => Ok(Json(r?)),
    }
}

/// `GET /policies/{name}/versions/{version}`: one version's manifest as
/// the hub publishes it: the settings JSON Schema, their defaults and the
/// docs (markdown) that forms and attachments are made from.
pub async fn version(
    State(st): State<AppState>,
    _caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<PolicyVersion>> {
    check_ref(&name, Some(&version))?;
    match st.hub.version(&name, &version).await {
        Err(HubError::NotFound(_)) => Err(ApiError::not_found(
            "policy version",
            &format!("{name}@{version}"),
        )),
        r => Ok(Json(r?)),
    }
}

/// `GET /proxies/{id}/policies`: in chain order.
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "policy.list").await?;
    let p = crate::proxies::load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let mut items = p.spec.policies.clone();
    items.sort_by_key(|a| a.order);
    Ok(Json(json!({ "items": items, "revision": p.revision })))
}

/// `POST /proxies/{id}/policies`.
pub async fn attach(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<AttachInput>,
) -> ApiResult<impl IntoResponse> {
    authorize(&st, &caller, &id, "policy.attach").await?;
    // The hub is asked before the transaction opens: no database lock is
    // held across a network call.
    let pv = resolve(&st, &input.name, &input.version, input.phase).await?;
    let settings = input
        .settings
        .unwrap_or_else(|| pv.manifest.defaults.clone());
    check_settings(&pv, &settings)?;
    let sha256 = pinned_digest(&pv)?;
    if let Some(want) = &input.sha256 {
        if !valid_sha256_hex(want) {
            return Err(ApiError::invalid("sha256", "64 hexadecimal digits"));
        }
        if !want.eq_ignore_ascii_case(&sha256) {
            return Err(ApiError::invalid(
                "sha256",
                format!(
                    "the hub's module for {}@{} is sha256:{sha256}, not {want}",
                    input.name, input.version
                ),
            ));
        }
    }
    let mut tx = st.pool.begin().await?;
    let p = load_required(&mut tx, &id).await?;
    let order = input.order.unwrap_or_else(|| {
        p.spec
            .policies
            .iter()
            .map(|a| a.order + 1)
            .max()
            .unwrap_or(1)
    });
    let att = Attachment {
        id: new_id("att"),
        name: input.name,
        version: input.version,
        sha256: Some(sha256.clone()),
        settings,
        phase: input.phase,
        order,
        on_error: input.on_error.unwrap_or_default(),
    };
    let mut spec = p.spec.clone();
    spec.policies.push(att.clone());
    let seq = bump(&mut tx).await?;
    let rev = save_revision(&mut tx, &id, p.revision, &spec, &caller.actor()).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "policy.attach",
        &format!("proxies/{id}/policies/{}", att.id),
        Some(json!({"policy": format!("{}@{}", att.name, att.version), "sha256": sha256, "revision": rev})),
    )
    .await?;
    tx.commit().await?;
    st.changed();
    let mut out = serde_json::to_value(&att).map_err(ApiError::internal)?;
    out["revision"] = json!(rev);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `PATCH /proxies/{id}/policies/{attachment}`.
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, att_id)): Path<(String, String)>,
    Body(input): Body<AttachmentPatch>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "policy.update").await?;
    let current = crate::proxies::load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let old = current
        .spec
        .policies
        .iter()
        .find(|a| a.id == att_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("policy attachment", &att_id))?;
    let mut new = old.clone();
    if let Some(v) = input.version {
        new.version = v;
    }
    if let Some(p) = input.phase {
        new.phase = Some(p);
    }
    if let Some(o) = input.order {
        new.order = o;
    }
    if let Some(e) = input.on_error {
        new.on_error = e;
    }
    if let Some(s) = input.settings {
        new.settings = s;
    }
    if new.version != old.version
        || new.settings != old.settings
        || new.phase != old.phase
        || old.sha256.is_none()
    {
        let pv = resolve(&st, &new.name, &new.version, new.phase).await?;
        check_settings(&pv, &new.settings)?;
        let digest = pinned_digest(&pv)?;
        match &old.sha256 {
            // Same version, another module: the hub changed what it serves
            // under a published version. Keep the pin; say so.
            Some(pinned) if new.version == old.version && !pinned.eq_ignore_ascii_case(&digest) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "hub_digest_changed",
                    format!(
                        "the hub now serves sha256:{digest} for {}@{}, but sha256:{pinned} was pinned when it was attached; nothing was changed. Detach and attach again to accept the new module.",
                        new.name, new.version
                    ),
                ));
            }
            _ => new.sha256 = Some(digest),
        }
    }
    let mut tx = st.pool.begin().await?;
    let p = load_required(&mut tx, &id).await?;
    let mut spec = p.spec.clone();
    let Some(slot) = spec.policies.iter_mut().find(|a| a.id == att_id) else {
        return Err(ApiError::not_found("policy attachment", &att_id));
    };
    *slot = new.clone();
    let seq = bump(&mut tx).await?;
    let rev = save_revision(&mut tx, &id, p.revision, &spec, &caller.actor()).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "policy.update",
        &format!("proxies/{id}/policies/{att_id}"),
        Some(json!({"revision": rev, "sha256": new.sha256})),
    )
    .await?;
    tx.commit().await?;
    st.changed();
    let mut out = serde_json::to_value(&new).map_err(ApiError::internal)?;
    out["revision"] = json!(rev);
    Ok(Json(out))
}

/// `DELETE /proxies/{id}/policies/{attachment}`.
pub async fn detach(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, att_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "policy.detach").await?;
    let mut tx = st.pool.begin().await?;
    let p = load_required(&mut tx, &id).await?;
    let mut spec = p.spec.clone();
    let before = spec.policies.len();
    spec.policies.retain(|a| a.id != att_id);
    if spec.policies.len() == before {
        return Err(ApiError::not_found("policy attachment", &att_id));
    }
    let seq = bump(&mut tx).await?;
    let rev = save_revision(&mut tx, &id, p.revision, &spec, &caller.actor()).await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "policy.detach",
        &format!("proxies/{id}/policies/{att_id}"),
        Some(json!({"revision": rev})),
    )
    .await?;
    let p = load_required(&mut tx, &id).await?;
    tx.commit().await?;
    st.changed();
    Ok(Json(view(&st, &p).await?))
}
