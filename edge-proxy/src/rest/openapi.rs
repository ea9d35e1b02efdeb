//! The OpenAPI 3.1 document's frame ([`ApiDoc`]: info, security schemes, the problem
//! schema) and the error answers handlers list in their `responses(...)`: one type per
//! status, each a problem+json body (RFC 9457). The paths come from the handlers, through
//! the one list in `rest::documented`.
use std::collections::BTreeMap;

use utoipa::{
    IntoResponses, Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        response::Response,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::Problem;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

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

/// Souq's public REST API: the document's frame, without paths (the router adds them).
#[derive(OpenApi)]
#[openapi(
    info(title = "Souq", description = "API hosting, execution and marketplace.", version = "1"),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// A problem+json response with `description`.
fn problem(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    ResponseBuilder::new().description(description).content(PROBLEM_JSON, content).build().into()
}

/// Declares one [`IntoResponses`] type per error status, for `responses(...)` lists.
macro_rules! problem_responses {
    ($($(#[doc = $doc:literal])+ $name:ident = $status:literal;)+) => {$(
        $(#[doc = $doc])+
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_string(), problem(concat!($($doc),+).trim()))])
            }
        }
    )+};
}

problem_responses! {
    /// The request is malformed.
    BadRequest = 400;
    /// No valid credentials.
    Unauthorized = 401;
    /// The caller may not do this.
    Forbidden = 403;
    /// No such resource, or not the caller's.
    NotFound = 404;
    /// It conflicts with what exists.
    Conflict = 409;
    /// The link's token expired or was used.
    Gone = 410;
    /// The body is larger than allowed.
    PayloadTooLarge = 413;
    /// The body is not JSON.
    UnsupportedMediaType = 415;
    /// A field is invalid (`field` names it).
    Unprocessable = 422;
    /// Too many requests (with Retry-After).
    TooManyRequests = 429;
    /// Not available now (with Retry-After).
    Unavailable = 503;
    /// The upstream did not answer in time.
    GatewayTimeout = 504;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_response_is_problem_json_with_its_description() {
        let responses = NotFound::responses();
        let json = serde_json::to_value(&responses["404"]).expect("json");
        assert_eq!(json["description"], "No such resource, or not the caller's.");
        assert_eq!(json["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem");
    }
}
