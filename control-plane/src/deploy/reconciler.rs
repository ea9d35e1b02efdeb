//! The reconciler: on every change (and every second) it plans against the database and
//! carries the plan out: it places instances, sends Deploy to their agents, stops the
//! instances no longer wanted once out of the routes (and the strays agents report), and
//! republishes the routes. Every agent call it makes is a task of its own set.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::{
    Kind, Runtime, WireError,
    agent::{DeployRequest, InstanceStatus, StopRequest},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::{Deployer, plan, routes};
use crate::{
    apis,
    entity::{apis as api_rows, deployments, instances, nodes},
    error::Result,
    nodes::scheduler::Candidate,
};

/// How often the reconciler looks even when nothing woke it.
const PASS_EVERY: Duration = Duration::from_secs(1);
/// How long a retired instance stays out of the routes before its agent stops it, so
/// edges stop sending it calls first.
const DRAIN: Duration = Duration::from_secs(1);
/// How long an agent may take to start an instance (Go compiles at deploy).
const DEPLOY_DEADLINE: Duration = Duration::from_secs(180);
/// How long an agent may take to stop an instance.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The agent calls the passes start: Deploy and Stop, one task each.
type Calls = JoinSet<()>;

/// Runs passes until `shutdown`. The agent calls they start belong to this task: at
/// shutdown the calls still under way are aborted, and their instances' rows (starting,
/// stopping) are carried out again by the next start.
pub(crate) async fn run(deployer: Arc<Deployer>, shutdown: CancellationToken) {
    let mut calls = Calls::new();
    loop {
        if let Err(e) = pass(&deployer, &mut calls).await {
            warn!(error = %e, "reconcile pass failed");
        }
        while let Some(done) = calls.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                error!(error = %e, "an agent call panicked");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = deployer.reconcile.notified() => {}
            () = tokio::time::sleep(PASS_EVERY) => {}
        }
    }
    calls.shutdown().await;
}

async fn pass(deployer: &Arc<Deployer>, calls: &mut Calls) -> Result<()> {
    let db = &deployer.db;
    let deployments = deployments::Entity::find().all(db).await?;
    let api_rows = api_rows::Entity::find().all(db).await?;
    let runtimes: HashMap<Uuid, Runtime> =
        api_rows.iter().filter_map(|a| a.runtime.parse().ok().map(|r| (a.id, r))).collect();
    let rows = instances::Entity::find().all(db).await?;
    let nodes: Vec<Candidate> = nodes::Entity::find().all(db).await?.into_iter().map(Candidate::from).collect();
    let now = Utc::now();
    let node_ttl = deployer.nodes.node_ttl;
    let world = plan::World { deployments: &deployments, runtimes: &runtimes, instances: &rows, nodes: &nodes, now, node_ttl };
    for action in plan::plan(&world) {
        apply(deployer, action).await?;
    }
    // Carry out what the rows now say: deploy what is starting, stop what is retired.
    let rows = instances::Entity::find()
        .filter(instances::Column::State.is_in([instances::STARTING, instances::STOPPING]))
        .all(db)
        .await?;
    let by_id: HashMap<Uuid, &Candidate> = nodes.iter().map(|n| (n.id, n)).collect();
    for row in rows {
        let Some(node) = by_id.get(&row.node_id) else { continue };
        if row.state == instances::STARTING {
            if deployer.begin_call(&row.id) {
                calls.spawn(send_deploy(deployer.clone(), row, (*node).clone()));
            }
        } else if now.signed_duration_since(row.updated_at).to_std().unwrap_or_default() >= DRAIN && deployer.begin_call(&row.id) {
            calls.spawn(send_stop(deployer.clone(), row.id, (*node).clone()));
        }
    }
    let strays = deployer.strays.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
    for (id, node) in strays {
        if deployer.begin_call(&id) {
            calls.spawn(send_stop(deployer.clone(), id, node));
        }
    }
    routes::refresh(deployer).await
}

