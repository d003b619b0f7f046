//! The REST API under `/api/v1` (documented in `openapi.rs`).
//!
//! Reads need no credentials; publish and yank need a publisher token
//! (`Authorization: Bearer ...`). Every error is the JSON problem of
//! [`ApiError`], naming the field at fault.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use portcullis_types::policy::{Capability, PolicyCategory, PolicyVersion, PublishRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::db::{ListFilter, NewVersion, Published, VersionSummary};
use crate::error::ApiError;
use crate::validate::{self, ModuleError};
use crate::{ADMIN_PUBLISHER, Hub};

/// Header carrying a module's digest (`sha256:<hex>`) on downloads.
pub const DIGEST_HEADER: &str = "x-portcullis-digest";
const DEFAULT_PER_PAGE: u64 = 20;
const MAX_PER_PAGE: u64 = 100;
const MAX_PAGE: u64 = 1_000_000;
/// Room for the manifest (schema, docs) in a publish body besides the module.
const MANIFEST_ALLOWANCE: usize = 1024 * 1024;

/// The hub's routes; state is shared by every handler.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/policies", get(list).post(publish))
        .route("/api/v1/policies/{name}", get(policy))
        .route("/api/v1/policies/{name}/versions/{version}", get(version))
        .route(
            "/api/v1/policies/{name}/versions/{version}/module",
            get(version_module),
        )
        .route(
            "/api/v1/policies/{name}/versions/{version}/yank",
            post(yank).delete(unyank),
        )
        .route("/api/v1/modules/{digest}", get(module))
        .fallback(|| async {
            ApiError::not_found("path", "no such endpoint; see /api/v1/openapi.json")
        })
        .method_not_allowed_fallback(method_not_allowed)
        // Publish reads its body itself, under its own limit, so that an
        // oversized upload is a JSON 413 rather than axum's plain text.
        .layer(DefaultBodyLimit::disable())
        .with_state(hub)
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::invalid(
        "method_not_allowed",
        "method",
        "method not allowed on this endpoint",
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// Query of `GET /api/v1/policies`. Strings, parsed by hand, so a bad
/// value is a 400 naming its parameter rather than a generic rejection.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    q: Option<String>,
    category: Option<String>,
    capability: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Serialize)]
struct Page {
    items: Vec<VersionSummary>,
    page: u64,
    per_page: u64,
    total: u64,
}

async fn list(
    State(hub): State<Arc<Hub>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("invalid_query", "query", e.body_text()))?;
    let category = match q.category.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(PolicyCategory::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                "category",
                format!("unknown category `{s}`: guardrail, traffic, transform or observability"),
            )
        })?),
    };
    let capability = match q.capability.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Capability::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                "capability",
                format!(
                    "unknown capability `{s}`: counters, cache, clock, log, metrics or embeddings"
                ),
            )
        })?),
    };
    // Bounded so the offset stays far inside a signed 64-bit SQL integer.
    let page = parse_positive(q.page.as_deref(), "page", 1, MAX_PAGE)?;
    let per_page = parse_positive(
        q.per_page.as_deref(),
        "per_page",
        DEFAULT_PER_PAGE,
        MAX_PER_PAGE,
    )?;
    let filter = ListFilter {
        category,
        capability,
        text: q
            .q
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string()),
        offset: (page - 1) * per_page,
        limit: per_page,
    };
    let (items, total) = hub.store.list(&filter).await?;
    Ok(Json(Page {
        items,
        page,
        per_page,
        total,
    }))
}

fn parse_positive(v: Option<&str>, field: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(v) = v.filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            "invalid_query",
            field,
            format!("`{field}` must be an integer from 1 to {max}"),
        )),
    }
}

/// `GET /api/v1/policies/{name}`.
#[derive(Debug, Serialize)]
struct PolicyDetail {
    name: String,
    /// The highest non-yanked version; absent when all are yanked.
    latest_version: Option<String>,
    /// The latest version's full record (schema, defaults, docs).
    latest: Option<PolicyVersion>,
    /// Every version, newest first, yanked ones marked.
    versions: Vec<VersionSummary>,
}

