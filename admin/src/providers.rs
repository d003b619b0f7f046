//! `/providers`: the LLM providers proxies route to. Credentials are sealed
//! at rest and never returned; a provider says only which credential fields
//! are set.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portcullis_config::{ProviderFile, ProviderKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::db::{audit, bump, now_ms, rfc3339};
use crate::error::{ApiError, ApiResult, Body};
use crate::slug::{slugify, valid_url};
use portcullis_config::pricing::PriceEntry;

/// Non-secret provider settings, stored as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Prices over the shipped table for this provider's type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceEntry>,
}

/// Provider credentials (sealed at rest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token: Option<String>,
}

impl Credentials {
    fn set_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.api_key.is_some() {
            out.push("api_key");
        }
        if self.aws_access_key_id.is_some() {
            out.push("aws_access_key_id");
        }
        if self.aws_secret_access_key.is_some() {
            out.push("aws_secret_access_key");
        }
        if self.aws_session_token.is_some() {
            out.push("aws_session_token");
        }
        out
    }
}

/// Body of `POST /providers` (`name` and `type` required) and `PATCH
/// /providers/{id}` (any subset; `credentials` replaces all credentials).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub models: Option<Vec<String>>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub default_max_tokens: Option<u32>,
    pub region: Option<String>,
    /// Model prices per million tokens, replacing the provider's list.
    pub prices: Option<Vec<PriceEntry>>,
    pub credentials: Option<Credentials>,
}

/// A stored provider, credentials opened.
#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub spec: ProviderSpec,
    pub credentials: Credentials,
    pub created_at: i64,
    pub updated_at: i64,
}

fn kind_from_label(s: &str) -> ApiResult<ProviderKind> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| ApiError::internal(format!("stored provider type `{s}` is unknown")))
}

impl Provider {
    fn from_row(st: &AppState, row: &sqlx::any::AnyRow) -> ApiResult<Provider> {
        let id: String = row.try_get("id")?;
        let sealed: Option<String> = row.try_get("credentials")?;
        let credentials = match sealed {
            None => Credentials::default(),
            Some(s) => {
                let plain = st.sealer.open(&id, &s).map_err(ApiError::internal)?;
                serde_json::from_slice(&plain).map_err(ApiError::internal)?
            }
        };
        let spec: String = row.try_get("spec")?;
        Ok(Provider {
            name: row.try_get("name")?,
            kind: kind_from_label(&row.try_get::<String, _>("kind")?)?,
            spec: serde_json::from_str(&spec).map_err(ApiError::internal)?,
            credentials,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            id,
        })
    }

    /// The API view: never the credentials themselves.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": self.kind.label(),
            "base_url": self.spec.base_url,
            "models": self.spec.models,
            "api_version": self.spec.api_version,
            "anthropic_version": self.spec.anthropic_version,
            "default_max_tokens": self.spec.default_max_tokens,
            "region": self.spec.region,
            "prices": self.spec.prices,
            "credentials_set": self.credentials.set_fields(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }

    /// The gateway's view: secrets are referred to by variable name and
    /// their values put in `secrets`.
    pub fn to_file(&self, secrets: &mut BTreeMap<String, String>) -> ProviderFile {
        let var = |field: &str| {
            format!(
                "PORTCULLIS_PROVIDER_{}_{}",
                self.id.to_ascii_uppercase().replace('-', "_"),
                field
            )
        };
        let mut put = |field: &str, value: &Option<String>| {
            value.as_ref().map(|v| {
                let name = var(field);
                secrets.insert(name.clone(), v.clone());
                name
            })
        };
        let c = &self.credentials;
        let api_key_env = put("API_KEY", &c.api_key);
        let aws_access_key_id_env = put("AWS_ACCESS_KEY_ID", &c.aws_access_key_id);
        let aws_secret_access_key_env = put("AWS_SECRET_ACCESS_KEY", &c.aws_secret_access_key);
        let aws_session_token_env = match put("AWS_SESSION_TOKEN", &c.aws_session_token) {
            Some(n) => Some(n),
            // Without this the gateway would fall back to its own
            // AWS_SESSION_TOKEN, mixing credentials of two accounts.
            None if self.kind == ProviderKind::Bedrock => Some(var("AWS_SESSION_TOKEN")),
            None => None,
        };
        ProviderFile {
            name: self.id.clone(),
            kind: self.kind,
            base_url: self.spec.base_url.clone(),
            api_key_env,
            api_key: None,
            models: self.spec.models.clone(),
            api_version: self.spec.api_version.clone(),
            anthropic_version: self.spec.anthropic_version.clone(),
            default_max_tokens: self.spec.default_max_tokens,
            region: self.spec.region.clone(),
            aws_access_key_id_env,
            aws_secret_access_key_env,
            aws_session_token_env,
            // Admin does not store refreshed-credential settings yet: its
            // providers carry static keys only.
            auth: None,
            vertex: None,
            ca_file: None,
            // Set per gateway from its settings (`provider_ca`).
            ca_pem: None,
            prices: self.spec.prices.clone(),
        }
    }
}

