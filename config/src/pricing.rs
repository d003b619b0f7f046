//! The price table shipped with Portcullis (`prices.json`: list prices per
//! million tokens of the common models of each provider type, dated), and
//! the checks of the prices a configuration or admin adds over it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::{ConfigError, ProviderKind, cfg_err};
pub use portcullis_types::pricing::{Price, PriceEntry, find};

/// The shipped table.
#[derive(Debug, Deserialize)]
pub struct PriceTable {
    /// The day the prices were read off the providers' pages.
    pub as_of: String,
    pub currency: String,
    /// By provider type label (`openai`, `anthropic`, ...).
    pub providers: BTreeMap<String, Vec<PriceEntry>>,
}

/// The shipped table, parsed once.
pub fn shipped() -> &'static PriceTable {
    static TABLE: OnceLock<PriceTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Checked by a test; the file is part of the binary.
        serde_json::from_str(include_str!("prices.json")).expect("config/src/prices.json")
    })
}

/// The shipped prices for a provider type. Azure OpenAI deployments are
/// priced as the OpenAI model of the same name (deployments are commonly
/// named after their model; a `prices` list on the provider says
/// otherwise); OpenAI-compatible servers have no list price.
pub fn shipped_for(kind: ProviderKind) -> &'static [PriceEntry] {
    let label = match kind {
        ProviderKind::AzureOpenai => "openai",
        other => other.label(),
    };
    shipped()
        .providers
        .get(label)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Checks prices given at `at` (e.g. `providers[2].prices`), naming the
/// field at fault.
pub fn check_prices(prices: &[PriceEntry], at: &str) -> Result<(), ConfigError> {
    for (i, p) in prices.iter().enumerate() {
        if let Some((field, message)) = p.problem() {
            return Err(cfg_err(format!("{at}[{i}].{field}"), message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_loads_and_prices_each_provider_type() {
        let t = shipped();
        assert_eq!(t.currency, "USD");
        for (label, entries) in &t.providers {
            check_prices(entries, label).unwrap();
        }
        let gpt = find(shipped_for(ProviderKind::Openai), "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!((gpt.input, gpt.output), (0.15, 0.6));
        assert!(find(shipped_for(ProviderKind::AzureOpenai), "gpt-4o").is_some());
        assert!(find(shipped_for(ProviderKind::Anthropic), "claude-sonnet-4-5").is_some());
        assert!(find(shipped_for(ProviderKind::Gemini), "gemini-2.5-flash").is_some());
        assert!(find(shipped_for(ProviderKind::Mistral), "mistral-small-latest").is_some());
        assert!(
            find(
                shipped_for(ProviderKind::Bedrock),
                "anthropic.claude-3-5-sonnet-20240620-v1:0"
            )
            .is_some()
        );
        assert!(shipped_for(ProviderKind::OpenaiCompatible).is_empty());
    }

    #[test]
    fn bad_prices_name_their_field() {
        let bad: Vec<PriceEntry> =
            serde_json::from_str(r#"[{"model": "m", "input": 1, "output": -2}]"#).unwrap();
        let e = check_prices(&bad, "providers[0].prices").unwrap_err();
        assert_eq!(e.path, "providers[0].prices[0].output");
        let not_a_number = serde_json::from_str::<Vec<PriceEntry>>(
            r#"[{"model": "m", "input": "cheap", "output": 1}]"#,
        );
        assert!(not_a_number.is_err());
    }
}
