//! A validated route: a provider adapter, the endpoint it calls, the key
//! it sends and the models it serves, built from the file's route and
//! provider entries.

use std::sync::Arc;

use super::auth;
use super::endpoint::{CaSource, Upstream, parse_base_url};
use crate::config::ProviderAuthFile;
use crate::config::pricing::{Price, PriceEntry, find, shipped_for};
use crate::config::{
    ConfigError, KeySourceFile, ProviderFile, ProviderKind, RouteFile, cfg_err, effective_base_url,
    egress_allows, url_origin,
};
use crate::providers::{
    self, AwsCredentials, LiveCredential, Provider, ProviderSettings, VertexLocation,
};

/// A validated route.
pub struct Route {
    /// `provider` or `provider/model`; shown in `x-portcullis-route`.
    pub name: String,
    pub provider_name: String,
    pub provider: Arc<dyn Provider>,
    pub kind: ProviderKind,
    pub upstream: Upstream,
    pub target_model: Option<String>,
    pub key: KeySource,
    /// Models the provider declares (empty: any model is passed on).
    pub models: Vec<String>,
    /// The provider's aliases (client name to provider model), on routes
    /// that take the provider's model list (no `model`, no `models`).
    pub aliases: Arc<std::collections::BTreeMap<String, String>>,
    /// The provider's discovered models, on the same routes: they widen
    /// `models` (docs/gateway.md, model discovery).
    pub discovered: Option<Arc<super::DiscoveredModels>>,
    /// The provider's own prices (`prices`), over the shipped table of its type.
    pub prices: Arc<[PriceEntry]>,
}

impl Route {
    /// Whether the route passes `model` on as it is: its model list is
    /// open (empty), names it, or the provider's discovered list does.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| m == model)
            || self.discovered.as_ref().is_some_and(|d| d.contains(model))
    }

    /// What `model` costs on this route: the provider's own price for
    /// it, else the shipped table's; `None` when neither knows the model
    /// (its requests then have no cost).
    pub fn price_for(&self, model: &str) -> Option<Price> {
        find(&self.prices, model)
            .or_else(|| find(shipped_for(self.kind), model))
            .copied()
    }
}

/// Where a route's provider key comes from.
#[derive(Clone)]
pub enum KeySource {
    None,
    Static(String),
    Header(http::HeaderName),
}

pub fn build_route(
    rf: &RouteFile,
    prov: &ProviderFile,
    prov_i: usize,
    rat: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
    egress: &[String],
    discovered: Option<&Arc<super::DiscoveredModels>>,
) -> Result<Route, ConfigError> {
    let pat = |field: &str| format!("providers[{prov_i}].{field}");
    let region = prov.region.clone();
    let vertex = vertex_location(prov, prov_i)?;
    let provider_url = match (&vertex, &prov.base_url) {
        // Vertex AI's regional endpoint (or its global one).
        (Some(v), None) if v.location == "global" => {
            Some("https://aiplatform.googleapis.com".to_owned())
        }
        (Some(v), None) => Some(format!("https://{}-aiplatform.googleapis.com", v.location)),
        _ => effective_base_url(prov.kind, prov.base_url.as_deref(), region.as_deref()),
    };
    let base_url = match (&rf.base_url, &provider_url) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err(cfg_err(
                pat("base_url"),
                format!("required for provider type `{}`", prov.kind.label()),
            ));
        }
    };
    let base_at = if rf.base_url.is_some() {
        rat("base_url")
    } else {
        pat("base_url")
    };
    let ca = match (&prov.ca_file, &prov.ca_pem) {
        (Some(_), Some(_)) => {
            return Err(cfg_err(pat("ca_pem"), "set ca_file or ca_pem, not both"));
        }
        (Some(f), None) => Some(CaSource::File(f)),
        (None, Some(p)) => Some(CaSource::Pem(p)),
        (None, None) => None,
    };
    let (upstream, base_path) = parse_base_url(&base_url, ca).map_err(|m| cfg_err(&base_at, m))?;
    if !egress.is_empty() && !egress_allows(egress, &upstream.host, upstream.port) {
        return Err(cfg_err(
            base_at,
            format!(
                "{}:{} is not in the gateway's egress allow-list ({})",
                upstream.host,
                upstream.port,
                egress.join(", ")
            ),
        ));
    }
    // The provider's own credentials go to the provider's own host only: a
    // route that points elsewhere must bring its own key (or none).
    if let Some(route_url) = &rf.base_url
        && rf.api_key.is_none()
        && (prov.api_key.is_some()
            || prov.api_key_env.is_some()
            || prov.auth.is_some()
            || prov.kind == ProviderKind::Bedrock)
    {
        let here = url_origin(route_url);
        let home = provider_url.as_deref().and_then(url_origin);
        if here.is_none() || here != home {
            return Err(cfg_err(
                rat("base_url"),
                format!(
                    "sends provider `{}`'s credentials to another host than the provider's own ({}); give this route its own `api_key`, or declare a provider for that host",
                    prov.name,
                    provider_url.as_deref().unwrap_or("none")
                ),
            ));
        }
    }

    let (provider_key, aws, live) = provider_credentials(prov, prov_i, env, egress)?;
    let key = match &rf.api_key {
        Some(KeySourceFile {
            env: Some(var),
            header: None,
        }) => KeySource::Static(env(var).ok_or_else(|| {
            cfg_err(
                rat("api_key.env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        Some(KeySourceFile {
            env: None,
            header: Some(h),
        }) => KeySource::Header(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| cfg_err(rat("api_key.header"), "not a valid header name"))?,
        ),
        Some(_) => return Err(cfg_err(rat("api_key"), "set exactly one of env or header")),
        None => provider_key
            .map(KeySource::Static)
            .unwrap_or(KeySource::None),
    };
    if prov.kind == ProviderKind::AzureOpenai && rf.model.is_none() && prov.models.is_empty() {
        return Err(cfg_err(
            rat("model"),
            "azure-openai routes need a target model (the deployment name) or provider models",
        ));
    }
    // The provider's aliases and discovered models belong to its model
    // list: a route with its own `model` or `models` does not take them.
    let inherits = rf.model.is_none() && rf.models.is_none();
    let settings = adapter_settings(prov, base_path, &upstream, aws, live, vertex);
    Ok(Route {
        name: match (&rf.name, &rf.model) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => format!("{}/{m}", prov.name),
            (None, None) => prov.name.clone(),
        },
        provider_name: prov.name.clone(),
        provider: providers::build(prov.kind, settings),
        kind: prov.kind,
        upstream,
        target_model: rf.model.clone(),
        key,
        models: rf.models.clone().unwrap_or_else(|| prov.models.clone()),
        aliases: Arc::new(if inherits {
            prov.aliases.clone()
        } else {
            Default::default()
        }),
        discovered: discovered.filter(|_| inherits).cloned(),
        prices: prov.prices.clone().into(),
    })
}

