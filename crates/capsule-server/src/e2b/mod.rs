//! The E2B front door: the control plane E2B's SDKs call (`/v2/sandboxes`
//! and friends) and the routing of their in-sandbox traffic to each
//! sandbox's agent, which speaks envd's protocol natively. Nothing here
//! translates envd calls; it authenticates and forwards them.

mod control;
mod traffic;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use capsule_api::e2b::ErrorBody;

use crate::AppState;

pub(crate) use control::query_pairs as control_query_pairs;
pub use control::{metadata_filter, query_pairs};
pub use traffic::signed_query;
pub(crate) use traffic::{answer_early, intercept};

/// The control-plane routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandboxes", post(control::create).get(control::list_v1))
        .route("/v2/sandboxes", post(control::create).get(control::list))
        .route(
            "/sandboxes/{id}",
            get(control::detail).delete(control::kill),
        )
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/metrics", get(control::metrics))
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/resume", post(control::resume))
        .route("/sandboxes/{id}/snapshots", post(control::snapshot))
        .route("/sandboxes/{id}/fork", post(control::fork))
        .route(
            "/sandboxes/{id}/network",
            axum::routing::put(control::unsupported),
        )
        .route("/snapshots", get(control::list_snapshots))
        .route(
            "/templates",
            axum::routing::any(control::templates_unsupported),
        )
        .route(
            "/templates/{*rest}",
            axum::routing::any(control::templates_unsupported),
        )
        .route(
            "/v2/templates",
            axum::routing::any(control::templates_unsupported),
        )
        .route(
            "/v2/templates/{*rest}",
            axum::routing::any(control::templates_unsupported),
        )
        .route(
            "/v3/templates",
            axum::routing::any(control::templates_unsupported),
        )
        .route(
            "/v3/templates/{*rest}",
            axum::routing::any(control::templates_unsupported),
        )
}

/// Any other path or method: a JSON error naming it, instead of an empty 404.
pub(crate) async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "{method} {} is not an endpoint of this Capsule server",
            uri.path()
        ),
    )
}

pub(crate) async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}

/// An error in the control plane's shape: `{"code": <status>, "message": ...}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        code: status.as_u16(),
        message: message.into(),
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).expect("errors serialize"),
    )
        .into_response();
    if matches!(status.as_u16(), 502..=504) {
        // The Python SDK retries these; a retried create would make another sandbox.
        resp.headers_mut()
            .insert("should-retry", "false".parse().expect("static header"));
    }
    resp
}
