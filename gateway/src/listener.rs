//! Client connections: how many the gateway holds, how long one may sit
//! idle, and how long a client may take to send a request's headers.
//!
//! Pingora 0.9.1 has no setting for any of these. Its HTTP/1 service (the
//! `ServerApp` impl behind `http_proxy_service`) gives a new connection 60
//! seconds *per read* for the request header, so a client that drips one
//! byte every 59 seconds holds its connection forever; once a request has
//! been served, `respect_keepalive` turns the keep-alive timeout into
//! "infinite", so an idle keep-alive connection is never closed; and the
//! accept loop takes every connection the kernel hands it. The connection
//! filter (`connection_filter` feature) sees an address, not the number of
//! open connections, and there is no hook before the header is read
//! (`early_request_filter` runs after it).
//!
//! So the traffic service runs [`ClientListener`], our own `ServerApp`
//! around Pingora's `HttpProxy`. Per connection it:
//!
//! 1. takes a slot of `limits.max_client_connections`; with none left it
//!    reads the request header (at most a second) and answers `503`
//!    (`Connection: close`, OpenAI envelope), then closes;
//! 2. for HTTP/1, before each request, waits at most the idle timeout for
//!    the first byte, then reads the whole header under one total deadline
//!    (`408` past it, `431` past [`MAX_HEADER_BYTES`]) and hands the bytes
//!    to Pingora as an already-read prefix (`set_pipelined_prefix`), so
//!    Pingora parses them without reading again. The body is read by the
//!    gateway under its own total deadline (`exchange::ingress::read_body`), and
//!    Pingora's drain of an unread body is bounded by the same time;
//! 3. for HTTP/2 (TLS with ALPN `h2`), hands the connection to Pingora with
//!    `h2_idle_timeout` set to the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::exchange::Gateway;
use crate::metrics::Metrics;

/// Largest request header (request line and header fields) accepted.
/// Pingora's own limit is 1 MiB; LLM requests carry their content in the
/// body, and proxies in front of APIs commonly stop at 8-64 KiB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// After answering a refused connection, how long the client's request is
/// read and discarded before closing, so the client reads the answer
/// instead of a connection reset.
const LINGER: Duration = Duration::from_millis(500);

/// Longest wait for the request of a connection refused for the limit.
/// HTTP/1 clients (hyper among them) treat an answer that comes before
/// their request as a protocol error, so the refusal waits for the
/// request header, briefly.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Connections being answered `503` at once; past it an over-limit
/// connection is closed without an answer, so a flood of connections
/// cannot hold more than this many descriptors beyond the limit.
const MAX_REFUSING: usize = 256;

pub use crate::config::ConnLimits;

/// Why a connection was closed by the gateway (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Limit,
    Idle,
    HeaderTimeout,
    HeaderTooLarge,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::Limit => "limit",
            Closed::Idle => "idle",
            Closed::HeaderTimeout => "header_timeout",
            Closed::HeaderTooLarge => "header_too_large",
        }
    }
}

/// The traffic service's application: Pingora's HTTP proxy behind the
/// connection limits.
pub struct ClientListener {
    proxy: Arc<HttpProxy<Gateway>>,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    open: prometheus::IntGauge,
    closed: IntCounterVec,
    /// Whether the process is going away (responses then close their
    /// connection).
    readiness: Arc<crate::ops::Readiness>,
}

