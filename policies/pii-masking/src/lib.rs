//! pii-masking: finds personal data and secrets in messages.
//!
//! Per entity type the action is `mask` (replaced by `[EMAIL]`, never
//! restored), `redact` (replaced by a numbered placeholder such as
//! `[EMAIL_1]` that is put back in the response, so the provider never
//! sees the value but the client does), `block` (400 `pii_detected`), or
//! `off`. Patterns run in the host (compiled once per gateway); candidates
//! for cards and IBANs are kept only if their checksum holds, so order
//! numbers and dates are not masked.
//!
//! Streams: placeholders are restored chunk by chunk, holding back only
//! a possible partial placeholder at a chunk's end. With `scan_response`
//! the answer is scanned too, which needs the whole text: streams are
//! then held back until complete.

use std::collections::HashMap;

use portcullis_policy_sdk::host::Regex;
use portcullis_policy_sdk::{
    Chunk, ChunkVerdict, ConfigError, Message, Policy, PolicyInfo, Rejection, Request, RequestEdit,
    RequestVerdict, Response, ResponseEdit, ResponseMode, ResponseVerdict, export_policy,
    serde_json, settings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum Action {
    #[default]
    Off,
    Mask,
    Redact,
    Block,
}

#[derive(Debug, Clone, Deserialize)]
struct Custom {
    name: String,
    pattern: String,
    #[serde(default = "mask")]
    action: Action,
}

fn mask() -> Action {
    Action::Mask
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default)]
    entities: HashMap<String, Action>,
    #[serde(default)]
    custom: Vec<Custom>,
    #[serde(default)]
    scan_response: bool,
    #[serde(default = "default_block")]
    block_message: String,
}

fn default_block() -> String {
    "The request contains sensitive data ({entities}) and was blocked.".into()
}

/// How a candidate match is confirmed.
#[derive(Clone, Copy)]
enum Check {
    None,
    Luhn,
    Iban,
    Ssn,
}

/// Built-in detectors, most specific first: a span claimed by an earlier
/// detector is not matched again by a later one.
const BUILTIN: &[(&str, &str, Check)] = &[
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", Check::None),
    (
        "openai_key",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        Check::None,
    ),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
        Check::None,
    ),
    ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", Check::None),
    (
        "email",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        Check::None,
    ),
    (
        "iban",
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
        Check::Iban,
    ),
    (
        "credit_card",
        r"\b(?:[0-9][ -]?){12,18}[0-9]\b",
        Check::Luhn,
    ),
    ("ssn", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", Check::Ssn),
    (
        "ip_address",
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b",
        Check::None,
    ),
    // International numbers with `+`, `(415) 555-2671`, or `415-555-2671`:
    // bare digit groups are too often order numbers or amounts.
    (
        "phone",
        r"(?:\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,4}[ .-]?[0-9]{3,4}[ .-]?[0-9]{3,4}|\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}|\b[0-9]{3}[.-][0-9]{3}[.-][0-9]{4})\b",
        Check::None,
    ),
];

#[derive(Clone)]
struct Detector {
    entity: String,
    action: Action,
    re: Regex,
    check: Check,
}

#[derive(Clone)]
pub struct PiiMasking {
    // Shared: every request starts from a clone of the policy value.
    detectors: std::rc::Rc<Vec<Detector>>,
    /// Matches where any detector does (see `Regex::any_of`): clean text,
    /// the common case, costs one scan instead of one per detector.
    any: Option<Regex>,
    scan_response: bool,
    block_message: String,
    /// Placeholder -> original value, for this request.
    redacted: Vec<(String, String)>,
    counters: HashMap<String, u32>,
    /// Stream text held back per choice (a possible partial placeholder).
    pending: HashMap<u32, String>,
}

/// The Luhn checksum of a card number's digits.
pub fn luhn(digits: &str) -> bool {
    let ds: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// The ISO 13616 mod-97 check of an IBAN.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for d in v.to_string().chars() {
            rem = (rem * 10 + d.to_digit(10).unwrap_or(0)) % 97;
        }
    }
    rem == 1
}

