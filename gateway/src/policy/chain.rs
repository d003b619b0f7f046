//! A proxy's policy chain, and its run over one request.
//!
//! The chain is built when the configuration loads: each attachment's
//! module compiled (once per module), its settings merged over the
//! manifest's defaults and validated against the schema, and its `init`
//! called once in a throwaway instance to learn its phases and catch bad
//! settings before any request. The chain's stream mode is fixed then:
//! one policy that must see whole responses holds back every stream.
//!
//! A run is one request. It takes each policy's instance the first time a
//! phase needs it: a warm one from the attachment's idle list when there
//! is one, otherwise a new one (its own store, instantiated from the
//! pre-instantiated module). Either way `init` runs first with the
//! attachment's settings; the SDK answers it on a warm instance by
//! restoring the policy value it built the first time (a clone, no
//! parsing), so every request starts from the same state. When the
//! request ends, instances that did not fail go back to the idle list
//! (bounded per attachment and engine-wide; an instance that grew its
//! memory past `WARM_MEMORY_MAX` or served `WARM_MAX_USES` requests is
//! dropped instead). Creating an instance costs several times a warm
//! call (instantiation, first touch of its memory, parsing settings),
//! which is why instances are kept: see docs/policies.md.
//!
//! Every call is under the engine's deadline and memory limit; a failing
//! policy (trap, timeout, memory) fails the request or is skipped, per
//! its `on_error`, and its instance is never reused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_types::policy::{Capability, RequestPart};
use portcullis_types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionsRequest, Content,
    ContentPart, Delta, EmbeddingInput, EmbeddingsRequest, FinishReason, Message,
    ModerationsRequest, Role, Usage,
};
use wasmtime::Store;

use super::engine::{
    CurrentPolicy, HostState, LoadedModule, PolicyEngine, PolicyWorld, guest, wit,
};
use crate::config::InboundKind;
use crate::error::{ErrorKind, ErrorSource, GatewayError};
use crate::metrics::Metrics;

pub use portcullis_types::gateway_config::OnError;

/// One attachment of a chain.
pub struct Attached {
    pub module: Arc<LoadedModule>,
    pub settings: String,
    pub on_error: OnError,
    pub info: wit::PolicyInfo,
    /// Whether calls into this policy may wait on the network: it holds
    /// `counters` or `cache` on a Redis backend, or `embeddings` with an
    /// endpoint configured. Such calls run off the worker threads.
    waits_on_network: bool,
    /// What its request phase reads of the request (manifest
    /// `request_reads`); the other parts are lent to it empty.
    reads: RequestReads,
    name: Arc<str>,
    version: String,
    namespace: Arc<str>,
    /// Warm instances between requests.
    idle: Mutex<Vec<Warm>>,
    /// This attachment's metric series, looked up once.
    series: Mutex<Series>,
    engine: Arc<PolicyEngine>,
}

/// The bulky parts of a request a policy's request phase reads. Each part
/// it does not read is one copy less into its instance per request: the
/// record is lowered into every policy's memory, and `raw` alone is as
/// large as the request (docs/policies.md, What a policy reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestReads {
    messages: bool,
    headers: bool,
    raw: bool,
}

impl RequestReads {
    fn of(parts: Option<&[RequestPart]>) -> RequestReads {
        let parts = parts.unwrap_or(&RequestPart::ALL);
        RequestReads {
            messages: parts.contains(&RequestPart::Messages),
            headers: parts.contains(&RequestPart::Headers),
            raw: parts.contains(&RequestPart::Raw),
        }
    }

    /// Moves the parts this policy does not read out of `view`, to be put
    /// back by [`Unread::restore`] after the call (no copies either way).
    fn lend(self, view: &mut wit::Request) -> Unread {
        Unread {
            messages: (!self.messages).then(|| std::mem::take(&mut view.messages)),
            headers: (!self.headers).then(|| std::mem::take(&mut view.headers)),
            raw: (!self.raw).then(|| std::mem::take(&mut view.raw)),
        }
    }
}

/// The parts of a request view taken out for one policy's call.
struct Unread {
    messages: Option<Vec<wit::Message>>,
    headers: Option<Vec<wit::Header>>,
    raw: Option<String>,
}

impl Unread {
    fn restore(self, view: &mut wit::Request) {
        if let Some(m) = self.messages {
            view.messages = m;
        }
        if let Some(h) = self.headers {
            view.headers = h;
        }
        if let Some(r) = self.raw {
            view.raw = r;
        }
    }
}

/// The metric series of one attachment (per phase and outcome), resolved
/// once instead of by label values at every call: the profile of the four
/// built-ins under load had the lookups at about 2% of the gateway's time,
/// more than the counting itself.
#[derive(Default)]
struct Series {
    /// The registry they belong to. Held weakly, so that its address
    /// cannot be reused by another registry while compared.
    of: std::sync::Weak<Metrics>,
    executions: Vec<(&'static str, &'static str, prometheus::IntCounter)>,
    durations: Vec<(&'static str, prometheus::Histogram)>,
}

impl Attached {
    /// Whether this policy reads more of an answer than its status, model
    /// and usage. What the module asked for at `init` decides; the
    /// manifest's `complete_reads: usage` only narrows the complete phase.
    pub fn reads_answers(&self) -> bool {
        self.info.response != wit::ResponseMode::Skip
            || (self.info.on_complete && self.module.manifest.complete_reads.is_whole())
    }
}

/// A policy instance with its own store, `init` run at least once.
struct Warm {
    store: Store<HostState>,
    world: PolicyWorld,
    uses: u32,
}

/// Warm instances kept per attachment.
const WARM_PER_POLICY: usize = 64;
/// An instance is retired after this many requests, so slow leaks in a
/// policy's memory cannot accumulate forever.
const WARM_MAX_USES: u32 = 10_000;
/// An instance whose memory grew beyond this is not kept warm.
const WARM_MEMORY_MAX: usize = 4 << 20;

impl Attached {
    /// Counts one call of `phase` that ended with `outcome` and took `took`.
    fn record(&self, m: &Arc<Metrics>, phase: &'static str, outcome: &'static str, took: f64) {
        let mut s = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !std::ptr::eq(s.of.as_ptr(), Arc::as_ptr(m)) {
            *s = Series {
                of: Arc::downgrade(m),
                ..Series::default()
            };
        }
        match s
            .executions
            .iter()
            .find(|(ph, o, _)| *ph == phase && *o == outcome)
        {
            Some((_, _, c)) => c.inc(),
            None => {
                let c = m.policy_executions.with_label_values(&[
                    &*self.name,
                    &self.version,
                    phase,
                    outcome,
                ]);
                c.inc();
                s.executions.push((phase, outcome, c));
            }
        }
        match s.durations.iter().find(|(ph, _)| *ph == phase) {
            Some((_, h)) => h.observe(took),
            None => {
                let h = m
                    .policy_duration
                    .with_label_values(&[&*self.name, &self.version, phase]);
                h.observe(took);
                s.durations.push((phase, h));
            }
        }
    }

