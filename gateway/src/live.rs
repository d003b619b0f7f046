//! The live runtime: the slot every request reads its configuration from,
//! and the handle that swaps a new one in (a reload, a managed
//! deployment). Requests in flight keep the `Arc<Runtime>` they started
//! with, so a swap never drops or stalls them, streams included.
//!
//! Its own module so that the server, the runner and the managed agent
//! share it without importing each other (docs/architecture.md, layering).

use std::sync::{Arc, RwLock};

use crate::key_usage::KeyUsage;
use crate::ops::Readiness;
use crate::runtime::Runtime;

/// Swaps the configuration of a running gateway, and reads which keys it
/// authenticated.
#[derive(Clone)]
pub struct RuntimeHandle {
    slot: Arc<RwLock<Arc<Runtime>>>,
    key_usage: Arc<KeyUsage>,
    readiness: Arc<Readiness>,
}

impl RuntimeHandle {
    /// Wraps the gateway's runtime slot and key-use record (see
    /// `Gateway::runtime_handle`).
    pub fn new(
        slot: Arc<RwLock<Arc<Runtime>>>,
        key_usage: Arc<KeyUsage>,
        readiness: Arc<Readiness>,
    ) -> Self {
        RuntimeHandle {
            slot,
            key_usage,
            readiness,
        }
    }

    /// Marks the runtime in force as a real configuration (loaded from
    /// disk at start), so `/readyz` may report ready.
    pub fn mark_configured(&self) {
        self.readiness.set_configured();
    }

    /// The keys the gateway authenticated requests with, and when.
    pub fn key_usage(&self) -> &KeyUsage {
        &self.key_usage
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<Runtime> {
        self.slot
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Swaps in `runtime`; requests in flight finish on the old one.
    pub fn replace(&self, runtime: Runtime) {
        let new = Arc::new(runtime);
        let old = self.current();
        new.carry_health_from(&old);
        new.prepare_semantic(Some(&old));
        match self.slot.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        self.readiness.set_configured();
    }
}
