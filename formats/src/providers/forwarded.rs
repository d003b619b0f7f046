//! OpenAI endpoints the gateway forwards as they came instead of
//! translating: legacy text completions and moderations. Only OpenAI-format
//! providers serve them (`Provider::completions_request`,
//! `Provider::moderations_request`); what the gateway reads of their
//! answers is here: the model and usage of a completion, and a completions
//! stream relayed event by event while its usage is counted.

use bytes::BytesMut;
use portcullis_types::Usage;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{ProviderKind, parse_upstream_json};
use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};

/// What the gateway reads of a `text_completion` object, whole or one
/// streamed chunk of it.
#[derive(Deserialize)]
struct CompletionView {
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<ChoiceText>,
    #[serde(default)]
    usage: Option<Usage>,
    /// Errors mid-stream come as `data: {"error": {...}}`.
    #[serde(default)]
    error: Option<IgnoredAny>,
}

/// A choice's text (absent in a whole answer's chat-shaped choices of
/// some servers: then empty).
#[derive(Deserialize)]
struct ChoiceText {
    #[serde(default)]
    text: String,
}

/// The model and usage of a whole completions answer (no usage: a server
/// that reports none is counted as zero tokens, as it said nothing).
pub fn completions_answer(
    kind: ProviderKind,
    body: &[u8],
) -> Result<(String, Usage), GatewayError> {
    let v: CompletionView = parse_upstream_json(kind, body)?;
    Ok((v.model, v.usage.unwrap_or_default()))
}

/// Relays an OpenAI-style completions stream (`data:` chunks of
/// `text_completion` objects, then `[DONE]`) as it came, chunk by chunk,
/// reading the usage and the model on the way. The usage chunk (no
/// choices) the gateway asked for on the client's behalf is dropped when
/// the client did not ask for it.
pub struct CompletionsStream {
    kind: ProviderKind,
    sse: SseParser,
    events: Vec<SseEvent>,
    show_usage: bool,
    usage: Option<Usage>,
    model: Option<String>,
    /// Chunks with choices relayed so far (the first one times the first
    /// token).
    chunks: u64,
    /// The choices' texts relayed since the last `take_texts`.
    texts: Vec<String>,
    done: bool,
}

impl CompletionsStream {
    /// `show_usage`: whether the client asked for the usage chunk.
    pub fn new(kind: ProviderKind, show_usage: bool) -> Self {
        CompletionsStream {
            kind,
            sse: SseParser::default(),
            events: Vec::new(),
            show_usage,
            usage: None,
            model: None,
            chunks: 0,
            texts: Vec::new(),
            done: false,
        }
    }

    /// Feeds bytes of the provider's body; what the client gets is appended
    /// to `out`. An error (the provider's error event, an unreadable chunk,
    /// a line over the SSE limits) ends the stream.
    pub fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let limit = self.sse.feed(data, &mut self.events);
        self.relay(out)?;
        limit.map_err(Into::into)
    }

    /// The provider's body ended.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let limit = self.sse.finish(&mut self.events);
        self.relay(out)?;
        limit.map_err(Into::into)
    }

    fn relay(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        for ev in self.events.drain(..) {
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                self.done = true;
                write_event(out, data);
                continue;
            }
            let chunk: CompletionView = serde_json::from_str(data).map_err(|e| {
                GatewayError::upstream_protocol(format!(
                    "{} sent an unreadable stream chunk: {e}",
                    self.kind.label()
                ))
            })?;
            if chunk.error.is_some() {
                let message = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "an error without a message".into());
                return Err(GatewayError::upstream_status(
                    500,
                    format!("{} stream error: {message}", self.kind.label()),
                ));
            }
            if self.model.is_none() && !chunk.model.is_empty() {
                self.model = Some(chunk.model);
            }
            if let Some(u) = &chunk.usage {
                self.usage.get_or_insert_with(Usage::default).merge_max(u);
                if chunk.choices.is_empty() && !self.show_usage {
                    continue;
                }
            }
            if !chunk.choices.is_empty() {
                self.chunks += 1;
                self.texts.extend(
                    chunk
                        .choices
                        .into_iter()
                        .map(|c| c.text)
                        .filter(|t| !t.is_empty()),
                );
            }
            write_event(out, data);
        }
        Ok(())
    }

    /// Whether the provider ended the stream with `[DONE]` (a stream
    /// without it was cut).
    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// The usage the provider reported, if it did.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The model the provider named in its chunks.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The texts generated since the last call, in order: what a client
    /// that leaves mid-stream is charged for when no usage arrived.
    pub fn take_texts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.texts)
    }

    /// How many chunks with choices were relayed.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }
}

