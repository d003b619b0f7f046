//! Router-level tests of the admin API: every resource and rejection,
//! driven with `oneshot` (no socket). Each test runs on in-memory SQLite,
//! and again on Postgres when `DATABASE_URL` is set (in a fresh schema).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use portcullis_admin::policies::{Hub, HubError, PolicyHub};
use portcullis_admin::{AppState, crypto::Sealer, db, router};
use portcullis_types::policy::PolicyVersion;
use serde_json::{Value, json};
use sqlx::Row;
use tower::ServiceExt;

/// A hub serving fixed manifests, or unreachable.
struct FakeHub {
    versions: HashMap<(String, String), Value>,
    down: bool,
}

#[async_trait]
impl PolicyHub for FakeHub {
    async fn version(&self, name: &str, version: &str) -> Result<PolicyVersion, HubError> {
        if self.down {
            return Err(HubError::Unreachable("connection refused".into()));
        }
        let v = self
            .versions
            .get(&(name.to_owned(), version.to_owned()))
            .ok_or_else(|| HubError::NotFound(format!("policy `{name}` version `{version}`")))?;
        serde_json::from_value(v.clone()).map_err(|e| HubError::Bad(e.to_string()))
    }
    async fn catalogue(&self) -> Result<Value, HubError> {
        if self.down {
            return Err(HubError::Unreachable("connection refused".into()));
        }
        Ok(
            json!({"items": self.versions.keys().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>()}),
        )
    }
    async fn policy(&self, name: &str) -> Result<Value, HubError> {
        let versions: Vec<&String> = self
            .versions
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        if versions.is_empty() {
            return Err(HubError::NotFound(format!("policy `{name}`")));
        }
        Ok(
            json!({"name": name, "versions": versions.iter().map(|v| json!({"version": v})).collect::<Vec<_>>()}),
        )
    }
}

/// The digest the fake hub gives word-filter@1.0.0's module.
const MODULE_SHA256: &str = "5e1f5bd5b0c0c1a34a0a4e0a6c2a2f1b3a3d1f0e9c8b7a6d5e4f3a2b1c0d9e8f";

fn guardrail_manifest() -> Value {
    json!({
        "name": "word-filter", "version": "1.0.0", "category": "guardrail",
        "description": "blocks words", "phases": ["request", "response"],
        "settings_schema": {
            "type": "object", "additionalProperties": false, "required": ["words"],
            "properties": {
                "words": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "action": {"enum": ["block", "mask"]}
            }
        },
        "defaults": {"words": ["secret"]},
        "sha256": MODULE_SHA256, "digest": format!("sha256:{MODULE_SHA256}"), "size": 1, "publisher": "t",
        "published_at": "2025-01-01T00:00:00Z", "yanked": false
    })
}

struct App {
    router: Router,
    state: AppState,
    admin: String,
}

