//! Semantic matching: embeddings from the *semantic service* and topic
//! indexes built from example utterances.
//!
//! Semantic routing and the prompt guard both ask one question: which
//! configured topic, if any, is this prompt about? A topic is a set of
//! example utterances. Each utterance is embedded once, when the
//! configuration that holds it is about to be served ([`prepare`], in the
//! background, so `--validate` and start-up never depend on the embedding
//! service; a request that needs the index first waits for it), and the
//! unit-length vectors are kept in one flat matrix. Per request the
//! gateway embeds the prompt (one call) and takes, for each topic, the best
//! cosine similarity with its utterances: a dot product per utterance,
//! since everything is normalised.
//!
//! The semantic service is any OpenAI-compatible `/embeddings` endpoint
//! (or Gemini's), reached through a configured provider, so it shares the
//! provider adapters, credentials, TLS settings and connection pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use pingora::connectors::http::Connector;
use portcullis_types::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest};

use crate::error::GatewayError;
use crate::providers::UpstreamCall;
use crate::upstream::{self, MAX_UPSTREAM_BODY};
use crate::upstream::{KeySource, PeerOptions, Route};

/// Turns texts into vectors. The gateway's implementation calls the
/// semantic service; tests use deterministic fakes. (A policy would get the
/// same capability from the host.)
#[async_trait]
pub trait Embedder: Send + Sync {
    /// One vector per text, in order.
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, GatewayError>;
}

/// A configured semantic service: a provider, its embedding model and
/// how long to wait for it.
pub struct SemanticService {
    /// The provider endpoint, built like a route.
    pub route: Route,
    pub model: String,
    pub dimensions: Option<u32>,
    pub timeout: Duration,
}

/// Inputs per embeddings call when indexing utterances; providers cap the
/// batch size (OpenAI at 2048), so stay well below.
const BATCH: usize = 128;

/// The semantic service bound to the gateway's connector for one call.
pub struct ServiceEmbedder<'a> {
    pub service: &'a SemanticService,
    pub connector: &'a Connector,
    pub peers: &'a PeerOptions,
}

#[async_trait]
impl Embedder for ServiceEmbedder<'_> {
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, GatewayError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let call = self.call(batch);
            let vectors = tokio::time::timeout(self.service.timeout, call)
                .await
                .map_err(|_| {
                    GatewayError::upstream_timeout(format!(
                        "the semantic service did not answer within {} ms",
                        self.service.timeout.as_millis()
                    ))
                })??;
            out.extend(vectors);
        }
        Ok(out)
    }
}

impl ServiceEmbedder<'_> {
    async fn call(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, GatewayError> {
        let s = self.service;
        let route = &s.route;
        let req = EmbeddingsRequest {
            model: s.model.clone(),
            input: EmbeddingInput::Many(texts.iter().map(|t| (*t).to_owned()).collect()),
            encoding_format: None,
            dimensions: s.dimensions,
            user: None,
            extra: Default::default(),
        };
        let key = match &route.key {
            KeySource::Static(k) => Some(k.as_str()),
            KeySource::None | KeySource::Header(_) => None,
        };
        let call = UpstreamCall {
            model: &s.model,
            api_key: key,
            stream: false,
            track_usage: true,
        };
        let up = route.provider.embeddings_request(&req, &call)?;
        let peer = self.peers.peer(route).await?;
        let ex = upstream::send(self.connector, &peer, &route.upstream.host_header, &up).await?;
        let status = ex.status;
        let body = upstream::read_body(self.connector, &peer, ex, MAX_UPSTREAM_BODY).await?;
        if !(200..300).contains(&status) {
            return Err(route.provider.error_response(status, &body));
        }
        let mut resp = route.provider.embeddings_response(&body, &call)?;
        if resp.data.len() != texts.len() {
            return Err(GatewayError::upstream_protocol(format!(
                "the semantic service returned {} embeddings for {} inputs",
                resp.data.len(),
                texts.len()
            )));
        }
        resp.data.sort_by_key(|e| e.index);
        resp.data
            .into_iter()
            .map(|e| match e.embedding {
                EmbeddingVector::Float(v) => Ok(v),
                EmbeddingVector::Base64(b) => decode_base64_f32(&b),
            })
            .collect()
    }
}

