//! A fleet managed by admin: a gateway takes its settings (TLS by SNI,
//! Redis, OTLP, timeouts, body limits, provider CA bundles, policy engine
//! limits) from admin, per group and per gateway, applied live where the
//! process can; and a proxy's earlier revision is redeployed (a rollback)
//! over REST and the CLI.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admin::{ADMIN_TOKEN, Admin, Managed, chat, setup, until_status};
use crate::harness::{Gateway, Mock, TempDir, free_port, run_cli_env};
use crate::tls::make_certs;

/// A client that trusts the test CA and reaches `names` on 127.0.0.1.
fn sni_client(certs: &std::path::Path, names: &[&str]) -> reqwest::Client {
    let mut b = portcullis_net::client_builder(Some(&certs.join("ca.pem"))).expect("test CA");
    for n in names {
        b = b.resolve(n, "127.0.0.1:0".parse().unwrap());
    }
    b.timeout(Duration::from_secs(10)).build().unwrap()
}

/// Polls `f` until it answers true.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_managed_gateway_takes_its_settings_from_admin() {
    let dir = TempDir::new();
    let certs = TempDir::new();
    make_certs(&certs.0);
    let pem = |name: &str| std::fs::read_to_string(certs.0.join(name)).unwrap();
    let mock = Mock::start().await;
    // A provider behind HTTPS with a certificate of the test CA: a file
    // gateway in front of the mock.
    let up_tls = free_port();
    let _upstream = Gateway::start_with_env(
        &format!(
            r#"tls:
  listen: 127.0.0.1:{up_tls}
  certificates: [{{ cert: {c}/localhost.pem, key: {c}/localhost.key }}]
providers:
  - {{ name: mock, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini] }}
proxies:
  - {{ name: openai, routes: [{{ provider: mock }}], keys: [{{ name: edge, env: UP_KEY }}] }}
"#,
            c = certs.0.display(),
            m = mock.url
        ),
        &[("UP_KEY", "pk-upstream")],
    )
    .await;
    let (collector, spans) = crate::observability::collector().await;

    let admin = Admin::start(&dir).await;
    let (port, ops, tls_port) = (free_port(), free_port(), free_port());
    let reg = admin
        .ok(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "edge-eu-1", "url": format!("http://127.0.0.1:{port}"), "group": "eu"})),
        )
        .await;
    assert_eq!(reg["group"], "eu");
    let token = reg["token"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            "/api/v1/providers",
            Some(json!({"name": "secure", "type": "openai-compatible",
            "base_url": format!("https://127.0.0.1:{up_tls}/openai"), "models": ["gpt-5-mini"],
            "credentials": {"api_key": "pk-upstream"}})),
        )
        .await;

    // The group: OTLP, a body limit, the provider's CA. Bad input first.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/gateway-groups/eu/settings",
            Some(json!({"timeouts": {"read_ms": 0}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("timeouts.read_ms")),
        "{v}"
    );
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/gateway-groups/eu/settings",
            Some(json!({"provider_ca": {"nope": pem("ca.pem")}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("provider_ca.nope")),
        "{v}"
    );
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/gateway-groups/eu/settings",
            Some(json!({"telemetry": {"sampling_ratio": 2}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("telemetry.sampling_ratio")),
        "{v}"
    );
    admin
        .ok(
            "PATCH",
            "/api/v1/gateway-groups/eu/settings",
            Some(json!({
                "telemetry": {"otlp_endpoint": format!("http://127.0.0.1:{collector}"), "service_name": "edge-eu", "otlp_protocol": "http/json"},
                "limits": {"max_body_bytes": 4096},
                "provider_ca": {"secure": pem("ca.pem")},
                "policy_engine": {"timeout_ms": 250, "memory_limit_mb": 48},
            })),
        )
        .await;
    // The gateway itself: its TLS listener and certificate, Redis.
    let redis = std::env::var("REDIS_URL").ok();
    let mut own = json!({
        "tls": {"listen": format!("127.0.0.1:{tls_port}"),
                "certificates": [{"cert_pem": pem("alpha.test.pem"), "key_pem": pem("alpha.test.key")}]},
        "timeouts": {"read_ms": 30000},
    });
    if let Some(r) = &redis {
        own["redis_url"] = json!(r);
    }
    let v = admin
        .ok("PATCH", "/api/v1/gateways/edge-eu-1/settings", Some(own))
        .await;
    // Secrets are write-only.
    assert_eq!(
        v["settings"]["tls"]["certificates"][0]["key_set"], true,
        "{v}"
    );
    assert!(!v.to_string().contains("PRIVATE KEY"), "{v}");
    assert_eq!(v["settings"]["redis_url_set"], redis.is_some());
    // The effective settings: the group's, then the gateway's own.
    assert_eq!(v["effective"]["limits"]["max_body_bytes"], 4096, "{v}");
    assert_eq!(v["effective"]["timeouts"]["read_ms"], 30000, "{v}");
    // A bad key for the certificate is refused before any gateway sees it.
    let (s, v) = admin
        .call(
            "PATCH",
            "/api/v1/gateways/edge-eu-1/settings",
            Some(json!({"tls": {"certificates": [{"cert_pem": pem("alpha.test.pem"), "key_pem": "not a key"}]}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("tls.certificates[0].key_pem")),
        "{v}"
    );

    // Sealed at rest: no private key in admin's files.
    for entry in std::fs::read_dir(dir.0.join("admin")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("BEGIN PRIVATE KEY"),
            "a TLS key is stored in the clear"
        );
    }

    // The gateway needs only admin's URL and its token (and where to listen).
    let gw = Managed::start(&admin.url, &token, &dir, port, ops).await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Chat", "provider": "secure"})),
        )
        .await;
    let key = admin.key("chat", "app").await;
    admin.deploy("chat", "edge-eu-1").await;
    until_status(
        &format!("{}/chat", gw.url),
        &key,
        200,
        Duration::from_secs(10),
    )
    .await;

    // What admin hands the gateway: secrets beside the configuration.
    let mc: Value = crate::client()
        .get(format!("{}/api/v1/gateway/config", admin.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        mc["config"]["tls"]["certificates"][0]["key_env"],
        "PORTCULLIS_TLS_KEY_0"
    );
    assert!(
        mc["secrets"]["PORTCULLIS_TLS_KEY_0"]
            .as_str()
            .unwrap()
            .contains("PRIVATE KEY")
    );
    if let Some(r) = &redis {
        assert_eq!(
            mc["config"]["policy_engine"]["redis_url_env"],
            "PORTCULLIS_REDIS_URL"
        );
        assert_eq!(mc["secrets"]["PORTCULLIS_REDIS_URL"], json!(r));
    } else {
        eprintln!("REDIS_URL not set (.ci/run starts a Redis); the Redis setting is not checked");
    }

    // HTTPS with admin's certificate, chosen by SNI; the provider's CA
    // from the group's settings lets the gateway reach it.
    let https = sni_client(&certs.0, &["alpha.test", "beta.test"]);
    let body = json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "over admin's tls"}]});
    let r = https
        .post(format!(
            "https://alpha.test:{tls_port}/chat/chat/completions"
        ))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Mock reply from openai model gpt-5-mini: over admin's tls"
    );
    // The body limit of the group.
    let big =
        json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    let r = crate::client()
        .post(format!("{}/chat/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Spans reach the group's collector under its service name.
    until("spans exported", Duration::from_secs(10), || {
        let spans = spans.clone();
        async move {
            spans
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.to_string().contains("edge-eu"))
        }
    })
    .await;

    // Live changes: a new certificate serves the next handshake, without
    // a restart; a connection limit waits for one and the gateway says so.
    admin
        .ok(
            "PATCH",
            "/api/v1/gateways/edge-eu-1/settings",
            Some(json!({
                "tls": {"certificates": [{"cert_pem": pem("beta.test.pem"), "key_pem": pem("beta.test.key")}]},
                "limits": {"max_client_connections": 50},
            })),
        )
        .await;
    let beta = format!("https://beta.test:{tls_port}/chat/chat/completions");
    until(
        "the new certificate served",
        Duration::from_secs(10),
        || {
            let (https, beta, key, body) = (https.clone(), beta.clone(), key.clone(), body.clone());
            async move {
                let r = https.post(beta).bearer_auth(key).json(&body).send().await;
                r.is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    // A new client: the old one would reuse its kept-alive connection.
    let alpha = sni_client(&certs.0, &["alpha.test"])
        .post(format!(
            "https://alpha.test:{tls_port}/chat/chat/completions"
        ))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await;
    assert!(alpha.is_err(), "alpha.test has no certificate any more");
    until("restart_required reported", Duration::from_secs(10), || {
        let admin = &admin;
        async move {
            let g = admin.ok("GET", "/api/v1/gateways/edge-eu-1", None).await;
            g["restart_required"] == json!(["limits.max_client_connections"])
                && g["in_sync"] == true
        }
    })
    .await;
    // The merge kept the group's body limit beside the gateway's own.
    let v = admin
        .ok("GET", "/api/v1/gateways/edge-eu-1/settings", None)
        .await;
    assert_eq!(
        v["effective"]["limits"],
        json!({"max_body_bytes": 4096, "max_client_connections": 50}),
        "{v}"
    );
    assert_eq!(v["group"], "eu");
    let g = admin
        .ok("GET", "/api/v1/gateway-groups/eu/settings", None)
        .await;
    assert_eq!(g["gateways"], json!(["edge-eu-1"]));
    // Leaving the group drops its settings: no body limit of 4096 any more.
    admin
        .ok(
            "PATCH",
            "/api/v1/gateways/edge-eu-1",
            Some(json!({"group": null})),
        )
        .await;
    until("the group's limit gone", Duration::from_secs(10), || {
        let (gw, key, big) = (gw.url.clone(), key.clone(), big.clone());
        async move {
            let r = crate::client()
                .post(format!("{gw}/chat/chat/completions"))
                .bearer_auth(key)
                .json(&big)
                .send()
                .await
                .unwrap();
            // (Its pooled connection to the provider, made while the
            // group's CA was trusted, still serves.)
            r.status() == 200
        }
    })
    .await;
    // Developers do not see or change gateway settings.
    let dev = admin
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "dev", "role": "developer"})),
        )
        .await;
    let r = crate::client()
        .get(format!("{}/api/v1/gateways/edge-eu-1/settings", admin.url))
        .bearer_auth(dev["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn an_earlier_revision_is_redeployed_over_rest_and_the_cli() {
    let dir = TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Chat API"})))
        .await;
    let key = admin.key("chat-api", "app").await;
    let base = format!("{}/chat-api", gw.url);
    let model_of = |v: &Value| v["model"].as_str().unwrap_or_default().to_owned();
    admin.deploy("chat-api", &gw_id).await;
    until_status(&base, &key, 200, Duration::from_secs(10)).await;
    assert_eq!(model_of(&chat(&base, &key).await.1), "gpt-5-mini");

    // Revision 2 sends every request to another model.
    admin
        .ok(
            "PATCH",
            "/api/v1/proxies/chat-api",
            Some(json!({"routes": [{"provider": "mock", "model": "gpt-4o-mini"}]})),
        )
        .await;
    admin.deploy("chat-api", &gw_id).await;
    until("revision 2 served", Duration::from_secs(10), || {
        let (base, key) = (base.clone(), key.clone());
        async move { chat(&base, &key).await.1["model"] == "gpt-4o-mini" }
    })
    .await;

    // Roll back to revision 1 over REST.
    let dep = admin
        .ok(
            "POST",
            "/api/v1/proxies/chat-api/deployments",
            Some(json!({"gateway": gw_id, "revision": 1})),
        )
        .await;
    assert_eq!(
        (dep["revision"].as_i64(), dep["current_revision"].as_i64()),
        (Some(1), Some(2))
    );
    until("revision 1 served again", Duration::from_secs(10), || {
        let (base, key) = (base.clone(), key.clone());
        async move { chat(&base, &key).await.1["model"] == "gpt-5-mini" }
    })
    .await;
    let g = admin
        .ok("GET", &format!("/api/v1/gateways/{gw_id}"), None)
        .await;
    assert_eq!(g["deployments"][0]["revision"], 1, "{g}");
    // A revision that does not exist: 422 naming the field.
    let (s, v) = admin
        .call(
            "POST",
            "/api/v1/proxies/chat-api/deployments",
            Some(json!({"gateway": gw_id, "revision": 9})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("revision")),
        "{v}"
    );

    // Forward again with the CLI.
    let (code, out, err) = run_cli_env(
        &[
            "admin",
            "deploy",
            "chat-api",
            "--gateway",
            &gw_id,
            "--revision",
            "2",
            "-o",
            "json",
        ],
        &[
            ("PORTCULLIS_ADMIN_URL", &admin.url),
            ("PORTCULLIS_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["revision"],
        2,
        "{out}"
    );
    until("revision 2 served again", Duration::from_secs(10), || {
        let (base, key) = (base.clone(), key.clone());
        async move { chat(&base, &key).await.1["model"] == "gpt-4o-mini" }
    })
    .await;
    // The history shows which revision each deployment served, newest first.
    let h = admin
        .ok("GET", "/api/v1/proxies/chat-api/deployments", None)
        .await;
    let revisions: Vec<i64> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, vec![2, 1, 2, 1]);
    assert_eq!(h["items"][0]["latest"], true);
    assert_eq!(h["items"][0]["status"], "Active");
    assert_eq!(h["items"][1]["status"], "Inactive");
}

/// A fresh Postgres schema for one test, as a URL that selects it.
fn fresh_schema(database_url: &str) -> String {
    let schema = format!(
        "fleet_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let out = std::process::Command::new("psql")
        .args([database_url, "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .output()
        .expect("psql (Debian's postgresql-client) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{sep}options=-c%20search_path%3D{schema}")
}

async fn chat_with(url: &str, key: &str, text: &str) -> reqwest::Response {
    crate::client()
        .post(format!("{url}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

/// Two admin replicas on one Postgres, two gateway replicas sharing one
/// Redis (set once, in the group's settings): a change made on either
/// admin reaches both gateways, a rate limit and a cache entry are shared
/// by both, and with one admin killed the other serves and both gateways
/// keep updating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_on_one_postgres_and_two_gateways_on_one_redis() {
    let (Ok(db), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL")) else {
        eprintln!(
            "DATABASE_URL and REDIS_URL not set (.ci/run starts Postgres and Redis); skipping the scale-out test"
        );
        return;
    };
    let dir = TempDir::new();
    let built = crate::policies::policy_dir();
    let (_hub, hub_url) = crate::admin::start_hub(&dir, &built).await;
    let db = fresh_schema(&db);
    let data_key = "ab".repeat(32);
    let a = Admin::start_replica(&dir, "admin-a", &hub_url, &db, &data_key).await;
    let b = Admin::start_replica(&dir, "admin-b", &hub_url, &db, &data_key).await;
    let mock = Mock::start().await;

    // Set up on A; the group's Redis on B.
    let mut tokens = Vec::new();
    for name in ["edge-1", "edge-2"] {
        let port = free_port();
        let reg = a
            .ok(
                "POST",
                "/api/v1/gateways",
                Some(json!({"name": name, "url": format!("http://127.0.0.1:{port}"), "group": "fleet"})),
            )
            .await;
        tokens.push((port, reg["token"].as_str().unwrap().to_owned()));
    }
    b.ok(
        "PATCH",
        "/api/v1/gateway-groups/fleet/settings",
        Some(json!({"redis_url": redis})),
    )
    .await;
    a.ok("POST", "/api/v1/providers", Some(json!({"name": "mock", "type": "openai",
        "base_url": format!("{}/v1", mock.url), "models": ["gpt-5-mini"], "credentials": {"api_key": "sk-mock"}})))
        .await;
    // A name of its own: the Redis is shared with other tests.
    let proxy = format!("shared-{}", std::process::id());
    a.ok("POST", "/api/v1/proxies", Some(json!({"name": proxy})))
        .await;
    a.ok(
        "POST",
        &format!("/api/v1/proxies/{proxy}/policies"),
        Some(json!({"name": "token-rate-limit", "version": "0.1.0",
            "settings": {"limits": [{"metric": "requests", "limit": 6, "window": "minute"}]}})),
    )
    .await;
    a.ok(
        "POST",
        &format!("/api/v1/proxies/{proxy}/policies"),
        Some(json!({"name": "cache", "version": "0.1.0", "settings": {"ttl_seconds": 60}})),
    )
    .await;
    let key = a.key(&proxy, "app").await;
    // Both admins, comma-separated: a gateway moves to B when A is gone.
    let admins = format!("{},{}", a.url, b.url);
    let (d1, d2) = (TempDir::new(), TempDir::new());
    let g1 = Managed::start(&admins, &tokens[0].1, &d1, tokens[0].0, free_port()).await;
    let g2 = Managed::start(&admins, &tokens[1].1, &d2, tokens[1].0, free_port()).await;
    // Deployed from B to one gateway and from A to the other.
    b.deploy(&proxy, "edge-1").await;
    a.deploy(&proxy, "edge-2").await;
    let (u1, u2) = (format!("{}/{proxy}", g1.url), format!("{}/{proxy}", g2.url));
    until_status(&u1, &key, 200, Duration::from_secs(10)).await;
    until_status(&u2, &key, 200, Duration::from_secs(10)).await;
    // (until_status sent one request to each: 2 of the 6 allowed.)

    // A cache entry made through one replica is a hit on the other.
    let r = chat_with(&u1, &key, "cached across replicas").await;
    assert_eq!(r.headers()["x-cache"], "MISS");
    let r = chat_with(&u2, &key, "cached across replicas").await;
    assert_eq!(
        r.headers()["x-cache"],
        "HIT",
        "the cache is shared through Redis"
    );

    // The limit of 6 requests a minute holds across both replicas.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let url = if i % 2 == 0 { &u1 } else { &u2 };
        statuses.push(
            chat_with(url, &key, &format!("limited {i}"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        vec![200, 200, 429, 429],
        "one counter for both replicas"
    );

    // A change made on B (a new key) reaches both gateways.
    let key2 = b.key(&proxy, "second").await;
    for url in [&u1, &u2] {
        until("the new key accepted", Duration::from_secs(10), || {
            let (url, key2) = (url.clone(), key2.clone());
            async move { chat_with(&url, &key2, "new key").await.status() != 401 }
        })
        .await;
    }

    // A is killed: B serves, and both gateways follow changes made on B.
    drop(a);
    let list = b.ok("GET", "/api/v1/gateways", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let keys = b
        .ok("GET", &format!("/api/v1/proxies/{proxy}/keys"), None)
        .await;
    let id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "second")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.ok(
        "POST",
        &format!("/api/v1/proxies/{proxy}/keys/{id}/revoke"),
        None,
    )
    .await;
    until_status(&u1, &key2, 401, Duration::from_secs(15)).await;
    until_status(&u2, &key2, 401, Duration::from_secs(15)).await;
    // Both gateways report to B: Active and in sync.
    let started = std::time::Instant::now();
    loop {
        let g = b.ok("GET", "/api/v1/gateways/edge-2", None).await;
        if g["status"] == "Active" && g["in_sync"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{g}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
