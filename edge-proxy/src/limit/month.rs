//! Calendar months in UTC, the period of monthly quotas: the month of an instant as
//! `YYYY-MM`, and the time until the next one begins. Pure.
use chrono::{DateTime, Datelike, TimeZone, Utc};

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    /// The year.
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl Month {
    /// The month that holds `unix_ms` (milliseconds since the epoch).
    pub fn of_unix_ms(unix_ms: i64) -> Month {
        let at = DateTime::<Utc>::from_timestamp_millis(unix_ms).unwrap_or_default();
        Month { year: at.year(), month: at.month() }
    }

    /// `YYYY-MM`, as the control plane names months.
    pub fn label(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month >= 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }

    /// Milliseconds since the epoch at this month's first instant.
    pub fn start_unix_ms(self) -> i64 {
        Utc.with_ymd_and_hms(self.year, self.month, 1, 0, 0, 0).single().map_or(i64::MAX, |t| t.timestamp_millis())
    }
}

/// Whole seconds from `unix_ms` until the next month begins, rounded up, at least 1:
/// the `Retry-After` of an exhausted monthly quota.
pub fn secs_until_next_month(unix_ms: i64) -> u64 {
    let next = Month::of_unix_ms(unix_ms).next().start_unix_ms();
    let ms = u64::try_from(next.saturating_sub(unix_ms)).unwrap_or(0);
    ms.div_ceil(1000).max(1)
}

/// Milliseconds since the epoch now.
pub fn unix_ms_now() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, s).single().expect("valid").timestamp_millis()
    }

    #[test]
    fn months_are_utc_and_labelled() {
        assert_eq!(Month::of_unix_ms(ms(2025, 3, 31, 23, 59, 59)).label(), "2025-03");
        assert_eq!(Month::of_unix_ms(ms(2025, 4, 1, 0, 0, 0)).label(), "2025-04");
        assert_eq!(Month::of_unix_ms(0).label(), "1970-01");
    }

    #[test]
    fn retry_after_runs_to_the_next_month() {
        // One second before a new month: 1 s.
        assert_eq!(secs_until_next_month(ms(2025, 1, 31, 23, 59, 59)), 1);
        // Half a second before: still 1 (never 0).
        assert_eq!(secs_until_next_month(ms(2025, 1, 31, 23, 59, 59) + 500), 1);
        // At the first instant of a month: the whole month.
        assert_eq!(secs_until_next_month(ms(2025, 2, 1, 0, 0, 0)), 28 * 86_400);
        // December rolls over into January of the next year.
        assert_eq!(secs_until_next_month(ms(2024, 12, 31, 0, 0, 0)), 86_400);
        assert_eq!(Month { year: 2024, month: 12 }.next(), Month { year: 2025, month: 1 });
        // Leap February.
        assert_eq!(secs_until_next_month(ms(2024, 2, 1, 0, 0, 0)), 29 * 86_400);
    }
}
