//! The marketplace's catalogue: public APIs with their plans, searched and paged; needs no
//! token.
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use souq_proto::market::{MarketplaceEntry, MarketplacePage, MarketplaceRequest};
use uuid::Uuid;

use super::{Market, plans};
use crate::{
    apis as api_core,
    entity::{apis, plans as plan_rows},
    error::{Error, Result},
};

/// Entries per page when the request names none.
pub const DEFAULT_PER_PAGE: u32 = 20;
/// Most entries per page.
pub const MAX_PER_PAGE: u32 = 100;
/// Longest search query, in characters.
pub const MAX_QUERY: usize = 100;
/// The LIKE escape character: not a backslash, whose quoting differs between databases.
const ESCAPE: char = '!';

/// A LIKE pattern matching `query` anywhere, lower-cased, its wildcards taken literally.
fn contains_pattern(query: &str) -> String {
    let mut p = String::with_capacity(query.len() + 2);
    p.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | ESCAPE) {
            p.push(ESCAPE);
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The page and page size asked for, defaults applied.
fn paging(req: &MarketplaceRequest) -> Result<(u32, u32)> {
    let page = Ord::max(req.page, 1);
    let per_page = if req.per_page == 0 { DEFAULT_PER_PAGE } else { req.per_page };
    if per_page > MAX_PER_PAGE {
        return Err(Error::invalid("per_page", format!("1 to {MAX_PER_PAGE}")));
    }
    Ok((page, per_page))
}

/// One page of public APIs, newest first, whose name or slug contains the query (ignoring
/// case: fully on PostgreSQL, ASCII letters only on SQLite, whose LOWER is ASCII-only).
pub(crate) async fn page(market: &Market, req: MarketplaceRequest) -> Result<MarketplacePage> {
    let db = &market.db;
    let (page, per_page) = paging(&req)?;
    let query = req.query.trim();
    if query.chars().count() > MAX_QUERY {
        return Err(Error::invalid("query", format!("at most {MAX_QUERY} characters")));
    }
    let mut filter = Condition::all().add(apis::Column::Public.eq(true));
    if !query.is_empty() {
        let like = || LikeExpr::new(contains_pattern(query)).escape(ESCAPE);
        filter = filter.add(
            Condition::any()
                .add(Expr::expr(Func::lower(Expr::col((apis::Entity, apis::Column::Name)))).like(like()))
                .add(Expr::col((apis::Entity, apis::Column::Slug)).like(like())),
        );
    }
    let total = apis::Entity::find().filter(filter.clone()).count(db).await?;
    let rows = apis::Entity::find()
        .filter(filter)
        .order_by_desc(apis::Column::CreatedAt)
        .order_by_desc(apis::Column::Id)
        .offset(u64::from(page - 1) * u64::from(per_page))
        .limit(u64::from(per_page))
        .all(db)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|a| a.id).collect();
    let mut by_api: HashMap<Uuid, Vec<_>> = HashMap::new();
    if !ids.is_empty() {
        let plans = plan_rows::Entity::find()
            .filter(plan_rows::Column::ApiId.is_in(ids))
            .order_by_asc(plan_rows::Column::CreatedAt)
            .order_by_asc(plan_rows::Column::Id)
            .all(db)
            .await?;
        for p in &plans {
            by_api.entry(p.api_id).or_default().push(plans::to_wire(p));
        }
    }
    let entries = rows
        .iter()
        .map(|a| MarketplaceEntry { api: Some(api_core::to_wire(a)), plans: by_api.remove(&a.id).unwrap_or_default() })
        .collect();
    Ok(MarketplacePage { entries, page, per_page, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_literal_lowercase_substring_patterns() {
        assert_eq!(contains_pattern("Gold"), "%gold%");
        assert_eq!(contains_pattern("100%_!"), "%100!%!_!!%");
        assert_eq!(contains_pattern("ذهب"), "%ذهب%");
    }

    #[test]
    fn paging_defaults_and_bounds() {
        let req = |page, per_page| MarketplaceRequest { query: String::new(), page, per_page };
        assert_eq!(paging(&req(0, 0)).unwrap(), (1, DEFAULT_PER_PAGE));
        assert_eq!(paging(&req(3, 100)).unwrap(), (3, 100));
        assert!(paging(&req(1, 101)).is_err());
    }
}
