//! An API's immutable versions: new code, the list, and one version with its code.
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, TransactionTrait,
};
use sha2::{Digest, Sha256};
use souq_proto::{Kind, apis::Version, limits};
use uuid::Uuid;

use super::owned;
use crate::{
    clock::rfc3339,
    entity::api_versions,
    error::{Error, Result},
};

/// Most versions one API may have.
pub const MAX_VERSIONS: i32 = 1000;

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

/// Stores `code` as the caller's API's next version.
pub(crate) async fn put_code(db: &DatabaseConnection, owner: Uuid, id: &str, code: String) -> Result<Version> {
    limits::check_code("code", &code)?;
    let api = owned(db, owner, id).await?;
    if api.latest_version >= MAX_VERSIONS {
        return Err(Error::kind(Kind::Conflict, format!("this API has {MAX_VERSIONS} versions, the most allowed")));
    }
    let txn = db.begin().await?;
    // Bump first: two concurrent puts cannot both take the same number (the unique index
    // on (api_id, number) refuses the second).
    let number = api.latest_version + 1;
    let mut am = api.clone().into_active_model();
    am.latest_version = Set(number);
    am.update(&txn).await?;
    let v = new_version(api.id, number, code).insert(&txn).await?;
    txn.commit().await?;
    tracing::info!(api_id = %api.id, version = number, "new version");
    Ok(to_wire(&v))
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
