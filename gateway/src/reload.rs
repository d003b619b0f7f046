//! Reloading a gateway run from a file: on SIGHUP the file is read and
//! validated again, and swapped in whole if it loads (requests in flight
//! keep the configuration they started with); if not, the error is logged
//! naming the field and the running configuration stays. Settings read
//! only at start (listeners, connection limits) keep their first value.

use std::path::PathBuf;

use pingora::server::ShutdownWatch;
use pingora::services::ServiceWithDependents;
use pingora::services::background::{BackgroundService, background_service};
use tokio::signal::unix::{SignalKind, signal};

use crate::live::RuntimeHandle;

/// Watches for SIGHUP and reloads `path`.
struct Reloader {
    path: PathBuf,
    egress: Option<Vec<String>>,
    handle: RuntimeHandle,
}

#[async_trait::async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot watch SIGHUP; the configuration will not reload");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.changed() => return,
            }
            let (path, egress) = (self.path.clone(), self.egress.clone());
            // Building compiles policies and resolves nothing on the
            // reactor: off the async threads.
            let built = tokio::task::spawn_blocking(move || {
                crate::runtime::load_file_with_egress(&path, egress.as_deref())
            })
            .await;
            match built {
                Ok(Ok(rt)) => {
                    let proxies = rt.proxies.len();
                    self.handle.replace(rt);
                    tracing::info!(file = %self.path.display(), proxies, "configuration reloaded");
                }
                Ok(Err(e)) => tracing::error!(
                    file = %self.path.display(),
                    field = %e.path,
                    error = %e.message,
                    "configuration not reloaded; keeping the one in force"
                ),
                Err(e) => tracing::error!(error = %e, "configuration reload failed"),
            }
        }
    }
}

/// The reload service of a gateway run from `path`.
pub fn service(
    path: PathBuf,
    egress: Option<Vec<String>>,
    handle: RuntimeHandle,
) -> Box<dyn ServiceWithDependents> {
    Box::new(background_service(
        "config-reload",
        Reloader {
            path,
            egress,
            handle,
        },
    ))
}

/// SIGHUP on a managed gateway: its configuration comes from admin, so
/// there is nothing to read again; the signal is noted instead of ending
/// the process (its default action).
struct ManagedHangup;

#[async_trait::async_trait]
impl BackgroundService for ManagedHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => tracing::info!("SIGHUP: a managed gateway takes its configuration from admin; nothing to reload"),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The SIGHUP watcher of a managed gateway.
pub fn managed_hangup() -> Box<dyn ServiceWithDependents> {
    Box::new(background_service("sighup", ManagedHangup))
}
