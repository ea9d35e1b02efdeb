//! The marketplace area: an API's [`plans`], the public [`marketplace`] and subscribing,
//! the caller's API [`keys`], and [`usage`] with statements. Each route is one `Market`
//! call made for the caller.
pub mod keys;
pub mod marketplace;
pub mod plans;
pub mod usage;

#[cfg(test)]
mod router_tests;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// The area's routes: each module's own list, each route served and documented from its
/// handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(plans::routes())
        .merge(marketplace::routes())
        .merge(keys::routes())
        .merge(usage::routes())
}
