//! sea-orm entities: one module per table.
pub mod api_keys;
pub mod api_versions;
pub mod apis;
pub mod audit_log;
pub mod deployments;
pub mod email_tokens;
pub mod executions;
pub mod instances;
pub mod mail_outbox;
pub mod nodes;
pub mod plans;
pub mod refresh_tokens;
pub mod subscriptions;
pub mod usage_batches;
pub mod usage_sources;
pub mod usage_windows;
pub mod users;