/// Little-endian f32s in base64, as OpenAI sends with `encoding_format:
/// base64` (some compatible servers default to it).
fn decode_base64_f32(b: &str) -> Result<Vec<f32>, GatewayError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b)
        .map_err(|e| GatewayError::upstream_protocol(format!("bad base64 embedding: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(GatewayError::upstream_protocol(
            "base64 embedding is not a whole number of f32s",
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// A topic as configured: a name, its utterances and threshold, and what it
/// points at (a route index for routing, a position for the guard).
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
    pub target: usize,
    pub threshold: f32,
    pub utterances: Vec<String>,
}

/// The unit vector in the direction of `v`, or `None` for a zero (or
/// non-finite) vector, which has no direction to compare.
pub fn normalise(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(v.iter().map(|x| x / norm).collect())
}

/// Cosine similarity of two vectors of the same length; 0 when either is
/// zero or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    match (normalise(a), normalise(b)) {
        (Some(a), Some(b)) => dot(&a, &b),
        _ => 0.0,
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A topic that a prompt matched, with its similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicMatch {
    /// Position of the topic in the index.
    pub topic: usize,
    pub score: f32,
}

/// Normalised utterance vectors of a set of topics.
#[derive(Debug, Clone, Default)]
pub struct TopicIndex {
    dims: usize,
    /// Row-major, `dims` floats per utterance.
    rows: Vec<f32>,
    /// The topic of each row.
    row_topic: Vec<usize>,
    thresholds: Vec<f32>,
}

impl TopicIndex {
    /// Builds the index from the topics and one vector per utterance, in
    /// the order of `topics` and their utterances.
    pub fn build(topics: &[Topic], vectors: Vec<Vec<f32>>) -> Result<TopicIndex, String> {
        let expected: usize = topics.iter().map(|t| t.utterances.len()).sum();
        if vectors.len() != expected {
            return Err(format!(
                "{} vectors for {expected} utterances",
                vectors.len()
            ));
        }
        let dims = vectors.first().map(Vec::len).unwrap_or(0);
        let mut index = TopicIndex {
            dims,
            rows: Vec::with_capacity(dims * expected),
            row_topic: Vec::with_capacity(expected),
            thresholds: topics.iter().map(|t| t.threshold).collect(),
        };
        let mut vectors = vectors.into_iter();
        for (ti, topic) in topics.iter().enumerate() {
            for utterance in &topic.utterances {
                let v = vectors.next().unwrap_or_default();
                if v.len() != dims {
                    return Err(format!(
                        "the semantic service returned vectors of {} and {dims} dimensions",
                        v.len()
                    ));
                }
                // An utterance without direction can match nothing; skip it
                // rather than fail the whole index.
                let Some(unit) = normalise(&v) else {
                    tracing::warn!(topic = %topic.name, utterance = %utterance, "utterance embedded as a zero vector; ignored");
                    continue;
                };
                index.rows.extend_from_slice(&unit);
                index.row_topic.push(ti);
            }
        }
        Ok(index)
    }

    /// Vector length the index was built with.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The best similarity per topic for a normalised prompt vector (a
    /// topic without usable utterances scores -1).
    pub fn scores(&self, unit: &[f32]) -> Vec<f32> {
        let mut best = vec![-1.0f32; self.thresholds.len()];
        if unit.len() != self.dims || self.dims == 0 {
            return best;
        }
        for (row, topic) in self.rows.chunks_exact(self.dims).zip(&self.row_topic) {
            let s = dot(row, unit);
            if s > best[*topic] {
                best[*topic] = s;
            }
        }
        best
    }

    /// The topic with the highest similarity among those at or above their
    /// threshold; the first configured wins a tie.
    pub fn best_match(&self, unit: &[f32]) -> Option<TopicMatch> {
        let mut found: Option<TopicMatch> = None;
        for (topic, score) in self.scores(unit).into_iter().enumerate() {
            if score >= self.thresholds[topic] && found.is_none_or(|f| score > f.score) {
                found = Some(TopicMatch { topic, score });
            }
        }
        found
    }
}

/// The topic indexes of one proxy, built together with one batch of calls.
pub struct Indexes {
    /// Semantic routing topics (target: route index).
    pub routes: TopicIndex,
    /// Prompt guard deny topics (target: position in the deny list).
    pub guard: TopicIndex,
}

/// How long after a failed indexing attempt requests stop retrying it, so
/// that an embedding outage does not queue every request behind a timeout.
const INDEX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A proxy's semantic setup: the service and the topics, with their
/// indexes computed once and cached.
pub struct Semantic {
    pub service: SemanticService,
    pub route_topics: Vec<Topic>,
    pub guard_topics: Vec<Topic>,
    index: tokio::sync::OnceCell<Arc<Indexes>>,
    last_failure: Mutex<Option<Instant>>,
    /// What the vectors depend on besides the topics: the endpoint, the
    /// model and the dimensions (not the key).
    fingerprint: String,
}

impl Semantic {
    pub fn new(
        service: SemanticService,
        route_topics: Vec<Topic>,
        guard_topics: Vec<Topic>,
    ) -> Self {
        let u = &service.route.upstream;
        let fingerprint = format!(
            "{} {}://{}:{} {} {:?}",
            service.route.provider_name,
            if u.tls { "https" } else { "http" },
            u.host_header,
            u.port,
            service.model,
            service.dimensions
        );
        Semantic {
            service,
            route_topics,
            guard_topics,
            index: tokio::sync::OnceCell::new(),
            last_failure: Mutex::new(None),
            fingerprint,
        }
    }

    /// Takes `old`'s indexes if they were computed for the same service
    /// and the same topics, so a configuration change elsewhere (a key, a
    /// deployment) does not embed every utterance again.
    /// Whether the topic indexes are computed.
    pub fn is_indexed(&self) -> bool {
        self.index.get().is_some()
    }

    pub fn adopt(&self, old: &Semantic) {
        if self.fingerprint == old.fingerprint
            && self.route_topics == old.route_topics
            && self.guard_topics == old.guard_topics
            && let Some(i) = old.index.get()
        {
            let _ = self.index.set(i.clone());
        }
    }

    /// The indexes, computing them on first use. Concurrent first requests
    /// wait for one computation; a failure is not cached, but for a few
    /// seconds after one, requests fail fast instead of trying again.
    pub async fn indexes(&self, embedder: &dyn Embedder) -> Result<Arc<Indexes>, GatewayError> {
        if let Some(i) = self.index.get() {
            return Ok(i.clone());
        }
        let recently_failed = self
            .last_failure
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < INDEX_RETRY_AFTER);
        if recently_failed {
            return Err(GatewayError::upstream_connect(
                "the semantic service failed to index the topics moments ago",
            ));
        }
        let result = self
            .index
            .get_or_try_init(|| async {
                let started = Instant::now();
                let texts: Vec<&str> = self
                    .route_topics
                    .iter()
                    .chain(&self.guard_topics)
                    .flat_map(|t| t.utterances.iter().map(String::as_str))
                    .collect();
                let mut vectors = embedder.embed(&texts).await?;
                let split: usize = self.route_topics.iter().map(|t| t.utterances.len()).sum();
                let guard_vectors = vectors.split_off(split.min(vectors.len()));
                let bad =
                    |m: String| GatewayError::upstream_protocol(format!("semantic service: {m}"));
                let indexes = Indexes {
                    routes: TopicIndex::build(&self.route_topics, vectors).map_err(bad)?,
                    guard: TopicIndex::build(&self.guard_topics, guard_vectors).map_err(bad)?,
                };
                if indexes.routes.dims() != indexes.guard.dims()
                    && !self.route_topics.is_empty()
                    && !self.guard_topics.is_empty()
                {
                    return Err(bad("vectors of different sizes".into()));
                }
                tracing::info!(
                    utterances = texts.len(),
                    dimensions = indexes.routes.dims().max(indexes.guard.dims()),
                    ms = started.elapsed().as_millis() as u64,
                    "semantic topics indexed"
                );
                Ok(Arc::new(indexes))
            })
            .await
            .cloned();
        if result.is_err()
            && let Ok(mut g) = self.last_failure.lock()
        {
            *g = Some(Instant::now());
        }
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic bag-of-words embedder for tests: each lowercase word
    /// adds 1 to the dimension its hash picks (the mock LLM does the same).
    pub(crate) struct BagOfWords {
        pub dims: usize,
        pub calls: std::sync::atomic::AtomicUsize,
        pub fail: bool,
    }

    impl BagOfWords {
        pub(crate) fn new(dims: usize) -> Self {
            BagOfWords {
                dims,
                calls: Default::default(),
                fail: false,
            }
        }

        pub(crate) fn vector(&self, text: &str) -> Vec<f32> {
            let mut v = vec![0.0; self.dims];
            for w in text.split_whitespace() {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in w.to_lowercase().bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
                v[(h % self.dims as u64) as usize] += 1.0;
            }
            v
        }
    }

    #[async_trait]
    impl Embedder for BagOfWords {
        async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, GatewayError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail {
                return Err(GatewayError::upstream_connect("embedder down"));
            }
            Ok(texts.iter().map(|t| self.vector(t)).collect())
        }
    }

    fn topic(name: &str, target: usize, threshold: f32, utterances: &[&str]) -> Topic {
        Topic {
            name: name.into(),
            target,
            threshold,
            utterances: utterances.iter().map(|u| (*u).into()).collect(),
        }
    }

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[1.0, 0.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((cosine(&[2.0, 0.0], &[-5.0, 0.0]) + 1.0).abs() < 1e-6);
        // Length does not matter, direction does.
        assert!((cosine(&[3.0, 4.0], &[6.0, 8.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(normalise(&[0.0, 0.0]), None);
        assert_eq!(normalise(&[3.0, 4.0]), Some(vec![0.6, 0.8]));
    }

    #[test]
    fn the_best_topic_above_its_threshold_wins() {
        let topics = [
            topic("x-axis", 7, 0.9, &["x"]),
            topic("y-axis", 8, 0.5, &["y", "diagonal"]),
        ];
        let vectors = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![1.0, 1.0]];
        let index = TopicIndex::build(&topics, vectors).unwrap();
        assert_eq!(index.dims(), 2);
        // (0.8, 0.6): x-axis scores 0.8 (< 0.9); y-axis best is the
        // diagonal at (0.8+0.6)/sqrt 2 = 0.99.
        let s = index.scores(&[0.8, 0.6]);
        assert!(
            (s[0] - 0.8).abs() < 1e-6 && (s[1] - 0.98995).abs() < 1e-4,
            "{s:?}"
        );
        let m = index.best_match(&[0.8, 0.6]).unwrap();
        assert_eq!(m.topic, 1);
        // Straight along x: x-axis scores 1.0 and beats the diagonal.
        assert_eq!(index.best_match(&[1.0, 0.0]).unwrap().topic, 0);
        // Opposite to everything: nothing matches.
        assert_eq!(index.best_match(&[-1.0, 0.0]), None);
        // A vector of the wrong size matches nothing.
        assert_eq!(index.best_match(&[1.0, 0.0, 0.0]), None);
    }

    #[test]
    fn build_checks_counts_and_sizes() {
        let topics = [topic("t", 0, 0.5, &["a", "b"])];
        assert!(TopicIndex::build(&topics, vec![vec![1.0]]).is_err());
        assert!(TopicIndex::build(&topics, vec![vec![1.0], vec![1.0, 0.0]]).is_err());
        // A zero vector is skipped, not fatal.
        let index = TopicIndex::build(&topics, vec![vec![0.0, 0.0], vec![1.0, 0.0]]).unwrap();
        assert_eq!(index.scores(&[1.0, 0.0]), vec![1.0]);
    }

    #[test]
    fn base64_vectors_decode() {
        let mut bytes = Vec::new();
        for f in [1.5f32, -2.0] {
            bytes.extend_from_slice(&f.to_le_bytes());
        }
        let b = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(decode_base64_f32(&b).unwrap(), vec![1.5, -2.0]);
        assert!(decode_base64_f32("AAA=").is_err());
    }

    #[tokio::test]
    async fn indexes_are_computed_once_and_failures_are_not_cached() {
        let service = SemanticService {
            route: crate::routing::tests::dummy_route("emb"),
            model: "m".into(),
            dimensions: None,
            timeout: Duration::from_secs(1),
        };
        let s = Semantic::new(
            service,
            vec![topic(
                "code",
                0,
                0.5,
                &["write a python function", "fix my rust code"],
            )],
            vec![topic("weapons", 0, 0.8, &["how to build a bomb"])],
        );
        let mut down = BagOfWords::new(64);
        down.fail = true;
        assert!(s.indexes(&down).await.is_err());
        // Right after a failure, requests fail fast without calling.
        let up = BagOfWords::new(64);
        assert!(s.indexes(&up).await.is_err());
        assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Once the pause is over, the next request indexes, and only once.
        *s.last_failure.lock().unwrap() = Some(Instant::now() - INDEX_RETRY_AFTER);
        let a = s.indexes(&up).await.unwrap();
        let b = s.indexes(&up).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(up.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let prompt = normalise(&up.vector("please write a python function")).unwrap();
        assert_eq!(a.routes.best_match(&prompt).map(|m| m.topic), Some(0));
        let bomb = normalise(&up.vector("how to build a bomb at home")).unwrap();
        assert!(a.guard.scores(&bomb)[0] > 0.8);
    }
}
