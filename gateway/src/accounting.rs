//! What a request is charged when the provider did not (or could not yet)
//! report its usage: a stream the client left before its end, and
//! embeddings from providers that report no usage (Gemini).
//!
//! The estimate is the gateway's one token estimate: whitespace-separated
//! words ([`estimate_tokens_as_words`]). It undercounts English a little
//! (a token is ~0.75 words) but is stable, cheap, never zero for real
//! text, and needs no tokenizer per model. Counts the provider did report
//! always win over the estimate (per field, by maximum).

use portcullis_types::{ChatRequest, Usage};

pub use crate::providers::gemini::estimate_tokens_as_words;

/// Counts the words of a text that arrives in pieces, as if it were one
/// string: a word split across two pieces counts once.
#[derive(Debug, Default, Clone, Copy)]
pub struct WordCount {
    words: u64,
    in_word: bool,
}

impl WordCount {
    /// Adds the next piece of the text.
    pub fn feed(&mut self, piece: &str) {
        for c in piece.chars() {
            let space = c.is_whitespace();
            if !space && !self.in_word {
                self.words = self.words.saturating_add(1);
            }
            self.in_word = !space;
        }
    }

    /// Adds what one stream chunk generated: its text and tool-call
    /// arguments, for every choice.
    pub fn feed_chunk(&mut self, chunk: &portcullis_types::ChatChunk) {
        for choice in &chunk.choices {
            if let Some(text) = &choice.delta.content {
                self.feed(text);
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                if let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                    self.feed(args);
                }
            }
        }
    }

    /// Words so far.
    pub fn words(&self) -> u64 {
        self.words
    }
}

/// What a stream the client left is charged: the usage the provider
/// reported so far, with prompt tokens estimated from the request when
/// the provider had not reported them yet, and completion tokens at least
/// the words generated so far (`generated`).
pub fn charged_stream_usage(
    reported: Option<&Usage>,
    req: &ChatRequest,
    generated: &WordCount,
) -> Usage {
    charged_usage(reported, || prompt_estimate(req), generated)
}

/// What a stream the client left is charged, the prompt estimated by
/// `prompt_words` when the provider had not reported it: the rule of
/// `charged_stream_usage` for requests that are not chats (legacy
/// completions).
pub fn charged_usage(
    reported: Option<&Usage>,
    prompt_words: impl FnOnce() -> u64,
    generated: &WordCount,
) -> Usage {
    let mut u = reported.cloned().unwrap_or_default();
    if u.prompt_tokens == 0 {
        u.prompt_tokens = prompt_words().max(1);
    }
    u.completion_tokens = u.completion_tokens.max(generated.words());
    u.total_tokens = u
        .total_tokens
        .max(u.prompt_tokens.saturating_add(u.completion_tokens));
    u
}

/// The request's input text in words (every message's text), at least 1.
pub fn prompt_estimate(req: &ChatRequest) -> u64 {
    let texts: Vec<String> = req.messages.iter().map(|m| m.text_content()).collect();
    estimate_tokens_as_words(texts.iter().map(String::as_str)).max(1)
}

/// Input tokens of an embeddings request: what the provider reported, or
/// the words of its text inputs when it reported nothing (Gemini).
pub fn embeddings_input_tokens(reported: u64, req: &portcullis_types::EmbeddingsRequest) -> u64 {
    if reported > 0 {
        return reported;
    }
    req.input.texts().map(estimate_tokens_as_words).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_across_pieces_count_once() {
        let pieces = ["Mock re", "ply from", " open", "ai  ", "model\n", "x"];
        let mut w = WordCount::default();
        for piece in pieces {
            w.feed(piece);
        }
        assert_eq!(w.words(), 6, "Mock reply from openai model x");
        assert_eq!(
            w.words(),
            estimate_tokens_as_words([pieces.concat().as_str()])
        );
    }

    #[test]
    fn reported_counts_win_over_estimates() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"one two three"}]}"#,
        )
        .unwrap();
        let mut generated = WordCount::default();
        generated.feed("four words came out");
        // Nothing reported (OpenAI sends usage only at the end).
        let u = charged_stream_usage(None, &req, &generated);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 4, 9)
        );
        // Anthropic reported the input and a partial output count.
        let reported = Usage::new(40, 2);
        let u = charged_stream_usage(Some(&reported), &req, &generated);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (40, 4, 44)
        );
        let reported = Usage::new(40, 9);
        let u = charged_stream_usage(Some(&reported), &req, &generated);
        assert_eq!(u.completion_tokens, 9);
    }

    #[test]
    fn embeddings_without_usage_are_estimated() {
        let req: portcullis_types::EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"e","input":["a b","c d e"]}"#).unwrap();
        assert_eq!(embeddings_input_tokens(0, &req), 5);
        assert_eq!(embeddings_input_tokens(7, &req), 7);
    }
}
