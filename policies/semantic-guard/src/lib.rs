//! semantic-guard: the semantic prompt guard as a policy.
//!
//! The gateway's own prompt guard (`prompt_guard:` on a proxy, see
//! docs/routing.md) written against the policy SDK, with the same verdicts:
//! each denied topic is a set of example utterances; every non-empty user
//! message of the request (an earlier turn can carry the denied request as
//! well as the last one) is embedded and compared, by cosine similarity,
//! with every utterance; a message whose best similarity with a topic is
//! at or above that topic's threshold rejects the request (403
//! `prompt_guard_denied`, the highest-scoring topic named) before any
//! provider is called. When the embeddings endpoint fails the request is
//! refused with 503 `prompt_guard_unavailable` (fail closed), or let
//! through with `on_unavailable: allow`.
//!
//! Embeddings come from the host's `embeddings` capability (the gateway's
//! `policy_engine.embeddings` endpoint). `init` embeds every utterance, so
//! an utterance that cannot be embedded fails the configuration, naming
//! its pointer (`/topics/0/utterances/1`). `init` runs again in every new
//! instance the gateway creates; the gateway caches embeddings by text, so
//! that costs no further calls to the endpoint. The unit vectors are kept
//! behind an `Rc`, so the clone the SDK restores at the start of each
//! request copies a pointer, not the vectors.

use std::collections::HashSet;
use std::rc::Rc;

use portcullis_policy_sdk::host;
use portcullis_policy_sdk::{
    ConfigError, Policy, PolicyInfo, Rejection, Request, RequestVerdict, Role, export_policy,
    serde_json, settings,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicSettings {
    name: String,
    utterances: Vec<String>,
    /// This topic's threshold (default: the policy's).
    threshold: Option<f32>,
}

/// What to do when the embeddings endpoint cannot embed a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnUnavailable {
    /// 503 `prompt_guard_unavailable` (fail closed).
    #[default]
    Reject,
    /// Let the request through unchecked.
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Required: the defaults have none (the hub checks that the defaults
    /// validate against the schema), so `init` names it when missing.
    #[serde(default)]
    topics: Vec<TopicSettings>,
    #[serde(default = "default_threshold")]
    threshold: f32,
    #[serde(default = "default_message")]
    block_message: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    on_unavailable: OnUnavailable,
}

/// The gateway guard's default (`prompt_guard.threshold`).
fn default_threshold() -> f32 {
    0.8
}

/// The gateway guard's message.
fn default_message() -> String {
    "The prompt was rejected: it is about a denied topic (`{topic}`).".into()
}

fn default_status() -> u16 {
    403
}

/// The unit vectors of the utterances, one row each, with their topic.
#[derive(Debug, Default)]
struct Index {
    names: Vec<String>,
    thresholds: Vec<f32>,
    dims: usize,
    /// Row-major, `dims` floats per utterance.
    rows: Vec<f32>,
    row_topic: Vec<usize>,
}

impl Index {
    /// The best similarity of each topic with a unit vector (-1 for a
    /// topic no row beats that).
    fn scores(&self, unit: &[f32]) -> Vec<f32> {
        let mut best = vec![-1.0f32; self.names.len()];
        if self.dims == 0 || unit.len() != self.dims {
            return best;
        }
        for (row, &topic) in self.rows.chunks_exact(self.dims).zip(&self.row_topic) {
            let s: f32 = row.iter().zip(unit).map(|(a, b)| a * b).sum();
            if s > best[topic] {
                best[topic] = s;
            }
        }
        best
    }

    /// The highest-scoring topic among those at or above their threshold;
    /// the first listed wins a tie.
    fn best_match(&self, unit: &[f32]) -> Option<(usize, f32)> {
        let mut found: Option<(usize, f32)> = None;
        for (topic, score) in self.scores(unit).into_iter().enumerate() {
            if score >= self.thresholds[topic] && found.is_none_or(|(_, s)| score > s) {
                found = Some((topic, score));
            }
        }
        found
    }
}

/// `v` scaled to length 1; `None` for a zero or non-finite vector, which
/// has no direction to compare.
fn normalise(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

fn check_threshold(pointer: &str, t: f32) -> Result<f32, ConfigError> {
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(ConfigError::new(pointer, "must be between 0 and 1"))
    }
}

/// A user message that matched a denied topic.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Denial {
    topic: usize,
    score: f32,
    /// Position of the message in `messages`.
    message: usize,
}

#[derive(Clone)]
pub struct SemanticGuard {
    index: Rc<Index>,
    block_message: Rc<str>,
    status: u16,
    on_unavailable: OnUnavailable,
}

