//! One-shot execution: validate, place on a node, call its agent, record the outcome.
use std::time::Duration;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait};
use sha2::{Digest, Sha256};
use souq_proto::{
    Kind, Runtime, WireError,
    agent,
    platform::{ExecuteRequest, ExecuteResponse},
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    State,
    entity::{executions, nodes},
    error::{Error, Result},
    scheduler::{self, Candidate, Refusal},
};

/// Largest snippet accepted, in bytes; the edge's body limit is the same.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Largest stdin accepted, in bytes.
pub const MAX_STDIN_BYTES: usize = 256 * 1024;
/// Time allowed on top of the run's own timeout for the agent to create, start and
/// remove the sandbox.
const AGENT_SLACK: Duration = Duration::from_secs(20);

/// Runs one execute for `user_id`.
pub(crate) async fn run(state: &State, user_id: Uuid, req: ExecuteRequest) -> Result<ExecuteResponse> {
    let runtime: Runtime = req.runtime.parse().map_err(|e: souq_proto::runtime::UnknownRuntime| {
        Error::invalid("runtime", e.to_string())
    })?;
    if req.code.trim().is_empty() {
        return Err(Error::invalid("code", "must not be empty"));
    }
    if req.code.len() > MAX_CODE_BYTES {
        return Err(Error::invalid("code", format!("must be at most {MAX_CODE_BYTES} bytes")));
    }
    if req.stdin.len() > MAX_STDIN_BYTES {
        return Err(Error::invalid("stdin", format!("must be at most {MAX_STDIN_BYTES} bytes")));
    }
    if req.timeout_ms == Some(0) {
        return Err(Error::invalid("timeout_ms", "must be at least 1"));
    }

    let execution_id = Uuid::now_v7();
    let nodes: Vec<Candidate> =
        nodes::Entity::find().all(&state.db).await?.into_iter().map(Candidate::from).collect();
    // The same user lands on the same node (where their warm sandbox is), users spread.
    let spread = {
        let h = Sha256::digest(user_id.as_bytes());
        u64::from_le_bytes(h[..8].try_into().unwrap_or_default())
    };
    let node = scheduler::place(&nodes, runtime, Utc::now(), state.node_ttl, spread).map_err(|r| match r {
        Refusal::NoNode => Error::kind(Kind::NoCapacity, format!("no live node agent offers {runtime}")),
        Refusal::DockerDown => Error::kind(Kind::DockerUnavailable, "the Docker Engine of every node is unreachable"),
    })?;
    let timeout_ms = req.timeout_ms.unwrap_or(state.default_timeout.as_millis() as u64);
    let timeout_ms = if req.timeout_ms.is_none() { timeout_ms.min(node.max_timeout_ms) } else { timeout_ms };
    if timeout_ms > node.max_timeout_ms {
        return Err(Error::invalid("timeout_ms", format!("must be at most {}", node.max_timeout_ms)));
    }

    let mut client = state.agents.get(&node.address)?;
    let code_sha256 = hex::encode(Sha256::digest(req.code.as_bytes()));
    let mut call = tonic::Request::new(agent::ExecuteRequest {
        execution_id: execution_id.to_string(),
        runtime: runtime.as_str().into(),
        code: req.code,
        stdin: req.stdin,
        timeout_ms,
        user_id: user_id.to_string(),
    });
    call.set_timeout(Duration::from_millis(timeout_ms) + AGENT_SLACK);
    state.agents.authorize(&mut call);
    let result = match client.execute(call).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let e = WireError::from(&status);
            warn!(node = %node.name, code = ?status.code(), kind = e.kind.slug(), "agent execute failed");
            return Err(match e.kind {
                Kind::Unavailable if e.message.starts_with("a Souq service") => {
                    Error::kind(Kind::Unavailable, format!("node agent {} is unreachable", node.name))
                }
                _ => e.into(),
            });
        }
    };

    executions::Entity::insert(executions::ActiveModel {
        id: Set(execution_id),
        user_id: Set(user_id),
        node_id: Set(Some(node.id)),
        runtime: Set(runtime.as_str().into()),
        code_sha256: Set(code_sha256),
        exit_code: Set(result.exit_code),
        success: Set(result.succeeded()),
        timed_out: Set(result.timed_out),
        truncated: Set(result.truncated),
        oom_killed: Set(result.oom_killed),
        duration_ms: Set(i64::try_from(result.duration_ms).unwrap_or(i64::MAX)),
        created_at: Set(Utc::now()),
        signal: Set(result.signal),
    })
    .exec_without_returning(&state.db)
    .await?;
    info!(%execution_id, node = %node.name, %runtime, exit_code = ?result.exit_code, timed_out = result.timed_out, duration_ms = result.duration_ms, "executed");
    Ok(ExecuteResponse { execution_id: execution_id.to_string(), node_name: node.name.clone(), result: Some(result) })
}