impl App {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.call_h(method, path, token, body, &[]).await;
        (s, v)
    }

    async fn call_h(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_client_error() && status != StatusCode::NOT_MODIFIED {
            // Every 4xx is a JSON problem.
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{method} {path}: {status} {v}"
            );
        }
        (status, headers, v)
    }

    /// A request with a raw body of `content_type`; answers the status,
    /// headers and body bytes.
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin))
            .header("content-type", content_type)
            .body(body.into())
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        if status.is_client_error() {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                v["error"]["code"].is_string(),
                "{method} {path}: {status} {v}"
            );
        }
        (status, headers, bytes)
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, Some(&self.admin), body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    /// Asserts a rejection: status and the field named.
    async fn rejects(
        &self,
        method: &str,
        path: &str,
        body: Value,
        status: StatusCode,
        field: &str,
    ) -> Value {
        let (s, v) = self.call(method, path, Some(&self.admin), Some(body)).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["field"], field, "{method} {path}: {v}");
        v
    }

    async fn token(&self, role: &str) -> String {
        let v = self
            .ok(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": format!("{role} user"), "role": role})),
            )
            .await;
        v["token"].as_str().unwrap().to_owned()
    }

    async fn provider(&self, name: &str) -> Value {
        self.ok(
            "POST",
            "/api/v1/providers",
            Some(json!({
                "name": name, "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                "models": ["gpt-5-mini"], "credentials": {"api_key": format!("sk-{name}-secret")}
            })),
        )
        .await
    }

    async fn gateway(&self, name: &str) -> (String, String) {
        let v = self.ok("POST", "/api/v1/gateways", Some(json!({"name": name, "url": format!("https://{}.example.com/", name.to_lowercase().replace(' ', "-"))}))).await;
        (
            v["id"].as_str().unwrap().to_owned(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }
}

async fn app_with(url: &str, hub: Hub) -> App {
    let pool = db::connect(url).await.unwrap();
    let admin = portcullis_admin::auth::bootstrap(&pool, None)
        .await
        .unwrap()
        .unwrap();
    let mut state = AppState::new(pool, Sealer::new([3u8; 32]).unwrap(), hub);
    state.heartbeat_window = Duration::from_secs(2);
    App {
        router: router(state.clone()),
        state,
        admin,
    }
}

fn default_hub() -> Hub {
    let m = guardrail_manifest();
    Arc::new(FakeHub {
        versions: HashMap::from([(("word-filter".into(), "1.0.0".into()), m)]),
        down: false,
    })
}

/// Runs `f` on SQLite, then on Postgres if `DATABASE_URL` is set.
async fn on_each_db(f: impl AsyncFn(App)) {
    on_each_db_with(default_hub, f).await
}

async fn on_each_db_with(hub: impl Fn() -> Hub, f: impl AsyncFn(App)) {
    f(app_with("sqlite::memory:", hub()).await).await;
    if let Ok(url) = std::env::var("DATABASE_URL")
        && url.starts_with("postgres")
    {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let pool = db_root(&url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
        f(app_with(&scoped, hub()).await).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn db_root(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

// ------------------------------------------------------------ auth

#[tokio::test]
async fn auth_roles_and_tokens() {
    on_each_db(async |app| {
        let (s, v) = app.call("GET", "/api/v1/proxies", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        let (s, _) = app
            .call("GET", "/api/v1/proxies", Some("pat-wrong"), None)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        let dev = app.token("developer").await;
        // Developers may not touch providers or register gateways...
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/providers",
                Some(&dev),
                Some(json!({"name": "x", "type": "openai"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, _) = app
            .call(
                "POST",
                "/api/v1/gateways",
                Some(&dev),
                Some(json!({"name": "g", "url": "http://g"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = app.call("GET", "/api/v1/audit", Some(&dev), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // ...but manage proxies.
        app.provider("OpenAI").await;
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&dev),
                Some(json!({"name": "Dev Proxy"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");

        let rejected = app
            .rejects(
                "POST",
                "/api/v1/tokens",
                json!({"name": "x", "role": "root"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "role",
            )
            .await;
        assert!(
            rejected["error"]["message"]
                .as_str()
                .unwrap()
                .contains("root")
        );

        // Revoked tokens stop working at once; tokens are listed without the secret.
        let list = app.ok("GET", "/api/v1/tokens", None).await;
        let dev_entry = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["role"] == "developer")
            .unwrap()
            .clone();
        assert!(dev_entry.get("token").is_none());
        app.ok(
            "POST",
            &format!(
                "/api/v1/tokens/{}/revoke",
                dev_entry["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        let (s, _) = app.call("GET", "/api/v1/proxies", Some(&dev), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // Stored as a hash only.
        let rows = sqlx::query("SELECT token_sha256 FROM api_tokens")
            .fetch_all(&app.state.pool)
            .await
            .unwrap();
        assert!(rows.iter().all(|r| r.get::<String, _>(0).len() == 64));
    })
    .await;
}

#[tokio::test]
async fn only_admins_decide_where_provider_credentials_go() {
    on_each_db(async |app| {
        app.provider("OpenAI").await;
        let dev = app.token("developer").await;
        let call = |method: &'static str, path: String, body: Value| {
            let dev = dev.clone();
            let app = &app;
            async move { app.call(method, &path, Some(&dev), Some(body)).await }
        };
        // A developer may not point a route at a host of its choosing...
        let evil = json!({"name": "Exfil", "routes": [{"provider": "openai", "base_url": "http://127.0.0.1:1/v1"}]});
        let (s, v) = call("POST", "/api/v1/proxies".into(), evil).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["field"], "routes[0].base_url", "{v}");
        // ...nor open a route to any model string.
        let open = json!({"name": "Open", "routes": [{"provider": "openai", "models": []}]});
        let (s, v) = call("POST", "/api/v1/proxies".into(), open).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["field"], "routes[0].models", "{v}");
        let (s, _) = call("POST", "/api/v1/proxies".into(), json!({"name": "Plain"})).await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, v) = call(
            "PATCH",
            "/api/v1/proxies/plain".into(),
            json!({"routes": [{"provider": "openai", "base_url": "http://127.0.0.1:1/v1"}]}),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

        // An admin may; a developer then keeps the admin's choice while
        // editing the rest, but cannot move it.
        let routes = json!([{"provider": "openai", "base_url": "http://127.0.0.1:9/v2", "name": "v2"}]);
        app.ok("PATCH", "/api/v1/proxies/plain", Some(json!({"routes": routes}))).await;
        let (s, v) = call(
            "PATCH",
            "/api/v1/proxies/plain".into(),
            json!({"description": "kept", "routes": routes}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = call(
            "PATCH",
            "/api/v1/proxies/plain".into(),
            json!({"routes": [{"provider": "openai", "base_url": "http://127.0.0.1:1/v2", "name": "v2"}]}),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let p = app.ok("GET", "/api/v1/proxies/plain", None).await;
        assert_eq!(p["routes"][0]["base_url"], "http://127.0.0.1:9/v2");
        assert_eq!(p["description"], "kept");
        // Even an admin cannot send the provider's stored key elsewhere
        // (gateways would refuse it); a route with its own key may go.
        app.rejects(
            "PATCH",
            "/api/v1/proxies/plain",
            json!({"routes": [{"provider": "openai", "base_url": "http://127.0.0.1:1/v1"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routes[0].base_url",
        )
        .await;
        app.ok(
            "PATCH",
            "/api/v1/proxies/plain",
            Some(json!({"routes": [{"provider": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": {"header": "x-upstream-key"}}]})),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn bootstrap_token_from_env_and_once() {
    let pool = db::connect("sqlite::memory:").await.unwrap();
    assert!(
        portcullis_admin::auth::bootstrap(&pool, Some("pat-from-env".into()))
            .await
            .unwrap()
            .is_none()
    );
    // A second start with no env token generates nothing: a token exists.
    assert!(
        portcullis_admin::auth::bootstrap(&pool, None)
            .await
            .unwrap()
            .is_none()
    );
    let state = AppState::new(pool, Sealer::new([1u8; 32]).unwrap(), default_hub());
    let app = App {
        router: router(state.clone()),
        state,
        admin: "pat-from-env".into(),
    };
    app.ok("GET", "/api/v1/tokens", None).await;
}

// ------------------------------------------------------------ generic rejections

#[tokio::test]
async fn problems_for_routing_and_bodies() {
    on_each_db(async |app| {
        let (s, v) = app
            .call("GET", "/api/v1/nope", Some(&app.admin), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        let (s, _) = app
            .call("PUT", "/api/v1/providers", Some(&app.admin), None)
            .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, _, v) = app
            .call_h(
                "POST",
                "/api/v1/providers",
                Some(&app.admin),
                None,
                &[("content-type", "text/plain")],
            )
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/providers")
            .header("authorization", format!("Bearer {}", app.admin))
            .header("content-type", "application/json")
            .body(Body::from("{\"name\":"))
            .unwrap();
        let resp = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let (s, v) = app
            .call("GET", "/api/v1/audit?limit=5000", Some(&app.admin), None)
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
        );
        let (s, v) = app
            .call("GET", "/api/v1/audit?lmit=5", Some(&app.admin), None)
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("lmit"))
        );
    })
    .await;
}

// ------------------------------------------------------------ providers

#[tokio::test]
async fn providers_crud_and_rejections() {
    on_each_db(async |app| {
        let p = app.provider("OpenAI Prod").await;
        assert_eq!(p["id"], "openai-prod");
        assert_eq!(p["credentials_set"], json!(["api_key"]));
        assert!(!p.to_string().contains("sk-OpenAI Prod-secret"), "credentials are never returned");
        let got = app.ok("GET", "/api/v1/providers/openai-prod", None).await;
        assert!(!got.to_string().contains("secret"));
        // Encrypted at rest.
        let raw: String = sqlx::query("SELECT credentials FROM providers WHERE id = 'openai-prod'")
            .fetch_one(&app.state.pool).await.unwrap().get(0);
        assert!(!raw.contains("sk-"), "{raw}");

        let path = "/api/v1/providers";
        app.rejects("POST", path, json!({"name": "x", "type": "opneai"}), StatusCode::UNPROCESSABLE_ENTITY, "type").await;
        app.rejects("POST", path, json!({"type": "openai"}), StatusCode::UNPROCESSABLE_ENTITY, "name").await;
        app.rejects("POST", path, json!({"name": "x", "type": "openai", "modles": []}), StatusCode::UNPROCESSABLE_ENTITY, "modles").await;
        app.rejects("POST", path, json!({"name": "x", "type": "openai", "credentials": {"apikey": "k"}}), StatusCode::UNPROCESSABLE_ENTITY, "credentials.apikey").await;
        app.rejects("POST", path, json!({"name": "az", "type": "azure-openai"}), StatusCode::UNPROCESSABLE_ENTITY, "base_url").await;
        app.rejects("POST", path, json!({"name": "x", "type": "openai", "base_url": "ftp://x"}), StatusCode::UNPROCESSABLE_ENTITY, "base_url").await;
        app.rejects("POST", path, json!({"name": "b", "type": "bedrock", "region": "us-east-1"}), StatusCode::UNPROCESSABLE_ENTITY, "credentials.aws_access_key_id").await;
        app.rejects("POST", path, json!({"name": "b", "type": "bedrock", "credentials": {"aws_access_key_id": "a", "aws_secret_access_key": "s"}}), StatusCode::UNPROCESSABLE_ENTITY, "region").await;
        app.rejects("POST", path, json!({"name": "OpenAI  prod", "type": "openai"}), StatusCode::CONFLICT, "name").await;
        app.rejects("POST", path, json!({"name": "x", "type": "openai", "models": [""]}), StatusCode::UNPROCESSABLE_ENTITY, "models[0]").await;
        // A credential gateways fetch themselves (`auth`): its secret is
        // sealed with the other credentials, never inline, never returned.
        let entra = json!({"type": "entra", "tenant_id": "t", "client_id": "c"});
        app.rejects("POST", path, json!({"name": "az", "type": "azure-openai", "base_url": "https://r.openai.azure.com", "auth": entra}), StatusCode::UNPROCESSABLE_ENTITY, "credentials.client_secret").await;
        app.rejects("POST", path, json!({"name": "az", "type": "azure-openai", "base_url": "https://r.openai.azure.com", "auth": {"type": "entra", "tenant_id": "t", "client_id": "c", "client_secret": "inline"}, "credentials": {"client_secret": "s"}}), StatusCode::UNPROCESSABLE_ENTITY, "auth.client_secret").await;
        app.rejects("POST", path, json!({"name": "az", "type": "openai", "auth": entra, "credentials": {"client_secret": "s"}}), StatusCode::UNPROCESSABLE_ENTITY, "auth.type").await;
        let az = app.ok("POST", path, Some(json!({"name": "Azure Entra", "type": "azure-openai", "base_url": "https://r.openai.azure.com", "auth": entra, "credentials": {"client_secret": "entra-secret-value"}}))).await;
        assert_eq!(az["credentials_set"], json!(["client_secret"]));
        assert_eq!(az["auth"]["tenant_id"], "t");
        assert!(!az.to_string().contains("entra-secret-value"));
        let (s, _) = app.call("DELETE", "/api/v1/providers/azure-entra", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.call("GET", "/api/v1/providers/nope", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // Nothing half-written by the rejections.
        let list = app.ok("GET", path, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);

        // Most recently updated first.
        app.provider("Second").await;
        let list = app.ok("GET", path, None).await;
        assert_eq!(list["items"][0]["id"], "second");
        let upd = app.ok("PATCH", "/api/v1/providers/openai-prod", Some(json!({"models": ["gpt-4o"], "credentials": {"api_key": "sk-new"}}))).await;
        assert_eq!(upd["models"], json!(["gpt-4o"]));
        let list = app.ok("GET", path, None).await;
        assert_eq!(list["items"][0]["id"], "openai-prod");
        app.rejects("PATCH", "/api/v1/providers/openai-prod", json!({"name": "Second"}), StatusCode::CONFLICT, "name").await;

        // In use by a proxy: not deletable.
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "uses", "provider": "openai-prod"}))).await;
        let (s, v) = app.call("DELETE", "/api/v1/providers/openai-prod", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        let (s, _) = app.call("DELETE", "/api/v1/providers/second", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.call("GET", "/api/v1/providers/second", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn providers_take_model_discovery_and_aliases() {
    on_each_db(async |app| {
        app.provider("OpenAI Prod").await;
        let path = "/api/v1/providers/openai-prod";
        let upd = app
            .ok("PATCH", path, Some(json!({"models": ["gpt-4o"], "discover_models": {"refresh_s": 300}, "aliases": {"fast": "gpt-4o-mini"}})))
            .await;
        assert_eq!(upd["discover_models"], json!({"refresh_s": 300}));
        assert_eq!(upd["aliases"], json!({"fast": "gpt-4o-mini"}));
        let got = app.ok("GET", path, None).await;
        assert_eq!(got["aliases"]["fast"], "gpt-4o-mini");
        // The same rules as the gateway's, naming the field.
        app.rejects("PATCH", path, json!({"discover_models": false}), StatusCode::UNPROCESSABLE_ENTITY, "aliases.fast").await;
        app.rejects("PATCH", path, json!({"discover_models": {"refresh_s": 0}}), StatusCode::UNPROCESSABLE_ENTITY, "discover_models.refresh_s").await;
        app.rejects("PATCH", path, json!({"aliases": {"gpt-4o": "gpt-4o-mini"}}), StatusCode::UNPROCESSABLE_ENTITY, "aliases.gpt-4o").await;
        app.rejects("PATCH", path, json!({"discover_models": {"refresh": 1}}), StatusCode::UNPROCESSABLE_ENTITY, "discover_models").await;
        app.rejects(
            "POST",
            "/api/v1/providers",
            json!({"name": "az", "type": "azure-openai", "base_url": "https://r.openai.azure.com", "discover_models": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "discover_models",
        )
        .await;
        // Nothing changed by the rejections; `{}` removes the aliases.
        let got = app.ok("GET", path, None).await;
        assert_eq!(got["discover_models"], json!({"refresh_s": 300}));
        let upd = app.ok("PATCH", path, Some(json!({"aliases": {}, "discover_models": false}))).await;
        assert_eq!(upd["aliases"], json!({}));
        assert_eq!(upd["discover_models"], json!(false));
    })
    .await;
}

// ------------------------------------------------------------ proxies

#[tokio::test]
async fn proxies_defaults_revisions_and_rejections() {
    on_each_db(async |app| {
        // No provider yet: the default cannot be chosen.
        app.rejects("POST", "/api/v1/proxies", json!({"name": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "provider").await;
        app.provider("Older").await;
        app.provider("Newer").await;
        let p = app.ok("POST", "/api/v1/proxies", Some(json!({"name": "Chat API", "description": "for chat"}))).await;
        assert_eq!(p["id"], "chat-api");
        assert_eq!(p["version"], "v1.0");
        assert_eq!(p["context"], "/chat-api");
        assert_eq!(p["provider"], "newer", "defaults to the most recently updated provider");
        assert_eq!(p["track_stream_tokens"], true);
        assert_eq!(p["revision"], 1);
        assert_eq!(p["resources"], json!(["chat/completions", "embeddings", "models", "responses", "completions", "moderations"]));

        let q = app.ok("POST", "/api/v1/proxies", Some(json!({"name": "llm test", "context": "llmtest/", "provider": "older",
            "inbound": ["openai", "anthropic"], "resources": ["chat/completions"], "track_stream_tokens": false,
            "routes": [{"provider": "older", "model": "gpt-4o"}, {"provider": "newer", "api_key": {"header": "x-key"}}],
            "routing": {"strategy": "model-based", "fallback": {"route": "newer"}}}))).await;
        assert_eq!(q["context"], "/llmtest");

        let path = "/api/v1/proxies";
        app.rejects("POST", path, json!({"name": "Chat  API"}), StatusCode::CONFLICT, "name").await;
        app.rejects("POST", path, json!({"name": "y", "provider": "nope"}), StatusCode::UNPROCESSABLE_ENTITY, "provider").await;
        app.rejects("POST", path, json!({"name": "y", "routes": [{"provider": "nope"}]}), StatusCode::UNPROCESSABLE_ENTITY, "routes[0].provider").await;
        app.rejects("POST", path, json!({"name": "y", "routes": [{"provider": "older", "modle": "m"}]}), StatusCode::UNPROCESSABLE_ENTITY, "routes[0].modle").await;
        app.rejects("POST", path, json!({"name": "y", "routes": [{"provider": "older", "api_key": {"env": "X"}}]}), StatusCode::UNPROCESSABLE_ENTITY, "routes[0].api_key.env").await;
        app.rejects("POST", path, json!({"name": "y", "routes": [{"provider": "older"}, {"provider": "newer"}]}), StatusCode::UNPROCESSABLE_ENTITY, "routing.strategy").await;
        app.rejects("POST", path, json!({"name": "y", "routing": {"fallback": {"route": "zzz"}}}), StatusCode::UNPROCESSABLE_ENTITY, "routing.fallback.route").await;
        app.rejects("POST", path, json!({"name": "y", "inbound": ["soap"]}), StatusCode::UNPROCESSABLE_ENTITY, "inbound[0]").await;
        app.rejects("POST", path, json!({"name": "y", "resources": []}), StatusCode::UNPROCESSABLE_ENTITY, "resources").await;
        app.rejects("POST", path, json!({"name": "y", "context": "/a b"}), StatusCode::UNPROCESSABLE_ENTITY, "context").await;
        app.rejects("POST", path, json!({"name": "!!!"}), StatusCode::UNPROCESSABLE_ENTITY, "name").await;
        app.rejects("POST", path, json!({"name": "y", "colour": 1}), StatusCode::UNPROCESSABLE_ENTITY, "colour").await;
        assert_eq!(app.ok("GET", path, None).await["items"].as_array().unwrap().len(), 2);

        // Changes make revisions; a no-op does not.
        let u = app.ok("PATCH", "/api/v1/proxies/chat-api", Some(json!({"version": "v2.0", "context": "/chat/v2/"}))).await;
        assert_eq!((u["revision"].as_i64(), u["context"].as_str()), (Some(2), Some("/chat/v2")));
        let u = app.ok("PATCH", "/api/v1/proxies/chat-api", Some(json!({"version": "v2.0"}))).await;
        assert_eq!(u["revision"], 2);
        let revs = app.ok("GET", "/api/v1/proxies/chat-api/revisions", None).await;
        let revs = revs["items"].as_array().unwrap();
        assert_eq!(revs.len(), 2);
        assert_eq!((revs[0]["revision"].as_i64(), revs[0]["current"].as_bool()), (Some(2), Some(true)));
        assert_eq!(revs[1]["spec"]["version"], "v1.0", "old revisions are kept as they were");
        app.rejects("PATCH", "/api/v1/proxies/chat-api", json!({"name": "llm test"}), StatusCode::CONFLICT, "name").await;
        let (s, _) = app.call("PATCH", "/api/v1/proxies/nope", Some(&app.admin), Some(json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        let (s, _) = app.call("DELETE", "/api/v1/proxies/llm-test", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, _) = app.call("GET", "/api/v1/proxies/llm-test", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    })
    .await;
}

// ------------------------------------------------------------ keys

#[tokio::test]
async fn keys_shown_once_hashed_revoked_expired() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "K"})))
            .await;
        let k = app
            .ok(
                "POST",
                "/api/v1/proxies/k/keys",
                Some(json!({"name": "app one"})),
            )
            .await;
        let key = k["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("pc-") && key.starts_with(k["prefix"].as_str().unwrap()));
        assert_eq!(k["status"], "active");
        let list = app.ok("GET", "/api/v1/proxies/k/keys", None).await;
        assert!(!list.to_string().contains(&key), "never retrievable again");
        assert_eq!(list["items"][0]["last_used_at"], Value::Null);
        let stored: String = sqlx::query("SELECT key_sha256 FROM api_keys")
            .fetch_one(&app.state.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, portcullis_admin::crypto::sha256_hex(&key));

        app.rejects(
            "POST",
            "/api/v1/proxies/k/keys",
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at",
        )
        .await;
        app.rejects(
            "POST",
            "/api/v1/proxies/k/keys",
            json!({"name": "x", "expires_at": "tomorrow"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires_at",
        )
        .await;
        app.rejects(
            "POST",
            "/api/v1/proxies/k/keys",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        )
        .await;
        let (s, _) = app
            .call(
                "POST",
                "/api/v1/proxies/nope/keys",
                Some(&app.admin),
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
        let e = app
            .ok(
                "POST",
                "/api/v1/proxies/k/keys",
                Some(json!({"name": "short", "expires_at": soon.to_rfc3339()})),
            )
            .await;
        let r = app
            .ok(
                "POST",
                &format!(
                    "/api/v1/proxies/k/keys/{}/revoke",
                    k["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert_eq!(r["status"], "revoked");
        let (s, _) = app
            .call(
                "POST",
                "/api/v1/proxies/k/keys/key_nope/revoke",
                Some(&app.admin),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // On a gateway: the revoked key is gone; the short one until it expires.
        let (gw, gwt) = app.gateway("edge").await;
        app.ok(
            "POST",
            "/api/v1/proxies/k/deployments",
            Some(json!({"gateway": gw})),
        )
        .await;
        let (_, _, cfg) = app
            .call_h("GET", "/api/v1/gateway/config", Some(&gwt), None, &[])
            .await;
        let keys = &cfg["config"]["proxies"][0]["keys"];
        assert_eq!(keys.as_array().unwrap().len(), 1, "{cfg}");
        assert_eq!(keys[0]["name"], "short");
        // A long-poll wakes when the key expires, with no write in between.
        let started = Instant::now();
        let version = cfg["version"].as_str().unwrap().to_owned();
        let (s, _, cfg2) = app
            .call_h(
                "GET",
                "/api/v1/gateway/config?wait=10",
                Some(&gwt),
                None,
                &[("if-none-match", &format!("\"{version}\""))],
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(cfg2["config"]["proxies"][0]["keys"], json!([]));
        let list = app.ok("GET", "/api/v1/proxies/k/keys", None).await;
        let short = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == e["id"])
            .unwrap()
            .clone();
        assert_eq!(short["status"], "expired");
    })
    .await;
}

#[tokio::test]
async fn heartbeats_set_last_used_at_of_the_gateways_keys_only() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "Here"})))
            .await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "There"})))
            .await;
        let create = async |proxy: &str, name: &str| {
            let k = app
                .ok(
                    "POST",
                    &format!("/api/v1/proxies/{proxy}/keys"),
                    Some(json!({"name": name})),
                )
                .await;
            let sha = portcullis_admin::crypto::sha256_hex(k["key"].as_str().unwrap());
            (k["id"].as_str().unwrap().to_owned(), sha)
        };
        let (used_id, used) = create("here", "used").await;
        let (idle_id, _) = create("here", "idle").await;
        let (there_id, there) = create("there", "elsewhere").await;
        let (edge, edge_token) = app.gateway("edge").await;
        let (other, other_token) = app.gateway("other").await;
        app.ok(
            "POST",
            "/api/v1/proxies/here/deployments",
            Some(json!({"gateway": edge})),
        )
        .await;
        app.ok(
            "POST",
            "/api/v1/proxies/there/deployments",
            Some(json!({"gateway": other})),
        )
        .await;

        let last_used = async |proxy: &str, id: &str| -> Value {
            let list = app
                .ok("GET", &format!("/api/v1/proxies/{proxy}/keys"), None)
                .await;
            let item = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == id)
                .unwrap()
                .clone();
            item["last_used_at"].clone()
        };
        let beat = async |token: &str, keys: Value| {
            let (s, v) = app
                .call(
                    "POST",
                    "/api/v1/gateway/heartbeat",
                    Some(token),
                    Some(json!({"version": "v", "proxies": 1, "keys_used": keys})),
                )
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        };

        // Edge used its key and (it claims) the other gateway's proxy's key.
        let t1 = db::now_ms() - 60_000;
        beat(&edge_token, json!({used.clone(): t1, there.clone(): t1})).await;
        assert_eq!(last_used("here", &used_id).await, json!(db::rfc3339(t1)));
        assert_eq!(last_used("here", &idle_id).await, Value::Null, "not used");
        assert_eq!(
            last_used("there", &there_id).await,
            Value::Null,
            "not deployed to edge"
        );
        let g = app
            .ok("GET", &format!("/api/v1/gateways/{edge}"), None)
            .await;
        assert_eq!(
            g["status"], "Active",
            "the heartbeat itself is recorded too"
        );

        // Only ever forward: an older report (another gateway, a delayed
        // beat) leaves it; a newer one moves it.
        beat(&edge_token, json!({used.clone(): t1 - 5_000})).await;
        assert_eq!(last_used("here", &used_id).await, json!(db::rfc3339(t1)));
        let t2 = t1 + 30_000;
        beat(&edge_token, json!({used.clone(): t2})).await;
        assert_eq!(last_used("here", &used_id).await, json!(db::rfc3339(t2)));
        // A gateway clock ahead of admin's does not put it in the future.
        let before = db::now_ms();
        beat(&edge_token, json!({used.clone(): before + 3_600_000})).await;
        let at = last_used("here", &used_id).await;
        let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert!(at >= before && at <= db::now_ms(), "{at} vs {before}");

        // The gateway the other proxy is deployed to can set its key.
        beat(&other_token, json!({there.clone(): t1})).await;
        assert_eq!(last_used("there", &there_id).await, json!(db::rfc3339(t1)));

        // Spend: a batch sent twice (its answer lost) is added once, and
        // only for proxies deployed to the reporting gateway.
        let record = |proxy: &str| {
            json!({"proxy_id": proxy, "key_id": "key_x", "model": "m", "day": "2026-12-01",
                "requests": 2, "input_tokens": 10, "output_tokens": 5, "cost": 0.5})
        };
        for _ in 0..2 {
            let (s, v) = app
                .call(
                    "POST",
                    "/api/v1/gateway/heartbeat",
                    Some(&edge_token),
                    Some(json!({"spend": [record("here"), record("there")], "spend_batch": "b1"})),
                )
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        }
        let spend = app
            .ok("GET", "/api/v1/spend?group_by=proxy&from=2026-12-01&to=2026-12-01", None)
            .await;
        assert_eq!(
            spend["items"],
            json!([{"proxy_id": "here", "requests": 2, "input_tokens": 10, "output_tokens": 5, "cost": 0.5}]),
            "{spend}"
        );

        // A heartbeat without key uses (a gateway from before them) is fine,
        // and changes no key.
        let (s, _) = app
            .call(
                "POST",
                "/api/v1/gateway/heartbeat",
                Some(&other_token),
                Some(json!({"version": "v", "proxies": 1})),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(last_used("there", &there_id).await, json!(db::rfc3339(t1)));
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/gateway/heartbeat",
                Some(&other_token),
                Some(json!({"keys_used": {there.clone(): "yesterday"}})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

        // Once the deployment is stopped, edge no longer touches that key.
        let deps = app
            .ok("GET", "/api/v1/proxies/here/deployments", None)
            .await;
        let dep = deps["items"][0]["id"].as_str().unwrap().to_owned();
        app.ok(
            "POST",
            &format!("/api/v1/proxies/here/deployments/{dep}/stop"),
            None,
        )
        .await;
        beat(&edge_token, json!({used.clone(): db::now_ms()})).await;
        assert_eq!(last_used("here", &used_id).await, json!(db::rfc3339(at)));
    })
    .await;
}

// ------------------------------------------------------------ gateways and deployments

#[tokio::test]
async fn gateways_deployments_and_managed_config() {
    on_each_db(async |app| {
        app.provider("Mock").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "Chat"}))).await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "Other", "context": "/chat"}))).await;
        let key = app.ok("POST", "/api/v1/proxies/chat/keys", Some(json!({"name": "app"}))).await;
        let (gw, token) = app.gateway("Edge EU").await;
        assert_eq!(gw, "edge-eu");
        app.rejects("POST", "/api/v1/gateways", json!({"name": "edge eu", "url": "http://x"}), StatusCode::CONFLICT, "name").await;
        app.rejects("POST", "/api/v1/gateways", json!({"name": "g2", "url": "nope"}), StatusCode::UNPROCESSABLE_ENTITY, "url").await;
        app.rejects("POST", "/api/v1/gateways", json!({"name": "g2"}), StatusCode::UNPROCESSABLE_ENTITY, "url").await;

        // Not Active until it heartbeats.
        let g = app.ok("GET", "/api/v1/gateways/edge-eu", None).await;
        assert_eq!(g["status"], "Not Active");
        assert!(g.get("token").is_none());

        app.rejects("POST", "/api/v1/proxies/chat/deployments", json!({"gateway": "nope"}), StatusCode::UNPROCESSABLE_ENTITY, "gateway").await;
        app.rejects("POST", "/api/v1/proxies/chat/deployments", json!({"gw": "edge-eu"}), StatusCode::UNPROCESSABLE_ENTITY, "gw").await;
        let d1 = app.ok("POST", "/api/v1/proxies/chat/deployments", Some(json!({"gateway": "Edge EU"}))).await;
        assert_eq!(d1["status"], "Active");
        assert_eq!(d1["invoke_url"], "https://edge-eu.example.com/chat/chat/completions");
        assert!(d1["deployed_at"].as_str().unwrap().ends_with('Z'));
        // Same base path on the same gateway: 409.
        app.rejects("POST", "/api/v1/proxies/other/deployments", json!({"gateway": gw}), StatusCode::CONFLICT, "context").await;

        // The proxy shows where it runs.
        let p = app.ok("GET", "/api/v1/proxies/chat", None).await;
        assert_eq!(p["deployed_gateways"][0]["invoke_url"], "https://edge-eu.example.com/chat/chat/completions");

        // The gateway's configuration: gateway token only.
        let (s, _) = app.call("GET", "/api/v1/gateway/config", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, h, cfg) = app.call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[]).await;
        assert_eq!(s, StatusCode::OK);
        let version = cfg["version"].as_str().unwrap().to_owned();
        assert_eq!(h["etag"], format!("\"{version}\""));
        let parsed: portcullis_types::managed::ManagedConfig = serde_json::from_value(cfg.clone()).unwrap();
        assert_eq!(parsed.config.proxies.len(), 1);
        let px = &parsed.config.proxies[0];
        assert_eq!((px.id.as_deref(), px.context.as_deref()), (Some("chat"), Some("/chat")));
        assert_eq!(px.keys[0].sha256.as_deref(), Some(portcullis_admin::crypto::sha256_hex(key["key"].as_str().unwrap()).as_str()));
        let prov = &parsed.config.providers[0];
        let var = prov.api_key_env.clone().unwrap();
        assert_eq!(parsed.secrets[&var], "sk-Mock-secret");
        assert_eq!(parsed.deployments[0].deployment_id, d1["id"].as_str().unwrap());

        // Unchanged: 304 after the wait. Changed: answered at once.
        let inm = format!("\"{version}\"");
        let (s, _, _) = app.call_h("GET", "/api/v1/gateway/config?wait=1", Some(&token), None, &[("if-none-match", &inm)]).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED);
        let waiter = {
            let router = app.router.clone();
            let token = token.clone();
            let inm = inm.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let req = Request::builder().uri("/api/v1/gateway/config?wait=20")
                    .header("authorization", format!("Bearer {token}")).header("if-none-match", inm)
                    .body(Body::empty()).unwrap();
                let resp = router.oneshot(req).await.unwrap();
                let status = resp.status();
                let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
                (status, started.elapsed(), body)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Editing the proxy does not change what is deployed...
        app.ok("PATCH", "/api/v1/proxies/chat", Some(json!({"context": "/chat2"}))).await;
        // ...deploying the new revision does, and replaces the old deployment.
        let d2 = app.ok("POST", "/api/v1/proxies/chat/deployments", Some(json!({"gateway": gw}))).await;
        assert_eq!(d2["replaced"], d1["id"]);
        assert_eq!(d2["revision"], 2);
        let (s, waited, body) = waiter.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        assert!(waited < Duration::from_secs(2), "a change is seen within 2 s: {waited:?}");
        assert_eq!(body["config"]["proxies"][0]["context"], "/chat2");
        assert_eq!(body["config"]["proxies"].as_array().unwrap().len(), 1);

        // History: newest first, latest marked, the replaced one Inactive.
        let h = app.ok("GET", "/api/v1/proxies/chat/deployments", None).await;
        let items = h["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0]["id"].clone(), items[0]["latest"].clone(), items[0]["status"].clone()), (d2["id"].clone(), json!(true), json!("Active")));
        assert_eq!((items[1]["latest"].clone(), items[1]["status"].clone()), (json!(false), json!("Inactive")));
        // /chat is free on that gateway now.
        app.ok("POST", "/api/v1/proxies/other/deployments", Some(json!({"gateway": gw}))).await;

        // Heartbeats make it Active and carry load failures.
        let (s, _) = app.call("POST", "/api/v1/gateway/heartbeat", Some(&token), Some(json!({"version": "abc", "proxies": 2,
            "error": {"version": "def", "field": "proxies[0].routes[0].provider", "message": "no provider"}}))).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, v) = app.call("POST", "/api/v1/gateway/heartbeat", Some(&token), Some(json!({"versoin": "x"}))).await;
        assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("versoin")));
        let g = app.ok("GET", "/api/v1/gateways/edge-eu", None).await;
        assert_eq!(g["status"], "Active");
        assert_eq!(g["proxies_served"], 2);
        assert_eq!(g["last_error"]["field"], "proxies[0].routes[0].provider");
        assert_eq!(g["in_sync"], false);
        assert_eq!(g["deployments"].as_array().unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let list = app.ok("GET", "/api/v1/gateways", None).await;
        assert_eq!(list["items"][0]["status"], "Not Active", "heartbeats stopped");

        // Stop: gone from the config; stopping twice is a conflict.
        let stop_path = format!("/api/v1/proxies/chat/deployments/{}/stop", d2["id"].as_str().unwrap());
        let st = app.ok("POST", &stop_path, None).await;
        assert_eq!(st["status"], "Inactive");
        let (s, _) = app.call("POST", &stop_path, Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (_, _, cfg) = app.call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[]).await;
        assert_eq!(cfg["config"]["proxies"].as_array().unwrap().len(), 1);
        assert_eq!(cfg["config"]["proxies"][0]["id"], "other");

        // A deployed proxy or a gateway with deployments cannot be deleted.
        let (s, _) = app.call("DELETE", "/api/v1/proxies/other", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _) = app.call("DELETE", "/api/v1/gateways/edge-eu", Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let (s, _) = app.call("GET", "/api/v1/gateway/config?wait=61", Some(&token), None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    })
    .await;
}

#[tokio::test]
async fn a_thousand_proxies_on_one_gateway() {
    on_each_db(async |app| {
        app.provider("Mock").await;
        let (gw, token) = app.gateway("big").await;
        for i in 0..1000 {
            app.ok(
                "POST",
                "/api/v1/proxies",
                Some(json!({"name": format!("proxy {i}")})),
            )
            .await;
            app.ok(
                "POST",
                &format!("/api/v1/proxies/proxy-{i}/deployments"),
                Some(json!({"gateway": gw})),
            )
            .await;
        }
        let started = Instant::now();
        let (_, _, cfg) = app
            .call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[])
            .await;
        assert_eq!(cfg["config"]["proxies"].as_array().unwrap().len(), 1000);
        assert_eq!(cfg["config"]["providers"].as_array().unwrap().len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "config of 1000 proxies took {:?}",
            started.elapsed()
        );
    })
    .await;
}

// ------------------------------------------------------------ policies

#[tokio::test]
async fn policy_attachments_validated_against_hub_schema() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "G"}))).await;
        let cat = app.ok("GET", "/api/v1/policies", None).await;
        assert_eq!(cat["items"][0]["name"], "word-filter");
        let path = "/api/v1/proxies/g/policies";
        let a = app.ok("POST", path, Some(json!({"name": "word-filter", "version": "1.0.0", "settings": {"words": ["x"], "action": "block"}, "phase": "request"}))).await;
        assert_eq!((a["revision"].as_i64(), a["on_error"].as_str(), a["order"].as_i64()), (Some(2), Some("closed"), Some(1)));
        // Defaults from the manifest when no settings are given.
        let b = app.ok("POST", path, Some(json!({"name": "word-filter", "version": "1.0.0", "on_error": "open"}))).await;
        assert_eq!(b["settings"], json!({"words": ["secret"]}));
        assert_eq!(b["order"], 2);

        let v = app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "settings": {"words": [1]}}), StatusCode::UNPROCESSABLE_ENTITY, "settings/words/0").await;
        assert!(v["error"]["message"].as_str().unwrap().contains("/words/0"), "{v}");
        app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "settings": {"words": ["a"], "extra": 1}}), StatusCode::UNPROCESSABLE_ENTITY, "settings").await;
        app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "settings": {"words": ["a"], "action": "shout"}}), StatusCode::UNPROCESSABLE_ENTITY, "settings/action").await;
        app.rejects("POST", path, json!({"name": "word-filter", "version": "9.9.9"}), StatusCode::UNPROCESSABLE_ENTITY, "version").await;
        app.rejects("POST", path, json!({"name": "Word Filter", "version": "1.0.0"}), StatusCode::UNPROCESSABLE_ENTITY, "name").await;
        app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "phase": "stream"}), StatusCode::UNPROCESSABLE_ENTITY, "phase").await;
        app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "on_error": "explode"}), StatusCode::UNPROCESSABLE_ENTITY, "on_error").await;

        let att = format!("{path}/{}", a["id"].as_str().unwrap());
        app.rejects("PATCH", &att, json!({"settings": {"words": []}}), StatusCode::UNPROCESSABLE_ENTITY, "settings/words").await;
        let u = app.ok("PATCH", &att, Some(json!({"settings": {"words": ["y"]}, "order": 5}))).await;
        assert_eq!(u["revision"], 4);
        let list = app.ok("GET", path, None).await;
        assert_eq!(list["items"][0]["id"], b["id"], "chain order follows `order`");
        let after = app.ok("DELETE", &att, None).await;
        assert_eq!(after["policies"].as_array().unwrap().len(), 1);
        assert_eq!(after["revision"], 5);
        let (s, _) = app.call("DELETE", &att, Some(&app.admin), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    })
    .await;
}