fn ssn_valid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 {
        return false;
    }
    let area = parts[0];
    area != "000"
        && area != "666"
        && !area.starts_with('9')
        && parts[1] != "00"
        && parts[2] != "0000"
}

impl PiiMasking {
    /// Finds entities in `text`: (start, end, detector index), sorted, not
    /// overlapping.
    fn find(&self, text: &str) -> Vec<(usize, usize, usize)> {
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        if let Some(any) = &self.any
            && !any.is_match(text)
        {
            return found;
        }
        for (di, d) in self.detectors.iter().enumerate() {
            if d.action == Action::Off {
                continue;
            }
            for span in d.re.find_all(text) {
                let (s, e) = (span.start as usize, span.end as usize);
                let Some(m) = text.get(s..e) else { continue };
                let ok = match d.check {
                    Check::None => true,
                    Check::Luhn => luhn(m),
                    Check::Iban => iban_valid(m),
                    Check::Ssn => ssn_valid(m),
                };
                if ok && !found.iter().any(|&(fs, fe, _)| s < fe && fs < e) {
                    found.push((s, e, di));
                }
            }
        }
        found.sort();
        found
    }

    /// Applies the actions to `text`: `Ok(None)` when it has nothing to
    /// mask (most texts: neither copied nor compared), `Err` lists blocked
    /// entity types. In responses, `redact` masks: a value the model
    /// produced has no placeholder to come back from.
    fn transform(&mut self, text: &str, in_response: bool) -> Result<Option<String>, Vec<String>> {
        let found = self.find(text);
        if found.is_empty() {
            return Ok(None);
        }
        let mut blocked: Vec<String> = found
            .iter()
            .filter(|f| self.detectors[f.2].action == Action::Block)
            .map(|f| self.detectors[f.2].entity.clone())
            .collect();
        if !blocked.is_empty() {
            blocked.sort();
            blocked.dedup();
            return Err(blocked);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (s, e, di) in found {
            out.push_str(&text[last..s]);
            let label = self.detectors[di].entity.to_ascii_uppercase();
            match self.detectors[di].action {
                Action::Redact if !in_response => {
                    let value = &text[s..e];
                    let placeholder = match self.redacted.iter().find(|(_, v)| v == value) {
                        Some((p, _)) => p.clone(),
                        None => {
                            let n = self.counters.entry(label.clone()).or_insert(0);
                            *n += 1;
                            let p = format!("[{label}_{n}]");
                            self.redacted.push((p.clone(), value.to_owned()));
                            p
                        }
                    };
                    out.push_str(&placeholder);
                }
                _ => {
                    out.push('[');
                    out.push_str(&label);
                    out.push(']');
                }
            }
            last = e;
        }
        out.push_str(&text[last..]);
        Ok(Some(out))
    }

    /// Puts redacted values back.
    fn restore(&self, text: &str) -> String {
        if self.redacted.is_empty() || !text.contains('[') {
            return text.to_owned();
        }
        let mut out = text.to_owned();
        for (p, v) in &self.redacted {
            out = out.replace(p.as_str(), v);
        }
        out
    }

    fn blocked(&self, entities: &[String]) -> Rejection {
        Rejection::new(
            400,
            "invalid_request_error",
            self.block_message
                .replace("{entities}", &entities.join(", ")),
        )
        .with_code("pii_detected")
    }
}

impl Policy for PiiMasking {
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {
        let s: Settings = settings(value)?;
        let mut detectors = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        for (name, pattern, check) in BUILTIN {
            let action = s.entities.get(*name).copied().unwrap_or_default();
            if action == Action::Off {
                continue;
            }
            let re = Regex::new(pattern, false)
                .map_err(|e| ConfigError::new(format!("/entities/{name}"), e))?;
            patterns.push((*pattern).to_owned());
            detectors.push(Detector {
                entity: (*name).to_owned(),
                action,
                re,
                check: *check,
            });
        }
        for name in s.entities.keys() {
            if !BUILTIN.iter().any(|(n, _, _)| n == name) {
                return Err(ConfigError::new(
                    format!("/entities/{name}"),
                    "unknown entity type",
                ));
            }
        }
        for (i, c) in s.custom.iter().enumerate() {
            let re = Regex::new(&c.pattern, false)
                .map_err(|e| ConfigError::new(format!("/custom/{i}/pattern"), e))?;
            patterns.push(c.pattern.clone());
            // Custom patterns come first: they are the operator's own rules.
            detectors.insert(
                i,
                Detector {
                    entity: c.name.clone(),
                    action: c.action,
                    re,
                    check: Check::None,
                },
            );
        }
        // Without the prefilter (a combination too large for the host's
        // limits) every detector scans every text, as before.
        let any = Regex::any_of(&patterns, false).ok();
        Ok(PiiMasking {
            any,
            detectors: std::rc::Rc::new(detectors),
            scan_response: s.scan_response,
            block_message: s.block_message,
            redacted: Vec::new(),
            counters: HashMap::new(),
            pending: HashMap::new(),
        })
    }

