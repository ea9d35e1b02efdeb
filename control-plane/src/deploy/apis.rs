//! APIs and their immutable versions: create, list, read, delete, and new code.
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, TransactionTrait,
};
use sha2::{Digest, Sha256};
use souq_proto::{
    Kind, Runtime,
    platform::{Api, ApiCreated, CreateApiRequest, UpdateApiRequest, Version},
};
use uuid::Uuid;

use crate::{
    State,
    entity::{api_versions, apis, deployments, plans, subscriptions, users},
    error::{Error, Result},
    market::{self, access},
};

/// Largest handler accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Most APIs one user may own.
pub const MAX_APIS_PER_USER: u64 = 100;
/// Most versions one API may have.
pub const MAX_VERSIONS: i32 = 1000;
const MAX_NAME: usize = 64;
const MAX_DESCRIPTION: usize = 1000;
const MAX_SLUG_BASE: usize = 40;

/// A time as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

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

fn version_to_wire(v: &api_versions::Model) -> Version {
    Version {
        version: u32::try_from(v.number).unwrap_or(0),
        code_sha256: v.code_sha256.clone(),
        code_bytes: u32::try_from(v.code_bytes).unwrap_or(0),
        created_at: rfc3339(v.created_at),
    }
}

/// The slug a name suggests: lowercase ASCII letters and digits, words joined by `-`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= MAX_SLUG_BASE {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "api".into() } else { slug.into() }
}

fn check_code(code: &str) -> Result<()> {
    if code.trim().is_empty() {
        return Err(Error::invalid("code", "must not be empty"));
    }
    if code.len() > MAX_CODE_BYTES {
        return Err(Error::invalid("code", format!("must be at most {MAX_CODE_BYTES} bytes")));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::invalid("description", format!("at most {MAX_DESCRIPTION} characters")));
    }
    Ok(())
}

/// Publishing an API in the marketplace needs a verified email address: the marketplace
/// must be able to reach whoever sells there.
async fn check_may_publish(state: &State, owner: Uuid) -> Result<()> {
    let verified = users::Entity::find_by_id(owner).one(&state.db).await?.is_some_and(|u| u.email_verified);
    if !verified {
        return Err(Error::kind(Kind::Forbidden, "verify your email address before publishing"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid("name", format!("1 to {MAX_NAME} characters, no control characters")));
    }
    Ok(name.to_owned())
}

fn new_version(api_id: Uuid, number: i32, code: String) -> api_versions::ActiveModel {
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

/// The caller's API `id`; another user's API, or an id that is no UUID, is not found, so
/// nobody learns that it exists.
pub(crate) async fn owned(state: &State, owner: Uuid, id: &str) -> Result<apis::Model> {
    let not_found = || Error::kind(Kind::NotFound, "no such API");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    apis::Entity::find_by_id(id).one(&state.db).await?.filter(|a| a.owner_id == owner).ok_or_else(not_found)
}

/// Creates an API with its first version and a unique slug.
pub(crate) async fn create(state: &State, owner: Uuid, req: CreateApiRequest) -> Result<ApiCreated> {
    let name = check_name(&req.name)?;
    let runtime: Runtime =
        req.runtime.parse().map_err(|e: souq_proto::runtime::UnknownRuntime| Error::invalid("runtime", e.to_string()))?;
    check_code(&req.code)?;
    let description = req.description.unwrap_or_default();
    check_description(&description)?;
    if req.public == Some(true) {
        check_may_publish(state, owner).await?;
    }
    let owned_now = apis::Entity::find().filter(apis::Column::OwnerId.eq(owner)).count(&state.db).await?;
    if owned_now >= MAX_APIS_PER_USER {
        return Err(Error::kind(Kind::Conflict, format!("you already own {MAX_APIS_PER_USER} APIs, the most allowed")));
    }
    let base = slugify(&name);
    for attempt in 0..8 {
        let slug = if attempt == 0 { base.clone() } else { format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..6]) };
        if apis::Entity::find().filter(apis::Column::Slug.eq(&slug)).one(&state.db).await?.is_some() {
            continue;
        }
        let api = apis::Model {
            id: Uuid::now_v7(),
            owner_id: owner,
            name: name.clone(),
            slug,
            runtime: runtime.as_str().into(),
            description: description.clone(),
            public: req.public.unwrap_or(false),
            latest_version: 1,
            created_at: Utc::now(),
        };
        let txn = state.db.begin().await?;
        match apis::Entity::insert(api.clone().into_active_model()).exec_without_returning(&txn).await {
            Ok(_) => {}
            // Taken by a concurrent create between the check and the insert: next slug.
            Err(_) if attempt < 7 => continue,
            Err(e) => return Err(e.into()),
        }
        api_versions::Entity::insert(new_version(api.id, 1, req.code.clone())).exec_without_returning(&txn).await?;
        market::plans::insert(&txn, market::plans::free(api.id, api.created_at)).await?;
        txn.commit().await?;
        state.wake();
        tracing::info!(api_id = %api.id, slug = %api.slug, %runtime, "API created");
        return Ok(ApiCreated { api: Some(to_wire(&api)), version: 1 });
    }
    Err(Error::kind(Kind::Conflict, "could not find a free slug; choose another name"))
}