impl ClientListener {
    /// Wraps `proxy` (built with `pingora::proxy::http_proxy`).
    pub fn new(
        mut proxy: HttpProxy<Gateway>,
        limits: ConnLimits,
        metrics: &Metrics,
        readiness: Arc<crate::ops::Readiness>,
    ) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(limits.idle);
        proxy.server_options = Some(options);
        ClientListener {
            proxy: Arc::new(proxy),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            limits,
            open: metrics.client_connections.clone(),
            closed: metrics.client_connections_closed.clone(),
            readiness,
        }
    }

    fn count(&self, why: Closed) {
        self.closed.with_label_values(&[why.label()]).inc();
    }

    /// Answers a connection over the limit with `503` once its request
    /// header is in (HTTP/1; HTTP/2 and a flood past [`MAX_REFUSING`] are
    /// closed without an answer).
    async fn refuse_over_limit(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return;
        }
        let Ok(_refusing) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        let brief = ConnLimits {
            idle: self.limits.idle.min(REFUSAL_WAIT),
            header: self.limits.header.min(REFUSAL_WAIT),
            ..self.limits
        };
        if read_head(&mut stream, &brief, shutdown.clone())
            .await
            .is_ok()
        {
            refuse(
                &mut stream,
                503,
                "Service Unavailable",
                "server_error",
                "too_many_connections",
                "The gateway holds its maximum number of client connections; retry shortly.",
            )
            .await;
        }
    }

    /// HTTP/1: one request after another on the connection, each header
    /// read under the idle and header deadlines.
    async fn serve_http1(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        loop {
            let head = match read_head(&mut stream, &self.limits, shutdown.clone()).await {
                Ok(head) => head,
                Err(Head::Closed) => return,
                Err(Head::Idle) => {
                    self.count(Closed::Idle);
                    return;
                }
                Err(Head::Timeout) => {
                    self.count(Closed::HeaderTimeout);
                    let ms = self.limits.header.as_millis();
                    refuse(
                        &mut stream,
                        408,
                        "Request Timeout",
                        "invalid_request_error",
                        "request_timeout",
                        &format!("The request header was not received within {ms} ms."),
                    )
                    .await;
                    return;
                }
                Err(Head::TooLarge) => {
                    self.count(Closed::HeaderTooLarge);
                    refuse(
                        &mut stream,
                        431,
                        "Request Header Fields Too Large",
                        "invalid_request_error",
                        "request_header_too_large",
                        &format!("The request header is larger than {MAX_HEADER_BYTES} bytes."),
                    )
                    .await;
                    return;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            session.set_pipelined_prefix(head);
            // Reuse is decided by the client (Pingora applies its
            // `Connection` header) and by shutdown; the wait between
            // requests is `read_head`'s. The keep-alive value only bounds
            // each read should Pingora still need more header bytes.
            session.set_keepalive(if *shutdown.borrow() || self.readiness.is_closing() {
                None
            } else {
                Some(self.limits.idle.as_secs().max(1))
            });
            session.set_total_drain_timeout(Some(self.limits.body));
            let reused = self.proxy.process_new_http(session, shutdown).await;
            match reused {
                // Persistent settings carry only what this listener sets
                // again per request (keep-alive) or never enables
                // (pipelining, per-connection request limits).
                Some(r) => stream = r.consume().0,
                None => return,
            }
        }
    }
}

#[async_trait]
impl ServerApp for ClientListener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            self.count(Closed::Limit);
            self.refuse_over_limit(stream, shutdown).await;
            return None;
        };
        let _open = OpenGuard::new(&self.open);
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Pingora's HTTP/2 path, with `h2_idle_timeout` set.
            let _ = ServerApp::process_new(&self.proxy, stream, shutdown).await;
        } else {
            self.serve_http1(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// Counts a connection in the open-connections gauge while it lives
/// (also when its task is dropped at shutdown).
struct OpenGuard(prometheus::IntGauge);

impl OpenGuard {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        OpenGuard(gauge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why no request header was read.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The client closed the connection (or shutdown began) between requests.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The header did not complete within the header deadline.
    Timeout,
    /// The header is larger than [`MAX_HEADER_BYTES`].
    TooLarge,
}

/// How long an idle connection is still read from once the server shuts
/// down, for a request already on its way.
const LAST_CALL: std::time::Duration = std::time::Duration::from_millis(250);

/// Reads one request header: waits up to `limits.idle` for its first byte,
/// then up to `limits.header` in total for the blank line that ends it.
/// Returns every byte read (the header and whatever body bytes came with
/// it in the same reads).
async fn read_head<S>(
    stream: &mut S,
    limits: &ConnLimits,
    mut shutdown: ShutdownWatch,
) -> Result<BytesMut, Head>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    // The first byte: the connection is idle until then.
    let first = tokio::select! {
        biased;
        r = tokio::time::timeout(limits.idle, stream.read_buf(&mut buf)) => Some(r),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let first = match first {
        Some(r) => r,
        // Shutting down: a request already on its way (a connection
        // accepted just before the listener closed, a client that sent as
        // the shutdown began) is still served; an idle connection is
        // closed once nothing came for a moment.
        None => match tokio::time::timeout(LAST_CALL, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(Ok(n)),
            _ => return Err(Head::Closed),
        },
    };
    match first {
        Err(_) => return Err(Head::Idle),
        Ok(Ok(0)) | Ok(Err(_)) => return Err(Head::Closed),
        Ok(Ok(_)) => {}
    }
    let deadline = Instant::now() + limits.header;
    let mut scanned: usize = 0;
    loop {
        // Scan only the new bytes (and the 2 before them, which may start
        // the blank line), so a dripped header costs linear work.
        if header_end(&buf, scanned.saturating_sub(2)).is_some() {
            return Ok(buf);
        }
        scanned = buf.len();
        if buf.len() > MAX_HEADER_BYTES {
            return Err(Head::TooLarge);
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(Head::Timeout),
            // Closed or broken mid-header: nobody to answer.
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Head::Closed),
            Ok(Ok(_)) => {}
        }
    }
}

/// Where the header's terminating blank line ends, searching from `from`.
/// HTTP/1 parsers (Pingora's included) accept a bare `\n` as a line end,
/// so `\n\n` and `\n\r\n` both end the header.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Answers a connection the gateway will not serve, in the OpenAI error
/// envelope, then closes it after reading (and discarding) what the client
/// sent for a short while, so its answer is not lost to a reset.
async fn refuse<S>(
    stream: &mut S,
    status: u16,
    reason: &str,
    error_type: &'static str,
    code: &str,
    message: &str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut e = GatewayError::invalid_request(message);
    e.status = status;
    e.error_type = error_type;
    e.code = Some(code.to_owned());
    let body = e.to_openai_json();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if status == 503 {
        out.push_str("retry-after: 1\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let write = async {
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(LINGER, write).await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Raises the process's soft limit of open files to its hard limit (many
/// systems start services at 1,024, too few for thousands of clients) and
/// warns when the limit cannot hold `max_connections` client connections
/// plus one upstream connection each.
pub fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if let Some(n) = current.filter(|n| *n < needed) {
        tracing::warn!(
            open_files = n,
            max_client_connections = max_connections,
            "the open-file limit is below what limits.max_client_connections needs (about two per connection); raise it (ulimit -n, LimitNOFILE) or lower the setting"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn limits(idle_ms: u64, header_ms: u64) -> ConnLimits {
        ConnLimits {
            max_connections: 10,
            idle: Duration::from_millis(idle_ms),
            header: Duration::from_millis(header_ms),
            body: Duration::from_secs(1),
        }
    }

    fn no_shutdown() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    #[test]
    fn header_end_accepts_crlf_and_bare_lf() {
        assert_eq!(
            header_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody", 0),
            Some(24)
        );
        assert_eq!(header_end(b"GET / HTTP/1.1\nA: b\n\nbody", 0), Some(21));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // A search resumed 2 bytes before the new data finds a blank line
        // split across reads.
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        assert_eq!(header_end(buf, buf.len() - 4), Some(buf.len()));
    }

    #[tokio::test]
    async fn a_whole_header_is_returned_with_the_body_bytes_read_with_it() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let (_tx, rx) = no_shutdown();
        let head = read_head(&mut server, &limits(1000, 1000), rx)
            .await
            .unwrap();
        assert!(head.ends_with(b"\r\n\r\nhi"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripped_header_is_cut_at_the_total_deadline() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let (_tx, rx) = no_shutdown();
        let reader =
            tokio::spawn(async move { read_head(&mut server, &limits(10_000, 1_000), rx).await });
        // One header byte every 100 ms: each read is quick, the header
        // never ends; only the total deadline stops it.
        client.write_all(b"G").await.unwrap();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if client.write_all(b"x").await.is_err() {
                break;
            }
        }
        assert_eq!(reader.await.unwrap(), Err(Head::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_idle_and_a_closed_one_closed() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (_tx, rx) = no_shutdown();
        assert_eq!(
            read_head(&mut server, &limits(500, 100), rx.clone()).await,
            Err(Head::Idle)
        );
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(
            read_head(&mut server, &limits(500, 100), rx).await,
            Err(Head::Closed)
        );
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 10));
        client.write_all(&big).await.unwrap();
        let (_tx, rx) = no_shutdown();
        assert_eq!(
            read_head(&mut server, &limits(1000, 1000), rx).await,
            Err(Head::TooLarge)
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_between_requests() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (tx, rx) = no_shutdown();
        let reader =
            tokio::spawn(async move { read_head(&mut server, &limits(60_000, 1000), rx).await });
        tx.send(true).unwrap();
        assert_eq!(reader.await.unwrap(), Err(Head::Closed));
    }

    #[tokio::test]
    async fn a_refusal_is_an_http_answer_in_the_openai_envelope() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        refuse(
            &mut server,
            503,
            "Service Unavailable",
            "server_error",
            "too_many_connections",
            "full",
        )
        .await;
        drop(server);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert_eq!(v["error"]["type"], "server_error");
    }
}
