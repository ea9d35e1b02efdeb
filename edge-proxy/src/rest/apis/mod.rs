//! Deployed APIs: create, list, read, change and delete them, and upload new code; their
//! [`deployments`] and [`logs`]. Each route is one `Apis` call made for the caller.
pub mod deployments;
pub mod logs;

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use souq_proto::{
    Runtime,
    apis::{self, ApiRef, CreateApiRequest, ListApisRequest, PutCodeRequest, UpdateApiRequest},
    limits::check_code,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    MessageBody, grpc,
    openapi::{Conflict, Forbidden, NotFound, PROBLEM_JSON, PayloadTooLarge, Unauthorized, Unprocessable},
};
use crate::{
    AppState,
    error::{Problem, Result},
    extract::{ApiId, Caller, Json},
};

/// Reads and small writes.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls that may wait on agents: delete, deploy, stop.
const SLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// The area's routes, each served and documented from its handler: this module's, then
/// each submodule's own list.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(put_code))
        .routes(routes!(versions))
        .merge(deployments::routes())
        .merge(logs::routes())
}

/// A new API with its first version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiBody {
    /// 1 to 64 characters; the slug is made from it.
    pub name: String,
    /// `python`, `nodejs` (or `node`) or `go`.
    pub runtime: String,
    /// The handler's source: at most 256 KiB of UTF-8 (`limits::MAX_CODE_BYTES`).
    pub code: String,
    /// At most 1000 characters.
    pub description: Option<String>,
    /// Listed in the marketplace; false when absent.
    pub public: Option<bool>,
}

/// An API.
#[derive(Serialize, ToSchema)]
pub struct ApiBody {
    /// The API's id (a UUID).
    pub id: String,
    /// Its unique name in URLs: `/call/{slug}`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Canonical runtime: `python`, `nodejs` or `go`.
    pub runtime: String,
    /// Description; empty when none.
    pub description: String,
    /// Listed in the marketplace.
    pub public: bool,
    /// The newest version's number.
    pub latest_version: u32,
    /// RFC 3339.
    pub created_at: String,
}

impl From<apis::Api> for ApiBody {
    fn from(a: apis::Api) -> Self {
        ApiBody {
            id: a.id,
            slug: a.slug,
            name: a.name,
            runtime: a.runtime,
            description: a.description,
            public: a.public,
            latest_version: a.latest_version,
            created_at: a.created_at,
        }
    }
}

/// A created API.
#[derive(Serialize, ToSchema)]
pub struct CreatedBody {
    /// The API's id.
    pub id: String,
    /// Its slug.
    pub slug: String,
    /// The first version: 1.
    pub version: u32,
    /// The whole API.
    pub api: ApiBody,
}

/// The caller's APIs.
#[derive(Serialize, ToSchema)]
pub struct ApiListBody {
    /// Every API the caller owns.
    pub apis: Vec<ApiBody>,
}

/// New code for an API.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The handler's source: at most 256 KiB of UTF-8 (`limits::MAX_CODE_BYTES`).
    pub code: String,
}

/// One immutable version of an API's code.
#[derive(Serialize, ToSchema)]
pub struct VersionBody {
    /// The version's number, from 1.
    pub version: u32,
    /// Hex SHA-256 of the code.
    pub code_sha256: String,
    /// Size of the code in bytes.
    pub code_bytes: u32,
    /// RFC 3339.
    pub created_at: String,
}

impl From<apis::Version> for VersionBody {
    fn from(v: apis::Version) -> Self {
        VersionBody {
            version: v.version,
            code_sha256: v.code_sha256,
            code_bytes: v.code_bytes,
            created_at: v.created_at,
        }
    }
}

/// An API's versions.
#[derive(Serialize, ToSchema)]
pub struct VersionListBody {
    /// Oldest first, as the control plane lists them.
    pub versions: Vec<VersionBody>,
}

