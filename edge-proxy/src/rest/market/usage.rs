//! Usage: the provider's hourly view of one API, the consumer's view of this month, and
//! a consumer's monthly statement. Money stays in integer minor units, one total per
//! currency.
use std::time::Duration;

use axum::extract::{RawQuery, State};
use serde::Serialize;
use souq_proto::market::{self, ApiUsageRequest, MyUsageRequest, StatementRequest};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::marketplace::SubscriptionBody;
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::{ApiId, Caller},
    query::parse_query,
    rest::{
        grpc,
        openapi::{NotFound, Unauthorized, Unprocessable},
    },
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Hours shown when `hours` is absent.
pub const DEFAULT_HOURS: u32 = 24;
/// Most hours one answer covers: 31 days.
pub const MAX_HOURS: u32 = 24 * 31;

/// Calls and errors over a span.
#[derive(Serialize, ToSchema)]
pub struct TotalBody {
    /// Calls answered.
    pub calls: u64,
    /// Answers of status 500 and above, and handler errors.
    pub errors: u64,
}

/// One hour of an API's usage.
#[derive(Serialize, ToSchema)]
pub struct WindowBody {
    /// RFC 3339, the hour's start (UTC).
    pub start: String,
    /// Calls answered.
    pub calls: u64,
    /// Answers of status 500 and above.
    pub errors: u64,
    /// Median latency at the edge, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

impl From<market::UsageWindow> for WindowBody {
    fn from(w: market::UsageWindow) -> Self {
        WindowBody {
            start: w.start,
            calls: w.calls,
            errors: w.errors,
            p50_ms: w.p50_ms,
            p95_ms: w.p95_ms,
            bytes_in: w.bytes_in,
            bytes_out: w.bytes_out,
        }
    }
}

/// The provider's view of an API.
#[derive(Serialize, ToSchema)]
pub struct ApiUsageBody {
    /// The API's id.
    pub api_id: String,
    /// Over the hours asked for.
    pub total: TotalBody,
    /// The hours that saw calls, oldest first.
    pub windows: Vec<WindowBody>,
}

/// Calls made with one key this month.
#[derive(Serialize, ToSchema)]
pub struct KeyUsageBody {
    /// The key's id.
    pub key_id: String,
    /// `souq_<prefix>`.
    pub prefix: String,
    /// Calls this calendar month (UTC).
    pub calls: u64,
}

/// One subscription's month so far.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionUsageBody {
    /// The subscription.
    pub subscription: SubscriptionBody,
    /// Calls this calendar month (UTC).
    pub calls: u64,
    /// Calls left of the plan's monthly quota.
    pub quota_left: u64,
    /// The plan's price for this month, in minor units of `currency`.
    pub cost_minor: u64,
    /// `USD`, `SAR`, `AED` or `EGP`.
    pub currency: String,
}

/// The consumer's view of this month.
#[derive(Serialize, ToSchema)]
pub struct ConsumerUsageBody {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Per key.
    pub keys: Vec<KeyUsageBody>,
    /// Per subscription.
    pub subscriptions: Vec<SubscriptionUsageBody>,
}

/// One period of a subscription on a statement, on the plan in force during it: a month
/// splits at an upgrade (which costs the difference to the dearer plan) and ends early
/// when the API was deleted; a downgrade starts with a new month.
#[derive(Serialize, ToSchema)]
pub struct StatementLineBody {
    /// The subscription's id.
    pub subscription_id: String,
    /// The API's id.
    pub api_id: String,
    /// The API's slug.
    pub slug: String,
    /// The plan's name.
    pub plan: String,
    /// Calls in the period (each hour counts on the plan in force at its end).
    pub calls: u64,
    /// Cost in minor units of `currency`.
    pub cost_minor: u64,
    /// The line's currency.
    pub currency: String,
    /// RFC 3339: the period's start (inclusive).
    pub starts_at: String,
    /// RFC 3339: the period's end (exclusive).
    pub ends_at: String,
}

/// What is owed in one currency.
#[derive(Serialize, ToSchema)]
pub struct CurrencyTotalBody {
    /// `USD`, `SAR`, `AED` or `EGP`.
    pub currency: String,
    /// The sum in minor units.
    pub amount_minor: u64,
}

/// A consumer's monthly statement.
#[derive(Serialize, ToSchema)]
pub struct StatementBody {
    /// `YYYY-MM`.
    pub month: String,
    /// One line per subscription and plan it was on in the month.
    pub lines: Vec<StatementLineBody>,
    /// One total per currency: amounts in different currencies are never added.
    pub totals: Vec<CurrencyTotalBody>,
}

/// `hours` of a query string: 1 to 744, 24 by default.
pub fn hours_query(raw: Option<&str>) -> Result<u32> {
    match parse_query(raw.unwrap_or("")).get("hours").map(String::as_str) {
        None | Some("") => Ok(DEFAULT_HOURS),
        Some(h) => h
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_HOURS).contains(n))
            .ok_or_else(|| ApiError::invalid("hours", format!("must be a whole number from 1 to {MAX_HOURS}"))),
    }
}