impl SemanticGuard {
    /// Checks the request's user messages: the worst denial, or why the
    /// prompt could not be checked.
    fn check(&self, req: &Request) -> Result<Option<Denial>, String> {
        let mut worst: Option<Denial> = None;
        for (message, m) in req.messages.iter().enumerate() {
            if m.role != Role::User {
                continue;
            }
            let text = m.text();
            if text.trim().is_empty() {
                continue;
            }
            let v = match host::embed(&text) {
                Ok(v) => v,
                // A denial already found stands; otherwise the prompt is
                // unchecked. Later messages are not tried: the endpoint
                // is failing, and each try could wait for its timeout.
                Err(e) if worst.is_none() => return Err(e),
                Err(_) => break,
            };
            if v.len() != self.index.dims {
                return Err(format!(
                    "the embeddings endpoint returned {} dimensions for the prompt and {} for the topics",
                    v.len(),
                    self.index.dims
                ));
            }
            let Some(unit) = normalise(&v) else { continue };
            if let Some((topic, score)) = self.index.best_match(&unit)
                && worst.is_none_or(|w| score > w.score)
            {
                worst = Some(Denial {
                    topic,
                    score,
                    message,
                });
            }
        }
        Ok(worst)
    }

    fn denied(&self, d: Denial) -> Rejection {
        let name = self.index.names.get(d.topic).map_or("", String::as_str);
        let mut r = Rejection::new(
            self.status,
            "invalid_request_error",
            self.block_message.replace("{topic}", name),
        )
        .with_code("prompt_guard_denied");
        r.param = Some(format!("messages[{}]", d.message));
        r
    }

    fn unavailable(cause: &str) -> Rejection {
        Rejection::new(
            503,
            "server_error",
            format!("The prompt guard could not check the prompt: {cause}"),
        )
        .with_code("prompt_guard_unavailable")
    }
}

impl Policy for SemanticGuard {
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {
        let s: Settings = settings(value)?;
        let default_threshold = check_threshold("/threshold", s.threshold)?;
        if !(400..=499).contains(&s.status) {
            return Err(ConfigError::new("/status", "must be a 4xx status"));
        }
        if s.topics.is_empty() {
            return Err(ConfigError::new(
                "/topics",
                "list at least one denied topic",
            ));
        }
        let mut index = Index::default();
        let mut names = HashSet::new();
        for (ti, t) in s.topics.iter().enumerate() {
            let at = format!("/topics/{ti}");
            if t.name.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}/name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}/name"),
                    format!("topic `{}` is listed twice", t.name),
                ));
            }
            let threshold = check_threshold(
                &format!("{at}/threshold"),
                t.threshold.unwrap_or(default_threshold),
            )?;
            // As the gateway guard: utterances trimmed, blank ones and
            // repeats skipped.
            let mut seen = HashSet::new();
            for (ui, u) in t.utterances.iter().enumerate() {
                let u = u.trim();
                if u.is_empty() || !seen.insert(u) {
                    continue;
                }
                let pointer = format!("{at}/utterances/{ui}");
                let v = host::embed(u).map_err(|e| {
                    ConfigError::new(&pointer, format!("cannot embed the utterance: {e}"))
                })?;
                let unit = normalise(&v).ok_or_else(|| {
                    ConfigError::new(
                        &pointer,
                        "the utterance was embedded as a zero vector, which matches nothing",
                    )
                })?;
                if index.rows.is_empty() {
                    index.dims = unit.len();
                } else if unit.len() != index.dims {
                    return Err(ConfigError::new(
                        &pointer,
                        format!(
                            "the embeddings endpoint returned {} dimensions for this utterance and {} for the first",
                            unit.len(),
                            index.dims
                        ),
                    ));
                }
                index.rows.extend_from_slice(&unit);
                index.row_topic.push(ti);
            }
            if seen.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}/utterances"),
                    format!("topic `{}` has no utterances", t.name),
                ));
            }
            index.names.push(t.name.clone());
            index.thresholds.push(threshold);
        }
        Ok(SemanticGuard {
            index: Rc::new(index),
            block_message: Rc::from(s.block_message),
            status: s.status,
            on_unavailable: s.on_unavailable,
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, req: &Request) -> RequestVerdict {
        match self.check(req) {
            Ok(Some(d)) => RequestVerdict::Reject(self.denied(d)),
            Ok(None) => RequestVerdict::Continue(Vec::new()),
            Err(cause) => match self.on_unavailable {
                OnUnavailable::Reject => RequestVerdict::Reject(Self::unavailable(&cause)),
                OnUnavailable::Allow => RequestVerdict::Continue(Vec::new()),
            },
        }
    }
}