    fn take_idle(&self) -> Option<Warm> {
        let w = self.idle.lock().ok()?.pop()?;
        self.engine.release_idle(1);
        Some(w)
    }

    fn give_back(&self, mut w: Warm) {
        w.uses += 1;
        if w.uses >= WARM_MAX_USES || w.store.data().memory_size > WARM_MEMORY_MAX {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= WARM_PER_POLICY || !self.engine.reserve_idle() {
            return;
        }
        w.store.data_mut().metrics = None;
        idle.push(w);
    }
}

impl Warm {
    /// A new instance of `module` with its own store, named `name` in
    /// logs, metrics and key namespaces; `init` not yet called.
    fn new(
        engine: &Arc<PolicyEngine>,
        module: &LoadedModule,
        name: &Arc<str>,
        namespace: &Arc<str>,
    ) -> wasmtime::Result<Warm> {
        let mut store = engine.store(None);
        store.data_mut().current = CurrentPolicy {
            name: name.clone(),
            namespace: namespace.clone(),
        };
        store.set_epoch_deadline(engine.deadline_ticks());
        let world = module.pre.instantiate(&mut store)?;
        Ok(Warm {
            store,
            world,
            uses: 0,
        })
    }
}

/// A proxy's ordered policies.
pub struct Chain {
    engine: Arc<PolicyEngine>,
    /// Shared with every chain attaching the same module and settings.
    policies: Vec<Arc<Attached>>,
    /// Per policy, the plans it is limited to (`plans` of the attachment;
    /// empty: every request).
    plans: Vec<Vec<Arc<str>>>,
    hold_stream: bool,
    /// Whether any policy reads more of an answer than its usage: a
    /// response phase, or a complete phase whose manifest does not say
    /// `complete_reads: usage`. When none does, the gateway may forward
    /// answers unparsed.
    reads_answers: bool,
    /// Whether any policy's request phase reads the request's `raw` JSON:
    /// when none does, the view is built without rendering it.
    reads_raw: bool,
    /// Most bytes of one answer kept for the policies (held-back chunks,
    /// or the text a stream sent, for `on-complete`).
    max_held_bytes: usize,
}

impl Chain {
    /// Builds an attachment: validates settings (already merged and
    /// schema-checked by the caller) by running `init` once.
    pub fn attach(
        engine: &Arc<PolicyEngine>,
        module: Arc<LoadedModule>,
        settings: &serde_json::Value,
        on_error: OnError,
    ) -> Result<Attached, (String, String)> {
        let settings = settings.to_string();
        let name: Arc<str> = Arc::from(module.manifest.name.as_str());
        let mut w = Warm::new(engine, &module, &name, &name)
            .map_err(|e| (String::new(), format!("cannot instantiate: {e:#}")))?;
        // Load time: `init` may do more (e.g. embed a guard's utterances).
        w.store
            .set_epoch_deadline(engine.ticks(engine.settings.timeout.max(Duration::from_secs(1))));
        let info = w
            .world
            .portcullis_policy_policy()
            .call_init(&mut w.store, &settings)
            .map_err(|e| (String::new(), format!("init trapped: {e:#}")))?
            .map_err(|e| (e.pointer, e.message))?;
        // The instance that checked the settings is the first warm one.
        let mut idle = Vec::new();
        if engine.reserve_idle() {
            idle.push(w);
        }
        let caps = &module.manifest.capabilities;
        let waits_on_network = (engine.backend.waits_on_network()
            && (caps.contains(&Capability::Counters) || caps.contains(&Capability::Cache)))
            || (engine.has_embeddings() && caps.contains(&Capability::Embeddings));
        Ok(Attached {
            waits_on_network,
            reads: RequestReads::of(module.manifest.request_reads.as_deref()),
            version: module.manifest.version.clone(),
            namespace: name.clone(),
            name,
            module,
            settings,
            on_error,
            info,
            idle: Mutex::new(idle),
            series: Mutex::default(),
            engine: engine.clone(),
        })
    }

    /// The attachment of `module` with `settings` (merged over the
    /// manifest's defaults) and `on_error`, shared with every chain that
    /// attaches the same: made (after `validate` passes) only when no
    /// live chain has it. 1,000 proxies attaching the same four policies
    /// so cost four `init` calls, not 4,000, and a reload reuses them.
    pub fn shared(
        engine: &Arc<PolicyEngine>,
        module: Arc<LoadedModule>,
        sha256: [u8; 32],
        settings: &serde_json::Value,
        on_error: OnError,
        validate: impl FnOnce() -> Result<(), (String, String)>,
    ) -> Result<Arc<Attached>, (String, String)> {
        let key = (sha256, settings.to_string(), on_error);
        let lock = || match engine.attachments.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(a) = lock().get(&key).and_then(std::sync::Weak::upgrade)
            && Arc::ptr_eq(&a.module, &module)
        {
            return Ok(a);
        }
        validate()?;
        let attached = Arc::new(Self::attach(engine, module, settings, on_error)?);
        let mut map = lock();
        // Forget attachments no chain holds any more, now and then.
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(key, Arc::downgrade(&attached));
        Ok(attached)
    }

    /// A chain keeping at most `max_held_bytes` of an answer for its
    /// policies (`limits.max_held_response_bytes`).
    pub fn new(
        engine: Arc<PolicyEngine>,
        policies: Vec<Arc<Attached>>,
        max_held_bytes: usize,
    ) -> Chain {
        let hold_stream = policies
            .iter()
            .any(|p| p.info.response == wit::ResponseMode::Buffer);
        let reads_answers = policies.iter().any(|p| p.reads_answers());
        let reads_raw = policies.iter().any(|p| p.info.on_request && p.reads.raw);
        Chain {
            engine,
            plans: vec![Vec::new(); policies.len()],
            policies,
            hold_stream,
            reads_answers,
            reads_raw,
            max_held_bytes,
        }
    }

