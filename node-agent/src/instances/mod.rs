//! Deployed instances: the table of the instances this node holds, each one's lifecycle
//! and supervisor, the serve-mode channel to its shim, the Docker launcher of its
//! sandbox, its logs (a ring buffer per instance, streamed by the Logs RPC), and the gate
//! of the data path's calls (which refusals ran nothing; the drain at shutdown).
pub mod docker_launcher;
pub mod gate;
pub mod lifecycle;
pub mod log_buffer;
pub mod log_stream;
pub mod serve_client;
pub mod spec;
pub mod table;

pub use docker_launcher::DockerLauncher;
pub use lifecycle::{Instance, Launcher};
pub use log_buffer::LogBuffer;
pub use spec::InstanceSpec;
pub use table::Instances;
