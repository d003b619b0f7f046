//! Injected behaviours: errors, latency and broken streams on demand, so
//! tests can exercise retries, fallbacks, timeouts and stream accounting.
//!
//! `POST /_mock/behaviour` queues one behaviour (a JSON object) or several
//! (a JSON array); `GET /_mock/behaviour` lists the queue; `DELETE
//! /_mock/behaviour` empties it. For each provider request the first queued
//! behaviour whose `path_contains` matches the request path applies. A
//! behaviour with `times` applies to that many matching requests and is then
//! removed; without `times` it stays until reset.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to do to matching requests. Every field is optional; an empty
/// behaviour changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Answer with this HTTP status instead of a reply. 4xx and 5xx bodies
    /// use the provider's error shape unless `body` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The JSON body to send with `status`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Seconds for the `retry-after` header. A 429 without it carries
    /// `retry-after: 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Milliseconds to wait before sending the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Milliseconds to wait between stream chunks (events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Close a streamed response abruptly after this many chunks (events),
    /// without the provider's terminator. Non-streamed responses ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_after_chunks: Option<usize>,
    /// Apply to the next `times` matching requests, then remove the
    /// behaviour. Absent: apply until reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Only requests whose path contains this string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// Only requests with this method match (`GET` tells a model list
    /// from the calls under the same path, e.g. Gemini's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Behaviour {
    /// Checks the values a test could get wrong; the message names the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status {
            if !(200..=599).contains(&status) {
                return Err(format!(
                    "status: {status} is not an HTTP status in 200..=599"
                ));
            }
        }
        if self.times == Some(0) {
            return Err("times: must be at least 1".into());
        }
        Ok(())
    }

    /// The error status to answer with, if this behaviour injects one.
    pub(crate) fn error_status(&self) -> Option<u16> {
        self.status.filter(|s| *s >= 400)
    }

    /// Whether the behaviour applies to a `method` request for `path`.
    fn matches(&self, method: &str, path: &str) -> bool {
        self.path_contains
            .as_deref()
            .is_none_or(|needle| path.contains(needle))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// The queue of behaviours, first match wins.
#[derive(Debug, Default)]
pub(crate) struct Behaviours {
    queue: Vec<Behaviour>,
}

impl Behaviours {
    /// Appends behaviours at the end of the queue.
    pub(crate) fn extend(&mut self, behaviours: Vec<Behaviour>) {
        self.queue.extend(behaviours);
    }

    /// The queued behaviours, in match order.
    pub(crate) fn list(&self) -> Vec<Behaviour> {
        self.queue.clone()
    }

    /// Empties the queue.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// The behaviour for a `method` request to `path`, using up one of
    /// its `times`.
    pub(crate) fn take_for(&mut self, method: &str, path: &str) -> Option<Behaviour> {
        let index = self.queue.iter().position(|b| b.matches(method, path))?;
        let behaviour = self.queue[index].clone();
        if let Some(times) = &mut self.queue[index].times {
            *times -= 1;
            if *times == 0 {
                self.queue.remove(index);
            }
        }
        Some(behaviour)
    }
}

/// Parses the body of `POST /_mock/behaviour`: one behaviour or an array.
pub(crate) fn parse_request(body: &[u8]) -> Result<Vec<Behaviour>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let behaviours = if value.is_array() {
        serde_json::from_value::<Vec<Behaviour>>(value)
    } else {
        serde_json::from_value::<Behaviour>(value).map(|b| vec![b])
    }
    .map_err(|e| e.to_string())?;
    for behaviour in &behaviours {
        behaviour.validate()?;
    }
    Ok(behaviours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_times_run_out() {
        let mut behaviours = Behaviours::default();
        behaviours.extend(vec![
            Behaviour {
                status: Some(429),
                times: Some(2),
                path_contains: Some("/v1/messages".into()),
                ..Behaviour::default()
            },
            Behaviour {
                status: Some(500),
                ..Behaviour::default()
            },
        ]);
        let status =
            |b: &mut Behaviours, path: &str| b.take_for("POST", path).and_then(|b| b.status);
        assert_eq!(status(&mut behaviours, "/v1/chat/completions"), Some(500));
        assert_eq!(status(&mut behaviours, "/v1/messages"), Some(429));
        assert_eq!(status(&mut behaviours, "/v1/messages"), Some(429));
        assert_eq!(status(&mut behaviours, "/v1/messages"), Some(500));
        assert_eq!(behaviours.list().len(), 1);
        behaviours.clear();
        assert_eq!(behaviours.take_for("POST", "/v1/messages"), None);
    }

    #[test]
    fn a_method_narrows_the_match() {
        let mut behaviours = Behaviours::default();
        behaviours.extend(vec![Behaviour {
            status: Some(503),
            method: Some("GET".into()),
            path_contains: Some("/v1beta/models".into()),
            ..Behaviour::default()
        }]);
        assert_eq!(
            behaviours.take_for("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
            None
        );
        assert_eq!(
            behaviours
                .take_for("GET", "/v1beta/models")
                .and_then(|b| b.status),
            Some(503)
        );
    }

    #[test]
    fn parse_accepts_an_object_or_an_array_and_names_bad_fields() {
        assert_eq!(parse_request(br#"{"status":503}"#).unwrap().len(), 1);
        assert_eq!(
            parse_request(br#"[{"delay_ms":5},{"cut_after_chunks":2}]"#)
                .unwrap()
                .len(),
            2
        );
        assert!(
            parse_request(br#"{"stauts":503}"#)
                .unwrap_err()
                .contains("stauts")
        );
        assert!(
            parse_request(br#"{"status":99}"#)
                .unwrap_err()
                .starts_with("status")
        );
        assert!(
            parse_request(br#"{"times":0}"#)
                .unwrap_err()
                .starts_with("times")
        );
        assert!(parse_request(b"{").unwrap_err().starts_with("invalid JSON"));
    }
}
