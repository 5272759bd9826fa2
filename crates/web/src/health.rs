//! `GET /healthz`: the process lives. `GET /readyz`: its backends answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::WebState;

const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<WebState>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(PING_TIMEOUT, state.books.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            tracing::warn!(error = %crate::error::error_chain(&err), "readiness: database down");
            "unavailable"
        }
        Err(_) => "timeout",
    };
    let ready = database == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": { "database": database },
        })),
    )
}
