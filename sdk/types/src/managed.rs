//! The contract between the admin service and the gateways it manages.
//!
//! A managed gateway long-polls `GET /api/v1/gateway/config` with its
//! gateway token and gets a [`ManagedConfig`]: the [`FileConfig`] of the
//! proxies deployed to it plus the provider secrets that config refers to
//! by environment-variable name. Secrets travel beside the config rather
//! than inside it so the config keeps the shape a standalone gateway reads
//! (where secrets come from the environment), and so one lookup function
//! serves both modes. The gateway answers with [`Heartbeat`]s that carry
//! the version it serves, if the last config failed to load why, and which
//! proxy keys it authenticated since the previous heartbeat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gateway_config::FileConfig;

/// Path of the configuration endpoint, relative to the admin base URL.
pub const CONFIG_PATH: &str = "/api/v1/gateway/config";
/// Path of the heartbeat endpoint, relative to the admin base URL.
pub const HEARTBEAT_PATH: &str = "/api/v1/gateway/heartbeat";

/// What admin hands to a managed gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedConfig {
    /// Content hash of `config` and `secrets`; also sent as the `ETag`.
    pub version: String,
    /// The gateway's configuration (listeners are the gateway's own and are left unset).
    pub config: FileConfig,
    /// Values for the environment-variable names the config refers to
    /// (provider keys, AWS credentials).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The deployments this configuration is made of.
    #[serde(default)]
    pub deployments: Vec<DeployedProxy>,
}

/// One deployment in a [`ManagedConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployedProxy {
    pub deployment_id: String,
    pub proxy_id: String,
    pub revision: i64,
}

/// What a managed gateway reports, periodically and after each load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The version being served (`None` before the first config loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Number of proxies being served.
    #[serde(default)]
    pub proxies: usize,
    /// The last configuration that failed to load, if the newest did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LoadFailure>,
    /// The keys that authenticated a request since the previous heartbeat:
    /// the key's SHA-256 (hex, as in the config's `keys[].sha256`) and
    /// when it was last used, in Unix milliseconds (to about a second).
    /// Absent from older gateways' heartbeats and when no key was used.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys_used: BTreeMap<String, i64>,
    /// Proxies of the served version the gateway could not load and left
    /// out (everything else in that version is served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_errors: Vec<ProxyLoadFailure>,
    /// Settings of the served version the gateway reads only when it
    /// starts (its TLS listener's address, connection limits, the key
    /// label), which differ from those it started with: they apply at its
    /// next restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<String>,
    /// What requests with a key spent since the previous heartbeat, per
    /// proxy, key, model and UTC day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spend: Vec<SpendRecord>,
    /// The id of the `spend` batch: a batch admin did not acknowledge is
    /// sent again under the same id, and admin adds a batch once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_batch: Option<String>,
}

/// Requests, tokens and cost of one proxy, key, model and day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendRecord {
    pub proxy_id: String,
    /// The key's id (admin's `key_...`).
    pub key_id: String,
    pub model: String,
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// In the price table's currency (USD shipped); 0 for models without a price.
    pub cost: f64,
}

/// A proxy a gateway left out of the configuration it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyLoadFailure {
    pub proxy_id: String,
    /// The field at fault, e.g. `proxies[3].routes[0].deployment`.
    pub field: String,
    pub message: String,
}

/// A configuration the gateway rejected; it keeps serving the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFailure {
    /// The rejected version.
    pub version: String,
    /// The field at fault, e.g. `proxies[3].routes[0].provider`.
    pub field: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected_and_defaults_apply() {
        let ok: ManagedConfig = serde_json::from_str(r#"{"version":"v1","config":{}}"#).unwrap();
        assert!(ok.secrets.is_empty() && ok.deployments.is_empty());
        let bad = serde_json::from_str::<ManagedConfig>(r#"{"version":"v1","config":{},"x":1}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown field `x`"));
        let hb = Heartbeat::default();
        assert_eq!(serde_json::to_string(&hb).unwrap(), r#"{"proxies":0}"#);
        // What a gateway from before `keys_used` sends still parses.
        let old: Heartbeat = serde_json::from_str(r#"{"version":"v1","proxies":2}"#).unwrap();
        assert!(old.keys_used.is_empty());
        let hb = Heartbeat {
            keys_used: BTreeMap::from([("ab".repeat(32), 1_700_000_000_123)]),
            ..Heartbeat::default()
        };
        let text = serde_json::to_string(&hb).unwrap();
        assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), hb);
    }
}
