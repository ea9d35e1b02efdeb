//! Operators' endpoints under `/api/v1/admin`, behind the control plane's admin token
//! (passed through as the caller's bearer; the control plane checks it): the [`nodes`].
pub mod nodes;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

/// The area's routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    nodes::routes()
}
