//! Constructors and accessors on the WIT types, so policies read like
//! Rust rather than like generated bindings.

use crate::{
    Chunk, ConfigError, DirectResponse, Header, Message, PolicyInfo, Rejection, Request,
    RequestVerdict, Response, ResponseMode, ResponseVerdict, Role, Usage,
};

impl Header {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl ConfigError {
    /// A bad setting at `pointer` (a JSON pointer, `""` for the whole).
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl PolicyInfo {
    /// Only the request phase.
    pub fn request_only() -> Self {
        PolicyInfo {
            on_request: true,
            response: ResponseMode::Skip,
            on_complete: false,
        }
    }
}

impl Rejection {
    /// An OpenAI-shaped error with `status`, `type` and message.
    pub fn new(status: u16, error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            error_type: error_type.into(),
            code: None,
            param: None,
            headers: Vec::new(),
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

impl Message {
    /// The text parts joined by `\n`.
    pub fn text(&self) -> String {
        self.parts.join("\n")
    }
}

impl Request {
    /// A request header's value (names are lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every text part of every message, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.messages
            .iter()
            .flat_map(|m| m.parts.iter().map(String::as_str))
    }

    /// A request for tests and examples: one user message.
    pub fn user(model: &str, text: &str) -> Self {
        Request {
            request_id: "req-test".into(),
            proxy_id: "test".into(),
            key_id: "test-key".into(),
            format: crate::InboundFormat::Openai,
            model: model.into(),
            stream: false,
            max_tokens: None,
            messages: vec![Message {
                role: Role::User,
                parts: vec![text.into()],
            }],
            headers: Vec::new(),
            raw: String::new(),
        }
    }
}

impl Response {
    /// A 200 response with one choice, for tests and examples.
    pub fn text(model: &str, text: &str, usage: Option<Usage>) -> Self {
        Response {
            status: 200,
            model: model.into(),
            choices: vec![Message {
                role: Role::Assistant,
                parts: vec![text.into()],
            }],
            usage,
            streamed: false,
            raw: String::new(),
        }
    }

    /// The text of choice `i`.
    pub fn choice_text(&self, i: usize) -> String {
        self.choices.get(i).map(Message::text).unwrap_or_default()
    }
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

impl Chunk {
    pub fn new(choice: u32, text: impl Into<String>) -> Self {
        Chunk {
            choice,
            text: text.into(),
        }
    }
}

impl RequestVerdict {
    /// Reject with a rejection.
    pub fn reject(r: Rejection) -> Self {
        RequestVerdict::Reject(r)
    }

    /// Answer directly with a canonical chat.completion body.
    pub fn respond(status: u16, headers: Vec<Header>, body: String) -> Self {
        RequestVerdict::Respond(DirectResponse {
            status,
            headers,
            body,
        })
    }
}

impl ResponseVerdict {
    pub fn reject(r: Rejection) -> Self {
        ResponseVerdict::Reject(r)
    }
}

/// Reads settings into a typed struct, naming the JSON pointer of the
/// first bad field (serde's path, turned into a pointer).
pub fn settings<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = json_pointer(e.path());
        ConfigError::new(pointer, e.into_inner().to_string())
    })
}

/// A serde path as a JSON pointer (`/limits/0/window`).
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Limit {
        window: String,
        limit: u64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct S {
        limits: Vec<Limit>,
    }

    #[test]
    fn a_bad_setting_names_its_pointer() {
        let e = settings::<S>(serde_json::json!({"limits": [
            {"window": "minute", "limit": 5},
            {"window": "hour", "limit": "lots"}]}))
        .unwrap_err();
        assert_eq!(e.pointer, "/limits/1/limit");
        assert!(e.message.contains("lots"), "{}", e.message);
        let ok = settings::<S>(serde_json::json!({"limits": []})).unwrap();
        assert!(ok.limits.is_empty());
    }
}
