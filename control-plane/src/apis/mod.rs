//! The neutral core of an API, which deploying and selling both build on: its rows and
//! ownership, its wire form, its slug and its versions. It knows nothing of deployments
//! or plans; the service layer adds what those areas keep of an API around these calls.
pub mod slug;
pub mod versions;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::OnConflict,
};
use souq_proto::{
    Kind, Runtime,
    apis::{Api, CreateApiRequest, UpdateApiRequest},
    limits,
};
use uuid::Uuid;

use crate::{
    clock::rfc3339,
    entity::apis,
    error::{Error, Result},
    quotas,
};

/// Longest name, in characters.
pub const MAX_NAME: usize = 64;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 1000;
/// Slugs tried before a create gives up.
const SLUG_ATTEMPTS: u32 = 8;

/// The wire form of an API.
pub(crate) fn to_wire(a: &apis::Model) -> Api {
    Api {
        id: a.id.to_string(),
        slug: a.slug.clone(),
        name: a.name.clone(),
        runtime: a.runtime.clone(),
        description: a.description.clone(),
        public: a.public,
        latest_version: u32::try_from(a.latest_version).unwrap_or(0),
        created_at: rfc3339(a.created_at),
    }
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid("description", format!("at most {MAX_DESCRIPTION} characters")));
    }
    Ok(())
}

/// Publishing an API in the marketplace needs a verified email address: the marketplace
/// must be able to reach whoever sells there.
async fn check_may_publish(db: &impl ConnectionTrait, owner: Uuid) -> Result<()> {
    quotas::require_verified(db, owner, "publishing").await
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", format!("1 to {MAX_NAME} characters, no control characters")));
    }
    Ok(name.to_owned())
}

/// The caller's API `id`; another user's API, or an id that is no UUID, is not found, so
/// nobody learns that it exists.
pub(crate) async fn owned(db: &impl ConnectionTrait, owner: Uuid, id: &str) -> Result<apis::Model> {
    let not_found = || Error::kind(Kind::NotFound, "no such API");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    apis::Entity::find_by_id(id).one(db).await?.filter(|a| a.owner_id == owner).ok_or_else(not_found)
}

/// Creates an API with version 1 and a unique slug, in the caller's transaction, unless
/// the owner already has `max_apis` (403 `quota`): the caller adds what other areas keep of
/// a new API and commits.
pub(crate) async fn create(txn: &impl ConnectionTrait, owner: Uuid, req: CreateApiRequest, max_apis: u32) -> Result<apis::Model> {
    let name = check_name(&req.name)?;
    let runtime = Runtime::from_request(&req.runtime)?;
    limits::check_code("code", &req.code)?;
    let description = req.description.unwrap_or_default();
    check_description(&description)?;
    if req.public == Some(true) {
        check_may_publish(txn, owner).await?;
    }
    let owned_now = apis::Entity::find().filter(apis::Column::OwnerId.eq(owner)).count(txn).await?;
    if owned_now >= u64::from(max_apis) {
        return Err(quotas::exceeded("apis", format!("you own {owned_now} APIs; the quota is {max_apis} (apis)")));
    }
    let base = slug::slugify(&name);
    for attempt in 0..SLUG_ATTEMPTS {
        let api = apis::Model {
            id: Uuid::now_v7(),
            owner_id: owner,
            name: name.clone(),
            slug: slug::candidate(&base, attempt),
            runtime: runtime.as_str().into(),
            description: description.clone(),
            public: req.public.unwrap_or(false),
            latest_version: 1,
            created_at: Utc::now(),
        };
        // A slug already taken, even by a concurrent create, inserts nothing and leaves
        // the transaction usable: try the next one.
        let inserted = apis::Entity::insert(api.clone().into_active_model())
            .on_conflict(OnConflict::column(apis::Column::Slug).do_nothing().to_owned())
            .exec_without_returning(txn)
            .await?;
        if inserted == 0 {
            continue;
        }
        versions::new_version(api.id, 1, req.code).insert(txn).await?;
        return Ok(api);
    }
    Err(Error::kind(Kind::Conflict, "could not find a free slug; choose another name"))
}

/// The caller's APIs, newest first.
pub(crate) async fn list(db: &impl ConnectionTrait, owner: Uuid) -> Result<Vec<Api>> {
    let rows = apis::Entity::find()
        .filter(apis::Column::OwnerId.eq(owner))
        .order_by_desc(apis::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(rows.iter().map(to_wire).collect())
}

/// The ids of the APIs `owner` owns.
pub(crate) async fn ids_owned_by(db: &impl ConnectionTrait, owner: Uuid) -> Result<Vec<Uuid>> {
    Ok(apis::Entity::find()
        .select_only()
        .column(apis::Column::Id)
        .filter(apis::Column::OwnerId.eq(owner))
        .into_tuple()
        .all(db)
        .await?)
}

/// Deletes an API and its versions, in the caller's transaction: the caller deletes what
/// other areas keep of it first.
pub(crate) async fn delete(txn: &impl ConnectionTrait, api_id: Uuid) -> Result<()> {
    versions::delete_all(txn, api_id).await?;
    apis::Entity::delete_by_id(api_id).exec(txn).await?;
    Ok(())
}

/// An API after an update, and whether anything changed.
pub(crate) struct Updated {
    /// The API as it is now.
    pub api: apis::Model,
    /// False when the request changed nothing (and nothing was written).
    pub changed: bool,
}

/// Changes the caller's API's name, description or public flag; the slug stays. Making it
/// public needs a verified email address.
pub(crate) async fn update(db: &impl ConnectionTrait, owner: Uuid, req: UpdateApiRequest) -> Result<Updated> {
    let api = owned(db, owner, &req.api_id).await?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    if let Some(d) = &req.description {
        check_description(d)?;
    }
    if req.public == Some(true) {
        check_may_publish(db, owner).await?;
    }
    let mut am = api.clone().into_active_model();
    if let Some(name) = name {
        am.name = Set(name);
    }
    if let Some(d) = req.description {
        am.description = Set(d);
    }
    if let Some(public) = req.public {
        am.public = Set(public);
    }
    if !am.is_changed() {
        return Ok(Updated { api, changed: false });
    }
    let api = am.update(db).await?;
    tracing::info!(api_id = %api.id, public = api.public, "API updated");
    Ok(Updated { api, changed: true })
}
