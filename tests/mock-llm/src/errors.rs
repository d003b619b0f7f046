//! Each provider's error envelope, so a gateway's error translation and
//! retry classification are tested against the shapes it will really see.
//!
//! | provider  | body | extra |
//! | --------- | ---- | ----- |
//! | OpenAI    | `{"error":{"message","type","param","code"}}` | |
//! | Azure     | `{"error":{"code","message"}}` for 401/403/404/429 (the API gateway in front of the model), OpenAI's shape otherwise | |
//! | Mistral   | `{"message","request_id"}` for 401, `{"object":"error","message","type","param","code"}` otherwise | |
//! | Anthropic | `{"type":"error","error":{"type","message"},"request_id"}` | `request-id` header |
//! | Gemini    | `{"error":{"code","message","status"}}` | |
//! | Bedrock   | `{"message"}` | `x-amzn-ErrorType` header |

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::reply::Provider;

/// An error the mock answers with, before it is put in a provider's shape.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The provider's error kind: OpenAI `type`, Anthropic `error.type`,
    /// Gemini `status`, Bedrock `x-amzn-ErrorType`, Mistral `type`. Derived
    /// from the status when absent.
    pub kind: Option<&'static str>,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
    /// OpenAI's `param`.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: None,
            code: None,
            param: None,
        }
    }

    pub(crate) fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    pub(crate) fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub(crate) fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The error a behaviour injects for `status`, with the provider's usual
    /// message for it.
    pub(crate) fn injected(provider: Provider, status: StatusCode) -> Self {
        Self::new(status, injected_message(provider, status))
    }
}

/// The request id the mock reports for request `seq`, in the provider's
/// format.
pub(crate) fn request_id(provider: Provider, seq: u64) -> String {
    match provider {
        Provider::Anthropic => format!("req_mock{seq:016}"),
        // AWS request ids are UUIDs.
        Provider::Bedrock => format!("00000000-0000-4000-8000-{seq:012}"),
        _ => format!("req-mock-{seq:016}"),
    }
}

/// Renders `error` in `provider`'s shape.
pub(crate) fn render(provider: Provider, seq: u64, error: &ApiError) -> Response {
    let status = error.status;
    let message = error.message.as_str();
    let body = match provider {
        Provider::OpenAi => openai_body(error),
        Provider::Azure => match status.as_u16() {
            401 | 403 | 404 | 429 => {
                json!({"error": {"code": status.as_u16().to_string(), "message": message}})
            }
            _ => openai_body(error),
        },
        Provider::Mistral => match status.as_u16() {
            401 => json!({"message": message, "request_id": request_id(provider, seq)}),
            _ => json!({
                "object": "error",
                "message": message,
                "type": error.kind.unwrap_or_else(|| mistral_type(status)),
                "param": error.param,
                "code": error.code,
            }),
        },
        Provider::Anthropic => json!({
            "type": "error",
            "error": {
                "type": error.kind.unwrap_or_else(|| anthropic_type(status)),
                "message": message,
            },
            "request_id": request_id(provider, seq),
        }),
        Provider::Gemini => json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "status": error.kind.unwrap_or_else(|| gemini_status(status)),
            }
        }),
        Provider::Bedrock => json!({"message": message}),
    };
    with_provider_headers(provider, status, error.kind, body)
}

/// Renders a behaviour's verbatim `body` with the provider's error headers.
pub(crate) fn render_custom(provider: Provider, status: StatusCode, body: Value) -> Response {
    with_provider_headers(provider, status, None, body)
}

fn with_provider_headers(
    provider: Provider,
    status: StatusCode,
    kind: Option<&'static str>,
    body: Value,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if provider == Provider::Bedrock {
        let kind = kind.unwrap_or_else(|| bedrock_type(status));
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    }
    response
}

fn openai_body(error: &ApiError) -> Value {
    let default_code = match error.status.as_u16() {
        429 => Some("rate_limit_exceeded"),
        _ => None,
    };
    json!({
        "error": {
            "message": error.message,
            "type": error.kind.unwrap_or_else(|| openai_type(error.status)),
            "param": error.param,
            "code": error.code.or(default_code),
        }
    })
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 => "request_forbidden",
        429 => "requests",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

fn mistral_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limited",
        s if s >= 500 => "internal_server_error",
        _ => "invalid_request_error",
    }
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Google's canonical status names (google.rpc.Code) by HTTP status.
fn gemini_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

fn bedrock_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    }
}

/// The message each provider usually sends with `status`.
fn injected_message(provider: Provider, status: StatusCode) -> String {
    let code = status.as_u16();
    let known = match (provider, code) {
        (Provider::OpenAi, 429) => "Rate limit reached for requests. Please try again later.",
        (Provider::OpenAi | Provider::Azure, 500) => {
            "The server had an error while processing your request. Sorry about that!"
        }
        (Provider::OpenAi | Provider::Azure, 503) => {
            "The engine is currently overloaded, please try again later."
        }
        (Provider::Azure, 429) => {
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API have exceeded call rate limit of your current pricing tier. Please retry after the time in the retry-after header."
        }
        (Provider::Mistral, 429) => "Requests rate limit exceeded",
        (Provider::Anthropic, 429) => {
            "This request would exceed the rate limit for your organization. Please try again later."
        }
        (Provider::Anthropic, 500) => "Internal server error",
        (Provider::Anthropic, 529) => "Overloaded",
        (Provider::Gemini, 429) => "Resource has been exhausted (e.g. check quota).",
        (Provider::Gemini, 500) => {
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        }
        (Provider::Gemini, 503) => "The model is overloaded. Please try again later.",
        (Provider::Bedrock, 429) => "Too many requests, please wait before trying again.",
        (Provider::Bedrock, 500) => {
            "The system encountered an unexpected error during processing. Try your request again."
        }
        (Provider::Bedrock, 503) => "The service is temporarily unable to handle the request.",
        _ => "",
    };
    if known.is_empty() {
        format!(
            "{} (injected by the mock LLM)",
            status.canonical_reason().unwrap_or("Error")
        )
    } else {
        known.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_provider_has_its_shape() {
        let error = ApiError::injected(Provider::OpenAi, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            body_of(render(Provider::OpenAi, 1, &error)).await,
            json!({"error": {
                "message": "Rate limit reached for requests. Please try again later.",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"
            }})
        );

        let error = ApiError::injected(Provider::Anthropic, StatusCode::from_u16(529).unwrap());
        assert_eq!(
            body_of(render(Provider::Anthropic, 7, &error)).await,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                   "request_id": "req_mock0000000000000007"})
        );

        let error = ApiError::injected(Provider::Gemini, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_of(render(Provider::Gemini, 1, &error)).await,
            json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                   "status": "UNAVAILABLE"}})
        );

        let error = ApiError::injected(Provider::Bedrock, StatusCode::TOO_MANY_REQUESTS);
        let response = render(Provider::Bedrock, 1, &error);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "ThrottlingException"
        );
        assert_eq!(
            body_of(response).await,
            json!({"message": "Too many requests, please wait before trying again."})
        );

        let error = ApiError::injected(Provider::Azure, StatusCode::TOO_MANY_REQUESTS);
        let body = body_of(render(Provider::Azure, 1, &error)).await;
        assert_eq!(body["error"]["code"], "429");

        let error = ApiError::injected(Provider::Mistral, StatusCode::IM_A_TEAPOT);
        assert_eq!(
            body_of(render(Provider::Mistral, 1, &error)).await,
            json!({"object": "error", "message": "I'm a teapot (injected by the mock LLM)",
                   "type": "invalid_request_error", "param": null, "code": null})
        );
    }
}