/// Loads one provider.
pub async fn load<'e, E>(st: &AppState, exec: E, id: &str) -> ApiResult<Option<Provider>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT * FROM providers WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(exec)
        .await?;
    row.map(|r| Provider::from_row(st, &r)).transpose()
}

/// Every provider, keyed by id.
pub async fn load_all<'e, E>(st: &AppState, exec: E) -> ApiResult<BTreeMap<String, Provider>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query("SELECT * FROM providers")
        .fetch_all(exec)
        .await?;
    rows.iter()
        .map(|r| Provider::from_row(st, r).map(|p| (p.id.clone(), p)))
        .collect()
}

/// Checks a provider's settings as a whole, naming the field at fault.
fn validate(kind: ProviderKind, spec: &ProviderSpec, c: &Credentials) -> ApiResult<()> {
    if let Some(u) = &spec.base_url
        && !valid_url(u)
    {
        return Err(ApiError::invalid(
            "base_url",
            "must be an http:// or https:// URL",
        ));
    }
    match kind {
        ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible if spec.base_url.is_none() => {
            return Err(ApiError::invalid(
                "base_url",
                format!("required for provider type `{}`", kind.label()),
            ));
        }
        ProviderKind::Bedrock => {
            if spec.region.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    "region",
                    "required for provider type `bedrock`",
                ));
            }
            if c.api_key.is_some() {
                return Err(ApiError::invalid(
                    "credentials.api_key",
                    "bedrock signs with AWS credentials: set aws_access_key_id and aws_secret_access_key",
                ));
            }
            if c.aws_access_key_id.is_none() {
                return Err(ApiError::invalid(
                    "credentials.aws_access_key_id",
                    "required for bedrock",
                ));
            }
            if c.aws_secret_access_key.is_none() {
                return Err(ApiError::invalid(
                    "credentials.aws_secret_access_key",
                    "required for bedrock",
                ));
            }
        }
        _ => {}
    }
    if kind != ProviderKind::Bedrock
        && (c.aws_access_key_id.is_some()
            || c.aws_secret_access_key.is_some()
            || c.aws_session_token.is_some())
    {
        return Err(ApiError::invalid(
            "credentials",
            format!(
                "AWS credentials apply to bedrock only, not `{}`",
                kind.label()
            ),
        ));
    }
    for (i, m) in spec.models.iter().enumerate() {
        if m.trim().is_empty() {
            return Err(ApiError::invalid(
                format!("models[{i}]"),
                "must not be empty",
            ));
        }
    }
    if spec.default_max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "default_max_tokens",
            "must be at least 1",
        ));
    }
    portcullis_config::pricing::check_prices(&spec.prices, "prices")
        .map_err(|e| ApiError::invalid(e.path, e.message))?;
    Ok(())
}

fn apply(spec: &mut ProviderSpec, input: &ProviderInput) {
    if let Some(v) = &input.base_url {
        spec.base_url = (!v.trim().is_empty()).then(|| v.trim().trim_end_matches('/').to_owned());
    }
    if let Some(v) = &input.models {
        spec.models = v.clone();
    }
    if let Some(v) = &input.api_version {
        spec.api_version = Some(v.clone());
    }
    if let Some(v) = &input.anthropic_version {
        spec.anthropic_version = Some(v.clone());
    }
    if let Some(v) = input.default_max_tokens {
        spec.default_max_tokens = Some(v);
    }
    if let Some(v) = &input.region {
        spec.region = Some(v.clone());
    }
    if let Some(v) = &input.prices {
        spec.prices = v.clone();
    }
}

/// `POST /providers`.
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Body(input): Body<ProviderInput>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin("creating providers")?;
    let name = input
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if input.name.is_none() {
        return Err(ApiError::invalid("name", "missing field `name`"));
    }
    let id = slugify(&name);
    if id.is_empty() {
        return Err(ApiError::invalid("name", "must contain a letter or digit"));
    }
    let kind = input
        .kind
        .ok_or_else(|| ApiError::invalid("type", "missing field `type`"))?;
    let mut spec = ProviderSpec::default();
    apply(&mut spec, &input);
    let creds = input.credentials.clone().unwrap_or_default();
    validate(kind, &spec, &creds)?;

    let mut tx = st.pool.begin().await?;
    let taken = sqlx::query("SELECT id FROM providers WHERE id = $1 OR name = $2")
        .bind(id.clone())
        .bind(name.clone())
        .fetch_optional(&mut *tx)
        .await?;
    if taken.is_some() {
        return Err(ApiError::conflict(
            "name",
            format!("a provider named `{name}` (id `{id}`) exists"),
        ));
    }
    let seq = bump(&mut tx).await?;
    let now = now_ms();
    let sealed = seal(&st, &id, &creds)?;
    sqlx::query(
        "INSERT INTO providers (id, name, kind, spec, credentials, created_at, updated_at, updated_seq) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
    )
    .bind(id.clone())
    .bind(name.clone())
    .bind(kind.label())
    .bind(serde_json::to_string(&spec).map_err(ApiError::internal)?)
    .bind(sealed)
    .bind(now)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "provider.create",
        &format!("providers/{id}"),
        Some(json!({"name": name, "type": kind.label()})),
    )
    .await?;
    let p = load(&st, &mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::internal("provider vanished"))?;
    tx.commit().await?;
    st.changed();
    Ok((StatusCode::CREATED, Json(p.to_json())))
}