    /// Limits policies to plans: `plans[i]` for policy `i` (see
    /// `PolicyAttachmentFile::plans`).
    pub fn with_plans(mut self, plans: Vec<Vec<Arc<str>>>) -> Chain {
        debug_assert_eq!(plans.len(), self.policies.len());
        self.plans = plans;
        self.plans.resize(self.policies.len(), Vec::new());
        self
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Names and versions, in order.
    pub fn names(&self) -> Vec<String> {
        self.policies
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }

    /// Whether two chains run the very same attachments, in order (one
    /// proxy's chain across a reload, or two proxies attaching the same
    /// modules with the same settings).
    pub fn same_attachments(&self, other: &Chain) -> bool {
        self.policies.len() == other.policies.len()
            && self.plans == other.plans
            && self
                .policies
                .iter()
                .zip(&other.policies)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Whether streams are held back whole for this chain.
    pub fn holds_stream(&self) -> bool {
        self.hold_stream
    }

    /// Warm instances idle in this chain now.
    pub fn idle_instances(&self) -> usize {
        self.policies
            .iter()
            .map(|p| p.idle.lock().map(|g| g.len()).unwrap_or(0))
            .sum()
    }

    /// Starts a run for one request, waiting for room in the instance
    /// pool when the gateway is at capacity (back-pressure, not failure).
    pub async fn start(
        self: &Arc<Self>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<ChainRun, GatewayError> {
        // A chain longer than the whole pool still runs (one request at a
        // time) rather than waiting forever.
        let n = (self.policies.len().max(1) as u32).min(self.engine.settings.max_instances);
        let permit = self
            .engine
            .slots
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| GatewayError::internal("policy engine stopped"))?;
        Ok(ChainRun {
            chain: self.clone(),
            instances: (0..self.policies.len()).map(|_| Slot::Empty).collect(),
            ran_request: 0,
            headers: Vec::new(),
            metrics,
            streamed: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            template: None,
            fed_stream: false,
            completed: false,
            caller: CallerIds::default(),
            answer_raw: None,
            request_edited: false,
            _permit: permit,
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Idle instances go with the attachment; give back their budget.
        let n = self.idle.lock().map(|g| g.len()).unwrap_or(0);
        self.engine.release_idle(n as u32);
    }
}

enum Slot {
    Empty,
    Ready(Warm),
    /// Failed (fail-open): skipped for the rest of the request.
    Failed,
    /// Limited to plans the request's key is not used under.
    NotForCaller,
}

/// Why a policy call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Memory,
    Trap,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::Trap => "error",
        }
    }
}

/// What the request phase decided.
pub enum RequestOutcome {
    /// Call the provider (with the request as the chain left it).
    Continue,
    /// Answer with this response; the provider is not called.
    Respond { status: u16, response: ChatResponse },
}

/// The application and subscription of a request's key (`caller`).
#[derive(Debug, Clone, Default)]
pub struct CallerIds {
    pub application: Option<std::sync::Arc<str>>,
    pub subscription: Option<std::sync::Arc<str>>,
    /// The subscription's plan: picks the attachments limited to plans.
    pub plan: Option<std::sync::Arc<str>>,
}

/// Who the request is, for the policies' view of it.
pub struct RequestMeta<'a> {
    pub request_id: &'a str,
    pub proxy_id: &'a str,
    pub key_id: &'a str,
    pub caller: CallerIds,
    pub format: InboundKind,
    pub headers: &'a http::HeaderMap,
}

/// A chain's run over one request.
pub struct ChainRun {
    chain: Arc<Chain>,
    instances: Vec<Slot>,
    /// How many policies ran the request phase (a rejection or direct
    /// response stops the chain; only those get the later phases).
    ran_request: usize,
    headers: Vec<(String, String)>,
    metrics: Option<Arc<Metrics>>,
    /// Text sent so far per choice (for `on-complete` after a stream).
    streamed: Vec<String>,
    /// Chunks held back (hold mode).
    held: Vec<ChatChunk>,
    /// Bytes kept in `held` (as JSON) or `streamed`, against the chain's
    /// `max_held_bytes`.
    held_bytes: usize,
    /// Identity (id, model, created) of the stream's chunks, for the
    /// chunks the chain adds.
    template: Option<ChatChunk>,
    /// Whether stream-mode policies were given part of a stream.
    fed_stream: bool,
    completed: bool,
    /// The request's application and subscription, for `caller`.
    caller: CallerIds,
    /// See [`ChainRun::know_answer_raw`].
    answer_raw: Option<String>,
    /// Whether a policy changed the request (see [`ChainRun::request_edited`]).
    request_edited: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl ChainRun {
    /// Headers the policies add to the client's response.
    pub fn response_headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Whether a policy of this chain reads answers beyond their usage
    /// (see [`Attached::reads_answers`]).
    pub fn reads_answers(&self) -> bool {
        self.chain.reads_answers
    }

    /// Whether a policy of the request phase changed the request (masked
    /// a text, swapped the model): what the client sent is then no longer
    /// what goes to the provider.
    pub fn request_edited(&self) -> bool {
        self.request_edited
    }

    /// Whether this stream must be held back whole.
    pub fn holds_stream(&self) -> bool {
        self.chain.hold_stream
    }

    /// Forgets a stream that failed before any of it reached the client,
    /// so another route's stream starts clean. Returns false when
    /// stream-mode policies already saw part of it: what they keep between
    /// chunks (text held back, counts) cannot be rewound, so the request
    /// must not move to another route.
    pub fn retry_stream(&mut self) -> bool {
        self.held.clear();
        self.held_bytes = 0;
        self.template = None;
        self.streamed.clear();
        !self.fed_stream
    }

    /// Makes policy `i`'s instance ready: `Ok(false)` when it failed
    /// earlier in this request (fail-open) and is skipped.
    fn ensure(&mut self, i: usize) -> Result<bool, Failure> {
        match &self.instances[i] {
            Slot::Ready(_) => return Ok(true),
            Slot::Failed | Slot::NotForCaller => return Ok(false),
            Slot::Empty => {}
        }
        let engine = &self.chain.engine;
        let p = &self.chain.policies[i];
        let mut w = match p.take_idle() {
            Some(w) => w,
            None => {
                if let Some(m) = &self.metrics {
                    m.policy_instances_created
                        .with_label_values(&[&*p.name])
                        .inc();
                }
                Warm::new(engine, &p.module, &p.name, &p.namespace).map_err(|e| {
                    tracing::warn!(policy = %p.name, error = %e, "policy instantiation failed");
                    Failure::Trap
                })?
            }
        };
        w.store.data_mut().metrics = self.metrics.clone();
        w.store.set_epoch_deadline(engine.deadline_ticks());
        match w
            .world
            .portcullis_policy_policy()
            .call_init(&mut w.store, &p.settings)
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(policy = %p.name, pointer = %e.pointer, error = %e.message, "policy init refused its settings");
                return Err(Failure::Trap);
            }
            Err(e) => return Err(classify(&mut w.store, e)),
        }
        self.instances[i] = Slot::Ready(w);
        Ok(true)
    }

