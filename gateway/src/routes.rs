//! The HTTP surface, thin: the client API, the admin API, health and metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::auth::NewKey;
use crate::error::ApiError;
use crate::error::Json;
use crate::proxy;
use crate::store::{Period, aggregate};

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/.well-known/ohttp-gateway", get(ohttp_keys))
        .route("/v1/models", get(models))
        .route("/v1/ohttp", post(proxy::ohttp))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/keys", get(admin_list_keys).post(admin_create_key))
        .route("/admin/keys/{name}/revoke", post(admin_revoke_key))
        .route("/admin/keys/{name}/limits", post(admin_set_limits))
        .route("/admin/usage", get(admin_usage))
        .route("/admin/backends", get(admin_backends))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn attestation(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let routes = s.registry.routes();
    let etag = routes.etag.clone();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        routes.attestation.clone(),
    )
        .into_response()
}

async fn ohttp_keys(State(s): State<Arc<AppState>>) -> Response {
    let routes = s.registry.routes();
    if routes.live.is_empty() {
        return ApiError::no_backend().into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/ohttp-keys")],
        routes.ohttp_keys.clone(),
    )
        .into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let routes = s.registry.routes();
    let mut seen = std::collections::BTreeMap::new();
    for live in &routes.live {
        for m in &live.models {
            seen.entry(m.id.clone()).or_insert_with(|| {
                serde_json::json!({
                    "id": m.id,
                    "object": "model",
                    "owned_by": "veil",
                    "kind": m.kind,
                    "model_manifest_digest": live.identity.model_manifest_digest().to_string(),
                })
            });
        }
    }
    let data: Vec<_> = seen.into_values().collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    let n = s.registry.routes().live.len();
    let status = if n > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if n > 0 { "ok" } else { "no_verified_backend" },
            "routable_backends": n,
        })),
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

fn admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.admin else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "admin_disabled",
            "the admin API is off: start the gateway with --admin-token",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_admin_token",
            "a valid admin token is required",
        ))
    }
}

fn internal(e: &anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "admin request failed");
    ApiError::internal()
}

async fn admin_list_keys(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    match s.store.list_keys().await {
        Ok(keys) => Json(serde_json::json!({ "keys": keys })).into_response(),
        Err(e) => internal(&e).into_response(),
    }
}

/// `POST /admin/keys` and `POST /admin/keys/{name}/limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u32>,
    #[serde(default)]
    max_streams: Option<u32>,
}

fn parse_body(body: &[u8]) -> Result<KeyBody, ApiError> {
    serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request(
            "invalid_body",
            "expected JSON {\"name\", \"rpm\", \"tpm\", \"max_streams\"}",
        )
    })
}

/// A key name: what logs and metrics show, so plain and short.
#[must_use]
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn admin_create_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(name) = b.name.filter(|n| valid_key_name(n)) else {
        return ApiError::bad_request(
            "invalid_name",
            "name: 1 to 64 of letters, digits, '.', '_', '-'",
        )
        .param("name")
        .into_response();
    };
    let key = match NewKey::generate() {
        Ok(k) => k,
        Err(e) => return internal(&e).into_response(),
    };
    match s
        .store
        .create_key(&name, &key.hash(), b.rpm, b.tpm, b.max_streams)
        .await
    {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "name": name, "key": key.secret() })),
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "key_exists",
            "a key with that name already exists",
        )
        .into_response(),
    }
}

async fn admin_revoke_key(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    match s.store.revoke_key(&name).await {
        Ok(true) => Json(serde_json::json!({ "name": name, "revoked": true })).into_response(),
        Ok(false) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "key_not_found",
            "no active key has that name",
        )
        .into_response(),
        Err(e) => internal(&e).into_response(),
    }
}

async fn admin_set_limits(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    let b = match parse_body(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match s.store.set_limits(&name, b.rpm, b.tpm, b.max_streams).await {
        Ok(true) => Json(serde_json::json!({ "name": name })).into_response(),
        Ok(false) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "key_not_found",
            "no key has that name",
        )
        .into_response(),
        Err(e) => internal(&e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    #[serde(default)]
    period: Option<Period>,
}

async fn admin_usage(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    let Ok(Query(q)) = q else {
        return ApiError::bad_request("invalid_period", "period: hour, day or month")
            .param("period")
            .into_response();
    };
    match s.store.usage_rows().await {
        Ok(rows) => Json(serde_json::json!({
            "usage": aggregate(&rows, q.period.unwrap_or(Period::Day))
        }))
        .into_response(),
        Err(e) => internal(&e).into_response(),
    }
}

async fn admin_backends(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = admin(&s, &headers) {
        return e.into_response();
    }
    let routes = s.registry.routes();
    let live: Vec<_> = routes
        .live
        .iter()
        .map(|l| {
            serde_json::json!({
                "url": l.url,
                "platform": l.identity.platform().name(),
                "simulated": l.identity.is_simulated(),
                "key_ids": l.identity.key_configs().configs().iter().map(|c| c.id().to_string()).collect::<Vec<_>>(),
                "models": l.models,
            })
        })
        .collect();
    Json(serde_json::json!({ "routable": live })).into_response()
}
