//! Gateway settings kept by admin: what a managed gateway takes from admin
//! besides its proxies (TLS certificates, Redis, OTLP, timeouts, limits,
//! provider CA bundles, policy engine limits), for one gateway or for a
//! group of gateways.
//!
//! Admin stores them, checks them with `check` (the same rules a gateway
//! file follows) and folds them into the [`FileConfig`] it hands a gateway
//! with `apply`. Secrets among them (TLS private keys, the Redis URL,
//! which may carry a password) travel in the managed configuration's
//! `secrets`, referred to by variable name like provider keys, so the
//! configuration keeps the shape of a gateway file.
//!
//! Settings combine as JSON merge patches (RFC 7386): a `PATCH` applies to
//! the stored settings, and a gateway's own settings apply over its
//! group's, field by field.

use std::collections::BTreeMap;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    ConfigError, FileConfig, LimitsFile, PolicyEngineFile, TelemetryFile, TimeoutsFile, cfg_err,
};

/// Variable name of the Redis URL in a managed configuration's secrets.
pub const REDIS_URL_SECRET: &str = "PORTCULLIS_REDIS_URL";

/// Variable name of the `i`-th TLS private key in a managed configuration's
/// secrets.
pub fn tls_key_secret(i: usize) -> String {
    format!("PORTCULLIS_TLS_KEY_{i}")
}

/// The TLS listener's address when the settings give certificates only.
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:8443";

/// Settings of a gateway or a group of gateways. Every section is
/// optional: what is unset keeps the gateway's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Client TLS: the listener and its certificates, picked by SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Redis for policy counters and cache, shared by the replicas
    /// (`redis://` or `rediss://`). Secret: never shown back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// OTLP export, sampling, the key label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsFile>,
    /// Body and connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsFile>,
    /// Extra CA certificates (PEM) trusted for a provider's endpoint, by
    /// provider id; `*` for every provider without its own (a corporate
    /// CA in front of every provider).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provider_ca: BTreeMap<String, String>,
    /// Limits of the wasm policy engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_engine: Option<EngineLimits>,
}

/// The TLS listener of a managed gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Address of the HTTPS listener (default `0.0.0.0:8443`); the
    /// gateway's `--tls-listen` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    pub certificates: Vec<CertificatePem>,
}

/// A certificate chain and its private key, PEM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePem {
    pub cert_pem: String,
    /// Secret: never shown back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

/// The policy engine's limits (see `policy_engine` in the gateway file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_instances: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_counters: Option<usize>,
}

/// Applies `patch` to `target` as a JSON merge patch (RFC 7386): objects
/// merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Reads settings from JSON, naming the field at fault.
pub fn parse_settings(v: &Value) -> Result<GatewaySettings, ConfigError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        cfg_err(
            if path == "." { "(body)".into() } else { path },
            e.into_inner().to_string(),
        )
    })
}

fn certs_of(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it (expected `-----BEGIN CERTIFICATE-----` blocks)".into());
    }
    Ok(certs)
}

/// The certificates of a PEM bundle (a CA bundle, a certificate chain).
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    certs_of(pem)
}

/// The private key of a PEM block (PKCS#8, PKCS#1 or SEC1).
pub fn pem_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        format!("no private key in it ({e}); expected a `-----BEGIN PRIVATE KEY-----` block")
    })
}

impl GatewaySettings {
    /// Checks the settings with the rules of the gateway file; the error
    /// names the settings field at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            if let Some(l) = &tls.listen
                && l.parse::<std::net::SocketAddr>().is_err()
            {
                return Err(cfg_err(
                    "tls.listen",
                    "must be an address like 0.0.0.0:8443",
                ));
            }
            if tls.certificates.is_empty() {
                return Err(cfg_err(
                    "tls.certificates",
                    "at least one certificate is required",
                ));
            }
            for (i, c) in tls.certificates.iter().enumerate() {
                certs_of(&c.cert_pem)
                    .map_err(|m| cfg_err(format!("tls.certificates[{i}].cert_pem"), m))?;
                let key = c.key_pem.as_deref().ok_or_else(|| {
                    cfg_err(format!("tls.certificates[{i}].key_pem"), "is required")
                })?;
                pem_private_key(key)
                    .map_err(|m| cfg_err(format!("tls.certificates[{i}].key_pem"), m))?;
            }
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(cfg_err(
                "redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if let Some(t) = &self.telemetry {
            crate::build_telemetry(t)?;
        }
        let mut file = FileConfig::default();
        self.apply_limits(&mut file);
        crate::check_positive(&file)?;
        for (id, pem) in &self.provider_ca {
            certs_of(pem).map_err(|m| cfg_err(format!("provider_ca.{id}"), m))?;
        }
        if let Some(e) = &self.policy_engine {
            if e.memory_limit_mb.is_some_and(|m| !(1..=4096).contains(&m)) {
                return Err(cfg_err(
                    "policy_engine.memory_limit_mb",
                    "must be between 1 and 4096",
                ));
            }
            let zero = [
                ("policy_engine.timeout_ms", e.timeout_ms.map(|v| v as u64)),
                (
                    "policy_engine.max_instances",
                    e.max_instances.map(u64::from),
                ),
                (
                    "policy_engine.max_counters",
                    e.max_counters.map(|v| v as u64),
                ),
                (
                    "policy_engine.cache_max_bytes",
                    e.cache_max_bytes.map(|v| v as u64),
                ),
            ];
            for (path, v) in zero {
                if v == Some(0) {
                    return Err(cfg_err(path, "must be greater than 0"));
                }
            }
        }
        Ok(())
    }

