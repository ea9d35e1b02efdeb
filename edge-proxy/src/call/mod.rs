//! The data path's parts: the event a handler receives, the agents that run it, and the
//! HTTP answer made of its result. The route handler is `routes::call`.
pub mod agents;
pub mod event;
pub mod reply;
