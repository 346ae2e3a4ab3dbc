//! The code interpreter's HTTP endpoints, under `/interpreter` (the server
//! maps E2B's port 49999 there):
//!
//! - `GET  /interpreter/health`
//! - `POST /interpreter/execute`: `{code, context_id?, language?, env_vars?}`,
//!   answered with one JSON object per line as the run goes
//! - `GET  /interpreter/contexts`, `POST /interpreter/contexts` `{language?, cwd?}`
//! - `DELETE /interpreter/contexts/{id}`, `POST /interpreter/contexts/{id}/restart`
//!
//! Errors are `{"code": <status>, "message": ...}` like envd's own.

use std::sync::Arc;

use capsule_protocol::client::{Body, full_body};
use capsule_protocol::{Code, ConnectError};
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::{ExecuteRequest, NewContext};
use crate::Agent;
use crate::http::{channel_body, empty, plain_error, read_body};

/// The most code one request may carry.
const MAX_REQUEST_BYTES: usize = 16 << 20;

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full_body(
            serde_json::to_vec(value).expect("json values serialize"),
        ))
        .expect("static response parts are valid")
}

async fn json_request<T: DeserializeOwned + Default>(body: Incoming) -> Result<T, ConnectError> {
    let bytes = read_body(body, MAX_REQUEST_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ConnectError::invalid_argument(format!("malformed request body: {e}")))
}

pub async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    match route(agent, req).await {
        Ok(resp) => resp,
        Err(e) => plain_error(&e),
    }
}

async fn route(agent: Arc<Agent>, req: Request<Incoming>) -> Result<Response<Body>, ConnectError> {
    let path = req
        .uri()
        .path()
        .trim_start_matches("/interpreter")
        .trim_end_matches('/')
        .to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let user = agent.identity(req.headers())?;
    let interpreter = agent.interpreter.clone();
    match (method, segments.as_slice()) {
        (Method::GET, [] | ["health"]) => Ok(json_response(StatusCode::OK, &"OK")),
        (Method::POST, ["execute"]) => {
            let request: ExecuteRequest = {
                let bytes = read_body(req.into_body(), MAX_REQUEST_BYTES).await?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    ConnectError::invalid_argument(format!("malformed request body: {e}"))
                })?
            };
            let (tx, body) = channel_body(64);
            interpreter.execute(request, user, tx)?;
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(body)
                .expect("static response parts are valid"))
        }
        (Method::GET, ["contexts"]) => Ok(json_response(StatusCode::OK, &interpreter.list())),
        (Method::POST, ["contexts"]) => {
            let request: NewContext = json_request(req.into_body()).await?;
            let info = interpreter.create(request, &user)?;
            Ok(json_response(StatusCode::OK, &info))
        }
        (Method::DELETE, ["contexts", id]) => {
            interpreter.remove(id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::POST, ["contexts", id, "restart"]) => {
            interpreter.restart(id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (m, _) => Err(ConnectError::new(
            Code::NotFound,
            format!(
                "no interpreter endpoint {m} {}",
                if path.is_empty() { "/" } else { &path }
            ),
        )),
    }
}
