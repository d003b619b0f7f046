//! The model settings of a provider (`models`, `discover_models`,
//! `aliases`), checked the same way by the gateway and by admin.

use std::collections::BTreeMap;

use crate::{ConfigError, DiscoverModelsFile, ProviderKind, cfg_err};

/// Longest accepted refresh interval (a week): past it a list would be
/// as good as fetched once.
pub const MAX_DISCOVERY_REFRESH_S: u64 = 7 * 24 * 3600;

/// Why Azure OpenAI cannot discover its models: requests name a
/// deployment, and only Azure's management API lists deployments.
pub const AZURE_DISCOVERY: &str = "azure-openai cannot discover models: requests name deployments, and Azure's data-plane API (the one the api key opens) no longer lists them; list the deployment names in `models`, and use `aliases` for client-facing names";

/// Checks a provider's model settings. `at` is the provider's path
/// (`providers[2]`, or empty for admin's provider body); errors name the
/// field, e.g. `providers[2].aliases.fast`.
pub fn check_provider_models(
    kind: ProviderKind,
    models: &[String],
    discover: Option<&DiscoverModelsFile>,
    aliases: &BTreeMap<String, String>,
    at: &str,
) -> Result<(), ConfigError> {
    let field = |f: &str| {
        if at.is_empty() {
            f.to_owned()
        } else {
            format!("{at}.{f}")
        }
    };
    let discovering = match discover.map(|d| (d, d.refresh_s())) {
        None | Some((_, None)) => false,
        Some((_, Some(_))) if kind == ProviderKind::AzureOpenai => {
            return Err(cfg_err(field("discover_models"), AZURE_DISCOVERY));
        }
        Some((DiscoverModelsFile::Settings(_), Some(s)))
            if s == 0 || s > MAX_DISCOVERY_REFRESH_S =>
        {
            return Err(cfg_err(
                field("discover_models.refresh_s"),
                format!("must be between 1 and {MAX_DISCOVERY_REFRESH_S} seconds"),
            ));
        }
        Some(_) => true,
    };
    for (alias, target) in aliases {
        let here = || field(&format!("aliases.{alias}"));
        if !is_model_name(alias) {
            return Err(cfg_err(
                field("aliases"),
                format!(
                    "`{alias}` is not a usable model name: 1 to 256 characters, without spaces"
                ),
            ));
        }
        if !is_model_name(target) {
            return Err(cfg_err(
                here(),
                "must be a provider model name: 1 to 256 characters, without spaces",
            ));
        }
        if alias == target {
            return Err(cfg_err(here(), "an alias must differ from its model"));
        }
        if models.iter().any(|m| m == alias) {
            return Err(cfg_err(
                here(),
                format!(
                    "`{alias}` is one of this provider's `models`; an alias cannot hide a model"
                ),
            ));
        }
        if aliases.contains_key(target) {
            return Err(cfg_err(
                here(),
                format!("`{target}` is itself an alias; aliases resolve once"),
            ));
        }
        // With a fixed list the target can be checked now; a discovered
        // list is only known once fetched.
        if !models.is_empty() && !discovering && !models.iter().any(|m| m == target) {
            return Err(cfg_err(
                here(),
                format!(
                    "`{target}` is not in this provider's `models`; add it there or turn on `discover_models`"
                ),
            ));
        }
    }
    Ok(())
}

/// A model name a client can send: not empty, at most 256 characters, no
/// whitespace or control characters.
pub fn is_model_name(m: &str) -> bool {
    !m.is_empty() && m.len() <= 256 && !m.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiscoverModelsSettings;

    fn aliases(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn errors_name_the_field() {
        let models = vec!["gpt-4o".to_owned()];
        let check = |kind, discover: Option<DiscoverModelsFile>, a: &[(&str, &str)]| {
            check_provider_models(
                kind,
                &models,
                discover.as_ref(),
                &aliases(a),
                "providers[1]",
            )
            .map_err(|e| e.path)
        };
        let on = Some(DiscoverModelsFile::Enabled(true));
        assert_eq!(
            check(ProviderKind::Openai, on.clone(), &[("fast", "gpt-9")]),
            Ok(())
        );
        assert_eq!(
            check(ProviderKind::Openai, None, &[("fast", "gpt-4o")]),
            Ok(())
        );
        assert_eq!(
            check(ProviderKind::Openai, None, &[("fast", "gpt-9")]),
            Err("providers[1].aliases.fast".into()),
            "a fixed list must hold the target"
        );
        assert_eq!(
            check(ProviderKind::Openai, on.clone(), &[("gpt-4o", "x")]),
            Err("providers[1].aliases.gpt-4o".into())
        );
        assert_eq!(
            check(ProviderKind::Openai, on.clone(), &[("a", "b"), ("b", "c")]),
            Err("providers[1].aliases.a".into())
        );
        assert_eq!(
            check(ProviderKind::Openai, on.clone(), &[("bad name", "x")]),
            Err("providers[1].aliases".into())
        );
        assert_eq!(
            check(ProviderKind::AzureOpenai, on, &[]),
            Err("providers[1].discover_models".into())
        );
        let every = |s| {
            Some(DiscoverModelsFile::Settings(DiscoverModelsSettings {
                refresh_s: Some(s),
            }))
        };
        assert_eq!(
            check(ProviderKind::Gemini, every(0), &[]),
            Err("providers[1].discover_models.refresh_s".into())
        );
        assert_eq!(check(ProviderKind::Gemini, every(30), &[]), Ok(()));
        // Off is off, for Azure too.
        assert_eq!(
            check(
                ProviderKind::AzureOpenai,
                Some(DiscoverModelsFile::Enabled(false)),
                &[]
            ),
            Ok(())
        );
        // Admin's paths have no provider prefix.
        let e = check_provider_models(
            ProviderKind::Openai,
            &models,
            None,
            &aliases(&[("f", "nope")]),
            "",
        )
        .unwrap_err();
        assert_eq!(e.path, "aliases.f");
    }

    #[test]
    fn discover_models_takes_a_bool_or_settings() {
        let p: crate::ProviderFile = serde_json::from_str(
            r#"{"name":"p","type":"openai","discover_models":true,"aliases":{"fast":"gpt-4o-mini"}}"#,
        )
        .unwrap();
        assert_eq!(p.discover_models.unwrap().refresh_s(), Some(600));
        let p: crate::ProviderFile = serde_json::from_str(
            r#"{"name":"p","type":"openai","discover_models":{"refresh_s":5}}"#,
        )
        .unwrap();
        assert_eq!(p.discover_models.unwrap().refresh_s(), Some(5));
        let p: crate::ProviderFile =
            serde_json::from_str(r#"{"name":"p","type":"openai","discover_models":false}"#)
                .unwrap();
        assert_eq!(p.discover_models.unwrap().refresh_s(), None);
        assert!(
            serde_json::from_str::<crate::ProviderFile>(
                r#"{"name":"p","type":"openai","discover_models":{"refresh":5}}"#
            )
            .is_err()
        );
    }
}
