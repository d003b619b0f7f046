//! The deterministic reply, token and embedding rules shared by every
//! provider dialect.
//!
//! Each provider module reads its own request shape into a [`Conversation`],
//! asks [`Conversation::reply`] what to answer, and renders the [`Reply`] in
//! its own wire format. Keeping the rules here means tests can predict every
//! value the mock reports, whichever provider they talk to:
//!
//! - text reply: `Mock reply from <provider> model <model>: <last user text>`;
//! - after a tool result: `Tool said: <tool result text>`;
//! - tools declared and the last message from the user: a call to the first
//!   tool with arguments `{"input":"<last user text>"}`;
//! - input tokens: whitespace-separated words of all input text, at least 1;
//! - output tokens: words of the reply text, or of the serialized tool-call
//!   arguments for a tool call;
//! - `max_tokens`: a longer text reply is cut to that many words and reports
//!   the provider's "length" finish reason;
//! - stop sequences: the text reply is cut before the first occurrence.

use serde_json::json;

/// The providers the mock imitates; the name appears in replies and in the
/// journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    OpenAi,
    Azure,
    Mistral,
    Anthropic,
    Gemini,
    Bedrock,
}

impl Provider {
    /// The lowercase name used in reply text and journal entries.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Mistral => "mistral",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
        }
    }
}

/// What the conversation ends with, which decides the kind of reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum LastTurn {
    /// A user message with this text.
    User(String),
    /// One or more tool results, their texts joined by newlines.
    ToolResults(String),
    /// Anything else (for example an assistant prefill).
    #[default]
    Other,
}

/// A request reduced to what the reply rules need, independent of the
/// provider's wire format.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conversation {
    /// Words seen so far in system text, messages and tool results.
    input_words: u64,
    /// Text of the most recent user message, wherever it is.
    pub last_user_text: String,
    /// How the conversation ends.
    pub last: LastTurn,
    /// Name of the first declared tool, unless tool use was switched off.
    pub first_tool: Option<String>,
    /// The request's output token limit, if any.
    pub max_tokens: Option<u64>,
    /// Stop sequences, in request order.
    pub stop: Vec<String>,
}

/// Why the reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The reply is complete.
    Stop,
    /// The reply was cut at `max_tokens` words.
    Length,
    /// The reply was cut before this stop sequence.
    StopSequence(String),
    /// The reply is a tool call.
    ToolCall,
}

/// The reply content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// Plain text.
    Text(String),
    /// A call to `name` with `arguments`, a compact JSON object as a string.
    ToolCall { name: String, arguments: String },
}

/// The mock's answer to one request, before rendering in a wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub content: Content,
    pub finish: Finish,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Reply {
    /// The pieces a stream sends, one per word with its trailing whitespace;
    /// their concatenation is exactly the non-streamed text or arguments.
    pub(crate) fn stream_pieces(&self) -> Vec<String> {
        match &self.content {
            Content::Text(text) => word_chunks(text),
            Content::ToolCall { arguments, .. } => word_chunks(arguments),
        }
    }

    /// The tool call arguments as a JSON value (an object), if this is a
    /// tool call.
    pub(crate) fn arguments_json(&self) -> serde_json::Value {
        match &self.content {
            Content::ToolCall { arguments, .. } => {
                serde_json::from_str(arguments).unwrap_or_else(|_| json!({}))
            }
            Content::Text(_) => json!({}),
        }
    }
}

impl Conversation {
    /// Counts the words of one piece of input text (system, message, tool
    /// result) towards the input tokens.
    pub(crate) fn add_input(&mut self, text: &str) {
        self.input_words += words(text);
    }

    /// Input tokens as reported: words of all input text, at least 1.
    pub(crate) fn input_tokens(&self) -> u64 {
        self.input_words.max(1)
    }

    /// Applies the reply rules (see the module docs).
    pub(crate) fn reply(&self, provider: Provider, model: &str) -> Reply {
        let input_tokens = self.input_tokens();
        if let (LastTurn::User(text), Some(tool)) = (&self.last, &self.first_tool) {
            let arguments = json!({ "input": text }).to_string();
            let output_tokens = words(&arguments).max(1);
            return Reply {
                content: Content::ToolCall {
                    name: tool.clone(),
                    arguments,
                },
                finish: Finish::ToolCall,
                input_tokens,
                output_tokens,
            };
        }

        let full = match &self.last {
            LastTurn::ToolResults(result) => format!("Tool said: {result}"),
            LastTurn::User(text) => reply_text(provider, model, text),
            LastTurn::Other => reply_text(provider, model, &self.last_user_text),
        };
        let (text, finish) = self.limit(full);
        let output_tokens = words(&text);
        Reply {
            content: Content::Text(text),
            finish,
            input_tokens,
            output_tokens,
        }
    }

    /// Cuts the text at the first stop sequence, then at `max_tokens` words.
    /// If both apply, the word limit wins, as it would for a model that ran
    /// out of tokens before reaching the stop sequence.
    fn limit(&self, mut text: String) -> (String, Finish) {
        let mut finish = Finish::Stop;
        let first_stop = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, sequence)) = first_stop {
            finish = Finish::StopSequence(sequence.clone());
            text.truncate(at);
        }
        if let Some(max) = self.max_tokens {
            if words(&text) > max {
                let chunks = word_chunks(&text);
                let kept: String = chunks
                    .iter()
                    .take(usize::try_from(max).unwrap_or(usize::MAX))
                    .map(String::as_str)
                    .collect();
                text = kept.trim_end().to_owned();
                finish = Finish::Length;
            }
        }
        (text, finish)
    }
}

/// The text reply for a user message.
pub(crate) fn reply_text(provider: Provider, model: &str, user_text: &str) -> String {
    format!(
        "Mock reply from {} model {model}: {user_text}",
        provider.name()
    )
}

