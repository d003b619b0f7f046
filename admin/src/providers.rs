//! `/providers`: the LLM providers proxies route to. Credentials are sealed
//! at rest and never returned; a provider says only which credential fields
//! are set.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use portcullis_config::{
    DiscoverModelsFile, ProviderAuthFile, ProviderFile, ProviderKind, VertexFile,
};
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
    /// List the provider's own models too (the gateway's `discover_models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover_models: Option<DiscoverModelsFile>,
    /// Client-facing names of provider models.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
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
    /// How gateways fetch the provider's credential, without its secret
    /// (`credentials.client_secret`, `credentials.service_account_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ProviderAuthFile>,
    /// Gemini on Vertex AI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex: Option<VertexFile>,
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
    /// Entra ID client secret (`auth: {type: entra}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// A Google service account key's JSON (`auth: {type:
    /// google-service-account}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_json: Option<String>,
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
        if self.client_secret.is_some() {
            out.push("client_secret");
        }
        if self.service_account_json.is_some() {
            out.push("service_account_json");
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
    /// `true`, `false` or `{"refresh_s": N}`.
    pub discover_models: Option<DiscoverModelsFile>,
    /// Replaces the provider's aliases (`{}` removes them).
    pub aliases: Option<BTreeMap<String, String>>,
    pub api_version: Option<String>,
    pub anthropic_version: Option<String>,
    pub default_max_tokens: Option<u32>,
    pub region: Option<String>,
    /// Model prices per million tokens, replacing the provider's list.
    pub prices: Option<Vec<PriceEntry>>,
    /// Replaces the provider's `auth` (`null` or absent keeps it on PATCH).
    pub auth: Option<ProviderAuthFile>,
    pub vertex: Option<VertexFile>,
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
            "discover_models": self.spec.discover_models,
            "aliases": self.spec.aliases,
            "api_version": self.spec.api_version,
            "anthropic_version": self.spec.anthropic_version,
            "default_max_tokens": self.spec.default_max_tokens,
            "region": self.spec.region,
            "prices": self.spec.prices,
            "auth": self.spec.auth,
            "vertex": self.spec.vertex,
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
            // AWS_SESSION_TOKEN, mixing credentials of two accounts (the
            // credential chain of `auth` has no such fallback).
            None if self.kind == ProviderKind::Bedrock && self.spec.auth.is_none() => {
                Some(var("AWS_SESSION_TOKEN"))
            }
            None => None,
        };
        // The secret of `auth` travels like the other secrets: by name.
        let auth = match self.spec.auth.clone() {
            Some(ProviderAuthFile::Entra {
                tenant_id,
                client_id,
                authority_url,
                scope,
                ..
            }) => Some(ProviderAuthFile::Entra {
                tenant_id,
                client_id,
                client_secret_env: put("ENTRA_CLIENT_SECRET", &c.client_secret),
                client_secret: None,
                authority_url,
                scope,
            }),
            Some(ProviderAuthFile::GoogleServiceAccount { token_uri, .. }) => {
                Some(ProviderAuthFile::GoogleServiceAccount {
                    credentials_file: None,
                    credentials_env: put("GOOGLE_SERVICE_ACCOUNT", &c.service_account_json),
                    credentials_json: None,
                    token_uri,
                })
            }
            other => other,
        };
        ProviderFile {
            name: self.id.clone(),
            kind: self.kind,
            base_url: self.spec.base_url.clone(),
            api_key_env,
            api_key: None,
            models: self.spec.models.clone(),
            discover_models: self.spec.discover_models.clone(),
            aliases: self.spec.aliases.clone(),
            api_version: self.spec.api_version.clone(),
            anthropic_version: self.spec.anthropic_version.clone(),
            default_max_tokens: self.spec.default_max_tokens,
            region: self.spec.region.clone(),
            aws_access_key_id_env,
            aws_secret_access_key_env,
            aws_session_token_env,
            auth,
            vertex: self.spec.vertex.clone(),
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
            if c.aws_access_key_id.is_none() && spec.auth.is_none() {
                return Err(ApiError::invalid(
                    "credentials.aws_access_key_id",
                    "required for bedrock (or `auth: {type: aws}`)",
                ));
            }
            if c.aws_secret_access_key.is_none() && spec.auth.is_none() {
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
    portcullis_config::models::check_provider_models(
        kind,
        &spec.models,
        spec.discover_models.as_ref(),
        &spec.aliases,
        "",
    )
    .map_err(|e| ApiError::invalid(e.path, e.message))?;
    if spec.vertex.is_some()
        && spec
            .discover_models
            .as_ref()
            .and_then(|d| d.refresh_s())
            .is_some()
    {
        return Err(ApiError::invalid(
            "discover_models",
            "model discovery does not cover Gemini on Vertex AI yet: list its models in `models`",
        ));
    }
    if spec.default_max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "default_max_tokens",
            "must be at least 1",
        ));
    }
    portcullis_config::pricing::check_prices(&spec.prices, "prices")
        .map_err(|e| ApiError::invalid(e.path, e.message))?;
    validate_auth(kind, spec, c)
}

