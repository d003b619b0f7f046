//! The providers' model lists, in each one's wire format, so model
//! discovery is tested without the internet:
//!
//! - OpenAI `GET /v1/models` and Mistral `GET /mistral/v1/models`:
//!   `{"object":"list","data":[{"id",...}]}`, one page;
//! - Anthropic `GET /v1/models` (told from OpenAI's by its
//!   `anthropic-version` header): pages of `limit` (default 20) after
//!   `after_id`, with `has_more`, `first_id` and `last_id`;
//! - Gemini `GET /v1beta/models`: pages of `pageSize` (default 50) with an
//!   opaque `nextPageToken`, names `models/...` and their
//!   `supportedGenerationMethods`;
//! - Bedrock's control plane `GET /foundation-models`:
//!   `{"modelSummaries":[...]}`, one page, SigV4-signed.
//!
//! Tests set the lists (`PUT /_mock/models`), and a smaller page size to
//! exercise pagination; behaviours fail them like any provider endpoint.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::exchange::{Exchange, Outcome};
use crate::reply::Provider;

/// What `PUT /_mock/models` takes. A provider left out keeps its list;
/// one never set serves its default list (`defaults`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLists {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mistral: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemini: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<Vec<String>>,
    /// Largest page Anthropic and Gemini answer, below what the client
    /// asks for (default: what the client asks for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<usize>,
}

fn owned(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|s| (*s).to_owned()).collect())
}

impl ModelLists {
    /// The lists a fresh mock serves.
    pub fn defaults() -> Self {
        ModelLists {
            openai: owned(&[
                "gpt-4o",
                "gpt-4o-mini",
                "gpt-4.1",
                "gpt-4.1-mini",
                "o4-mini",
                "text-embedding-3-small",
                "text-embedding-3-large",
            ]),
            mistral: owned(&[
                "mistral-large-latest",
                "mistral-small-latest",
                "codestral-latest",
                "mistral-embed",
            ]),
            anthropic: owned(&[
                "claude-sonnet-4-5-20250929",
                "claude-opus-4-1-20250805",
                "claude-3-5-haiku-20241022",
            ]),
            gemini: owned(&[
                "gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-embedding-001",
                "imagen-4.0-generate-001",
            ]),
            bedrock: owned(&[
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                "amazon.titan-embed-text-v2:0",
                "meta.llama3-70b-instruct-v1:0",
            ]),
            page_size: None,
        }
    }

    /// Sets the lists `update` gives, keeping the others.
    pub fn merge(&mut self, update: ModelLists) {
        let ModelLists {
            openai,
            mistral,
            anthropic,
            gemini,
            bedrock,
            page_size,
        } = update;
        let set = |slot: &mut Option<Vec<String>>, v: Option<Vec<String>>| {
            if v.is_some() {
                *slot = v;
            }
        };
        set(&mut self.openai, openai);
        set(&mut self.mistral, mistral);
        set(&mut self.anthropic, anthropic);
        set(&mut self.gemini, gemini);
        set(&mut self.bedrock, bedrock);
        if page_size.is_some() {
            self.page_size = page_size.filter(|n| *n > 0);
        }
    }

    /// The list `provider` serves: the one set, else its default.
    fn of(&self, provider: Provider) -> Vec<String> {
        let pick = |l: &ModelLists| match provider {
            Provider::OpenAi | Provider::Azure => l.openai.clone(),
            Provider::Mistral => l.mistral.clone(),
            Provider::Anthropic => l.anthropic.clone(),
            Provider::Gemini => l.gemini.clone(),
            Provider::Bedrock => l.bedrock.clone(),
        };
        pick(self)
            .or_else(|| pick(&Self::defaults()))
            .unwrap_or_default()
    }
}

/// `GET /v1/models` and `GET /mistral/v1/models`, OpenAI's shape.
pub(crate) fn openai(ex: &mut Exchange) -> Outcome {
    if let Err(error) = crate::openai::check_access(ex) {
        return Outcome::Error(error);
    }
    let owner = match ex.provider {
        Provider::Mistral => "mistralai",
        _ => "openai",
    };
    let data: Vec<Value> = ex
        .model_lists()
        .of(ex.provider)
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": owner}))
        .collect();
    Outcome::Json {
        body: json!({"object": "list", "data": data}),
        usage: None,
    }
}

