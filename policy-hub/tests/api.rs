//! Service tests of the hub's REST API through the router: every endpoint
//! and every rejection, on SQLite and (with `DATABASE_URL`) on Postgres.

mod support;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::*;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn publish_then_read_every_view() {
    let module = component("minimal");
    for url in database_urls().await {
        let hub = open(&url).await;
        let r = publish(
            &hub,
            TOKEN,
            &publish_body(manifest("deny-words", "1.0.0"), &module),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {}", r.json());
        assert_eq!(
            r.headers["location"],
            "/api/v1/policies/deny-words/versions/1.0.0"
        );
        let v = r.json();
        let digest = format!("sha256:{}", sha(&module));
        assert_eq!(v["digest"], digest);
        assert_eq!(v["sha256"], sha(&module));
        assert_eq!(v["size"], module.len());
        assert_eq!(v["publisher"], "acme");
        assert_eq!(v["yanked"], false);

        // The manifest the admin service reads, schema included.
        let r = get(&hub, "/api/v1/policies/deny-words/versions/1.0.0").await;
        assert_eq!(r.status, StatusCode::OK);
        let m = r.json();
        assert_eq!(
            m["settings_schema"]["properties"]["limit"]["type"],
            "integer"
        );
        assert_eq!(m["defaults"], json!({"limit": 10}));
        assert_eq!(m["docs"], "# Docs\nUse it.");
        assert_eq!(m["category"], "guardrail");
        assert_eq!(m["phases"], json!(["request"]));
        assert!(m["published_at"].as_str().unwrap().ends_with('Z'));
        // The shared type reads it back.
        assert!(m.get("complete_reads").is_none(), "whole, the default: {m}");
        let typed: portcullis_types::policy::PolicyVersion = serde_json::from_value(m).unwrap();
        assert_eq!(typed.manifest.name, "deny-words");

        let r = get(&hub, "/api/v1/policies/deny-words").await;
        assert_eq!(r.status, StatusCode::OK);
        let p = r.json();
        assert_eq!(p["latest_version"], "1.0.0");
        assert_eq!(p["latest"]["settings_schema"]["type"], "object");
        assert_eq!(p["versions"].as_array().unwrap().len(), 1);

        let r = get(&hub, "/api/v1/policies").await;
        assert_eq!(r.status, StatusCode::OK);
        let l = r.json();
        assert_eq!(l["total"], 1);
        assert_eq!(l["items"][0]["name"], "deny-words");
        assert_eq!(l["items"][0]["version"], "1.0.0");

        // Downloads: by digest and by version, with the digest in headers.
        for uri in [
            format!("/api/v1/modules/{digest}"),
            "/api/v1/policies/deny-words/versions/1.0.0/module".into(),
        ] {
            let r = get(&hub, &uri).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}");
            assert_eq!(r.body, module, "{uri}");
            assert_eq!(r.headers["content-type"], "application/wasm");
            assert_eq!(r.headers["etag"], format!("\"{digest}\"").as_str());
            assert_eq!(r.headers["x-portcullis-digest"], digest.as_str());
            assert!(
                r.headers["repr-digest"]
                    .to_str()
                    .unwrap()
                    .starts_with("sha-256=:")
            );
            let etag = format!("\"{digest}\"");
            let r = call_with(
                &hub,
                Method::GET,
                &uri,
                None,
                None,
                &[("if-none-match", &etag)],
            )
            .await;
            assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{uri}");
            assert!(r.body.is_empty());
        }

        // What the complete phase reads is kept as published.
        let mut usage = manifest("deny-words", "1.0.1");
        usage["phases"] = json!(["request", "complete"]);
        usage["complete_reads"] = json!("usage");
        let r = publish(&hub, TOKEN, &publish_body(usage, &module)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {}", r.json());
        let r = get(&hub, "/api/v1/policies/deny-words/versions/1.0.1").await;
        assert_eq!(r.json()["complete_reads"], "usage");
        // So is what the request phase reads (sorted, once each); a
        // version that did not say reads everything (no field).
        assert!(r.json().get("request_reads").is_none(), "{}", r.json());
        let mut narrow = manifest("deny-words", "1.0.2");
        narrow["request_reads"] = json!(["raw", "messages", "raw"]);
        let r = publish(&hub, TOKEN, &publish_body(narrow, &module)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{url}: {}", r.json());
        let r = get(&hub, "/api/v1/policies/deny-words/versions/1.0.2").await;
        assert_eq!(r.json()["request_reads"], json!(["messages", "raw"]));
        let mut bad = manifest("deny-words", "1.0.3");
        bad["request_reads"] = json!(["body"]);
        let r = publish(&hub, TOKEN, &publish_body(bad, &module)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.json());
    }
}

#[tokio::test]
async fn the_full_world_with_all_capabilities_declared_is_accepted() {
    let module = component("policy-world");
    let mut m = manifest("everything", "0.1.0");
    m["capabilities"] = json!([
        "counters",
        "cache",
        "clock",
        "log",
        "metrics",
        "embeddings",
        "metering",
        "caller"
    ]);
    for url in database_urls().await {
        let hub = open(&url).await;
        let r = publish(&hub, TOKEN, &publish_body(m.clone(), &module)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
        assert_eq!(r.json()["capabilities"].as_array().unwrap().len(), 8);
    }
}

#[tokio::test]
async fn publish_rejections_name_the_field() {
    let minimal = component("minimal");
    let counters = component("uses-counters");
    let foreign = component("foreign-import");
    let no_export = component("no-policy-export");
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    for url in database_urls().await {
        let hub = open(&url).await;
        let ok = publish_body(manifest("p", "1.0.0"), &minimal);

        // Authentication.
        let r = call(
            &hub,
            Method::POST,
            "/api/v1/policies",
            None,
            Some(Body::from(ok.to_string())),
        )
        .await;
        r.assert_problem(401, "unauthorized", None);
        let r = publish(&hub, "not-a-token-at-all", &ok).await;
        r.assert_problem(401, "unauthorized", None);

        // Malformed bodies and manifests.
        let r = call(
            &hub,
            Method::POST,
            "/api/v1/policies",
            Some(TOKEN),
            Some(Body::from("{nope")),
        )
        .await;
        r.assert_problem(400, "invalid_body", Some("body"));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut b = ok.clone();
            f(&mut b);
            b
        };
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                with(&|b| b["manifest"]["category"] = json!("security")),
                "invalid_manifest",
                "manifest.category",
            ),
            (
                with(&|b| b["manifest"]["colour"] = json!("red")),
                "invalid_manifest",
                "manifest.colour",
            ),
            (
                with(&|b| b["manifest"]["phases"] = json!(["before"])),
                "invalid_manifest",
                "manifest.phases[0]",
            ),
            (
                with(&|b| b["manifest"]["capabilities"] = json!(["network"])),
                "invalid_manifest",
                "manifest.capabilities[0]",
            ),
            (
                with(&|b| b["manifest"]["name"] = json!("Bad Name")),
                "invalid_manifest",
                "manifest.name",
            ),
            (
                with(&|b| b["manifest"]["version"] = json!("1.0")),
                "invalid_manifest",
                "manifest.version",
            ),
            (
                with(&|b| b["manifest"]["version"] = json!("1.0.0+build")),
                "invalid_manifest",
                "manifest.version",
            ),
            (
                with(&|b| b["manifest"]["phases"] = json!([])),
                "invalid_manifest",
                "manifest.phases",
            ),
            (
                with(&|b| b["manifest"]["complete_reads"] = json!("some")),
                "invalid_manifest",
                "manifest.complete_reads",
            ),
            (
                with(&|b| {
                    b["manifest"]["phases"] = json!(["response", "complete"]);
                    b["manifest"]["complete_reads"] = json!("usage");
                }),
                "invalid_manifest",
                "manifest.complete_reads",
            ),
            (
                with(&|b| b["manifest"]["settings_schema"] = json!({"type": "integr"})),
                "invalid_schema",
                "manifest.settings_schema/type",
            ),
            (
                with(&|b| {
                    b["manifest"]["settings_schema"] =
                        json!({"type": "string", "pattern": "(unclosed"})
                }),
                "invalid_schema",
                "manifest.settings_schema/pattern",
            ),
            (
                with(&|b| b["manifest"]["settings_schema"] = json!("object")),
                "invalid_schema",
                "manifest.settings_schema",
            ),
            (
                with(&|b| b["manifest"]["defaults"] = json!({"limit": 0})),
                "invalid_defaults",
                "manifest.defaults/limit",
            ),
            (
                with(&|b| b["manifest"]["defaults"] = json!({"limt": 3})),
                "invalid_defaults",
                "manifest.defaults",
            ),
            (
                with(&|b| b["manifest"]["sha256"] = json!(sha(b"something else"))),
                "digest_mismatch",
                "manifest.sha256",
            ),
            (
                with(&|b| b["module"] = json!("***")),
                "invalid_module",
                "module",
            ),
            (
                publish_body(manifest("p", "1.0.0"), &core_module),
                "invalid_module",
                "module",
            ),
            (
                publish_body(manifest("p", "1.0.0"), b"not wasm"),
                "invalid_module",
                "module",
            ),
            (
                publish_body(manifest("p", "1.0.0"), &foreign),
                "invalid_module",
                "module",
            ),
            (
                publish_body(manifest("p", "1.0.0"), &no_export),
                "invalid_module",
                "module",
            ),
            (
                publish_body(manifest("p", "1.0.0"), &counters),
                "undeclared_capability",
                "manifest.capabilities",
            ),
        ];
        for (body, code, field) in cases {
            let r = publish(&hub, TOKEN, &body).await;
            let problem = r.json();
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:.200}: {problem}");
            assert_eq!(problem["error"]["code"], code, "{problem}");
            assert_eq!(problem["error"]["field"], field, "{problem}");
        }
        // The module rejections fail for the reason they should.
        for (module, says) in [
            (&core_module, "not a valid WebAssembly component"),
            (
                &foreign,
                "`test:fixture/net`, which is not part of the portcullis:policy@0.1 world",
            ),
            (&no_export, "exports do not match the policy world"),
            (&counters, "counters"),
        ] {
            let r = publish(&hub, TOKEN, &publish_body(manifest("p", "1.0.0"), module)).await;
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(says), "{message}");
        }
        // Nothing half-published: every rejection left the hub empty.
        assert_eq!(get(&hub, "/api/v1/policies").await.json()["total"], 0);
        get(&hub, "/api/v1/policies/p")
            .await
            .assert_problem(404, "not_found", Some("name"));

        // The capability declared: accepted.
        let mut m = manifest("p", "1.0.0");
        m["capabilities"] = json!(["clock", "counters"]);
        let r = publish(&hub, TOKEN, &publish_body(m, &counters)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());

        // An existing version, even with another module: 409.
        let r = publish(&hub, TOKEN, &ok).await;
        r.assert_problem(409, "version_exists", Some("manifest.version"));
        // Another publisher's policy name: 403; admin may.
        let r = publish(
            &hub,
            OTHER_TOKEN,
            &publish_body(manifest("p", "1.1.0"), &minimal),
        )
        .await;
        r.assert_problem(403, "forbidden", None);
        let r = publish(
            &hub,
            ADMIN_TOKEN,
            &publish_body(manifest("p", "1.1.0"), &minimal),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.json()["publisher"], "admin");
    }
}

