//! Serving admin and the policy hub: an axum router on a TCP listener,
//! with optional HTTPS and the limits that keep a flood of idle or slow
//! clients from taking the service down.
//!
//! - At most `max_connections` connections are served at once. One more is
//!   accepted and closed at once (the client sees the connection close
//!   without an answer and may retry), so excess clients neither hold a
//!   file descriptor nor fill the listen backlog. The limit is also capped
//!   below the process's open-file limit, so the database keeps its files.
//! - `header_timeout`: from the moment a connection is ready for a request
//!   (accepted and, over TLS, handshaken; or, kept alive, done with the
//!   previous response) the whole request head must arrive within it, or
//!   the connection is closed without an answer. hyper starts this clock
//!   when a kept-alive connection goes idle, so it is also the keep-alive
//!   idle timeout. The TLS handshake has the same deadline.
//! - `body_timeout`: the whole request body must arrive within it, counted
//!   from the end of the head; past it the handler's read fails and the
//!   client gets `408` with the services' error shape, and the connection
//!   is closed.
//!
//! - `requests_per_second` (off unless set): requests from one client
//!   address are limited to that rate, with bursts of twice it (`governor`'s
//!   keyed GCRA limiter); past it the client gets `429` with `retry-after`
//!   and the services' error shape. Addresses not seen for a minute are
//!   forgotten, so the limiter's memory follows the active clients.
//!
//! Graceful shutdown: the listener is closed, each connection finishes the
//! request it is serving, then `serve` returns.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::client::{TlsError, provider};

/// Connections served at once by default: room for 2,000 idle or slow
/// clients and the gateways and operators that need answers meanwhile.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default deadline for a request head (and keep-alive idle timeout).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for a request body (the hub takes module uploads).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a service is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// HTTPS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Requests per second from one client address (bursts of twice
    /// that); `None`: no limit.
    pub requests_per_second: Option<std::num::NonZeroU32>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            requests_per_second: None,
        }
    }
}