/// A query parameter as a page size in `1..=max`, `default` when absent.
fn page_size(ex: &Exchange, name: &str, default: usize, max: usize) -> Result<usize, String> {
    match ex.query_param(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name}: must be an integer from 1 to {max}")),
        },
    }
}

/// `GET /v1/models` with `anthropic-version`: Anthropic's pages.
pub(crate) fn anthropic(ex: &mut Exchange) -> Outcome {
    if let Err(error) = crate::anthropic::check_headers(ex) {
        return Outcome::Error(error);
    }
    let limit = match page_size(ex, "limit", 20, 1000) {
        Ok(n) => n,
        Err(m) => return Outcome::Error(ApiError::new(StatusCode::BAD_REQUEST, m)),
    };
    let lists = ex.model_lists();
    let limit = lists.page_size.map_or(limit, |p| p.min(limit));
    let all = lists.of(Provider::Anthropic);
    let start = match ex.query_param("after_id") {
        None => 0,
        Some(after) => match all.iter().position(|m| *m == after) {
            Some(i) => i + 1,
            None => {
                return Outcome::Error(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("after_id: model `{after}` not found"),
                ));
            }
        },
    };
    let page: Vec<&String> = all.iter().skip(start).take(limit).collect();
    let data: Vec<Value> = page
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"}))
        .collect();
    Outcome::Json {
        body: json!({
            "data": data,
            "has_more": start + page.len() < all.len(),
            "first_id": page.first(),
            "last_id": page.last(),
        }),
        usage: None,
    }
}

/// What a Gemini model offers, by its name: embedding models embed,
/// Imagen predicts, the rest generate.
fn gemini_methods(name: &str) -> Value {
    if name.contains("embedding") {
        json!(["embedContent", "countTextTokens"])
    } else if name.starts_with("imagen") {
        json!(["predict"])
    } else {
        json!(["generateContent", "countTokens", "createCachedContent"])
    }
}

/// The opaque page token of the page starting at `offset`: characters a
/// client must percent-encode in a query, as real tokens have.
fn gemini_token(offset: usize) -> String {
    format!("Cg+{offset}/=")
}

/// `GET /v1beta/models`: Gemini's pages.
pub(crate) fn gemini(ex: &mut Exchange) -> Outcome {
    if let Err(error) = crate::gemini::check_key(ex) {
        return Outcome::Error(error);
    }
    let size = match page_size(ex, "pageSize", 50, 1000) {
        Ok(n) => n,
        Err(m) => return Outcome::Error(ApiError::new(StatusCode::BAD_REQUEST, m)),
    };
    let lists = ex.model_lists();
    let size = lists.page_size.map_or(size, |p| p.min(size));
    let all = lists.of(Provider::Gemini);
    let start = match ex.query_param("pageToken") {
        None => 0,
        Some(t) => match t
            .strip_prefix("Cg+")
            .and_then(|r| r.strip_suffix("/="))
            .and_then(|n| n.parse().ok())
        {
            Some(n) => n,
            None => {
                return Outcome::Error(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Invalid page token.",
                ));
            }
        },
    };
    let models: Vec<Value> = all
        .iter()
        .skip(start)
        .take(size)
        .map(|m| {
            json!({
                "name": format!("models/{m}"),
                "version": "001",
                "displayName": m,
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods": gemini_methods(m),
            })
        })
        .collect();
    let mut body = json!({ "models": models });
    if start + size < all.len() {
        body["nextPageToken"] = json!(gemini_token(start + size));
    }
    Outcome::Json { body, usage: None }
}

/// `GET /foundation-models`: Bedrock's control-plane list.
pub(crate) fn bedrock(ex: &mut Exchange) -> Outcome {
    if let Err(error) = crate::bedrock::check_signature(ex) {
        return Outcome::Error(error);
    }
    let summaries: Vec<Value> = ex
        .model_lists()
        .of(Provider::Bedrock)
        .iter()
        .map(|id| {
            let provider = id.split('.').next().unwrap_or("amazon");
            let output = if id.contains("embed") {
                "EMBEDDING"
            } else {
                "TEXT"
            };
            json!({
                "modelArn": format!("arn:aws:bedrock:us-east-1::foundation-model/{id}"),
                "modelId": id,
                "modelName": id,
                "providerName": provider,
                "inputModalities": ["TEXT"],
                "outputModalities": [output],
                "responseStreamingSupported": output == "TEXT",
                "customizationsSupported": [],
                "inferenceTypesSupported": ["ON_DEMAND"],
                "modelLifecycle": {"status": "ACTIVE"},
            })
        })
        .collect();
    Outcome::Json {
        body: json!({ "modelSummaries": summaries }),
        usage: None,
    }
}

