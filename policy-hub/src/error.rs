//! The hub's one API error type.
//!
//! Every failure is `{"error":{"code","message","field"}}` with a 4xx or
//! 5xx status; `field` names what was wrong in the request (a JSON path
//! into the publish body such as `manifest.defaults/limit`, or a
//! path or query parameter), so a CLI or the admin UI can point at it.
//! Internal errors are logged and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or fails validation (400).
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// Missing or wrong publisher token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such policy, version or module (404).
    #[error("{message}")]
    NotFound {
        message: String,
        field: Option<String>,
    },
    /// The version already exists (409): versions are immutable.
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// The module or body is over the hub's size limit (413).
    #[error("{message}")]
    TooLarge {
        message: String,
        field: Option<String>,
    },
    /// A bug or a database failure (500); details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "version_exists",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. }
            | ApiError::NotFound { field, .. }
            | ApiError::Conflict { field, .. }
            | ApiError::TooLarge { field, .. } => field.as_deref(),
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) | ApiError::Internal(_) => None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "hub request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = Envelope {
            error: Body {
                code: self.code(),
                message,
                field: self.field(),
            },
        };
        (status, Json(body)).into_response()
    }
}
