//! One request/response exchange, shared by every provider dialect: reading
//! the request, applying the matching behaviour (injected error, delays,
//! cut streams), recording the journal entry and building the response.
//!
//! Provider handlers are plain functions from an [`Exchange`] to an
//! [`Outcome`]; they never sleep or touch shared state themselves, which
//! keeps the wire-format code free of plumbing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::behaviour::{Behaviour, Behaviours};
use crate::errors::{self, ApiError};
use crate::journal::{Journal, JournalEntry, JournalUsage};
use crate::reply::{Provider, Reply};

/// State shared by all requests of one mock instance.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    journal: Mutex<Journal>,
    behaviours: Mutex<Behaviours>,
    /// The model lists the providers serve.
    model_lists: Mutex<crate::models::ModelLists>,
    /// Credentials issued by the identity endpoints (`identity`).
    identity: Mutex<crate::identity::Identity>,
    /// Last sequence number handed out; requests are numbered from 1.
    last_seq: AtomicU64,
    /// TCP connections accepted: tests tell from it whether the gateway
    /// reuses its provider connections.
    accepted: AtomicU64,
}

/// Locks a mutex, ignoring poisoning: the guarded data stays consistent
/// because no code panics while holding these locks.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        lock(&self.journal)
    }

    pub(crate) fn behaviours(&self) -> MutexGuard<'_, Behaviours> {
        lock(&self.behaviours)
    }

    pub(crate) fn model_lists(&self) -> MutexGuard<'_, crate::models::ModelLists> {
        lock(&self.model_lists)
    }

    pub(crate) fn identity(&self) -> MutexGuard<'_, crate::identity::Identity> {
        lock(&self.identity)
    }

    pub(crate) fn connection_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    fn next_seq(&self) -> u64 {
        self.last_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Journals a request no provider route matched, and answers 404 the way
    /// OpenAI does for unknown URLs.
    pub(crate) fn unknown_route(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let seq = self.next_seq();
        self.journal().push(JournalEntry {
            seq,
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: header_map(headers),
            body: body_value(body),
            provider: "unknown".into(),
            model: None,
            stream: false,
            usage: None,
            status: 404,
            cancelled_at_ms: None,
        });
        let error = ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Invalid URL ({} {})", method, uri.path()),
        );
        errors::render(Provider::OpenAi, seq, &error)
    }
}

/// What a provider handler answers, before behaviours and plumbing.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A 200 JSON body, with the usage it reports.
    Json {
        body: Value,
        usage: Option<JournalUsage>,
    },
    /// An error in the provider's shape.
    Error(ApiError),
    /// A streamed body: one frame per chunk (SSE event, JSON array element
    /// or event-stream message).
    Stream {
        content_type: &'static str,
        frames: Vec<Bytes>,
        usage: JournalUsage,
    },
}

impl Outcome {
    /// A 200 JSON body reporting `reply`'s usage.
    pub(crate) fn json(body: Value, reply: &Reply) -> Self {
        Self::Json {
            body,
            usage: Some(usage_of(reply)),
        }
    }

    /// A stream reporting `reply`'s usage.
    pub(crate) fn stream(content_type: &'static str, frames: Vec<Bytes>, reply: &Reply) -> Self {
        Self::Stream {
            content_type,
            frames,
            usage: usage_of(reply),
        }
    }
}

/// The usage a reply reports, in journal form.
pub(crate) fn usage_of(reply: &Reply) -> JournalUsage {
    JournalUsage {
        input_tokens: reply.input_tokens,
        output_tokens: reply.output_tokens,
    }
}

/// One request being answered.
pub(crate) struct Exchange {
    shared: Arc<Shared>,
    /// Sequence number of this request; response ids embed it.
    pub seq: u64,
    pub provider: Provider,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// The model, once the handler knows it (journal).
    pub model: Option<String>,
    /// Whether the client asked for a stream (journal).
    pub stream: bool,
    /// The behaviour that applies, or the empty one.
    behaviour: Behaviour,
}

impl Exchange {
    /// Starts an exchange, numbering the request and taking the behaviour
    /// that matches its path.
    pub(crate) fn begin(
        shared: &Arc<Shared>,
        provider: Provider,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        let seq = shared.next_seq();
        let behaviour = shared
            .behaviours()
            .take_for(method.as_str(), uri.path())
            .unwrap_or_default();
        tracing::debug!(seq, provider = provider.name(), %method, %uri, "mock LLM request");
        Self {
            shared: Arc::clone(shared),
            seq,
            provider,
            method,
            uri,
            headers,
            body,
            model: None,
            stream: false,
            behaviour,
        }
    }

    /// The model lists as the test set them.
    pub(crate) fn model_lists(&self) -> crate::models::ModelLists {
        self.shared.model_lists().clone()
    }