/// Parses the body of `PUT /_mock/models`.
pub(crate) fn parse_update(body: &[u8]) -> Result<ModelLists, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// The lists by provider, for `GET /_mock/models`.
pub(crate) fn view(lists: &ModelLists) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    for p in [
        Provider::OpenAi,
        Provider::Mistral,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::Bedrock,
    ] {
        out.insert(p.name(), json!(lists.of(p)));
    }
    out.insert("page_size", json!(lists.page_size));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testkit::{BEARER, Mock};

    const ANTHROPIC: [(&str, &str); 2] = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];

    #[tokio::test]
    async fn anthropic_pages_follow_after_id() {
        let mock = Mock::start().await;
        mock.put_models(json!({"anthropic": ["a", "b", "c"], "page_size": 2}))
            .await;
        let (status, _, page) = mock.get("/v1/models?limit=1000", &ANTHROPIC).await;
        assert_eq!(status, 200);
        assert_eq!(page["data"][1]["id"], "b");
        assert_eq!(page["data"][0]["type"], "model");
        assert_eq!(
            (page["has_more"].clone(), page["last_id"].clone()),
            (json!(true), json!("b"))
        );
        let (_, _, page) = mock
            .get("/v1/models?limit=1000&after_id=b", &ANTHROPIC)
            .await;
        assert_eq!(
            page["data"],
            json!([{"type": "model", "id": "c", "display_name": "c", "created_at": "2025-01-01T00:00:00Z"}])
        );
        assert_eq!(page["has_more"], false);
        // Without anthropic-version the same path is OpenAI's list.
        let (_, _, list) = mock.get("/v1/models", &[BEARER]).await;
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "gpt-4o");
        let (status, _, _) = mock
            .get("/v1/models", &[("anthropic-version", "2023-06-01")])
            .await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn gemini_pages_and_methods() {
        let mock = Mock::start().await;
        mock.put_models(json!({"page_size": 3})).await;
        let key = [("x-goog-api-key", "AIza")];
        let (status, _, page) = mock.get("/v1beta/models?pageSize=1000", &key).await;
        assert_eq!(status, 200);
        assert_eq!(page["models"][0]["name"], "models/gemini-2.5-pro");
        assert_eq!(
            page["models"][2]["supportedGenerationMethods"][0],
            "embedContent"
        );
        let token = page["nextPageToken"].as_str().unwrap().to_owned();
        let encoded = token
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let (_, _, page) = mock
            .get(
                &format!("/v1beta/models?pageSize=1000&pageToken={encoded}"),
                &key,
            )
            .await;
        assert_eq!(
            page["models"][0]["supportedGenerationMethods"],
            json!(["predict"])
        );
        assert!(page.get("nextPageToken").is_none());
        let (status, _, _) = mock.get("/v1beta/models", &[]).await;
        assert_eq!(status, 403);
    }

    #[tokio::test]
    async fn bedrock_lists_foundation_models_and_lists_can_fail() {
        let mock = Mock::start().await;
        let auth = [
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
            ),
            ("x-amz-date", "20250101T000000Z"),
        ];
        let (status, _, list) = mock.get("/foundation-models", &auth).await;
        assert_eq!(status, 200);
        assert_eq!(
            list["modelSummaries"][1]["outputModalities"],
            json!(["EMBEDDING"])
        );
        mock.behaviour(json!({"status": 503, "method": "GET", "path_contains": "/foundation-models", "times": 1}))
            .await;
        let (status, _, body) = mock.get("/foundation-models", &auth).await;
        assert_eq!(status, 503);
        assert!(body["message"].is_string(), "{body}");
        let (status, _, _) = mock.get("/foundation-models", &[]).await;
        assert_eq!(status, 403);
    }
}