    fn apply_limits(&self, file: &mut FileConfig) {
        if let Some(t) = &self.timeouts {
            file.timeouts = t.clone();
        }
        if let Some(l) = &self.limits {
            file.limits = l.clone();
        }
    }

    /// Folds the settings into the configuration admin hands a gateway;
    /// secrets go to `secrets`, named in the configuration.
    pub fn apply(&self, file: &mut FileConfig, secrets: &mut BTreeMap<String, String>) {
        if let Some(tls) = &self.tls {
            let certificates = tls
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let key_env = c.key_pem.as_ref().map(|key| {
                        secrets.insert(tls_key_secret(i), key.clone());
                        tls_key_secret(i)
                    });
                    crate::CertificateFile {
                        cert_pem: Some(c.cert_pem.clone()),
                        key_env,
                        ..Default::default()
                    }
                })
                .collect();
            file.tls = Some(crate::TlsFile {
                listen: tls
                    .listen
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TLS_LISTEN.into()),
                certificates,
            });
        }
        if let Some(t) = &self.telemetry {
            file.telemetry = t.clone();
        }
        self.apply_limits(file);
        for p in &mut file.providers {
            if let Some(pem) = self
                .provider_ca
                .get(&p.name)
                .or_else(|| self.provider_ca.get("*"))
            {
                p.ca_pem = Some(pem.clone());
            }
        }
        if self.redis_url.is_some() || self.policy_engine.is_some() {
            let engine = file
                .policy_engine
                .get_or_insert_with(PolicyEngineFile::default);
            if let Some(url) = &self.redis_url {
                secrets.insert(REDIS_URL_SECRET.into(), url.clone());
                engine.redis_url_env = Some(REDIS_URL_SECRET.into());
            }
            if let Some(l) = &self.policy_engine {
                engine.timeout_ms = l.timeout_ms.or(engine.timeout_ms);
                engine.memory_limit_mb = l.memory_limit_mb.or(engine.memory_limit_mb);
                engine.max_instances = l.max_instances.or(engine.max_instances);
                engine.reuse_instances = l.reuse_instances.or(engine.reuse_instances);
                engine.max_idle_instances = l.max_idle_instances.or(engine.max_idle_instances);
                engine.cache_max_bytes = l.cache_max_bytes.or(engine.cache_max_bytes);
                engine.max_counters = l.max_counters.or(engine.max_counters);
            }
        }
    }

    /// The secrets alone (TLS keys, the Redis URL), as a merge patch that
    /// puts them back into [`GatewaySettings::without_secrets`].
    pub fn secrets(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(url) = &self.redis_url {
            out.insert("redis_url".into(), Value::String(url.clone()));
        }
        if let Some(tls) = &self.tls {
            let keys: Vec<Value> = tls
                .certificates
                .iter()
                .map(|c| c.key_pem.clone().map_or(Value::Null, Value::String))
                .collect();
            out.insert("tls_keys".into(), Value::Array(keys));
        }
        Value::Object(out)
    }

    /// The settings without their secrets, as stored in the clear.
    pub fn without_secrets(&self) -> GatewaySettings {
        let mut s = self.clone();
        s.redis_url = None;
        if let Some(tls) = &mut s.tls {
            for c in &mut tls.certificates {
                c.key_pem = None;
            }
        }
        s
    }

    /// Puts back the secrets `secrets` (from [`GatewaySettings::secrets`]).
    pub fn with_secrets(mut self, secrets: &Value) -> GatewaySettings {
        if let Some(url) = secrets.get("redis_url").and_then(Value::as_str) {
            self.redis_url = Some(url.to_owned());
        }
        if let (Some(tls), Some(keys)) = (
            &mut self.tls,
            secrets.get("tls_keys").and_then(Value::as_array),
        ) {
            for (c, k) in tls.certificates.iter_mut().zip(keys) {
                c.key_pem = k.as_str().map(str::to_owned);
            }
        }
        self
    }

    /// What the API shows: no secret, only whether it is set.
    pub fn to_view(&self) -> Value {
        let mut v = serde_json::to_value(self.without_secrets()).unwrap_or_default();
        v["redis_url_set"] = Value::Bool(self.redis_url.is_some());
        if let (Some(tls), Some(certs)) = (
            &self.tls,
            v.pointer_mut("/tls/certificates")
                .and_then(Value::as_array_mut),
        ) {
            for (c, out) in tls.certificates.iter().zip(certs) {
                out["key_set"] = Value::Bool(c.key_pem.is_some());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 1});
        merge_patch(
            &mut t,
            &json!({"a": {"b": 3, "c": null}, "d": [3], "e": null, "f": "x"}),
        );
        assert_eq!(t, json!({"a": {"b": 3}, "d": [3], "f": "x"}));
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        let bad = |v: Value| parse_settings(&v).and_then(|s| s.check()).unwrap_err().path;
        assert_eq!(bad(json!({"timeouts": {"read_ms": 0}})), "timeouts.read_ms");
        assert_eq!(bad(json!({"redis_url": "http://x"})), "redis_url");
        assert_eq!(
            bad(json!({"telemetry": {"otlp_endpoint": "ftp://x"}})),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            bad(json!({"telemetry": {"sampling_ratio": 1.5}})),
            "telemetry.sampling_ratio"
        );
        assert_eq!(bad(json!({"provider_ca": {"p": "nope"}})), "provider_ca.p");
        assert_eq!(
            bad(json!({"policy_engine": {"memory_limit_mb": 0}})),
            "policy_engine.memory_limit_mb"
        );
        assert_eq!(
            bad(json!({"tls": {"certificates": [{"cert_pem": "x", "key_pem": "y"}]}})),
            "tls.certificates[0].cert_pem"
        );
        assert_eq!(
            bad(json!({"tls": {"listen": "nowhere", "certificates": []}})),
            "tls.listen"
        );
        assert_eq!(
            bad(json!({"limits": {"max_body_bytes": -1}})),
            "limits.max_body_bytes"
        );
        assert_eq!(bad(json!({"nope": 1})), "nope");
    }

    #[test]
    fn secrets_are_split_out_and_put_back() {
        let s = parse_settings(&json!({
            "redis_url": "redis://:pw@r:6379/0",
            "tls": {"certificates": [{"cert_pem": "C", "key_pem": "K"}]},
            "timeouts": {"read_ms": 5},
            "policy_engine": {"max_instances": 7}
        }))
        .unwrap();
        let clear = s.without_secrets();
        assert!(!serde_json::to_string(&clear).unwrap().contains("pw"));
        assert_eq!(clear.clone().with_secrets(&s.secrets()), s);
        let view = s.to_view();
        assert_eq!(view["redis_url_set"], true);
        assert_eq!(view["tls"]["certificates"][0]["key_set"], true);
        assert!(view["tls"]["certificates"][0].get("key_pem").is_none());

        let mut file: FileConfig = serde_json::from_value(serde_json::json!({"providers": [
            {"name": "own", "type": "openai"}, {"name": "other", "type": "openai"}]}))
        .unwrap();
        let mut secrets = BTreeMap::new();
        let mut s = s;
        s.provider_ca = BTreeMap::from([("own".into(), "OWN".into()), ("*".into(), "ALL".into())]);
        s.apply(&mut file, &mut secrets);
        assert_eq!(file.providers[0].ca_pem.as_deref(), Some("OWN"));
        assert_eq!(file.providers[1].ca_pem.as_deref(), Some("ALL"));
        assert_eq!(secrets[REDIS_URL_SECRET], "redis://:pw@r:6379/0");
        assert_eq!(secrets["PORTCULLIS_TLS_KEY_0"], "K");
        let tls = file.tls.unwrap();
        assert_eq!(tls.listen, DEFAULT_TLS_LISTEN);
        assert_eq!(
            tls.certificates[0].key_env.as_deref(),
            Some("PORTCULLIS_TLS_KEY_0")
        );
        assert_eq!(
            file.policy_engine
                .as_ref()
                .unwrap()
                .redis_url_env
                .as_deref(),
            Some(REDIS_URL_SECRET)
        );
        assert_eq!(file.timeouts.read_ms, Some(5));
        let engine = file.policy_engine.as_ref().unwrap();
        assert_eq!(engine.max_instances, Some(7));
    }
}
