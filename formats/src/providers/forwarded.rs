//! OpenAI endpoints the gateway forwards as they came instead of
//! translating: legacy text completions and moderations, which only
//! OpenAI-format providers serve (`Provider::completions_request`,
//! `Provider::moderations_request`), and Responses API requests to the
//! providers that speak that API themselves (`Provider::responses_request`).
//! What the gateway reads of their answers is here: the model and usage of
//! a whole answer, and a stream relayed event by event while its usage is
//! counted ([`ForwardedStream`]).

use bytes::BytesMut;
use portcullis_types::Usage;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{ProviderKind, parse_upstream_json};
use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};

/// What a forwarded stream has read so far, whatever its API.
#[derive(Default)]
pub struct Relayed {
    sse: SseParser,
    /// Events parsed and not relayed yet.
    events: Vec<SseEvent>,
    usage: Option<Usage>,
    model: Option<String>,
    /// Events with generated output relayed so far (the first one times
    /// the first token).
    chunks: u64,
    /// The texts generated since the last `take_texts`.
    texts: Vec<String>,
    /// Whether the provider ended the stream properly.
    done: bool,
}

/// A provider's stream relayed to the client as it came, event by event,
/// while the gateway reads what it accounts for. Each API says how it
/// reads and relays its events (`relay`) and reports an error; the rest
/// is common.
pub trait ForwardedStream: Send {
    /// What was read so far.
    fn relayed(&self) -> &Relayed;
    fn relayed_mut(&mut self) -> &mut Relayed;
    /// Relays the events parsed so far to `out`, reading them on the way.
    /// An error (the provider's error event, an unreadable event) ends the
    /// stream.
    fn relay(&mut self, out: &mut BytesMut) -> Result<(), GatewayError>;
    /// Appends the error that ends a stream after part of it reached the
    /// client, the way this API reports one.
    fn error(&mut self, err: &GatewayError, out: &mut BytesMut);

    /// Feeds bytes of the provider's body; what the client gets is
    /// appended to `out`. A line over the SSE limits ends the stream too.
    fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), GatewayError> {
        let r = self.relayed_mut();
        let limit = r.sse.feed(data, &mut r.events);
        self.relay(out)?;
        limit.map_err(Into::into)
    }

    /// The provider's body ended.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let r = self.relayed_mut();
        let limit = r.sse.finish(&mut r.events);
        self.relay(out)?;
        limit.map_err(Into::into)
    }

    /// Whether the provider ended the stream properly (a stream without
    /// its end was cut).
    fn is_complete(&self) -> bool {
        self.relayed().done
    }

    /// The usage the provider reported, if it did.
    fn usage(&self) -> Option<&Usage> {
        self.relayed().usage.as_ref()
    }

    /// The model the provider named.
    fn model(&self) -> Option<&str> {
        self.relayed().model.as_deref()
    }

    /// The texts generated since the last call, in order: what a client
    /// that leaves mid-stream is charged for when no usage arrived.
    fn take_texts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.relayed_mut().texts)
    }

    /// How many events with generated output were relayed.
    fn chunks(&self) -> u64 {
        self.relayed().chunks
    }
}

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
    show_usage: bool,
    r: Relayed,
}

impl CompletionsStream {
    /// `show_usage`: whether the client asked for the usage chunk.
    pub fn new(kind: ProviderKind, show_usage: bool) -> Self {
        CompletionsStream {
            kind,
            show_usage,
            r: Relayed::default(),
        }
    }
}

impl ForwardedStream for CompletionsStream {
    fn relayed(&self) -> &Relayed {
        &self.r
    }

    fn relayed_mut(&mut self) -> &mut Relayed {
        &mut self.r
    }

    /// A completions stream ends with `[DONE]`.
    fn relay(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let r = &mut self.r;
        for ev in std::mem::take(&mut r.events) {
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                r.done = true;
                write_event(out, None, data);
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
            if r.model.is_none() && !chunk.model.is_empty() {
                r.model = Some(chunk.model);
            }
            if let Some(u) = &chunk.usage {
                r.usage.get_or_insert_with(Usage::default).merge_max(u);
                if chunk.choices.is_empty() && !self.show_usage {
                    continue;
                }
            }
            if !chunk.choices.is_empty() {
                r.chunks += 1;
                r.texts.extend(
                    chunk
                        .choices
                        .into_iter()
                        .map(|c| c.text)
                        .filter(|t| !t.is_empty()),
                );
            }
            write_event(out, None, data);
        }
        Ok(())
    }

