//! `GET /health`: liveness and what this server runs on.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) async fn handle(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "backend": state.engine.backend(),
        "sandboxes": state.engine.running_count(),
    }))
}
