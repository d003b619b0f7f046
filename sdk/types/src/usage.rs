//! Token usage, in the OpenAI shape, with the aggregation rule streams need.
//!
//! Token counts come from providers and are not trusted: every count is
//! capped at [`MAX_TOKENS`] when it is read or built, and sums saturate,
//! so a hostile number can neither wrap (release) nor panic (debug) here,
//! nor wrap the counters and budgets that add many requests up.

use serde::{Deserialize, Deserializer, Serialize};

/// The largest token count taken from a provider (2^40, about 1.1
/// trillion): no request comes near it, and counters summing millions of
/// capped requests stay far from `u64::MAX` (and from `i64::MAX`, the
/// policies' counter type).
pub const MAX_TOKENS: u64 = 1 << 40;

/// Caps a provider's count at [`MAX_TOKENS`].
pub fn cap(tokens: u64) -> u64 {
    tokens.min(MAX_TOKENS)
}

fn capped<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(cap(u64::deserialize(d)?))
}

fn capped_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.map(cap))
}

/// Token usage of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, deserialize_with = "capped")]
    pub prompt_tokens: u64,
    #[serde(default, deserialize_with = "capped")]
    pub completion_tokens: u64,
    #[serde(default, deserialize_with = "capped")]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// Breakdown of the prompt tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(
        default,
        deserialize_with = "capped_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_tokens: Option<u64>,
    #[serde(
        default,
        deserialize_with = "capped_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio_tokens: Option<u64>,
}

/// Breakdown of the completion tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(
        default,
        deserialize_with = "capped_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning_tokens: Option<u64>,
    #[serde(
        default,
        deserialize_with = "capped_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub audio_tokens: Option<u64>,
}

impl Usage {
    /// Usage from input and output counts (capped at [`MAX_TOKENS`]),
    /// with the total filled in.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        let (prompt_tokens, completion_tokens) = (cap(prompt_tokens), cap(completion_tokens));
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            ..Default::default()
        }
    }

    /// Caps every count at [`MAX_TOKENS`] (for usage a provider adapter
    /// assembled from its own fields).
    pub fn capped(mut self) -> Self {
        self.prompt_tokens = cap(self.prompt_tokens);
        self.completion_tokens = cap(self.completion_tokens);
        self.total_tokens = cap(self.total_tokens);
        if let Some(d) = &mut self.prompt_tokens_details {
            d.cached_tokens = d.cached_tokens.map(cap);
            d.audio_tokens = d.audio_tokens.map(cap);
        }
        if let Some(d) = &mut self.completion_tokens_details {
            d.reasoning_tokens = d.reasoning_tokens.map(cap);
            d.audio_tokens = d.audio_tokens.map(cap);
        }
        self
    }

    /// Tokens served from the provider's prompt cache, if reported.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }

    /// Reasoning tokens, if reported.
    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
    }

    /// Merges usage seen in a stream into `self`, field by field, keeping
    /// the maximum. Providers report either totals once (OpenAI), or a
    /// start value and cumulative updates (Anthropic's message_start and
    /// message_delta, Gemini's usageMetadata on every chunk); the maximum
    /// is right for all of them, and never double counts.
    pub fn merge_max(&mut self, other: &Usage) {
        self.prompt_tokens = self.prompt_tokens.max(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.max(other.completion_tokens);
        let cached = self.cached_tokens().max(other.cached_tokens());
        if cached > 0 {
            self.prompt_tokens_details
                .get_or_insert_with(Default::default)
                .cached_tokens = Some(cached);
        }
        let reasoning = self.reasoning_tokens().max(other.reasoning_tokens());
        if reasoning > 0 {
            self.completion_tokens_details
                .get_or_insert_with(Default::default)
                .reasoning_tokens = Some(reasoning);
        }
        self.total_tokens = self
            .total_tokens
            .max(other.total_tokens)
            .max(self.prompt_tokens.saturating_add(self.completion_tokens));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_max_takes_cumulative_maximum_per_field() {
        // Anthropic: message_start reports input and 1 output token,
        // message_delta the final output count.
        let mut u = Usage::new(25, 1);
        u.merge_max(&Usage {
            prompt_tokens: 0,
            completion_tokens: 15,
            total_tokens: 0,
            ..Default::default()
        });
        assert_eq!(u, Usage::new(25, 15));
    }

    #[test]
    fn merge_keeps_details() {
        let mut u = Usage::default();
        let mut v = Usage::new(10, 5);
        v.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(4),
            audio_tokens: None,
        });
        u.merge_max(&v);
        assert_eq!(u.cached_tokens(), 4);
        assert_eq!(u.total_tokens, 15);
    }

    #[test]
    fn hostile_counts_are_capped_and_never_overflow() {
        // Would overflow `u64` (panic in debug, wrap in release) unchecked.
        let u = Usage::new(u64::MAX, u64::MAX);
        assert_eq!(u.prompt_tokens, MAX_TOKENS);
        assert_eq!(u.total_tokens, 2 * MAX_TOKENS);
        let mut m = Usage::new(1, 1);
        m.merge_max(&Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            total_tokens: 0,
            ..Default::default()
        });
        assert_eq!(m.total_tokens, u64::MAX, "saturates instead of wrapping");
        let parsed: Usage = serde_json::from_str(
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":5,"total_tokens":18446744073709551615,
                "prompt_tokens_details":{"cached_tokens":18446744073709551615},
                "completion_tokens_details":{"reasoning_tokens":18446744073709551615}}"#,
        )
        .unwrap();
        assert_eq!(parsed.prompt_tokens, MAX_TOKENS);
        assert_eq!(parsed.total_tokens, MAX_TOKENS);
        assert_eq!(parsed.cached_tokens(), MAX_TOKENS);
        assert_eq!(parsed.reasoning_tokens(), MAX_TOKENS);
        // Many capped requests summed stay far from wrapping a counter.
        assert!(MAX_TOKENS.checked_mul(1 << 20).is_some());
        let big = Usage {
            total_tokens: u64::MAX,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(u64::MAX),
                audio_tokens: None,
            }),
            ..Default::default()
        }
        .capped();
        assert_eq!(
            (big.total_tokens, big.cached_tokens()),
            (MAX_TOKENS, MAX_TOKENS)
        );
    }

    #[test]
    fn null_fields_parse() {
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":null}"#,
        )
        .unwrap();
        assert_eq!(u, Usage::new(3, 2));
    }
}