#[tokio::test]
async fn modules_over_the_size_limit_are_413() {
    let module = component("minimal");
    for url in database_urls().await {
        let mut config = config(&url);
        config.max_module_bytes = module.len() - 1;
        let hub = portcullis_hub::Hub::open(config).await.unwrap();
        let r = publish(
            &hub,
            TOKEN,
            &publish_body(manifest("big", "1.0.0"), &module),
        )
        .await;
        r.assert_problem(413, "too_large", Some("module"));
        // A body far over the limit is refused while reading, as JSON too.
        let huge = publish_body(
            manifest("big", "1.0.0"),
            &vec![0u8; module.len() + 2 * 1024 * 1024],
        );
        let r = publish(&hub, TOKEN, &huge).await;
        r.assert_problem(413, "too_large", Some("module"));
        assert_eq!(get(&hub, "/api/v1/policies").await.json()["total"], 0);
    }
}

/// Publishes `name@version` with a category, capabilities and description.
async fn publish_one(
    hub: &std::sync::Arc<portcullis_hub::Hub>,
    name: &str,
    version: &str,
    category: &str,
    module: &[u8],
    capabilities: Value,
    description: &str,
) {
    let mut m = manifest(name, version);
    m["category"] = json!(category);
    m["capabilities"] = capabilities;
    m["description"] = json!(description);
    let r = publish(hub, TOKEN, &publish_body(m, module)).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{name}@{version}: {}",
        r.json()
    );
}

