//! The one mapping from gateway errors to OpenAI-shaped HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered to a client, in OpenAI's shape. Messages are fixed strings written
/// here: nothing from a request body or an upstream is ever echoed.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: &'static str,
    param: Option<&'static str>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    #[must_use]
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: &'static str,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            retry_after: None,
        }
    }
    /// Names the offending parameter (a header name).
    #[must_use]
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
    /// Adds `Retry-After` (seconds).
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 400.
    #[must_use]
    pub fn bad_request(code: &'static str, message: &'static str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }
    /// 401.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "a valid API key is required: Authorization: Bearer veil_...",
        )
    }
    /// 404.
    #[must_use]
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            "no such route",
        )
    }
    /// 429.
    #[must_use]
    pub fn rate_limited(code: &'static str, message: &'static str, retry_after: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            code,
            message,
        )
        .retry_after(retry_after)
    }
    /// 500: details go to the log, never to the client.
    #[must_use]
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "internal error",
        )
    }
    /// 502.
    #[must_use]
    pub fn bad_gateway() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "backend_unavailable",
            "the backend could not be reached",
        )
    }
    /// 503: the database (keys and ledger) cannot be reached; nothing is served unbilled.
    #[must_use]
    pub fn ledger_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "ledger_unavailable",
            "the gateway cannot reach its database; retry later",
        )
        .retry_after(1)
    }
    /// 503.
    #[must_use]
    pub fn no_backend() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no_verified_backend",
            "no backend with verified evidence is available",
        )
        .retry_after(5)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

/// A JSON response (axum's `json` feature is not enabled in the workspace).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(_) => ApiError::internal().into_response(),
        }
    }
}
