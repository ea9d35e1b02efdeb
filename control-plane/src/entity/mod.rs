//! sea-orm entities: one module per table.
pub mod executions;
pub mod nodes;
pub mod users;
