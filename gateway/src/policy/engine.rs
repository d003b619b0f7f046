//! The wasmtime side: one engine per gateway, each policy module compiled
//! once and pre-instantiated, a store per request, and the host
//! capabilities policies import.
//!
//! Isolation: the pooling allocator keeps instance memory in pre-reserved
//! slots (instantiation is a few microseconds, never a fresh mmap); every
//! call runs under an epoch deadline (a ticker thread advances the epoch
//! each millisecond, cheaper than fuel) and a per-instance memory limit;
//! WASI is linked only so that Rust's standard library works, with no
//! preopened directories, no environment and all sockets denied.
//!
//! Embeddings (the `embeddings` capability) are cached engine-wide by
//! input text ([`EmbedCache`]), and time a policy spends waiting for the
//! embeddings endpoint does not count against its deadline (see
//! [`PolicyEngine::store`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::backend::{Backend, MemoryBackend, RedisBackend};
use super::chain::Attached;
use super::compiled::CompiledDir;
use super::manifest::{Artifact, Manifest, capability_interface};
use crate::metrics::Metrics;
use portcullis_types::policy::Capability;

wasmtime::component::bindgen!({
    world: "policy-world",
    path: "../sdk/wit",
    // A counter out of reach (Redis down) traps the policy call, so the
    // attachment's `on_error` decides: fail open or closed, per policy.
    imports: {
        "portcullis:policy/counters": trappable,
    },
});

pub use exports::portcullis::policy::policy as guest;
pub use portcullis::policy::types as wit;

/// Engine-wide settings (from `policy_engine` in the gateway config).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Longest a single policy call may run.
    pub timeout: Duration,
    /// Largest linear memory of one policy instance.
    pub memory_limit: usize,
    /// Policy instances in use at once (requests in flight x chain length);
    /// requests wait for room beyond that.
    pub max_instances: u32,
    /// Keep instances warm between requests (see `chain`); false gives
    /// every request fresh instances, at several times the cost.
    pub reuse_instances: bool,
    /// Warm instances kept idle across all chains.
    pub max_idle_instances: u32,
    pub redis_url: Option<String>,
    pub cache_max_bytes: usize,
    /// Counters kept in process at most (see `backend::MemoryCounters`).
    pub max_counters: usize,
    pub embeddings: Option<EmbeddingsSettings>,
    /// Where compiled modules are kept between runs (see `compiled`);
    /// none compiles every module at every start.
    pub compiled_dir: Option<std::path::PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            timeout: Duration::from_millis(100),
            memory_limit: 32 << 20,
            max_instances: 1000,
            reuse_instances: true,
            max_idle_instances: 256,
            redis_url: None,
            cache_max_bytes: 64 << 20,
            max_counters: super::backend::DEFAULT_MAX_COUNTERS,
            embeddings: None,
            compiled_dir: None,
        }
    }
}