/// The caller's APIs, newest first.
pub(crate) async fn list(state: &State, owner: Uuid) -> Result<Vec<Api>> {
    let rows = apis::Entity::find()
        .filter(apis::Column::OwnerId.eq(owner))
        .order_by_desc(apis::Column::CreatedAt)
        .all(&state.db)
        .await?;
    Ok(rows.iter().map(to_wire).collect())
}

/// Stops the API's instances (their agents are told by the reconciler) and deletes it.
pub(crate) async fn delete(state: &State, owner: Uuid, id: &str) -> Result<()> {
    let api = owned(state, owner, id).await?;
    let txn = state.db.begin().await?;
    super::desired::retire(&txn, api.id, None).await?;
    deployments::Entity::delete_by_id(api.id).exec(&txn).await?;
    api_versions::Entity::delete_many().filter(api_versions::Column::ApiId.eq(api.id)).exec(&txn).await?;
    subscriptions::Entity::delete_many().filter(subscriptions::Column::ApiId.eq(api.id)).exec(&txn).await?;
    plans::Entity::delete_many().filter(plans::Column::ApiId.eq(api.id)).exec(&txn).await?;
    apis::Entity::delete_by_id(api.id).exec(&txn).await?;
    txn.commit().await?;
    state.wake();
    // Its subscribers' grants go with it.
    access::publish_now(state).await;
    tracing::info!(api_id = %api.id, "API deleted");
    Ok(())
}

/// Changes the caller's API's name, description or public flag; the slug stays. Making it
/// public needs a verified email address.
pub(crate) async fn update(state: &State, owner: Uuid, req: UpdateApiRequest) -> Result<Api> {
    let api = owned(state, owner, &req.api_id).await?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    if let Some(d) = &req.description {
        check_description(d)?;
    }
    if req.public == Some(true) {
        check_may_publish(state, owner).await?;
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
        return Ok(to_wire(&api));
    }
    let api = am.update(&state.db).await?;
    // The routes carry the public flag.
    state.wake();
    tracing::info!(api_id = %api.id, public = api.public, "API updated");
    Ok(to_wire(&api))
}

/// Stores `code` as the API's next version.
pub(crate) async fn put_code(state: &State, owner: Uuid, id: &str, code: String) -> Result<Version> {
    check_code(&code)?;
    let api = owned(state, owner, id).await?;
    if api.latest_version >= MAX_VERSIONS {
        return Err(Error::kind(Kind::Conflict, format!("this API has {MAX_VERSIONS} versions, the most allowed")));
    }
    let txn = state.db.begin().await?;
    // Bump first: two concurrent puts cannot both take the same number (the unique index
    // on (api_id, number) refuses the second).
    let number = api.latest_version + 1;
    let mut am = api.clone().into_active_model();
    am.latest_version = Set(number);
    am.update(&txn).await?;
    let v = new_version(api.id, number, code).insert(&txn).await?;
    txn.commit().await?;
    tracing::info!(api_id = %api.id, version = number, "new version");
    Ok(version_to_wire(&v))
}

/// Every version of the API, oldest first.
pub(crate) async fn versions(state: &State, owner: Uuid, id: &str) -> Result<Vec<Version>> {
    let api = owned(state, owner, id).await?;
    let rows = api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api.id))
        .order_by_asc(api_versions::Column::Number)
        .all(&state.db)
        .await?;
    Ok(rows.iter().map(version_to_wire).collect())
}

/// Version `number` of an API, with its code.
pub(crate) async fn version(state: &State, api_id: Uuid, number: i32) -> Result<Option<api_versions::Model>> {
    Ok(api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api_id))
        .filter(api_versions::Column::Number.eq(number))
        .one(&state.db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        assert_eq!(slugify("Weather API"), "weather-api");
        assert_eq!(slugify("  --Hello,  World!! "), "hello-world");
        assert_eq!(slugify("أسعار الذهب"), "api");
        assert_eq!(slugify("Prices ذهب 2"), "prices-2");
        assert_eq!(slugify(&"x".repeat(100)).len(), 40);
    }
}
