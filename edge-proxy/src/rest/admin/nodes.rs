//! The nodes, for operators: list them, cordon one (no new work), drain one (its
//! instances move elsewhere, each retired once its replacement runs) and uncordon it.
//! Each route is one `Nodes` call carrying the caller's bearer, which the control plane
//! compares with its admin token.
use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use serde::Serialize;
use souq_proto::nodes::{ListNodesRequest, NodeInfo, NodeRequest};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::{ApiError, Result},
    extract::bearer,
    rest::{
        grpc,
        openapi::{Forbidden, NotFound, Unauthorized, Unavailable},
    },
};

/// Every call is a few database reads and at most one write.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest node name the registry accepts.
const MAX_NAME: usize = 128;

/// One node agent as operators see it.
#[derive(Serialize, ToSchema)]
pub struct NodeBody {
    /// The node's unique name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// Its region label.
    pub region: String,
    /// The agent's gRPC address.
    pub address: String,
    /// `up` (heartbeated within the node TTL, 8 s by default) or `down`.
    pub state: String,
    /// False once cordoned or draining: nothing new is placed there.
    pub schedulable: bool,
    /// Being drained: its instances move to other nodes.
    pub draining: bool,
    /// Instances the control plane has on the node, whatever their state.
    pub instances: u32,
    /// Whether its Docker Engine answered at its last heartbeat.
    pub docker_ok: bool,
    /// Its last heartbeat, RFC 3339.
    pub last_heartbeat: String,
}

impl From<NodeInfo> for NodeBody {
    fn from(n: NodeInfo) -> Self {
        NodeBody {
            name: n.name,
            id: n.id,
            region: n.region,
            address: n.address,
            state: n.state,
            schedulable: n.schedulable,
            draining: n.draining,
            instances: n.instances,
            docker_ok: n.docker_ok,
            last_heartbeat: n.last_heartbeat,
        }
    }
}

/// Every registered node.
#[derive(Serialize, ToSchema)]
pub struct NodesBody {
    /// By name.
    pub nodes: Vec<NodeBody>,
}

/// The `{name}` of a path: a name no node can have is a 404 without asking.
fn node_request(name: String) -> Result<NodeRequest> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such node"));
    }
    Ok(NodeRequest { name })
}

/// Lists every registered node with its state. Needs the admin token as the bearer.
#[utoipa::path(get, path = "/api/v1/admin/nodes", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = NodesBody), Unauthorized, Forbidden, Unavailable))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<axum::Json<NodesBody>> {
    let token = bearer(&headers)?;
    let resp = state.nodes.clone().list(grpc(ListNodesRequest {}, Some(token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(NodesBody { nodes: resp.nodes.into_iter().map(NodeBody::from).collect() }))
}

/// Cordons a node: nothing new is placed on it; what runs there stays.
#[utoipa::path(post, path = "/api/v1/admin/nodes/{name}/cordon", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeBody), Unauthorized, Forbidden, NotFound, Unavailable))]
pub async fn cordon(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<axum::Json<NodeBody>> {
    let token = bearer(&headers)?;
    let resp = state.nodes.clone().cordon(grpc(node_request(name)?, Some(token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(resp.into()))
}

/// Drains a node: it is cordoned, and each of its instances is replaced on another node
/// and retired once the replacement runs, so calls never fail. The answer comes once the
/// drain is recorded; `GET /api/v1/admin/nodes` shows its instances leave.
#[utoipa::path(post, path = "/api/v1/admin/nodes/{name}/drain", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 202, body = NodeBody), Unauthorized, Forbidden, NotFound, Unavailable))]
pub async fn drain(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<impl IntoResponse> {
    let token = bearer(&headers)?;
    let resp = state.nodes.clone().drain(grpc(node_request(name)?, Some(token), TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(NodeBody::from(resp))))
}

/// Ends a cordon or a drain: the node takes work again.
#[utoipa::path(post, path = "/api/v1/admin/nodes/{name}/uncordon", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeBody), Unauthorized, Forbidden, NotFound, Unavailable))]
pub async fn uncordon(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<axum::Json<NodeBody>> {
    let token = bearer(&headers)?;
    let resp = state.nodes.clone().uncordon(grpc(node_request(name)?, Some(token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(resp.into()))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(cordon)).routes(routes!(drain)).routes(routes!(uncordon))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::{body::Body, http::Request};
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use crate::{AppState, Config, router};

    /// A router whose control plane is a closed loopback port.
    async fn app() -> axum::Router {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let cfg = Config::new(format!("http://{closed}"), "join-token-0123456789".into());
        router(AppState::new(&cfg, CancellationToken::new()).unwrap())
    }

    async fn send(method: &str, path: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app().await.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn no_bearer_is_401_and_an_impossible_name_404_before_the_control_plane() {
        for (method, path) in [
            ("GET", "/api/v1/admin/nodes"),
            ("POST", "/api/v1/admin/nodes/n1/cordon"),
            ("POST", "/api/v1/admin/nodes/n1/drain"),
            ("POST", "/api/v1/admin/nodes/n1/uncordon"),
        ] {
            let (s, body) = send(method, path, None).await;
            assert_eq!((s, body["type"].as_str()), (401, Some("urn:souq:problem:unauthenticated")), "{path}: {body}");
        }
        let long = "n".repeat(129);
        let (s, body) = send("POST", &format!("/api/v1/admin/nodes/{long}/drain"), Some("token")).await;
        assert_eq!(s, 404, "{body}");
        // Past the edge's checks, an unreachable control plane is a 503.
        let (s, body) = send("GET", "/api/v1/admin/nodes", Some("token")).await;
        assert_eq!(s, 503, "{body}");
    }
}