/// Creates an API with its first version. It runs once deployed.
#[utoipa::path(post, path = "/api/v1/apis", request_body = CreateApiBody, tag = "apis", security(("bearer" = [])),
    responses((status = 201, body = CreatedBody),
        Unauthorized,
        Forbidden,
        Conflict,
        PayloadTooLarge,
        Unprocessable))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateApiBody>,
) -> Result<impl IntoResponse> {
    let runtime = Runtime::from_request(&body.runtime)?;
    check_code("code", &body.code)?;
    let req = CreateApiRequest {
        name: body.name,
        runtime: runtime.as_str().into(),
        code: body.code,
        description: body.description,
        public: body.public,
    };
    let resp = state.apis.clone().create_api(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    let api = ApiBody::from(resp.api.unwrap_or_default());
    let location = HeaderValue::try_from(format!("/api/v1/apis/{}", api.id)).ok();
    let body = CreatedBody { id: api.id.clone(), slug: api.slug.clone(), version: resp.version, api };
    let mut out = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Some(l) = location {
        out.headers_mut().insert(header::LOCATION, l);
    }
    Ok(out)
}

/// The caller's APIs.
#[utoipa::path(get, path = "/api/v1/apis", tag = "apis", security(("bearer" = [])),
    responses((status = 200, body = ApiListBody), Unauthorized))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<ApiListBody>> {
    let resp = state.apis.clone().list_apis(grpc(ListApisRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiListBody { apis: resp.apis.into_iter().map(ApiBody::from).collect() }))
}

/// One of the caller's APIs.
#[utoipa::path(get, path = "/api/v1/apis/{id}", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = ApiBody), Unauthorized,
        NotFound))]
pub async fn get(State(state): State<AppState>, caller: Caller, ApiId(api_id): ApiId) -> Result<axum::Json<ApiBody>> {
    let resp = state.apis.clone().get_api(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiBody::from(resp)))
}

/// What to change of an API; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiBody {
    /// A new display name (the slug stays).
    pub name: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// List it in the marketplace (needs a verified email address), or take it off.
    pub public: Option<bool>,
}

/// Changes an API's name, description or public flag.
#[utoipa::path(patch, path = "/api/v1/apis/{id}", request_body = UpdateApiBody, tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = ApiBody), Unauthorized,
        (status = 403, description = "Publishing needs a verified email address", body = Problem, content_type = PROBLEM_JSON),
        NotFound,
        Unprocessable))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    Json(body): Json<UpdateApiBody>,
) -> Result<axum::Json<ApiBody>> {
    let req = UpdateApiRequest { api_id, name: body.name, description: body.description, public: body.public };
    let api = state.apis.clone().update_api(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiBody::from(api)))
}

/// Stops the API's instances, then deletes it with every version.
#[utoipa::path(delete, path = "/api/v1/apis/{id}", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = MessageBody), Unauthorized,
        NotFound))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<MessageBody>> {
    let resp =
        state.apis.clone().delete_api(grpc(ApiRef { api_id }, Some(&caller.token), SLOW_TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// Uploads new code as a new immutable version; what runs changes only with a deploy.
#[utoipa::path(put, path = "/api/v1/apis/{id}/code", request_body = CodeBody, tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = VersionBody), Unauthorized,
        Forbidden,
        NotFound,
        PayloadTooLarge,
        Unprocessable))]
pub async fn put_code(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    Json(body): Json<CodeBody>,
) -> Result<axum::Json<VersionBody>> {
    check_code("code", &body.code)?;
    let req = PutCodeRequest { api_id, code: body.code };
    let resp = state.apis.clone().put_code(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(VersionBody::from(resp)))
}

/// The API's versions.
#[utoipa::path(get, path = "/api/v1/apis/{id}/versions", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = VersionListBody), Unauthorized,
        NotFound))]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<VersionListBody>> {
    let resp =
        state.apis.clone().list_versions(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(VersionListBody { versions: resp.versions.into_iter().map(VersionBody::from).collect() }))
}
