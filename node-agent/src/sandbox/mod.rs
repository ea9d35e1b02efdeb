//! Sandboxes: the one container profile every piece of user code runs in, the channel
//! the agent talks to its shim over, and the warm sessions that serve executes, with
//! their pools and admission. Deployed instances build on the same [`Sandbox`].
pub mod admission;
pub mod channel;
pub mod container;
pub mod frame;
pub mod pool;
pub mod profile;
pub mod session;

pub use admission::Admission;
pub use channel::MAX_CHANNEL_DIR;
pub use container::{Sandbox, SandboxSpec, remove_own_containers};
pub use pool::{PoolConfig, Pools, SessionTemplate};
pub use profile::{LABEL_INSTANCE, LABEL_KIND, LABEL_NODE, Limits, ShimMode};
pub use session::Session;
