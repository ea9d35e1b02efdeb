//! The marketplace: public APIs with their plans (no token needed), and subscribing to
//! one of them.
use std::time::Duration;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use souq_proto::market::{self, MarketplaceRequest, SubscribeRequest};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::plans::PlanBody;
use crate::{
    AppState,
    error::{ApiError, Problem, Result},
    extract::{Caller, OptionalJson},
    query::parse_query,
    rest::{
        ACCESS_PATIENCE,
        apis::ApiBody,
        grpc,
        openapi::{NotFound, PROBLEM_JSON, Unauthorized, Unprocessable},
    },
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Entries a page holds when `per_page` is absent.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// Most entries a page may hold.
pub const MAX_PER_PAGE: u32 = 100;
/// Longest search text, in characters.
pub const MAX_QUERY_CHARS: usize = 100;
/// Highest page number.
const MAX_PAGE: u32 = 1_000_000;
/// Longest slug accepted in a path.
const MAX_SLUG: usize = 128;

/// A public API with its plans.
#[derive(Serialize, ToSchema)]
pub struct MarketEntryBody {
    /// The API.
    #[serde(flatten)]
    pub api: ApiBody,
    /// Its plans, the free one included.
    pub plans: Vec<PlanBody>,
}

/// One page of the marketplace.
#[derive(Serialize, ToSchema)]
pub struct MarketPageBody {
    /// The public APIs on this page.
    pub apis: Vec<MarketEntryBody>,
    /// This page's number, from 1.
    pub page: u32,
    /// Entries per page.
    pub per_page: u32,
    /// Public APIs that match, on every page.
    pub total: u64,
}

/// What to subscribe to; the body may be left out.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    /// A plan's id or name; the free plan when absent.
    pub plan: Option<String>,
}

/// A subscription.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionBody {
    /// The subscription's id.
    pub id: String,
    /// The API's id.
    pub api_id: String,
    /// The API's slug: call it at `/call/{slug}`.
    pub slug: String,
    /// The plan in force now.
    pub plan: Option<PlanBody>,
    /// RFC 3339.
    pub created_at: String,
    /// The plan a pending switch moves to: a switch that is not an upgrade takes effect at
    /// the start of the next month (UTC). Null when nothing is pending.
    pub pending_plan: Option<PlanBody>,
    /// RFC 3339: when `pending_plan` takes effect. Null when nothing is pending.
    pub plan_changes_at: Option<String>,
}

impl From<market::Subscription> for SubscriptionBody {
    fn from(s: market::Subscription) -> Self {
        SubscriptionBody {
            id: s.id,
            api_id: s.api_id,
            slug: s.slug,
            plan: s.plan.map(PlanBody::from),
            created_at: s.created_at,
            pending_plan: s.pending_plan.map(PlanBody::from),
            plan_changes_at: s.plan_changes_at,
        }
    }
}

/// A created subscription.
#[derive(Serialize, ToSchema)]
pub struct SubscribedBody {
    /// The subscription.
    pub subscription: SubscriptionBody,
}

/// Reads `q` (at most 100 characters), `page` (from 1) and `per_page` (1 to 100, 20 by
/// default) from a query string; other parameters are ignored.
pub fn market_query(raw: Option<&str>) -> Result<MarketplaceRequest> {
    let q = parse_query(raw.unwrap_or(""));
    let number = |name: &str, default: u32, max: u32| match q.get(name).map(String::as_str) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid(name, format!("must be a whole number from 1 to {max}"))),
    };
    let query = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid("q", format!("must be at most {MAX_QUERY_CHARS} characters")));
    }
    Ok(MarketplaceRequest {
        query,
        page: number("page", 1, MAX_PAGE)?,
        per_page: number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?,
    })
}

/// Public APIs with their plans, searchable by name or slug. No token needed.
#[utoipa::path(get, path = "/api/v1/marketplace", tag = "marketplace",
    params(("q" = Option<String>, Query, description = "Part of the name or slug, any case"),
        ("page" = Option<u32>, Query, description = "From 1"),
        ("per_page" = Option<u32>, Query, description = "1 to 100; 20 by default")),
    responses((status = 200, body = MarketPageBody), Unprocessable))]
pub async fn list(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<axum::Json<MarketPageBody>> {
    let req = market_query(raw.as_deref())?;
    let page = state.market.clone().list_marketplace(grpc(req, None, TIMEOUT)).await?.into_inner();
    let apis = page
        .entries
        .into_iter()
        .map(|e| MarketEntryBody {
            api: ApiBody::from(e.api.unwrap_or_default()),
            plans: e.plans.into_iter().map(PlanBody::from).collect(),
        })
        .collect();
    Ok(axum::Json(MarketPageBody { apis, page: page.page, per_page: page.per_page, total: page.total }))
}

/// Subscribes the caller to a public API's plan (the free plan when none is named). A
/// second subscription to the same API changes its plan: an upgrade (a dearer plan in the
/// same currency, or a paid plan after a free one) at once, any other switch at the start
/// of the next month (UTC), shown as `pending_plan` and `plan_changes_at`; naming the plan
/// in force again cancels a pending switch. Then call the API with an API key in
/// `X-API-Key`.
#[utoipa::path(post, path = "/api/v1/marketplace/{slug}/subscribe", request_body(content = Option<SubscribeBody>), tag = "marketplace", security(("bearer" = [])),
    params(("slug" = String, Path, description = "The API's slug")),
    responses((status = 201, body = SubscribedBody),
        Unauthorized,
        NotFound,
        (status = 409, description = "Already on (or already switching to) that plan", body = Problem, content_type = PROBLEM_JSON),
        Unprocessable))]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    Path(slug): Path<String>,
    OptionalJson(body): OptionalJson<SubscribeBody>,
) -> Result<impl IntoResponse> {
    if slug.is_empty() || slug.len() > MAX_SLUG {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such API"));
    }
    let req = SubscribeRequest { slug, plan: body.plan.unwrap_or_default() };
    let sub = state.market.clone().subscribe(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    // Answer once this edge holds the subscription, so the next call may use it.
    let plan_id = sub.plan.as_ref().map(|p| p.id.as_str()).unwrap_or_default();
    state
        .access
        .wait_for(
            |t| {
                t.grant(&caller.user_id, &sub.api_id)
                    .is_some_and(|g| g.subscription_id == sub.id && g.plan_id == plan_id)
            },
            ACCESS_PATIENCE,
        )
        .await;
    Ok((StatusCode::CREATED, axum::Json(SubscribedBody { subscription: sub.into() })))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(subscribe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_and_bounds() {
        let r = market_query(None).expect("ok");
        assert_eq!((r.query.as_str(), r.page, r.per_page), ("", 1, DEFAULT_PER_PAGE));
        let r = market_query(Some("q=Gold+Prices&page=3&per_page=100")).expect("ok");
        assert_eq!((r.query.as_str(), r.page, r.per_page), ("Gold Prices", 3, 100));
        for (q, field) in
            [("page=0", "page"), ("per_page=101", "per_page"), ("page=x", "page"), ("per_page=-1", "per_page")]
        {
            assert_eq!(market_query(Some(q)).err().and_then(|e| e.field).as_deref(), Some(field), "{q}");
        }
        let long = format!("q={}", "a".repeat(MAX_QUERY_CHARS + 1));
        assert_eq!(market_query(Some(&long)).err().and_then(|e| e.field).as_deref(), Some("q"));
    }
}
