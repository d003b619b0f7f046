//! Managed mode: a gateway that takes its configuration from the admin
//! service instead of a file (`portcullis gateway --admin URL --token T`).
//!
//! An agent on its own thread long-polls admin for the gateway's
//! [`ManagedConfig`], validates each new version into a [`Runtime`] and
//! swaps it in through a [`RuntimeHandle`]: requests in flight keep the
//! `Arc<Runtime>` they started with, so a swap never drops or stalls them,
//! streams included. A version that fails to load is reported back to
//! admin and the previous runtime stays. Every good version is written to
//! disk, and a restart while admin is down serves from that copy. The agent
//! heartbeats so admin can show the gateway as Active; each heartbeat also
//! carries the keys used since the previous one (see `crate::key_usage`),
//! from which admin sets their `last_used_at`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_types::managed::{
    CONFIG_PATH, HEARTBEAT_PATH, Heartbeat, LoadFailure, ManagedConfig, ProxyLoadFailure,
};

use crate::config::{ConfigError, FileConfig};
use crate::key_usage::{Uses, to_wire};
use crate::run::RunOptions;
use crate::runtime::{Runtime, build_runtime_isolating};

pub use crate::live::RuntimeHandle;

use pingora::server::ShutdownWatch;
use pingora::services::ServiceWithDependents;
use pingora::services::background::BackgroundService;

/// Options of a managed gateway.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    /// Admin base URL, e.g. `http://admin:8090`; several, comma-separated,
    /// for admin replicas on one database: the gateway uses the first that
    /// answers and moves to the next when it stops answering.
    pub admin_url: String,
    /// The gateway token admin gave at registration.
    pub token: String,
    /// Where the last good configuration is kept.
    pub data_dir: PathBuf,
    pub listen: String,
    pub ops_listen: String,
    /// The HTTPS listener's address (`--tls-listen`), over the one in
    /// admin's settings for this gateway.
    pub tls_listen: Option<String>,
    pub run: RunOptions,
    /// Seconds a long-poll waits for a change before asking again.
    pub poll_wait: u64,
    pub heartbeat_every: Duration,
    /// Hosts this gateway may send requests to (`--egress-allow`); when
    /// non-empty it replaces whatever admin's configuration says.
    pub egress_allow: Vec<String>,
    /// How admin and the hub are trusted: the CA bundle (`--ca-file`)
    /// also applies to the hub and embeddings URLs admin hands over.
    pub tls: portcullis_net::ClientTls,
}

/// The file the last good configuration is kept in.
pub fn last_good_path(data_dir: &Path) -> PathBuf {
    data_dir.join("managed-config.json")
}

/// Validates a managed configuration into a runtime on `listen`/`ops_listen`.
/// Secrets come from the configuration only, never from the process
/// environment: a managed gateway must not pick up the host's credentials.
/// A proxy that cannot be loaded is left out and reported (the rest of the
/// version applies); errors outside proxies reject the whole version.
pub fn build(
    mc: &ManagedConfig,
    local: &Local,
) -> Result<(Runtime, Vec<ProxyLoadFailure>), ConfigError> {
    let mut file: FileConfig = mc.config.clone();
    file.listen = Some(local.listen.clone());
    file.ops_listen = Some(local.ops_listen.clone());
    if !local.egress_allow.is_empty() {
        file.egress_allow = local.egress_allow.clone();
    }
    if let (Some(listen), Some(tls)) = (&local.tls_listen, file.tls.as_mut()) {
        tls.listen = listen.clone();
    }
    // Policies fetched from the hub are cached with the gateway's other
    // state, not in whatever directory the process was started from.
    if let Some(hub) = file.policy_engine.as_mut().and_then(|e| e.hub.as_mut())
        && hub.cache_dir.is_none()
    {
        hub.cache_dir = Some(local.data_dir.join("policy-cache").display().to_string());
    }
    // This gateway's `--ca-file` is trusted for the hub and the
    // embeddings endpoint too: admin cannot know the gateway's files.
    if let (Some(ca), Some(engine)) = (&local.ca_file, file.policy_engine.as_mut()) {
        let ca = ca.display().to_string();
        if let Some(hub) = engine.hub.as_mut() {
            hub.ca_file.get_or_insert_with(|| ca.clone());
        }
        if let Some(e) = engine.embeddings.as_mut() {
            e.ca_file.get_or_insert(ca);
        }
    }
    let (runtime, failures) =
        build_runtime_isolating(&file, &|name| mc.secrets.get(name).cloned())?;
    let failures = failures
        .into_iter()
        .map(|f| {
            tracing::error!(version = %mc.version, proxy = %f.id, field = %f.error.path, error = %f.error.message, "proxy left out: it cannot be loaded");
            ProxyLoadFailure {
                proxy_id: f.id,
                field: f.error.path,
                message: f.error.message,
            }
        })
        .collect();
    Ok((runtime, failures))
}

