//! Token usage, in the OpenAI shape, with the aggregation rule streams need.

use serde::{Deserialize, Serialize};

/// Token usage of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// Breakdown of the prompt tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
}

/// Breakdown of the completion tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
}

impl Usage {
    /// Usage from input and output counts, with the total filled in.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Default::default()
        }
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
            .max(self.prompt_tokens + self.completion_tokens);
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
    fn null_fields_parse() {
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":null}"#,
        )
        .unwrap();
        assert_eq!(u, Usage::new(3, 2));
    }
}