/// Rewrites the current revision's spec of proxy `id` in place, the way a
/// revision stored by an older admin (or a changed hub) would look.
async fn edit_current_spec(app: &App, id: &str, edit: impl Fn(&mut Value)) {
    let row = sqlx::query("SELECT r.spec, r.revision FROM proxy_revisions r JOIN proxies p ON p.id = r.proxy_id AND p.current_revision = r.revision WHERE p.id = $1")
        .bind(id.to_owned())
        .fetch_one(&app.state.pool).await.unwrap();
    let mut spec: Value = serde_json::from_str(&row.get::<String, _>("spec")).unwrap();
    edit(&mut spec);
    sqlx::query("UPDATE proxy_revisions SET spec = $1 WHERE proxy_id = $2 AND revision = $3")
        .bind(spec.to_string())
        .bind(id.to_owned())
        .bind(row.get::<i64, _>("revision"))
        .execute(&app.state.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn attachments_pin_the_module_digest_the_hub_gave() {
    on_each_db(async |app| {
        app.provider("P").await;
        let (gw, token) = app.gateway("Edge").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "G"}))).await;
        let path = "/api/v1/proxies/g/policies";
        let a = app.ok("POST", path, Some(json!({"name": "word-filter", "version": "1.0.0"}))).await;
        assert_eq!(a["sha256"], MODULE_SHA256);
        // A digest the caller expects must be the hub's.
        let v = app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "sha256": "ab".repeat(32)}),
            StatusCode::UNPROCESSABLE_ENTITY, "sha256").await;
        assert!(v["error"]["message"].as_str().unwrap().contains(MODULE_SHA256), "{v}");
        app.rejects("POST", path, json!({"name": "word-filter", "version": "1.0.0", "sha256": "xyz"}),
            StatusCode::UNPROCESSABLE_ENTITY, "sha256").await;
        app.ok("POST", path, Some(json!({"name": "word-filter", "version": "1.0.0", "sha256": MODULE_SHA256.to_uppercase()}))).await;
        // Audited with the digest, and carried to gateways.
        let log = app.ok("GET", "/api/v1/audit?limit=1", None).await;
        assert_eq!(log["items"][0]["detail"]["sha256"], MODULE_SHA256);
        app.ok("POST", "/api/v1/proxies/g/deployments", Some(json!({"gateway": gw}))).await;
        let (s, cfg) = app.call("GET", "/api/v1/gateway/config", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK);
        let policies = cfg["config"]["proxies"][0]["policies"].as_array().unwrap_or_else(|| panic!("{cfg}"));
        assert_eq!(policies.len(), 2);
        assert!(policies.iter().all(|p| p["sha256"] == MODULE_SHA256), "{cfg}");

        // The hub now names another module for the pinned version: changing
        // the attachment is refused, the pin kept.
        let att = format!("{path}/{}", a["id"].as_str().unwrap());
        edit_current_spec(&app, "g", |spec| spec["policies"][0]["sha256"] = json!("ff".repeat(32))).await;
        let (s, v) = app.call("PATCH", &att, Some(&app.admin), Some(json!({"settings": {"words": ["y"]}}))).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        assert_eq!(v["error"]["code"], "hub_digest_changed", "{v}");
        // An attachment from before pinning gets its pin on its next change.
        edit_current_spec(&app, "g", |spec| {
            spec["policies"][0].as_object_mut().unwrap().remove("sha256");
        }).await;
        let u = app.ok("PATCH", &att, Some(json!({"order": 7}))).await;
        assert_eq!(u["sha256"], MODULE_SHA256);
    })
    .await;
}