/// An OpenAI-compatible embeddings endpoint for the `embeddings` capability.
#[derive(Debug, Clone)]
pub struct EmbeddingsSettings {
    /// Full URL of the `/embeddings` endpoint.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Extra CA certificates trusted for the endpoint (PEM file).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What makes two attachments the same: the module's SHA-256, the merged
/// settings (JSON text) and what a failure does.
pub(crate) type AttachmentKey = ([u8; 32], String, portcullis_types::gateway_config::OnError);

/// A compiled policy module.
pub struct LoadedModule {
    pub manifest: Manifest,
    pub pre: PolicyWorldPre<HostState>,
}

/// The engine shared by every chain of a configuration.
pub struct PolicyEngine {
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    pub(crate) settings: EngineSettings,
    pub(crate) backend: Arc<dyn Backend>,
    /// Compiled modules by sha256, so a module attached to many proxies
    /// (or kept across a reload) is compiled once.
    modules: Mutex<HashMap<[u8; 32], Arc<LoadedModule>>>,
    /// Modules compiled so far (not counting those loaded from `compiled`).
    compiles: std::sync::atomic::AtomicU64,
    compiled: Option<CompiledDir>,
    /// Attachments by module, settings and error mode: every proxy that
    /// attaches the same module with the same settings shares one (its
    /// settings validated once, `init` run once, its warm instances), in
    /// one configuration and across reloads while any chain holds it.
    pub(crate) attachments: Mutex<HashMap<AttachmentKey, Weak<Attached>>>,
    pub(crate) regexes: Mutex<HashMap<(String, bool), Arc<regex::Regex>>>,
    pub(crate) schemas: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    /// Room for policy instances (see `EngineSettings::max_instances`).
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Warm instances idle now (bounded by `max_idle_instances`).
    idle: std::sync::atomic::AtomicU32,
    embed_client: Option<EmbedClient>,
    /// Embeddings already fetched, by input text.
    embed_cache: EmbedCache,
    stop_ticker: Arc<AtomicBool>,
    /// The epoch ticker's period ([`tick_for`] the timeout).
    tick: Duration,
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The epoch ticker's period for a policy timeout: a tenth of it, between
/// 1 and 10 ms. Each tick wakes the ticker thread, which on a busy
/// gateway preempts a worker in the middle of a request; at the default
/// 100 ms timeout a 10 ms tick cut the four built-ins' gateway CPU by
/// 3-7% against a 1 ms tick (docs/benchmarks.md, session 12), and a
/// timeout still trips within 10% of its value.
fn tick_for(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// Epoch ticks of `tick` in `d`, rounded up.
fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_nanos().div_ceil(tick.as_nanos()) as u64).max(1)
}

/// Bounds of the engine's embeddings cache ([`EmbedCache`]): entries, and
/// bytes (input text plus vector). At 1,536 dimensions (OpenAI's small
/// model) the byte bound holds about 5,000 entries.
const EMBED_CACHE_MAX_ENTRIES: usize = 10_000;
const EMBED_CACHE_MAX_BYTES: usize = 32 << 20;

impl PolicyEngine {
    pub fn new(settings: EngineSettings) -> Result<Arc<Self>, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // `perf` names policy code only when the JIT writes a perf map
        // (/tmp/perf-PID.map): for profiling, see docs/benchmarks.md.
        if std::env::var_os("PORTCULLIS_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let mut pool = PoolingAllocationConfig::default();
        // Slots for the instances in use, the idle warm ones, and the
        // throwaway instances that check settings when a chain is built.
        let total = settings
            .max_instances
            .saturating_add(if settings.reuse_instances {
                settings.max_idle_instances
            } else {
                0
            })
            .saturating_add(16);
        // A wasip2 Rust component is a few core instances (the module and
        // wit-component's shims) with one memory.
        pool.total_component_instances(total);
        pool.total_core_instances(total.saturating_mul(4));
        pool.total_memories(total.saturating_mul(2));
        pool.total_tables(total.saturating_mul(4));
        pool.max_memory_size(settings.memory_limit);
        pool.max_memories_per_component(4);
        // A fresh instance would otherwise page-fault on every page it
        // touches (the slot is returned to the OS between requests);
        // keeping the first pages resident and zeroing them is cheaper.
        pool.linear_memory_keep_resident(512 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Small reservations: policies are small, and many slots must fit
        // in the address space. Bounds checks become explicit, which costs
        // little next to the host calls a policy makes.
        config.memory_reservation(settings.memory_limit as u64);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(0);
        config.max_wasm_stack(512 << 10);
        let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e}"))?;
        let compiled = settings
            .compiled_dir
            .as_deref()
            .map(|d| CompiledDir::open(d, &engine))
            .transpose()
            .map_err(|e| format!("compiled_dir: {e}"))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        link_wasi(&mut linker).map_err(|e| e.to_string())?;
        PolicyWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;

        let backend: Arc<dyn Backend> = match &settings.redis_url {
            Some(url) => Arc::new(RedisBackend::connect(url, Duration::from_secs(2))?),
            None => Arc::new(MemoryBackend::new(
                settings.max_counters,
                settings.cache_max_bytes,
            )),
        };
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let tick = tick_for(settings.timeout);
        let weak = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| format!("epoch ticker: {e}"))?;
        let embed_client = settings
            .embeddings
            .clone()
            .map(EmbedClient::start)
            .transpose()?;
        Ok(Arc::new(PolicyEngine {
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_instances as usize)),
            idle: std::sync::atomic::AtomicU32::new(0),
            engine,
            linker,
            settings,
            backend,
            modules: Mutex::new(HashMap::new()),
            compiles: std::sync::atomic::AtomicU64::new(0),
            compiled,
            attachments: Mutex::new(HashMap::new()),
            regexes: Mutex::new(HashMap::new()),
            schemas: Mutex::new(HashMap::new()),
            embed_client,
            embed_cache: EmbedCache::new(EMBED_CACHE_MAX_ENTRIES, EMBED_CACHE_MAX_BYTES),
            stop_ticker,
            tick,
        }))
    }

    /// Compiles (or reuses) a module and checks it against its manifest:
    /// it must implement the world, and import no capability it did not
    /// declare.
    pub fn load(&self, artifact: &Artifact) -> Result<Arc<LoadedModule>, String> {
        let sha = artifact.sha256;
        if let Some(m) = self.modules.lock().ok().and_then(|g| g.get(&sha).cloned()) {
            if m.manifest == artifact.manifest {
                return Ok(m);
            }
        }
        let component = match self
            .compiled
            .as_ref()
            .and_then(|c| c.load(&self.engine, &sha))
        {
            Some(c) => c,
            None => {
                self.compiles.fetch_add(1, Ordering::Relaxed);
                let c = Component::new(&self.engine, &artifact.wasm)
                    .map_err(|e| format!("{}: not a valid component: {e:#}", artifact.origin))?;
                if let Some(dir) = &self.compiled {
                    dir.store(&sha, &c);
                }
                c
            }
        };
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let bare = name.split('@').next().unwrap_or(name);
            if let Some(cap) = Capability::ALL
                .into_iter()
                .find(|c| capability_interface(*c) == bare)
            {
                if !artifact.manifest.capabilities.contains(&cap) {
                    return Err(format!(
                        "{}: imports `{name}` but the manifest does not declare the `{cap}` capability",
                        artifact.origin
                    ));
                }
            } else if !(bare.starts_with("wasi:")
                || bare == "portcullis:policy/compute"
                || bare == "portcullis:policy/types")
            {
                return Err(format!(
                    "{}: imports `{name}`, which the gateway does not provide",
                    artifact.origin
                ));
            }
        }
        // WASI interfaces the gateway does not grant (stdio, filesystem,
        // sockets) are linked as traps: Rust's standard library imports
        // them, but a policy that calls them fails instead of escaping.
        let mut linker = self.linker.clone();
        stub_denied_wasi(&mut linker, &component, &self.engine)
            .map_err(|e| format!("{}: {e:#}", artifact.origin))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("{}: {e:#}", artifact.origin))?;
        let pre = PolicyWorldPre::new(pre).map_err(|e| {
            format!(
                "{}: does not implement the portcullis:policy/policy-world@0.1.0 world: {e:#}",
                artifact.origin
            )
        })?;
        let loaded = Arc::new(LoadedModule {
            manifest: artifact.manifest.clone(),
            pre,
        });
        if let Ok(mut g) = self.modules.lock() {
            g.insert(sha, loaded.clone());
        }
        Ok(loaded)
    }

    /// How many modules this engine has compiled.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// A store for one request. `policy` names the instance's owner for
    /// logs, metrics and key namespaces; it is set per call.
    ///
    /// The deadline of a call (`timeout`) bounds the policy's own work.
    /// An `embeddings` call blocks inside the wasm call for a network round
    /// trip, often longer than the whole budget of a policy (100 ms by
    /// default; the attach-time `init` that embeds every utterance gets 1
    /// s), so when the deadline is reached the time the instance spent
    /// waiting for the endpoint in the last `timeout` is given back, and
    /// the call goes on; without such waits it traps as before. Waits of
    /// earlier calls are older than that window and never count. (The
    /// wait itself is bounded by the embeddings client's own timeout.)
    pub(crate) fn store(self: &Arc<Self>, metrics: Option<Arc<Metrics>>) -> Store<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = HostState {
            engine: self.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            current: CurrentPolicy::default(),
            regexes: Vec::new(),
            regex_sources: Vec::new(),
            schemas: Vec::new(),
            schema_sources: Vec::new(),
            memory_limit: self.settings.memory_limit,
            memory_exceeded: false,
            memory_size: 0,
            metrics,
            waits: Vec::new(),
            cost: None,
            caller: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let tick = self.tick;
        let window = self.settings.timeout.max(tick);
        store.epoch_deadline_callback(move |mut ctx| {
            let credit = ctx.data_mut().take_wait_credit(Instant::now(), window);
            Ok(if credit.is_zero() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(ticks(credit, tick))
            })
        });
        store
    }

    /// Takes room for one more idle instance; false when the budget is spent.
    pub(crate) fn reserve_idle(&self) -> bool {
        if !self.settings.reuse_instances {
            return false;
        }
        let max = self.settings.max_idle_instances;
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back room taken by `reserve_idle`.
    pub(crate) fn release_idle(&self, n: u32) {
        let _ = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    /// Whether an embeddings endpoint is configured.
    pub(crate) fn has_embeddings(&self) -> bool {
        self.embed_client.is_some()
    }

    /// Deadline of one call, in epoch ticks.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.ticks(self.settings.timeout)
    }

    /// Epoch ticks in `d`, rounded up.
    pub(crate) fn ticks(&self, d: Duration) -> u64 {
        ticks(d, self.tick)
    }
}