/// Number of whitespace-separated words; the mock's token count.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits text into one piece per word, each carrying the whitespace that
/// follows it (leading whitespace stays with the first piece), so that the
/// pieces concatenate back to the input exactly.
pub(crate) fn word_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && prev_ws && seen_word {
            chunks.push(text[start..i].to_owned());
            start = i;
        }
        if !ws {
            seen_word = true;
        }
        prev_ws = ws;
    }
    if start < text.len() {
        chunks.push(text[start..].to_owned());
    }
    chunks
}

/// Embedding dimensions when the request does not ask for a size.
pub(crate) const DEFAULT_EMBEDDING_DIMS: usize = 16;
/// Largest embedding the mock produces, so a request cannot make it
/// allocate without bound.
pub(crate) const MAX_EMBEDDING_DIMS: usize = 8192;

/// A deterministic unit vector for `text`: each lowercase word is hashed
/// (FNV-1a, 64 bit) to a dimension and a sign, the counts are summed and the
/// vector is L2-normalised. Texts sharing words get similar vectors, which is
/// enough for semantic-cache tests. A text without words maps to the first
/// unit vector.
pub(crate) fn embed(text: &str, dims: usize) -> Vec<f32> {
    let dims = dims.clamp(1, MAX_EMBEDDING_DIMS);
    let mut vector = vec![0f32; dims];
    for word in text.split_whitespace() {
        let hash = fnv1a(word.to_lowercase().as_bytes());
        let index = (hash % dims as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        vector[0] = 1.0;
    } else {
        for v in &mut vector {
            *v /= norm;
        }
    }
    vector
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Conversation {
        let mut conversation = Conversation::default();
        conversation.add_input(text);
        conversation.last_user_text = text.to_owned();
        conversation.last = LastTurn::User(text.to_owned());
        conversation
    }

    #[test]
    fn word_chunks_concatenate_back_exactly() {
        assert_eq!(word_chunks("a bb  c"), ["a ", "bb  ", "c"]);
        assert_eq!(word_chunks("  lead\nnext "), ["  lead\n", "next "]);
        assert_eq!(word_chunks(""), Vec::<String>::new());
        assert_eq!(word_chunks("   "), ["   "]);
        let text = "Mock reply from openai model m: héllo  wörld\n!";
        assert_eq!(word_chunks(text).concat(), text);
        assert_eq!(word_chunks(text).len() as u64, words(text));
    }

    #[test]
    fn text_reply_echoes_the_last_user_text_and_counts_words() {
        let reply = user("hello there world").reply(Provider::OpenAi, "gpt-4o");
        assert_eq!(
            reply.content,
            Content::Text("Mock reply from openai model gpt-4o: hello there world".into())
        );
        assert_eq!(reply.finish, Finish::Stop);
        assert_eq!(reply.input_tokens, 3);
        assert_eq!(reply.output_tokens, 9);
    }

    #[test]
    fn input_tokens_are_at_least_one() {
        assert_eq!(user("").input_tokens(), 1);
    }

    #[test]
    fn max_tokens_cuts_words_and_reports_length() {
        let mut conversation = user("one two three");
        conversation.max_tokens = Some(4);
        let reply = conversation.reply(Provider::Anthropic, "claude");
        assert_eq!(
            reply.content,
            Content::Text("Mock reply from anthropic".into())
        );
        assert_eq!(reply.finish, Finish::Length);
        assert_eq!(reply.output_tokens, 4);
        assert_eq!(
            reply.stream_pieces(),
            ["Mock ", "reply ", "from ", "anthropic"]
        );
    }

    #[test]
    fn stop_sequence_cuts_before_its_first_occurrence() {
        let mut conversation = user("alpha STOP beta");
        conversation.stop = vec!["beta".into(), "STOP".into()];
        let reply = conversation.reply(Provider::Gemini, "g");
        assert_eq!(
            reply.content,
            Content::Text("Mock reply from gemini model g: alpha ".into())
        );
        assert_eq!(reply.finish, Finish::StopSequence("STOP".into()));
        assert_eq!(reply.output_tokens, 7);
    }

    #[test]
    fn declared_tools_turn_a_user_message_into_a_call_to_the_first_tool() {
        let mut conversation = user("weather in Paris");
        conversation.first_tool = Some("get_weather".into());
        let reply = conversation.reply(Provider::Bedrock, "m");
        assert_eq!(
            reply.content,
            Content::ToolCall {
                name: "get_weather".into(),
                arguments: r#"{"input":"weather in Paris"}"#.into()
            }
        );
        assert_eq!(reply.finish, Finish::ToolCall);
        assert_eq!(reply.output_tokens, 3);
        assert_eq!(reply.arguments_json(), json!({"input": "weather in Paris"}));
        assert_eq!(
            reply.stream_pieces().concat(),
            r#"{"input":"weather in Paris"}"#
        );
    }

    #[test]
    fn tool_results_are_echoed() {
        let mut conversation = Conversation {
            last: LastTurn::ToolResults("sunny, 21C".into()),
            first_tool: Some("get_weather".into()),
            ..Conversation::default()
        };
        conversation.add_input("sunny, 21C");
        let reply = conversation.reply(Provider::OpenAi, "m");
        assert_eq!(reply.content, Content::Text("Tool said: sunny, 21C".into()));
        assert_eq!(reply.output_tokens, 4);
        assert_eq!(reply.input_tokens, 2);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed("Hello world", 16);
        assert_eq!(a, embed("hello   WORLD", 16));
        assert_eq!(a.len(), 16);
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert_ne!(a, embed("something else entirely", 16));
        assert_eq!(embed("", 4), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(embed("x", 0).len(), 1);
    }
}
