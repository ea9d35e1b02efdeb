//! The marketplace: plans, API keys and subscriptions with their plan history, the access
//! table the edges enforce, and metered usage (its exactly-once intake, the views and the
//! statements built on it). Builds on `apis`; knows nothing of deployments.
pub mod access;
pub mod batch;
pub mod calls;
pub mod catalog;
pub mod histogram;
pub mod history;
pub mod keys;
pub mod plans;
pub mod report;
pub mod statement;
pub mod subscriptions;
pub mod usage;

use std::{fmt, sync::Arc};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

use crate::{
    clock::Clock,
    error::{Error, Result},
};

/// The marketplace's shared state: the database, the clock months and quotas are read
/// by, and the access table the edges watch.
pub struct Market {
    /// The database.
    pub(crate) db: DatabaseConnection,
    /// The time source.
    pub(crate) clock: Arc<dyn Clock>,
    /// The access table the edges watch: keys and grants.
    pub(crate) access: access::AccessFeed,
}

impl Market {
    /// The marketplace over `db`, its access table still empty ([`access::refresh`] fills it).
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Market { db, clock, access: access::AccessFeed::new() }
    }
}

/// Forgets an API about to be deleted at `now` (in the caller's transaction): its
/// subscriptions and plans go, and their plan history ends at `now` but stays, so
/// consumers' statements keep its lines; the caller republishes the access table once it
/// commits.
pub(crate) async fn forget_api(txn: &impl ConnectionTrait, api_id: Uuid, now: DateTime<Utc>) -> Result<()> {
    history::end_of_api(txn, api_id, now).await?;
    subscriptions::delete_of_api(txn, api_id).await?;
    plans::delete_of_api(txn, api_id).await
}

/// Longest name of a plan or a key, in characters.
pub const MAX_LABEL: usize = 64;

/// A trimmed name of 1 to [`MAX_LABEL`] characters without control characters.
pub(crate) fn check_label(field: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_LABEL || name.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("1 to {MAX_LABEL} characters, no control characters")));
    }
    Ok(name.to_owned())
}

/// A count for an `i64` column; counts past `i64::MAX` stay there.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A count read from an `i64` column; a negative one (never written) reads as 0.
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A calendar month (UTC): the period of quotas, prices and statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// The month `t` falls in.
    pub fn of(t: DateTime<Utc>) -> Month {
        Month { year: t.year(), month: t.month() }
    }

    /// Parses `YYYY-MM` (years 1970 to 9999).
    pub fn parse(s: &str) -> Option<Month> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        if b.len() != 7 || b[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return None;
        }
        let year: i32 = s[..4].parse().ok()?;
        let month: u32 = s[5..].parse().ok()?;
        ((1970..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// Midnight (UTC) of its first day.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The month after.
    pub fn next(self) -> Month {
        if self.month == 12 { Month { year: self.year + 1, month: 1 } } else { Month { year: self.year, month: self.month + 1 } }
    }

    /// The start of the month after: the month is `start()..end()`.
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_print_and_bound() {
        let m = Month::parse("2025-12").unwrap();
        assert_eq!(m.to_string(), "2025-12");
        assert_eq!(m.start(), Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(m.end(), Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(Month::of(Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()).to_string(), "2024-02");
        for bad in ["", "2025-1", "2025-13", "2025-00", "25-01", "2025/01", "２０２５-01", "+025-01", "2025-01-01"] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(check_label("name", "  pro ").unwrap(), "pro");
        assert!(check_label("name", " ").is_err());
        assert!(check_label("name", &"x".repeat(65)).is_err());
        assert!(check_label("name", "a\u{7}b").is_err());
        assert_eq!(check_label("name", &"ذ".repeat(64)).unwrap().chars().count(), 64);
    }
}
