//! What a request costs: model prices per million tokens, and the cost of
//! a [`Usage`] at a price. Shared by the gateway (which computes the cost
//! of every request), admin (which checks the prices it is given) and the
//! shipped price table (`portcullis-config`).

use serde::{Deserialize, Serialize};

use crate::Usage;

/// Prices of one model, in the price table's currency (USD for the
/// shipped table) per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens not read from the provider's prompt cache.
    pub input: f64,
    /// Completion tokens (reasoning included unless `reasoning` is set).
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Reasoning tokens, a part of the completion tokens (default: `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
}

/// One line of a price table: a model name, or a prefix ending in `*`
/// (`claude-sonnet-4*` covers the dated versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    #[serde(flatten)]
    pub price: Price,
}

impl Price {
    /// The cost of `usage`: cached prompt tokens at `cached_input`, the
    /// rest at `input`; reasoning tokens at `reasoning`, the rest of the
    /// completion at `output`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(usage.prompt_tokens);
        let reasoning = usage
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(usage.completion_tokens);
        let per_token = |n: u64, price: f64| n as f64 * price / 1_000_000.0;
        per_token(usage.prompt_tokens - cached, self.input)
            + per_token(cached, self.cached_input.unwrap_or(self.input))
            + per_token(usage.completion_tokens - reasoning, self.output)
            + per_token(reasoning, self.reasoning.unwrap_or(self.output))
    }

    /// Why the price is unusable (a negative or non-finite number), naming
    /// the field, or `None`.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let fields = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("reasoning", self.reasoning),
        ];
        fields.into_iter().find_map(|(name, v)| {
            v.filter(|v| !v.is_finite() || *v < 0.0)
                .map(|_| (name, "must be a number of at least 0"))
        })
    }
}

impl PriceEntry {
    /// Whether this line covers `model`, and how specifically: an exact
    /// name beats any prefix, a longer prefix a shorter one.
    fn matches(&self, model: &str) -> Option<usize> {
        match self.model.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix).then_some(prefix.len()),
            None => (self.model == model).then_some(usize::MAX),
        }
    }

    /// Why the line is unusable, as (field, message), or `None`.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        let pattern = self.model.strip_suffix('*').unwrap_or(&self.model);
        if self.model.is_empty() || pattern.contains('*') {
            return Some((
                "model",
                "must be a model name, or a prefix ending in a single `*`",
            ));
        }
        self.price.problem()
    }
}

/// The price of `model` in `table`: its exact line, else the line with
/// the longest matching prefix.
pub fn find<'a>(table: &'a [PriceEntry], model: &str) -> Option<&'a Price> {
    table
        .iter()
        .filter_map(|e| e.matches(model).map(|rank| (rank, &e.price)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{CompletionTokensDetails, PromptTokensDetails};

    #[test]
    fn cached_and_reasoning_tokens_have_their_own_prices() {
        let p = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
            reasoning: None,
        };
        let mut u = Usage::new(1_000_000, 500_000);
        assert!((p.cost(&u) - 6.0).abs() < 1e-9);
        u.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(400_000),
            ..Default::default()
        });
        u.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: Some(100_000),
            ..Default::default()
        });
        // 600k at 2 + 400k at 0.5 + 500k (reasoning included) at 8.
        assert!((p.cost(&u) - (1.2 + 0.2 + 4.0)).abs() < 1e-9);
        let priced = Price {
            reasoning: Some(16.0),
            ..p
        };
        assert!((priced.cost(&u) - (1.2 + 0.2 + 3.2 + 1.6)).abs() < 1e-9);
    }

    #[test]
    fn the_exact_name_then_the_longest_prefix_wins() {
        let line = |model: &str, input: f64| PriceEntry {
            model: model.into(),
            price: Price {
                input,
                output: 0.0,
                cached_input: None,
                reasoning: None,
            },
        };
        let t = vec![
            line("gpt-4o*", 1.0),
            line("gpt-4o-mini*", 2.0),
            line("gpt-4o", 3.0),
        ];
        assert_eq!(find(&t, "gpt-4o").unwrap().input, 3.0);
        assert_eq!(find(&t, "gpt-4o-2024-08-06").unwrap().input, 1.0);
        assert_eq!(find(&t, "gpt-4o-mini-2024-07-18").unwrap().input, 2.0);
        assert!(find(&t, "claude").is_none());
        assert_eq!(line("a*b*", 1.0).problem().unwrap().0, "model");
        assert_eq!(line("m", -1.0).problem().unwrap().0, "input");
        assert_eq!(line("m", f64::NAN).problem().unwrap().0, "input");
        assert!(line("m*", 0.0).problem().is_none());
    }
}