fn names(r: &Reply) -> Vec<String> {
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn listing_filters_searches_and_paginates() {
    let minimal = component("minimal");
    let counters = component("uses-counters");
    for url in database_urls().await {
        let hub = open(&url).await;
        publish_one(
            &hub,
            "rate-limit",
            "1.0.0",
            "traffic",
            &counters,
            json!(["counters", "clock"]),
            "Token budgets",
        )
        .await;
        publish_one(
            &hub,
            "rate-limit",
            "1.2.0",
            "traffic",
            &counters,
            json!(["counters", "clock"]),
            "Token budgets v2",
        )
        .await;
        publish_one(
            &hub,
            "rate-limit",
            "2.0.0-rc.1",
            "traffic",
            &counters,
            json!(["counters", "clock"]),
            "Next",
        )
        .await;
        publish_one(
            &hub,
            "pii-mask",
            "0.3.0",
            "guardrail",
            &minimal,
            json!([]),
            "Masks 100% of emails",
        )
        .await;
        publish_one(
            &hub,
            "shouter",
            "1.0.0",
            "transform",
            &minimal,
            json!([]),
            "Upper-cases prompts",
        )
        .await;

        let r = get(&hub, "/api/v1/policies").await;
        assert_eq!(names(&r), ["pii-mask", "rate-limit", "shouter"]);
        // The latest stable version represents a policy, not the pre-release.
        let items = r.json()["items"].clone();
        assert_eq!(items[1]["version"], "1.2.0");
        assert_eq!(items[1]["description"], "Token budgets v2");

        assert_eq!(
            names(&get(&hub, "/api/v1/policies?category=traffic").await),
            ["rate-limit"]
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?capability=counters").await),
            ["rate-limit"]
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?capability=embeddings").await),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?q=UPPER").await),
            ["shouter"]
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?q=mask").await),
            ["pii-mask"]
        );
        // LIKE wildcards in the text are literal.
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?q=100%25").await),
            ["pii-mask"]
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?q=%25").await),
            ["pii-mask"]
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?q=_").await),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?category=guardrail&q=emails").await),
            ["pii-mask"]
        );

        let r = get(&hub, "/api/v1/policies?per_page=2&page=2").await;
        assert_eq!(names(&r), ["shouter"]);
        let page = r.json();
        assert_eq!(
            (
                page["total"].as_u64(),
                page["page"].as_u64(),
                page["per_page"].as_u64()
            ),
            (Some(3), Some(2), Some(2))
        );
        assert_eq!(
            names(&get(&hub, "/api/v1/policies?per_page=2&page=3").await),
            Vec::<String>::new()
        );

        get(&hub, "/api/v1/policies?category=security")
            .await
            .assert_problem(400, "invalid_query", Some("category"));
        get(&hub, "/api/v1/policies?capability=net")
            .await
            .assert_problem(400, "invalid_query", Some("capability"));
        get(&hub, "/api/v1/policies?per_page=0")
            .await
            .assert_problem(400, "invalid_query", Some("per_page"));
        get(&hub, "/api/v1/policies?per_page=101")
            .await
            .assert_problem(400, "invalid_query", Some("per_page"));
        get(&hub, "/api/v1/policies?page=x").await.assert_problem(
            400,
            "invalid_query",
            Some("page"),
        );
        get(&hub, "/api/v1/policies?page=18446744073709551615")
            .await
            .assert_problem(400, "invalid_query", Some("page"));

        // Versions of one policy, newest first, pre-release included.
        let p = get(&hub, "/api/v1/policies/rate-limit").await.json();
        let versions: Vec<&str> = p["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["2.0.0-rc.1", "1.2.0", "1.0.0"]);
        assert_eq!(p["latest_version"], "1.2.0");
    }
}