async fn policy(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
) -> Result<Json<PolicyDetail>, ApiError> {
    let (latest_version, versions) = hub
        .store
        .policy(&name)
        .await?
        .ok_or_else(|| ApiError::not_found("name", format!("no policy named `{name}`")))?;
    let latest = match &latest_version {
        Some(v) => hub.store.version(&name, v).await?,
        None => None,
    };
    Ok(Json(PolicyDetail {
        name,
        latest_version,
        latest,
        versions,
    }))
}

async fn find_version(hub: &Hub, name: &str, version: &str) -> Result<PolicyVersion, ApiError> {
    if let Some(v) = hub.store.version(name, version).await? {
        return Ok(v);
    }
    if hub.store.policy(name).await?.is_none() {
        return Err(ApiError::not_found(
            "name",
            format!("no policy named `{name}`"),
        ));
    }
    Err(ApiError::not_found(
        "version",
        format!("policy `{name}` has no version `{version}`"),
    ))
}

async fn version(
    State(hub): State<Arc<Hub>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PolicyVersion>, ApiError> {
    Ok(Json(find_version(&hub, &name, &version).await?))
}

async fn version_module(
    State(hub): State<Arc<Hub>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let v = find_version(&hub, &name, &version).await?;
    module_response(&hub, &v.digest, &headers).await
}

async fn module(
    State(hub): State<Arc<Hub>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !valid {
        return Err(ApiError::invalid(
            "invalid_digest",
            "digest",
            "a module digest is `sha256:` and 64 lowercase hex digits",
        ));
    }
    module_response(&hub, &digest, &headers).await
}

/// The module's bytes, or 304 when the client's `If-None-Match` already
/// names this digest. Content never changes for a digest, so caches may
/// keep it forever.
async fn module_response(
    hub: &Hub,
    digest: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let etag = format!("\"{digest}\"");
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let bytes = if cached {
        // Only for a module the hub has: a 304 for anything else would
        // tell a client its stale or corrupt copy is right.
        if !hub.store.module_exists(digest).await? {
            return Err(ApiError::not_found(
                "digest",
                format!("no module `{digest}`"),
            ));
        }
        None
    } else {
        Some(
            hub.store
                .module(digest)
                .await?
                .ok_or_else(|| ApiError::not_found("digest", format!("no module `{digest}`")))?,
        )
    };
    let hex = digest.trim_start_matches("sha256:");
    let raw = hex::decode(hex).map_err(|e| ApiError::Internal(format!("stored digest: {e}")))?;
    let repr = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    let mut response = match bytes {
        None => StatusCode::NOT_MODIFIED.into_response(),
        Some(b) => {
            let mut r = Body::from(b).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/wasm"),
            );
            r
        }
    };
    let h = response.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| ApiError::Internal(e.to_string()));
    h.insert(header::ETAG, value(&etag)?);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(DIGEST_HEADER, value(digest)?);
    // RFC 9530: the digest of the bytes, for generic HTTP tooling.
    h.insert("repr-digest", value(&repr)?);
    Ok(response)
}

/// The publisher named by the request's bearer token.
fn authenticate(hub: &Hub, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "publishing needs `Authorization: Bearer <publisher token>`".into(),
            )
        })?;
    match hub.publisher_for(token) {
        Some(p) => Ok(p.to_string()),
        None if hub.tokens.is_empty() => Err(ApiError::Unauthorized(
            "this hub accepts no publisher tokens (start it with --publish-token)".into(),
        )),
        None => Err(ApiError::Unauthorized("unknown publisher token".into())),
    }
}

async fn publish(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let publisher = authenticate(&hub, &headers)?;
    // Base64 makes the module 4/3 larger.
    let limit = hub.max_module_bytes / 3 * 4 + 4 + MANIFEST_ALLOWANCE;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge {
            message: format!(
                "the request body is over {limit} bytes; modules are limited to {} bytes",
                hub.max_module_bytes
            ),
            field: Some("module".into()),
        })?;
    let request: PublishRequest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| {
                let path = e.path().to_string();
                let (code, field) = if path.starts_with("manifest") {
                    ("invalid_manifest", path)
                } else if path == "." || path == "?" || path.is_empty() {
                    ("invalid_body", "body".to_string())
                } else {
                    ("invalid_body", path)
                };
                ApiError::invalid(code, field, e.into_inner().to_string())
            })?;
    let v = publish_version(&hub, request, &publisher).await?;
    let location = format!(
        "/api/v1/policies/{}/versions/{}",
        v.manifest.name, v.manifest.version
    );
    let mut response = (StatusCode::CREATED, Json(v)).into_response();
    if let Ok(l) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, l);
    }
    Ok(response)
}

