//! Test support: databases (SQLite always, Postgres when `DATABASE_URL`
//! points at one), fixture components of the policy world, and a client
//! that drives the router without a socket.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use portcullis_hub::{Hub, HubConfig, PublisherToken};
use serde_json::{Value, json};
use sqlx::Connection as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt as _;
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

pub const TOKEN: &str = "acme-token-0123456789";
pub const OTHER_TOKEN: &str = "other-token-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Worlds for fixtures, next to the real policy world.
const FIXTURE_WIT: &str = r#"
package test:fixture;

interface net {
    connect: func(host: string) -> bool;
}

interface other {
    hello: func() -> string;
}

/// A policy that imports nothing but the always-granted interfaces.
world minimal {
    export portcullis:policy/policy@0.1.0;
}

world uses-counters {
    import portcullis:policy/counters@0.1.0;
    import portcullis:policy/clock@0.1.0;
    export portcullis:policy/policy@0.1.0;
}

world foreign-import {
    import net;
    export portcullis:policy/policy@0.1.0;
}

world no-policy-export {
    export other;
}
"#;

/// A component of `world`: a `portcullis:policy` world name
/// (`policy-world`) or one of the fixture worlds above. Its functions trap;
/// the hub only type-checks modules, it never runs them.
pub fn component(world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let wit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/wit/policy.wit");
    let policy_pkg = resolve.push_file(&wit).expect("sdk/wit/policy.wit parses");
    let fixture_pkg = resolve
        .push_str("fixture.wit", FIXTURE_WIT)
        .expect("fixture WIT parses");
    let pkg = if world == "policy-world" {
        policy_pkg
    } else {
        fixture_pkg
    };
    let world = resolve
        .select_world(&[pkg], Some(world))
        .expect("world exists");
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// A manifest for `name@version` that passes validation with the
/// `minimal` component.
pub fn manifest(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "version": version,
        "category": "guardrail",
        "display_name": format!("{name} display"),
        "description": format!("The {name} policy blocks things"),
        "phases": ["request"],
        "capabilities": [],
        "settings_schema": {
            "type": "object",
            "properties": {"limit": {"type": "integer", "minimum": 1}},
            "additionalProperties": false
        },
        "defaults": {"limit": 10},
        "docs": "# Docs\nUse it."
    })
}

pub fn publish_body(manifest: Value, module: &[u8]) -> Value {
    json!({"manifest": manifest, "module": base64::engine::general_purpose::STANDARD.encode(module)})
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fresh, empty database URLs to run a test against: a SQLite file, and a
/// new Postgres database when `DATABASE_URL` is a Postgres URL.
pub async fn database_urls() -> Vec<String> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("hub-{}-{n}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut urls = vec![format!("sqlite://{}", file.display())];
    if let Ok(url) = std::env::var("DATABASE_URL")
        && (url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        urls.push(fresh_postgres_db(&url, n).await);
    }
    urls
}

/// Creates `hub_test_<pid>_<n>` on the server of `url`, returns its URL.
async fn fresh_postgres_db(url: &str, n: u32) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("hub_test_{}_{n}", std::process::id());
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    format!("{server}/{name}{query}")
}

pub fn config(url: &str) -> HubConfig {
    let mut c = HubConfig::new(url);
    c.tokens = vec![
        PublisherToken::parse(&format!("acme:{TOKEN}")).unwrap(),
        PublisherToken::parse(&format!("other:{OTHER_TOKEN}")).unwrap(),
        PublisherToken::parse(ADMIN_TOKEN).unwrap(),
    ];
    c
}

pub async fn open(url: &str) -> Arc<Hub> {
    Hub::open(config(url))
        .await
        .unwrap_or_else(|e| panic!("open hub at {url}: {e}"))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a JSON problem with this status, code and field.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str, field: Option<&str>) {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
}

pub async fn call(
    hub: &Arc<Hub>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Body>,
) -> Reply {
    call_with(hub, method, uri, token, body, &[]).await
}

pub async fn call_with(
    hub: &Arc<Hub>,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.unwrap_or_else(Body::empty)).unwrap();
    let res = portcullis_hub::router(hub.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(hub: &Arc<Hub>, uri: &str) -> Reply {
    call(hub, Method::GET, uri, None, None).await
}

pub async fn publish(hub: &Arc<Hub>, token: &str, body: &Value) -> Reply {
    call(
        hub,
        Method::POST,
        "/api/v1/policies",
        Some(token),
        Some(Body::from(body.to_string())),
    )
    .await
}