/// `month` of a query string: `YYYY-MM`, or empty for the current month.
pub fn month_query(raw: Option<&str>) -> Result<String> {
    let q = parse_query(raw.unwrap_or(""));
    let Some(m) = q.get("month").map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Ok(String::new());
    };
    let valid = m.len() == 7
        && m.as_bytes()[4] == b'-'
        && m.bytes().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit())
        && m[..4].parse::<u32>().is_ok_and(|y| y >= 1970)
        && m[5..].parse::<u32>().is_ok_and(|mo| (1..=12).contains(&mo));
    if !valid {
        return Err(ApiError::invalid("month", "must be YYYY-MM, e.g. 2025-03"));
    }
    Ok(m.to_owned())
}

/// One API's usage by hour, for its owner.
#[utoipa::path(get, path = "/api/v1/apis/{id}/usage", tag = "usage", security(("bearer" = [])),
    params(("id" = String, Path, description = "The API's id"),
        ("hours" = Option<u32>, Query, description = "The last hours to cover: 1 to 744; 24 by default")),
    responses((status = 200, body = ApiUsageBody), Unauthorized,
        NotFound,
        Unprocessable))]
pub async fn api_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiId(api_id): ApiId,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<ApiUsageBody>> {
    let req = ApiUsageRequest { api_id, hours: hours_query(raw.as_deref())? };
    let u = state.market.clone().get_api_usage(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ApiUsageBody {
        api_id: u.api_id,
        total: TotalBody { calls: u.calls, errors: u.errors },
        windows: u.windows.into_iter().map(WindowBody::from).collect(),
    }))
}

/// The caller's usage this month: per key, and per subscription with the quota left and
/// the cost so far.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("bearer" = [])),
    responses((status = 200, body = ConsumerUsageBody), Unauthorized))]
pub async fn my_usage(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<ConsumerUsageBody>> {
    let u =
        state.market.clone().get_my_usage(grpc(MyUsageRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(ConsumerUsageBody {
        month: u.month,
        keys: u.keys.into_iter().map(|k| KeyUsageBody { key_id: k.key_id, prefix: k.prefix, calls: k.calls }).collect(),
        subscriptions: u
            .subscriptions
            .into_iter()
            .map(|s| SubscriptionUsageBody {
                subscription: s.subscription.unwrap_or_default().into(),
                calls: s.calls,
                quota_left: s.quota_left,
                cost_minor: s.cost_minor,
                currency: s.currency,
            })
            .collect(),
    }))
}

/// The caller's statement for a month: a line per subscription, a total per currency.
#[utoipa::path(get, path = "/api/v1/usage/statement", tag = "usage", security(("bearer" = [])),
    params(("month" = Option<String>, Query, description = "YYYY-MM; the current month (UTC) by default")),
    responses((status = 200, body = StatementBody), Unauthorized,
        Unprocessable))]
pub async fn statement(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<StatementBody>> {
    let req = StatementRequest { month: month_query(raw.as_deref())? };
    let s = state.market.clone().get_statement(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(StatementBody {
        month: s.month,
        lines: s.lines.into_iter().map(line).collect(),
        totals: s
            .totals
            .into_iter()
            .map(|t| CurrencyTotalBody { currency: t.currency, amount_minor: t.amount_minor })
            .collect(),
    }))
}

fn line(l: market::StatementLine) -> StatementLineBody {
    StatementLineBody {
        subscription_id: l.subscription_id,
        api_id: l.api_id,
        slug: l.slug,
        plan: l.plan,
        calls: l.calls,
        cost_minor: l.cost_minor,
        currency: l.currency,
        starts_at: l.starts_at,
        ends_at: l.ends_at,
    }
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(api_usage)).routes(routes!(my_usage)).routes(routes!(statement))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_default_and_bounds() {
        assert_eq!(hours_query(None).expect("ok"), DEFAULT_HOURS);
        assert_eq!(hours_query(Some("hours=744")).expect("ok"), 744);
        for q in ["hours=0", "hours=745", "hours=1.5", "hours=x"] {
            assert_eq!(hours_query(Some(q)).err().and_then(|e| e.field).as_deref(), Some("hours"), "{q}");
        }
    }

    #[test]
    fn months_are_yyyy_mm() {
        assert_eq!(month_query(None).expect("ok"), "");
        assert_eq!(month_query(Some("month=2025-03")).expect("ok"), "2025-03");
        for q in ["month=2025-13", "month=2025-3", "month=25-03", "month=2025/03", "month=+025-03", "month=2025-00"] {
            assert_eq!(month_query(Some(q)).err().and_then(|e| e.field).as_deref(), Some("month"), "{q}");
        }
    }
}