    /// Runs `f` on policy `i` under the deadline, with metrics. `Ok(None)`
    /// means the policy failed open (or had failed earlier) and is skipped.
    fn call<R>(
        &mut self,
        i: usize,
        phase: &'static str,
        f: impl FnOnce(&guest::Guest, &mut Store<HostState>) -> wasmtime::Result<R>,
        outcome: impl FnOnce(&R) -> &'static str,
    ) -> Result<Option<R>, GatewayError> {
        let started = Instant::now();
        let waits = self.chain.policies[i].waits_on_network;
        let result = off_worker(waits, || match self.ensure(i) {
            Ok(false) => None,
            Ok(true) => Some(match &mut self.instances[i] {
                Slot::Ready(w) => {
                    w.store
                        .set_epoch_deadline(self.chain.engine.deadline_ticks());
                    w.store.data_mut().caller = self.caller.clone();
                    f(w.world.portcullis_policy_policy(), &mut w.store)
                        .map_err(|e| classify(&mut w.store, e))
                }
                _ => Err(Failure::Trap),
            }),
            Err(f) => Some(Err(f)),
        });
        let Some(result) = result else {
            return Ok(None);
        };
        let p = &self.chain.policies[i];
        let label = match &result {
            Ok(r) => outcome(r),
            Err(f) => f.label(),
        };
        if let Some(m) = &self.metrics {
            p.record(m, phase, label, started.elapsed().as_secs_f64());
        }
        match result {
            Ok(r) => Ok(Some(r)),
            Err(failure) => {
                // A trapped instance cannot be entered again.
                let name = p.name.clone();
                let on_error = p.on_error;
                self.instances[i] = Slot::Failed;
                tracing::warn!(policy = %name, phase, failure = failure.label(), on_error = ?on_error, "policy failed");
                match on_error {
                    OnError::Open => Ok(None),
                    OnError::Closed => Err(policy_failed(&name, failure)),
                }
            }
        }
    }

    /// The request phase, in attachment order. Edits apply to `req` as
    /// they come, so each policy sees the previous one's changes.
    pub fn on_request(
        &mut self,
        req: &mut ChatRequest,
        meta: &RequestMeta<'_>,
    ) -> Result<RequestOutcome, GatewayError> {
        self.request_phase(req, meta, true)
    }

    /// The request phase on an embeddings request. The policy world has
    /// no embeddings shape, so policies see it as a chat request (see
    /// [`embeddings_as_chat`]): one user message per input text and
    /// `max-tokens` 0, as embeddings generate no output. Their edits of
    /// those texts (masking) and of the model apply to the input. A direct
    /// response (a cache hit) is a chat completion, which cannot answer an
    /// embeddings request: it is ignored and the chain goes on, so the
    /// policies after it (a rate limit) still run.
    pub fn on_embeddings_request(
        &mut self,
        req: &mut EmbeddingsRequest,
        meta: &RequestMeta<'_>,
    ) -> Result<(), GatewayError> {
        let mut chat = embeddings_as_chat(req)?;
        self.request_phase(&mut chat, meta, false)?;
        apply_chat_to_embeddings(chat, req);
        Ok(())
    }

    /// The request phase for a legacy completions request, seen as a chat
    /// request (`texts_as_chat`); edits to the prompt's texts and the model
    /// are carried back. The response phase does not run for it (its answer
    /// is forwarded as it came); `complete` settles it with its usage.
    pub fn on_completions_request(
        &mut self,
        req: &mut CompletionsRequest,
        meta: &RequestMeta<'_>,
    ) -> Result<(), GatewayError> {
        let texts = req.prompt.texts().unwrap_or_default();
        let mut chat = texts_as_chat(&req.model, &texts, req.max_tokens, req.stream)?;
        self.request_phase(&mut chat, meta, false)?;
        req.model = chat.model.clone();
        apply_chat_texts(&chat, &mut req.prompt);
        Ok(())
    }

    /// The request phase for a moderations request, seen as a chat request
    /// of its texts that generates nothing; edits to the model and to a
    /// text or list of texts are carried back (multimodal input is seen,
    /// not edited).
    pub fn on_moderations_request(
        &mut self,
        req: &mut ModerationsRequest,
        meta: &RequestMeta<'_>,
    ) -> Result<(), GatewayError> {
        let routed = req.routed_model().to_owned();
        let mut chat = texts_as_chat(&routed, &req.texts(), Some(0), false)?;
        self.request_phase(&mut chat, meta, false)?;
        if chat.model != routed {
            req.model = Some(chat.model.clone());
        }
        let plain: Option<EmbeddingInput> = serde_json::from_value(req.input.clone()).ok();
        if let Some(mut input @ (EmbeddingInput::One(_) | EmbeddingInput::Many(_))) = plain {
            apply_chat_texts(&chat, &mut input);
            req.input = serde_json::to_value(input).unwrap_or_default();
        }
        Ok(())
    }

    fn request_phase(
        &mut self,
        req: &mut ChatRequest,
        meta: &RequestMeta<'_>,
        direct_responses: bool,
    ) -> Result<RequestOutcome, GatewayError> {
        let mut view: Option<wit::Request> = None;
        self.caller = meta.caller.clone();
        for (i, plans) in self.chain.plans.iter().enumerate() {
            if !plans.is_empty()
                && !self
                    .caller
                    .plan
                    .as_ref()
                    .is_some_and(|p| plans.iter().any(|q| **q == **p))
            {
                self.instances[i] = Slot::NotForCaller;
            }
        }
        for i in 0..self.chain.policies.len() {
            self.ran_request = i + 1;
            if !self.chain.policies[i].info.on_request {
                continue;
            }
            // Built once and lent to each policy (without the parts it
            // does not read); rebuilt after an edit.
            let v = view.get_or_insert_with(|| request_view(req, meta, self.chain.reads_raw));
            let unread = self.chain.policies[i].reads.lend(v);
            let verdict = self.call(
                i,
                "request",
                |g, s| g.call_on_request(s, v),
                |r| match r {
                    wit::RequestVerdict::Continue(_) => "continue",
                    wit::RequestVerdict::Modify(_) => "modified",
                    wit::RequestVerdict::Reject(_) => "rejected",
                    wit::RequestVerdict::Respond(_) => "responded",
                },
            );
            unread.restore(v);
            let verdict = verdict?;
            match verdict {
                None => {}
                Some(wit::RequestVerdict::Continue(h)) => self.add_headers(h),
                Some(wit::RequestVerdict::Modify(edit)) => {
                    apply_request_edit(req, &edit)?;
                    self.request_edited = true;
                    self.add_headers(edit.response_headers);
                    view = None;
                }
                Some(wit::RequestVerdict::Reject(r)) => {
                    return Err(self.rejection(r));
                }
                Some(wit::RequestVerdict::Respond(_)) if !direct_responses => {
                    tracing::debug!(policy = %self.chain.policies[i].name, "direct response ignored: it cannot answer this request");
                }
                Some(wit::RequestVerdict::Respond(d)) => {
                    let mut response: ChatResponse = serde_json::from_str(&d.body).map_err(|e| {
                        tracing::warn!(policy = %self.chain.policies[i].name, error = %e, "policy answered a body that is not a chat.completion");
                        GatewayError::internal("a policy answered an invalid response")
                    })?;
                    if response.model.is_empty() {
                        response.model = req.model.clone();
                    }
                    self.add_headers(d.headers);
                    return Ok(RequestOutcome::Respond {
                        status: d.status,
                        response,
                    });
                }
            }
        }
        Ok(RequestOutcome::Continue)
    }

