//! An API's plans: the owner creates them, and lists them (as may anyone, for a public
//! API). Prices are integer minor units of their currency, carried as `u64` end to end:
//! a float, a string or a negative number is a 422 naming the field.
use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use souq_proto::{
    apis::ApiRef,
    market::{self, CreatePlanRequest},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::{ApiError, Problem, Result},
    extract::{ApiId, Caller, Json},
    rest::{
        grpc,
        openapi::{NotFound, PROBLEM_JSON, Unauthorized, Unprocessable},
    },
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The currencies a plan may be priced in; each has 2 decimals (minor units: cents,
/// halalas, fils, piastres).
pub const CURRENCIES: [&str; 4] = ["USD", "SAR", "AED", "EGP"];

/// A new plan.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanBody {
    /// Its name, e.g. `pro`; unique within the API.
    pub name: String,
    /// The monthly price in minor units (an integer: 4999 is 49.99).
    pub price_minor: u64,
    /// `USD`, `SAR`, `AED` or `EGP`.
    pub currency: String,
    /// Calls a subscriber may make per calendar month (UTC).
    pub monthly_quota: u64,
    /// Calls a subscriber may make per minute; a whole minute's worth may come at once.
    pub rate_limit_per_minute: u32,
}

/// A plan.
#[derive(Serialize, ToSchema)]
pub struct PlanBody {
    /// The plan's id.
    pub id: String,
    /// The API's id.
    pub api_id: String,
    /// Its name.
    pub name: String,
    /// The monthly price in minor units of `currency`.
    pub price_minor: u64,
    /// `USD`, `SAR`, `AED` or `EGP`.
    pub currency: String,
    /// Calls per calendar month (UTC).
    pub monthly_quota: u64,
    /// Calls per minute.
    pub rate_limit_per_minute: u32,
    /// RFC 3339.
    pub created_at: String,
}

impl From<market::Plan> for PlanBody {
    fn from(p: market::Plan) -> Self {
        PlanBody {
            id: p.id,
            api_id: p.api_id,
            name: p.name,
            price_minor: p.price_minor,
            currency: p.currency,
            monthly_quota: p.monthly_quota,
            rate_limit_per_minute: p.rate_limit_per_minute,
            created_at: p.created_at,
        }
    }
}

/// A created plan.
#[derive(Serialize, ToSchema)]
pub struct CreatedPlanBody {
    /// The plan.
    pub plan: PlanBody,
}

/// An API's plans.
#[derive(Serialize, ToSchema)]
pub struct PlanListBody {
    /// The free plan (there from the API's creation) and every other.
    pub plans: Vec<PlanBody>,
}

/// The canonical currency code of `raw`, or a 422 naming `currency`.
pub fn currency(raw: &str) -> Result<String> {
    let code = raw.trim().to_ascii_uppercase();
    if CURRENCIES.contains(&code.as_str()) {
        Ok(code)
    } else {
        Err(ApiError::invalid("currency", format!("must be one of {}", CURRENCIES.join(", "))))
    }
}

/// Creates a plan for one of the caller's APIs.
#[utoipa::path(post, path = "/api/v1/apis/{id}/plans", request_body = CreatePlanBody, tag = "marketplace", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 201, body = CreatedPlanBody),
        Unauthorized,
        NotFound,
        (status = 409, description = "A plan of that name exists", body = Problem, content_type = PROBLEM_JSON),
        Unprocessable))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    Json(body): Json<CreatePlanBody>,
) -> Result<impl IntoResponse> {
    let req = CreatePlanRequest {
        api_id,
        name: body.name,
        price_minor: body.price_minor,
        currency: currency(&body.currency)?,
        monthly_quota: body.monthly_quota,
        rate_limit_per_minute: body.rate_limit_per_minute,
    };
    let plan = state.market.clone().create_plan(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok((StatusCode::CREATED, axum::Json(CreatedPlanBody { plan: plan.into() })))
}

/// An API's plans: the owner's API, or any public one.
#[utoipa::path(get, path = "/api/v1/apis/{id}/plans", tag = "marketplace", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id")),
    responses((status = 200, body = PlanListBody), Unauthorized,
        NotFound))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
) -> Result<axum::Json<PlanListBody>> {
    let resp =
        state.market.clone().list_plans(grpc(ApiRef { api_id }, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(PlanListBody { plans: resp.plans.into_iter().map(PlanBody::from).collect() }))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_the_four_in_any_case() {
        assert_eq!(currency("SAR").expect("ok"), "SAR");
        assert_eq!(currency(" aed ").expect("ok"), "AED");
        let e = currency("EUR").expect_err("EUR");
        assert_eq!((e.status, e.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("currency")));
    }

    #[test]
    fn amounts_round_trip_exactly() {
        // Past 2^53, where a float would lose the last digits.
        let body: CreatePlanBody = serde_json::from_str(
            r#"{"name":"x","price_minor":9007199254740993,"currency":"USD","monthly_quota":18446744073709551615,"rate_limit_per_minute":1}"#,
        )
        .expect("parses");
        assert_eq!((body.price_minor, body.monthly_quota), (9_007_199_254_740_993, u64::MAX));
        let plan = PlanBody::from(market::Plan { price_minor: body.price_minor, ..market::Plan::default() });
        let json = serde_json::to_string(&plan).expect("json");
        assert!(json.contains(r#""price_minor":9007199254740993"#), "{json}");
    }
}