fn seal(st: &AppState, id: &str, c: &Credentials) -> ApiResult<Option<String>> {
    if *c == Credentials::default() {
        return Ok(None);
    }
    let plain = serde_json::to_vec(c).map_err(ApiError::internal)?;
    st.sealer
        .seal(id, &plain)
        .map(Some)
        .map_err(ApiError::internal)
}

/// `GET /providers`: most recently updated first.
pub async fn list(State(st): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let rows = sqlx::query("SELECT * FROM providers ORDER BY updated_seq DESC")
        .fetch_all(&st.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| Provider::from_row(&st, r).map(|p| p.to_json()))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "items": items })))
}

/// `GET /providers/{id}`.
pub async fn get(
    State(st): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let p = load(&st, &st.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider", &id))?;
    Ok(Json(p.to_json()))
}

/// `PATCH /providers/{id}`.
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<ProviderInput>,
) -> ApiResult<Json<Value>> {
    caller.require_admin("changing providers")?;
    let mut tx = st.pool.begin().await?;
    let mut p = load(&st, &mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider", &id))?;
    if let Some(name) = &input.name {
        let name = name.trim();
        if name.is_empty() {
            return Err(ApiError::invalid("name", "must not be empty"));
        }
        let clash = sqlx::query("SELECT id FROM providers WHERE name = $1 AND id <> $2")
            .bind(name.to_owned())
            .bind(id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if clash.is_some() {
            return Err(ApiError::conflict(
                "name",
                format!("a provider named `{name}` exists"),
            ));
        }
        // The id stays: proxies and deployed revisions refer to it.
        p.name = name.to_owned();
    }
    if let Some(k) = input.kind {
        p.kind = k;
    }
    apply(&mut p.spec, &input);
    if let Some(c) = &input.credentials {
        p.credentials = c.clone();
    }
    validate(p.kind, &p.spec, &p.credentials)?;
    let seq = bump(&mut tx).await?;
    sqlx::query(
        "UPDATE providers SET name = $1, kind = $2, spec = $3, credentials = $4, updated_at = $5, updated_seq = $6 WHERE id = $7",
    )
    .bind(p.name.clone())
    .bind(p.kind.label())
    .bind(serde_json::to_string(&p.spec).map_err(ApiError::internal)?)
    .bind(seal(&st, &id, &p.credentials)?)
    .bind(now_ms())
    .bind(seq)
    .bind(id.clone())
    .execute(&mut *tx)
    .await?;
    let changed: Vec<&str> = [
        ("name", input.name.is_some()),
        ("type", input.kind.is_some()),
        ("base_url", input.base_url.is_some()),
        ("models", input.models.is_some()),
        ("credentials", input.credentials.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "provider.update",
        &format!("providers/{id}"),
        Some(json!({"changed": changed})),
    )
    .await?;
    let p = load(&st, &mut *tx, &id)
        .await?
        .ok_or_else(|| ApiError::internal("provider vanished"))?;
    tx.commit().await?;
    st.changed();
    Ok(Json(p.to_json()))
}

/// `DELETE /providers/{id}`: refused while a proxy uses it.
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin("deleting providers")?;
    let mut tx = st.pool.begin().await?;
    if load(&st, &mut *tx, &id).await?.is_none() {
        return Err(ApiError::not_found("provider", &id));
    }
    // Current revisions and deployed revisions both count: a deployed old
    // revision still routes to the provider.
    let rows = sqlx::query(
        "SELECT r.proxy_id, r.spec FROM proxy_revisions r JOIN proxies p ON p.id = r.proxy_id \
         WHERE r.revision = p.current_revision \
         OR EXISTS (SELECT 1 FROM deployments d WHERE d.proxy_id = r.proxy_id AND d.revision = r.revision AND d.status = 'Active')",
    )
    .fetch_all(&mut *tx)
    .await?;
    for r in &rows {
        let spec: crate::proxies::ProxySpec =
            serde_json::from_str(&r.try_get::<String, _>("spec")?).map_err(ApiError::internal)?;
        if spec.provider_ids().any(|p| p == id) {
            let proxy: String = r.try_get("proxy_id")?;
            return Err(ApiError::conflict(
                "id",
                format!("proxy `{proxy}` uses provider `{id}`"),
            ));
        }
    }
    let seq = bump(&mut tx).await?;
    sqlx::query("DELETE FROM providers WHERE id = $1")
        .bind(id.clone())
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        seq,
        &caller.actor(),
        "provider.delete",
        &format!("providers/{id}"),
        None,
    )
    .await?;
    tx.commit().await?;
    st.changed();
    Ok(StatusCode::NO_CONTENT)
}