    /// The response phase on a whole response, in attachment order.
    /// Returns whether a policy changed the answer's text. The view's
    /// canonical JSON is the one given by [`ChainRun::know_answer_raw`]
    /// when there is one (the provider's own bytes), else rendered once;
    /// while the answer is unchanged it is kept for the complete phase.
    pub fn on_response(
        &mut self,
        resp: &mut ChatResponse,
        streamed: bool,
    ) -> Result<bool, GatewayError> {
        let mut view: Option<wit::Response> = None;
        let mut changed = false;
        for i in 0..self.ran_request {
            if self.chain.policies[i].info.response == wit::ResponseMode::Skip {
                continue;
            }
            // Built once and lent to each policy; rebuilt after an edit.
            let known = &mut self.answer_raw;
            let v: &wit::Response =
                view.get_or_insert_with(|| response_view(resp, 200, streamed, known.take()));
            let verdict = self.call(
                i,
                "response",
                |g, s| g.call_on_response(s, v),
                |r| match r {
                    wit::ResponseVerdict::Continue(_) => "continue",
                    wit::ResponseVerdict::Modify(_) => "modified",
                    wit::ResponseVerdict::Reject(_) => "rejected",
                },
            )?;
            match verdict {
                None => {}
                Some(wit::ResponseVerdict::Continue(h)) => self.add_headers(h),
                Some(wit::ResponseVerdict::Modify(edit)) => {
                    if let Some(texts) = edit.choices {
                        for (choice, text) in resp.choices.iter_mut().zip(texts) {
                            choice.message.content = Some(Content::Text(text));
                        }
                        view = None;
                        changed = true;
                    }
                    self.add_headers(edit.headers);
                }
                Some(wit::ResponseVerdict::Reject(r)) => return Err(self.rejection(r)),
            }
        }
        if !changed && let Some(v) = view {
            self.answer_raw = Some(v.raw);
        }
        Ok(changed)
    }

    /// The answer as canonical JSON (an OpenAI chat.completion), when the
    /// caller has it without rendering: the provider's bytes when it
    /// speaks OpenAI, or what was rendered for an OpenAI client. The
    /// response and complete phases then show it as `raw` instead of
    /// rendering the answer again (once per phase).
    pub fn know_answer_raw(&mut self, raw: String) {
        self.answer_raw = Some(raw);
    }

    /// One decoded stream chunk. Returns whether to send it now: in hold
    /// mode chunks are kept for [`ChainRun::finish_stream`]; otherwise
    /// stream-mode policies may rewrite its text (or hold some back).
    pub fn on_chunk(&mut self, chunk: &mut ChatChunk) -> Result<bool, GatewayError> {
        if self.template.is_none() {
            self.template = Some(ChatChunk::new(
                chunk.id.clone(),
                chunk.model.clone(),
                chunk.created,
            ));
        }
        if self.chain.hold_stream {
            self.keep(json_len(chunk))?;
            self.held.push(chunk.clone());
            return Ok(false);
        }
        for choice in &mut chunk.choices {
            let Some(text) = choice.delta.content.take() else {
                continue;
            };
            let text = self.filter_text(0, choice.index, text)?;
            self.note_streamed(choice.index, &text)?;
            if !text.is_empty() {
                choice.delta.content = Some(text);
            }
        }
        let keep = chunk.choices.iter().any(|c| {
            c.delta.content.is_some()
                || c.delta.role.is_some()
                || c.delta.tool_calls.is_some()
                || c.finish_reason.is_some()
        });
        Ok(keep)
    }

    /// Passes `text` of `choice` through the stream-mode policies from
    /// `from` on.
    fn filter_text(
        &mut self,
        from: usize,
        choice: u32,
        mut text: String,
    ) -> Result<String, GatewayError> {
        for i in from..self.ran_request {
            if self.chain.policies[i].info.response != wit::ResponseMode::Stream {
                continue;
            }
            self.fed_stream = true;
            let c = wit::Chunk {
                choice,
                text: text.clone(),
            };
            let verdict = self.call(
                i,
                "stream",
                |g, s| g.call_on_chunk(s, &c),
                |r| match r {
                    wit::ChunkVerdict::Continue => "continue",
                    wit::ChunkVerdict::Replace(_) => "modified",
                    wit::ChunkVerdict::Reject(_) => "rejected",
                },
            )?;
            match verdict {
                None | Some(wit::ChunkVerdict::Continue) => {}
                Some(wit::ChunkVerdict::Replace(t)) => text = t,
                Some(wit::ChunkVerdict::Reject(r)) => return Err(self.rejection(r)),
            }
        }
        Ok(text)
    }

    /// Counts `bytes` more kept for the policies: past the chain's limit
    /// the answer fails (502) instead of growing memory without bound.
    fn keep(&mut self, bytes: usize) -> Result<(), GatewayError> {
        self.held_bytes = self.held_bytes.saturating_add(bytes);
        if self.held_bytes > self.chain.max_held_bytes {
            return Err(GatewayError::held_too_large(self.chain.max_held_bytes));
        }
        Ok(())
    }

    fn note_streamed(&mut self, choice: u32, text: &str) -> Result<(), GatewayError> {
        let i = choice as usize;
        if i < 16 {
            self.keep(text.len())?;
            if self.streamed.len() <= i {
                self.streamed.resize(i + 1, String::new());
            }
            self.streamed[i].push_str(text);
        }
        Ok(())
    }