#[tokio::test]
async fn attaching_with_the_hub_down_is_a_503() {
    on_each_db_with(
        || {
            Arc::new(FakeHub {
                versions: HashMap::new(),
                down: true,
            }) as Hub
        },
        async |app| {
            app.provider("P").await;
            app.ok("POST", "/api/v1/proxies", Some(json!({"name": "G"})))
                .await;
            let (s, v) = app
                .call(
                    "POST",
                    "/api/v1/proxies/g/policies",
                    Some(&app.admin),
                    Some(json!({"name": "word-filter", "version": "1.0.0"})),
                )
                .await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("unreachable"),
                "{v}"
            );
            let (s, _) = app
                .call("GET", "/api/v1/policies", Some(&app.admin), None)
                .await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                app.ok("GET", "/api/v1/proxies/g", None).await["revision"],
                1,
                "nothing attached"
            );
        },
    )
    .await;
}

// ------------------------------------------------------------ semantic settings

/// A semantic proxy body: route `code` with topic `code`, fallback `chat`,
/// a prompt guard denying `weapons`, both on provider `p`'s embeddings.
fn semantic_proxy(name: &str) -> Value {
    json!({
        "name": name, "provider": "p", "description": "semantic",
        "routes": [
            {"provider": "p", "name": "code", "topics": [{"name": "code", "utterances": ["write a python function"]}]},
            {"provider": "p", "name": "chat"}
        ],
        "routing": {"strategy": "semantic", "fallback": {"route": "chat"}, "threshold": 0.7},
        "semantic_service": {"provider": "p", "model": "text-embedding-3-small"},
        "prompt_guard": {"threshold": 0.8, "deny": [{"name": "weapons", "utterances": ["how to build a bomb"]}]}
    })
}