impl ServeOptions {
    /// `https` when TLS is on, else `http`: for the URLs a service prints.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// A server TLS configuration from a PEM certificate chain (leaf first)
/// and its PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |message: String| TlsError::Certificate {
        path: cert.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no certificate in it (expected `-----BEGIN CERTIFICATE-----` blocks)".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::PrivateKey {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            cert_err(format!(
                "cannot be served with the key {}: {e}",
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The open-file limit of this process (Linux), to keep the connection
/// limit below it.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `wanted`, lowered below the open-file limit when that is too low for
/// it: an eighth of the descriptors (at least 64) stay for the database,
/// the listener and outgoing connections.
fn connection_limit(wanted: usize, fd_limit: Option<usize>) -> usize {
    let Some(fds) = fd_limit else {
        return wanted.max(1);
    };
    let room = fds.saturating_sub((fds / 8).max(64)).max(1);
    wanted.clamp(1, room)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// the connections finish their requests and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fd_limit = open_file_limit();
    let limit = connection_limit(options.max_connections, fd_limit);
    if limit < options.max_connections {
        tracing::warn!(
            max_connections = options.max_connections,
            open_file_limit = fd_limit,
            serving = limit,
            "the open-file limit is too low for the connection limit; raise `ulimit -n`"
        );
    }
    let permits = Arc::new(Semaphore::new(limit));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limiter = options.requests_per_second.map(|rate| {
        let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
        let limiter = Arc::new(governor::RateLimiter::keyed(
            governor::Quota::per_second(rate).allow_burst(burst),
        ));
        tokio::spawn(forget_idle_clients(Arc::downgrade(&limiter)));
        limiter
    });
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let mut last_refusal_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of descriptors or the like: existing
                        // connections go on; try again shortly.
                        tracing::error!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: close at once, so the descriptor is free
            // again and the client is not left hanging in the backlog.
            drop(stream);
            if last_refusal_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_refusal_logged = Some(Instant::now());
                tracing::warn!(
                    max_connections = limit,
                    "connection limit reached; closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = Client {
            ip: peer.ip(),
            limiter: limiter.clone(),
        };
        tokio::spawn(connection(
            stream,
            acceptor.clone(),
            (router.clone(), client),
            options.clone(),
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends.
    let _ = permits.acquire_many(limit as u32).await;
    Ok(())
}

/// Errors of one incoming connection (it went away before being
/// accepted), as opposed to errors of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

type Limiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// Who is on the other end of a connection, and the limiter its requests
/// count against.
#[derive(Clone)]
struct Client {
    ip: std::net::IpAddr,
    limiter: Option<Arc<Limiter>>,
}

/// Drops the limiter's state of addresses that have not sent a request
/// for a while, once a minute, until the service stops.
async fn forget_idle_clients(limiter: std::sync::Weak<Limiter>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// One connection: the TLS handshake under the head deadline, then HTTP/1.1.
async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    (router, client): (Router, Client),
    options: ServeOptions,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let Some(acceptor) = acceptor else {
        return http(stream, router, client, &options, stop).await;
    };
    match tokio::time::timeout(options.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => http(tls, router, client, &options, stop).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake did not finish within the header timeout"),
    }
}

async fn http<I>(
    io: I,
    router: Router,
    client: Client,
    options: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = options.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let limited = client.limiter.as_ref().and_then(|l| {
            use governor::clock::Clock as _;
            let denied = l.check_key(&client.ip).err()?;
            Some(denied.wait_time_from(l.clock().now()))
        });
        async move {
            Ok::<_, Infallible>(match limited {
                Some(wait) => too_many_requests(wait),
                None => answer(router, request, body_timeout).await,
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Completes when shutdown begins (or `serve` is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Runs one request through `router` with the body deadline; a request
/// whose body missed it is answered 408 and the connection closed.
async fn answer(
    router: Router,
    request: Request<Incoming>,
    body_timeout: Duration,
) -> Response<axum::body::Body> {
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        axum::body::Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
            expired: expired.clone(),
        })
    });
    let response = match router.oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    let body = format!(
        r#"{{"error":{{"code":"request_timeout","message":"the request body did not arrive within {} s","field":null}}}}"#,
        body_timeout.as_secs_f64()
    );
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `429` for a client over its request rate, with when to come back.
fn too_many_requests(wait: Duration) -> Response<axum::body::Body> {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let body = format!(
        r#"{{"error":{{"code":"rate_limited","message":"too many requests from this address; retry in {seconds} s","field":null}}}}"#
    );
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        headers.insert(header::RETRY_AFTER, v);
    }
    response
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_stays_below_the_open_file_limit() {
        assert_eq!(connection_limit(4096, None), 4096);
        assert_eq!(connection_limit(4096, Some(20_000)), 4096);
        // 1024 descriptors: 128 kept for the rest of the process.
        assert_eq!(connection_limit(4096, Some(1024)), 896);
        assert_eq!(connection_limit(4096, Some(100)), 36);
        assert_eq!(connection_limit(0, Some(20_000)), 1);
        assert!(open_file_limit().is_some_and(|n| n > 0) || !cfg!(target_os = "linux"));
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a router with `/ping` and an echoing `/echo` on loopback.
    async fn start(
        options: ServeOptions,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let router = Router::new()
            .route("/ping", axum::routing::get(|| async { "pong" }))
            .route(
                "/echo",
                axum::routing::post(|body: Bytes| async move { body }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, options, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Reads until the server closes the connection (or 30 s pass: then
    /// the test fails); returns what was read.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept the connection open");
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_ping(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut s).await
    }

    #[tokio::test]
    async fn a_client_over_its_request_rate_gets_429_and_others_do_not() {
        let (addr, _stop) = start(ServeOptions {
            requests_per_second: std::num::NonZeroU32::new(5),
            ..ServeOptions::default()
        })
        .await;
        // A burst of twice the rate passes, then the address is limited.
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(get_ping(addr).await);
        }
        let ok = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 200"))
            .count();
        let limited: Vec<&String> = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 429"))
            .collect();
        assert!((10..=12).contains(&ok), "{ok} answered: {answers:?}");
        assert_eq!(ok + limited.len(), 20, "{answers:?}");
        let refused = limited[0].to_ascii_lowercase();
        assert!(refused.contains("retry-after: 1"), "{refused}");
        assert!(
            refused.contains(r#"{"error":{"code":"rate_limited","#),
            "{refused}"
        );
        // Another address has its own budget.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let other = read_to_close(&mut s).await;
        assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    }

    #[tokio::test]
    async fn a_partial_head_is_closed_at_the_deadline_while_others_are_answered() {
        let (addr, _stop) = start(ServeOptions {
            header_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        assert!(get_ping(addr).await.ends_with("pong"));
        // Closed without an answer.
        assert_eq!(read_to_close(&mut slow).await, "");
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_gets_408_and_the_connection_closes() {
        let (addr, _stop) = start(ServeOptions {
            body_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.ends_with(r#"{"error":{"code":"request_timeout","message":"the request body did not arrive within 0.3 s","field":null}}"#),
            "{answer}"
        );
        // A body in time is echoed.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 3\r\n\r\nabc",
        )
        .await
        .unwrap();
        assert!(read_to_close(&mut s).await.ends_with("\r\n\r\nabc"));
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_and_room_comes_back() {
        let (addr, _stop) = start(ServeOptions {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
            ..ServeOptions::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // A full exchange proves the connection holds a slot.
            s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).ends_with("pong"));
            held.push(s);
        }
        // The third is closed without an answer.
        assert_eq!(get_ping(addr).await, "");
        // Once one leaves, a new client is served (the slot comes back
        // when the server notices the close; retry a bounded number of times).
        drop(held.pop());
        let mut served = false;
        for _ in 0..100 {
            if get_ping(addr).await.ends_with("pong") {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "the freed slot was never reused");
    }

    /// The defaults hold 2,000 idle and slow clients (1,000 connected and
    /// silent, 1,000 with half a request head) while others are answered.
    #[tokio::test]
    async fn the_defaults_hold_two_thousand_idle_and_slow_clients() {
        let (addr, _stop) = start(ServeOptions::default()).await;
        let mut held = Vec::with_capacity(2000);
        for i in 0..2000 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\n")
                    .await
                    .unwrap();
            }
            held.push(s);
        }
        for _ in 0..50 {
            assert!(get_ping(addr).await.ends_with("pong"));
        }
        // Every held connection is still open (nothing was shed).
        let mut buf = [0u8; 1];
        for s in &held {
            assert!(
                matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            );
        }
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish_and_stops_accepting() {
        let router = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, ServeOptions::default(), async {
            let _ = rx.await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(()).unwrap();
        assert!(read_to_close(&mut s).await.ends_with("done"));
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
