//! Calling the agents that host deployed APIs: the event a handler receives, the agent
//! clients that run it on an instance, and the HTTP answer made of its result (reading
//! only the proxy shape's keys, in `shape`). The REST handler of the data path is
//! `rest::call`.
pub mod agents;
pub mod event;
pub mod reply;
pub mod shape;
