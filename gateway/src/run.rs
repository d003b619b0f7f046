//! Starting a gateway: Pingora server, traffic listeners (plain and TLS)
//! and the operations listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

use crate::config::Runtime;
use crate::metrics::Metrics;
use crate::ops::OpsApp;
use crate::server::Gateway;

/// Options of a gateway process that are not part of its configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads for the traffic service (default: the number of CPUs).
    pub threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// Sets `ready` once a TCP connection to `listen` succeeds.
fn spawn_ready_probe(listen: &str, ready: Arc<AtomicBool>) {
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
            ready.store(true, Ordering::Release);
            return;
        }
    };
    std::thread::spawn(move || {
        let timeout = std::time::Duration::from_millis(200);
        while std::net::TcpStream::connect_timeout(&target, timeout).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ready.store(true, Ordering::Release);
    });
}

/// Runs the gateway until the process is stopped. Never returns.
pub fn run(runtime: Runtime, opts: RunOptions) -> anyhow::Result<()> {
    run_with(runtime, opts, |_| Ok(()))
}

/// Like `run`, first handing `on_start` a handle that swaps the
/// configuration while the gateway serves (managed mode).
pub fn run_with(
    runtime: Runtime,
    opts: RunOptions,
    on_start: impl FnOnce(crate::managed::RuntimeHandle) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: opts.threads.max(1),
        // Streams can last minutes; on shutdown give them time to finish.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(30),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Arc::new(Metrics::new(runtime.telemetry.key_label));
    let ready = Arc::new(AtomicBool::new(false));
    let listen = runtime.listen.clone();
    let ops_listen = runtime.ops_listen.clone();
    let tls = runtime.tls.clone();
    let gateway = Gateway::new(runtime, metrics.clone());
    on_start(gateway.runtime_handle())?;

    let mut traffic = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "portcullis-gateway",
    );
    traffic.add_tcp(&listen);
    if let Some(tls) = &tls {
        crate::tls::add_tls_listener(&mut traffic, tls)?;
    }
    let mut ops = Service::new(
        "portcullis-ops".to_owned(),
        OpsApp {
            metrics,
            ready: ready.clone(),
        },
    );
    ops.add_tcp(&ops_listen);
    server.add_service(traffic);
    server.add_service(ops);
    // Pingora binds the listeners inside `run_forever`; report ready only
    // once the traffic port accepts connections, so a load balancer (or a
    // test) that waits for /readyz never sends to a port not yet bound.
    spawn_ready_probe(&listen, ready);
    tracing::info!(%listen, %ops_listen, tls = tls.as_ref().map(|t| t.listen.as_str()).unwrap_or("off"), "gateway listening");
    server.run_forever()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn ready_only_once_the_traffic_port_accepts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ready = Arc::new(AtomicBool::new(false));
        // A wildcard address is probed through loopback.
        spawn_ready_probe(&format!("0.0.0.0:{port}"), ready.clone());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!ready.load(Ordering::Acquire), "nothing listens yet");
        let _listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "never became ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