/// Validates and stores one version: the publish endpoint's and the
/// built-in seeding's shared path.
pub async fn publish_version(
    hub: &Arc<Hub>,
    request: PublishRequest,
    publisher: &str,
) -> Result<PolicyVersion, ApiError> {
    let module = base64::engine::general_purpose::STANDARD
        .decode(request.module.trim())
        .map_err(|e| ApiError::invalid("invalid_module", "module", format!("not base64: {e}")))?;
    if module.len() > hub.max_module_bytes {
        return Err(ApiError::TooLarge {
            message: format!(
                "the module is {} bytes; this hub accepts modules up to {} bytes",
                module.len(),
                hub.max_module_bytes
            ),
            field: Some("module".into()),
        });
    }
    let sha = validate::sha256_hex(&module);
    let mut manifest = request.manifest;
    if let Some(declared) = &manifest.sha256
        && *declared != sha
    {
        return Err(ApiError::invalid(
            "digest_mismatch",
            "manifest.sha256",
            format!("the manifest says sha256 {declared} but the module's is {sha}"),
        ));
    }
    manifest.sha256 = Some(sha);
    let valid = validate::manifest(manifest)?;
    let m = valid.manifest;
    // Cheap before the component check compiles the module.
    if hub.store.version(&m.name, &m.version).await?.is_some() {
        return Err(version_exists(&m.name, &m.version));
    }

    let checker_hub = Arc::clone(hub);
    let capabilities = m.capabilities.clone();
    let module = tokio::task::spawn_blocking(move || {
        checker_hub
            .checker
            .check(&module, &capabilities)
            .map(|()| module)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("component check task: {e}")))?
    .map_err(|e| match e {
        ModuleError::NotPolicyComponent(msg) => ApiError::invalid("invalid_module", "module", msg),
        e @ ModuleError::UndeclaredCapabilities(_) => ApiError::invalid(
            "undeclared_capability",
            "manifest.capabilities",
            e.to_string(),
        ),
    })?;

    let outcome = hub
        .store
        .publish(NewVersion {
            manifest: &m,
            module: &module,
            publisher,
        })
        .await?;
    if let Published::Exists { .. } = outcome {
        return Err(version_exists(&m.name, &m.version));
    }
    tracing::info!(policy = %m.name, version = %m.version, %publisher, size = module.len(), "published");
    hub.store
        .version(&m.name, &m.version)
        .await?
        .ok_or_else(|| ApiError::Internal("published version not found".into()))
}

fn version_exists(name: &str, version: &str) -> ApiError {
    ApiError::Conflict {
        message: format!(
            "{name}@{version} is already published; versions are immutable, publish a new one"
        ),
        field: Some("manifest.version".into()),
    }
}

#[derive(Debug, Serialize)]
struct YankState {
    name: String,
    version: String,
    yanked: bool,
}

async fn yank(
    State(hub): State<Arc<Hub>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<YankState>, ApiError> {
    set_yanked(&hub, name, version, &headers, true).await
}

async fn unyank(
    State(hub): State<Arc<Hub>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<YankState>, ApiError> {
    set_yanked(&hub, name, version, &headers, false).await
}

/// Only the version's publisher (or `admin`) may yank or restore it.
async fn set_yanked(
    hub: &Hub,
    name: String,
    version: String,
    headers: &HeaderMap,
    yanked: bool,
) -> Result<Json<YankState>, ApiError> {
    let publisher = authenticate(hub, headers)?;
    let owner = match hub.store.publisher_of(&name, &version).await? {
        Some(o) => o,
        None => {
            find_version(hub, &name, &version).await?;
            return Err(ApiError::Internal("version vanished".into()));
        }
    };
    if owner != publisher && publisher != ADMIN_PUBLISHER {
        return Err(ApiError::Forbidden(format!(
            "{name}@{version} was published by `{owner}`; only it or `admin` may yank it"
        )));
    }
    hub.store
        .set_yanked(&name, &version, yanked)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "version",
                format!("policy `{name}` has no version `{version}`"),
            )
        })?;
    Ok(Json(YankState {
        name,
        version,
        yanked,
    }))
}
