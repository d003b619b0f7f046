//! The gateway's error type: every failure a client can see, rendered as the
//! OpenAI error envelope (or the inbound format's own error shape).

use portcullis_types::{ErrorBody, ErrorEnvelope};

/// Where an error came from; routing, retries and metrics need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something wrong.
    Downstream,
    /// The provider failed or answered with an error.
    Upstream,
    /// A policy rejected the request.
    Policy,
    /// A bug or resource problem in the gateway.
    Internal,
}

/// A low-cardinality label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    /// The key may not do this (its scope).
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Policy,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamConnect,
    UpstreamProtocol,
    /// The client went away before the answer was delivered (status 499).
    ClientCancelled,
    Internal,
}

impl ErrorKind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Policy => "policy",
            ErrorKind::UpstreamStatus => "upstream_status",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::ClientCancelled => "client_cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error the gateway answers a request with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub status: u16,
    pub kind: ErrorKind,
    pub source: ErrorSource,
    /// OpenAI's `type` field.
    pub error_type: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Whether another route could succeed where this one failed.
    pub retryable: bool,
    /// Extra response headers (e.g. `retry-after`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status,
            self.kind.label(),
            self.message
        )
    }
}

impl std::error::Error for GatewayError {}

impl GatewayError {
    fn new(
        status: u16,
        kind: ErrorKind,
        source: ErrorSource,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            kind,
            source,
            error_type,
            message: message.into(),
            param: None,
            code: None,
            retryable: false,
            headers: Vec::new(),
        }
    }

    /// 400: the request is malformed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            400,
            ErrorKind::InvalidRequest,
            ErrorSource::Downstream,
            "invalid_request_error",
            message,
        )
    }

    /// 400 naming the offending parameter.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::invalid_request(message);
        e.param = Some(param.into());
        e
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            401,
            ErrorKind::Authentication,
            ErrorSource::Downstream,
            "authentication_error",
            message,
        );
        e.code = Some("invalid_api_key".into());
        e
    }

    /// 403: the key may not do this; `param` names what was refused
    /// (`model`, `format`, `resource`), `code` says it in one word.
    pub fn forbidden(code: &str, param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            403,
            ErrorKind::Forbidden,
            ErrorSource::Downstream,
            "permission_error",
            message,
        );
        e.code = Some(code.into());
        e.param = Some(param.into());
        e
    }

    /// 404: no such proxy, resource or model.
    pub fn not_found(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            404,
            ErrorKind::NotFound,
            ErrorSource::Downstream,
            "invalid_request_error",
            message,
        );
        e.code = Some("not_found".into());
        e
    }

    /// 404 for a model the proxy does not serve.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::not_found(format!(
            "The model `{model}` does not exist or is not served by this proxy."
        ));
        e.param = Some("model".into());
        e.code = Some("model_not_found".into());
        e
    }

    /// 405: the resource exists but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            405,
            ErrorKind::InvalidRequest,
            ErrorSource::Downstream,
            "invalid_request_error",
            message,
        )
    }

    /// 413: the body is over the configured limit.
    pub fn payload_too_large(limit: usize) -> Self {
        let mut e = Self::new(
            413,
            ErrorKind::PayloadTooLarge,
            ErrorSource::Downstream,
            "invalid_request_error",
            format!("Request body is larger than the limit of {limit} bytes."),
        );
        e.code = Some("request_too_large".into());
        e
    }

    /// An error status answered by the provider, passed on with its message.
    pub fn upstream_status(status: u16, message: impl Into<String>) -> Self {
        let (error_type, kind) = match status {
            400 | 404 | 409 | 422 => ("invalid_request_error", ErrorKind::UpstreamStatus),
            401 | 403 => ("authentication_error", ErrorKind::UpstreamStatus),
            429 => ("rate_limit_exceeded", ErrorKind::RateLimited),
            _ => ("api_error", ErrorKind::UpstreamStatus),
        };
        // A provider's 401/403 means the gateway's provider credentials are
        // wrong, which is the gateway operator's problem, not the client's:
        // surface it as a 502 so clients do not think their key is bad.
        let client_status = match status {
            401 | 403 => 502,
            s if (400..600).contains(&s) => s,
            _ => 502,
        };
        let mut e = Self::new(
            client_status,
            kind,
            ErrorSource::Upstream,
            error_type,
            message,
        );
        e.retryable = status == 429 || status >= 500;
        e.code = Some(format!("upstream_{status}"));
        e
    }

    /// 504: the provider did not answer in time.
    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            504,
            ErrorKind::UpstreamTimeout,
            ErrorSource::Upstream,
            "timeout_error",
            message,
        );
        e.retryable = true;
        e.code = Some("upstream_timeout".into());
        e
    }

    /// 502: the provider could not be reached.
    pub fn upstream_connect(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            502,
            ErrorKind::UpstreamConnect,
            ErrorSource::Upstream,
            "api_error",
            message,
        );
        e.retryable = true;
        e.code = Some("upstream_unavailable".into());
        e
    }

    /// 502: the provider answered something that could not be understood.
    pub fn upstream_protocol(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            502,
            ErrorKind::UpstreamProtocol,
            ErrorSource::Upstream,
            "api_error",
            message,
        );
        e.code = Some("bad_upstream_response".into());
        e
    }

    /// 502: the provider's answer is larger than the gateway holds back
    /// for response policies (`limits.max_held_response_bytes`).
    pub fn held_too_large(limit: usize) -> Self {
        let mut e = Self::upstream_protocol(format!(
            "The provider's answer is larger than the {limit} bytes the gateway holds for response policies."
        ));
        e.code = Some("response_too_large".into());
        e
    }

    /// 503: the gateway holds no valid credential for a provider (its
    /// token exchange or credential chain failed, or has not answered
    /// yet). The operator's problem, not the client's; another route may
    /// still serve the request, so it is retryable.
    pub fn provider_auth(provider: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            503,
            ErrorKind::UpstreamConnect,
            ErrorSource::Upstream,
            "api_error",
            format!(
                "The gateway has no valid credential for provider `{provider}`: {}",
                message.into()
            ),
        );
        e.retryable = true;
        e.code = Some("provider_auth_unavailable".into());
        e
    }

    /// 500: a gateway bug; the details go to the log, not the client.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            ErrorKind::Internal,
            ErrorSource::Internal,
            "server_error",
            message,
        )
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The OpenAI error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.message.clone(),
            kind: self.error_type.to_owned(),
            param: self.param.clone(),
            code: self.code.clone(),
        }
    }

    /// The OpenAI error envelope as JSON bytes.
    pub fn to_openai_json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorEnvelope { error: self.body() })
            .unwrap_or_else(|_| b"{\"error\":{\"message\":\"error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_fields() {
        let e = GatewayError::invalid_param("messages", "messages must not be empty");
        let v: serde_json::Value = serde_json::from_slice(&e.to_openai_json()).unwrap();
        assert_eq!(v["error"]["message"], "messages must not be empty");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert!(v["error"]["code"].is_null());
    }

    #[test]
    fn provider_auth_failure_is_not_blamed_on_the_client() {
        let e = GatewayError::upstream_status(401, "bad key");
        assert_eq!(e.status, 502);
        assert!(!e.retryable);
        assert!(GatewayError::upstream_status(503, "x").retryable);
        assert_eq!(GatewayError::upstream_status(429, "x").status, 429);
    }
}
