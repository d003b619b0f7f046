//! Client connection limits end to end: thousands of idle and slow
//! connections held against a real gateway while a normal client keeps
//! being served; slow headers cut at the header deadline, idle connections
//! at the idle timeout, connections past the maximum refused with a 503.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Gateway;
use crate::{KEY, client, setup};

/// One `GET /openai/models` on a raw keep-alive connection; returns the
/// status, with the whole answer read (it has a `content-length`).
async fn models_on(stream: &mut TcpStream) -> u16 {
    let req =
        format!("GET /openai/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer ended");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .expect("content-length")
                .trim()
                .parse()
                .unwrap();
            if body.len() >= len {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

/// Reads what the gateway sends into `got` until it closes the connection;
/// false if it is still open after `wait` (what arrived is kept in `got`).
async fn closed_within(stream: &mut TcpStream, wait: Duration, got: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.is_ok()
}

/// Sends `drip` every 200 ms (write errors ignored: the gateway may have
/// closed) until the gateway closes the connection; what it answered, or
/// `None` if it was still open after 20 s.
async fn drip_until_closed(stream: &mut TcpStream, drip: &[u8]) -> Option<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let _ = stream.write_all(drip).await;
        if closed_within(stream, Duration::from_millis(200), &mut got).await {
            return Some(String::from_utf8_lossy(&got).into_owned());
        }
    }
    None
}

/// Client connections open now.
const OPEN: &str = "portcullis_client_connections ";
/// Client connections closed by the gateway, by `reason`.
const CLOSED: &str = "portcullis_client_connections_closed_total{";

/// Polls the metric samples matching `needles` until their sum reaches
/// `at_least` (bounded: 60 s).
async fn wait_metric(gw: &Gateway, needles: &[&str], at_least: f64) {
    for _ in 0..600 {
        if gw.metric_sum(needles).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{needles:?} stayed at {} (< {at_least})",
        gw.metric_sum(needles).await
    );
}

/// A mock and a gateway with `extra` configuration; the gateway's
/// `host:port`.
async fn start(extra: &str) -> (crate::harness::Mock, Gateway, String) {
    let (mock, gw) = setup(extra).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    (mock, gw, addr)
}

/// `n` connections to `addr` that send nothing.
async fn connect_idle(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

/// A normal chat request; panics unless the answer is the right one.
async fn chat_ok(gw: &Gateway, n: usize) {
    let r = client()
        .post(format!("{}/openai/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": format!("ping {n}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.ends_with(&format!("ping {n}")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_cut_off_while_requests_keep_working() {
    let (_mock, gw, addr) = start(
        "limits: { max_client_connections: 3000 }\ntimeouts: { client_header_ms: 1000, client_idle_ms: 8000 }",
    )
    .await;

    // 1,000 connections that never send anything, and 1,000 that made one
    // request and stay open (keep-alive).
    let mut idle = connect_idle(&addr, 1000).await;
    for _ in 0..1000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(models_on(&mut s).await, 200);
        idle.push(s);
    }

    // 300 clients dripping a header line every 200 ms: each read is quick,
    // the header never ends.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /openai/models HTTP/1.1\r\nHost: gw\r\n")
            .await
            .unwrap();
        slow.push(tokio::spawn(async move {
            drip_until_closed(&mut s, b"X-Drip: 1\r\n").await
        }));
    }

    // All of them are held by the gateway at once...
    wait_metric(&gw, &[OPEN], 2300.0).await;
    // ...while a normal client is served, over and over.
    let mut served = 0;
    while !slow.iter().all(|t| t.is_finished()) {
        chat_ok(&gw, served).await;
        served += 1;
        assert!(served < 10_000, "the slow clients were never cut off");
    }
    assert!(served > 0);

    // Every dripping client got a 408 in the OpenAI envelope, then EOF.
    for t in slow {
        let answer = t.await.unwrap().expect("a slow header was never cut off");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    }

    // The idle ones are closed (silently) at the idle timeout; requests
    // are still served meanwhile.
    chat_ok(&gw, served).await;
    for mut s in idle {
        let mut got = Vec::new();
        assert!(
            closed_within(&mut s, Duration::from_secs(60), &mut got).await,
            "an idle connection was never closed"
        );
        assert!(got.is_empty(), "nothing is sent on an idle close");
    }
    chat_ok(&gw, served + 1).await;

    // The reasons, counted: the dripping clients by the header deadline,
    // the idle ones by the idle timeout (not the other way round).
    let reason = |r: &'static str| [CLOSED, r];
    let timeout = reason("reason=\"header_timeout\"");
    assert_eq!(gw.metric_sum(&timeout).await, 300.0);
    wait_metric(&gw, &reason("reason=\"idle\""), 2000.0).await;
    assert_eq!(gw.metric_sum(&reason("reason=\"idle\"")).await, 2000.0);
    assert_eq!(gw.metric_sum(&reason("reason=\"limit\"")).await, 0.0);
}

#[tokio::test]
async fn connections_past_the_maximum_get_a_503_and_bodies_have_a_deadline() {
    let (_mock, gw, addr) = start(
        "limits: { max_client_connections: 20 }\ntimeouts: { client_body_ms: 1000, client_idle_ms: 60000 }",
    )
    .await;
    let mut held = connect_idle(&addr, 20).await;
    wait_metric(&gw, &[OPEN], 20.0).await;

    // The 21st connection is answered 503 and closed.
    let r = client()
        .get(format!("{}/openai/models", gw.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(gw.metric_sum(&[CLOSED, "reason=\"limit\""]).await >= 1.0);

    // Once connections close, new ones are served again.
    held.truncate(15);
    let mut ok = false;
    for _ in 0..100 {
        let r = client()
            .get(format!("{}/openai/models", gw.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "never served again after connections closed");

    // A body dripped slower than its total deadline is cut off with a 400.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "POST /openai/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = drip_until_closed(&mut s, b" ")
        .await
        .expect("a dripped body was never cut off");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("Timed out reading the request body"),
        "{answer}"
    );
}
