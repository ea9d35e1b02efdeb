//! The accounts area's housekeeping: writes the tally of throttled logins to the audit
//! log every few seconds, deletes expired throttle rows every minute, and deletes audit
//! rows older than the retention once an hour.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Accounts;
use crate::{audit, auth::throttle};

/// How often the tally of throttled logins is written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How often (by the control plane's clock) old audit rows are deleted.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// How often (by the control plane's clock) expired throttle rows are deleted, so a row
/// outlives its window and block by about a minute at most. Every replica may run it:
/// deleting expired rows twice is harmless.
const PRUNE_THROTTLES_EVERY: chrono::Duration = chrono::Duration::minutes(1);

/// Runs until `shutdown`, then writes the tally once more.
pub async fn run(accounts: Arc<Accounts>, shutdown: CancellationToken) {
    let mut pruned_at: Option<DateTime<Utc>> = None;
    let mut throttles_pruned_at: Option<DateTime<Utc>> = None;
    loop {
        let now = accounts.clock.now();
        if let Err(e) = accounts.throttled.flush(&accounts.db, now).await {
            warn!(error = %e, "could not write the tally of throttled logins; keeping it");
        }
        if throttles_pruned_at.is_none_or(|t| now - t >= PRUNE_THROTTLES_EVERY || now < t) {
            match throttle::prune(&accounts.db, now).await {
                Ok(n) => {
                    throttles_pruned_at = Some(now);
                    if n > 0 {
                        info!(rows = n, "expired throttle rows deleted");
                    }
                }
                Err(e) => warn!(error = %e, "could not delete expired throttle rows"),
            }
        }
        if pruned_at.is_none_or(|t| now - t >= PRUNE_EVERY || now < t) {
            let retention = chrono::Duration::from_std(accounts.audit_retention).unwrap_or(chrono::Duration::MAX);
            let before = now.checked_sub_signed(retention).unwrap_or(DateTime::<Utc>::MIN_UTC);
            match audit::prune(&accounts.db, before).await {
                Ok(n) => {
                    pruned_at = Some(now);
                    if n > 0 {
                        info!(rows = n, "audit rows past their retention deleted");
                    }
                }
                Err(e) => warn!(error = %e, "could not prune the audit log"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(FLUSH_EVERY) => {}
        }
    }
    if let Err(e) = accounts.throttled.flush(&accounts.db, accounts.clock.now()).await {
        warn!(error = %e, "could not write the tally of throttled logins at shutdown");
    }
}