async fn apply(deployer: &Deployer, action: plan::Action) -> Result<()> {
    let db = &deployer.db;
    let now = Utc::now();
    match action {
        plan::Action::Place { api_id, version, nodes } => {
            for node in nodes {
                let id = Uuid::new_v4().simple().to_string()[..16].to_owned();
                info!(%api_id, version, instance = %id, %node, "placing instance");
                instances::Entity::insert(instances::ActiveModel {
                    id: Set(id),
                    api_id: Set(api_id),
                    version: Set(version),
                    node_id: Set(node),
                    state: Set(instances::STARTING.into()),
                    error: Set(None),
                    restarts: Set(0),
                    created_at: Set(now),
                    updated_at: Set(now),
                })
                .exec_without_returning(db)
                .await?;
            }
        }
        plan::Action::Retire(ids) => {
            info!(instances = ?ids, "retiring instances");
            instances::Entity::update_many()
                .col_expr(instances::Column::State, instances::STOPPING.into())
                .col_expr(instances::Column::UpdatedAt, now.into())
                .filter(instances::Column::Id.is_in(ids))
                .exec(db)
                .await?;
        }
        plan::Action::Forget(ids) => {
            info!(instances = ?ids, "forgetting instances of unreachable nodes");
            instances::Entity::delete_many().filter(instances::Column::Id.is_in(ids)).exec(db).await?;
        }
        plan::Action::Reason { api_id, reason } => {
            if let Some(r) = &reason {
                info!(%api_id, reason = %r, "deployment pending");
            }
            deployments::Entity::update_many()
                .col_expr(deployments::Column::Reason, reason.into())
                .filter(deployments::Column::ApiId.eq(api_id))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

/// Records what an agent said of an instance, unless it was retired meanwhile.
pub(crate) async fn record(deployer: &Deployer, s: &InstanceStatus) -> Result<bool> {
    let updated = instances::Entity::update_many()
        .col_expr(instances::Column::State, s.state().name().into())
        .col_expr(instances::Column::Error, (!s.error.is_empty()).then(|| s.error.clone()).into())
        .col_expr(instances::Column::Restarts, i32::try_from(s.restarts).unwrap_or(i32::MAX).into())
        .col_expr(instances::Column::UpdatedAt, Utc::now().into())
        .filter(instances::Column::Id.eq(&s.instance_id))
        .filter(instances::Column::State.ne(instances::STOPPING))
        .exec(&deployer.db)
        .await?;
    Ok(updated.rows_affected > 0)
}

async fn send_deploy(deployer: Arc<Deployer>, row: instances::Model, node: Candidate) {
    let outcome = deploy_on(&deployer, &row, &node).await;
    match outcome {
        Ok(status) => {
            if let Err(e) = record(&deployer, &status).await {
                warn!(error = %e, "could not record an instance's state");
            }
        }
        Err(e) => {
            // Nothing runs: drop the row, so the next pass places the replica again, and
            // say why in the deployment's status.
            warn!(instance = %row.id, node = %node.name, error = %e.message, "deploy failed");
            let reason = format!("node {} could not start an instance: {}", node.name, e.message);
            let _ = instances::Entity::delete_by_id(row.id.clone()).exec(&deployer.db).await;
            let _ = deployments::Entity::update_many()
                .col_expr(deployments::Column::Reason, Some(reason).into())
                .filter(deployments::Column::ApiId.eq(row.api_id))
                .exec(&deployer.db)
                .await;
        }
    }
    deployer.end_call(&row.id);
    deployer.wake();
}

async fn deploy_on(deployer: &Deployer, row: &instances::Model, node: &Candidate) -> Result<InstanceStatus, WireError> {
    let internal = |e: crate::Error| WireError::new(Kind::Internal, e.to_string());
    let db = &deployer.db;
    let Some(api) = api_rows::Entity::find_by_id(row.api_id).one(db).await.map_err(|e| internal(e.into()))? else {
        return Err(WireError::new(Kind::NotFound, "the API is gone"));
    };
    let Some(version) = apis::versions::get(db, row.api_id, row.version).await.map_err(internal)? else {
        return Err(WireError::new(Kind::NotFound, "the version is gone"));
    };
    let agents = &deployer.nodes.agents;
    let mut call = tonic::Request::new(DeployRequest {
        instance_id: row.id.clone(),
        api_id: row.api_id.to_string(),
        version: u32::try_from(row.version).unwrap_or(0),
        runtime: api.runtime,
        code: version.code,
        timeout_ms: deployer.call_timeout_ms().min(node.max_timeout_ms),
    });
    call.set_timeout(DEPLOY_DEADLINE);
    agents.authorize(&mut call);
    let mut client = agents.get(&node.address).map_err(|e| internal(crate::Error::Internal(e)))?;
    client.deploy(call).await.map(tonic::Response::into_inner).map_err(|s| WireError::from(&s))
}

async fn send_stop(deployer: Arc<Deployer>, id: String, node: Candidate) {
    let agents = &deployer.nodes.agents;
    let stopped = async {
        let mut call = tonic::Request::new(StopRequest { instance_id: id.clone() });
        call.set_timeout(STOP_DEADLINE);
        agents.authorize(&mut call);
        let mut client = agents.get(&node.address)?;
        client.stop(call).await.map_err(|s| s.message().to_owned())
    };
    match stopped.await {
        Ok(_) => {
            let _ = instances::Entity::delete_by_id(id.clone()).exec(&deployer.db).await;
            info!(instance = %id, node = %node.name, "instance stopped");
        }
        Err(e) => warn!(instance = %id, node = %node.name, error = %e, "could not stop an instance; retrying"),
    }
    deployer.end_call(&id);
}

/// Has the reconciler stop an instance an agent holds but nobody wants (left from before
/// a restart of the control plane, or from a node that came back).
pub(crate) fn stop_stray(deployer: &Deployer, id: String, node: Candidate) {
    if let Ok(mut strays) = deployer.strays.lock() {
        strays.push((id, node));
    }
    deployer.wake();
}