/// A provider's own credentials: its API key and, for Bedrock, its AWS
/// keys, read from the environment; or the credential its `auth` fetches
/// and refreshes (one cell per provider, shared by its routes and its
/// model list). Errors name the provider field.
pub fn provider_credentials(
    prov: &ProviderFile,
    prov_i: usize,
    env: &dyn Fn(&str) -> Option<String>,
    egress: &[String],
) -> Result<
    (
        Option<String>,
        Option<AwsCredentials>,
        Option<LiveCredential>,
    ),
    ConfigError,
> {
    let pat = |field: &str| format!("providers[{prov_i}].{field}");
    let region = prov.region.clone();
    let provider_key = match (&prov.api_key_env, &prov.api_key) {
        (Some(var), _) => Some(env(var).ok_or_else(|| {
            cfg_err(
                pat("api_key_env"),
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, Some(k)) => Some(k.clone()),
        (None, None) => None,
    };
    let live = auth::live_credential(prov, prov_i, env, egress)?;
    if live.is_some() {
        for (field, set) in [
            ("aws_access_key_id_env", &prov.aws_access_key_id_env),
            ("aws_secret_access_key_env", &prov.aws_secret_access_key_env),
            ("aws_session_token_env", &prov.aws_session_token_env),
        ] {
            if set.is_some() {
                return Err(cfg_err(
                    pat(field),
                    "the credential comes from `auth`; remove this field",
                ));
            }
        }
    }
    let aws = if prov.kind == ProviderKind::Bedrock && live.is_some() {
        // Checked with the credential chain's settings (`auth`).
        None
    } else if prov.kind == ProviderKind::Bedrock {
        let region = region.ok_or_else(|| cfg_err(pat("region"), "required for bedrock"))?;
        let var = |field: &str,
                   given: &Option<String>,
                   default: &str|
         -> Result<Option<String>, ConfigError> {
            let name = given.clone().unwrap_or_else(|| default.to_owned());
            match env(&name) {
                Some(v) => Ok(Some(v)),
                None if field == "aws_session_token_env" => Ok(None),
                None => Err(cfg_err(
                    pat(field),
                    format!("environment variable {name} is not set"),
                )),
            }
        };
        Some(AwsCredentials {
            access_key_id: var(
                "aws_access_key_id_env",
                &prov.aws_access_key_id_env,
                "AWS_ACCESS_KEY_ID",
            )?
            .unwrap_or_default(),
            secret_access_key: var(
                "aws_secret_access_key_env",
                &prov.aws_secret_access_key_env,
                "AWS_SECRET_ACCESS_KEY",
            )?
            .unwrap_or_default(),
            session_token: var(
                "aws_session_token_env",
                &prov.aws_session_token_env,
                "AWS_SESSION_TOKEN",
            )?,
            region,
        })
    } else {
        None
    };
    Ok((provider_key, aws, live))
}

/// The settings a provider's adapter is built with, for the endpoint
/// `upstream` (a route's, or the provider's model list).
pub fn adapter_settings(
    prov: &ProviderFile,
    base_path: String,
    upstream: &Upstream,
    aws: Option<AwsCredentials>,
    live: Option<LiveCredential>,
    vertex: Option<VertexLocation>,
) -> ProviderSettings {
    ProviderSettings {
        base_path,
        host: upstream.host_header.clone(),
        api_version: prov.api_version.clone(),
        anthropic_version: prov.anthropic_version.clone(),
        default_max_tokens: prov.default_max_tokens.unwrap_or(4096),
        aws,
        live,
        vertex,
    }
}

/// A Gemini provider's Vertex AI project and location (`vertex`), which
/// needs a service account (`auth`) since Vertex AI takes OAuth2 tokens.
fn vertex_location(
    prov: &ProviderFile,
    prov_i: usize,
) -> Result<Option<VertexLocation>, ConfigError> {
    let Some(v) = &prov.vertex else {
        return Ok(None);
    };
    let at = |field: &str| format!("providers[{prov_i}].vertex.{field}");
    if prov.kind != ProviderKind::Gemini {
        return Err(cfg_err(
            format!("providers[{prov_i}].vertex"),
            "only a gemini provider runs on Vertex AI",
        ));
    }
    if !matches!(
        prov.auth,
        Some(ProviderAuthFile::GoogleServiceAccount { .. })
    ) {
        return Err(cfg_err(
            format!("providers[{prov_i}].auth"),
            "Vertex AI needs `auth: {type: google-service-account, ...}`",
        ));
    }
    // Both end up in the URL's host or path: keep them to what Google
    // accepts (project ids and region names).
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !plain(&v.project) {
        return Err(cfg_err(
            at("project"),
            "lowercase letters, digits and hyphens",
        ));
    }
    if !plain(&v.location) {
        return Err(cfg_err(
            at("location"),
            "a region such as us-central1, or global",
        ));
    }
    Ok(Some(VertexLocation {
        project: v.project.clone(),
        location: v.location.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(provider: &str) -> Result<Route, ConfigError> {
        let prov: ProviderFile = serde_yaml::from_str(provider).unwrap();
        let rf: RouteFile = serde_yaml::from_str("{provider: p}").unwrap();
        build_route(
            &rf,
            &prov,
            0,
            &|f| format!("routes[0].{f}"),
            &|_| None,
            &[],
            None,
        )
    }

    const SA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/mock-llm/testdata/test-service-account.json"
    );

    #[test]
    fn vertex_needs_a_gemini_provider_with_a_service_account() {
        let ok = format!(
            "{{name: p, type: gemini, vertex: {{project: my-proj, location: europe-west4}}, auth: {{type: google-service-account, credentials_file: '{SA}'}}}}"
        );
        let r = route_of(&ok).unwrap();
        assert_eq!(r.upstream.host, "europe-west4-aiplatform.googleapis.com");
        let e = route_of(
            "{name: p, type: gemini, vertex: {project: x, location: us-central1}, api_key: k}",
        )
        .err()
        .unwrap();
        assert_eq!(e.path, "providers[0].auth");
        let e = route_of(&ok.replace("my-proj", "My Proj")).err().unwrap();
        assert_eq!(e.path, "providers[0].vertex.project");
        let e = route_of(&ok.replace(SA, "/nonexistent/sa.json"))
            .err()
            .unwrap();
        assert_eq!(e.path, "providers[0].auth.credentials_file");
    }

    #[test]
    fn bedrock_on_the_chain_reads_no_aws_variables() {
        // Without `auth` the keys come from the environment (none here).
        let e = route_of("{name: p, type: bedrock, region: us-east-1}")
            .err()
            .unwrap();
        assert_eq!(e.path, "providers[0].aws_access_key_id_env");
        assert!(route_of("{name: p, type: bedrock, region: us-east-1, auth: {type: aws}}").is_ok());
        let e = route_of(
            "{name: p, type: bedrock, region: us-east-1, aws_access_key_id_env: K, auth: {type: aws}}",
        )
        .err()
        .unwrap();
        assert_eq!(e.path, "providers[0].aws_access_key_id_env");
    }
}
