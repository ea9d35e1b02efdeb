//! The desired state of an API: deploy a version on some replicas (within the owner's
//! quotas), or stop; its status; and the versions it still needs. The reconciler makes the
//! nodes match.
use std::collections::{HashMap, HashSet};

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::OnConflict,
};
use souq_proto::{
    Kind,
    apis::{ApiStatus, DeployApiRequest},
};
use uuid::Uuid;

use super::{Deployer, status};
use crate::{
    apis,
    entity::{deployments, instances, nodes},
    error::{Error, Result},
    quotas::{self, ASSUMED_INSTANCE_MEMORY_MB, Quotas},
};

const MAX_REGION: usize = 64;

/// Retires the API's instances (only those in state `only`, if given): out of the routes
/// at once, stopped on their agents by the reconciler.
pub(crate) async fn retire(db: &impl ConnectionTrait, api_id: Uuid, only: Option<&str>) -> Result<()> {
    let mut update = instances::Entity::update_many()
        .col_expr(instances::Column::State, instances::STOPPING.into())
        .col_expr(instances::Column::UpdatedAt, Utc::now().into())
        .filter(instances::Column::ApiId.eq(api_id));
    if let Some(state) = only {
        update = update.filter(instances::Column::State.eq(state));
    }
    update.exec(db).await?;
    Ok(())
}

/// Forgets an API about to be deleted (in the caller's transaction): its instances are
/// retired and its desired state goes.
pub(crate) async fn forget(txn: &impl ConnectionTrait, api_id: Uuid) -> Result<()> {
    retire(txn, api_id, None).await?;
    deployments::Entity::delete_by_id(api_id).exec(txn).await?;
    Ok(())
}

/// The versions of an API that its deployment names or an instance runs: pruning spares
/// them.
pub(crate) async fn versions_in_use(db: &impl ConnectionTrait, api_id: Uuid) -> Result<HashSet<i32>> {
    let mut used: HashSet<i32> = instances::Entity::find()
        .select_only()
        .column(instances::Column::Version)
        .filter(instances::Column::ApiId.eq(api_id))
        .into_tuple()
        .all(db)
        .await?
        .into_iter()
        .collect();
    used.extend(deployments::Entity::find_by_id(api_id).one(db).await?.map(|d| d.version));
    Ok(used)
}

/// Refuses a deployment of `replicas` for `api_id` that would take its owner past the
/// replica or instance-memory quota, counting the owner's other running deployments. An
/// instance counts at the most memory any node reserves for one.
async fn check_quotas(db: &impl ConnectionTrait, owner: Uuid, api_id: Uuid, replicas: u32, quotas: &Quotas) -> Result<()> {
    let mine = apis::ids_owned_by(db, owner).await?;
    let others: u64 = deployments::Entity::find()
        .filter(deployments::Column::ApiId.is_in(mine))
        .filter(deployments::Column::ApiId.ne(api_id))
        .filter(deployments::Column::Desired.eq(deployments::RUNNING))
        .all(db)
        .await?
        .iter()
        .map(|d| u64::try_from(d.replicas).unwrap_or(0))
        .sum();
    let total = others + u64::from(replicas);
    if total > u64::from(quotas.replicas) {
        return Err(quotas::exceeded(
            "replicas",
            format!(
                "your other deployments run {others} replicas and this one asks for {replicas}; the quota is {} in total (replicas)",
                quotas.replicas
            ),
        ));
    }
    let per_node: Vec<i64> =
        nodes::Entity::find().select_only().column(nodes::Column::InstanceMemoryMb).into_tuple().all(db).await?;
    let per_instance =
        per_node.into_iter().max().and_then(|m| u64::try_from(m).ok()).filter(|m| *m > 0).unwrap_or(ASSUMED_INSTANCE_MEMORY_MB);
    let memory = total.saturating_mul(per_instance);
    if memory > quotas.instance_memory_mb {
        return Err(quotas::exceeded(
            "instance_memory_mb",
            format!(
                "{total} replicas at {per_instance} MiB each reserve {memory} MiB; the quota is {} MiB in total (instance_memory_mb)",
                quotas.instance_memory_mb
            ),
        ));
    }
    Ok(())
}

