//! Starting a gateway: Pingora server, traffic listeners (plain and TLS)
//! and the operations listener.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tokio::signal::unix::{SignalKind, signal};

use crate::exchange::Gateway;
use crate::listener::ClientListener;
use crate::metrics::Metrics;
use crate::ops::{OpsApp, Readiness};
use crate::runtime::Runtime;

/// Options of a gateway process that are not part of its configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads for the traffic service (default: the number of CPUs).
    pub threads: usize,
    /// On SIGTERM, how long `/readyz` answers 503 while the gateway still
    /// serves, before its listeners close (default 5 s).
    pub drain: Duration,
    /// Once the listeners are closed, how long requests in flight (streams
    /// included) may take to finish before the process exits (default 30 s).
    pub shutdown_grace: Duration,
    /// Start as the new process of a graceful upgrade: take the listening
    /// sockets from the running gateway (which hands them over on SIGQUIT)
    /// through `upgrade_sock` instead of binding them.
    pub upgrade: bool,
    /// The Unix socket listening sockets are handed over through.
    pub upgrade_sock: String,
}

/// Default of `--upgrade-sock`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/portcullis-gateway-upgrade.sock";

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            drain: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            upgrade: false,
            upgrade_sock: DEFAULT_UPGRADE_SOCK.to_owned(),
        }
    }
}

/// Pingora's shutdown signals, with readiness dropped first: on SIGTERM
/// `/readyz` turns 503 and the gateway keeps serving for `drain`, so load
/// balancers take it out of rotation before its listeners close; then
/// requests in flight finish (up to `shutdown_grace`). SIGQUIT is a
/// graceful upgrade: the listening sockets go at once to the new process
/// (started with `--upgrade`), which serves from then on, and this one
/// finishes what it has in flight; readiness stays as it is, since the
/// operations listener moves to the new process too. SIGINT (Ctrl-C)
/// stops at once.
struct DrainingSignal {
    readiness: Arc<Readiness>,
    drain: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let kind = tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        };
        if !matches!(kind, ShutdownSignal::FastShutdown) {
            self.readiness.set_closing();
        }
        if matches!(kind, ShutdownSignal::GracefulUpgrade) {
            tracing::info!("graceful upgrade: handing the listening sockets to the new process");
            return kind;
        }
        self.readiness.set_stopping();
        if !matches!(kind, ShutdownSignal::FastShutdown) {
            tracing::info!(
                drain_seconds = self.drain.as_secs_f64(),
                "shutting down: /readyz now 503, still serving while load balancers drain"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.drain) => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        kind
    }
}

/// Ends the process once it is shutting down (listeners closed) and no
/// request is left in flight: Pingora itself waits out the whole grace
/// period (`--shutdown-grace-seconds`) before exiting, which is only the
/// bound for streams that last.
struct DrainWatch {
    inflight: prometheus::IntGauge,
}

