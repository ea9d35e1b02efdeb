//! `souq.nodes.v1.Nodes`, for operators through the edge's admin endpoints: the nodes'
//! list, cordon, drain and uncordon. Every call carries the operators' admin token
//! (`--admin-token`), compared in constant time; without one configured, every call is
//! refused. The flags belong to `nodes`; the instance counts and the moves to `deploy`.
use std::sync::Arc;

use chrono::Utc;
use souq_proto::{
    Kind,
    nodes::{ListNodesRequest, NodeInfo, NodeList, NodeRequest, nodes_server},
};
use tonic::{Request, Status};
use tracing::instrument;

use super::Answer;
use crate::{
    deploy::status,
    error::{Error, Result},
    nodes::admin::{self, Change},
    state::State,
};

/// Implements `souq.nodes.v1.Nodes`.
pub struct NodesService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
    /// The operators' secret; `None` refuses every call.
    pub(crate) admin_token: Option<String>,
}

impl NodesService {
    /// Admits the caller that presents the admin token. The token is never logged.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = self.admin_token.as_deref() else {
            return Err(Error::kind(Kind::Forbidden, "admin access is not configured").into());
        };
        if souq_proto::bearer_is(req.metadata(), token) {
            Ok(())
        } else {
            Err(Error::kind(Kind::Unauthenticated, "a valid admin token is required").into())
        }
    }

    /// Applies `change` to the named node; the reconciler looks at once.
    async fn change(&self, req: Request<NodeRequest>, change: Change) -> Answer<NodeInfo> {
        self.admit(&req)?;
        let state = &self.state;
        let row = admin::set(&state.nodes, &req.get_ref().name, change).await?;
        state.deployer.wake();
        let count = status::per_node(&state.db, Some(row.id)).await?.get(&row.id).copied().unwrap_or(0);
        Ok(tonic::Response::new(admin::info(&row, count, Utc::now(), state.nodes.node_ttl)))
    }
}

#[tonic::async_trait]
impl nodes_server::Nodes for NodesService {
    #[instrument(skip_all)]
    async fn list(&self, req: Request<ListNodesRequest>) -> Answer<NodeList> {
        self.admit(&req)?;
        let state = &self.state;
        let listed = async {
            let rows = admin::list(&state.nodes).await?;
            let counts = status::per_node(&state.db, None).await?;
            let now = Utc::now();
            let nodes =
                rows.iter().map(|n| admin::info(n, counts.get(&n.id).copied().unwrap_or(0), now, state.nodes.node_ttl));
            Result::Ok(NodeList { nodes: nodes.collect() })
        };
        super::ok(listed.await)
    }

    #[instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn cordon(&self, req: Request<NodeRequest>) -> Answer<NodeInfo> {
        self.change(req, Change::Cordon).await
    }

    #[instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn drain(&self, req: Request<NodeRequest>) -> Answer<NodeInfo> {
        self.change(req, Change::Drain).await
    }

    #[instrument(skip_all, fields(node = %req.get_ref().name))]
    async fn uncordon(&self, req: Request<NodeRequest>) -> Answer<NodeInfo> {
        self.change(req, Change::Uncordon).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use souq_proto::{nodes::nodes_server::Nodes as _, registry::RegisterRequest};
    use tonic::Code;

    use super::*;
    use crate::{nodes::registry, testing::TestDb};

    const TOKEN: &str = "an-admin-token-of-at-least-32-characters";

    fn call<T>(msg: T, token: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = token {
            souq_proto::set_bearer(&mut req, t);
        }
        req
    }

    fn named(name: &str, token: Option<&str>) -> Request<NodeRequest> {
        call(NodeRequest { name: name.into() }, token)
    }

    fn registration(name: &str) -> RegisterRequest {
        RegisterRequest {
            node_name: name.into(),
            advertise_addr: format!("http://{name}:7100"),
            region: "r1".into(),
            runtimes: vec!["python".into()],
            docker_ok: true,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn operators_list_cordon_drain_and_uncordon_with_the_admin_token() {
        let t = TestDb::new().await;
        let svc = NodesService { state: t.state.clone(), admin_token: Some(TOKEN.into()) };
        registry::register(&t.state.nodes, &registration("n1"), None).await.unwrap();
        registry::register(&t.state.nodes, &registration("n2"), None).await.unwrap();

        for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
            assert_eq!(svc.list(call(ListNodesRequest {}, token)).await.unwrap_err().code(), Code::Unauthenticated);
            assert_eq!(svc.drain(named("n1", token)).await.unwrap_err().code(), Code::Unauthenticated);
        }
        let listed = svc.list(call(ListNodesRequest {}, Some(TOKEN))).await.unwrap().into_inner().nodes;
        let names: Vec<&str> = listed.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        assert!(
            listed.iter().all(|n| n.state == "up" && n.schedulable && !n.draining && n.instances == 0),
            "{listed:?}"
        );

        let n = svc.cordon(named("n1", Some(TOKEN))).await.unwrap().into_inner();
        assert_eq!((n.schedulable, n.draining), (false, false));
        let n = svc.drain(named("n2", Some(TOKEN))).await.unwrap().into_inner();
        assert_eq!((n.schedulable, n.draining), (false, true));
        // A cordon or drain outlives the agent's next registration.
        registry::register(&t.state.nodes, &registration("n2"), None).await.unwrap();
        let listed = svc.list(call(ListNodesRequest {}, Some(TOKEN))).await.unwrap().into_inner().nodes;
        assert_eq!((listed[0].schedulable, listed[1].schedulable, listed[1].draining), (false, false, true));
        let n = svc.uncordon(named("n2", Some(TOKEN))).await.unwrap().into_inner();
        assert_eq!((n.schedulable, n.draining), (true, false));
        assert_eq!(svc.cordon(named("nope", Some(TOKEN))).await.unwrap_err().code(), Code::NotFound);
        assert_eq!(svc.cordon(named("", Some(TOKEN))).await.unwrap_err().code(), Code::NotFound);

        // No admin token configured: refused whatever the caller presents.
        let closed = NodesService { state: t.state.clone(), admin_token: None };
        let refused = closed.list(call(ListNodesRequest {}, Some(TOKEN))).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (Code::PermissionDenied, "admin access is not configured"));
        t.close().await;
    }
}