/// What the gateway's own operator decides, whatever admin sends: where
/// it listens and which hosts it may reach.
#[derive(Debug, Clone, Default)]
pub struct Local {
    pub listen: String,
    pub ops_listen: String,
    pub tls_listen: Option<String>,
    pub egress_allow: Vec<String>,
    /// The gateway's `--data-dir`: the last good configuration and the
    /// policy cache live there.
    pub data_dir: PathBuf,
    /// The gateway's `--ca-file`, trusted for admin's hub and embeddings
    /// URLs as well.
    pub ca_file: Option<PathBuf>,
}

impl Local {
    fn of(o: &ManagedOptions) -> Local {
        Local {
            listen: o.listen.clone(),
            ops_listen: o.ops_listen.clone(),
            tls_listen: o.tls_listen.clone(),
            egress_allow: o.egress_allow.clone(),
            data_dir: o.data_dir.clone(),
            ca_file: o.tls.ca_file.clone(),
        }
    }
}

/// An empty configuration: no proxies, every path a 404, until admin answers.
fn empty(local: &Local) -> anyhow::Result<Runtime> {
    let file: FileConfig = serde_json::from_str("{}")?;
    let mc = ManagedConfig {
        version: String::new(),
        config: file,
        secrets: Default::default(),
        deployments: Vec::new(),
    };
    Ok(build(&mc, local)?.0)
}