#[tokio::test]
async fn yanked_versions_leave_listings_but_stay_served() {
    let module = component("minimal");
    for url in database_urls().await {
        let hub = open(&url).await;
        for v in ["1.0.0", "1.1.0"] {
            let r = publish(&hub, TOKEN, &publish_body(manifest("guard", v), &module)).await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        let yank = "/api/v1/policies/guard/versions/1.1.0/yank";

        call(&hub, Method::POST, yank, None, None)
            .await
            .assert_problem(401, "unauthorized", None);
        call(&hub, Method::POST, yank, Some(OTHER_TOKEN), None)
            .await
            .assert_problem(403, "forbidden", None);
        call(
            &hub,
            Method::POST,
            "/api/v1/policies/guard/versions/9.9.9/yank",
            Some(TOKEN),
            None,
        )
        .await
        .assert_problem(404, "not_found", Some("version"));
        call(
            &hub,
            Method::POST,
            "/api/v1/policies/nope/versions/1.0.0/yank",
            Some(TOKEN),
            None,
        )
        .await
        .assert_problem(404, "not_found", Some("name"));

        let r = call(&hub, Method::POST, yank, Some(TOKEN), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.json(),
            json!({"name": "guard", "version": "1.1.0", "yanked": true})
        );
        // The listing falls back to the previous version.
        let l = get(&hub, "/api/v1/policies").await.json();
        assert_eq!(l["items"][0]["version"], "1.0.0");
        // A pinned gateway still gets the yanked version and its module.
        let v = get(&hub, "/api/v1/policies/guard/versions/1.1.0").await;
        assert_eq!(v.status, StatusCode::OK);
        assert_eq!(v.json()["yanked"], true);
        let m = get(&hub, "/api/v1/policies/guard/versions/1.1.0/module").await;
        assert_eq!((m.status, m.body.len()), (StatusCode::OK, module.len()));
        let p = get(&hub, "/api/v1/policies/guard").await.json();
        assert_eq!(p["versions"][0]["yanked"], true);

        // Every version yanked (admin may yank anyone's): gone from listings.
        let r = call(
            &hub,
            Method::POST,
            "/api/v1/policies/guard/versions/1.0.0/yank",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(get(&hub, "/api/v1/policies").await.json()["total"], 0);
        assert_eq!(
            get(&hub, "/api/v1/policies/guard").await.json()["latest_version"],
            Value::Null
        );

        // Unyank restores it.
        let r = call(&hub, Method::DELETE, yank, Some(TOKEN), None).await;
        assert_eq!(r.json()["yanked"], false);
        assert_eq!(
            get(&hub, "/api/v1/policies").await.json()["items"][0]["version"],
            "1.1.0"
        );
    }
}

#[tokio::test]
async fn unknown_things_are_404_and_bad_digests_400() {
    for url in database_urls().await {
        let hub = open(&url).await;
        get(&hub, "/api/v1/policies/ghost")
            .await
            .assert_problem(404, "not_found", Some("name"));
        get(&hub, "/api/v1/policies/ghost/versions/1.0.0")
            .await
            .assert_problem(404, "not_found", Some("name"));
        get(&hub, "/api/v1/policies/ghost/versions/1.0.0/module")
            .await
            .assert_problem(404, "not_found", Some("name"));
        let r = publish(
            &hub,
            TOKEN,
            &publish_body(manifest("real", "1.0.0"), &component("minimal")),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        get(&hub, "/api/v1/policies/real/versions/2.0.0")
            .await
            .assert_problem(404, "not_found", Some("version"));
        let missing = format!("/api/v1/modules/sha256:{}", "0".repeat(64));
        get(&hub, &missing)
            .await
            .assert_problem(404, "not_found", Some("digest"));
        let etag = format!("\"sha256:{}\"", "0".repeat(64));
        call_with(
            &hub,
            Method::GET,
            &missing,
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await
        .assert_problem(404, "not_found", Some("digest"));
        get(&hub, "/api/v1/modules/md5:abc").await.assert_problem(
            400,
            "invalid_digest",
            Some("digest"),
        );
        get(&hub, "/api/v2/nothing")
            .await
            .assert_problem(404, "not_found", Some("path"));
        call(&hub, Method::PUT, "/api/v1/policies", Some(TOKEN), None)
            .await
            .assert_problem(405, "method_not_allowed", Some("method"));
    }
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let url = database_urls().await.remove(0);
    let hub = open(&url).await;
    let r = get(&hub, "/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 6);
    for (path, ops) in paths {
        let uri = path
            .replace("{name}", "x")
            .replace("{version}", "1.0.0")
            .replace("{digest}", &format!("sha256:{}", "0".repeat(64)));
        for method in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = call(&hub, method.clone(), &uri, None, None).await;
            // Routed: whatever the answer, it is not the unknown-path or
            // wrong-method fallback.
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert_ne!(body["error"]["field"], "path", "{method} {uri}");
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        }
    }
    // The schemas compile (a broken $ref would not).
    let schema = json!({"$ref": "#/components/schemas/Manifest", "components": doc["components"]});
    assert!(jsonschema::validator_for(&schema).is_ok());
}

#[tokio::test]
async fn builtin_policies_are_published_once_at_start() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hub-builtins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let module = component("minimal");
    for (name, version) in [("alpha", "1.0.0"), ("beta", "0.2.0")] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut m = manifest(name, version);
        m["sha256"] = json!(sha(&module));
        std::fs::write(d.join("manifest.json"), m.to_string()).unwrap();
        std::fs::write(d.join("policy.wasm"), &module).unwrap();
    }
    std::fs::create_dir_all(dir.join("not-a-policy")).unwrap();
    for url in database_urls().await {
        let mut config = config(&url);
        config.builtins = portcullis_hub::seed::artifact_dir(&dir).unwrap();
        let hub = portcullis_hub::Hub::open(config.clone()).await.unwrap();
        let l = get(&hub, "/api/v1/policies").await.json();
        assert_eq!(l["total"], 2, "{l}");
        assert_eq!(l["items"][0]["publisher"], "builtin");
        drop(hub);
        // A second start finds them present and changes nothing.
        let report = {
            let hub = portcullis_hub::Hub::open(HubConfig {
                builtins: Vec::new(),
                ..config.clone()
            })
            .await
            .unwrap();
            portcullis_hub::seed::seed_dir(&hub, &dir).await.unwrap()
        };
        assert_eq!((report.published.len(), report.present), (0, 2));
        // A broken built-in is reported and skipped; the hub still starts.
        std::fs::write(dir.join("beta/policy.wasm"), b"broken").unwrap();
        let d = dir.join("gamma");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("manifest.json"),
            manifest("gamma", "1.0.0").to_string(),
        )
        .unwrap();
        std::fs::write(d.join("policy.wasm"), b"broken").unwrap();
        config.builtins = portcullis_hub::seed::artifact_dir(&dir).unwrap();
        let hub = portcullis_hub::Hub::open(config).await.unwrap();
        let report = portcullis_hub::seed::seed_dir(&hub, &dir).await.unwrap();
        assert_eq!(
            (report.published.len(), report.present, report.failed.len()),
            (0, 2, 1)
        );
        assert!(
            report.failed[0].contains("gamma@1.0.0")
                && report.failed[0].contains("not a valid WebAssembly component"),
            "{:?}",
            report.failed
        );
        assert_eq!(get(&hub, "/api/v1/policies").await.json()["total"], 2);
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::write(dir.join("beta/policy.wasm"), &module).unwrap();
    }
}

use portcullis_hub::HubConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_serialise() {
    let module = component("minimal");
    for url in database_urls().await {
        let hub = open(&url).await;
        // Different versions at once: all land, and the latest is right.
        let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"];
        let replies = futures_util::future::join_all(versions.iter().map(|v| {
            let body = publish_body(manifest("racer", v), &module);
            let hub = hub.clone();
            async move { publish(&hub, TOKEN, &body).await.status }
        }))
        .await;
        assert!(
            replies.iter().all(|s| *s == StatusCode::CREATED),
            "{url}: {replies:?}"
        );
        let p = get(&hub, "/api/v1/policies/racer").await.json();
        assert_eq!(p["latest_version"], "1.4.0", "{url}");
        // One version at once: exactly one wins, the others are 409.
        let replies = futures_util::future::join_all((0..4).map(|_| {
            let body = publish_body(manifest("racer", "2.0.0"), &module);
            let hub = hub.clone();
            async move { publish(&hub, TOKEN, &body).await.status }
        }))
        .await;
        let created = replies
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let conflicts = replies
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((created, conflicts), (1, 3), "{url}: {replies:?}");
    }
}