/// The WASI a policy gets: clocks, random numbers, an empty environment
/// and `exit`. No stdio (a panic message goes nowhere; the trap is what
/// counts), no filesystem, no sockets. The synchronous WASI stream
/// bindings would also block on the gateway's async runtime, which is
/// another reason to leave them out.
fn link_wasi(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random};
    use wasmtime_wasi::random::WasiRandom;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, |t| t.clocks())?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, |t| t.clocks())?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, |t| t.cli())?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, |t| t.cli())?;
    Ok(())
}

/// WASI interfaces policies do not get.
const DENIED_WASI: &[&str] = &[
    "wasi:io/",
    "wasi:cli/std",
    "wasi:cli/terminal",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Defines the denied WASI imports of `component` as functions that trap.
/// (Wasmtime's `define_unknown_imports_as_traps` would also shadow the
/// granted interfaces, which the guest imports at older patch versions
/// than the host defines and which the linker matches by semver.)
fn stub_denied_wasi(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    for (name, item) in component.component_type().imports(engine) {
        if !DENIED_WASI.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let ComponentItem::ComponentInstance(inst) = item.ty else {
            continue;
        };
        let mut li = linker.instance(name)?;
        for (export, ty) in inst.exports(engine) {
            match ty.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{export}");
                    li.func_new(export, move |_, _, _, _| {
                        wasmtime::bail!("`{what}` is not available to policies")
                    })?;
                }
                ComponentItem::Resource(_) => {
                    li.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Which policy the store is running now.
#[derive(Debug, Clone, Default)]
pub struct CurrentPolicy {
    pub name: Arc<str>,
    /// Prefix of the policy's counter and cache keys.
    pub namespace: Arc<str>,
}

/// The data of one request's store.
pub struct HostState {
    engine: Arc<PolicyEngine>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) current: CurrentPolicy,
    regexes: Vec<Arc<regex::Regex>>,
    /// Pattern and case flag of each entry of `regexes`.
    regex_sources: Vec<(String, bool)>,
    schemas: Vec<Arc<jsonschema::Validator>>,
    /// Source of each entry of `schemas`.
    schema_sources: Vec<String>,
    memory_limit: usize,
    /// Set when a memory grow was refused, to tell an OOM trap from others.
    pub(crate) memory_exceeded: bool,
    /// Largest linear memory the instance grew to, in bytes (a warm
    /// instance that grew large is not kept).
    pub(crate) memory_size: usize,
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// Recent waits for the embeddings endpoint: when each ended, and how
    /// long it took (see [`PolicyEngine::store`]).
    waits: Vec<(Instant, Duration)>,
    /// What the request cost, set for `on-complete` (`metering`).
    pub(crate) cost: Option<f64>,
    /// The request's application and subscription (`caller`), set for
    /// every call of a request.
    pub(crate) caller: crate::policy::CallerIds,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Ok(false);
        }
        self.memory_size = self.memory_size.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Longest counter or cache key the host stores, in bytes, namespace
/// included. A longer key (a policy keying on a header value or model
/// name a client chose) is stored as its first `KEY_PREFIX_BYTES` bytes
/// and the SHA-256 of the whole key: distinct keys stay distinct, and no
/// client can make one entry arbitrarily large.
const MAX_KEY_BYTES: usize = 256;
const KEY_PREFIX_BYTES: usize = 128;

/// The stored form of a policy's counter or cache key: namespaced by the
/// policy, and length-limited (see `MAX_KEY_BYTES`).
fn stored_key(namespace: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("pc:{namespace}:{key}");
    if full.len() <= MAX_KEY_BYTES {
        return full;
    }
    let mut cut = KEY_PREFIX_BYTES;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    format!("{}#{digest}", &full[..cut])
}

impl HostState {
    fn key(&self, key: &str) -> String {
        stored_key(&self.current.namespace, key)
    }

    /// Runs one counters or cache operation. A backend across the network
    /// (Redis) is waited for like the embeddings endpoint: the round trip
    /// is recorded as a wait, so it does not count against the policy's
    /// deadline (the backend's own timeout bounds it).
    fn on_backend<R>(&mut self, op: impl FnOnce(&dyn Backend) -> R) -> R {
        let backend = &*self.engine.backend;
        if !backend.waits_on_network() {
            return op(backend);
        }
        let started = Instant::now();
        let out = op(backend);
        let now = Instant::now();
        let window = self.engine.settings.timeout.max(self.engine.tick);
        self.record_wait(now, now - started, window);
        out
    }

    /// Records a wait for the network (the embeddings endpoint, Redis)
    /// that ended `now`.
    fn record_wait(&mut self, now: Instant, took: Duration, window: Duration) {
        // Older waits can no longer be credited; keep the list short.
        self.waits
            .retain(|(end, _)| now.saturating_duration_since(*end) < window);
        self.waits.push((now, took));
    }

    /// What the deadline callback gives back when a call reaches its
    /// deadline at `now`: the waits that ended within the last `window`
    /// (the call's budget). The call has run at least that long, so waits
    /// of earlier calls are older and count for nothing. Each wait is
    /// credited once.
    fn take_wait_credit(&mut self, now: Instant, window: Duration) -> Duration {
        std::mem::take(&mut self.waits)
            .into_iter()
            .filter(|(end, _)| now.saturating_duration_since(*end) < window)
            .map(|(_, took)| took)
            .sum()
    }
}

impl wit::Host for HostState {}

impl portcullis::policy::compute::Host for HostState {
    fn regex_compile(&mut self, pattern: String, case_insensitive: bool) -> Result<u32, String> {
        // A warm instance runs `init` at the start of every request; the
        // same pattern gets the same handle, so handles do not pile up.
        if let Some(i) = self
            .regex_sources
            .iter()
            .position(|(p, ci)| *ci == case_insensitive && *p == pattern)
        {
            return Ok(i as u32);
        }
        if self.regexes.len() >= 1024 {
            return Err("too many regexes in one instance".into());
        }
        let cache_key = (pattern, case_insensitive);
        let cached = self
            .engine
            .regexes
            .lock()
            .ok()
            .and_then(|g| g.get(&cache_key).cloned());
        let re = match cached {
            Some(re) => re,
            None => {
                let re = regex::RegexBuilder::new(&cache_key.0)
                    .case_insensitive(case_insensitive)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| e.to_string())?;
                let re = Arc::new(re);
                if let Ok(mut g) = self.engine.regexes.lock() {
                    if g.len() < 10_000 {
                        g.insert(cache_key.clone(), re.clone());
                    }
                }
                re
            }
        };
        self.regexes.push(re);
        self.regex_sources.push(cache_key);
        Ok(self.regexes.len() as u32 - 1)
    }

    fn sha256(&mut self, data: Vec<u8>) -> Vec<u8> {
        use sha2::Digest as _;
        sha2::Sha256::digest(&data).to_vec()
    }

    fn regex_is_match(&mut self, handle: u32, text: String) -> bool {
        self.regexes
            .get(handle as usize)
            .is_some_and(|re| re.is_match(&text))
    }

    fn regex_find_all(&mut self, handle: u32, text: String) -> Vec<wit::Span> {
        match self.regexes.get(handle as usize) {
            Some(re) => re
                .find_iter(&text)
                .take(10_000)
                .map(|m| wit::Span {
                    start: m.start() as u32,
                    end: m.end() as u32,
                })
                .collect(),
            None => Vec::new(),
        }
    }

    fn schema_compile(&mut self, schema: String) -> Result<u32, String> {
        if let Some(i) = self.schema_sources.iter().position(|s| *s == schema) {
            return Ok(i as u32);
        }
        if self.schemas.len() >= 64 {
            return Err("too many schemas in one instance".into());
        }
        let cached = self
            .engine
            .schemas
            .lock()
            .ok()
            .and_then(|g| g.get(&schema).cloned());
        let v = match cached {
            Some(v) => v,
            None => {
                let value: serde_json::Value = serde_json::from_str(&schema)
                    .map_err(|e| format!("schema is not JSON: {e}"))?;
                let v = Arc::new(jsonschema::validator_for(&value).map_err(|e| e.to_string())?);
                if let Ok(mut g) = self.engine.schemas.lock() {
                    if g.len() < 1_000 {
                        g.insert(schema.clone(), v.clone());
                    }
                }
                v
            }
        };
        self.schemas.push(v);
        self.schema_sources.push(schema);
        Ok(self.schemas.len() as u32 - 1)
    }

    fn schema_validate(&mut self, handle: u32, document: String) -> Result<(), Vec<String>> {
        let Some(v) = self.schemas.get(handle as usize) else {
            return Err(vec!["unknown schema handle".into()]);
        };
        let doc: serde_json::Value =
            serde_json::from_str(&document).map_err(|e| vec![format!("not JSON: {e}")])?;
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .take(20)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl portcullis::policy::caller::Host for HostState {
    fn application_id(&mut self) -> Option<String> {
        self.caller.application.as_deref().map(str::to_owned)
    }
    fn subscription_id(&mut self) -> Option<String> {
        self.caller.subscription.as_deref().map(str::to_owned)
    }
}

impl portcullis::policy::metering::Host for HostState {
    fn cost(&mut self) -> Option<f64> {
        self.cost
    }
}

impl portcullis::policy::counters::Host for HostState {
    fn add(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: u64,
    ) -> wasmtime::Result<portcullis::policy::counters::CounterState> {
        let key = self.key(&key);
        counter_result(self.on_backend(|b| b.counter(&key, delta, None, ttl_ms)))
    }

    fn try_add(
        &mut self,
        key: String,
        delta: i64,
        limit: i64,
        ttl_ms: u64,
    ) -> wasmtime::Result<portcullis::policy::counters::CounterState> {
        let key = self.key(&key);
        counter_result(self.on_backend(|b| b.counter(&key, delta, Some(limit), ttl_ms)))
    }

    fn get(&mut self, key: String) -> wasmtime::Result<portcullis::policy::counters::CounterState> {
        let key = self.key(&key);
        counter_result(self.on_backend(|b| b.counter(&key, 0, None, 0)))
    }
}

/// A counter, or the trap that fails the policy call when the backend is
/// out of reach.
fn counter_result(
    r: Result<super::backend::CounterState, String>,
) -> wasmtime::Result<portcullis::policy::counters::CounterState> {
    r.map(to_wit_counter)
        .map_err(|e| wasmtime::format_err!("counters unavailable: {e}"))
}

fn to_wit_counter(s: super::backend::CounterState) -> portcullis::policy::counters::CounterState {
    portcullis::policy::counters::CounterState {
        allowed: s.allowed,
        value: s.value,
        ttl_ms: s.ttl_ms,
    }
}

impl portcullis::policy::cache::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let key = self.key(&key);
        self.on_backend(|b| b.cache_get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) {
        let key = self.key(&key);
        self.on_backend(|b| b.cache_set(&key, &value, ttl_ms));
    }
}

impl portcullis::policy::clock::Host for HostState {
    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

impl portcullis::policy::log::Host for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        let policy = &*self.current.name;
        // Bounded, so a chatty policy cannot flood the log with one line.
        let message: String = message.chars().take(4096).collect();
        match level {
            wit::Level::Trace => tracing::trace!(policy, "{message}"),
            wit::Level::Debug => tracing::debug!(policy, "{message}"),
            wit::Level::Info => tracing::info!(policy, "{message}"),
            wit::Level::Warn => tracing::warn!(policy, "{message}"),
            wit::Level::Error => tracing::error!(policy, "{message}"),
        }
    }
}

impl portcullis::policy::metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64) {
        if let Some(m) = &self.metrics {
            m.policy_custom_add(&self.current.name, &name, value);
        }
    }

    fn observe(&mut self, name: String, value: f64) {
        if let Some(m) = &self.metrics {
            m.policy_custom_observe(&self.current.name, &name, value);
        }
    }
}

