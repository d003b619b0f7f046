//! `POST /proxies/{id}/try`: sends one request through a gateway the proxy
//! is deployed to, with a proxy key the caller gives, and answers what the
//! gateway answered (status, headers, body).
//!
//! Why admin relays it: a browser page served by admin cannot read a
//! gateway's answer itself, since gateways send no CORS headers (opening
//! the data plane to scripts of any origin is not the console's call to
//! make). The request goes only to the invoke URL of an active deployment
//! of a proxy the caller may reach, so it cannot be aimed anywhere else,
//! and the key is used for that one request and never stored or logged.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Body};
use crate::ownership::authorize;

/// How long admin waits for the gateway's whole answer.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer passed back; a chat answer is far smaller.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The client admin reaches gateways with.
pub fn client(
    tls: &portcullis_net::ClientTls,
) -> Result<reqwest::Client, portcullis_net::TlsError> {
    Ok(tls
        .builder()?
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Body of `POST /proxies/{id}/try`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryInput {
    /// Gateway id or name the proxy is deployed to.
    pub gateway: String,
    /// A key of the proxy (`pc-...`).
    pub key: String,
    /// The path under the proxy's base URL (default `chat/completions`).
    #[serde(default)]
    pub path: Option<String>,
    /// The JSON request body, as a client would send it.
    pub request: Value,
}

/// `POST /proxies/{id}/try`.
pub async fn try_proxy(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<TryInput>,
) -> ApiResult<Json<Value>> {
    authorize(&st, &caller, &id, "proxy.try").await?;
    let path = input.path.as_deref().unwrap_or("chat/completions");
    // A resource path under the proxy, nothing that climbs out of it.
    if path.is_empty()
        || path.starts_with('/')
        || path.contains("..")
        || !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.:".contains(c))
    {
        return Err(ApiError::invalid(
            "path",
            "must be a resource path under the proxy, such as `chat/completions`",
        ));
    }
    if input.key.trim().is_empty() {
        return Err(ApiError::invalid("key", "give a key of this proxy"));
    }
    if !input.request.is_object() {
        return Err(ApiError::invalid("request", "must be a JSON object"));
    }
    let proxy = crate::proxies::load(&st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("proxy", &id))?;
    let view = crate::proxies::view(&st, &proxy).await?;
    let deployed = view["deployed_gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| {
            g["gateway_id"] == input.gateway.as_str() || g["gateway"] == input.gateway.as_str()
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "gateway",
                format!(
                    "proxy `{id}` is not deployed to `{}`; deploy it first",
                    input.gateway
                ),
            )
        })?;
    let url = format!(
        "{}/{path}",
        deployed["base_url"].as_str().unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let r = st
        .gateway_client
        .post(&url)
        .bearer_auth(input.key.trim())
        .json(&input.request)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "gateway_unreachable",
                format!("{url}: {}", portcullis_net::error_chain(&e)),
            )
        })?;
    let status = r.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in r.headers() {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), json!(v));
        }
    }
    let bytes = r.bytes().await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "gateway_unreachable",
            format!("{url}: {}", portcullis_net::error_chain(&e)),
        )
    })?;
    let bytes = &bytes[..bytes.len().min(MAX_ANSWER_BYTES)];
    let body = serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
    Ok(Json(json!({
        "url": url,
        "status": status,
        "headers": headers,
        "body": body,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
}