    /// The request path, still percent-encoded.
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }

    /// A request header's value, trimmed; `None` if absent, empty or not
    /// visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// The token of an `Authorization: Bearer <token>` header, if non-empty.
    pub(crate) fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// A query parameter, percent-decoded; the first one wins.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true) == name).then(|| percent_decode(value, true))
        })
    }

    /// The body as a JSON object, or `None` if it is not one.
    pub(crate) fn json_object(&self) -> Option<Map<String, Value>> {
        match serde_json::from_slice(&self.body) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// Runs `handler`, applies the behaviour, journals the exchange and
    /// builds the response.
    ///
    /// The handler always runs, even when an error is injected, so the
    /// journal knows the model and stream flag of failed requests too.
    pub(crate) async fn run(mut self, handler: impl FnOnce(&mut Self) -> Outcome) -> Response {
        let mut outcome = handler(&mut self);
        let behaviour = std::mem::take(&mut self.behaviour);

        let mut injected = None;
        if let Some(status) = behaviour.error_status() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            injected = Some(status);
            outcome = Outcome::Error(ApiError::injected(self.provider, status));
        }

        if let Some(ms) = behaviour.delay_ms.filter(|ms| *ms > 0) {
            // A client that leaves while the provider "thinks" closes the
            // connection, and the server drops this future: the guard
            // journals the request as cancelled, with when it happened.
            let mut guard = Cancellation {
                exchange: &self,
                answered: false,
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            guard.answered = true;
        }

        let (status, usage, mut response) = match (outcome, &behaviour.body, behaviour.status) {
            // A verbatim body replaces whatever the provider would have sent.
            (outcome, Some(body), Some(code)) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let usage = match (&outcome, injected) {
                    (Outcome::Json { usage, .. }, None) => *usage,
                    _ => None,
                };
                let response = errors::render_custom(self.provider, status, body.clone());
                (status, usage, response)
            }
            (Outcome::Json { body, usage }, _, _) => {
                (StatusCode::OK, usage, axum::Json(body).into_response())
            }
            (Outcome::Error(error), _, _) => {
                let response = errors::render(self.provider, self.seq, &error);
                (error.status, None, response)
            }
            (
                Outcome::Stream {
                    content_type,
                    frames,
                    usage,
                },
                _,
                _,
            ) => {
                let body =
                    stream_body(frames, behaviour.chunk_delay_ms, behaviour.cut_after_chunks);
                let mut response = Response::new(body);
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                (StatusCode::OK, Some(usage), response)
            }
        };
        *response.status_mut() = status;

        if let Some(status) = injected {
            let retry_after = behaviour
                .retry_after
                .or((status == StatusCode::TOO_MANY_REQUESTS).then_some(1));
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        self.add_request_id(&mut response);
        self.record(status, usage);
        response
    }

    /// Adds the provider's request-id header.
    fn add_request_id(&self, response: &mut Response) {
        let name = match self.provider {
            Provider::Anthropic => "request-id",
            Provider::Bedrock => "x-amzn-requestid",
            Provider::Gemini => return,
            Provider::OpenAi | Provider::Azure | Provider::Mistral => "x-request-id",
        };
        let id = errors::request_id(self.provider, self.seq);
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(name, value);
        }
    }

    fn record(&self, status: StatusCode, usage: Option<JournalUsage>) {
        self.record_entry(status.as_u16(), usage, None);
    }

    fn record_entry(&self, status: u16, usage: Option<JournalUsage>, cancelled_at_ms: Option<u64>) {
        let entry = JournalEntry {
            seq: self.seq,
            method: self.method.to_string(),
            path: self.uri.path().to_owned(),
            query: self.uri.query().map(str::to_owned),
            headers: header_map(&self.headers),
            body: body_value(&self.body),
            provider: self.provider.name().to_owned(),
            model: self.model.clone(),
            stream: self.stream,
            usage,
            status,
            cancelled_at_ms,
        };
        self.shared.journal().push(entry);
    }
}

/// Journals its exchange as cancelled by the client (status 499, as
/// nginx logs it) when dropped before the answer is on its way.
struct Cancellation<'a> {
    exchange: &'a Exchange,
    answered: bool,
}

impl Drop for Cancellation<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        tracing::debug!(
            seq = self.exchange.seq,
            "mock LLM request cancelled by the client"
        );
        self.exchange.record_entry(499, None, Some(now));
    }
}

/// Headers as a map of lowercase names to values; repeats joined by `, `.
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

/// The body as JSON if it parses, otherwise as a string (empty: null).
fn body_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// How long a cut stream pauses before failing, so the frames before the
/// cut reach the client.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

/// A streamed body sending `frames` with `chunk_delay_ms` between them. With
/// `cut_after`, the body fails after that many frames, which makes the server
/// drop the connection without the final empty chunk: the client sees a
/// truncated response, as when a provider connection breaks.
fn stream_body(frames: Vec<Bytes>, chunk_delay_ms: Option<u64>, cut_after: Option<usize>) -> Body {
    struct State {
        frames: std::vec::IntoIter<Bytes>,
        sent: usize,
        done: bool,
    }
    let delay = chunk_delay_ms
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let state = State {
        frames: frames.into_iter(),
        sent: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        if cut_after.is_some_and(|n| state.sent >= n) {
            state.done = true;
            // hyper flushes what it has written when the body is pending; an
            // error right away would drop the frames still in its buffer.
            tokio::time::sleep(FLUSH_BEFORE_CUT).await;
            let cut = std::io::Error::other("mock LLM: stream cut by behaviour");
            return Some((Err(cut), state));
        }
        let frame = state.frames.next()?;
        if let (Some(delay), true) = (delay, state.sent > 0) {
            tokio::time::sleep(delay).await;
        }
        state.sent += 1;
        Some((Ok::<_, std::io::Error>(frame), state))
    });
    Body::from_stream(stream)
}

/// `data: <json>\n\n`, one SSE event without a name.
pub(crate) fn sse_data(json: &Value) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// `event: <name>\ndata: <json>\n\n`, one named SSE event.
pub(crate) fn sse_event(name: &str, json: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`, for query
/// strings). Invalid escapes stay as they are; invalid UTF-8 is replaced.
pub(crate) fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("us.anthropic.claude%3A0%2Fx", false),
            "us.anthropic.claude:0/x"
        );
        assert_eq!(percent_decode("a+b%20c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%C3%A9", false), "é");
    }

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        assert_eq!(header_map(&headers)["x-a"], "1, 2");
    }
}