impl portcullis::policy::embeddings::Host for HostState {
    /// From the engine's cache when this exact text was embedded before
    /// (by any policy, any instance): every new instance of a policy runs
    /// its `init` again, and a semantic guard's `init` embeds all its
    /// utterances. Otherwise one call to the endpoint, whose answer is
    /// cached; failures are not.
    fn embed(&mut self, input: String) -> Result<Vec<f32>, String> {
        let engine = self.engine.clone();
        let Some(client) = &engine.embed_client else {
            return Err("no embeddings endpoint is configured (policy_engine.embeddings)".into());
        };
        if let Some(v) = engine.embed_cache.get(&input) {
            return Ok(v.to_vec());
        }
        let started = Instant::now();
        let result = client.embed(
            input.clone(),
            engine.settings.timeout.max(Duration::from_secs(5)),
        );
        let now = Instant::now();
        self.record_wait(now, now - started, engine.settings.timeout.max(engine.tick));
        if let Ok(v) = &result {
            engine.embed_cache.insert(input, v);
        }
        result
    }
}

/// Embeddings by exact input text, shared by every instance of an engine
/// (an engine has one endpoint and model, and is rebuilt when they
/// change, so a text always maps to the same vector). It is what keeps the
/// endpoint from being asked for the same utterances again and again:
/// warm instances restore their policy value without running `init`'s
/// work again, but instances created under concurrency (or with
/// `reuse_instances: false`, every instance) run `init` from scratch.
/// Prompts are cached too, so an earlier turn of a conversation is not
/// embedded again on the next request.
///
/// Bounded by entries and bytes; when full, the oldest entry goes first,
/// unless it was read since it was last considered (then it goes to the
/// back of the queue: a second chance), so utterances that new instances
/// keep reading outlive one-off prompts. An evicted utterance costs one
/// more call the next time an `init` needs it.
pub(crate) struct EmbedCache {
    inner: Mutex<EmbedCacheInner>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct EmbedCacheInner {
    map: HashMap<Arc<str>, CachedEmbedding>,
    /// Keys, oldest first.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

struct CachedEmbedding {
    vector: Arc<[f32]>,
    /// Read since it was inserted or last passed over by eviction.
    used: bool,
}

impl EmbedCache {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        EmbedCache {
            inner: Mutex::new(EmbedCacheInner::default()),
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// Bytes an entry is accounted for: its text and vector, plus the
    /// bookkeeping around them.
    fn cost(text: &str, dims: usize) -> usize {
        text.len() + dims * std::mem::size_of::<f32>() + 64
    }

    pub(crate) fn get(&self, text: &str) -> Option<Arc<[f32]>> {
        let mut g = self.inner.lock().ok()?;
        let e = g.map.get_mut(text)?;
        e.used = true;
        Some(e.vector.clone())
    }

    pub(crate) fn insert(&self, text: String, vector: &[f32]) {
        let cost = Self::cost(&text, vector.len());
        // An empty vector is no answer; one entry may not take more than
        // a sixteenth of the cache.
        if vector.is_empty() || cost > self.max_bytes / 16 {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        if g.map.contains_key(text.as_str()) {
            return;
        }
        // Each entry is passed over at most once before it goes, so this
        // ends within two rounds of the queue.
        while g.map.len() >= self.max_entries || g.bytes + cost > self.max_bytes {
            let Some(key) = g.order.pop_front() else {
                break;
            };
            let Some(e) = g.map.get_mut(&key) else {
                continue;
            };
            if e.used {
                e.used = false;
                g.order.push_back(key);
            } else if let Some(e) = g.map.remove(&key) {
                g.bytes -= Self::cost(&key, e.vector.len());
            }
        }
        let key: Arc<str> = Arc::from(text);
        g.bytes += cost;
        g.order.push_back(key.clone());
        g.map.insert(
            key,
            CachedEmbedding {
                vector: Arc::from(vector),
                used: false,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|g| g.map.len()).unwrap_or(0)
    }
}

/// Calls the embeddings endpoint from a runtime of its own: host functions
/// are synchronous (they run inside a wasm call), so the calling worker
/// waits on a channel while the HTTP exchange runs there.
struct EmbedClient {
    tx: tokio::sync::mpsc::Sender<(
        String,
        std::sync::mpsc::SyncSender<Result<Vec<f32>, String>>,
    )>,
}

impl EmbedClient {
    fn start(s: EmbeddingsSettings) -> Result<Self, String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(
            String,
            std::sync::mpsc::SyncSender<Result<Vec<f32>, String>>,
        )>(256);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("embeddings runtime: {e}"))?;
        let http = portcullis_net::client_builder(s.ca_file.as_deref())
            .and_then(|b| Ok(b.build()?))
            .map_err(|e| format!("embeddings client: {e}"))?;
        std::thread::Builder::new()
            .name("policy-embeddings".into())
            .spawn(move || {
                rt.block_on(async move {
                    while let Some((input, reply)) = rx.recv().await {
                        let http = http.clone();
                        let s = s.clone();
                        tokio::spawn(async move {
                            let _ = reply.send(embed_once(&http, &s, &input).await);
                        });
                    }
                })
            })
            .map_err(|e| format!("embeddings thread: {e}"))?;
        Ok(EmbedClient { tx })
    }

    fn embed(&self, input: String, timeout: Duration) -> Result<Vec<f32>, String> {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .try_send((input, reply))
            .map_err(|_| "embeddings queue is full".to_owned())?;
        rx.recv_timeout(timeout)
            .map_err(|_| "embeddings endpoint timed out".to_owned())?
    }
}

async fn embed_once(
    http: &reqwest::Client,
    s: &EmbeddingsSettings,
    input: &str,
) -> Result<Vec<f32>, String> {
    let mut req = http
        .post(&s.url)
        .json(&serde_json::json!({"model": s.model, "input": input}));
    if let Some(k) = &s.api_key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("embeddings request: {}", portcullis_net::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("embeddings endpoint answered {}", resp.status()));
    }
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("embeddings body: {e}"))?;
    v["data"][0]["embedding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect()
        })
        .ok_or_else(|| "embeddings response has no data[0].embedding".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis::policy::embeddings::Host as _;

    #[test]
    fn long_counter_keys_are_hashed_and_stay_distinct() {
        assert_eq!(stored_key("trl", "p|Header|alice"), "pc:trl:p|Header|alice");
        let a = stored_key("trl", &format!("p|Header|{}a", "é".repeat(300)));
        let b = stored_key("trl", &format!("p|Header|{}b", "é".repeat(300)));
        assert!(a.len() <= KEY_PREFIX_BYTES + 1 + 64, "{}", a.len());
        assert!(a.starts_with("pc:trl:p|Header|é"));
        assert_ne!(a, b, "the digest covers the whole key");
        assert_eq!(
            a,
            stored_key("trl", &format!("p|Header|{}a", "é".repeat(300)))
        );
        let at_limit = "k".repeat(MAX_KEY_BYTES - "pc:trl:".len());
        assert_eq!(stored_key("trl", &at_limit).len(), MAX_KEY_BYTES);
    }

    #[test]
    fn the_embed_cache_is_bounded_and_gives_read_entries_a_second_chance() {
        let c = EmbedCache::new(3, 1 << 20);
        c.insert("a".into(), &[1.0]);
        c.insert("b".into(), &[2.0]);
        c.insert("c".into(), &[3.0]);
        assert_eq!(c.get("b").as_deref(), Some(&[2.0][..]));
        // Full: `a` (oldest, never read) goes; `b` was read and stays.
        c.insert("d".into(), &[4.0]);
        assert_eq!(c.len(), 3);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some() && c.get("c").is_some() && c.get("d").is_some());
        // All read: each is passed over once, then the oldest goes.
        c.insert("e".into(), &[5.0]);
        assert_eq!(c.len(), 3);
        assert!(c.get("e").is_some());
        // The same text is not stored twice; empty answers not at all.
        c.insert("e".into(), &[9.0]);
        assert_eq!(c.get("e").as_deref(), Some(&[5.0][..]));
        c.insert("z".into(), &[]);
        assert!(c.get("z").is_none());
    }

