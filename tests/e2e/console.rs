//! The web console in a real browser: `portcullis up --demo` serves it at
//! `/` of the admin listener, and `tests/python/console_flows.py` walks
//! the main flows in headless Chromium (Debian's `chromium`, driven by
//! Playwright from PyPI): sign in, create a provider and a proxy, attach
//! a guardrail through its schema form (a bad value shows the field
//! error), create a key and see it once, deploy, call the invoke URL from
//! the Get Started box and see the answer, stop the deployment; an
//! application with a key subscribes under a plan with a quota of one
//! request an hour (200, then 429 on the gateway) and its spend shows.
//!
//! Missing prerequisites fail the test with the command that installs
//! them, unless `PORTCULLIS_SKIP_BROWSER=1` says to skip it.
//! `CONSOLE_SCREENSHOTS=docs/console` writes a screenshot of each page.

use std::process::{Command, Stdio};

use crate::harness::{Proc, TempDir, free_port};

const SKIP_ENV: &str = "PORTCULLIS_SKIP_BROWSER";

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// Why the browser test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !std::path::Path::new(&chromium()).exists() {
        return Some(format!(
            "no Chromium at {} (install it: sudo apt-get install -y chromium; or set CHROMIUM)",
            chromium()
        ));
    }
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output();
    if !playwright.is_ok_and(|o| o.status.success()) {
        return Some(
            "the Python Playwright package is missing (install it: pip install -r tests/python/requirements.txt)"
                .to_owned(),
        );
    }
    None
}

#[tokio::test]
async fn console_main_flows_in_a_real_browser() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os(SKIP_ENV).is_some() {
            eprintln!("skipped ({SKIP_ENV} is set): {why}");
            return;
        }
        panic!(
            "the console's browser test cannot run: {why}. Set {SKIP_ENV}=1 to skip it explicitly."
        );
    }
    let dir = TempDir::new();
    let (port, ops, mock, admin) = (free_port(), free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["up", "--demo", "--port", &port.to_string()])
        .args(["--ops-port", &ops.to_string()])
        .args(["--mock-port", &mock.to_string()])
        .args(["--admin-port", &admin.to_string()])
        .args(["--hub-port", &free_port().to_string(), "--data-dir"])
        .arg(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = crate::harness::up_lines(child.stdout.take().unwrap());
    // Killed when the test ends, passed or not.
    let _up = Proc::new(child);
    let lines = rx.await.unwrap();
    let field = |label: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `{label}` line in {lines:?}"))
            .to_owned()
    };
    let console = field("console");
    let token = field("admin token");
    assert_eq!(console, format!("http://127.0.0.1:{admin}/"));
    assert!(crate::harness::wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);

    // The binary carries the built console, not the page saying how to
    // build it (npm missing at build time).
    let page = crate::client().get(&console).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<div id=\"root\">"),
        "the console is not built into this binary (install nodejs and npm: sudo apt-get install -y nodejs npm, then rebuild):\n{html}"
    );
    // The API keeps its JSON errors beside the console.
    let r = crate::client()
        .get(format!("{console}api/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "not_found"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/console_flows.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        script,
        &console,
        &token,
        &format!("http://127.0.0.1:{mock}"),
    ])
    .env("CHROMIUM", chromium());
    // Screenshots land in the checkout when asked for (a relative path is
    // taken from the repository root).
    if let Ok(shots) = std::env::var("CONSOLE_SCREENSHOTS") {
        cmd.env(
            "CONSOLE_SCREENSHOTS",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(shots),
        );
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
        .await
        .expect("the browser flows took over 5 minutes")
        .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the console's browser flows failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("console flows: ok"), "{stdout}");
}