/// Writes one event's data as the provider sent it: a `data:` line per
/// line (JSON may span several), then the blank line that ends it.
fn write_event(out: &mut BytesMut, data: &str) {
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m-1\",\"choices\":[{\"text\":\"Hel\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m-1\",\"choices\":[{\"text\":\"lo\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n",
        "data: [DONE]\n\n",
    );

    fn relay(show_usage: bool, piece: usize) -> (CompletionsStream, String) {
        let mut s = CompletionsStream::new(ProviderKind::Openai, show_usage);
        let mut out = BytesMut::new();
        for p in STREAM.as_bytes().chunks(piece) {
            s.feed(p, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        (s, String::from_utf8(out.to_vec()).unwrap())
    }

    #[test]
    fn a_stream_is_relayed_as_it_came_with_its_usage_counted() {
        for piece in [1, 7, STREAM.len()] {
            let (s, out) = relay(true, piece);
            assert_eq!(out, STREAM, "piece {piece}");
            assert!(s.is_complete());
            assert_eq!(s.usage(), Some(&Usage::new(4, 2)));
            assert_eq!((s.model(), s.chunks()), (Some("m-1"), 2));
            let mut s = s;
            assert_eq!(s.take_texts().concat(), "Hello");
        }
    }

    #[test]
    fn the_usage_chunk_the_client_did_not_ask_for_is_counted_not_shown() {
        let (s, out) = relay(false, 5);
        assert!(!out.contains("usage") && out.ends_with("data: [DONE]\n\n"));
        assert_eq!(s.usage(), Some(&Usage::new(4, 2)));
    }

    #[test]
    fn errors_and_cut_streams_are_told_apart_from_a_clean_end() {
        let mut s = CompletionsStream::new(ProviderKind::OpenaiCompatible, false);
        let mut out = BytesMut::new();
        let e = s
            .feed(b"data: {\"error\":{\"message\":\"boom\"}}\n\n", &mut out)
            .unwrap_err();
        assert!(e.message.contains("boom"), "{}", e.message);
        let mut cut = CompletionsStream::new(ProviderKind::Openai, false);
        cut.feed(&STREAM.as_bytes()[..60], &mut out).unwrap();
        assert!(!cut.is_complete());
    }

    #[test]
    fn an_event_over_several_data_lines_stays_one_event() {
        let mut s = CompletionsStream::new(ProviderKind::Openai, false);
        let mut out = BytesMut::new();
        s.feed(
            b"data: {\"model\":\"m\",\ndata: \"choices\":[{\"text\":\"a\"}]}\n\n",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            b"data: {\"model\":\"m\",\ndata: \"choices\":[{\"text\":\"a\"}]}\n\n"
        );
        assert_eq!(s.take_texts(), ["a"]);
    }

    #[test]
    fn a_whole_answer_gives_its_model_and_usage() {
        let body = br#"{"id":"cmpl-1","object":"text_completion","model":"m-2","choices":[{"text":"x","index":0}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        assert_eq!(
            completions_answer(ProviderKind::Openai, body).unwrap(),
            ("m-2".to_owned(), Usage::new(3, 1))
        );
        assert!(completions_answer(ProviderKind::Openai, b"{\"model\":").is_err());
    }
}
