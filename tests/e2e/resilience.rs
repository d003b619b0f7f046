//! Zero failed requests where the gateway promises it, under load: a
//! configuration reload every 200 ms, a graceful upgrade (the new process
//! takes the listening sockets), SIGTERM with streams in flight, admin and
//! the hub both down, Redis down (each policy's `on_error` decides), and an
//! upstream that resets mid-stream (every client gets an error event,
//! counted, nothing hangs). Each load run counts the requests sent,
//! answered and failed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::KEY;
use crate::admin::{Admin, setup, setup_with, start_hub, until_status};
use crate::harness::{Mock, Proc, TempDir, free_port, sse_events, wait_ready};

/// What a load run saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    failed: u64,
    /// The first failures, for the assertion message.
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.failed += other.failed;
        self.failures.extend(other.failures.into_iter().take(5));
    }
}

/// One chat request, every third streamed; `Ok` when the whole answer
/// arrived (a stream ends with `[DONE]` and carries no error event).
async fn one(client: &reqwest::Client, url: &str, key: &str, n: u64) -> Result<(), String> {
    let stream = n % 3 == 0;
    let r = client
        .post(url)
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5-mini", "stream": stream,
            "messages": [{"role": "user", "content": format!("request {n}")}]}))
        .send()
        .await
        .map_err(|e| format!("send: {e:?}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| format!("body: {e:?}"))?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    if stream {
        let events = sse_events(&body);
        let complete = events.last().is_some_and(|(_, d)| d == "[DONE]");
        if !complete || body.contains("\"error\"") {
            return Err(format!("incomplete stream: {body}"));
        }
    } else if !body.contains("\"choices\"") {
        return Err(format!("no answer: {body}"));
    }
    Ok(())
}

