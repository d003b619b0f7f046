//! Starting real `portcullis` processes on free loopback ports.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Owns `child`: it is killed when the `Proc` is dropped.
    pub fn new(child: Child) -> Proc {
        Proc { child }
    }

    /// Sends `signal` (`TERM`, `QUIT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -s {signal} failed");
    }

    /// Waits up to `within` for the process to exit; its exit code, or
    /// `None` if it still runs.
    pub async fn exited(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago, for a server a test starts.
///
/// Taken below Linux's ephemeral range (32768-60999), where the kernel
/// never picks the source port of an outgoing connection (so a busy test
/// run's own connections cannot occupy it before the server binds), and
/// never the same port twice in this test process (tests run in parallel
/// threads of one process). The start is spread by the process id so that
/// test processes running side by side rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id() % u32::from(SPAN)) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = LOW + n % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// GETs `url` and parses the answer as JSON.
pub async fn get_json(url: &str) -> Value {
    crate::client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Waits until `url` answers 200; false after 30 s.
pub async fn wait_ready(url: &str) -> bool {
    wait_ready_with(&crate::client(), url).await
}

/// [`wait_ready`] with a given client (one trusting a test CA).
pub async fn wait_ready_with(client: &reqwest::Client, url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running mock LLM.
pub struct Mock {
    _proc: Proc,
    pub port: u16,
    pub url: String,
}

impl Mock {
    pub async fn start() -> Mock {
        let port = free_port();
        let child = Command::new(bin())
            .args(["mock-llm", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mock");
        let url = format!("http://127.0.0.1:{port}");
        let m = Mock {
            _proc: Proc { child },
            port,
            url,
        };
        assert!(
            wait_ready(&format!("{}/_mock/health", m.url)).await,
            "the mock LLM did not start"
        );
        m
    }

    /// The requests the mock received.
    pub async fn journal(&self) -> Vec<Value> {
        let v = get_json(&format!("{}/_mock/requests", self.url)).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// TCP connections the mock accepted so far; each call opens one.
    pub async fn connections(&self) -> u64 {
        get_json(&format!("{}/_mock/connections", self.url)).await["accepted"]
            .as_u64()
            .expect("accepted count")
    }

    /// Sets the model lists the providers serve (`PUT /_mock/models`).
    pub async fn set_models(&self, lists: Value) {
        let r = crate::client()
            .put(format!("{}/_mock/models", self.url))
            .json(&lists)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "model lists rejected: {}",
            r.text().await.unwrap()
        );
    }

    /// Queues a behaviour (error status, delay, cut stream).
    pub async fn behave(&self, b: Value) {
        let r = crate::client()
            .post(format!("{}/_mock/behaviour", self.url))
            .json(&b)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "behaviour rejected: {}",
            r.text().await.unwrap()
        );
    }
}

/// A running gateway.
pub struct Gateway {
    _proc: Proc,
    pub url: String,
    pub ops_url: String,
    _dir: TempDir,
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("portcullis-e2e-{}", uuid_like()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Gateway {
    /// Scrapes `/metrics` once at least `requests` requests have been
    /// recorded: metrics are recorded just after each response is sent, so
    /// a scrape right after the last response could miss it.
    pub async fn metrics_after(&self, requests: f64) -> String {
        metrics_when(&self.ops_url, &["portcullis_requests_total{"], requests).await
    }

    /// The sum of the `/metrics` samples whose line contains every one of
    /// `needles` (e.g. a metric name and a label).
    pub async fn metric_sum(&self, needles: &[&str]) -> f64 {
        let text = scrape(&self.ops_url).await;
        sum_of(&text, needles)
    }

    /// What the gateway wrote to stderr so far (its logs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("gateway.log")).unwrap_or_default()
    }

    /// Replaces the configuration file with `config` (as given to
    /// `start`), sends SIGHUP and waits until the gateway logged the
    /// reload (up to 10 s).
    pub async fn reload(&self, config: &str) {
        let path = self._dir.0.join("gateway.yaml");
        let old = std::fs::read_to_string(&path).unwrap();
        let listen: String = old.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, format!("{listen}{config}")).unwrap();
        let before = self.log().matches("configuration reloaded").count();
        self._proc.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches("configuration reloaded").count() == before {
            assert!(Instant::now() < deadline, "no reload:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a gateway with `config` (YAML without the listen lines; they are added).
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let ops = free_port();
        let dir = TempDir::new();
        let path = dir.0.join("gateway.yaml");
        let head = format!("listen: 127.0.0.1:{port}\nops_listen: 127.0.0.1:{ops}\n");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{head}{config}").unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["gateway", "--threads", "1", "--config"])
            .arg(&path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(dir.0.join("gateway.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gateway");
        let g = Gateway {
            _proc: Proc { child },
            url: format!("http://127.0.0.1:{port}"),
            ops_url: format!("http://127.0.0.1:{ops}"),
            _dir: dir,
        };
        if !wait_ready(&format!("{}/readyz", g.ops_url)).await {
            let log = std::fs::read_to_string(g._dir.0.join("gateway.log")).unwrap_or_default();
            panic!("the gateway did not start:\n{log}");
        }
        g
    }
}

/// The `/metrics` text of the operations listener at `ops_url`.
pub async fn scrape(ops_url: &str) -> String {
    crate::client()
        .get(format!("{ops_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of `text` whose line contains every one of
/// `needles`.
pub fn sum_of(text: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Scrapes `/metrics` until the samples matching `needles` sum to at least
/// `at_least` (metrics are recorded just after a response is sent).
pub async fn metrics_when(ops_url: &str, needles: &[&str], at_least: f64) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text = scrape(ops_url).await;
        if sum_of(&text, needles) >= at_least {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{needles:?} below {at_least}:\n{text}")
}

/// Runs `portcullis` with arguments and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_cli_env(args, &[])
}

/// `run_cli` with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Splits an SSE body into (event, data) pairs.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_owned());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

/// The lines `portcullis up` prints, up to and including its `curl` line
/// (all of them if it ends before one). The pipe keeps being drained
/// afterwards: closing it would make the child's next `println!` fail.
pub fn up_lines(stdout: std::process::ChildStdout) -> tokio::sync::oneshot::Receiver<Vec<String>> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.is_some() {
                let done = line.trim_start().starts_with("curl ");
                seen.push(line);
                if done {
                    let _ = tx.take().unwrap().send(std::mem::take(&mut seen));
                }
            }
        }
        if let Some(tx) = tx {
            let _ = tx.send(seen);
        }
    });
    rx
}
