//! The live runtime: the slot every request reads its configuration from,
//! and the handle that swaps a new one in (a reload, a managed
//! deployment). Requests in flight keep the `Arc<Runtime>` they started
//! with, so a swap never drops or stalls them, streams included.
//!
//! Its own module so that the server, the runner and the managed agent
//! share it without importing each other (docs/architecture.md, layering).

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use tokio::sync::mpsc;

use crate::key_usage::KeyUsage;
use crate::ops::Readiness;
use crate::otlp::Tracer;
use crate::runtime::Runtime;

/// The runtime in force. Every request loads it once (a few atomic
/// operations, no lock shared with writers); a swap stores a new one.
pub type Slot = Arc<ArcSwap<Runtime>>;

/// A slot holding `runtime`.
pub fn slot(runtime: Arc<Runtime>) -> Slot {
    Arc::new(ArcSwap::new(runtime))
}

/// Where runtimes with semantic indexes still to compute are sent, for
/// the indexer (`indexer`).
pub type IndexQueue = mpsc::UnboundedSender<Arc<Runtime>>;

/// The queue of runtimes to index, and the indexer that works through it:
/// a background service of the gateway (`background::service`). Runtimes
/// sent before the server starts wait in the queue.
pub fn indexer() -> (
    IndexQueue,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Runtime>>();
    let work = async move {
        let connector = Connector::new(None);
        while let Some(runtime) = rx.recv().await {
            // A newer configuration replaces one not indexed yet.
            let mut latest = runtime;
            while let Ok(next) = rx.try_recv() {
                latest = next;
            }
            latest.index_semantic(&connector).await;
        }
    };
    (tx, work)
}

/// The model discovery refresher: fetches the due model lists of the
/// runtime in force, for as long as the gateway runs (a background
/// service). Reading the slot each round follows reloads without a task
/// per configuration.
pub fn discovery_refresher(
    slot: Slot,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        let connector = Arc::new(Connector::new(None));
        loop {
            {
                let rt = slot.load();
                crate::discovery::refresh_due(&rt.model_sources, &connector, rt.peers, &metrics);
            }
            tokio::time::sleep(crate::discovery::TICK).await;
        }
    }
}

/// Swaps the configuration of a running gateway, and reads which keys it
/// authenticated.
#[derive(Clone)]
pub struct RuntimeHandle {
    slot: Slot,
    key_usage: Arc<KeyUsage>,
    readiness: Arc<Readiness>,
    index: IndexQueue,
    tracer: Arc<Tracer>,
    spend: Arc<crate::spend::SpendLedger>,
}

impl RuntimeHandle {
    /// Wraps the gateway's runtime slot and key-use record (see
    /// `Gateway::runtime_handle`).
    pub fn new(
        slot: Slot,
        key_usage: Arc<KeyUsage>,
        readiness: Arc<Readiness>,
        index: IndexQueue,
        tracer: Arc<Tracer>,
        spend: Arc<crate::spend::SpendLedger>,
    ) -> Self {
        RuntimeHandle {
            slot,
            key_usage,
            readiness,
            index,
            tracer,
            spend,
        }
    }

    /// Marks the runtime in force as a real configuration (loaded from
    /// disk at start), so `/readyz` may report ready.
    pub fn mark_configured(&self) {
        self.readiness.set_configured();
    }

    /// What requests with a key spent since the last report.
    pub fn spend(&self) -> &crate::spend::SpendLedger {
        &self.spend
    }

    /// The keys the gateway authenticated requests with, and when.
    pub fn key_usage(&self) -> &KeyUsage {
        &self.key_usage
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Runtime> {
        self.slot.load_full()
    }

    /// Swaps in `runtime`; requests in flight finish on the old one.
    pub fn replace(&self, runtime: Runtime) {
        let new = Arc::new(runtime);
        let old = self.current();
        new.carry_health_from(&old);
        if new.adopt_semantic(Some(&old)) {
            // The indexer is gone only once the server stops.
            let _ = self.index.send(new.clone());
        }
        self.tracer.configure(&new.telemetry);
        self.slot.store(new);
        self.readiness.set_configured();
    }
}
