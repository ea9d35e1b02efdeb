//! One-shot execution: validate, place on a node, call its agent, record the outcome.
//! Any replica executes; its call carries the highest control-plane epoch the replica has
//! read, which agents check like the leader's commands (`souq_proto::fence`).
use std::time::Duration;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait};
use sha2::{Digest, Sha256};
use souq_proto::{
    Kind, Runtime, WireError, agent,
    execute::{ExecuteRequest, ExecuteResponse},
    fence, limits,
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    entity::{executions, nodes},
    error::{Error, Result},
    leader::Leadership,
    nodes::{
        Nodes,
        scheduler::{self, Candidate, Refusal},
    },
};

/// Time allowed on top of the run's own timeout for the agent to create, start and
/// remove the sandbox.
const AGENT_SLACK: Duration = Duration::from_secs(20);

/// Runs one execute for `user_id` on a node of `fleet`, stamped with `leadership`'s epoch;
/// `default_timeout` applies when the request names none (capped at the node's maximum).
pub(crate) async fn run(
    fleet: &Nodes,
    leadership: &Leadership,
    default_timeout: Duration,
    user_id: Uuid,
    req: ExecuteRequest,
) -> Result<ExecuteResponse> {
    let runtime = Runtime::from_request(&req.runtime)?;
    limits::check_code("code", &req.code)?;
    if req.stdin.len() > limits::MAX_STDIN_BYTES {
        return Err(Error::invalid("stdin", format!("must be at most {} bytes", limits::MAX_STDIN_BYTES)));
    }
    if req.timeout_ms == Some(0) {
        return Err(Error::invalid("timeout_ms", "must be at least 1"));
    }

    let execution_id = Uuid::now_v7();
    let nodes: Vec<Candidate> =
        nodes::Entity::find().all(&fleet.db).await?.into_iter().map(Candidate::from).collect();
    // The same user lands on the same node (where their warm sandbox is), users spread.
    let spread = {
        let h = Sha256::digest(user_id.as_bytes());
        u64::from_le_bytes(h[..8].try_into().unwrap_or_default())
    };
    let node = scheduler::place(&nodes, runtime, Utc::now(), fleet.node_ttl, spread).map_err(|r| match r {
        Refusal::NoNode => Error::kind(Kind::NoCapacity, format!("no live node agent offers {runtime}")),
        Refusal::DockerDown => Error::kind(Kind::DockerUnavailable, "the Docker Engine of every node is unreachable"),
    })?;
    let timeout_ms = req.timeout_ms.unwrap_or(u64::try_from(default_timeout.as_millis()).unwrap_or(u64::MAX));
    let timeout_ms = if req.timeout_ms.is_none() { timeout_ms.min(node.max_timeout_ms) } else { timeout_ms };
    if timeout_ms > node.max_timeout_ms {
        return Err(Error::invalid("timeout_ms", format!("must be at most {}", node.max_timeout_ms)));
    }

    let mut client = fleet.agents.get(&node.address).map_err(Error::Internal)?;
    let code_sha256 = hex::encode(Sha256::digest(req.code.as_bytes()));
    let body = agent::ExecuteRequest {
        execution_id: execution_id.to_string(),
        runtime: runtime.as_str().into(),
        code: req.code,
        stdin: req.stdin,
        timeout_ms,
        user_id: user_id.to_string(),
    };
    let call = |body: agent::ExecuteRequest, epoch: u64| {
        let mut call = tonic::Request::new(body);
        call.set_timeout(Duration::from_millis(timeout_ms) + AGENT_SLACK);
        fleet.agents.authorize(&mut call);
        fence::set_epoch(&mut call, epoch);
        call
    };
    let epoch = leadership.current_epoch();
    let mut answer = client.execute(call(body.clone(), epoch)).await;
    // The agent has seen a newer epoch than this replica read: read the lease again and
    // try once more (nothing ran: the agent refuses before it runs anything).
    if let Err(status) = &answer
        && fence::is_stale(status)
    {
        match leadership.refresh().await {
            Ok(newer) if newer > epoch => answer = client.execute(call(body, newer)).await,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not read the control-plane epoch"),
        }
    }
    let result = match answer {
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
    .exec_without_returning(&fleet.db)
    .await?;
    info!(%execution_id, node = %node.name, %runtime, exit_code = ?result.exit_code, timed_out = result.timed_out, duration_ms = result.duration_ms, "executed");
    Ok(ExecuteResponse { execution_id: execution_id.to_string(), node_name: node.name.clone(), result: Some(result) })
}
