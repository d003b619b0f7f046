//! The command line: config validation.

use crate::harness::{TempDir, run_cli, run_cli_env};

#[test]
fn validate_accepts_examples_and_names_the_bad_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    for ex in [
        "examples/gateway.yaml",
        "examples/multi-provider.yaml",
        "examples/routing.yaml",
    ] {
        let env = [("OPENAI_API_KEY", "sk-x"), ("APP_KEY", "pk-x")];
        let (code, out, err) = run_cli_env(
            &["gateway", "--validate", "--config", &format!("{root}/{ex}")],
            &env,
        );
        assert_eq!(code, 0, "{ex}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
    let dir = TempDir::new();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - name: p\n    type: openai\n    base_url: http://127.0.0.1:9/v1\nproxies:\n  - name: x\n    routes:\n      - provider: p\n        modle: gpt\n",
    )
    .unwrap();
    let (code, _out, err) = run_cli(&["gateway", "--validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("proxies[0].routes[0].modle"), "{err}");
    // A missing secret is named too.
    let (code, _out, err) = run_cli(&[
        "gateway",
        "--validate",
        "--config",
        &format!("{root}/examples/gateway.yaml"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("providers[0].api_key_env: environment variable OPENAI_API_KEY is not set"),
        "{err}"
    );
}

#[test]
fn key_hash_is_sha256_hex() {
    let (code, out, _) = run_cli(&["key", "hash", "abc"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// `portcullis up --demo` prints a key and a curl line; the line works.
#[tokio::test]
async fn up_demo_prints_a_curl_line_that_works() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use crate::harness::free_port;

    let dir = TempDir::new();
    let (port, ops, mock) = (free_port(), free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--demo",
            "--port",
            &port.to_string(),
            "--ops-port",
            &ops.to_string(),
        ])
        .args(["--mock-port", &mock.to_string()])
        .args(["--admin-port", &free_port().to_string(), "--data-dir"])
        .arg(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.trim_start().starts_with("curl ");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    let curl_line = lines.last().cloned().unwrap_or_default();
    assert!(curl_line.trim_start().starts_with("curl "), "{lines:?}");
    assert!(crate::harness::wait_ready(&format!("http://127.0.0.1:{ops}/readyz")).await);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} -s", curl_line.trim()))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: Hello Portcullis"
    );
    // The written config is a valid gateway config.
    assert!(dir.0.join("demo-gateway.yaml").exists());
}
