//! The semantic prompt guard: rejects a prompt that is close to a denied
//! topic, with a 403 in the OpenAI error envelope, before any provider is
//! called.
//!
//! The gateway runs it itself, right before routing. It is written as a
//! policy would be: it reads the request's user messages, gets embeddings
//! from the host (here the [`Embedder`](crate::semantic::Embedder) the
//! router also uses, so a request costs one embedding call for both), and
//! returns a verdict; it keeps no state of its own. The same guard as a
//! policy in the chain, on the engine's `embeddings` capability, is the
//! built-in `semantic-guard` (`policies/semantic-guard`), which answers
//! the same 403 `prompt_guard_denied` and 503 `prompt_guard_unavailable`.

use portcullis_types::{ChatRequest, Role};

use crate::config::GuardOnError;
use crate::error::{ErrorKind, ErrorSource, GatewayError};
use crate::semantic::{TopicIndex, normalise};

/// A proxy's guard settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptGuard {
    /// Names of the denied topics, by position in the guard's index.
    pub topics: Vec<String>,
    pub on_error: GuardOnError,
}

/// What the guard decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    /// The prompt (the user message at `message`) matched a denied topic.
    Deny {
        topic: String,
        score: f32,
        message: usize,
    },
}

/// The texts the guard checks: every user message (an earlier turn can
/// carry the denied request as well as the last one), with their positions
/// in `messages`.
pub fn user_texts(req: &ChatRequest) -> Vec<(usize, String)> {
    req.messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User)
        .map(|(i, m)| (i, m.text_content()))
        .filter(|(_, t)| !t.trim().is_empty())
        .collect()
}

impl PromptGuard {
    /// Checks the embedded user messages (`(position, vector)`) against
    /// the deny topics. The highest-scoring denied topic is reported.
    pub fn check(&self, index: &TopicIndex, prompts: &[(usize, &[f32])]) -> Verdict {
        let mut worst: Option<(usize, f32, usize)> = None;
        for (message, v) in prompts {
            let Some(unit) = normalise(v) else { continue };
            if let Some(m) = index.best_match(&unit)
                && worst.is_none_or(|(_, s, _)| m.score > s)
            {
                worst = Some((m.topic, m.score, *message));
            }
        }
        match worst {
            Some((topic, score, message)) => Verdict::Deny {
                topic: self.topics.get(topic).cloned().unwrap_or_default(),
                score,
                message,
            },
            None => Verdict::Allow,
        }
    }
}

/// 403: the prompt matched a denied topic. The topic is named so that an
/// application can tell its user what is not allowed.
pub fn denied(topic: &str, message: usize) -> GatewayError {
    let mut e = GatewayError::invalid_param(
        format!("messages[{message}]"),
        format!("The prompt was rejected: it is about a denied topic (`{topic}`)."),
    );
    e.status = 403;
    e.kind = ErrorKind::Policy;
    e.source = ErrorSource::Policy;
    e.code = Some("prompt_guard_denied".into());
    e
}

/// 503: the guard could not check the prompt and fails closed.
pub fn unavailable(cause: &GatewayError) -> GatewayError {
    let mut e = GatewayError::internal(format!(
        "The prompt guard could not check the prompt: {}",
        cause.message
    ));
    e.status = 503;
    e.kind = ErrorKind::Policy;
    e.source = ErrorSource::Policy;
    e.error_type = "api_error";
    e.code = Some("prompt_guard_unavailable".into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantic::Topic;
    use crate::semantic::tests::BagOfWords;

    fn guard_and_index(e: &BagOfWords) -> (PromptGuard, TopicIndex) {
        let topics = vec![
            Topic {
                name: "weapons".into(),
                target: 0,
                threshold: 0.8,
                utterances: vec![
                    "how to build a bomb".into(),
                    "make explosives at home".into(),
                ],
            },
            Topic {
                name: "self-harm".into(),
                target: 1,
                threshold: 0.8,
                utterances: vec!["ways to hurt myself".into()],
            },
        ];
        let vectors = topics
            .iter()
            .flat_map(|t| t.utterances.iter().map(|u| e.vector(u)))
            .collect();
        let index = TopicIndex::build(&topics, vectors).unwrap();
        let guard = PromptGuard {
            topics: topics.iter().map(|t| t.name.clone()).collect(),
            on_error: GuardOnError::Reject,
        };
        (guard, index)
    }

    #[test]
    fn a_denied_topic_is_blocked_and_its_neighbour_passes() {
        let e = BagOfWords::new(4096);
        let (guard, index) = guard_and_index(&e);
        let bomb = e.vector("how to build a bomb at home");
        match guard.check(&index, &[(0, &bomb)]) {
            Verdict::Deny {
                topic,
                score,
                message,
            } => {
                assert_eq!(topic, "weapons");
                assert_eq!(message, 0);
                // 5 shared words of 7 and 5: 5 / sqrt(35).
                assert!((score - 5.0 / 35f32.sqrt()).abs() < 1e-4, "{score}");
            }
            v => panic!("{v:?}"),
        }
        let birdhouse = e.vector("how to build a birdhouse at home");
        assert_eq!(guard.check(&index, &[(0, &birdhouse)]), Verdict::Allow);
        // An earlier message is checked too, and its position reported.
        match guard.check(&index, &[(0, &bomb), (2, &birdhouse)]) {
            Verdict::Deny { message, .. } => assert_eq!(message, 0),
            v => panic!("{v:?}"),
        }
        assert_eq!(guard.check(&index, &[]), Verdict::Allow);
    }

    #[test]
    fn user_texts_are_the_non_empty_user_messages() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
                {"role": "user", "content": "  "}
            ]
        }))
        .unwrap();
        assert_eq!(
            user_texts(&req),
            vec![(1, "first".to_owned()), (3, "second".to_owned())]
        );
    }

    #[test]
    fn errors_are_openai_shaped_with_the_right_status() {
        let e = denied("weapons", 3);
        assert_eq!(e.status, 403);
        let v: serde_json::Value = serde_json::from_slice(&e.to_openai_json()).unwrap();
        assert_eq!(v["error"]["code"], "prompt_guard_denied");
        assert_eq!(v["error"]["param"], "messages[3]");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`weapons`")
        );
        let u = unavailable(&GatewayError::upstream_timeout("slow"));
        assert_eq!(u.status, 503);
        assert_eq!(u.code.as_deref(), Some("prompt_guard_unavailable"));
    }
}