    /// The end of a stream that completed. Pass-through mode: text the
    /// stream policies still held, as chunks to send before the end. Hold
    /// mode: the whole response after `on-response` (rejections are an
    /// error before any byte was sent), as chunks to send.
    pub fn finish_stream(
        &mut self,
        usage: Option<&Usage>,
        finish_reason: Option<FinishReason>,
    ) -> Result<Vec<ChatChunk>, GatewayError> {
        let template = self
            .template
            .clone()
            .unwrap_or_else(|| ChatChunk::new("", "", 0));
        let template = &template;
        if self.chain.hold_stream {
            let held = std::mem::take(&mut self.held);
            // The held chunks become the text noted below.
            self.held_bytes = 0;
            let mut resp = assemble(&held, template, usage, finish_reason);
            let before: Vec<String> = resp
                .choices
                .iter()
                .map(|c| c.message.text_content())
                .collect();
            // Whether it changed is decided below, on the text sent.
            let _ = self.on_response(&mut resp, true)?;
            let after: Vec<String> = resp
                .choices
                .iter()
                .map(|c| c.message.text_content())
                .collect();
            for (i, t) in after.iter().enumerate() {
                self.note_streamed(i as u32, t)?;
            }
            if before == after {
                return Ok(held);
            }
            // Rewritten: send the new text as one chunk per choice.
            return Ok(response_to_chunks(&resp, template));
        }
        let mut out = Vec::new();
        for i in 0..self.ran_request {
            if self.chain.policies[i].info.response != wit::ResponseMode::Stream {
                continue;
            }
            let rest = self.call(i, "stream", |g, s| g.call_on_stream_end(s), |_| "continue")?;
            for c in rest.unwrap_or_default() {
                let text = self.filter_text(i + 1, c.choice, c.text)?;
                if text.is_empty() {
                    continue;
                }
                self.note_streamed(c.choice, &text)?;
                let mut chunk = template.clone();
                chunk.usage = None;
                chunk.choices = vec![ChunkChoice {
                    index: c.choice,
                    delta: Delta {
                        content: Some(text),
                        ..Default::default()
                    },
                    finish_reason: None,
                    logprobs: None,
                }];
                out.push(chunk);
            }
        }
        Ok(out)
    }

    /// After the response: `on-complete` for accounting. `resp` is the
    /// response sent (non-streamed), `None` for streams (the text sent is
    /// used) and failures.
    pub fn complete(
        &mut self,
        status: u16,
        resp: Option<&ChatResponse>,
        streamed: bool,
        usage: Option<&Usage>,
        model: &str,
        price: Option<portcullis_types::pricing::Price>,
    ) {
        if self.completed {
            return;
        }
        self.completed = true;
        // What the request cost, for `metering::cost` in `on-complete`.
        let cost = price.zip(usage).map(|(p, u)| p.cost(u));
        let view = match resp {
            Some(r) => {
                let raw = self.answer_raw.take();
                let mut v = response_view(r, status, streamed, raw);
                if v.usage.is_none() {
                    v.usage = usage.map(to_wit_usage);
                }
                v
            }
            None => {
                let mut choices = Vec::new();
                for t in &self.streamed {
                    choices.push(wit::Message {
                        role: wit::Role::Assistant,
                        parts: vec![t.clone()],
                    });
                }
                let raw = if status == 200 && streamed {
                    let r = streamed_response(&self.streamed, model, usage);
                    serde_json::to_string(&r).unwrap_or_default()
                } else {
                    String::new()
                };
                wit::Response {
                    status,
                    model: model.to_owned(),
                    choices,
                    usage: usage.map(to_wit_usage),
                    streamed,
                    raw,
                }
            }
        };
        for i in 0..self.ran_request {
            if !self.chain.policies[i].info.on_complete {
                continue;
            }
            // Failures here cannot change the answer any more; they are
            // counted and logged by `call`.
            let _ = self.call(
                i,
                "complete",
                |g, s| {
                    s.data_mut().cost = cost;
                    let r = g.call_on_complete(&mut *s, &view);
                    // A warm instance must not carry it to another request.
                    s.data_mut().cost = None;
                    r
                },
                |_| "continue",
            );
        }
    }

    fn add_headers(&mut self, headers: Vec<wit::Header>) {
        for h in headers {
            let valid = http::HeaderName::from_bytes(h.name.as_bytes()).is_ok()
                && http::HeaderValue::from_str(&h.value).is_ok();
            if valid {
                self.headers
                    .retain(|(n, _)| !n.eq_ignore_ascii_case(&h.name));
                self.headers.push((h.name.to_ascii_lowercase(), h.value));
            }
        }
    }

    fn rejection(&mut self, r: wit::Rejection) -> GatewayError {
        let mut e = rejection_error(r);
        // Headers the chain added so far (e.g. rate-limit state) go on
        // the error response too.
        for (k, v) in &self.headers {
            if !e.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)) {
                e.headers.push((k.clone(), v.clone()));
            }
        }
        e
    }
}

impl Drop for ChainRun {
    fn drop(&mut self) {
        // A request that ended early (client gone, provider error returned
        // with `?`) still gets its accounting, as a failure.
        if !self.completed && self.ran_request > 0 {
            self.complete(0, None, false, None, "", None);
        }
        // Instances that did not fail stay warm for the next request.
        for (i, slot) in std::mem::take(&mut self.instances).into_iter().enumerate() {
            if let Slot::Ready(w) = slot {
                self.chain.policies[i].give_back(w);
            }
        }
    }
}

/// Runs `f`, a call into a policy that may wait on the network (see
/// [`Attached`]'s `waits_on_network`), without holding a gateway worker
/// thread: on a multi-threaded runtime (Pingora's) `block_in_place` hands
/// the worker's other tasks to another thread while `f` waits, so requests
/// to proxies that never wait keep their latency when Redis or the
/// embeddings endpoint is slow. Elsewhere (a current-thread runtime, no
/// runtime) `f` runs as it is. Chosen over wasmtime's async support, which
/// would run every call, including the many that never wait, on a fiber
/// stack of its own: see docs/policies.md.
fn off_worker<R>(waits: bool, f: impl FnOnce() -> R) -> R {
    if waits
        && let Ok(rt) = tokio::runtime::Handle::try_current()
        && rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(f);
    }
    f()
}

/// Why a call failed, from its error and the store's state.
fn classify(store: &mut Store<HostState>, e: wasmtime::Error) -> Failure {
    let f = if store.data().memory_exceeded {
        Failure::Memory
    } else if matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        Failure::Timeout
    } else {
        Failure::Trap
    };
    store.data_mut().memory_exceeded = false;
    f
}

fn policy_failed(name: &str, failure: Failure) -> GatewayError {
    let what = match failure {
        Failure::Timeout => "took too long",
        Failure::Memory => "exceeded its memory limit",
        Failure::Trap => "failed",
    };
    let mut e = GatewayError::internal(format!(
        "The policy `{name}` {what}; the request was not processed."
    ));
    e.kind = ErrorKind::Policy;
    e.source = ErrorSource::Policy;
    e.code = Some("policy_failed".into());
    e
}

/// A policy's rejection as a gateway error in the OpenAI envelope.
fn rejection_error(r: wit::Rejection) -> GatewayError {
    let status = if (400..600).contains(&r.status) {
        r.status
    } else {
        400
    };
    // `type` is a closed set in OpenAI's API; unknown values from a policy
    // fall back to the family of the status.
    let error_type: &'static str = match r.error_type.as_str() {
        "invalid_request_error" => "invalid_request_error",
        "rate_limit_exceeded" => "rate_limit_exceeded",
        "requests" => "requests",
        "tokens" => "tokens",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "content_filter" => "content_filter",
        "server_error" => "server_error",
        _ if status >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let mut e = GatewayError::invalid_request(r.message);
    e.status = status;
    e.error_type = error_type;
    e.kind = if status == 429 {
        ErrorKind::RateLimited
    } else {
        ErrorKind::Policy
    };
    e.source = ErrorSource::Policy;
    e.code = r.code;
    e.param = r.param;
    // Another route would get the same verdict.
    e.retryable = false;
    for h in r.headers {
        let valid = http::HeaderName::from_bytes(h.name.as_bytes()).is_ok()
            && http::HeaderValue::from_str(&h.value).is_ok();
        if valid {
            e.headers.push((h.name.to_ascii_lowercase(), h.value));
        }
    }
    e
}

