//! An API's immutable versions: new code, the list, one version with its code, and the
//! pruning that keeps at most the owner's quota of them.
use std::collections::HashSet;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use sha2::{Digest, Sha256};
use souq_proto::{Kind, apis::Version, limits};
use uuid::Uuid;

use super::owned;
use crate::{
    clock::rfc3339,
    entity::api_versions,
    error::{Error, Result},
    quotas,
};

/// The wire form of a version.
pub(crate) fn to_wire(v: &api_versions::Model) -> Version {
    Version {
        version: u32::try_from(v.number).unwrap_or(0),
        code_sha256: v.code_sha256.clone(),
        code_bytes: u32::try_from(v.code_bytes).unwrap_or(0),
        created_at: rfc3339(v.created_at),
    }
}

/// The row of version `number` of an API, holding `code`.
pub(super) fn new_version(api_id: Uuid, number: i32, code: String) -> api_versions::ActiveModel {
    api_versions::ActiveModel {
        id: Set(Uuid::now_v7()),
        api_id: Set(api_id),
        number: Set(number),
        code_sha256: Set(hex::encode(Sha256::digest(code.as_bytes()))),
        code_bytes: Set(i32::try_from(code.len()).unwrap_or(i32::MAX)),
        code: Set(code),
        created_at: Set(Utc::now()),
    }
}

/// Stores `code` as the caller's API's next version, in the caller's transaction (which
/// then prunes with [`prune`] and commits); returns the API's id and the version. How many
/// versions are kept is the quota's business, not a lifetime count of edits.
pub(crate) async fn put_code(txn: &impl ConnectionTrait, owner: Uuid, id: &str, code: String) -> Result<(Uuid, Version)> {
    limits::check_code("code", &code)?;
    let api = owned(txn, owner, id).await?;
    let number =
        api.latest_version.checked_add(1).ok_or_else(|| Error::kind(Kind::Conflict, "this API has no version numbers left"))?;
    // Bump first: two concurrent puts cannot both take the same number (the unique index
    // on (api_id, number) refuses the second).
    let mut am = api.clone().into_active_model();
    am.latest_version = Set(number);
    am.update(txn).await?;
    let v = new_version(api.id, number, code).insert(txn).await?;
    tracing::info!(api_id = %api.id, version = number, "new version");
    Ok((api.id, to_wire(&v)))
}

/// Keeps at most `keep` versions of an API, in the caller's transaction: deletes the
/// oldest beyond it, never the newest nor a number in `in_use`. When the versions in use
/// leave no room, a 403 `quota` (and the caller's transaction rolls back).
pub(crate) async fn prune(txn: &impl ConnectionTrait, api_id: Uuid, keep: u32, in_use: &HashSet<i32>) -> Result<()> {
    let numbers: Vec<i32> = api_versions::Entity::find()
        .select_only()
        .column(api_versions::Column::Number)
        .filter(api_versions::Column::ApiId.eq(api_id))
        .order_by_asc(api_versions::Column::Number)
        .into_tuple()
        .all(txn)
        .await?;
    let excess = numbers.len().saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
    if excess == 0 {
        return Ok(());
    }
    let newest = numbers.last().copied();
    let victims: Vec<i32> =
        numbers.iter().copied().filter(|n| !in_use.contains(n) && Some(*n) != newest).take(excess).collect();
    if victims.len() < excess {
        return Err(quotas::exceeded(
            "versions_per_api",
            format!("an API keeps at most {keep} versions (versions_per_api) and the older ones are all deployed; try again once a rollout ends"),
        ));
    }
    api_versions::Entity::delete_many()
        .filter(api_versions::Column::ApiId.eq(api_id))
        .filter(api_versions::Column::Number.is_in(victims.clone()))
        .exec(txn)
        .await?;
    tracing::info!(%api_id, pruned = ?victims, "old versions pruned");
    Ok(())
}

/// Every version of the caller's API, oldest first.
pub(crate) async fn list(db: &impl ConnectionTrait, owner: Uuid, id: &str) -> Result<Vec<Version>> {
    let api = owned(db, owner, id).await?;
    let rows = api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api.id))
        .order_by_asc(api_versions::Column::Number)
        .all(db)
        .await?;
    Ok(rows.iter().map(to_wire).collect())
}

/// Version `number` of an API, with its code.
pub(crate) async fn get(db: &impl ConnectionTrait, api_id: Uuid, number: i32) -> Result<Option<api_versions::Model>> {
    Ok(api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api_id))
        .filter(api_versions::Column::Number.eq(number))
        .one(db)
        .await?)
}

/// Deletes every version of an API (in the caller's transaction).
pub(super) async fn delete_all(db: &impl ConnectionTrait, api_id: Uuid) -> Result<()> {
    api_versions::Entity::delete_many().filter(api_versions::Column::ApiId.eq(api_id)).exec(db).await?;
    Ok(())
}
