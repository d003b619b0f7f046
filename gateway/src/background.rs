//! Background work of a running gateway as Pingora background services:
//! each runs on a runtime the Pingora server owns, starts with the
//! listeners and stops with the server (`BG <name>` in Pingora's logs),
//! instead of on a thread with a private tokio runtime.
//!
//! Work that is set up before the server runs (the OTLP exporter, the
//! first semantic index) is handed over as a future and runs once the
//! server starts it; until then its inputs wait in a channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use pingora::server::ShutdownWatch;
use pingora::services::ServiceWithDependents;
use pingora::services::background::{BackgroundService, background_service};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One long-running task, run until it ends or the server shuts down.
struct Once {
    task: Mutex<Option<Task>>,
}

#[async_trait::async_trait]
impl BackgroundService for Once {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(task) = task else {
            return; // started twice: the task already ran
        };
        tokio::select! {
            () = task => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// `task` as a Pingora background service named `name`.
pub fn service(
    name: &str,
    task: impl Future<Output = ()> + Send + 'static,
) -> Box<dyn ServiceWithDependents> {
    Box::new(background_service(
        name,
        Once {
            task: Mutex::new(Some(Box::pin(task))),
        },
    ))
}