/// `auth` and `vertex` as admin stores them: the settings in the spec,
/// the secret in the sealed credentials, and never both a key and `auth`.
fn validate_auth(kind: ProviderKind, spec: &ProviderSpec, c: &Credentials) -> ApiResult<()> {
    if spec.vertex.is_some()
        && !matches!(
            spec.auth,
            Some(ProviderAuthFile::GoogleServiceAccount { .. })
        )
    {
        return Err(ApiError::invalid(
            "vertex",
            "Vertex AI needs `auth: {type: google-service-account}`",
        ));
    }
    if spec.vertex.is_some() && kind != ProviderKind::Gemini {
        return Err(ApiError::invalid(
            "vertex",
            "only a gemini provider runs on Vertex AI",
        ));
    }
    let Some(auth) = &spec.auth else {
        if c.client_secret.is_some() || c.service_account_json.is_some() {
            return Err(ApiError::invalid(
                "credentials",
                "client_secret and service_account_json go with `auth`",
            ));
        }
        return Ok(());
    };
    let fits = matches!(
        (auth, kind),
        (ProviderAuthFile::Entra { .. }, ProviderKind::AzureOpenai)
            | (ProviderAuthFile::Aws { .. }, ProviderKind::Bedrock)
            | (
                ProviderAuthFile::GoogleServiceAccount { .. },
                ProviderKind::Gemini
            )
    );
    if !fits {
        return Err(ApiError::invalid(
            "auth.type",
            format!(
                "`{}` does not authenticate provider type `{}`",
                auth.label(),
                kind.label()
            ),
        ));
    }
    if c.api_key.is_some() || c.aws_access_key_id.is_some() || c.aws_secret_access_key.is_some() {
        return Err(ApiError::invalid(
            "credentials",
            "a provider with `auth` takes no API key or AWS keys",
        ));
    }
    match auth {
        ProviderAuthFile::Entra {
            client_secret,
            client_secret_env,
            ..
        } => {
            if client_secret.is_some() || client_secret_env.is_some() {
                return Err(ApiError::invalid(
                    "auth.client_secret",
                    "the secret goes in credentials.client_secret (sealed, never returned)",
                ));
            }
            if c.client_secret.is_none() {
                return Err(ApiError::invalid(
                    "credentials.client_secret",
                    "required for `auth: {type: entra}`",
                ));
            }
        }
        ProviderAuthFile::GoogleServiceAccount {
            credentials_file,
            credentials_env,
            credentials_json,
            ..
        } => {
            if credentials_file.is_some() || credentials_env.is_some() || credentials_json.is_some()
            {
                return Err(ApiError::invalid(
                    "auth.credentials_json",
                    "the key goes in credentials.service_account_json (sealed, never returned)",
                ));
            }
            if c.service_account_json.is_none() {
                return Err(ApiError::invalid(
                    "credentials.service_account_json",
                    "required for `auth: {type: google-service-account}`",
                ));
            }
        }
        ProviderAuthFile::Aws { .. } => {}
    }
    Ok(())
}

fn apply(spec: &mut ProviderSpec, input: &ProviderInput) {
    if let Some(v) = &input.base_url {
        spec.base_url = (!v.trim().is_empty()).then(|| v.trim().trim_end_matches('/').to_owned());
    }
    if let Some(v) = &input.models {
        spec.models = v.clone();
    }
    if let Some(v) = &input.discover_models {
        spec.discover_models = Some(v.clone());
    }
    if let Some(v) = &input.aliases {
        spec.aliases = v.clone();
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
    if let Some(v) = &input.auth {
        spec.auth = Some(v.clone());
    }
    if let Some(v) = &input.vertex {
        spec.vertex = Some(v.clone());
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
        ("discover_models", input.discover_models.is_some()),
        ("aliases", input.aliases.is_some()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_gets_discovery_and_aliases() {
        let p = Provider {
            id: "p".into(),
            name: "P".into(),
            kind: ProviderKind::Gemini,
            spec: ProviderSpec {
                discover_models: Some(DiscoverModelsFile::Enabled(true)),
                aliases: [("flash".to_owned(), "gemini-2.5-flash".to_owned())].into(),
                ..ProviderSpec::default()
            },
            credentials: Credentials::default(),
            created_at: 0,
            updated_at: 0,
        };
        let file = p.to_file(&mut BTreeMap::new());
        assert_eq!(
            file.discover_models,
            Some(DiscoverModelsFile::Enabled(true))
        );
        assert_eq!(file.aliases["flash"], "gemini-2.5-flash");
    }

    fn provider(kind: ProviderKind, auth: ProviderAuthFile, c: Credentials) -> Provider {
        Provider {
            id: "p1".into(),
            name: "p1".into(),
            kind,
            spec: ProviderSpec {
                auth: Some(auth),
                region: Some("us-east-1".into()),
                ..Default::default()
            },
            credentials: c,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn auth_secrets_reach_gateways_by_name() {
        let p = provider(
            ProviderKind::AzureOpenai,
            ProviderAuthFile::Entra {
                tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret_env: None,
                client_secret: None,
                authority_url: None,
                scope: None,
            },
            Credentials {
                client_secret: Some("shh".into()),
                ..Default::default()
            },
        );
        let mut secrets = BTreeMap::new();
        let file = p.to_file(&mut secrets);
        let Some(ProviderAuthFile::Entra {
            client_secret_env: Some(var),
            client_secret: None,
            ..
        }) = &file.auth
        else {
            panic!("{:?}", file.auth);
        };
        assert_eq!(secrets[var], "shh");
        assert!(!serde_json::to_string(&file).unwrap().contains("shh"));

        // Bedrock on the credential chain: no AWS variables at all (the
        // gateway refuses them beside `auth`).
        let b = provider(
            ProviderKind::Bedrock,
            ProviderAuthFile::Aws {
                profile: None,
                role_arn: Some("arn:aws:iam::1:role/r".into()),
                role_session_name: None,
                external_id: None,
                sts_endpoint: None,
                imds_endpoint: None,
            },
            Credentials::default(),
        );
        let file = b.to_file(&mut secrets);
        assert!(file.aws_session_token_env.is_none() && file.aws_access_key_id_env.is_none());
        assert!(validate(b.kind, &b.spec, &b.credentials).is_ok());
    }
}