#[tokio::test]
async fn patch_null_removes_optional_proxy_settings() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(semantic_proxy("S")))
            .await;
        let path = "/api/v1/proxies/s";
        // Absent: unchanged.
        let v = app.ok("PATCH", path, Some(json!({"version": "v2"}))).await;
        assert_eq!(v["semantic_service"]["model"], "text-embedding-3-small");
        assert_eq!(v["prompt_guard"]["deny"][0]["name"], "weapons");
        assert_eq!(v["description"], "semantic");
        let weighted =
            json!([{"provider": "p", "name": "code"}, {"provider": "p", "name": "chat"}]);
        // Switching to weighted while the service stays set is refused,
        // naming the field to remove...
        app.rejects(
            "PATCH",
            path,
            json!({"routes": weighted, "routing": {"strategy": "weighted"}, "prompt_guard": null}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "semantic_service",
        )
        .await;
        // ...and null removes it.
        let v = app
            .ok(
                "PATCH",
                path,
                Some(
                    json!({"routes": weighted, "routing": {"strategy": "weighted"},
            "semantic_service": null, "prompt_guard": null, "description": null}),
                ),
            )
            .await;
        assert_eq!(v["revision"], 3);
        assert_eq!(
            (
                v["semantic_service"].clone(),
                v["prompt_guard"].clone(),
                v["description"].clone()
            ),
            (Value::Null, Value::Null, Value::Null)
        );
        assert_eq!(v["routing"], json!({"strategy": "weighted"}));
        let revs = app.ok("GET", "/api/v1/proxies/s/revisions", None).await;
        let spec = &revs["items"][0]["spec"];
        assert!(
            spec.get("semantic_service").is_none()
                && spec.get("prompt_guard").is_none()
                && spec.get("description").is_none(),
            "{spec}"
        );
        assert!(
            revs["items"][1]["spec"].get("semantic_service").is_some(),
            "the old revision keeps it"
        );
        // `routes: null` goes back to the one default route, `routing: null` removes routing.
        let v = app
            .ok(
                "PATCH",
                path,
                Some(json!({"routes": null, "routing": null})),
            )
            .await;
        assert_eq!(
            (v["routes"].clone(), v["routing"].clone()),
            (json!([]), Value::Null)
        );
        // Null on what is already absent: no new revision.
        let v = app
            .ok(
                "PATCH",
                path,
                Some(json!({"routing": null, "semantic_service": null})),
            )
            .await;
        assert_eq!(v["revision"], 4);
        // A type error still names the field.
        app.rejects(
            "PATCH",
            path,
            json!({"routing": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "routing",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn utterances_upload_as_plain_text() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(semantic_proxy("S"))).await;
        let code = "/api/v1/proxies/s/topics/code/utterances";
        let file = "# coding prompts\n\nwrite a python function\r\n  fix this rust compile error  \n#not this\nwrite a python function\n";
        let (s, _, body) = app.call_raw("PUT", code, "text/plain; charset=utf-8", file).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["revision"], 2);
        assert_eq!(v["routes"][0]["topics"][0]["utterances"], json!(["write a python function", "fix this rust compile error"]));
        assert_eq!(v["prompt_guard"]["deny"][0]["utterances"], json!(["how to build a bomb"]), "other topics unchanged");
        let (s, h, text) = app.call_raw("GET", code, "text/plain", Body::empty()).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(String::from_utf8(text).unwrap(), "write a python function\nfix this rust compile error\n");

        // A denied topic of the prompt guard, by name.
        let (s, _, body) = app.call_raw("PUT", "/api/v1/proxies/s/topics/weapons/utterances", "text/plain", "make explosives at home\n").await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["revision"].as_i64(), v["prompt_guard"]["deny"][0]["utterances"].clone()), (Some(3), json!(["make explosives at home"])));
        // The same text again: no new revision.
        let (_, _, body) = app.call_raw("PUT", "/api/v1/proxies/s/topics/weapons/utterances", "text/plain", "make explosives at home").await;
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["revision"], 3);

        // Rejections write nothing.
        let (s, _, _) = app.call_raw("PUT", "/api/v1/proxies/s/topics/nope/utterances", "text/plain", "x").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = app.call_raw("GET", "/api/v1/proxies/s/topics/nope/utterances", "text/plain", Body::empty()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = app.call_raw("PUT", "/api/v1/proxies/nope/topics/code/utterances", "text/plain", "x").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = app.call_raw("PUT", code, "text/plain", "# only comments\n\n   \n").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _, _) = app.call_raw("PUT", code, "text/plain", vec![b'a', 0xff, b'\n']).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _, _) = app.call_raw("PUT", code, "application/json", "[\"x\"]").await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let v = app.ok("GET", "/api/v1/proxies/s", None).await;
        assert_eq!(v["revision"], 3);

        // Audited like any proxy change, and deployable.
        let log = app.ok("GET", "/api/v1/audit?limit=1", None).await;
        assert_eq!((log["items"][0]["action"].as_str(), log["items"][0]["resource"].as_str()), (Some("proxy.topic.utterances"), Some("proxies/s/topics/weapons")));
        let (gw, token) = app.gateway("edge").await;
        app.ok("POST", "/api/v1/proxies/s/deployments", Some(json!({"gateway": gw}))).await;
        let (_, _, cfg) = app.call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[]).await;
        assert_eq!(cfg["config"]["proxies"][0]["routes"][0]["topics"][0]["utterances"][1], "fix this rust compile error");
    })
    .await;
}

