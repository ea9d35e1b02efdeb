//! Docker: the Engine client and the runtime images. Everything else reaches the Engine
//! through here; nothing in this folder knows about sandboxes or instances.
pub mod engine;
pub mod images;

pub use engine::{Engine, connect, ping};
pub use images::Images;
