//! The OpenAPI 3.1 document of the REST contract, generated from the handlers.
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{error::Problem, routes};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// Souq's public REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Souq", description = "API hosting, execution and marketplace.", version = "1"),
    paths(
        routes::auth::signup,
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::verify_email,
        routes::auth::forgot_password,
        routes::auth::reset_password,
        routes::auth::change_password,
        routes::auth::me,
        routes::execute::execute,
        routes::apis::create,
        routes::apis::list,
        routes::apis::get,
        routes::apis::update,
        routes::apis::delete,
        routes::apis::put_code,
        routes::apis::versions,
        routes::apis::deploy,
        routes::apis::stop,
        routes::apis::status,
        routes::logs::logs,
        routes::plans::create,
        routes::plans::list,
        routes::usage::api_usage,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::marketplace::list,
        routes::marketplace::subscribe,
        routes::usage::my_usage,
        routes::usage::statement,
        routes::call::call
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;