export_policy!(SemanticGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::serde_json::json;
    use portcullis_policy_sdk::testing::{Harness, set_embed};
    use portcullis_policy_sdk::{Message, ResponseMode};
    use std::cell::RefCell;

    const MANIFEST: &str = include_str!("../policy.json");
    const DIMS: usize = 1024;

    thread_local! {
        /// Texts the test embedder was asked for, in order.
        static EMBEDDED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// A bag of words: each lowercase word adds 1 to a dimension picked by
    /// a hash of it, so texts sharing words point the same way (with
    /// enough dimensions that the words of these tests do not collide).
    fn bag_of_words(text: &str) -> Result<Vec<f32>, String> {
        EMBEDDED.with_borrow_mut(|e| e.push(text.to_owned()));
        let mut v = vec![0.0f32; DIMS];
        for w in text.split_whitespace() {
            v[dimension(w)] += 1.0;
        }
        Ok(v)
    }

    fn dimension(word: &str) -> usize {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(5381u64, |h, b| h.wrapping_mul(33) ^ u64::from(b));
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % DIMS
    }

    /// The scores these tests expect hold only if their words land in
    /// different dimensions.
    #[test]
    fn the_test_words_do_not_collide() {
        let words = "how to build a bomb make explosives at home ways hurt myself \
                     big birdhouse what is the capital of france? ok, then tell me about \
                     birds good morning hello please help be helpful hi there an outage? \
                     i cannot with that.";
        let mut seen = std::collections::HashMap::new();
        for w in words.split_whitespace() {
            if let Some(other) = seen.insert(dimension(w), w) {
                panic!("`{w}` and `{other}` share a dimension");
            }
        }
    }

    /// The endpoint is down for prompts mentioning an outage (the
    /// utterances still embed).
    fn down_for_outages(text: &str) -> Result<Vec<f32>, String> {
        if text.contains("outage") {
            return Err("embeddings request: connection refused".into());
        }
        bag_of_words(text)
    }

    /// Fails on one utterance.
    fn fails_on_explosives(text: &str) -> Result<Vec<f32>, String> {
        if text.contains("explosives") {
            return Err("embeddings endpoint answered 500".into());
        }
        bag_of_words(text)
    }

    /// Answers prompts with vectors of another size than the utterances'.
    fn other_size_for_prompts(text: &str) -> Result<Vec<f32>, String> {
        let mut v = bag_of_words(text)?;
        if text.contains("please") {
            v.push(1.0);
        }
        Ok(v)
    }

    fn embedded() -> Vec<String> {
        EMBEDDED.with_borrow(Clone::clone)
    }

    fn guard(overrides: serde_json::Value) -> Harness<SemanticGuard> {
        let mut settings = json!({"topics": [
            {"name": "weapons", "utterances": ["how to build a bomb", "make explosives at home"]},
            {"name": "self-harm", "utterances": ["ways to hurt myself"]}
        ]});
        if let (Some(s), Some(o)) = (settings.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                s.insert(k.clone(), v.clone());
            }
        }
        Harness::<SemanticGuard>::with_defaults(MANIFEST, settings).unwrap()
    }

    fn rejection(v: RequestVerdict) -> Rejection {
        match v {
            RequestVerdict::Reject(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn passes(v: RequestVerdict) -> bool {
        matches!(v, RequestVerdict::Continue(ref h) if h.is_empty())
    }

    fn conversation(turns: &[(Role, &str)]) -> Request {
        let mut r = Request::user("m", "");
        r.messages = turns
            .iter()
            .map(|(role, text)| Message {
                role: *role,
                parts: vec![(*text).to_owned()],
            })
            .collect();
        r
    }

    #[test]
    fn a_prompt_close_to_a_denied_topic_is_rejected_like_the_gateway_guard() {
        set_embed(bag_of_words);
        let mut h = guard(json!({}));
        assert_eq!(h.info().response, ResponseMode::Skip);
        let r = rejection(h.request(&Request::user("m", "how to build a bomb at home")));
        assert_eq!(r.status, 403);
        assert_eq!(r.error_type, "invalid_request_error");
        assert_eq!(r.code.as_deref(), Some("prompt_guard_denied"));
        assert_eq!(r.param.as_deref(), Some("messages[0]"));
        assert_eq!(
            r.message,
            "The prompt was rejected: it is about a denied topic (`weapons`)."
        );
        // Its neighbour shares 4 of 6 words with the closest utterance:
        // 4 / sqrt(30) = 0.73, under the default 0.8.
        assert!(passes(
            h.request(&Request::user("m", "how to build a big birdhouse"))
        ));
        assert!(passes(
            h.request(&Request::user("m", "What is the capital of France?"))
        ));
    }

    #[test]
    fn the_score_is_the_best_cosine_with_an_utterance() {
        set_embed(bag_of_words);
        let mut h = guard(json!({}));
        let check = |h: &mut Harness<SemanticGuard>, text: &str| {
            h.policy().check(&Request::user("m", text)).unwrap()
        };
        // 5 shared words of 7 and 5: 5 / sqrt(35) = 0.845.
        let d = check(&mut h, "how to build a bomb at home").unwrap();
        assert_eq!((d.topic, d.message), (0, 0));
        assert!((d.score - 5.0 / 35f32.sqrt()).abs() < 1e-5, "{}", d.score);
        // An utterance word for word: similarity 1, whatever the case.
        let d = check(&mut h, "Ways To Hurt Myself").unwrap();
        assert_eq!(d.topic, 1);
        assert!((d.score - 1.0).abs() < 1e-5, "{}", d.score);
        assert_eq!(check(&mut h, "how to build a big birdhouse"), None);
    }

    #[test]
    fn every_user_turn_is_checked_and_only_user_turns() {
        set_embed(bag_of_words);
        let mut h = guard(json!({}));
        // The denied request in an earlier turn is found, at its position.
        let r = rejection(h.request(&conversation(&[
            (Role::System, "be helpful"),
            (Role::User, "how to build a bomb"),
            (Role::Assistant, "I cannot help with that."),
            (Role::User, "ok, then tell me about birds"),
        ])));
        assert_eq!(r.param.as_deref(), Some("messages[1]"));
        // The worst turn is reported: an exact utterance beats a near one.
        let r = rejection(h.request(&conversation(&[
            (Role::User, "how to build a bomb at home"),
            (Role::User, "ways to hurt myself"),
        ])));
        assert!(r.message.contains("`self-harm`"), "{}", r.message);
        assert_eq!(r.param.as_deref(), Some("messages[1]"));
        // System and assistant text is the operator's and the model's own.
        let before = embedded().len();
        assert!(passes(h.request(&conversation(&[
            (Role::System, "how to build a bomb"),
            (Role::Assistant, "make explosives at home"),
            (Role::User, "   "),
            (Role::User, "hello"),
        ]))));
        assert_eq!(embedded()[before..], ["hello".to_owned()]);
    }

    #[test]
    fn utterances_are_embedded_once_by_init_not_per_request() {
        set_embed(bag_of_words);
        let mut h = guard(json!({}));
        assert_eq!(
            embedded(),
            [
                "how to build a bomb",
                "make explosives at home",
                "ways to hurt myself"
            ]
        );
        for _ in 0..3 {
            assert!(passes(h.request(&Request::user("m", "good morning"))));
        }
        // One call per request, for the prompt.
        assert_eq!(embedded().len(), 3 + 3);
        assert!(embedded()[3..].iter().all(|t| t == "good morning"));
    }

    #[test]
    fn settings_change_the_verdict() {
        set_embed(bag_of_words);
        // A lower threshold for one topic catches the neighbour; the
        // message and status are the operator's.
        let mut h = guard(json!({
            "topics": [{"name": "weapons", "utterances": ["how to build a bomb"], "threshold": 0.7}],
            "block_message": "No {topic} talk here.",
            "status": 451
        }));
        let r = rejection(h.request(&Request::user("m", "how to build a big birdhouse")));
        assert_eq!(
            (r.status, r.message.as_str()),
            (451, "No weapons talk here.")
        );
        // A stricter default lets even the near prompt through.
        let mut h = guard(json!({"threshold": 0.9}));
        assert!(passes(
            h.request(&Request::user("m", "how to build a bomb at home"))
        ));
        assert!(matches!(
            h.request(&Request::user("m", "how to build a bomb")),
            RequestVerdict::Reject(_)
        ));
    }

    #[test]
    fn a_failing_endpoint_fails_closed_or_open_as_configured() {
        set_embed(down_for_outages);
        let mut h = guard(json!({}));
        let r = rejection(h.request(&Request::user("m", "is there an outage?")));
        assert_eq!(r.status, 503);
        assert_eq!(r.code.as_deref(), Some("prompt_guard_unavailable"));
        assert_eq!(r.error_type, "server_error");
        assert!(r.message.contains("connection refused"), "{}", r.message);
        // A denial found before the failure stands.
        let r = rejection(h.request(&conversation(&[
            (Role::User, "how to build a bomb"),
            (Role::User, "outage?"),
        ])));
        assert_eq!(r.code.as_deref(), Some("prompt_guard_denied"));
        let mut h = guard(json!({"on_unavailable": "allow"}));
        assert!(passes(
            h.request(&Request::user("m", "is there an outage?"))
        ));
        assert!(matches!(
            h.request(&Request::user("m", "how to build a bomb")),
            RequestVerdict::Reject(_)
        ));
        // Vectors of another size than the topics' cannot be compared:
        // the prompt is unchecked, so it is refused.
        set_embed(other_size_for_prompts);
        let mut h = guard(json!({}));
        let r = rejection(h.request(&Request::user("m", "please help")));
        assert_eq!(r.status, 503);
        assert!(r.message.contains("1025 dimensions"), "{}", r.message);
    }

    #[test]
    fn an_utterance_that_cannot_be_embedded_names_its_pointer() {
        set_embed(fails_on_explosives);
        let e = Harness::<SemanticGuard>::with_defaults(
            MANIFEST,
            json!({"topics": [{"name": "weapons", "utterances": ["how to build a bomb", "make explosives at home"]}]}),
        )
        .err()
        .unwrap();
        assert_eq!(e.pointer, "/topics/0/utterances/1");
        assert!(e.message.contains("answered 500"), "{}", e.message);
        // Without an embeddings endpoint at all, the first one fails.
        set_embed(|_| Err("no embeddings endpoint is configured".into()));
        let e = Harness::<SemanticGuard>::with_defaults(
            MANIFEST,
            json!({"topics": [{"name": "t", "utterances": ["a"]}]}),
        )
        .err()
        .unwrap();
        assert_eq!(e.pointer, "/topics/0/utterances/0");
    }

    /// The hub refuses a manifest whose defaults do not validate against
    /// its schema; attachments are validated against it too.
    #[test]
    fn the_manifest_schema_accepts_its_defaults_and_checks_attachments() {
        use portcullis_policy_sdk::host::Schema;
        let m: serde_json::Value = serde_json::from_str(MANIFEST).unwrap();
        let schema = Schema::new(&m["settings_schema"]).unwrap();
        schema.validate(&m["defaults"].to_string()).unwrap();
        let merged = |o: serde_json::Value| {
            portcullis_policy_sdk::testing::merge_settings(&m["defaults"], &o).to_string()
        };
        schema
            .validate(&merged(
                json!({"topics": [{"name": "t", "utterances": ["u"], "threshold": 0.5}]}),
            ))
            .unwrap();
        for bad in [
            json!({"topics": []}),
            json!({"topics": [{"name": "t", "utterances": []}]}),
            json!({"topics": [{"name": "t"}]}),
            json!({"threshold": 2}),
            json!({"status": 503}),
            json!({"on_unavailable": "maybe"}),
        ] {
            assert!(schema.validate(&merged(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_topics_are_named() {
        set_embed(bag_of_words);
        let err = |settings: serde_json::Value| {
            Harness::<SemanticGuard>::with_defaults(MANIFEST, settings)
                .err()
                .unwrap()
        };
        let e = err(json!({"topics": [
            {"name": "a", "utterances": ["x"]},
            {"name": "a", "utterances": ["y"]}
        ]}));
        assert_eq!(e.pointer, "/topics/1/name");
        let e = err(json!({"topics": [{"name": "a", "utterances": ["  ", ""]}]}));
        assert_eq!(e.pointer, "/topics/0/utterances");
        let e = err(json!({"topics": [{"name": "a", "utterances": ["x"], "threshold": 1.5}]}));
        assert_eq!(e.pointer, "/topics/0/threshold");
        let e = err(json!({"topics": []}));
        assert_eq!(e.pointer, "/topics");
        let e = err(json!({"topics": [{"name": "a", "utterance": ["x"]}]}));
        assert!(e.pointer.starts_with("/topics/0"), "{}", e.pointer);
        assert!(e.message.contains("utterance"), "{}", e.message);
        let e = err(json!({}));
        assert_eq!(e.pointer, "/topics");
        assert!(e.message.contains("denied topic"), "{}", e.message);
        // Repeated and padded utterances are embedded once, trimmed.
        EMBEDDED.with_borrow_mut(Vec::clear);
        guard(json!({"topics": [{"name": "a", "utterances": [" hi there ", "hi there"]}]}));
        assert_eq!(embedded(), ["hi there"]);
    }
}