/// Request headers policies never see: credentials.
fn hidden_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "api-key"
            | "x-api-key"
            | "x-goog-api-key"
    ) || name.contains("token")
        || name.contains("secret")
        || name.ends_with("-key")
}

fn wit_role(r: Role) -> wit::Role {
    match r {
        Role::System => wit::Role::System,
        Role::Developer => wit::Role::Developer,
        Role::User => wit::Role::User,
        Role::Assistant => wit::Role::Assistant,
        Role::Tool => wit::Role::Tool,
        Role::Function => wit::Role::Other,
    }
}

fn text_parts(content: &Option<Content>) -> Vec<String> {
    match content {
        None => Vec::new(),
        Some(Content::Text(s)) => vec![s.clone()],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.clone()),
                _ => None,
            })
            .collect(),
    }
}

/// The policies' view of a request; `raw` left empty unless `with_raw`
/// (no policy of the chain reads it).
pub fn request_view(req: &ChatRequest, meta: &RequestMeta<'_>, with_raw: bool) -> wit::Request {
    let headers = meta
        .headers
        .iter()
        .filter(|(n, _)| !hidden_header(n.as_str()))
        .filter_map(|(n, v)| {
            v.to_str().ok().map(|v| wit::Header {
                name: n.as_str().to_owned(),
                value: v.to_owned(),
            })
        })
        .take(64)
        .collect();
    wit::Request {
        request_id: meta.request_id.to_owned(),
        proxy_id: meta.proxy_id.to_owned(),
        key_id: meta.key_id.to_owned(),
        format: match meta.format {
            InboundKind::Openai => wit::InboundFormat::Openai,
            InboundKind::Anthropic => wit::InboundFormat::Anthropic,
            InboundKind::Gemini => wit::InboundFormat::Gemini,
        },
        model: req.model.clone(),
        stream: req.stream,
        max_tokens: req.max_output_tokens(),
        messages: req
            .messages
            .iter()
            .map(|m| wit::Message {
                role: wit_role(m.role),
                parts: text_parts(&m.content),
            })
            .collect(),
        headers,
        raw: if with_raw {
            serde_json::to_string(req).unwrap_or_default()
        } else {
            String::new()
        },
    }
}

/// An embeddings request as the chat request policies see: its model,
/// one user message per input text (none for token-id input), no output
/// (`max_tokens: 0`), not streamed.
pub fn embeddings_as_chat(req: &EmbeddingsRequest) -> Result<ChatRequest, GatewayError> {
    texts_as_chat(
        &req.model,
        &req.input.texts().unwrap_or_default(),
        Some(0),
        false,
    )
}

/// The chat request policies see for a request that is not a chat (one
/// user message per text): how embeddings, legacy completions and
/// moderations reach the policies' request phase.
fn texts_as_chat(
    model: &str,
    texts: &[&str],
    max_tokens: Option<u32>,
    stream: bool,
) -> Result<ChatRequest, GatewayError> {
    let messages: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| serde_json::json!({"role": "user", "content": t}))
        .collect();
    let mut view = serde_json::json!({
        "model": model,
        "messages": messages,
        "stream": stream,
    });
    if let Some(n) = max_tokens {
        view["max_tokens"] = n.into();
    }
    serde_json::from_value(view).map_err(|e| GatewayError::internal(format!("request view: {e}")))
}

/// Carries the policies' edits of an embeddings request's chat view back:
/// the model, and the texts.
fn apply_chat_to_embeddings(chat: ChatRequest, req: &mut EmbeddingsRequest) {
    apply_chat_texts(&chat, &mut req.input);
    req.model = chat.model;
}

/// Carries the texts of a chat view back into the input it was made of
/// (one input per message, in order). Token-id input, which has no text,
/// is left as it is.
fn apply_chat_texts(chat: &ChatRequest, input: &mut EmbeddingInput) {
    if chat.messages.is_empty() {
        return;
    }
    let mut texts: Vec<String> = chat.messages.iter().map(Message::text_content).collect();
    *input = match (&*input, texts.len()) {
        (EmbeddingInput::One(_), 1) => EmbeddingInput::One(texts.remove(0)),
        _ => EmbeddingInput::Many(texts),
    };
}

/// Applies a policy's request edit.
fn apply_request_edit(req: &mut ChatRequest, edit: &wit::RequestEdit) -> Result<(), GatewayError> {
    if let Some(raw) = &edit.raw {
        let stream = req.stream;
        *req = serde_json::from_str(raw).map_err(|e| {
            tracing::warn!(error = %e, "policy returned an invalid request");
            GatewayError::internal("a policy produced an invalid request")
        })?;
        // Whether the client gets a stream is the client's choice.
        req.stream = stream;
    }
    if let Some(messages) = &edit.messages {
        for (m, new) in req.messages.iter_mut().zip(messages) {
            replace_text(&mut m.content, &new.parts);
        }
    }
    Ok(())
}

fn replace_text(content: &mut Option<Content>, parts: &[String]) {
    match content {
        Some(Content::Text(s)) => {
            if let Some(p) = parts.first() {
                *s = p.clone();
            }
        }
        Some(Content::Parts(ps)) => {
            let mut new = parts.iter();
            for p in ps.iter_mut() {
                if let ContentPart::Text { text } = p {
                    match new.next() {
                        Some(t) => *text = t.clone(),
                        None => break,
                    }
                }
            }
        }
        None => {}
    }
}

fn to_wit_usage(u: &Usage) -> wit::Usage {
    wit::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
    }
}

/// The policies' view of a whole response.
/// The policies' view of `resp`; `raw` is its canonical JSON when already
/// known (else rendered here).
fn response_view(
    resp: &ChatResponse,
    status: u16,
    streamed: bool,
    raw: Option<String>,
) -> wit::Response {
    wit::Response {
        status,
        model: resp.model.clone(),
        choices: resp
            .choices
            .iter()
            .map(|c| wit::Message {
                role: wit_role(c.message.role),
                parts: text_parts(&c.message.content),
            })
            .collect(),
        usage: resp.usage.as_ref().map(to_wit_usage),
        streamed,
        raw: raw.unwrap_or_else(|| serde_json::to_string(resp).unwrap_or_default()),
    }
}