#[async_trait]
impl pingora::services::background::BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            if self.inflight.get() > 0 {
                idle_since = None;
            } else {
                let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                // Long enough for the span exporter's last batch (it
                // flushes every 200 ms) and the last access log lines.
                if since.elapsed() >= Duration::from_millis(400) {
                    tracing::info!("no request in flight; exiting");
                    std::process::exit(0);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Marks `readiness` listening once a TCP connection to `listen` succeeds.
fn spawn_ready_probe(listen: &str, readiness: Arc<Readiness>) {
    let target = match listen.parse::<std::net::SocketAddr>() {
        Ok(mut addr) => {
            // A wildcard listener is reached through loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            addr
        }
        Err(_) => {
            // Not an IP:port (a host name): nothing to probe cheaply.
            readiness.set_listening();
            return;
        }
    };
    std::thread::spawn(move || {
        let timeout = std::time::Duration::from_millis(200);
        while std::net::TcpStream::connect_timeout(&target, timeout).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        readiness.set_listening();
    });
}

/// Runs the gateway until the process is stopped. Never returns.
pub fn run(runtime: Runtime, opts: RunOptions) -> anyhow::Result<()> {
    run_with(runtime, opts, |handle| {
        handle.mark_configured();
        Ok(Vec::new())
    })
}

/// Like `run`, for a configuration read from `path`: SIGHUP reloads it
/// (`reload`).
pub fn run_file(
    runtime: Runtime,
    opts: RunOptions,
    path: std::path::PathBuf,
    egress: Option<Vec<String>>,
) -> anyhow::Result<()> {
    run_with(runtime, opts, move |handle| {
        handle.mark_configured();
        Ok(vec![crate::reload::service(path, egress, handle)])
    })
}

/// Like `run`, first handing `on_start` a handle that swaps the
/// configuration while the gateway serves (managed mode); the background
/// services it returns (the managed agent) run beside the listeners, on
/// runtimes the server owns and stops. The gateway
/// reports ready only once the handle marks it configured (or swaps a
/// configuration in).
pub fn run_with(
    runtime: Runtime,
    opts: RunOptions,
    on_start: impl FnOnce(
        crate::live::RuntimeHandle,
    ) -> anyhow::Result<Vec<Box<dyn pingora::services::ServiceWithDependents>>>,
) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: opts.threads.max(1),
        // Once the listeners are closed, requests in flight (streams can
        // last minutes) have this long to finish; `DrainWatch` ends the
        // process as soon as none is left.
        grace_period_seconds: Some(opts.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: opts.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: opts.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new(
        runtime.telemetry.key_label,
        runtime.telemetry.application_label,
    ));
    let inflight = metrics.inflight.clone();
    let listen = runtime.listen.clone();
    let ops_listen = runtime.ops_listen.clone();
    let tls = runtime.tls.clone();
    let limits = runtime.connections;
    crate::listener::raise_fd_limit(limits.max_connections);
    let gateway = Gateway::new(runtime, metrics.clone());
    let readiness = gateway.readiness.clone();
    let handle_slot = gateway.runtime_slot();
    let mut background = gateway.background_services();
    background.extend(on_start(gateway.runtime_handle())?);

    let proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut traffic = Service::new(
        "portcullis-gateway".to_owned(),
        ClientListener::new(proxy, limits, &metrics, readiness.clone()),
    );
    traffic.add_tcp(&listen);
    if let Some(tls) = &tls {
        let slot = handle_slot.clone();
        crate::tls::add_tls_listener(&mut traffic, &tls.listen, move || {
            slot.load().tls_resolver.clone()
        })?;
    }
    let mut ops = Service::new(
        "portcullis-ops".to_owned(),
        OpsApp {
            metrics,
            readiness: readiness.clone(),
        },
    );
    ops.add_tcp(&ops_listen);
    server.add_service(traffic);
    server.add_service(ops);
    for service in background {
        server.add_boxed_service(service);
    }
    server.add_boxed_service(Box::new(pingora::services::background::background_service(
        "drain-watch",
        DrainWatch { inflight },
    )));
    // Pingora binds the listeners inside `run_forever`; report ready only
    // once the traffic port accepts connections, so a load balancer (or a
    // test) that waits for /readyz never sends to a port not yet bound.
    spawn_ready_probe(&listen, readiness.clone());
    tracing::info!(%listen, %ops_listen, tls = tls.as_ref().map(|t| t.listen.as_str()).unwrap_or("off"), "gateway listening");
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingSignal {
            readiness,
            drain: opts.drain,
        }),
    });
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn ready_only_once_the_traffic_port_accepts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ready = Arc::new(Readiness::default());
        ready.set_configured();
        // A wildcard address is probed through loopback.
        spawn_ready_probe(&format!("0.0.0.0:{port}"), ready.clone());
        std::thread::sleep(Duration::from_millis(100));
        assert!(ready.check().is_err(), "nothing listens yet");
        let _listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ready.check().is_err() {
            assert!(Instant::now() < deadline, "never became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
