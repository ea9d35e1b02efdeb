//! sea-orm entities: one module per table.
pub mod audit_log;
pub mod email_tokens;
pub mod executions;
pub mod mail_outbox;
pub mod nodes;
pub mod refresh_tokens;
pub mod users;
