//! TLS both ways: clients reach the gateway over HTTPS (certificate chosen
//! by SNI, HTTP/2 or HTTP/1.1), and the gateway verifies a provider's
//! certificate against a custom CA. Certificates are made with `openssl`,
//! requests sent with `curl` (both installed by `.ci/run`).

use std::process::Command;

use serde_json::Value;

use crate::KEY;
use crate::harness::{Gateway, Mock, TempDir, free_port};

/// A test CA (`ca.pem`) and certificates it signed for `alpha.test`,
/// `beta.test` and `localhost` (also IP 127.0.0.1), each `NAME.pem`/`NAME.key`.
pub fn make_certs(dir: &std::path::Path) {
    let sh = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=Portcullis Test CA"
for n in alpha.test beta.test localhost; do
  openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj "/CN=$n"
  if [ $n = localhost ]; then san="DNS:localhost,IP:127.0.0.1"; else san="DNS:$n,DNS:*.$n"; fi
  printf "subjectAltName=$san\n" > $n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile $n.ext
done"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(sh)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl over HTTPS to `host` (resolved to 127.0.0.1); returns (status, http version, body).
fn curl(
    dir: &std::path::Path,
    host: &str,
    port: u16,
    path: &str,
    extra: &[&str],
) -> (u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            "ca.pem",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
        ])
        .args([
            "-w",
            "\n%{http_code} %{http_version}",
            "-H",
            &format!("authorization: Bearer {KEY}"),
        ])
        .args(["-H", "content-type: application/json"])
        .args([
            "-d",
            r#"{"model":"gpt-5-mini","messages":[{"role":"user","content":"over tls"}]}"#,
        ])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .current_dir(dir)
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = tail.split(' ');
    let code = it.next().unwrap_or("0").parse().unwrap_or(0);
    (code, it.next().unwrap_or("").to_owned(), body.to_owned())
}

#[tokio::test]
async fn tls_for_clients_by_sni_and_to_providers_with_a_custom_ca() {
    let certs = TempDir::new();
    make_certs(&certs.0);
    let c = certs.0.display();
    let mock = Mock::start().await;
    let tls_port = free_port();
    let a = Gateway::start_with_env(
        &format!(
            r#"tls:
  listen: 127.0.0.1:{tls_port}
  certificates:
    # The first is also served to clients that send no SNI (IP addresses).
    - {{ cert: {c}/localhost.pem, key: {c}/localhost.key }}
    - {{ cert: {c}/alpha.test.pem, key: {c}/alpha.test.key }}
    - {{ cert: {c}/beta.test.pem, key: {c}/beta.test.key }}
providers:
  - {{ name: openai, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini] }}
proxies:
  - {{ name: openai, routes: [{{ provider: openai }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#,
            m = mock.url
        ),
        &[("PC_KEY", KEY)],
    )
    .await;

    // Each hostname gets its own certificate (curl verifies the name), over
    // HTTP/2 by ALPN, and HTTP/1.1 when the client only speaks that.
    for host in ["alpha.test", "api.beta.test"] {
        let (code, version, body) = curl(&certs.0, host, tls_port, "/openai/chat/completions", &[]);
        assert_eq!(code, 200, "{host}: {body}");
        assert_eq!(version, "2", "{host}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Mock reply from openai model gpt-5-mini: over tls"
        );
    }
    let (code, version, _) = curl(
        &certs.0,
        "beta.test",
        tls_port,
        "/openai/chat/completions",
        &["--http1.1"],
    );
    assert_eq!((code, version.as_str()), (200, "1.1"));
    // A name no certificate covers gets the first one, which curl rejects.
    let (code, _, _) = curl(
        &certs.0,
        "gamma.test",
        tls_port,
        "/openai/chat/completions",
        &[],
    );
    assert_eq!(code, 0, "a certificate for the wrong name must not verify");

    // Gateway B calls gateway A as an HTTPS provider, trusting the test CA.
    let upstream = |ca: bool| {
        format!(
            r#"providers:
  - {{ name: a, type: openai-compatible, base_url: "https://127.0.0.1:{tls_port}/openai", api_key: {KEY} {ca} }}
proxies:
  - {{ name: via-a, routes: [{{ provider: a }}], keys: [{{ name: tester, env: PC_KEY }}] }}
"#,
            ca = if ca {
                format!(", ca_file: {c}/ca.pem")
            } else {
                String::new()
            }
        )
    };
    let body = serde_json::json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hop"}]});
    // Requests A answered over HTTP/2 (its access log names the protocol).
    let h2_lines = |log: String| {
        log.lines()
            .filter(|l| l.contains("portcullis::access") && l.contains("HTTP/2"))
            .count()
    };
    let h2_before = h2_lines(a.log());
    let b = Gateway::start_with_env(&upstream(true), &[("PC_KEY", KEY)]).await;
    let r = crate::client()
        .post(format!("{}/via-a/chat/completions", b.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: hop"
    );
    // Streamed too, on the same HTTP/2 connection.
    let mut streamed = body.clone();
    streamed["stream"] = serde_json::json!(true);
    let text = crate::client()
        .post(format!("{}/via-a/chat/completions", b.url))
        .bearer_auth(KEY)
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("hop"), "{text}");
    // B reached its HTTPS provider over HTTP/2, negotiated by ALPN. (A
    // writes its access log line just after the answer: give it time.)
    let mut seen = h2_lines(a.log());
    for _ in 0..100 {
        if seen >= h2_before + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = h2_lines(a.log());
    }
    assert_eq!(seen, h2_before + 2, "{}", a.log());

    // Without the CA, the provider's certificate is not trusted.
    let b2 = Gateway::start_with_env(&upstream(false), &[("PC_KEY", KEY)]).await;
    let r = crate::client()
        .post(format!("{}/via-a/chat/completions", b2.url))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    drop(a);
}
