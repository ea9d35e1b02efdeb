//! A node agent known to the control plane.
use sea_orm::entity::prelude::*;

/// A row of `nodes`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    /// The agent's gRPC address, e.g. `http://10.0.0.5:7100`.
    pub address: String,
    pub region: String,
    /// Comma-separated canonical runtime names.
    pub runtimes: String,
    pub memory_mb: i64,
    pub cpus_milli: i32,
    pub max_timeout_ms: i64,
    pub docker_ok: bool,
    pub registered_at: DateTimeUtc,
    pub last_heartbeat: DateTimeUtc,
    /// JSON object: idle warm sandboxes per canonical runtime name.
    pub warm: String,
    /// Memory one API instance reserves (its sandbox limit), in MiB.
    pub instance_memory_mb: i64,
    /// CPU one API instance reserves, in thousandths of a core.
    pub instance_cpus_milli: i32,
    /// The identity the node was pinned to at its first registration: the SHA-256 of its
    /// certificate's public key, in hex; `None` for nodes registered in plain text.
    pub identity: Option<String>,
    /// False once an operator cordons the node: it takes no new work.
    pub schedulable: bool,
    /// True while an operator drains the node: no new work, and its instances are moved
    /// to other nodes (each retired once its replacement runs).
    pub draining: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
impl Model {
    /// A schedulable node for tests: 1 GiB, one core, Python, named `name` at `address`,
    /// last heard from at `last_heartbeat`.
    pub(crate) fn sample(name: &str, address: &str, last_heartbeat: DateTimeUtc) -> Model {
        Model {
            id: Uuid::now_v7(),
            name: name.into(),
            address: address.into(),
            region: String::new(),
            runtimes: "python".into(),
            memory_mb: 1024,
            cpus_milli: 1000,
            max_timeout_ms: 30_000,
            docker_ok: true,
            registered_at: last_heartbeat,
            last_heartbeat,
            warm: "{}".into(),
            instance_memory_mb: 256,
            instance_cpus_milli: 500,
            identity: None,
            schedulable: true,
            draining: false,
        }
    }
}