    /// OpenAI reports errors inside a stream as a data event carrying the
    /// error envelope, without `[DONE]`.
    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        crate::sse::write_data(out, &err.to_openai_json());
    }
}

/// What the gateway reads of a Responses API `response` object (whole, or
/// inside a stream's `response.*` events).
#[derive(Deserialize, Default)]
struct ResponseObjectView {
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

/// The Responses API's usage: input and output tokens, with cached input
/// and reasoning output in their details.
#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<CachedDetail>,
    #[serde(default)]
    output_tokens_details: Option<ReasoningDetail>,
}

#[derive(Deserialize)]
struct CachedDetail {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ReasoningDetail {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<ResponsesUsage> for Usage {
    fn from(u: ResponsesUsage) -> Usage {
        let mut usage = Usage::new(u.input_tokens, u.output_tokens);
        if let Some(cached) = u.input_tokens_details.and_then(|d| d.cached_tokens) {
            usage.prompt_tokens_details = Some(portcullis_types::PromptTokensDetails {
                cached_tokens: Some(cached),
                audio_tokens: None,
            });
        }
        if let Some(reasoning) = u.output_tokens_details.and_then(|d| d.reasoning_tokens) {
            usage.completion_tokens_details = Some(portcullis_types::CompletionTokensDetails {
                reasoning_tokens: Some(reasoning),
                audio_tokens: None,
            });
        }
        usage
    }
}

/// The model and usage of a whole Responses API answer (no usage: counted
/// as zero tokens, as the provider said nothing).
pub fn responses_answer(kind: ProviderKind, body: &[u8]) -> Result<(String, Usage), GatewayError> {
    let v: ResponseObjectView = parse_upstream_json(kind, body)?;
    Ok((v.model, v.usage.map(Usage::from).unwrap_or_default()))
}

/// One event of a Responses API stream, as far as the gateway reads it.
#[derive(Deserialize)]
struct ResponsesEventView {
    #[serde(rename = "type", default)]
    kind: String,
    /// The text of `*.delta` events (other deltas, such as audio, are not
    /// text and are not counted).
    #[serde(default)]
    delta: Option<serde_json::Value>,
    #[serde(default)]
    response: Option<ResponseObjectView>,
    #[serde(default)]
    sequence_number: Option<u64>,
    /// The `error` event's message.
    #[serde(default)]
    message: Option<String>,
}

/// Relays a Responses API stream (typed events, `event:` and `data:`
/// lines) as it came, reading the model from `response.created`, the text
/// of the delta events, and the usage of the event that ends it:
/// `response.completed`, `response.incomplete` or `response.failed` (no
/// `[DONE]` in this API). An `error` event ends the stream as an error.
pub struct ResponsesStream {
    kind: ProviderKind,
    /// The last `sequence_number` relayed, so an error the gateway adds
    /// continues the numbering.
    sequence: Option<u64>,
    r: Relayed,
}

impl ResponsesStream {
    pub fn new(kind: ProviderKind) -> Self {
        ResponsesStream {
            kind,
            sequence: None,
            r: Relayed::default(),
        }
    }
}

impl ForwardedStream for ResponsesStream {
    fn relayed(&self) -> &Relayed {
        &self.r
    }

    fn relayed_mut(&mut self) -> &mut Relayed {
        &mut self.r
    }

    fn relay(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let r = &mut self.r;
        for ev in std::mem::take(&mut r.events) {
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            let event: ResponsesEventView = serde_json::from_str(data).map_err(|e| {
                GatewayError::upstream_protocol(format!(
                    "{} sent an unreadable stream event: {e}",
                    self.kind.label()
                ))
            })?;
            if event.kind == "error" {
                let message = event
                    .message
                    .as_deref()
                    .unwrap_or("an error without a message");
                return Err(GatewayError::upstream_status(
                    500,
                    format!("{} stream error: {message}", self.kind.label()),
                ));
            }
            self.sequence = event.sequence_number.or(self.sequence);
            if let Some(resp) = event.response {
                if r.model.is_none() && !resp.model.is_empty() {
                    r.model = Some(resp.model);
                }
                if let Some(u) = resp.usage {
                    r.usage = Some(u.into());
                }
            }
            match event.kind.as_str() {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    r.done = true;
                }
                k if k.ends_with(".delta") => {
                    r.chunks += 1;
                    if let Some(serde_json::Value::String(text)) = event.delta {
                        r.texts.push(text);
                    }
                }
                _ => {}
            }
            write_event(out, ev.event.as_deref(), data);
        }
        Ok(())
    }