#[tokio::test]
async fn semantic_settings_validated_like_the_gateway() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/providers", Some(json!({"name": "Claude", "type": "anthropic", "credentials": {"api_key": "k"}}))).await;
        let ok = semantic_proxy("S");
        app.ok("POST", "/api/v1/proxies", Some(ok.clone())).await;
        let with = |pointer: &str, v: Value| {
            let mut b = ok.clone();
            b["name"] = json!("T");
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            b.pointer_mut(parent).unwrap()[key] = v;
            b
        };
        let without = |key: &str| {
            let mut b = ok.clone();
            b["name"] = json!("T");
            b.as_object_mut().unwrap().remove(key);
            b
        };
        let bad = StatusCode::UNPROCESSABLE_ENTITY;
        let path = "/api/v1/proxies";
        // Thresholds between 0 and 1.
        app.rejects("POST", path, with("/routing/threshold", json!(1.5)), bad, "routing.threshold").await;
        app.rejects("POST", path, with("/prompt_guard/threshold", json!(-0.1)), bad, "prompt_guard.threshold").await;
        app.rejects("POST", path, with("/routes/0/topics/0/threshold", json!(2)), bad, "routes[0].topics[0].threshold").await;
        // Topics need utterances and a unique name.
        app.rejects("POST", path, with("/routes/0/topics/0/utterances", json!([])), bad, "routes[0].topics[0].utterances").await;
        app.rejects("POST", path, with("/routes/0/topics/0/utterances", json!(["  "])), bad, "routes[0].topics[0].utterances").await;
        app.rejects("POST", path, with("/prompt_guard/deny/0/utterances", json!([])), bad, "prompt_guard.deny[0].utterances").await;
        app.rejects("POST", path, with("/routes/1/topics", json!([{"name": "other", "utterances": []}])), bad, "routes[1].topics[0].utterances").await;
        app.rejects("POST", path, with("/routes/0/topics/0/name", json!("")), bad, "routes[0].topics[0].name").await;
        app.rejects("POST", path, with("/prompt_guard/deny/0/name", json!("code")), bad, "prompt_guard.deny[0].name").await;
        app.rejects("POST", path, with("/routes/0/topics/0/utterances_file", json!("topics/code.txt")), bad, "routes[0].topics[0].utterances_file").await;
        // The semantic strategy needs a fallback, topics and a service.
        app.rejects("POST", path, with("/routing/fallback", Value::Null), bad, "routing.fallback").await;
        app.rejects("POST", path, with("/routes/0/topics", json!([])), bad, "routes").await;
        let mut b = without("semantic_service");
        b.as_object_mut().unwrap().remove("prompt_guard");
        app.rejects("POST", path, b, bad, "semantic_service").await;
        // Topics and a threshold only with the semantic strategy.
        let weighted = json!({"strategy": "weighted"});
        let mut b = with("/routing", weighted.clone());
        b.as_object_mut().unwrap().remove("prompt_guard");
        app.rejects("POST", path, b.clone(), bad, "routes[0].topics").await;
        b["routes"][0]["topics"] = json!([]);
        b["routing"]["threshold"] = json!(0.5);
        app.rejects("POST", path, b.clone(), bad, "routing.threshold").await;
        // A service nothing uses; a guard without a service.
        b["routing"] = weighted.clone();
        app.rejects("POST", path, b.clone(), bad, "semantic_service").await;
        b.as_object_mut().unwrap().remove("semantic_service");
        app.ok("POST", path, Some(b.clone())).await;
        b["name"] = json!("U");
        b["prompt_guard"] = ok["prompt_guard"].clone();
        app.rejects("POST", path, b.clone(), bad, "semantic_service").await;
        b["prompt_guard"]["deny"] = json!([]);
        b["semantic_service"] = ok["semantic_service"].clone();
        app.rejects("POST", path, b.clone(), bad, "prompt_guard.deny").await;
        // The service itself.
        app.rejects("POST", path, with("/semantic_service/provider", json!("claude")), bad, "semantic_service.provider").await;
        app.rejects("POST", path, with("/semantic_service/provider", json!("nope")), bad, "semantic_service.provider").await;
        app.rejects("POST", path, with("/semantic_service/model", json!("")), bad, "semantic_service.model").await;
        app.rejects("POST", path, with("/semantic_service/timeout_ms", json!(0)), bad, "semantic_service.timeout_ms").await;
        // `single` takes one route.
        app.rejects("POST", path, with("/routing", json!({"strategy": "single"})), bad, "routing.strategy").await;
        // PATCH is held to the same rules.
        app.rejects("PATCH", "/api/v1/proxies/s", json!({"routing": {"strategy": "semantic", "fallback": {"route": "chat"}, "threshold": 3}}), bad, "routing.threshold").await;
        app.rejects("PATCH", "/api/v1/proxies/s", json!({"prompt_guard": {"deny": [{"name": "weapons", "utterances": []}]}}), bad, "prompt_guard.deny[0].utterances").await;
        assert_eq!(app.ok("GET", "/api/v1/proxies/s", None).await["revision"], 1);
    })
    .await;
}

/// `app` serving with policies' embeddings on `provider`.
fn with_policy_embeddings(app: App, provider: &str) -> App {
    let mut state = app.state.clone();
    state.policy_embeddings = Some(portcullis_admin::PolicyEmbeddings {
        provider: provider.into(),
        model: "text-embedding-3-small".into(),
    });
    App {
        router: router(state.clone()),
        state,
        admin: app.admin,
    }
}

#[tokio::test]
async fn managed_config_gives_policies_an_embeddings_endpoint() {
    on_each_db(async |app| {
        let app = with_policy_embeddings(app, "emb");
        app.provider("Chat").await;
        app.provider("Emb").await;
        app.ok(
            "POST",
            "/api/v1/proxies",
            Some(json!({"name": "G", "provider": "chat"})),
        )
        .await;
        let (gw, token) = app.gateway("edge").await;
        app.ok(
            "POST",
            "/api/v1/proxies/g/deployments",
            Some(json!({"gateway": gw})),
        )
        .await;
        let config = async || {
            let (_, _, cfg) = app
                .call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[])
                .await;
            serde_json::from_value::<portcullis_types::managed::ManagedConfig>(cfg).unwrap()
        };
        // No policy attached: no policy engine, and the provider stays out.
        let cfg = config().await;
        assert!(cfg.config.policy_engine.is_none());
        assert_eq!(cfg.config.providers.len(), 1);

        app.ok(
            "POST",
            "/api/v1/proxies/g/policies",
            Some(json!({"name": "word-filter", "version": "1.0.0"})),
        )
        .await;
        app.ok(
            "POST",
            "/api/v1/proxies/g/deployments",
            Some(json!({"gateway": gw})),
        )
        .await;
        let cfg = config().await;
        let emb = cfg
            .config
            .policy_engine
            .as_ref()
            .and_then(|e| e.embeddings.clone())
            .expect("policy_engine.embeddings");
        assert_eq!(
            (emb.url.as_str(), emb.model.as_str()),
            ("http://127.0.0.1:9/v1/embeddings", "text-embedding-3-small")
        );
        // The key travels like provider keys: by variable name, in `secrets`.
        let var = emb.api_key_env.expect("api_key_env");
        assert_eq!(cfg.secrets[&var], "sk-Emb-secret");
        assert!(
            cfg.config
                .providers
                .iter()
                .any(|p| p.name == "emb" && p.api_key_env.as_deref() == Some(var.as_str()))
        );

        // A provider that cannot serve the policy engine: left out, the
        // rest of the configuration still served.
        app.ok(
            "POST",
            "/api/v1/providers",
            Some(json!({"name": "Claude", "type": "anthropic", "credentials": {"api_key": "k"}})),
        )
        .await;
        let other = with_policy_embeddings(
            App {
                router: app.router.clone(),
                state: app.state.clone(),
                admin: app.admin.clone(),
            },
            "claude",
        );
        let (s, _, cfg) = other
            .call_h("GET", "/api/v1/gateway/config", Some(&token), None, &[])
            .await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            cfg["config"]["policy_engine"].get("embeddings").is_none(),
            "{}",
            cfg["config"]["policy_engine"]
        );
        assert_eq!(
            cfg["config"]["proxies"][0]["policies"][0]["name"],
            "word-filter"
        );
    })
    .await;
}

#[test]
fn policy_embeddings_settings_come_in_pairs() {
    use portcullis_admin::PolicyEmbeddings;
    assert_eq!(PolicyEmbeddings::from_parts(None, None).unwrap(), None);
    let e = PolicyEmbeddings::from_parts(Some("emb".into()), Some("m".into()))
        .unwrap()
        .unwrap();
    assert_eq!((e.provider.as_str(), e.model.as_str()), ("emb", "m"));
    assert!(PolicyEmbeddings::from_parts(Some("emb".into()), None).is_err());
    assert!(PolicyEmbeddings::from_parts(None, Some("m".into())).is_err());
}

// ------------------------------------------------------------ audit

#[tokio::test]
async fn every_mutation_is_audited() {
    on_each_db(async |app| {
        app.provider("P").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "A"})))
            .await;
        app.ok(
            "PATCH",
            "/api/v1/proxies/a",
            Some(json!({"description": "d"})),
        )
        .await;
        let k = app
            .ok("POST", "/api/v1/proxies/a/keys", Some(json!({"name": "k"})))
            .await;
        app.ok(
            "POST",
            &format!(
                "/api/v1/proxies/a/keys/{}/revoke",
                k["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        // A rejected mutation leaves no entry.
        app.rejects(
            "POST",
            "/api/v1/proxies",
            json!({"name": "A"}),
            StatusCode::CONFLICT,
            "name",
        )
        .await;
        let log = app.ok("GET", "/api/v1/audit", None).await;
        let actions: Vec<&str> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "key.revoke",
                "key.create",
                "proxy.update",
                "proxy.create",
                "provider.create"
            ]
        );
        assert_eq!(log["items"][0]["actor"], "bootstrap (admin)");
        assert_eq!(log["items"][3]["resource"], "proxies/a");
        let page = app
            .ok(
                "GET",
                &format!("/api/v1/audit?limit=2&before={}", log["items"][1]["seq"]),
                None,
            )
            .await;
        assert_eq!(page["items"][0]["action"], "proxy.update");
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
    })
    .await;
}

// ------------------------------------------------------------ ownership

