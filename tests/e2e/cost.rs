//! What requests cost: every request's usage at the price of its model
//! (the shipped table, or the provider's own prices), streamed or not, in
//! `portcullis_cost_total`, the access log line and the OTLP span.

use serde_json::{Value, json};

use crate::harness::{Gateway, Mock, metrics_when, sum_of};
use crate::{KEY, client};

/// Usage of an answer (non-streamed) or of a stream's usage chunk.
fn usage_of(body: &str, stream: bool) -> (f64, f64) {
    let v: Value = if stream {
        crate::harness::sse_events(body)
            .into_iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
            .find(|v| v["usage"].is_object())
            .expect("a usage chunk")
    } else {
        serde_json::from_str(body).unwrap()
    };
    (
        v["usage"]["prompt_tokens"].as_f64().unwrap(),
        v["usage"]["completion_tokens"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn every_request_costs_its_usage_at_the_price_of_its_model() {
    let mock = Mock::start().await;
    let m = &mock.url;
    // `shipped` is priced by the shipped table (gpt-5-mini: 0.25 in, 2.00
    // out per million); `own` by its provider's prices, which win; `local`
    // (an OpenAI-compatible server) has no price at all. `own`'s key
    // belongs to an application, which labels its cost.
    let gw = Gateway::start_with_env(
        &format!(
            r#"telemetry: {{ application_label: true }}
providers:
  - {{ name: shipped, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini] }}
  - {{ name: own, type: openai, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini],
      prices: [{{ model: "gpt-5*", input: 1000000, output: 2000000 }}] }}
  - {{ name: local, type: openai-compatible, base_url: "{m}/v1", api_key: sk-mock, models: [gpt-5-mini] }}
proxies:
  - {{ name: shipped, routes: [{{ provider: shipped }}], keys: [{{ name: t, env: PC_KEY }}] }}
  - {{ name: own, routes: [{{ provider: own }}], keys: [{{ name: t, env: PC_KEY, application: team-a }}] }}
  - {{ name: local, routes: [{{ provider: local }}], keys: [{{ name: t, env: PC_KEY }}] }}
"#
        ),
        &[("PC_KEY", KEY)],
    )
    .await;
    let mut expected = std::collections::HashMap::<&str, f64>::new();
    let prices = [("shipped", 0.25, 2.0), ("own", 1_000_000.0, 2_000_000.0)];
    for (proxy, input, output) in prices {
        for stream in [false, true] {
            let body = json!({"model": "gpt-5-mini", "stream": stream,
                "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                "messages": [{"role": "user", "content": "what does this cost, roughly?"}]});
            let r = client()
                .post(format!("{}/{proxy}/chat/completions", gw.url))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let (p, c) = usage_of(&r.text().await.unwrap(), stream);
            assert!(p > 0.0 && c > 0.0);
            *expected.entry(proxy).or_default() += (p * input + c * output) / 1e6;
        }
    }
    let r = client()
        .post(format!("{}/local/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "free?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = metrics_when(&gw.ops_url, &["portcullis_requests_total{"], 5.0).await;
    for (proxy, want) in &expected {
        let got = sum_of(
            &text,
            &[
                "portcullis_cost_total{",
                &format!("proxy=\"{proxy}\""),
                "model=\"gpt-5-mini\"",
            ],
        );
        assert!(
            (got - want).abs() < 1e-9 * want.max(1.0),
            "{proxy}: {got} != {want}\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("portcullis_cost_total{") && l.contains("proxy=\"local\"")),
        "a model without a price has no cost:\n{text}"
    );
    // The application label: `own`'s key's application, `-` for a key of
    // no application.
    for (proxy, application) in [("own", "team-a"), ("shipped", "-")] {
        let got = sum_of(
            &text,
            &[
                "portcullis_cost_total{",
                &format!("proxy=\"{proxy}\""),
                &format!("application=\"{application}\""),
            ],
        );
        let want = expected[proxy];
        assert!(
            (got - want).abs() < 1e-9 * want.max(1.0),
            "{proxy}/{application}: {got} != {want}\n{text}"
        );
    }
    // The access log line says what each request cost.
    let log = strip_ansi(&gw.log());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("portcullis::access"))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    let own: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("proxy=\"own\""))
        .collect();
    assert_eq!(own.len(), 2, "{log}");
    let per_request = expected["own"] / 2.0;
    assert!(
        own.iter()
            .all(|l| l.contains(&format!("cost={per_request:.8}"))),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("proxy=\"local\"") && l.contains("cost=-")),
        "{log}"
    );
}

/// The log without its colours.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn bad_prices_are_refused_naming_the_field() {
    let dir = crate::harness::TempDir::new();
    let path = dir.0.join("gw.yaml");
    std::fs::write(
        &path,
        "providers:\n  - { name: p, type: openai, api_key: k, prices: [{ model: gpt-4o, input: 1, output: -1 }] }\nproxies: []\n",
    )
    .unwrap();
    let (code, _, err) =
        crate::harness::run_cli(&["gateway", "--config", path.to_str().unwrap(), "--validate"]);
    assert_ne!(code, 0);
    assert!(err.contains("providers[0].prices[0].output"), "{err}");
}

/// Spend reaches admin with the heartbeats: per key (by id, with its
/// name), model and day, in JSON and CSV, and survives an admin restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_per_key_reaches_admin_and_survives_its_restart() {
    use crate::admin::{Admin, setup, until_status};
    use std::time::Duration;
    let dir = crate::harness::TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Billed"})))
        .await;
    let a = admin.key("billed", "team-a").await;
    let b = admin.key("billed", "team-b").await;
    admin.deploy("billed", &gw_id).await;
    let base = format!("{}/billed", gw.url);
    until_status(&base, &a, 200, Duration::from_secs(10)).await;
    // until_status sent one request with key A: 3 more to make 4.
    let mut cost = 0.0;
    for (key, n) in [(&a, 3), (&b, 2)] {
        for i in 0..n {
            let stream = i == 0;
            let r = client()
                .post(format!("{base}/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-5-mini", "stream": stream,
                    "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
                    "messages": [{"role": "user", "content": format!("bill me {i}")}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let (p, c) = usage_of(&r.text().await.unwrap(), stream);
            // The shipped price of gpt-5-mini: 0.25 in, 2.00 out per million.
            cost += (p * 0.25 + c * 2.0) / 1e6;
        }
    }
    let started = std::time::Instant::now();
    let by_key = loop {
        let v = admin.ok("GET", "/api/v1/spend?group_by=key", None).await;
        let total: i64 = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["requests"].as_i64().unwrap())
            .sum();
        if total >= 6 {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "spend never arrived: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let row = |name: &str| {
        by_key["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key_name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {by_key}"))
    };
    assert_eq!(row("team-a")["requests"], 4, "{by_key}");
    assert_eq!(row("team-b")["requests"], 2, "{by_key}");
    assert!(
        row("team-a")["key_id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    assert_eq!(by_key["currency"], "USD");
    // The cost of the five requests whose usage we read, plus the first.
    let total_cost =
        row("team-a")["cost"].as_f64().unwrap() + row("team-b")["cost"].as_f64().unwrap();
    assert!(
        total_cost > cost && total_cost < cost * 2.0,
        "{total_cost} vs {cost}"
    );

    // CSV, grouped by proxy, model and day.
    let csv = crate::client()
        .get(format!(
            "{}/api/v1/spend?group_by=proxy,model,day&format=csv",
            admin.url
        ))
        .bearer_auth(crate::admin::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("proxy_id,model,day,requests,input_tokens,output_tokens,cost")
    );
    let line = lines.next().unwrap();
    assert!(
        line.starts_with("billed,gpt-5-mini,20") && line.contains(",6,"),
        "{csv}"
    );
    // Bad input names its field.
    let (s, v) = admin
        .call("GET", "/api/v1/spend?group_by=colour", None)
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("group_by")),
        "{v}"
    );

    // An admin restart keeps it (SQLite in the data directory).
    drop(admin);
    let admin = Admin::start(&dir).await;
    let v = admin.ok("GET", "/api/v1/spend?group_by=proxy", None).await;
    assert_eq!(v["items"][0]["requests"], 6, "{v}");
}

/// A key's scope, set in admin: a model, a client format or a resource
/// outside it is refused with a 403 naming what was refused, and the key
/// lists only the models it may call.
#[tokio::test]
async fn a_scoped_key_is_refused_outside_its_scope() {
    use crate::admin::{setup, until_status};
    use std::time::Duration;
    let dir = crate::harness::TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok(
            "PATCH",
            "/api/v1/providers/mock",
            Some(json!({"models": ["gpt-5-mini", "gpt-4o-mini"]})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Scoped", "inbound": ["openai", "anthropic"]})),
        )
        .await;
    let (s, v) = admin
        .call(
            "POST",
            "/api/v1/proxies/scoped/keys",
            Some(json!({"name": "bad", "scope": {"models": ["gpt 4"]}})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("scope.models[0]")),
        "{v}"
    );
    let created = admin
        .ok(
            "POST",
            "/api/v1/proxies/scoped/keys",
            Some(json!({"name": "mini", "scope": {"models": ["gpt-4o-mini*"], "inbound": ["openai"]}})),
        )
        .await;
    assert_eq!(created["scope"]["models"], json!(["gpt-4o-mini*"]));
    let key = created["key"].as_str().unwrap().to_owned();
    admin.deploy("scoped", &gw_id).await;
    let base = format!("{}/scoped", gw.url);
    let send = |path: &'static str, body: Value| {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let r = client()
                .post(format!("{base}{path}"))
                .bearer_auth(&key)
                .header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    // Wait for the deployment with an allowed model.
    let started = std::time::Instant::now();
    while send("/chat/completions", chat("gpt-4o-mini")).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = send("/chat/completions", chat("gpt-5-mini")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "model_not_allowed");
    assert_eq!(v["error"]["param"], "model");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o-mini*"),
        "{v}"
    );
    // The Anthropic format is open on the proxy, not to this key.
    let (s, v) = send(
        "/v1/messages",
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    // The model list is the key's.
    let models: Value = client()
        .get(format!("{base}/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["scoped:gpt-4o-mini"], "{models}");
    // An unscoped key of the same proxy may use the rest.
    let open = admin.key("scoped", "open").await;
    until_status(&base, &open, 200, Duration::from_secs(10)).await;
}

/// Applications subscribe to proxies under plans: an application's key
/// works on the proxies it is actively subscribed to (with the plan's
/// models), and only there; a plan may need the proxy owner's approval;
/// suspending a subscription stops the key there.
#[tokio::test]
async fn an_applications_key_works_where_it_is_subscribed_and_only_there() {
    use crate::admin::{setup, until_status};
    use std::time::Duration;
    let dir = crate::harness::TempDir::new();
    let (admin, _mock, gw, _token, gw_id) = setup(&dir).await;
    admin
        .ok(
            "PATCH",
            "/api/v1/providers/mock",
            Some(json!({"models": ["gpt-5-mini", "gpt-4o-mini"]})),
        )
        .await;
    for name in ["Alpha", "Beta"] {
        admin
            .ok("POST", "/api/v1/proxies", Some(json!({"name": name})))
            .await;
        admin.deploy(&name.to_lowercase(), &gw_id).await;
    }
    let (s, v) = admin
        .call(
            "POST",
            "/api/v1/proxies/alpha/plans",
            Some(json!({"name": "basic", "models": ["gpt 4"]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("models[0]")),
        "{v}"
    );
    let basic = admin
        .ok(
            "POST",
            "/api/v1/proxies/alpha/plans",
            Some(json!({"name": "basic", "models": ["gpt-4o-mini*"]})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies/beta/plans",
            Some(json!({"name": "gold", "needs_approval": true})),
        )
        .await;

    // A developer's application.
    let dev = admin
        .ok(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "mobile-team", "role": "developer"})),
        )
        .await;
    let dev = dev["token"].as_str().unwrap().to_owned();
    let as_dev = |method: &'static str, path: String, body: Option<Value>| {
        let (url, dev) = (admin.url.clone(), dev.clone());
        async move {
            let mut r = client()
                .request(method.parse().unwrap(), format!("{url}{path}"))
                .bearer_auth(dev);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, app) = as_dev(
        "POST",
        "/api/v1/applications".into(),
        Some(json!({"name": "Mobile", "description": "the iOS app"})),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let (s, key) = as_dev(
        "POST",
        "/api/v1/applications/mobile/keys".into(),
        Some(json!({"name": "ios"})),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    let (s, sub) = as_dev(
        "POST",
        "/api/v1/applications/mobile/subscriptions".into(),
        Some(json!({"proxy": "alpha", "plan": "basic"})),
    )
    .await;
    assert_eq!((s, sub["status"].as_str()), (201, Some("active")), "{sub}");
    assert_eq!(sub["plan_id"], basic["id"]);

    let alpha = format!("{}/alpha", gw.url);
    let beta = format!("{}/beta", gw.url);
    let call = |base: String, model: &'static str| {
        let key = key.clone();
        async move {
            client()
                .post(format!("{base}/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let started = std::time::Instant::now();
    while call(alpha.clone(), "gpt-4o-mini").await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the key never worked on alpha"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        call(alpha.clone(), "gpt-5-mini").await,
        403,
        "outside the plan's models"
    );
    assert_eq!(
        call(beta.clone(), "gpt-5-mini").await,
        401,
        "not subscribed to beta"
    );

    // A plan that needs approval: pending until the proxy's owner approves.
    let (s, gold) = as_dev(
        "POST",
        "/api/v1/applications/mobile/subscriptions".into(),
        Some(json!({"proxy": "beta", "plan": "gold"})),
    )
    .await;
    assert_eq!(
        (s, gold["status"].as_str()),
        (201, Some("pending")),
        "{gold}"
    );
    let gold_id = gold["id"].as_str().unwrap().to_owned();
    let (s, _) = as_dev(
        "POST",
        format!("/api/v1/subscriptions/{gold_id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 403, "the application's owner cannot approve itself");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(beta.clone(), "gpt-5-mini").await,
        401,
        "pending: not yet"
    );
    admin
        .ok(
            "POST",
            &format!("/api/v1/subscriptions/{gold_id}/approve"),
            None,
        )
        .await;
    let started = std::time::Instant::now();
    while call(beta.clone(), "gpt-5-mini").await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "approved, never worked on beta"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Suspended on alpha: the key stops there, and works on beta still.
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    admin
        .ok(
            "POST",
            &format!("/api/v1/subscriptions/{sub_id}/suspend"),
            None,
        )
        .await;
    let started = std::time::Instant::now();
    while call(alpha.clone(), "gpt-4o-mini").await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still works after suspension"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(beta.clone(), "gpt-5-mini").await, 200);

    // A plan with open subscriptions cannot go; once closed it can.
    let plan_id = basic["id"].as_str().unwrap().to_owned();
    let (s, _) = admin
        .call(
            "DELETE",
            &format!("/api/v1/proxies/alpha/plans/{plan_id}"),
            None,
        )
        .await;
    assert_eq!(s, 409);
    let (s, closed) = as_dev(
        "POST",
        format!("/api/v1/subscriptions/{sub_id}/close"),
        None,
    )
    .await;
    assert_eq!(
        (s, closed["status"].as_str()),
        (200, Some("closed")),
        "{closed}"
    );
    let (s, _) = admin
        .call(
            "DELETE",
            &format!("/api/v1/proxies/alpha/plans/{plan_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    // The application's key is listed with its last use.
    until_status(&beta, &key, 200, Duration::from_secs(5)).await;
    let (s, v) = as_dev("GET", "/api/v1/applications/mobile".into(), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["subscriptions"].as_array().unwrap().len(), 2, "{v}");
}

/// A gateway (file mode) with the budget policy: `own` prices make each
/// request's cost its token count, so the budget trips on a known request.
fn budget_config(dir: &crate::harness::TempDir, mock: &Mock, extra_engine: &str) -> String {
    format!(
        r#"policy_engine: {{ dirs: ["{}"]{extra_engine} }}
providers:
  - {{ name: own, type: openai, base_url: "{}/v1", api_key: sk-mock, models: [gpt-5-mini],
      prices: [{{ model: "gpt-5*", input: 1000000, output: 1000000 }}] }}
proxies:
  - {{ name: metered, routes: [{{ provider: own }}], keys: [{{ name: t, env: PC_KEY }}],
      policies: [{{ name: budget, settings: {{ budgets: [{{ amount: 40, period: 3s }}] }} }}] }}
"#,
        dir.0.display(),
        mock.url
    )
}

async fn metered(url: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/metered/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-5-mini", "stream": stream,
            "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
            "messages": [{"role": "user", "content": "what does this cost, roughly?"}]}))
        .send()
        .await
        .unwrap()
}

/// A budget trips with 429 once its requests' real cost (streams included)
/// has spent it, says so in `x-budget-*` headers, and resets with its
/// period.
#[tokio::test]
async fn a_budget_trips_on_the_real_cost_and_resets_with_its_period() {
    let dir = crate::policies::policy_dir();
    let mock = Mock::start().await;
    let gw = Gateway::start_with_env(&budget_config(&dir, &mock, ""), &[("PC_KEY", KEY)]).await;
    // Align to the start of a 3 s period, so the run stays inside one.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(3_000 - ms % 3_000 + 50)).await;
    // Each request costs 16 (5 prompt + 11 completion tokens at 1 each).
    let r = metered(&gw.url, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-budget-limit"], "40.000000");
    assert_eq!(r.headers()["x-budget-remaining"], "40.000000");
    let r = metered(&gw.url, true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-budget-remaining"],
        "24.000000",
        "the first cost 16"
    );
    r.text().await.unwrap();
    let r = metered(&gw.url, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-budget-remaining"],
        "8.000000",
        "the stream cost 16 too"
    );
    let r = metered(&gw.url, false).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-budget-remaining"], "0.000000");
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    // The next period.
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    assert_eq!(metered(&gw.url, false).await.status(), 200);
}

/// Two gateways on one Redis enforce one budget.
#[tokio::test]
async fn two_gateways_on_one_redis_enforce_one_budget() {
    let Ok(redis) = std::env::var("REDIS_URL") else {
        eprintln!("REDIS_URL not set (.ci/run starts a Redis); skipping the shared budget test");
        return;
    };
    let dir = crate::policies::policy_dir();
    let mock = Mock::start().await;
    // A period of its own: other runs of this test share the Redis.
    let config = budget_config(&dir, &mock, &format!(", redis_url: \"{redis}\""))
        .replace("period: 3s", "period: 7s");
    let a = Gateway::start_with_env(&config, &[("PC_KEY", KEY)]).await;
    let b = Gateway::start_with_env(&config, &[("PC_KEY", KEY)]).await;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(7_000 - ms % 7_000 + 50)).await;
    let mut statuses = Vec::new();
    for (i, url) in [&a.url, &b.url, &a.url, &b.url].into_iter().enumerate() {
        statuses.push(metered(url, i == 1).await.status().as_u16());
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 429],
        "one budget across both gateways"
    );
}

/// A budget per application, attached through admin: the keys of one
/// application share it (the gateway hands the policy the key's
/// application), a proxy's own key has its own.
#[tokio::test]
async fn an_application_budget_is_shared_by_its_keys() {
    use std::time::Duration;
    let dir = crate::harness::TempDir::new();
    let (_hub, admin, _mock, gw, token, gw_id) = admin_with_hub_at_a_token_a_dollar(&dir).await;
    admin
        .ok("POST", "/api/v1/proxies", Some(json!({"name": "Shared"})))
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies/shared/policies",
            Some(json!({"name": "budget", "version": "0.1.0",
                "settings": {"budgets": [{"amount": 40, "period": "day"}], "per": "application"}})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies/shared/plans",
            Some(json!({"name": "open"})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/applications",
            Some(json!({"name": "Team"})),
        )
        .await;
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let k = admin
            .ok(
                "POST",
                "/api/v1/applications/team/keys",
                Some(json!({"name": name})),
            )
            .await;
        keys.push(k["key"].as_str().unwrap().to_owned());
    }
    admin
        .ok(
            "POST",
            "/api/v1/applications/team/subscriptions",
            Some(json!({"proxy": "shared", "plan": "open"})),
        )
        .await;
    let own = admin.key("shared", "own").await;
    admin.deploy("shared", &gw_id).await;
    let base = format!("{}/shared", gw.url);
    let call = |key: String| {
        let base = base.clone();
        async move {
            client()
                .post(format!("{base}/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "what does this cost, roughly?"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let started = std::time::Instant::now();
    while call(own.clone()).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never deployed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 16 + 16 + 16 against one budget of 40: the third passes (32 < 40),
    // then both keys are refused.
    let statuses = [
        call(keys[0].clone()).await,
        call(keys[1].clone()).await,
        call(keys[0].clone()).await,
        call(keys[1].clone()).await,
        call(keys[0].clone()).await,
    ];
    let mc: Value = client()
        .get(format!("{}/api/v1/gateway/config", admin.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "one budget for the application's keys: {}",
        mc["config"]
    );
    // The proxy's own key spent 16 of its own 40.
    assert_eq!(call(own.clone()).await, 200);
}

/// A plan's quota and budget apply to its subscribers only, each
/// subscription counting for itself; bad quotas are refused naming the
/// field; a changed plan reaches the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_plans_quota_and_budget_bind_its_subscribers_only() {
    use std::time::Duration;
    let dir = crate::harness::TempDir::new();
    let (_hub, admin, _mock, gw, _token, gw_id) = admin_with_hub_at_a_token_a_dollar(&dir).await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "Tiered", "inbound": ["openai", "anthropic"]})),
        )
        .await;
    for (body, field) in [
        (
            json!({"name": "bad", "limits": [{"metric": "requests", "limit": -1, "window": "minute"}]}),
            "limits[0].limit",
        ),
        (
            json!({"name": "bad", "limits": [{"metric": "requests", "limit": 5, "window": "fortnight"}]}),
            "limits[0].window",
        ),
        (
            json!({"name": "bad", "budgets": [{"amount": -5, "period": "day"}]}),
            "budgets[0].amount",
        ),
        (
            json!({"name": "bad", "budgets": [{"amount": "ten", "period": "day"}]}),
            "budgets[0].amount",
        ),
    ] {
        let (s, v) = admin
            .call("POST", "/api/v1/proxies/tiered/plans", Some(body.clone()))
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{field}: "))),
            "{v}"
        );
    }
    let free = admin
        .ok(
            "POST",
            "/api/v1/proxies/tiered/plans",
            Some(json!({"name": "free",
                "limits": [{"metric": "requests", "limit": 2, "window": "hour"}]})),
        )
        .await;
    assert_eq!(free["limits"][0]["limit"], 2, "{free}");
    admin
        .ok(
            "POST",
            "/api/v1/proxies/tiered/plans",
            Some(json!({"name": "metered", "budgets": [{"amount": 40, "period": "day"}]})),
        )
        .await;
    admin
        .ok(
            "POST",
            "/api/v1/proxies/tiered/plans",
            Some(json!({"name": "unlimited", "inbound": ["openai"], "resources": ["chat/completions"]})),
        )
        .await;
    let (s, v) = admin
        .call(
            "POST",
            "/api/v1/proxies/tiered/plans",
            Some(json!({"name": "bad", "resources": ["audio/speech"]})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let mut keys = std::collections::HashMap::new();
    for (app, plan) in [
        ("free-one", "free"),
        ("free-two", "free"),
        ("metered", "metered"),
        ("unlimited", "unlimited"),
    ] {
        admin
            .ok("POST", "/api/v1/applications", Some(json!({"name": app})))
            .await;
        let k = admin
            .ok(
                "POST",
                &format!("/api/v1/applications/{app}/keys"),
                Some(json!({"name": "k"})),
            )
            .await;
        keys.insert(app, k["key"].as_str().unwrap().to_owned());
        admin
            .ok(
                "POST",
                &format!("/api/v1/applications/{app}/subscriptions"),
                Some(json!({"proxy": "tiered", "plan": plan})),
            )
            .await;
    }
    let own = admin.key("tiered", "own").await;
    admin.deploy("tiered", &gw_id).await;
    let base = format!("{}/tiered", gw.url);
    let call = |key: String| {
        let base = base.clone();
        async move {
            client()
                .post(format!("{base}/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "what does this cost, roughly?"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let started = std::time::Instant::now();
    while call(own.clone()).await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never deployed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = |key: &str| {
        let key = key.to_owned();
        let call = &call;
        async move { call(key).await.status().as_u16() }
    };
    // The free plan: two requests an hour for each subscription.
    let one = [
        status(&keys["free-one"]).await,
        status(&keys["free-one"]).await,
        status(&keys["free-one"]).await,
    ];
    assert_eq!(one, [200, 200, 429], "free-one's quota");
    let r = call(keys["free-one"].clone()).await;
    assert_eq!(
        r.headers()["x-ratelimit-limit-requests"].to_str().unwrap(),
        "2"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(status(&keys["free-two"]).await, 200, "its own quota");
    // The metered plan: 40 a day; the third request passes at 32 spent,
    // the fourth is refused at 48.
    let metered = [
        status(&keys["metered"]).await,
        status(&keys["metered"]).await,
        status(&keys["metered"]).await,
        status(&keys["metered"]).await,
    ];
    assert_eq!(metered, [200, 200, 200, 429], "metered's budget");
    // Neither limit binds the other plans, nor the proxy's own key.
    for _ in 0..4 {
        assert_eq!(status(&keys["unlimited"]).await, 200);
        assert_eq!(status(&own).await, 200);
    }
    let r = call(keys["unlimited"].clone()).await;
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
    assert!(r.headers().get("x-budget-limit").is_none());
    // The unlimited plan's scope: OpenAI chat only.
    let r = client()
        .get(format!("{base}/models"))
        .bearer_auth(&keys["unlimited"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "models are outside the plan's resources");
    let anthropic = |key: &str| {
        client()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "gpt-5-mini", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let r = anthropic(&keys["unlimited"]).await.unwrap();
    assert_eq!(r.status(), 403, "Anthropic's format is outside the plan's");
    let r = anthropic(&keys["free-two"]).await.unwrap();
    assert_eq!(r.status(), 200, "the free plan allows every format");

    // Raising the free plan's quota reaches the gateway.
    let id = free["id"].as_str().unwrap();
    let (s, v) = admin
        .call(
            "PATCH",
            &format!("/api/v1/proxies/tiered/plans/{id}"),
            Some(json!({"limits": [{"metric": "requests", "limit": -3, "window": "hour"}]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("limits[0].limit")),
        "{v}"
    );
    admin
        .ok(
            "PATCH",
            &format!("/api/v1/proxies/tiered/plans/{id}"),
            Some(json!({"limits": [{"metric": "requests", "limit": 5, "window": "hour"}]})),
        )
        .await;
    let started = std::time::Instant::now();
    loop {
        let r = call(keys["free-one"].clone()).await;
        if r.headers()
            .get("x-ratelimit-limit-requests")
            .is_some_and(|v| v == "5")
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new quota never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Spend per application: what the gateway reported with its
    // heartbeats (requests refused by a policy called no provider and
    // cost nothing).
    let started = std::time::Instant::now();
    loop {
        let v = admin
            .ok("GET", "/api/v1/spend?group_by=application", None)
            .await;
        let of = |name: &str| {
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["application_name"] == name)
                .map(|i| (i["requests"].as_i64().unwrap(), i["cost"].as_f64().unwrap()))
        };
        let own = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["application_id"].is_null())
            .map(|i| i["requests"].as_i64().unwrap());
        if of("metered") == Some((3, 48.0))
            && of("unlimited") == Some((5, 80.0))
            && own.is_some_and(|n| n >= 5)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "spend per application: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, v) = admin
        .call("GET", "/api/v1/spend?group_by=applications", None)
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("group_by")),
        "{v}"
    );
}

/// Admin with the built-in policies in its hub and a managed gateway, the
/// mock provider priced at one dollar a token, so that each request of
/// these tests (16 tokens) costs 16.
async fn admin_with_hub_at_a_token_a_dollar(
    dir: &crate::harness::TempDir,
) -> (
    crate::harness::Proc,
    crate::admin::Admin,
    crate::harness::Mock,
    crate::admin::Managed,
    String,
    String,
) {
    use crate::admin::{Admin, setup_with, start_hub};
    let built = crate::policies::policy_dir();
    let (hub, hub_url) = start_hub(dir, &built).await;
    let admin = Admin::start_with_hub(dir, Some(&hub_url)).await;
    let (admin, mock, gw, token, gw_id) = setup_with(admin, dir).await;
    admin
        .ok(
            "PATCH",
            "/api/v1/providers/mock",
            Some(json!({"prices": [{"model": "gpt-5*", "input": 1000000, "output": 1000000}]})),
        )
        .await;
    (hub, admin, mock, gw, token, gw_id)
}
