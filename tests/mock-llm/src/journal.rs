//! The request journal: every provider request the mock answered, so tests
//! can assert on what the gateway actually sent upstream (like WireMock's
//! request journal).
//!
//! `GET /_mock/requests` returns the entries oldest first; `DELETE
//! /_mock/requests` clears them. The journal keeps the newest
//! [`MAX_ENTRIES`] entries.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::Value;

/// How many entries the journal keeps; older ones are dropped first.
pub const MAX_ENTRIES: usize = 10_000;

/// Token usage the mock reported in its response, in neutral names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JournalUsage {
    /// Prompt / input tokens reported.
    pub input_tokens: u64,
    /// Completion / output tokens reported.
    pub output_tokens: u64,
}

/// One request as received and what the mock answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    /// Position of the request since the mock started, from 1. Never reused,
    /// also not after the journal is cleared; response ids embed it.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Request path, as sent (still percent-encoded).
    pub path: String,
    /// Raw query string without `?`, if any.
    pub query: Option<String>,
    /// Request headers, names lowercase; repeated headers joined by `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses, otherwise as a (lossy UTF-8) string.
    pub body: Value,
    /// Which provider dialect answered (`openai`, `azure`, `mistral`,
    /// `anthropic`, `gemini`, `bedrock`), or `unknown` for unmatched paths.
    pub provider: String,
    /// The model named by the request (body, deployment or path).
    pub model: Option<String>,
    /// Whether a streamed response was requested.
    pub stream: bool,
    /// The usage the mock reported, absent for error responses.
    pub usage: Option<JournalUsage>,
    /// HTTP status of the response; 499 when the client went away first.
    pub status: u16,
    /// When the client went away before the answer (during `delay_ms`):
    /// milliseconds since the Unix epoch, so tests compare it with their
    /// own clock. Absent for requests that were answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at_ms: Option<u64>,
}

/// A bounded list of entries, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: VecDeque<JournalEntry>,
}

impl Journal {
    /// Appends an entry, dropping the oldest beyond [`MAX_ENTRIES`].
    pub(crate) fn push(&mut self, entry: JournalEntry) {
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// A copy of all entries, oldest first.
    pub(crate) fn entries(&self) -> Vec<JournalEntry> {
        self.entries.iter().cloned().collect()
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            query: None,
            headers: BTreeMap::new(),
            body: Value::Null,
            provider: "openai".into(),
            model: None,
            stream: false,
            usage: None,
            status: 200,
            cancelled_at_ms: None,
        }
    }

    #[test]
    fn keeps_the_newest_entries_up_to_the_cap() {
        let mut journal = Journal::default();
        for seq in 1..=(MAX_ENTRIES as u64 + 5) {
            journal.push(entry(seq));
        }
        let entries = journal.entries();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries[0].seq, 6);
        assert_eq!(entries[MAX_ENTRIES - 1].seq, MAX_ENTRIES as u64 + 5);
        journal.clear();
        assert!(journal.entries().is_empty());
    }
}