    #[test]
    fn the_embed_cache_keeps_to_its_byte_bound() {
        // One-letter texts with 16 floats cost 1 + 64 + 64 = 129 bytes:
        // room for 16 of them, and no entry may cost more than one.
        let c = EmbedCache::new(100, 16 * 129);
        let texts: Vec<String> = (0..17).map(|i| char::from(b'a' + i).to_string()).collect();
        for t in &texts {
            c.insert(t.clone(), &[0.5; 16]);
        }
        assert_eq!(c.len(), 16);
        assert!(c.get("a").is_none(), "the oldest went");
        assert!(c.get("q").is_some());
        assert_eq!(c.inner.lock().unwrap().bytes, 16 * 129);
        let big = "x".repeat(2);
        c.insert(big.clone(), &[1.0; 16]);
        assert!(c.get(&big).is_none(), "130 bytes is over a sixteenth");
    }

    fn small_engine(embeddings: Option<EmbeddingsSettings>) -> Arc<PolicyEngine> {
        PolicyEngine::new(EngineSettings {
            max_instances: 2,
            max_idle_instances: 0,
            memory_limit: 2 << 20,
            embeddings,
            ..EngineSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn only_recent_waits_are_credited_and_each_once() {
        let engine = small_engine(None);
        let mut store = engine.store(None);
        let s = store.data_mut();
        let window = Duration::from_millis(100);
        let t0 = Instant::now();
        s.record_wait(t0, Duration::from_millis(30), window);
        // A wait of an earlier call, long before this deadline.
        let later = t0 + Duration::from_millis(500);
        s.record_wait(later, Duration::from_millis(250), window);
        assert_eq!(s.waits.len(), 1, "the old wait is dropped");
        s.record_wait(later, Duration::from_millis(40), window);
        let at = later + Duration::from_millis(10);
        assert_eq!(s.take_wait_credit(at, window), Duration::from_millis(290));
        assert_eq!(s.take_wait_credit(at, window), Duration::ZERO);
        s.record_wait(later, Duration::from_millis(40), window);
        assert_eq!(
            s.take_wait_credit(later + window, window),
            Duration::ZERO,
            "a wait a whole budget ago belongs to an earlier call"
        );
        let ms = Duration::from_millis(1);
        assert_eq!(ticks(Duration::from_micros(1500), ms), 2);
        assert_eq!(tick_for(Duration::from_millis(100)), 10 * ms);
        assert_eq!(tick_for(Duration::from_millis(5)), ms);
        assert_eq!(tick_for(Duration::from_millis(40)), 4 * ms);
        assert_eq!(ticks(Duration::from_millis(100), 10 * ms), 10);
    }

    /// An embeddings endpoint on loopback that answers each request with
    /// a vector of the input's length, counting the requests; the first
    /// `failures` get a 500.
    async fn endpoint(failures: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/embeddings", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then as much body as content-length says.
                    let body = loop {
                        let Ok(k) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..k]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break text[end + 4..].to_owned();
                            }
                        }
                    };
                    let input = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["input"].as_str().map(str::len))
                        .unwrap_or(0);
                    let (status, json) = if n < failures {
                        ("500 Internal Server Error", "{}".to_owned())
                    } else {
                        (
                            "200 OK",
                            format!(r#"{{"data":[{{"embedding":[{input}.0, 1.0]}}]}}"#),
                        )
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                        json.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn embed_calls_the_endpoint_once_per_text_and_does_not_cache_failures() {
        let (url, calls) = endpoint(1).await;
        let engine = small_engine(Some(EmbeddingsSettings {
            url,
            model: "m".into(),
            api_key: None,
            ca_file: None,
        }));
        // The host function blocks on the embeddings thread, as it does
        // inside a wasm call.
        let result = tokio::task::spawn_blocking(move || {
            let mut a = engine.store(None);
            let mut b = engine.store(None);
            let failed = a.data_mut().embed("hello".into());
            let first = a.data_mut().embed("hello".into());
            // Another instance (a new store) gets the cached vector.
            let second = b.data_mut().embed("hello".into());
            let other = b.data_mut().embed("hi".into());
            (failed, first, second, other, a.data().waits.len())
        })
        .await
        .unwrap();
        let (failed, first, second, other, waits) = result;
        assert!(failed.unwrap_err().contains("500"));
        assert_eq!(first.unwrap(), vec![5.0, 1.0]);
        assert_eq!(second.unwrap(), vec![5.0, 1.0]);
        assert_eq!(other.unwrap(), vec![2.0, 1.0]);
        // The failure, the first "hello" and "hi"; not the cache hit.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            waits, 2,
            "both calls to the endpoint were recorded as waits"
        );
    }
}