    /// An `error` event numbered after the last event relayed, as OpenAI
    /// sends one.
    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        let body = err.body();
        let next = self.sequence.map_or(0, |n| n + 1);
        self.sequence = Some(next);
        let event = serde_json::json!({
            "type": "error",
            "code": body.code.as_deref().unwrap_or(body.kind.as_str()),
            "message": body.message,
            "param": body.param,
            "sequence_number": next,
        });
        crate::sse::write_event(out, "error", event.to_string().as_bytes());
    }
}

/// Writes one event as the provider sent it: its `event:` line if it had
/// one, a `data:` line per line (JSON may span several), then the blank
/// line that ends it.
fn write_event(out: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
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

    const RESPONSES: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1-2025\",\"status\":\"in_progress\",\"usage\":null},\"sequence_number\":0}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hel\",\"sequence_number\":1}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"lo\",\"sequence_number\":2}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1-2025\",\"status\":\"completed\",\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":3},\"total_tokens\":14}},\"sequence_number\":3}\n\n",
    );

    fn responses_usage() -> Usage {
        serde_json::from_value(serde_json::json!({
            "prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        }))
        .unwrap()
    }

    #[test]
    fn a_responses_stream_is_relayed_as_it_came_with_its_usage_read() {
        for piece in [1, 13, RESPONSES.len()] {
            let mut s = ResponsesStream::new(ProviderKind::Openai);
            let mut out = BytesMut::new();
            for p in RESPONSES.as_bytes().chunks(piece) {
                s.feed(p, &mut out).unwrap();
            }
            s.finish(&mut out).unwrap();
            assert_eq!(
                String::from_utf8(out.to_vec()).unwrap(),
                RESPONSES,
                "piece {piece}"
            );
            assert!(s.is_complete());
            assert_eq!(s.usage(), Some(&responses_usage()));
            assert_eq!((s.model(), s.chunks()), (Some("gpt-4.1-2025"), 2));
            assert_eq!(s.take_texts().concat(), "Hello");
        }
    }

    #[test]
    fn a_responses_stream_without_its_final_event_was_cut_and_errors_continue_its_numbering() {
        let cut = RESPONSES.rfind("event: response.completed").unwrap();
        let mut s = ResponsesStream::new(ProviderKind::AzureOpenai);
        let mut out = BytesMut::new();
        s.feed(&RESPONSES.as_bytes()[..cut], &mut out).unwrap();
        s.finish(&mut out).unwrap();
        assert!(!s.is_complete() && s.usage().is_none());
        let mut end = BytesMut::new();
        s.error(&GatewayError::upstream_protocol("cut"), &mut end);
        let text = String::from_utf8(end.to_vec()).unwrap();
        assert!(text.starts_with("event: error\ndata: {"), "{text}");
        assert!(text.contains("\"sequence_number\":3"), "{text}");
        let e = ResponsesStream::new(ProviderKind::Openai)
            .feed(b"event: error\ndata: {\"type\":\"error\",\"message\":\"boom\",\"sequence_number\":0}\n\n", &mut out)
            .unwrap_err();
        assert!(e.message.contains("boom"), "{}", e.message);
    }

    #[test]
    fn a_whole_responses_answer_gives_its_model_and_usage() {
        let body = br#"{"id":"resp_1","object":"response","model":"gpt-4.1-2025","output":[],"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":4},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":14}}"#;
        assert_eq!(
            responses_answer(ProviderKind::Openai, body).unwrap(),
            ("gpt-4.1-2025".to_owned(), responses_usage())
        );
        assert!(responses_answer(ProviderKind::Openai, b"{\"model\":").is_err());
    }
}