    fn info(&self) -> PolicyInfo {
        let redacts = self.detectors.iter().any(|d| d.action == Action::Redact);
        PolicyInfo {
            on_request: true,
            response: if self.scan_response {
                ResponseMode::Buffer
            } else if redacts {
                ResponseMode::Stream
            } else {
                ResponseMode::Skip
            },
            on_complete: false,
        }
    }

    fn on_request(&mut self, req: &Request) -> RequestVerdict {
        // Masked texts by (message, part); the request is rebuilt only when
        // one changed.
        let mut masked: Vec<(usize, usize, String)> = Vec::new();
        for (mi, m) in req.messages.iter().enumerate() {
            for (pi, p) in m.parts.iter().enumerate() {
                match self.transform(p, false) {
                    Ok(Some(t)) => masked.push((mi, pi, t)),
                    Ok(None) => {}
                    Err(entities) => return RequestVerdict::Reject(self.blocked(&entities)),
                }
            }
        }
        if masked.is_empty() {
            return RequestVerdict::Continue(Vec::new());
        }
        let mut messages: Vec<Message> = req.messages.clone();
        for (mi, pi, t) in masked {
            messages[mi].parts[pi] = t;
        }
        RequestVerdict::Modify(RequestEdit {
            messages: Some(messages),
            raw: None,
            response_headers: Vec::new(),
        })
    }

    fn on_response(&mut self, resp: &Response) -> ResponseVerdict {
        // Nothing to scan and no placeholder to put back.
        if !self.scan_response && self.redacted.is_empty() {
            return ResponseVerdict::Continue(Vec::new());
        }
        let mut texts = Vec::new();
        let mut changed = false;
        for i in 0..resp.choices.len() {
            let text = resp.choice_text(i);
            let scanned = if self.scan_response {
                match self.transform(&text, true) {
                    Ok(t) => t.unwrap_or_else(|| text.clone()),
                    Err(entities) => {
                        let mut r = self.blocked(&entities);
                        r.message = format!(
                            "The response contained sensitive data ({}) and was withheld.",
                            entities.join(", ")
                        );
                        return ResponseVerdict::Reject(r);
                    }
                }
            } else {
                text.clone()
            };
            let restored = self.restore(&scanned);
            changed |= restored != text;
            texts.push(restored);
        }
        if !changed {
            return ResponseVerdict::Continue(Vec::new());
        }
        ResponseVerdict::Modify(ResponseEdit {
            choices: Some(texts),
            headers: Vec::new(),
        })
    }

    fn on_chunk(&mut self, chunk: &Chunk) -> ChunkVerdict {
        if self.redacted.is_empty() {
            return ChunkVerdict::Continue;
        }
        let mut text = self.pending.remove(&chunk.choice).unwrap_or_default();
        text.push_str(&chunk.text);
        // Hold back from an unclosed `[` that could still become a
        // placeholder (placeholders are short).
        let cut = match text.rfind('[') {
            Some(i) if !text[i..].contains(']') && text.len() - i <= 32 => i,
            _ => text.len(),
        };
        let (ready, rest) = text.split_at(cut);
        if !rest.is_empty() {
            self.pending.insert(chunk.choice, rest.to_owned());
        }
        ChunkVerdict::Replace(self.restore(ready))
    }