/// `clients` clients, each with its own keep-alive connection, sending
/// requests one after another to `url` until `stop` is set.
async fn load(url: String, key: String, clients: usize, stop: Arc<AtomicBool>) -> Tally {
    let mut set = JoinSet::new();
    for c in 0..clients {
        let (url, key, stop) = (url.clone(), key.clone(), stop.clone());
        set.spawn(async move {
            let client = crate::client_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut t = Tally::default();
            let mut n = c as u64;
            while !stop.load(Ordering::Relaxed) {
                n += clients as u64;
                t.sent += 1;
                match one(&client, &url, &key, n).await {
                    Ok(()) => t.answered += 1,
                    Err(e) => {
                        t.failed += 1;
                        if t.failures.len() < 5 {
                            t.failures.push(e);
                        }
                    }
                }
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(t) = set.join_next().await {
        total.add(t.unwrap());
    }
    total
}

/// Starts a load run in the background; stop it with the flag.
fn start_load(
    url: &str,
    key: &str,
    clients: usize,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Tally>) {
    let stop = Arc::new(AtomicBool::new(false));
    let h = tokio::spawn(load(url.to_owned(), key.to_owned(), clients, stop.clone()));
    (stop, h)
}

async fn finish(stop: Arc<AtomicBool>, h: tokio::task::JoinHandle<Tally>) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let t = h.await.unwrap();
    eprintln!("load: {t:?}");
    t
}

fn assert_none_failed(what: &str, t: &Tally, at_least: u64) {
    assert_eq!(t.failed, 0, "{what}: {t:?}");
    assert_eq!(t.sent, t.answered, "{what}: {t:?}");
    assert!(
        t.answered >= at_least,
        "{what}: only {} answered",
        t.answered
    );
}

/// A file-mode gateway process with extra flags; (process, base URL, ops URL).
fn spawn_gateway(dir: &TempDir, config: &str, port: u16, ops: u16, extra: &[&str]) -> Proc {
    let path = dir.0.join("gateway.yaml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        "listen: 127.0.0.1:{port}\nops_listen: 127.0.0.1:{ops}\n{config}"
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.0.join("gateway.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["gateway", "--threads", "1", "--config"])
        .arg(&path)
        .args(extra)
        .env("PC_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start gateway");
    Proc::new(child)
}

fn mock_config(mock: &Mock) -> String {
    format!(
        "providers:\n  - {{ name: openai, type: openai, base_url: \"{}/v1\", api_key: sk-mock, models: [gpt-5-mini] }}\nproxies:\n  - {{ name: chat, routes: [{{ provider: openai }}], keys: [{{ name: tester, env: PC_KEY }}] }}\n",
        mock.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_every_200_ms_fails_no_request() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Chat"})))
        .await;
    let key = admin.key("chat", "load").await;
    admin.deploy("chat", &gw_id).await;
    let url = format!("{}/chat/chat/completions", gw.url);
    until_status(
        &format!("{}/chat", gw.url),
        &key,
        200,
        Duration::from_secs(10),
    )
    .await;

    let (stop, h) = start_load(&url, &key, 4);
    // A new revision deployed every 200 ms: each is a configuration the
    // gateway builds and swaps in while requests run.
    let mut versions = std::collections::HashSet::new();
    for i in 0..20 {
        let started = Instant::now();
        admin
            .ok(
                "PATCH",
                "/api/v1/proxies/chat",
                // The route's weight is part of the gateway's configuration
                // (a description would not change what it serves).
                Some(json!({"routes": [{"provider": "mock", "weight": i + 1}]})),
            )
            .await;
        admin.deploy("chat", &gw_id).await;
        let g = admin
            .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
            .await;
        versions.insert(g["config_version"].to_string());
        tokio::time::sleep(Duration::from_millis(200).saturating_sub(started.elapsed())).await;
    }
    // SIGHUP does not end a managed gateway (it has no file to read).
    gw._proc.signal("HUP");
    let t = finish(stop, h).await;
    assert_none_failed("reloads under load", &t, 50);
    assert!(
        versions.len() > 5,
        "the gateway swapped only {} versions in",
        versions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_hands_over_the_sockets_without_failing_a_request() {
    let dir = TempDir::new();
    let mock = Mock::start().await;
    let (port, ops) = (free_port(), free_port());
    let sock = dir.0.join("upgrade.sock").display().to_string();
    let flags = [
        "--upgrade-sock",
        sock.as_str(),
        "--shutdown-grace-seconds",
        "20",
    ];
    let mut old = spawn_gateway(&dir, &mock_config(&mock), port, ops, &flags);
    assert!(wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let url = format!("http://127.0.0.1:{port}/chat/chat/completions");

    // A long stream in flight across the handover, and load beside it.
    mock.behave(json!({"chunk_delay_ms": 400, "times": 1, "path_contains": "chat"}))
        .await;
    let slow = tokio::spawn({
        let url = url.clone();
        async move { one(&crate::client(), &url, KEY, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stop, h) = start_load(&url, KEY, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new process waits for the sockets; the old one hands them over
    // on SIGQUIT, stops accepting and finishes what it has.
    let mut upgrade_flags = flags.to_vec();
    upgrade_flags.push("--upgrade");
    let _new = spawn_gateway(&dir, &mock_config(&mock), port, ops, &upgrade_flags);
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let code = old.exited(Duration::from_secs(30)).await;
    assert!(
        code.is_some(),
        "the old gateway did not exit after the handover"
    );
    // The new process alone serves now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = finish(stop, h).await;
    assert_none_failed("graceful upgrade", &t, 50);
    slow.await
        .unwrap()
        .expect("the stream in flight completes on the old process");
    let log = std::fs::read_to_string(dir.0.join("gateway.log")).unwrap_or_default();
    assert!(
        serves(&url).await,
        "the new gateway serves after the handover:\n{log}"
    );
}

async fn serves(url: &str) -> bool {
    one(&crate::client(), url, KEY, 1).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_streams_in_flight_finish() {
    let dir = TempDir::new();
    let mock = Mock::start().await;
    let (port, ops) = (free_port(), free_port());
    let flags = ["--drain-seconds", "1", "--shutdown-grace-seconds", "20"];
    let mut gw = spawn_gateway(&dir, &mock_config(&mock), port, ops, &flags);
    assert!(wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let url = format!("http://127.0.0.1:{port}/chat/chat/completions");
    // Streams of about three seconds each.
    mock.behave(json!({"chunk_delay_ms": 300, "times": 4}))
        .await;
    let mut streams = JoinSet::new();
    for n in 0..4u64 {
        let url = url.clone();
        // n * 3: every one streamed.
        streams.spawn(async move { one(&crate::client(), &url, KEY, n * 3).await });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.signal("TERM");
    // Draining: not ready, still serving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = crate::client()
        .get(format!("http://127.0.0.1:{ops}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready, 503, "readyz while draining");
    let mut done = 0;
    while let Some(r) = streams.join_next().await {
        r.unwrap().expect("a stream in flight at SIGTERM completes");
        done += 1;
    }
    assert_eq!(done, 4);
    let code = gw.exited(Duration::from_secs(20)).await;
    assert!(
        code.is_some(),
        "the gateway exits once its streams are done"
    );
    assert!(signalled.elapsed() < Duration::from_secs(20));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_and_the_hub_down_the_gateway_serves_its_last_good_configuration() {
    let dir = TempDir::new();
    let built = crate::policies::policy_dir();
    let (hub, hub_url) = start_hub(&dir, &built).await;
    let admin = Admin::start_with_hub(&dir, Some(&hub_url)).await;
    let (admin, _mock, gw, token, gw_id) = setup_with(admin, &dir).await;
    let (key, base) = admin.deploy_guarded(&gw_id, &gw.url).await;
    let url = format!("{base}/chat/completions");

    // Admin and the hub go down during a load run.
    let (stop, h) = start_load(&url, &key, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (port, ops) = (gw.port, gw.ops);
    drop(admin);
    drop(hub);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = finish(stop, h).await;
    assert_none_failed("admin and hub down", &t, 20);

    // A restart with both still down: the last good configuration and the
    // policy cache on disk serve, the guardrail included.
    drop(gw);
    let gw = crate::admin::Managed::start(
        &format!("http://127.0.0.1:{}", free_port()),
        &token,
        &dir,
        port,
        ops,
    )
    .await;
    let (stop, h) = start_load(&url, &key, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = finish(stop, h).await;
    assert_none_failed("restarted with admin and hub down", &t, 20);
    let r = crate::client()
        .post(&url)
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "about the forbidden topic"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the guardrail still runs");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_policy_fails_open_or_closed_as_configured() {
    let dir = crate::policies::policy_dir();
    let mock = Mock::start().await;
    // Nothing listens there: Redis is down from the start (the gateway
    // still loads; counters fail per request).
    let dead = format!("redis://127.0.0.1:{}/0", free_port());
    let limit = "settings: { limits: [{ metric: requests, limit: 100000, window: minute }] }";
    let config = format!(
        "policy_engine: {{ dirs: [\"{}\"], redis_url: \"{dead}\" }}\nproviders:\n  - {{ name: openai, type: openai, base_url: \"{}/v1\", api_key: sk-mock }}\nproxies:\n  - {{ name: open, routes: [{{ provider: openai }}], keys: [{{ name: t, env: PC_KEY }}], policies: [{{ name: token-rate-limit, {limit}, on_error: open }}] }}\n  - {{ name: closed, routes: [{{ provider: openai }}], keys: [{{ name: t, env: PC_KEY }}], policies: [{{ name: token-rate-limit, {limit}, on_error: closed }}] }}\n",
        dir.0.display(),
        mock.url
    );
    let gdir = TempDir::new();
    let (port, ops) = (free_port(), free_port());
    let _gw = spawn_gateway(&gdir, &config, port, ops, &[]);
    assert!(
        wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await,
        "the gateway loads with Redis down:\n{}",
        std::fs::read_to_string(gdir.0.join("gateway.log")).unwrap_or_default()
    );
    let (stop, h) = start_load(
        &format!("http://127.0.0.1:{port}/open/chat/completions"),
        KEY,
        4,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = finish(stop, h).await;
    assert_none_failed("fail-open policy with Redis down", &t, 20);
    // Fail closed: a clear 500 in the OpenAI shape, never a hang.
    let started = Instant::now();
    let r = crate::client()
        .post(format!("http://127.0.0.1:{port}/closed/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_failed", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_stream_ends_every_stream_with_an_error_event() {
    let dir = TempDir::new();
    let mock = Mock::start().await;
    let (port, ops) = (free_port(), free_port());
    let _gw = spawn_gateway(&dir, &mock_config(&mock), port, ops, &[]);
    assert!(wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let url = format!("http://127.0.0.1:{port}/chat/chat/completions");
    // Every stream is cut by the provider after two chunks.
    mock.behave(json!({"cut_after_chunks": 2})).await;
    let mut set = JoinSet::new();
    for c in 0..4 {
        let url = url.clone();
        set.spawn(async move {
            let client = crate::client();
            let (mut sent, mut error_events) = (0u64, 0u64);
            for _ in 0..10 {
                sent += 1;
                let r = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .timeout(Duration::from_secs(10))
                    .json(&json!({"model": "gpt-5-mini", "stream": true,
                        "messages": [{"role": "user", "content": format!("long answer {c}")}]}))
                    .send()
                    .await
                    .expect("the head arrives");
                assert_eq!(r.status(), 200);
                let body = r.text().await.expect("the stream ends, never hangs");
                let events = sse_events(&body);
                let (_, last) = events.last().expect("events");
                let v: Value = serde_json::from_str(last).unwrap_or(Value::Null);
                if v["error"]["message"].is_string() {
                    error_events += 1;
                }
            }
            (sent, error_events)
        });
    }
    let (mut sent, mut errors) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (s, e) = r.unwrap();
        sent += s;
        errors += e;
    }
    assert_eq!(
        (sent, errors),
        (40, 40),
        "every cut stream ends with an error event"
    );
    // The metrics count them, each as an error.
    let ops_url = format!("http://127.0.0.1:{ops}");
    let needles = ["portcullis_requests_total{", "proxy=\"chat\""];
    let text = crate::harness::metrics_when(&ops_url, &needles, 40.0).await;
    let ok = crate::harness::sum_of(&text, &[needles[0], needles[1], "error_type=\"none\""]);
    assert_eq!(crate::harness::sum_of(&text, &needles) - ok, 40.0, "{text}");
}

/// A gateway run from a file reloads it on SIGHUP, every 200 ms under
/// load, without failing a request; a file that does not load is logged
/// and the configuration in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_every_200_ms_without_failing_a_request() {
    let dir = TempDir::new();
    let mock = Mock::start().await;
    let (port, ops) = (free_port(), free_port());
    let base = mock_config(&mock);
    let mut gw = spawn_gateway(&dir, &base, port, ops, &[]);
    assert!(wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let write = |extra: &str| {
        std::fs::write(
            dir.0.join("gateway.yaml"),
            format!("listen: 127.0.0.1:{port}\nops_listen: 127.0.0.1:{ops}\n{base}{extra}"),
        )
        .unwrap();
    };
    let url = format!("http://127.0.0.1:{port}/chat/chat/completions");
    let (stop, h) = start_load(&url, KEY, 4);
    for i in 0..20 {
        // Each version has one more proxy.
        let mut extra = String::new();
        for j in 0..=i {
            extra.push_str(&format!(
                "  - {{ name: extra-{j}, routes: [{{ provider: openai }}], keys: [{{ name: t, env: PC_KEY }}] }}\n"
            ));
        }
        write(&extra);
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = finish(stop, h).await;
    assert_none_failed("SIGHUP reloads under load", &t, 50);
    let newest = format!("http://127.0.0.1:{port}/extra-19/chat/completions");
    assert!(serves(&newest).await, "the last version is served");
    // A file that does not load: the version in force stays.
    write("  - { name: broken, routes: [{ provider: nowhere }] }\n");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(serves(&url).await);
    let log = std::fs::read_to_string(dir.0.join("gateway.log")).unwrap_or_default();
    assert!(log.contains("configuration not reloaded"), "{log}");
    assert!(
        gw.exited(Duration::from_millis(10)).await.is_none(),
        "still running"
    );
}