/// Reads the last good configuration, if there is one that still loads.
pub fn load_last_good(data_dir: &Path) -> Option<ManagedConfig> {
    let text = std::fs::read_to_string(last_good_path(data_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the configuration atomically (temp file + rename), readable by
/// the owner only: it holds provider secrets.
pub fn save_last_good(data_dir: &Path, mc: &ManagedConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let path = last_good_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(mc).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// What the agent reports.
#[derive(Debug, Default, Clone)]
struct Status {
    /// The version served.
    served: Option<String>,
    proxies: usize,
    error: Option<LoadFailure>,
    proxy_errors: Vec<ProxyLoadFailure>,
    /// Settings of the served version this process cannot apply live.
    restart_required: Vec<String>,
}

/// The settings a gateway process reads once, when it starts: its
/// listeners and the connection limits they enforce, the metrics' label
/// set. A configuration that changes them is served (everything else in
/// it applies), and the gateway reports what waits for a restart.
#[derive(Debug, Clone, PartialEq)]
struct StartOnly {
    tls_listen: Option<String>,
    max_client_connections: usize,
    client_idle: Duration,
    client_header: Duration,
    key_label: bool,
    application_label: bool,
}

impl StartOnly {
    fn of(rt: &Runtime) -> StartOnly {
        StartOnly {
            tls_listen: rt.tls.as_ref().map(|t| t.listen.clone()),
            max_client_connections: rt.connections.max_connections,
            client_idle: rt.connections.idle,
            client_header: rt.connections.header,
            key_label: rt.telemetry.key_label,
            application_label: rt.telemetry.application_label,
        }
    }

    /// The settings fields that differ between `self` (in force since the
    /// start) and `new`.
    fn changed(&self, new: &StartOnly) -> Vec<String> {
        let mut out = Vec::new();
        if self.tls_listen != new.tls_listen {
            out.push("tls.listen".to_owned());
        }
        if self.max_client_connections != new.max_client_connections {
            out.push("limits.max_client_connections".to_owned());
        }
        if self.client_idle != new.client_idle {
            out.push("timeouts.client_idle_ms".to_owned());
        }
        if self.client_header != new.client_header {
            out.push("timeouts.client_header_ms".to_owned());
        }
        if self.key_label != new.key_label {
            out.push("telemetry.key_label".to_owned());
        }
        if self.application_label != new.application_label {
            out.push("telemetry.application_label".to_owned());
        }
        out
    }
}

/// Applies configurations to a gateway and remembers the outcome.
pub struct Applier {
    handle: RuntimeHandle,
    data_dir: PathBuf,
    local: Local,
    status: Mutex<Status>,
    /// What this process read at start (see `StartOnly`).
    started: StartOnly,
}

/// What `Applier::apply` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Swapped,
    Unchanged,
    Rejected,
}

impl Applier {
    pub fn new(handle: RuntimeHandle, data_dir: PathBuf, local: Local) -> Self {
        let started = StartOnly::of(&handle.current());
        Applier {
            handle,
            data_dir,
            local,
            status: Mutex::new(Status::default()),
            started,
        }
    }

    fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Records that `mc` is being served already (loaded at start), but
    /// for the proxies in `left_out`.
    pub fn mark_served(&self, mc: &ManagedConfig, left_out: Vec<ProxyLoadFailure>) {
        self.set_status(|s| {
            s.served = Some(mc.version.clone());
            s.proxies = mc.config.proxies.len().saturating_sub(left_out.len());
            s.proxy_errors = left_out;
        });
    }

    /// Validates and swaps in `mc`; on failure keeps the runtime in force
    /// and records why, for the next heartbeat.
    pub fn apply(&self, mc: &ManagedConfig) -> Applied {
        if self.status().served.as_deref() == Some(mc.version.as_str()) {
            return Applied::Unchanged;
        }
        match build(mc, &self.local) {
            Ok((rt, left_out)) => {
                // On disk first: once a version is served (a revoked key
                // refused), a restart must not bring back the one before.
                if let Err(e) = save_last_good(&self.data_dir, mc) {
                    tracing::warn!(error = %e, "cannot write the last good configuration");
                }
                let restart_required = self.started.changed(&StartOnly::of(&rt));
                if !restart_required.is_empty() {
                    tracing::warn!(version = %mc.version, fields = ?restart_required, "these settings apply at the next start of the gateway; everything else applies now");
                }
                self.handle.replace(rt);
                let served = mc.config.proxies.len().saturating_sub(left_out.len());
                self.set_status(|s| {
                    s.served = Some(mc.version.clone());
                    s.proxies = served;
                    s.error = None;
                    s.proxy_errors = left_out;
                    s.restart_required = restart_required;
                });
                tracing::info!(version = %mc.version, proxies = served, "configuration applied");
                Applied::Swapped
            }
            Err(e) => {
                tracing::error!(version = %mc.version, field = %e.path, error = %e.message, "configuration rejected; keeping the previous one");
                self.set_status(|s| {
                    s.error = Some(LoadFailure {
                        version: mc.version.clone(),
                        field: e.path.clone(),
                        message: e.message.clone(),
                    })
                });
                Applied::Rejected
            }
        }
    }

    /// The heartbeat body for the current state (without key uses).
    pub fn heartbeat(&self) -> Heartbeat {
        let s = self.status();
        Heartbeat {
            version: s.served,
            proxies: s.proxies,
            error: s.error,
            keys_used: Default::default(),
            proxy_errors: s.proxy_errors,
            restart_required: s.restart_required,
            spend: Vec::new(),
            spend_batch: None,
        }
    }

    /// Takes the key uses recorded since the last report.
    pub fn take_key_uses(&self) -> Uses {
        self.handle.key_usage().take()
    }

    /// Puts back key uses a heartbeat failed to deliver.
    pub fn restore_key_uses(&self, uses: Uses) {
        self.handle.key_usage().restore(uses)
    }
}

/// Talks to admin.
struct Client {
    http: reqwest::Client,
    /// Admin replicas; `current` indexes the one in use.
    admins: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    token: String,
    /// The spend batch sent and not acknowledged yet: (id, records).
    pending_spend: Mutex<Option<(String, Vec<portcullis_types::managed::SpendRecord>)>>,
}

enum Fetched {
    Changed(ManagedConfig),
    Unchanged,
}

impl Client {
    /// The admin in use, and its index.
    fn admin(&self) -> (usize, &str) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.admins.len();
        (i, &self.admins[i])
    }

    /// `err` came from admin `i` without an answer (down, unreachable):
    /// the next call goes to the next replica, if there is one.
    fn failed(&self, i: usize, err: reqwest::Error) -> anyhow::Error {
        if self.admins.len() > 1
            && self
                .current
                .compare_exchange(
                    i,
                    (i + 1) % self.admins.len(),
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            let next = &self.admins[(i + 1) % self.admins.len()];
            tracing::warn!(admin = %self.admins[i], next = %next, error = %err, "admin does not answer; switching to the next replica");
        }
        err.into()
    }

    async fn fetch(&self, known: Option<&str>, wait: u64) -> anyhow::Result<Fetched> {
        let (i, admin) = self.admin();
        let mut req = self
            .http
            .get(format!("{admin}{CONFIG_PATH}?wait={wait}"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(wait + 10));
        if let Some(v) = known {
            req = req.header("if-none-match", format!("\"{v}\""));
        }
        let resp = req.send().await.map_err(|e| self.failed(i, e))?;
        match resp.status() {
            reqwest::StatusCode::NOT_MODIFIED => Ok(Fetched::Unchanged),
            s if s.is_success() => Ok(Fetched::Changed(resp.json().await?)),
            s => anyhow::bail!(
                "admin answered {s}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }

    async fn post_heartbeat(&self, hb: &Heartbeat) -> anyhow::Result<reqwest::StatusCode> {
        let (i, admin) = self.admin();
        let resp = self
            .http
            .post(format!("{admin}{HEARTBEAT_PATH}"))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .json(hb)
            .send()
            .await
            .map_err(|e| self.failed(i, e))?;
        Ok(resp.status())
    }

    /// Sends `hb` with the key uses recorded since the last heartbeat (uses
    /// that did not reach admin are kept for the next one) and the spend
    /// batch: the one admin has not acknowledged yet, sent again under its
    /// id until it is (admin adds a batch once), else a new one.
    async fn heartbeat(&self, applier: &Applier, mut hb: Heartbeat) -> anyhow::Result<()> {
        let uses = applier.take_key_uses();
        hb.keys_used = to_wire(&uses);
        let batch = {
            let mut pending = self.pending_spend.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_none() {
                let records = applier.handle.spend().take();
                if !records.is_empty() {
                    *pending = Some((uuid::Uuid::new_v4().simple().to_string(), records));
                }
            }
            pending.clone()
        };
        if let Some((id, records)) = &batch {
            hb.spend_batch = Some(id.clone());
            hb.spend = records.clone();
        }
        let acknowledged = || {
            let mut pending = self.pending_spend.lock().unwrap_or_else(|p| p.into_inner());
            if pending.as_ref().map(|b| &b.0) == batch.as_ref().map(|b| &b.0) {
                *pending = None;
            }
        };
        let status = match self.post_heartbeat(&hb).await {
            Ok(s) => s,
            Err(e) => {
                applier.restore_key_uses(uses);
                return Err(e);
            }
        };
        if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
            && (!hb.keys_used.is_empty() || !hb.spend.is_empty())
        {
            // An admin older than `keys_used` (or `spend`) rejects the
            // unknown field: it cannot store them, so drop them and
            // heartbeat without.
            tracing::debug!("admin does not take key uses or spend; heartbeating without them");
            acknowledged();
            hb.keys_used.clear();
            hb.spend.clear();
            hb.spend_batch = None;
            let status = self.post_heartbeat(&hb).await?;
            if !status.is_success() {
                anyhow::bail!("admin answered {status}");
            }
            return Ok(());
        }
        if !status.is_success() {
            applier.restore_key_uses(uses);
            anyhow::bail!("admin answered {status}");
        }
        acknowledged();
        Ok(())
    }
}

/// Runs a managed gateway until the process is stopped.
pub fn run(o: ManagedOptions) -> anyhow::Result<()> {
    // Before anything connects: the link carries the gateway token and
    // every provider secret.
    let admins: Vec<String> = o
        .admin_url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if admins.is_empty() {
        anyhow::bail!("--admin: no URL given");
    }
    for url in &admins {
        o.tls.check_url(url, "--admin")?;
    }
    let client = Arc::new(Client {
        http: o.tls.client()?,
        admins,
        current: Default::default(),
        pending_spend: Mutex::new(None),
        token: o.token.clone(),
    });
    // The first configuration: from admin if it answers soon, else the
    // last good one on disk, else none (404s until admin answers).
    let first = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = client.clone();
        rt.block_on(
            async move { tokio::time::timeout(Duration::from_secs(5), c.fetch(None, 0)).await },
        )
    };
    let from_admin = match first {
        Ok(Ok(Fetched::Changed(mc))) => Some(mc),
        Ok(Ok(Fetched::Unchanged)) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "admin unreachable at start");
            None
        }
        Err(_) => {
            tracing::warn!("admin did not answer within 5 s at start");
            None
        }
    };
    let mut initial: Option<(ManagedConfig, (Runtime, Vec<ProxyLoadFailure>))> = None;
    let mut rejected: Option<(ManagedConfig, ConfigError)> = None;
    if let Some(mc) = from_admin {
        match build(&mc, &Local::of(&o)) {
            Ok(built) => {
                if let Err(e) = save_last_good(&o.data_dir, &mc) {
                    tracing::warn!(error = %e, "cannot write the last good configuration");
                }
                initial = Some((mc, built));
            }
            Err(e) => rejected = Some((mc, e)),
        }
    }
    if initial.is_none() {
        if let Some(mc) = load_last_good(&o.data_dir) {
            match build(&mc, &Local::of(&o)) {
                Ok(built) => {
                    tracing::info!(version = %mc.version, "serving the last good configuration from disk");
                    initial = Some((mc, built));
                }
                Err(e) => tracing::warn!(error = %e, "the configuration on disk no longer loads"),
            }
        }
    }
    let (served, runtime) = match initial {
        Some((mc, (rt, left_out))) => (Some((mc, left_out)), rt),
        None => (None, empty(&Local::of(&o))?),
    };
    let opts = o.clone();
    crate::run::run_with(runtime, o.run.clone(), move |handle| {
        if served.is_some() {
            handle.mark_configured();
        }
        // Admin sums what requests spent from the heartbeats.
        handle.spend().enable();
        let applier = Arc::new(Applier::new(
            handle,
            opts.data_dir.clone(),
            Local::of(&opts),
        ));
        if let Some((mc, left_out)) = served {
            applier.mark_served(&mc, left_out);
        }
        if let Some((mc, e)) = &rejected {
            applier.apply(mc);
            tracing::error!(error = %e, "admin's configuration was rejected at start");
        }
        let agent = AgentService {
            client,
            applier,
            opts,
        };
        let service: Box<dyn ServiceWithDependents> = Box::new(
            pingora::services::background::background_service("managed-agent", agent),
        );
        Ok(vec![service, crate::reload::managed_hangup()])
    })
}

/// The agent as a Pingora background service: it runs on a runtime the
/// server owns, starts with the listeners and stops with the server,
/// instead of on a thread and runtime of its own.
struct AgentService {
    client: Arc<Client>,
    applier: Arc<Applier>,
    opts: ManagedOptions,
}

#[async_trait::async_trait]
impl BackgroundService for AgentService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = agent(self.client.clone(), self.applier.clone(), self.opts.clone()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Long-polls for changes and heartbeats, forever.
async fn agent(client: Arc<Client>, applier: Arc<Applier>, o: ManagedOptions) {
    let hb_client = client.clone();
    let hb_applier = applier.clone();
    let every = o.heartbeat_every;
    tokio::spawn(async move {
        loop {
            if let Err(e) = hb_client
                .heartbeat(&hb_applier, hb_applier.heartbeat())
                .await
            {
                tracing::debug!(error = %e, "heartbeat failed");
            }
            tokio::time::sleep(every).await;
        }
    });
    // The last version seen, good or bad: asking with it means a rejected
    // version is not fetched again and again, only its successor.
    let mut known = applier.heartbeat().version;
    if let Some(e) = &applier.heartbeat().error {
        known = Some(e.version.clone());
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        match client.fetch(known.as_deref(), o.poll_wait).await {
            Ok(Fetched::Unchanged) => backoff = Duration::from_millis(250),
            Ok(Fetched::Changed(mc)) => {
                backoff = Duration::from_millis(250);
                known = Some(mc.version.clone());
                let applier2 = applier.clone();
                // Building 1,000 proxies takes a while; keep it off the
                // agent's reactor so heartbeats go on meanwhile.
                let applied = tokio::task::spawn_blocking(move || applier2.apply(&mc)).await;
                if matches!(applied, Ok(Applied::Swapped) | Ok(Applied::Rejected)) {
                    // Tell admin at once rather than at the next beat.
                    if let Err(e) = client.heartbeat(&applier, applier.heartbeat()).await {
                        tracing::debug!(error = %e, "heartbeat failed");
                    }
                }
            }
            Err(e) => {
                // Admin is down or unreachable: keep serving what we have.
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach admin"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn managed(version: &str, proxies: usize, provider: &str) -> ManagedConfig {
        let proxies: Vec<_> = (0..proxies)
            .map(|i| {
                json!({"name": format!("p{i}"), "routes": [{"provider": provider}],
                "keys": [{"name": "k", "sha256": "00".repeat(32)}]})
            })
            .collect();
        serde_json::from_value(json!({
            "version": version,
            "config": {
                "providers": [{"name": "mock", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "SECRET_KEY"}],
                "proxies": proxies,
            },
            "secrets": {"SECRET_KEY": "sk-from-admin"},
        }))
        .unwrap()
    }

    fn applier(dir: &Path) -> (Applier, RuntimeHandle) {
        let handle = RuntimeHandle::new(
            crate::live::slot(Arc::new(empty(&test_local()).unwrap())),
            Arc::default(),
            Arc::default(),
            crate::live::indexer().0,
            Arc::new(crate::otlp::Tracer::new(prometheus::IntCounter::new("d", "d").unwrap()).0),
            Arc::default(),
        );
        (
            Applier::new(handle.clone(), dir.to_owned(), test_local()),
            handle,
        )
    }

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("pc-managed-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn good_configs_swap_and_persist_bad_ones_are_reported_and_kept_out() {
        let dir = temp_dir();
        let (a, handle) = applier(&dir);
        let before = handle.current();
        assert_eq!(a.apply(&managed("v1", 2, "mock")), Applied::Swapped);
        let rt = handle.current();
        assert_eq!(rt.proxies.len(), 2);
        assert!(
            matches!(&rt.proxies["/p0"].routes[0].key, crate::upstream::KeySource::Static(k) if k == "sk-from-admin")
        );
        // A request that started before the swap still holds its runtime.
        assert_eq!(before.proxies.len(), 0);
        assert_eq!(a.apply(&managed("v1", 2, "mock")), Applied::Unchanged);

        // A version that cannot load at all (two providers with one name):
        // reported with its field, the good one stays.
        let mut bad = managed("v2", 3, "mock");
        bad.config.providers.push(bad.config.providers[0].clone());
        assert_eq!(a.apply(&bad), Applied::Rejected);
        assert_eq!(handle.current().proxies.len(), 2);
        let hb = a.heartbeat();
        assert_eq!(hb.version.as_deref(), Some("v1"));
        let err = hb.error.unwrap();
        assert_eq!(
            (err.version.as_str(), err.field.as_str()),
            ("v2", "providers[1].name")
        );
        // On disk: the last good one only.
        assert_eq!(load_last_good(&dir).unwrap().version, "v1");
        // The next good version clears the error.
        assert_eq!(a.apply(&managed("v3", 1, "mock")), Applied::Swapped);
        assert!(a.heartbeat().error.is_none());

        // One proxy that cannot load is left out and reported; the rest of
        // its version applies, a key revocation on another proxy included.
        let mut mixed = managed("v4", 3, "mock");
        mixed.config.proxies[1].routes[0].provider = "nope".into();
        mixed.config.proxies[2].keys.clear();
        assert_eq!(a.apply(&mixed), Applied::Swapped);
        let rt = handle.current();
        assert_eq!(rt.proxies.len(), 2);
        assert!(!rt.proxies.contains_key("/p1"));
        assert!(rt.proxies["/p2"].keys.is_empty(), "the revocation applied");
        let hb = a.heartbeat();
        assert_eq!((hb.version.as_deref(), hb.proxies), (Some("v4"), 2));
        assert!(hb.error.is_none());
        assert_eq!(
            hb.proxy_errors,
            vec![ProxyLoadFailure {
                proxy_id: "p1".into(),
                field: "proxies[1].routes[0].provider".into(),
                message: "no provider named `nope`".into(),
            }]
        );
        assert_eq!(load_last_good(&dir).unwrap().version, "v4");
        // Fixed in the next version: nothing left out any more.
        assert_eq!(a.apply(&managed("v5", 3, "mock")), Applied::Swapped);
        assert!(a.heartbeat().proxy_errors.is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(last_good_path(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the file holds secrets");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fake admin heartbeat endpoint: answers each request with the next
    /// status of `statuses` and hands over the bodies it got.
    async fn fake_admin(
        statuses: Vec<u16>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<Heartbeat>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for status in statuses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "request cut short");
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                tx.send(serde_json::from_slice(&body).unwrap()).unwrap();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                sock.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn heartbeats_carry_key_uses_and_keep_them_until_delivered() {
        let dir = temp_dir();
        let (a, handle) = applier(&dir);
        assert_eq!(a.apply(&managed("v1", 1, "mock")), Applied::Swapped);
        let hash = [0u8; 32];
        let rt = handle.current();
        handle
            .key_usage()
            .record(&hash, &rt.proxies["/p0"].keys[&hash]);
        // A swap in between loses nothing.
        assert_eq!(a.apply(&managed("v2", 1, "mock")), Applied::Swapped);

        let (admin, mut got) = fake_admin(vec![503, 204, 204, 422, 204]).await;
        let client = Client {
            http: portcullis_net::ClientTls::default().client().unwrap(),
            admins: vec![admin],
            current: Default::default(),
            pending_spend: Mutex::new(None),
            token: "gwt-test".into(),
        };
        // Admin failed: the use is kept for the next beat.
        assert!(client.heartbeat(&a, a.heartbeat()).await.is_err());
        let first = got.recv().await.unwrap();
        let wire = "00".repeat(32);
        assert!(first.keys_used.contains_key(&wire), "{first:?}");
        assert_eq!(first.version.as_deref(), Some("v2"));
        client.heartbeat(&a, a.heartbeat()).await.unwrap();
        assert_eq!(got.recv().await.unwrap().keys_used, first.keys_used);
        // Delivered: not sent again.
        client.heartbeat(&a, a.heartbeat()).await.unwrap();
        assert!(got.recv().await.unwrap().keys_used.is_empty());

        // An admin from before `keys_used` rejects the field: the gateway
        // still heartbeats, without it.
        let rt = handle.current();
        handle
            .key_usage()
            .record(&hash, &rt.proxies["/p0"].keys[&hash]);
        client.heartbeat(&a, a.heartbeat()).await.unwrap();
        assert!(!got.recv().await.unwrap().keys_used.is_empty());
        assert!(got.recv().await.unwrap().keys_used.is_empty());
        assert!(a.take_key_uses().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_spend_batch_is_sent_again_under_its_id_until_acknowledged() {
        let dir = temp_dir();
        let (a, handle) = applier(&dir);
        handle.spend().enable();
        let key: std::sync::Arc<str> = std::sync::Arc::from("key_1");
        let spent = |tokens| crate::spend::Spent {
            proxy: "p0",
            key: &key,
            model: "m",
            input_tokens: tokens,
            output_tokens: 0,
            cost: Some(1.0),
        };
        handle.spend().record(spent(10));
        let (admin, mut got) = fake_admin(vec![503, 204, 204]).await;
        let client = Client {
            http: portcullis_net::ClientTls::default().client().unwrap(),
            admins: vec![admin],
            current: Default::default(),
            pending_spend: Mutex::new(None),
            token: "gwt-test".into(),
        };
        assert!(client.heartbeat(&a, a.heartbeat()).await.is_err());
        let first = got.recv().await.unwrap();
        assert_eq!(first.spend.len(), 1);
        // Spent meanwhile: waits for the next batch, the first goes again
        // whole, under its id.
        handle.spend().record(spent(5));
        client.heartbeat(&a, a.heartbeat()).await.unwrap();
        let again = got.recv().await.unwrap();
        assert_eq!(again.spend_batch, first.spend_batch);
        assert_eq!(again.spend, first.spend);
        client.heartbeat(&a, a.heartbeat()).await.unwrap();
        let next = got.recv().await.unwrap();
        assert_ne!(next.spend_batch, first.spend_batch);
        assert_eq!(next.spend[0].input_tokens, 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn test_local() -> Local {
        Local {
            listen: "127.0.0.1:0".into(),
            ops_listen: "127.0.0.1:0".into(),
            tls_listen: None,
            egress_allow: Vec::new(),
            data_dir: std::env::temp_dir().join("portcullis-managed-test"),
            ca_file: None,
        }
    }

    #[test]
    fn the_operators_egress_allow_list_overrides_admins() {
        let mc = managed("v1", 1, "mock");
        let mut local = test_local();
        local.egress_allow = vec!["api.openai.com".into()];
        let (rt, left_out) = build(&mc, &local).unwrap();
        assert!(rt.proxies.is_empty());
        assert!(left_out[0].field.ends_with("base_url"), "{left_out:?}");
        assert!(
            left_out[0].message.contains("egress allow-list"),
            "{left_out:?}"
        );
        local.egress_allow = vec!["127.0.0.1".into()];
        let (rt, left_out) = build(&mc, &local).unwrap();
        assert_eq!((rt.proxies.len(), left_out.len()), (1, 0));
    }

    #[test]
    fn secrets_come_from_admin_not_the_environment() {
        let mut mc = managed("v1", 1, "mock");
        mc.secrets.clear();
        // PATH is set in every process environment; it must not be read.
        mc.config.providers[0].api_key_env = Some("PATH".into());
        let (_, left_out) = build(&mc, &test_local()).unwrap();
        assert_eq!(left_out[0].field, "providers[0].api_key_env");
    }

    #[test]
    fn a_thousand_proxies_build_and_swap_quickly() {
        let dir = temp_dir();
        let (a, handle) = applier(&dir);
        let started = std::time::Instant::now();
        assert_eq!(a.apply(&managed("big", 1000, "mock")), Applied::Swapped);
        let took = started.elapsed();
        assert_eq!(handle.current().proxies.len(), 1000);
        assert!(took < Duration::from_secs(5), "1000 proxies took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
