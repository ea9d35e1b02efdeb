//! One-shot execution of a snippet in a sandbox, one `Execute` call; each run is metered.
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use souq_proto::{
    Runtime,
    execute::ExecuteRequest,
    limits::{DEFAULT_TIMEOUT, check_code},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    grpc,
    openapi::{PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable, Unprocessable},
};
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::{Caller, Json},
    limit::month::unix_ms_now,
    meter::{Draft, Kind},
    metrics::Refusal,
};

/// Time on top of the run's own timeout for scheduling and sandbox set-up.
const SLACK: Duration = Duration::from_secs(30);
/// Longest wait for a run, whatever the request says (the agent caps it lower).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The area's routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(execute))
}

/// A snippet to run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// `python`, `nodejs` (or `node`) or `go`.
    pub runtime: String,
    /// The program; for Go, a whole `package main`. At most 256 KiB of UTF-8
    /// (`limits::MAX_CODE_BYTES`).
    pub code: String,
    /// Text for the program's stdin.
    pub stdin: Option<String>,
    /// Wall timeout in ms; at most the operator's maximum (30 000 by default).
    pub timeout_ms: Option<u64>,
}

/// How a run ended.
#[derive(Serialize, ToSchema)]
pub struct ExecuteAnswer {
    /// Exit code 0 and no timeout.
    pub success: bool,
    /// The program's exit code; null if it never exited on its own.
    pub exit_code: Option<i32>,
    /// Its stdout (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// stdout parsed as JSON when it is valid JSON, else null.
    pub result: Option<serde_json::Value>,
    /// Wall time of the run in ms.
    pub duration_ms: u64,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// Output passed the node's limit (1 MiB by default) and was cut.
    pub truncated: bool,
    /// Killed for using more memory than allowed.
    pub oom_killed: bool,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// The execution's id.
    pub execution_id: String,
}

/// Runs a snippet in a fresh sandbox.
#[utoipa::path(post, path = "/api/v1/execute", request_body = ExecuteBody, tag = "execute", security(("bearer" = [])),
    responses((status = 200, body = ExecuteAnswer),
        Unauthorized,
        PayloadTooLarge,
        Unprocessable,
        TooManyRequests,
        Unavailable))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ExecuteBody>,
) -> Result<axum::Json<ExecuteAnswer>> {
    let (started, ts_ms) = (Instant::now(), unix_ms_now());
    let runtime = Runtime::from_request(&body.runtime)?;
    check_code("code", &body.code)?;
    if body.timeout_ms == Some(0) {
        return Err(ApiError::invalid("timeout_ms", "must be at least 1"));
    }
    let run_for = body.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis).min(MAX_WAIT);
    let req = ExecuteRequest {
        runtime: runtime.as_str().into(),
        code: body.code,
        stdin: body.stdin.unwrap_or_default().into_bytes(),
        timeout_ms: body.timeout_ms,
    };
    let admission = state.meter.admit(Draft {
        api_id: String::new(),
        user_id: caller.user_id.clone(),
        key_id: String::new(),
        subscription_id: String::new(),
        kind: Kind::Execute,
        bytes_in: (req.code.len() + req.stdin.len()) as u64,
        started,
        ts_ms,
    })
    .inspect_err(|_| state.metrics.refused(Refusal::Metering))?;
    let resp = match state.execute.clone().execute(grpc(req, Some(&caller.token), run_for + SLACK)).await {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            let e = ApiError::from(status);
            if e.kind == souq_proto::Kind::TooManyConcurrent.slug() {
                state.metrics.refused(Refusal::Concurrency);
            }
            // Only a run that timed out used a sandbox; other refusals ran nothing.
            if let Some(a) = admission {
                if e.status == StatusCode::GATEWAY_TIMEOUT {
                    a.commit(e.status.as_u16(), 0).await?;
                } else {
                    a.cancel();
                }
            }
            return Err(e);
        }
    };
    let r = resp.result.unwrap_or_default();
    if let Some(a) = admission {
        a.commit(200, (r.stdout.len() + r.stderr.len()) as u64).await?;
    }
    let stdout = String::from_utf8_lossy(&r.stdout).into_owned();
    let result = serde_json::from_str::<serde_json::Value>(stdout.trim()).ok();
    Ok(axum::Json(ExecuteAnswer {
        success: r.succeeded(),
        exit_code: r.exit_code,
        stdout,
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        result,
        duration_ms: r.duration_ms,
        timed_out: r.timed_out,
        truncated: r.truncated,
        oom_killed: r.oom_killed,
        signal: r.signal,
        execution_id: resp.execution_id,
    }))
}
