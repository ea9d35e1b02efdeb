//! The reconciler: on every change (and every second) it plans against the database and
//! carries the plan out: it places instances, sends Deploy to their agents, stops the
//! instances no longer wanted once out of the routes (and the strays agents report), and
//! republishes the routes. Every agent call it makes is a task of its own set.
//!
//! It runs only on the leader replica, under the leader's epoch: every row it writes is
//! written in a transaction fenced by that epoch (`leader::fenced`), and every Deploy and
//! Stop carries it, so a leader that lost the lease can neither write nor command.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::{
    Kind, Runtime, WireError,
    agent::{DeployRequest, InstanceStatus, StopRequest},
    fence,
};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::{Deployer, plan, reports, routes};
use crate::{
    apis,
    entity::{apis as api_rows, deployments, instances, node_reports, nodes},
    error::Result,
    leader::{self, Leadership},
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

/// The leadership a pass and its agent calls run under.
#[derive(Clone)]
struct Term {
    epoch: u64,
    leadership: Arc<Leadership>,
    /// When this replica began to lead under `epoch`.
    began: DateTime<Utc>,
}

impl Term {
    /// Whether commands may still go out under this term: checked right before each agent
    /// call, which a call aborted with the lead would otherwise still make.
    fn holds(&self) -> bool {
        self.leadership.leads(self.epoch)
    }
}

/// Per node, the time of the last report whose strays a pass has stopped: the same report
/// is read again by the passes until the next heartbeat, and must not stop them again.
/// At most one entry per node.
type Acted = HashMap<Uuid, DateTime<Utc>>;

/// Runs passes while this replica leads, until `shutdown`; waits while it follows. The
/// agent calls the passes start belong to this task: when the lead is lost or at shutdown
/// the calls still under way are aborted, and their instances' rows (starting, stopping)
/// are carried out again by the next leader.
pub(crate) async fn run(deployer: Arc<Deployer>, leadership: Arc<Leadership>, shutdown: CancellationToken) {
    let mut leading = leadership.leading();
    loop {
        let epoch = *leading.borrow_and_update();
        if let Some(epoch) = epoch {
            lead(&deployer, Term { epoch, leadership: leadership.clone(), began: Utc::now() }, &mut leading, &shutdown).await;
        } else {
            tokio::select! {
                () = shutdown.cancelled() => {}
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Runs passes under `epoch` until this replica leads no more under it, or `shutdown`.
async fn lead(deployer: &Arc<Deployer>, term: Term, leading: &mut watch::Receiver<Option<u64>>, shutdown: &CancellationToken) {
    let epoch = term.epoch;
    info!(epoch, "reconciling as the leader");
    let mut calls = Calls::new();
    let mut acted = Acted::new();
    loop {
        tokio::select! {
            done = deployer.timed("pass", pass(deployer, &term, &mut calls, &mut acted)) => if let Err(e) = done {
                warn!(error = %e, "reconcile pass failed");
            },
            () = lost(leading, epoch) => break,
            () = shutdown.cancelled() => break,
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
            () = lost(leading, epoch) => break,
            () = deployer.reconcile.notified() => {}
            () = tokio::time::sleep(PASS_EVERY) => {}
        }
    }
    calls.shutdown().await;
    deployer.clear_calls();
    info!(epoch, "stopped reconciling; agent calls under way were aborted");
}

/// Returns once this replica no longer leads under `epoch`.
async fn lost(leading: &mut watch::Receiver<Option<u64>>, epoch: u64) {
    // An error means the lease loop ended: leading no more either.
    let _ = leading.wait_for(|e| *e != Some(epoch)).await;
}

async fn pass(deployer: &Arc<Deployer>, term: &Term, calls: &mut Calls, acted: &mut Acted) -> Result<()> {
    let (db, epoch) = (&deployer.db, term.epoch);
    let reports = node_reports::Entity::find().all(db).await?;
    let deployments = deployments::Entity::find().all(db).await?;
    let api_rows = api_rows::Entity::find().all(db).await?;
    let runtimes: HashMap<Uuid, Runtime> = api_rows.iter().filter_map(|a| a.runtime.parse().ok().map(|r| (a.id, r))).collect();
    let rows = instances::Entity::find().all(db).await?;
    // A new leader gives every node one TTL from the start of its term before it counts
    // it down: heartbeats that failed while no replica led (a failover, a database
    // restart) say nothing of the node, and taking every node for dead at once would move
    // instances that are serving.
    let nodes: Vec<Candidate> = nodes::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|n| {
            let mut c = Candidate::from(n);
            c.last_heartbeat = c.last_heartbeat.max(term.began);
            c
        })
        .collect();
    let now = Utc::now();
    let node_ttl = deployer.nodes.node_ttl;
    let world = plan::World { deployments: &deployments, runtimes: &runtimes, instances: &rows, nodes: &nodes, now, node_ttl };
    let ttl = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let verdict = reports::judge(&reports, &rows, now, ttl(node_ttl), ttl(deployer.nodes.heartbeat_interval * 2));
    for action in plan::plan(&world) {
        deployer.timed(action.name(), apply(deployer, epoch, action)).await?;
    }
    if !verdict.lost.is_empty() {
        warn!(instances = ?verdict.lost, "agents lost instances; deploying them again");
        let lost = verdict.lost;
        let redeploy = async {
            let txn = leader::fenced(db, epoch).await?;
            instances::Entity::update_many()
                .col_expr(instances::Column::State, instances::STARTING.into())
                .col_expr(instances::Column::Error, Some("the node's agent lost it (restarted?); deploying again".to_owned()).into())
                .col_expr(instances::Column::UpdatedAt, now.into())
                .filter(instances::Column::Id.is_in(lost))
                .filter(instances::Column::State.is_in([instances::RUNNING, instances::CRASHED]))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            Ok::<(), crate::Error>(())
        };
        deployer.timed("redeploy_lost", redeploy).await?;
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
                calls.spawn(send_deploy(deployer.clone(), term.clone(), row, (*node).clone()));
            }
        } else if now.signed_duration_since(row.updated_at).to_std().unwrap_or_default() >= DRAIN && deployer.begin_call(&row.id)
        {
            calls.spawn(send_stop(deployer.clone(), term.clone(), row.id, (*node).clone()));
        }
    }
    // Instances agents hold that nobody wants (left from before a restart of the control
    // plane, or from a node that came back): stop them.
    acted.retain(|node, _| by_id.contains_key(node));
    for (id, node_id, reported_at) in verdict.strays {
        let Some(node) = by_id.get(&node_id) else { continue };
        if acted.get(&node_id).is_some_and(|at| *at >= reported_at) {
            continue;
        }
        if deployer.begin_call(&id) {
            info!(instance = %id, node = %node.name, "stopping a stray instance");
            calls.spawn(send_stop(deployer.clone(), term.clone(), id, (*node).clone()));
        }
    }
    acted.extend(reports.iter().map(|r| (r.node_id, r.reported_at)));
    routes::refresh(deployer).await
}

/// Carries out one planned action in a transaction fenced by `epoch`.
async fn apply(deployer: &Deployer, epoch: u64, action: plan::Action) -> Result<()> {
    let txn = leader::fenced(&deployer.db, epoch).await?;
    let db = &txn;
    let now = Utc::now();
    match action {
        plan::Action::Place { api_id, version, nodes } => {
            for node in nodes {
                let id = Uuid::new_v4().simple().to_string()[..16].to_owned();
                info!(%api_id, version, instance = %id, %node, epoch, "placing instance");
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
    txn.commit().await?;
    Ok(())
}

async fn send_deploy(deployer: Arc<Deployer>, term: Term, row: instances::Model, node: Candidate) {
    let epoch = term.epoch;
    let written = match deployer.timed("deploy", deploy_on(&deployer, &term, &row, &node)).await {
        Ok(status) => fenced_write(&deployer, epoch, async |txn| reports::record(txn, &status).await.map(drop)).await,
        // Not sent, or refused for a newer epoch: the next leader carries the row out.
        Err(_) if !term.holds() => Ok(()),
        Err(e) => {
            // Nothing runs: drop the row, so the next pass places the replica again, and
            // say why in the deployment's status.
            warn!(instance = %row.id, node = %node.name, error = %e.message, "deploy failed");
            let reason = format!("node {} could not start an instance: {}", node.name, e.message);
            fenced_write(&deployer, epoch, async |txn| {
                instances::Entity::delete_by_id(row.id.clone()).exec(txn).await?;
                deployments::Entity::update_many()
                    .col_expr(deployments::Column::Reason, Some(reason).into())
                    .filter(deployments::Column::ApiId.eq(row.api_id))
                    .exec(txn)
                    .await?;
                Ok(())
            })
            .await
        }
    };
    if let Err(e) = written {
        warn!(instance = %row.id, error = %e, "could not record a deploy's outcome");
    }
    deployer.end_call(&row.id);
    deployer.wake();
}

/// Runs `write` in a transaction fenced by `epoch` and commits it.
async fn fenced_write(
    deployer: &Deployer,
    epoch: u64,
    write: impl AsyncFnOnce(&sea_orm::DatabaseTransaction) -> Result<()>,
) -> Result<()> {
    let txn = leader::fenced(&deployer.db, epoch).await?;
    write(&txn).await?;
    txn.commit().await?;
    Ok(())
}

async fn deploy_on(
    deployer: &Deployer,
    term: &Term,
    row: &instances::Model,
    node: &Candidate,
) -> Result<InstanceStatus, WireError> {
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
    fence::set_epoch(&mut call, term.epoch);
    let mut client = agents.get(&node.address).map_err(|e| internal(crate::Error::Internal(e)))?;
    if !term.holds() {
        return Err(WireError::new(Kind::Unavailable, "this control plane no longer leads; the deploy was not sent"));
    }
    client.deploy(call).await.map(tonic::Response::into_inner).map_err(|s| WireError::from(&s))
}

async fn send_stop(deployer: Arc<Deployer>, term: Term, id: String, node: Candidate) {
    let (agents, epoch) = (&deployer.nodes.agents, term.epoch);
    let stopped = async {
        let mut call = tonic::Request::new(StopRequest { instance_id: id.clone() });
        call.set_timeout(STOP_DEADLINE);
        agents.authorize(&mut call);
        fence::set_epoch(&mut call, epoch);
        let mut client = agents.get(&node.address)?;
        if !term.holds() {
            return Err("this control plane no longer leads; the stop was not sent".to_owned());
        }
        client.stop(call).await.map_err(|s| s.message().to_owned())
    };
    match deployer.timed("stop", stopped).await {
        Ok(_) => {
            let deleted = fenced_write(&deployer, epoch, async |txn| {
                instances::Entity::delete_by_id(id.clone()).exec(txn).await.map(drop).map_err(Into::into)
            })
            .await;
            match deleted {
                Ok(()) => info!(instance = %id, node = %node.name, "instance stopped"),
                Err(e) => warn!(instance = %id, error = %e, "instance stopped, but its row could not be removed"),
            }
        }
        Err(e) => warn!(instance = %id, node = %node.name, error = %e, "could not stop an instance; retrying"),
    }
    deployer.end_call(&id);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{db::scratch::ScratchDb, entity::leases, metrics::ActionLabels, nodes::Nodes};

    #[tokio::test]
    async fn a_superseded_leaders_actions_are_refused() {
        let t = ScratchDb::new().await;
        let nodes = Arc::new(Nodes::new(t.db.clone(), "join", Duration::from_secs(1), Duration::from_secs(15)));
        let deployer = &Deployer::new(t.db.clone(), nodes, Duration::from_secs(1), 8);
        // Epoch 2 holds the lease: a leader of epoch 1 that does not know it yet.
        leases::Entity::update_many()
            .col_expr(leases::Column::Epoch, 2i64.into())
            .filter(leases::Column::Name.eq(leader::LEASE))
            .exec(&t.db)
            .await
            .unwrap();
        let forget = plan::Action::Forget(vec!["0123456789abcdef".into()]);
        let refused = deployer.timed(forget.name(), apply(deployer, 1, forget)).await;
        assert!(refused.is_err_and(|e| e.to_string().contains("fenced")));
        let reason = plan::Action::Reason { api_id: Uuid::new_v4(), reason: None };
        deployer.timed(reason.name(), apply(deployer, 2, reason)).await.unwrap();
        // Each action is counted by its result.
        let counted = |action, result| deployer.metrics.reconciler_actions.get_or_create(&ActionLabels { action, result }).get();
        assert_eq!((counted("forget", "error"), counted("reason", "ok"), counted("reason", "error")), (1, 1, 0));
        t.close().await;
    }
}
