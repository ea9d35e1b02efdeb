//! Deployed APIs: create, list, read, change and delete them, upload new code, deploy and stop
//! them, and read their status. Each route is one `Platform` call made for the caller.
use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use souq_proto::{
    Runtime,
    platform::{self, ApiRef, CreateApiRequest, DeployApiRequest, ListApisRequest, PutCodeRequest, UpdateApiRequest},
};
use utoipa::ToSchema;

use super::{auth::MessageBody, grpc};
use crate::{
    AppState,
    error::{ApiError, Problem, Result},
    extract::{ApiId, Caller, Json, OptionalJson},
};

/// Reads and small writes.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls that may wait on agents: delete, deploy, stop.
const SLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// A new API with its first version.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiBody {
    /// 1 to 64 characters; the slug is made from it.
    pub name: String,
    /// `python`, `nodejs` (or `node`) or `go`.
    pub runtime: String,
    /// The handler's source: at most 256 KiB.
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

impl From<platform::Api> for ApiBody {
    fn from(a: platform::Api) -> Self {
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
    /// The handler's source: at most 256 KiB.
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

impl From<platform::Version> for VersionBody {
    fn from(v: platform::Version) -> Self {
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

/// What to deploy; every field may be left out, and so may the whole body.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// The version to run; the latest when absent. An older one is a rollback.
    pub version: Option<u32>,
    /// How many instances; 1 when absent.
    pub replicas: Option<u32>,
    /// Only nodes with this region label.
    pub region: Option<String>,
}

/// One instance of an API.
#[derive(Serialize, ToSchema)]
pub struct ReplicaBody {
    /// The node's name; empty while unplaced.
    pub node: String,
    /// `pending`, `starting`, `running`, `crashed`, `failed` or `stopping`.
    pub state: String,
    /// The instance's id.
    pub instance_id: String,
    /// The version it runs.
    pub version: u32,
    /// The last error: a load failure, or why it last died.
    pub error: Option<String>,
    /// How often it was restarted after a crash.
    pub restarts: u32,
}

/// An API's deployment: what is wanted and what runs.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    /// The API's id.
    pub api_id: String,
    /// `pending`, `running`, `stopped` or `failed`.
    pub state: String,
    /// The desired version; null if never deployed.
    pub version: Option<u32>,
    /// Every instance, placed or not.
    pub replicas: Vec<ReplicaBody>,
    /// How many instances are wanted.
    pub desired_replicas: u32,
    /// The region asked for, if any.
    pub region: Option<String>,
    /// Why it is pending or failed.
    pub reason: Option<String>,
}

impl From<platform::ApiStatus> for StatusBody {
    fn from(s: platform::ApiStatus) -> Self {
        let replicas = s
            .instances
            .into_iter()
            .map(|i| ReplicaBody {
                node: i.node,
                state: i.state,
                instance_id: i.instance_id,
                version: i.version,
                error: i.error,
                restarts: i.restarts,
            })
            .collect();
        StatusBody {
            api_id: s.api_id,
            state: s.state,
            version: s.version,
            replicas,
            desired_replicas: s.replicas,
            region: s.region,
            reason: s.reason,
        }
    }
}

/// A deployment change that was accepted.
#[derive(Serialize, ToSchema)]
pub struct DeploymentBody {
    /// The status right after the change; poll `/status` to follow it.
    pub deployment: StatusBody,
}

/// Creates an API with its first version. It runs once deployed.
#[utoipa::path(post, path = "/api/v1/apis", request_body = CreateApiBody, tag = "apis", security(("bearer" = [])),
    responses((status = 201, body = CreatedBody),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateApiBody>,
) -> Result<impl IntoResponse> {
    let runtime: Runtime = body
        .runtime
        .parse()
        .map_err(|e: souq_proto::runtime::UnknownRuntime| ApiError::invalid("runtime", e.to_string()))?;
    let req = CreateApiRequest {
        name: body.name,
        runtime: runtime.as_str().into(),
        code: body.code,
        description: body.description,
        public: body.public,
    };
    let resp = state.platform.clone().create_api(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
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
    responses((status = 200, body = ApiListBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<ApiListBody>> {
    let resp =
        state.platform.clone().list_apis(grpc(ListApisRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiListBody { apis: resp.apis.into_iter().map(ApiBody::from).collect() }))
}

/// One of the caller's APIs.
#[utoipa::path(get, path = "/api/v1/apis/{id}", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = ApiBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(State(state): State<AppState>, caller: Caller, ApiId(api_id): ApiId) -> Result<axum::Json<ApiBody>> {
    let resp =
        state.platform.clone().get_api(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
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
    responses((status = 200, body = ApiBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Publishing needs a verified email address", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    Json(body): Json<UpdateApiBody>,
) -> Result<axum::Json<ApiBody>> {
    let req = UpdateApiRequest { api_id, name: body.name, description: body.description, public: body.public };
    let api = state.platform.clone().update_api(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiBody::from(api)))
}

/// Stops the API's instances, then deletes it with every version.
#[utoipa::path(delete, path = "/api/v1/apis/{id}", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = MessageBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<MessageBody>> {
    let resp = state
        .platform
        .clone()
        .delete_api(grpc(ApiRef { api_id }, Some(&caller.token), SLOW_TIMEOUT))
        .await?
        .into_inner();
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// Uploads new code as a new immutable version; what runs changes only with a deploy.
#[utoipa::path(put, path = "/api/v1/apis/{id}/code", request_body = CodeBody, tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = VersionBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn put_code(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    Json(body): Json<CodeBody>,
) -> Result<axum::Json<VersionBody>> {
    let req = PutCodeRequest { api_id, code: body.code };
    let resp = state.platform.clone().put_code(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(VersionBody::from(resp)))
}

/// The API's versions.
#[utoipa::path(get, path = "/api/v1/apis/{id}/versions", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = VersionListBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<VersionListBody>> {
    let resp =
        state.platform.clone().list_versions(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(VersionListBody { versions: resp.versions.into_iter().map(VersionBody::from).collect() }))
}

/// Runs a version on some replicas. The answer comes once the change is recorded; the
/// instances start after it, so poll `/status`. The body may be left out.
#[utoipa::path(post, path = "/api/v1/apis/{id}/deploy", request_body(content = Option<DeployBody>), tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 202, body = DeploymentBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    OptionalJson(body): OptionalJson<DeployBody>,
) -> Result<impl IntoResponse> {
    let req = DeployApiRequest { api_id, version: body.version, replicas: body.replicas, region: body.region };
    let resp = state.platform.clone().deploy(grpc(req, Some(&caller.token), SLOW_TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(DeploymentBody { deployment: resp.into() })))
}

/// Stops every instance of the API; it keeps its versions and can be deployed again.
#[utoipa::path(post, path = "/api/v1/apis/{id}/stop", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 202, body = DeploymentBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn stop(State(state): State<AppState>, caller: Caller, ApiId(api_id): ApiId) -> Result<impl IntoResponse> {
    let resp =
        state.platform.clone().stop_api(grpc(ApiRef { api_id }, Some(&caller.token), SLOW_TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(DeploymentBody { deployment: resp.into() })))
}

/// What is wanted of the API and what runs now.
#[utoipa::path(get, path = "/api/v1/apis/{id}/status", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = StatusBody), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<StatusBody>> {
    let resp = state
        .platform
        .clone()
        .get_api_status(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT))
        .await?
        .into_inner();
    Ok(axum::Json(StatusBody::from(resp)))
}
