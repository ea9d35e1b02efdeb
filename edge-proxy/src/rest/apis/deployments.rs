//! An API's deployment: deploy a version on some replicas, stop it, and read what is
//! wanted and what runs. Each route is one `Apis` call made for the caller.
use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use souq_proto::apis::{self, ApiRef, DeployApiRequest};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{SLOW_TIMEOUT, TIMEOUT};
use crate::{
    AppState,
    error::Result,
    extract::{ApiId, Caller, OptionalJson},
    rest::{
        grpc,
        openapi::{Forbidden, NotFound, Unauthorized, Unavailable, Unprocessable, UnsupportedMediaType},
    },
};

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

impl From<apis::ApiStatus> for StatusBody {
    fn from(s: apis::ApiStatus) -> Self {
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

/// Runs a version on some replicas. The answer comes once the change is recorded; the
/// instances start after it, so poll `/status`. The body may be left out.
#[utoipa::path(post, path = "/api/v1/apis/{id}/deploy", request_body(content = Option<DeployBody>), tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 202, body = DeploymentBody), Unauthorized,
        Forbidden,
        NotFound,
        UnsupportedMediaType,
        Unprocessable,
        Unavailable))]
pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    OptionalJson(body): OptionalJson<DeployBody>,
) -> Result<impl IntoResponse> {
    let req = DeployApiRequest { api_id, version: body.version, replicas: body.replicas, region: body.region };
    let resp = state.apis.clone().deploy(grpc(req, Some(&caller.token), SLOW_TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(DeploymentBody { deployment: resp.into() })))
}

/// Stops every instance of the API; it keeps its versions and can be deployed again.
#[utoipa::path(post, path = "/api/v1/apis/{id}/stop", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 202, body = DeploymentBody), Unauthorized,
        NotFound))]
pub async fn stop(State(state): State<AppState>, caller: Caller, ApiId(api_id): ApiId) -> Result<impl IntoResponse> {
    let resp =
        state.apis.clone().stop_api(grpc(ApiRef { api_id }, Some(&caller.token), SLOW_TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(DeploymentBody { deployment: resp.into() })))
}

/// What is wanted of the API and what runs now.
#[utoipa::path(get, path = "/api/v1/apis/{id}/status", tag = "apis", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = StatusBody), Unauthorized,
        NotFound))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<StatusBody>> {
    let resp =
        state.apis.clone().get_api_status(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(StatusBody::from(resp)))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(deploy)).routes(routes!(stop)).routes(routes!(status))
}