/// The API's status now.
pub(crate) async fn status_of(db: &impl ConnectionTrait, api_id: Uuid) -> Result<ApiStatus> {
    let deployment = deployments::Entity::find_by_id(api_id).one(db).await?;
    let rows = instances::Entity::find().filter(instances::Column::ApiId.eq(api_id)).all(db).await?;
    let names: HashMap<Uuid, String> = nodes::Entity::find().all(db).await?.into_iter().map(|n| (n.id, n.name)).collect();
    Ok(status::summarize(api_id, deployment.as_ref(), &rows, &names))
}

/// Deploys a version (the latest when none is named) on `replicas` nodes. Deploying an
/// older version is a rollback; either way the instances of the version before keep
/// serving until the new ones run. Only a verified owner deploys, within `quotas`.
pub(crate) async fn deploy(deployer: &Deployer, owner: Uuid, req: DeployApiRequest, quotas: &Quotas) -> Result<ApiStatus> {
    let db = &deployer.db;
    // Everything read here (the latest version too) stays true until the write.
    let held = deployer.checks.lock().await;
    let api = apis::owned(db, owner, &req.api_id).await?;
    quotas::require_verified(db, owner, "deploying").await?;
    let replicas = req.replicas.unwrap_or(1);
    if replicas == 0 || replicas > deployer.max_replicas {
        return Err(Error::invalid("replicas", format!("must be from 1 to {}", deployer.max_replicas)));
    }
    let region = match req.region.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(r) if r.len() <= MAX_REGION && r.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => Some(r.to_owned()),
        Some(_) => return Err(Error::invalid("region", format!("1 to {MAX_REGION} characters of [A-Za-z0-9._-]"))),
    };
    let version = match req.version {
        None => api.latest_version,
        Some(v) => {
            let v = i32::try_from(v).map_err(|_| Error::kind(Kind::NotFound, "no such version"))?;
            apis::versions::get(db, api.id, v).await?.ok_or_else(|| Error::kind(Kind::NotFound, format!("no version {v}")))?;
            v
        }
    };
    let row = deployments::ActiveModel {
        api_id: Set(api.id),
        version: Set(version),
        replicas: Set(i32::try_from(replicas).unwrap_or(1)),
        region: Set(region),
        desired: Set(deployments::RUNNING.into()),
        reason: Set(None),
        updated_at: Set(Utc::now()),
    };
    check_quotas(db, owner, api.id, replicas, quotas).await?;
    let columns = [
        deployments::Column::Version,
        deployments::Column::Replicas,
        deployments::Column::Region,
        deployments::Column::Desired,
        deployments::Column::Reason,
        deployments::Column::UpdatedAt,
    ];
    deployments::Entity::insert(row)
        .on_conflict(OnConflict::column(deployments::Column::ApiId).update_columns(columns).to_owned())
        .exec_without_returning(db)
        .await?;
    drop(held);
    // Instances that failed to load are cleared, so a new deploy tries afresh.
    retire(db, api.id, Some(instances::FAILED)).await?;
    tracing::info!(api_id = %api.id, version, replicas, "deploy requested");
    deployer.wake();
    status_of(db, api.id).await
}

/// Stops every instance of the API; it keeps its versions and can be deployed again.
pub(crate) async fn stop(deployer: &Deployer, owner: Uuid, api_id: &str) -> Result<ApiStatus> {
    let db = &deployer.db;
    let api = apis::owned(db, owner, api_id).await?;
    deployments::Entity::update_many()
        .col_expr(deployments::Column::Desired, deployments::STOPPED.into())
        .col_expr(deployments::Column::Reason, Option::<String>::None.into())
        .col_expr(deployments::Column::UpdatedAt, Utc::now().into())
        .filter(deployments::Column::ApiId.eq(api.id))
        .exec(db)
        .await?;
    retire(db, api.id, None).await?;
    tracing::info!(api_id = %api.id, "stop requested");
    deployer.wake();
    status_of(db, api.id).await
}