    fn on_stream_end(&mut self) -> Vec<Chunk> {
        let mut rest: Vec<(u32, String)> = self.pending.drain().collect();
        rest.sort();
        rest.into_iter()
            .map(|(choice, t)| Chunk::new(choice, self.restore(&t)))
            .collect()
    }
}

export_policy!(PiiMasking);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::serde_json::json;
    use portcullis_policy_sdk::testing::Harness;

    const MANIFEST: &str = include_str!("../policy.json");

    fn harness(overrides: serde_json::Value) -> Harness<PiiMasking> {
        Harness::with_defaults(MANIFEST, overrides).unwrap()
    }

    fn sent(v: RequestVerdict) -> String {
        match v {
            RequestVerdict::Modify(e) => e.messages.unwrap()[0].parts[0].clone(),
            RequestVerdict::Continue(_) => "(unchanged)".into(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn checksums() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(!iban_valid("DE89 3704 0044 0532 0130 01"));
        assert!(ssn_valid("123-45-6789"));
        assert!(!ssn_valid("666-45-6789"));
    }

    #[test]
    fn masks_each_entity_type() {
        let mut h = harness(json!({}));
        let text = "card 4111 1111 1111 1111, iban DE89 3704 0044 0532 0130 00, ssn 123-45-6789, ip 10.1.2.3, call +1 415 555 2671";
        let out = sent(h.request(&Request::user("m", text)));
        assert_eq!(
            out,
            "card [CREDIT_CARD], iban [IBAN], ssn [SSN], ip [IP_ADDRESS], call [PHONE]"
        );
        // Numbers that fail their checksum are left alone.
        assert_eq!(
            sent(h.request(&Request::user("m", "order 4111 1111 1111 1112"))),
            "(unchanged)"
        );
    }

    #[test]
    fn redacts_and_restores_across_chunks() {
        let mut h = harness(json!({}));
        let out = sent(h.request(&Request::user(
            "m",
            "mail jane.doe@example.com or jane.doe@example.com",
        )));
        assert_eq!(out, "mail [EMAIL_1] or [EMAIL_1]");
        // The placeholder arrives split over chunks.
        let shown = h.stream(&["Reply: [EMA", "IL_", "1] ok [", "x"]).unwrap();
        assert_eq!(shown, "Reply: jane.doe@example.com ok [x");
        let ResponseVerdict::Modify(e) = h.response(&Response::text("m", "to [EMAIL_1]", None))
        else {
            panic!()
        };
        assert_eq!(e.choices.unwrap()[0], "to jane.doe@example.com");
    }

    #[test]
    fn blocks_secrets() {
        let mut h = harness(json!({}));
        let RequestVerdict::Reject(r) = h.request(&Request::user("m", "key AKIAABCDEFGHIJKLMNOP"))
        else {
            panic!()
        };
        assert_eq!((r.status, r.code.as_deref()), (400, Some("pii_detected")));
        assert!(r.message.contains("aws_key"), "{}", r.message);
        for secret in [
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
        ] {
            assert!(
                matches!(
                    h.request(&Request::user("m", secret)),
                    RequestVerdict::Reject(_)
                ),
                "{secret}"
            );
        }
    }

    #[test]
    fn custom_patterns_and_response_scanning() {
        let mut h = harness(
            json!({"custom": [{"name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"}], "scan_response": true}),
        );
        assert_eq!(h.info().response, ResponseMode::Buffer);
        assert_eq!(
            sent(h.request(&Request::user("m", "EMP-123456 here"))),
            "[EMPLOYEE_ID] here"
        );
        let ResponseVerdict::Modify(e) =
            h.response(&Response::text("m", "reach me at bob@example.org", None))
        else {
            panic!()
        };
        assert_eq!(e.choices.unwrap()[0], "reach me at [EMAIL]");
    }

    #[test]
    fn unknown_entity_is_named() {
        let e = Harness::<PiiMasking>::new(json!({"entities": {"passport": "mask"}}))
            .err()
            .unwrap();
        assert_eq!(e.pointer, "/entities/passport");
    }
}