/// The size of `chunk` as JSON, counted without allocating.
fn json_len(chunk: &ChatChunk) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail; a chunk that could not be
    // serialised would count as empty, and none exists (plain data).
    let _ = serde_json::to_writer(&mut n, chunk);
    n.0
}

/// A whole response from held-back chunks.
fn assemble(
    chunks: &[ChatChunk],
    template: &ChatChunk,
    usage: Option<&Usage>,
    finish: Option<FinishReason>,
) -> ChatResponse {
    let mut texts: Vec<String> = Vec::new();
    for c in chunks {
        for ch in &c.choices {
            let i = ch.index as usize;
            if i >= 16 {
                continue;
            }
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
            }
            if let Some(t) = &ch.delta.content {
                texts[i].push_str(t);
            }
        }
    }
    let mut r = streamed_response(&texts, &template.model, usage);
    r.id = template.id.clone();
    r.created = template.created;
    for c in &mut r.choices {
        c.finish_reason = finish;
    }
    r
}

fn streamed_response(texts: &[String], model: &str, usage: Option<&Usage>) -> ChatResponse {
    ChatResponse {
        id: String::new(),
        object: "chat.completion".into(),
        created: 0,
        model: model.to_owned(),
        choices: texts
            .iter()
            .enumerate()
            .map(|(i, t)| Choice {
                index: i as u32,
                message: Message::text(Role::Assistant, t.clone()),
                finish_reason: Some(FinishReason::Stop),
                logprobs: None,
            })
            .collect(),
        usage: usage.cloned(),
        system_fingerprint: None,
        extra: Default::default(),
    }
}

/// A whole response as stream chunks: the role and text of each choice,
/// then its finish reason. Used to replay cached answers as SSE and to
/// send a held-back stream that a policy rewrote.
pub fn response_to_chunks(resp: &ChatResponse, template: &ChatChunk) -> Vec<ChatChunk> {
    let mut out = Vec::new();
    for c in &resp.choices {
        let mut chunk = template.clone();
        chunk.usage = None;
        if chunk.model.is_empty() {
            chunk.model = resp.model.clone();
        }
        chunk.choices = vec![ChunkChoice {
            index: c.index,
            delta: Delta {
                role: Some(Role::Assistant),
                content: Some(c.message.text_content()),
                tool_calls: None,
                refusal: None,
                extra: Default::default(),
            },
            finish_reason: None,
            logprobs: None,
        }];
        out.push(chunk.clone());
        chunk.choices = vec![ChunkChoice {
            index: c.index,
            delta: Delta::default(),
            finish_reason: c.finish_reason.or(Some(FinishReason::Stop)),
            logprobs: None,
        }];
        out.push(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_edits_replace_text_only() {
        let mut req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"image_url","image_url":{"url":"http://x"}},{"type":"text","text":"c"}]}]}"#,
        )
        .unwrap();
        let edit = wit::RequestEdit {
            messages: Some(vec![
                wit::Message {
                    role: wit::Role::System,
                    parts: vec!["A".into()],
                },
                wit::Message {
                    role: wit::Role::User,
                    parts: vec!["B".into(), "C".into()],
                },
            ]),
            raw: None,
            response_headers: vec![],
        };
        apply_request_edit(&mut req, &edit).unwrap();
        assert_eq!(req.messages[0].text_content(), "A");
        let Some(Content::Parts(p)) = &req.messages[1].content else {
            panic!()
        };
        assert_eq!(p.len(), 3, "the image stays");
        assert_eq!(req.messages[1].text_content(), "B\nC");
    }

    #[test]
    fn embeddings_are_seen_as_user_messages_and_edits_come_back() {
        let mut req: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"e","input":["mail a@b.c","two"],"dimensions":8}"#)
                .unwrap();
        let mut chat = embeddings_as_chat(&req).unwrap();
        assert_eq!(chat.model, "e");
        assert_eq!(chat.max_output_tokens(), Some(0));
        assert!(!chat.stream);
        let texts: Vec<String> = chat.messages.iter().map(Message::text_content).collect();
        assert_eq!(texts, ["mail a@b.c", "two"]);
        assert!(chat.messages.iter().all(|m| m.role == Role::User));
        // A masking policy's edit of the first text.
        let edit = wit::RequestEdit {
            messages: Some(vec![
                wit::Message {
                    role: wit::Role::User,
                    parts: vec!["mail [EMAIL_1]".into()],
                },
                wit::Message {
                    role: wit::Role::User,
                    parts: vec!["two".into()],
                },
            ]),
            raw: None,
            response_headers: vec![],
        };
        apply_request_edit(&mut chat, &edit).unwrap();
        apply_chat_to_embeddings(chat, &mut req);
        assert_eq!(
            req.input,
            EmbeddingInput::Many(vec!["mail [EMAIL_1]".into(), "two".into()])
        );
        assert_eq!(req.dimensions, Some(8), "other fields stay");
        // One string stays one string; token ids have no text to show.
        let mut one: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"e","input":"x"}"#).unwrap();
        let chat = embeddings_as_chat(&one).unwrap();
        apply_chat_to_embeddings(chat, &mut one);
        assert_eq!(one.input, EmbeddingInput::One("x".into()));
        let mut tokens: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"e","input":[1,2,3]}"#).unwrap();
        let chat = embeddings_as_chat(&tokens).unwrap();
        assert!(chat.messages.is_empty());
        apply_chat_to_embeddings(chat, &mut tokens);
        assert_eq!(tokens.input, EmbeddingInput::Tokens(vec![1, 2, 3]));
    }

    #[test]
    fn rejections_keep_openai_types() {
        let e = rejection_error(wit::Rejection {
            status: 429,
            message: "slow down".into(),
            error_type: "rate_limit_exceeded".into(),
            code: Some("rate_limit_exceeded".into()),
            param: None,
            headers: vec![wit::Header {
                name: "Retry-After".into(),
                value: "3".into(),
            }],
        });
        assert_eq!(
            (e.status, e.error_type, e.kind),
            (429, "rate_limit_exceeded", ErrorKind::RateLimited)
        );
        assert_eq!(e.headers, vec![("retry-after".to_owned(), "3".to_owned())]);
        let e = rejection_error(wit::Rejection {
            status: 200,
            message: "x".into(),
            error_type: "made-up".into(),
            code: None,
            param: None,
            headers: vec![],
        });
        assert_eq!((e.status, e.error_type), (400, "invalid_request_error"));
    }

    #[test]
    fn credentials_are_hidden_from_policies() {
        for h in [
            "authorization",
            "x-api-key",
            "x-upstream-key",
            "x-auth-token",
        ] {
            assert!(hidden_header(h), "{h}");
        }
        assert!(!hidden_header("x-user"));
        assert!(!hidden_header("cache-control"));
    }
}