impl App {
    /// A token of `role` in `team` (or none): (token, id).
    async fn member(&self, name: &str, role: &str, team: Option<&str>) -> (String, String) {
        let v = self
            .ok(
                "POST",
                "/api/v1/tokens",
                Some(json!({"name": name, "role": role, "team": team})),
            )
            .await;
        assert_eq!(v["team"], json!(team), "{v}");
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    }

    /// The ids of the proxies `token` lists.
    async fn proxy_ids(&self, token: &str) -> Vec<String> {
        let (s, v) = self.call("GET", "/api/v1/proxies", Some(token), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn developers_reach_only_the_proxies_their_team_or_token_owns() {
    on_each_db(async |app| {
        app.provider("OpenAI").await;
        let (gw, _) = app.gateway("Edge").await;
        let (alice, _) = app.member("alice", "developer", Some("payments")).await;
        let (carol, _) = app.member("carol", "developer", Some("payments")).await;
        let (bob, bob_id) = app.member("bob", "developer", None).await;

        // Each creates a proxy; the owner is the team, or the token itself.
        let (s, a) = app
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&alice),
                Some(json!({"name": "Pay"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        assert_eq!(a["owner"], json!({"team": "payments"}));
        let (s, b) = app
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&bob),
                Some(json!({"name": "Bob"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["owner"], json!({"token": bob_id}));

        // Lists: developers see their own, a teammate the team's, admins all.
        assert_eq!(app.proxy_ids(&alice).await, ["pay"]);
        assert_eq!(app.proxy_ids(&carol).await, ["pay"]);
        assert_eq!(app.proxy_ids(&bob).await, ["bob"]);
        // (Listed by creation time, then id: both may share a millisecond.)
        let mut all = app.proxy_ids(&app.admin).await;
        all.sort();
        assert_eq!(all, ["bob", "pay"]);

        // The owners work with their proxies: keys, attachments, deployments.
        let (s, key) = app
            .call(
                "POST",
                "/api/v1/proxies/pay/keys",
                Some(&carol),
                Some(json!({"name": "app"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        let key_id = key["id"].as_str().unwrap().to_owned();
        let (s, att) = app
            .call(
                "POST",
                "/api/v1/proxies/pay/policies",
                Some(&alice),
                Some(json!({"name": "word-filter", "version": "1.0.0"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{att}");
        let att_id = att["id"].as_str().unwrap().to_owned();
        let (s, dep) = app
            .call(
                "POST",
                "/api/v1/proxies/pay/deployments",
                Some(&alice),
                Some(json!({"gateway": gw})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{dep}");
        let dep_id = dep["id"].as_str().unwrap().to_owned();
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies/bob/deployments",
                Some(&bob),
                Some(json!({"gateway": gw})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");

        // Bob reaches none of it: every endpoint answers what a missing
        // proxy answers, and nothing changes.
        let (_, missing) = app
            .call("GET", "/api/v1/proxies/nope", Some(&bob), None)
            .await;
        let attempts: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", "/api/v1/proxies/pay".into(), None),
            (
                "PATCH",
                "/api/v1/proxies/pay".into(),
                Some(json!({"description": "mine now"})),
            ),
            ("DELETE", "/api/v1/proxies/pay".into(), None),
            ("GET", "/api/v1/proxies/pay/revisions".into(), None),
            ("GET", "/api/v1/proxies/pay/keys".into(), None),
            (
                "POST",
                "/api/v1/proxies/pay/keys".into(),
                Some(json!({"name": "stolen"})),
            ),
            (
                "POST",
                format!("/api/v1/proxies/pay/keys/{key_id}/revoke"),
                None,
            ),
            ("GET", "/api/v1/proxies/pay/policies".into(), None),
            (
                "POST",
                "/api/v1/proxies/pay/policies".into(),
                Some(json!({"name": "word-filter", "version": "1.0.0"})),
            ),
            (
                "PATCH",
                format!("/api/v1/proxies/pay/policies/{att_id}"),
                Some(json!({"settings": {"words": ["x"]}})),
            ),
            (
                "DELETE",
                format!("/api/v1/proxies/pay/policies/{att_id}"),
                None,
            ),
            ("GET", "/api/v1/proxies/pay/deployments".into(), None),
            (
                "POST",
                "/api/v1/proxies/pay/deployments".into(),
                Some(json!({"gateway": gw})),
            ),
            (
                "POST",
                format!("/api/v1/proxies/pay/deployments/{dep_id}/stop"),
                None,
            ),
        ];
        for (method, path, body) in &attempts {
            let (s, v) = app.call(method, path, Some(&bob), body.clone()).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], missing["error"]["code"], "{v}");
            assert_eq!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .replace("pay", "nope"),
                missing["error"]["message"].as_str().unwrap(),
                "{v}"
            );
        }
        // The owners' view is unchanged: one revision more for the attach only.
        let p = app.ok("GET", "/api/v1/proxies/pay", None).await;
        assert_eq!(p["description"], Value::Null);
        assert_eq!(p["revision"], 2);
        assert_eq!(p["deployed_gateways"].as_array().unwrap().len(), 1);
        let keys = app.ok("GET", "/api/v1/proxies/pay/keys", None).await;
        assert_eq!(keys["items"].as_array().unwrap().len(), 1);
        assert_eq!(keys["items"][0]["status"], "active");

        // A gateway shows a developer only its own deployments.
        let (_, g) = app
            .call("GET", &format!("/api/v1/gateways/{gw}"), Some(&bob), None)
            .await;
        let proxies: Vec<&str> = g["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["proxy_id"].as_str().unwrap())
            .collect();
        assert_eq!(proxies, ["bob"], "{g}");
        let g = app.ok("GET", &format!("/api/v1/gateways/{gw}"), None).await;
        assert_eq!(g["deployments"].as_array().unwrap().len(), 2);
        // A base-path clash does not name another owner's proxy.
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&bob),
                Some(json!({"name": "Bob 2", "context": "/pay"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies/bob-2/deployments",
                Some(&bob),
                Some(json!({"gateway": gw})),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(
            !v["error"]["message"].as_str().unwrap().contains("`pay`"),
            "{v}"
        );

        // Admins change anyone's proxy and reassign owners.
        app.ok(
            "PATCH",
            "/api/v1/proxies/bob",
            Some(json!({"description": "by admin"})),
        )
        .await;
        let (s, v) = app
            .call(
                "PUT",
                "/api/v1/proxies/bob/owner",
                Some(&bob),
                Some(json!({"team": "payments"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        app.rejects(
            "PUT",
            "/api/v1/proxies/bob/owner",
            json!({"team": "payments", "token": bob_id}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "team",
        )
        .await;
        app.rejects(
            "PUT",
            "/api/v1/proxies/bob/owner",
            json!({"team": "Pay Ments"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "team",
        )
        .await;
        let (_, alice_id) = app.member("alice 2", "developer", Some("payments")).await;
        app.rejects(
            "PUT",
            "/api/v1/proxies/bob/owner",
            json!({"token": alice_id}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "token",
        )
        .await;
        let moved = app
            .ok(
                "PUT",
                "/api/v1/proxies/bob/owner",
                Some(json!({"team": "payments"})),
            )
            .await;
        assert_eq!(moved["owner"], json!({"team": "payments"}));
        let mut alices = app.proxy_ids(&alice).await;
        alices.sort();
        assert_eq!(alices, ["bob", "pay"]);
        assert_eq!(app.proxy_ids(&bob).await, ["bob-2"]);

        // A proxy nobody owns (made before ownership existed): admins only.
        sqlx::query("UPDATE proxies SET owner_team = NULL, owner_token = NULL WHERE id = 'bob-2'")
            .execute(&app.state.pool)
            .await
            .unwrap();
        assert_eq!(app.proxy_ids(&bob).await, Vec::<String>::new());
        let p = app.ok("GET", "/api/v1/proxies/bob-2", None).await;
        assert_eq!(p["owner"], Value::Null);

        // The audit log: every refusal, the owners given and changed.
        let log = app.ok("GET", "/api/v1/audit?limit=1000", None).await;
        let items = log["items"].as_array().unwrap();
        let denied: Vec<&Value> = items
            .iter()
            .filter(|e| e["action"] == "access.denied")
            .collect();
        assert_eq!(denied.len(), attempts.len(), "{log}");
        assert!(denied.iter().all(|e| e["resource"] == "proxies/pay"
            && e["detail"]["token"] == json!(bob_id)
            && e["detail"]["owner"] == json!({"team": "payments"})
            && e["actor"] == "bob (developer)"));
        let tried: Vec<&str> = denied
            .iter()
            .map(|e| e["detail"]["action"].as_str().unwrap())
            .collect();
        for action in [
            "proxy.update",
            "proxy.delete",
            "key.create",
            "key.revoke",
            "policy.attach",
            "policy.update",
            "policy.detach",
            "deployment.create",
            "deployment.stop",
        ] {
            assert!(tried.contains(&action), "{action} not audited: {tried:?}");
        }
        let owner = items.iter().find(|e| e["action"] == "proxy.owner").unwrap();
        assert_eq!(
            owner["detail"],
            json!({"from": {"token": bob_id}, "to": {"team": "payments"}})
        );
        let created = items
            .iter()
            .find(|e| e["action"] == "proxy.create" && e["resource"] == "proxies/pay")
            .unwrap();
        assert_eq!(created["detail"]["owner"], json!({"team": "payments"}));
        assert_eq!(created["actor"], "alice (developer, team payments)");
        let token = items
            .iter()
            .find(|e| e["action"] == "token.create")
            .unwrap();
        assert!(token["detail"].get("team").is_some(), "{token}");
    })
    .await;
}

// ------------------------------------------------------------ OpenAPI

#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let app = app_with("sqlite::memory:", default_hub()).await;
    let (s, doc) = app.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.push((method.clone(), path.clone()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            // Path parameters are declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(['{', '}']);
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{method} {path}: parameter {name} undeclared");
            }
        }
    }
    let mut routed: Vec<(String, String)> = portcullis_admin::routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_owned(), p.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap().to_owned());
                    } else {
                        refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    for r in all {
        let ptr = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(ptr).is_some(), "dangling {r}");
    }
    // Schemas are valid JSON Schema.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let mut s = schema.clone();
        // Refs point into the document; check each schema on its own terms.
        fn strip(v: &mut Value) {
            match v {
                Value::Object(m) => {
                    m.remove("$ref");
                    m.values_mut().for_each(strip);
                }
                Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        strip(&mut s);
        assert!(
            jsonschema::validator_for(&s).is_ok(),
            "schema {name} is not valid JSON Schema"
        );
    }
    // The document's Problem schema matches what errors look like.
    let (_, problem) = app.call("GET", "/api/v1/proxies", None, None).await;
    let mut problem_schema = doc["components"]["schemas"]["Problem"].clone();
    problem_schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    assert!(jsonschema::is_valid(&problem_schema, &problem), "{problem}");
}

// ------------------------------------------------------------ console

#[tokio::test]
async fn me_names_the_calling_tokens_role() {
    on_each_db(async |app| {
        let v = app.ok("GET", "/api/v1/me", None).await;
        assert_eq!(v["role"], "admin");
        assert_eq!(v["name"], "bootstrap");
        let dev = app.token("developer").await;
        let (s, v) = app.call("GET", "/api/v1/me", Some(&dev), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["role"], "developer");
        assert_eq!(v["team"], Value::Null);
        let (s, _) = app.call("GET", "/api/v1/me", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn a_policy_and_its_versions_manifest_come_from_the_hub() {
    on_each_db(async |app| {
        let v = app.ok("GET", "/api/v1/policies/word-filter", None).await;
        assert_eq!(v["versions"][0]["version"], "1.0.0");
        let v = app
            .ok("GET", "/api/v1/policies/word-filter/versions/1.0.0", None)
            .await;
        assert_eq!(v["settings_schema"]["required"], json!(["words"]));
        assert_eq!(v["defaults"], json!({"words": ["secret"]}));
        assert_eq!(v["sha256"], MODULE_SHA256);
        for path in [
            "/api/v1/policies/word-filter/versions/9.9.9",
            "/api/v1/policies/nope",
            "/api/v1/policies/Bad%20Name/versions/1.0.0",
            "/api/v1/policies/word-filter/versions/1.0.0%2F..",
        ] {
            let (s, v) = app.call("GET", path, Some(&app.admin), None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        }
    })
    .await;
    // Hub down: 503, as for attaching.
    let hub = || -> Hub {
        Arc::new(FakeHub {
            versions: HashMap::new(),
            down: true,
        })
    };
    on_each_db_with(hub, async |app| {
        let (s, v) = app
            .call(
                "GET",
                "/api/v1/policies/word-filter/versions/1.0.0",
                Some(&app.admin),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    })
    .await;
}

/// A stand-in gateway: answers every POST with what it was sent.
async fn echo_gateway() -> String {
    use axum::http::HeaderMap;
    let app = Router::new().fallback(
        async |headers: HeaderMap, uri: axum::http::Uri, body: String| {
            (
                [
                    ("x-portcullis-route", "echo"),
                    ("x-ratelimit-limit-tokens", "100"),
                ],
                axum::Json(json!({
                    "path": uri.path(),
                    "auth": headers.get("authorization").and_then(|v| v.to_str().ok()),
                    "sent": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
                })),
            )
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn try_relays_one_request_through_a_deployed_gateway() {
    let gw = echo_gateway().await;
    on_each_db(async |app| {
        app.provider("openai").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "chat"})))
            .await;
        app.ok(
            "POST",
            "/api/v1/gateways",
            Some(json!({"name": "edge", "url": gw.clone()})),
        )
        .await;
        let body =
            json!({"gateway": "edge", "key": "pc-k", "request": {"model": "m", "messages": []}});
        // Not deployed there yet: nothing is sent.
        app.rejects(
            "POST",
            "/api/v1/proxies/chat/try",
            body.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "gateway",
        )
        .await;
        app.ok(
            "POST",
            "/api/v1/proxies/chat/deployments",
            Some(json!({"gateway": "edge"})),
        )
        .await;
        let v = app
            .ok("POST", "/api/v1/proxies/chat/try", Some(body.clone()))
            .await;
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["url"], format!("{gw}/chat/chat/completions"));
        assert_eq!(v["headers"]["x-portcullis-route"], "echo");
        assert_eq!(v["headers"]["x-ratelimit-limit-tokens"], "100");
        assert_eq!(v["body"]["path"], "/chat/chat/completions");
        assert_eq!(v["body"]["auth"], "Bearer pc-k");
        assert_eq!(v["body"]["sent"]["model"], "m");
        // Only resource paths under the proxy.
        let mut bad = body.clone();
        bad["path"] = json!("../other/chat/completions");
        app.rejects(
            "POST",
            "/api/v1/proxies/chat/try",
            bad,
            StatusCode::UNPROCESSABLE_ENTITY,
            "path",
        )
        .await;
        // Another owner's proxy is a 404 like a missing one.
        let dev = app.token("developer").await;
        let (s, _) = app
            .call("POST", "/api/v1/proxies/chat/try", Some(&dev), Some(body))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn the_console_is_served_at_the_root_beside_the_api() {
    const FILES: portcullis_admin::console::ConsoleFiles = &[
        ("index.html", b"<!doctype html><div id=\"root\"></div>"),
        ("assets/index-1a2b3c.js", b"console.log(1)"),
    ];
    let pool = db::connect("sqlite::memory:").await.unwrap();
    let mut state = AppState::new(pool, Sealer::new([3u8; 32]).unwrap(), default_hub());
    let get = async |state: &AppState, path: &str| {
        let resp = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    };
    // Without console files (the admin crate alone), `/` is the API's 404.
    let (s, _, body) = get(&state, "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("not_found"), "{body}");
    state.console = Some(FILES);
    let (s, h, body) = get(&state, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(body.contains("id=\"root\""));
    let (s, h, _) = get(&state, "/assets/index-1a2b3c.js").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    let (s, h, body) = get(&state, "/api/v1/no-such-thing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h["content-type"], "application/json");
    assert!(body.contains("not_found"), "{body}");
    let (s, _, body) = get(&state, "/api/v1/health").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_audit_log_filters_by_action_and_resource_prefix() {
    on_each_db(async |app| {
        app.provider("openai").await;
        for name in ["chat", "chatter"] {
            app.ok("POST", "/api/v1/proxies", Some(json!({"name": name})))
                .await;
            app.ok(
                "POST",
                &format!("/api/v1/proxies/{name}/keys"),
                Some(json!({"name": "k"})),
            )
            .await;
        }
        let v = app.ok("GET", "/api/v1/audit?action=key.create", None).await;
        let resources: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].as_str().unwrap())
            .collect();
        assert_eq!(resources.len(), 2, "{v}");
        assert!(resources[0].starts_with("proxies/chatter/keys/"), "{v}");
        assert!(resources[1].starts_with("proxies/chat/keys/"), "{v}");
        // A prefix, both filters together, and a page of one.
        let v = app
            .ok("GET", "/api/v1/audit?resource=proxies/chat/", None)
            .await;
        let actions: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["key.create"], "{v}");
        let v = app
            .ok(
                "GET",
                "/api/v1/audit?resource=proxies/chat&action=proxy.create&limit=1",
                None,
            )
            .await;
        assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["items"][0]["resource"], "proxies/chatter", "{v}");
        let v = app.ok("GET", "/api/v1/audit?action=no.such", None).await;
        assert_eq!(v["items"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn spend_by_hour_for_the_last_hours() {
    on_each_db(async |app| {
        app.provider("openai").await;
        app.ok("POST", "/api/v1/proxies", Some(json!({"name": "chat"})))
            .await;
        let (gw, token) = app.gateway("edge").await;
        app.ok(
            "POST",
            "/api/v1/proxies/chat/deployments",
            Some(json!({"gateway": gw})),
        )
        .await;
        let hour = || chrono::Utc::now().format("%Y-%m-%dT%H:00").to_string();
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let before = hour();
        for batch in ["b1", "b2", "b2"] {
            let (s, v) = app
                .call(
                    "POST",
                    "/api/v1/gateway/heartbeat",
                    Some(&token),
                    Some(json!({"spend_batch": batch, "spend": [{"proxy_id": "chat", "key_id": "key_x", "model": "m",
                        "day": today, "requests": 2, "input_tokens": 10, "output_tokens": 5, "cost": 0.5}]})),
                )
                .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        }
        let after = hour();
        let v = app
            .ok(
                "GET",
                &format!("/api/v1/spend?group_by=hour,proxy&from={today}"),
                None,
            )
            .await;
        let items = v["items"].as_array().unwrap();
        // Two batches (the repeated one counted once), in this hour (or
        // the next, if the clock turned one meanwhile).
        let total: i64 = items.iter().map(|i| i["requests"].as_i64().unwrap()).sum();
        assert_eq!(total, 4, "{v}");
        for i in items {
            assert_eq!(i["proxy_id"], "chat", "{v}");
            let h = i["hour"].as_str().unwrap();
            assert!(h == before || h == after, "{h} not in {before}..{after}");
        }
        // The daily totals agree.
        let v = app
            .ok("GET", &format!("/api/v1/spend?group_by=day&from={today}"), None)
            .await;
        assert_eq!(v["items"][0]["requests"], 4, "{v}");
        let (s, v) = app
            .call("GET", "/api/v1/spend?group_by=minute", Some(&app.admin), None)
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    })
    .await;
}

// ------------------------------------------------------------ consumers

#[tokio::test]
async fn a_proxys_subscriptions_are_listed_for_its_owner_and_admins_only() {
    on_each_db(async |app| {
        app.provider("OpenAI").await;
        let owner = app.token("developer").await;
        let subscriber = app.token("developer").await;
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&owner),
                Some(json!({"name": "Shared Chat"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/proxies/shared-chat/plans",
                Some(&owner),
                Some(json!({"name": "gold", "needs_approval": true})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = app
            .call(
                "POST",
                "/api/v1/applications",
                Some(&subscriber),
                Some(json!({"name": "Billing Bot"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, sub) = app
            .call(
                "POST",
                "/api/v1/applications/billing-bot/subscriptions",
                Some(&subscriber),
                Some(json!({"proxy": "shared-chat", "plan": "gold"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{sub}");
        assert_eq!(sub["status"], "pending");

        // The proxy's owner and an admin see the pending subscription...
        for token in [&owner, &app.admin] {
            let (s, v) = app
                .call(
                    "GET",
                    "/api/v1/proxies/shared-chat/subscriptions",
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let items = v["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{v}");
            assert_eq!(items[0]["id"], sub["id"]);
            assert_eq!(items[0]["application_id"], "billing-bot");
            assert_eq!(items[0]["status"], "pending");
        }
        // ...the subscriber does not (another owner's proxy is not named).
        let (s, v) = app
            .call(
                "GET",
                "/api/v1/proxies/shared-chat/subscriptions",
                Some(&subscriber),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

        // Approved, it shows active.
        let (s, v) = app
            .call(
                "POST",
                &format!(
                    "/api/v1/subscriptions/{}/approve",
                    sub["id"].as_str().unwrap()
                ),
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, v) = app
            .call(
                "GET",
                "/api/v1/proxies/shared-chat/subscriptions",
                Some(&owner),
                None,
            )
            .await;
        assert_eq!(v["items"][0]["status"], "active", "{v}");
    })
    .await;
}
