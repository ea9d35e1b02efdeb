//! The `Registry` service: node agents register with the join token and heartbeat their
//! capacity and Docker health.
use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use souq_proto::{
    Kind, Runtime,
    registry::{
        HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse, registry_server,
    },
};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};
use uuid::Uuid;

use crate::{
    State, deploy,
    entity::nodes,
    error::{Error, Result},
};

/// Implements `souq.registry.v1.Registry`.
pub struct RegistryService {
    pub(crate) state: Arc<State>,
}

impl RegistryService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<()> {
        if souq_proto::bearer_is(req.metadata(), &self.state.join_token) {
            Ok(())
        } else {
            Err(Error::kind(Kind::Unauthenticated, "invalid join token"))
        }
    }
}

/// The warm levels a node reported, as stored: only known runtimes, as JSON.
fn warm_json(warm: &std::collections::HashMap<String, u32>) -> String {
    let known: std::collections::BTreeMap<&str, u32> =
        warm.iter().filter_map(|(k, v)| k.parse::<Runtime>().ok().map(|r| (r.as_str(), *v))).collect();
    serde_json::to_string(&known).unwrap_or_else(|_| "{}".into())
}

fn validate(req: &RegisterRequest) -> Result<Vec<Runtime>> {
    let name_ok = !req.node_name.is_empty()
        && req.node_name.len() <= 128
        && req.node_name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(Error::invalid("node_name", "1 to 128 characters of [A-Za-z0-9._-]"));
    }
    let addr = &req.advertise_addr;
    if !(addr.starts_with("http://") || addr.starts_with("https://")) || addr.len() > 256 {
        return Err(Error::invalid("advertise_addr", "must be an http:// or https:// URL"));
    }
    if req.region.len() > 64 {
        return Err(Error::invalid("region", "at most 64 characters"));
    }
    req.runtimes
        .iter()
        .map(|r| r.parse::<Runtime>().map_err(|e| Error::invalid("runtimes", e.to_string())))
        .collect()
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryService {
    #[instrument(skip_all, fields(node = %req.get_ref().node_name))]
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let runtimes = validate(&req)?;
        let db = &self.state.db;
        let now = Utc::now();
        let cap = req.capacity.unwrap_or_default();
        let existing = nodes::Entity::find()
            .filter(nodes::Column::Name.eq(&req.node_name))
            .one(db)
            .await
            .map_err(Error::from)?;
        let runtimes = runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
        let id = existing.as_ref().map_or_else(Uuid::now_v7, |n| n.id);
        let row = nodes::ActiveModel {
            id: Set(id),
            name: Set(req.node_name.clone()),
            address: Set(req.advertise_addr.clone()),
            region: Set(req.region.clone()),
            runtimes: Set(runtimes),
            memory_mb: Set(i64::try_from(cap.memory_mb).unwrap_or(i64::MAX)),
            cpus_milli: Set(i32::try_from(cap.cpus_milli).unwrap_or(i32::MAX)),
            max_timeout_ms: Set(i64::try_from(req.max_timeout_ms).unwrap_or(i64::MAX)),
            docker_ok: Set(req.docker_ok),
            registered_at: Set(now),
            last_heartbeat: Set(now),
            warm: Set(warm_json(&cap.warm)),
            instance_memory_mb: Set(i64::try_from(cap.instance_memory_mb).unwrap_or(i64::MAX)),
            instance_cpus_milli: Set(i32::try_from(cap.instance_cpus_milli).unwrap_or(i32::MAX)),
        };
        // A node that registers again (after a restart) keeps its id.
        let row = if existing.is_some() { row.update(db).await } else { row.insert(db).await }.map_err(Error::from)?;
        deploy::reports::apply(&self.state, row.into(), &req.instances).await?;
        info!(node_id = %id, address = %req.advertise_addr, docker_ok = req.docker_ok, "node registered");
        let interval = u32::try_from(self.state.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        Ok(Response::new(RegisterResponse { node_id: id.to_string(), heartbeat_interval_ms: interval }))
    }

    #[instrument(skip_all)]
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let Ok(id) = req.node_id.parse::<Uuid>() else {
            return Ok(Response::new(HeartbeatResponse { reregister: true }));
        };
        let db = &self.state.db;
        let Some(row) = nodes::Entity::find_by_id(id).one(db).await.map_err(Error::from)? else {
            return Ok(Response::new(HeartbeatResponse { reregister: true }));
        };
        let mut am = row.into_active_model();
        am.last_heartbeat = Set(Utc::now());
        am.docker_ok = Set(req.docker_ok);
        if let Some(cap) = req.capacity {
            am.memory_mb = Set(i64::try_from(cap.memory_mb).unwrap_or(i64::MAX));
            am.cpus_milli = Set(i32::try_from(cap.cpus_milli).unwrap_or(i32::MAX));
            am.warm = Set(warm_json(&cap.warm));
            am.instance_memory_mb = Set(i64::try_from(cap.instance_memory_mb).unwrap_or(i64::MAX));
            am.instance_cpus_milli = Set(i32::try_from(cap.instance_cpus_milli).unwrap_or(i32::MAX));
        }
        let row = am.update(db).await.map_err(Error::from)?;
        deploy::reports::apply(&self.state, row.into(), &req.instances).await?;
        Ok(Response::new(HeartbeatResponse { reregister: false }))
    }
}
