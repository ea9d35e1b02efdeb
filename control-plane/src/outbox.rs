//! The mail outbox: mails are written in the same transaction as the tokens they carry,
//! then a worker sends them, retrying with back-off a bounded number of times. A failed
//! send never fails the request that made the mail, and never loses its token.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    clock::Clock,
    entity::mail_outbox,
    error::Result,
    mail::{Mailer, Rendered},
};

/// Attempts before a mail is given up on.
pub const MAX_ATTEMPTS: i32 = 8;
/// How long a worker owns a mail it is sending before another may try it.
const CLAIM: chrono::Duration = chrono::Duration::seconds(60);
/// Rows taken per pass.
const BATCH: u64 = 20;

/// Delay before attempt `n + 1` after `n` failed ones: 2 s, 4 s, … capped at 10 min.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let secs = 2i64.saturating_pow(u32::try_from(attempts.clamp(1, 20)).unwrap_or(1));
    chrono::Duration::seconds(secs.min(600))
}

/// Adds a mail to the outbox (inside the caller's transaction).
pub async fn enqueue(db: &impl ConnectionTrait, now: DateTime<Utc>, to: &str, kind: &str, mail: Rendered) -> Result<()> {
    mail_outbox::Entity::insert(mail_outbox::ActiveModel {
        id: Set(Uuid::now_v7()),
        recipient: Set(to.to_owned()),
        kind: Set(kind.to_owned()),
        subject: Set(mail.subject),
        text_body: Set(mail.text),
        html_body: Set(mail.html),
        attempts: Set(0),
        next_attempt_at: Set(now),
        sent_at: Set(None),
        failed_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Whether a mail of `kind` went (or is going) to `to` since `since`: bounds how often
/// one address can be sent the same kind of mail.
pub async fn recently_queued(db: &impl ConnectionTrait, to: &str, kind: &str, since: DateTime<Utc>) -> Result<bool> {
    let n = mail_outbox::Entity::find()
        .filter(mail_outbox::Column::Recipient.eq(to))
        .filter(mail_outbox::Column::Kind.eq(kind))
        .filter(mail_outbox::Column::CreatedAt.gt(since))
        .count(db)
        .await?;
    Ok(n > 0)
}

use sea_orm::PaginatorTrait;

/// Sends due mail until `shutdown`; `wake` cuts the wait short after an enqueue.
pub async fn run(
    db: sea_orm::DatabaseConnection,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    info!(transport = %mailer.describe(), "mail outbox running");
    loop {
        if let Err(e) = pass(&db, &mailer, clock.as_ref()).await {
            warn!(error = %e, "mail outbox pass failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn pass(db: &sea_orm::DatabaseConnection, mailer: &Mailer, clock: &dyn Clock) -> Result<()> {
    loop {
        let now = clock.now();
        let due = mail_outbox::Entity::find()
            .filter(mail_outbox::Column::SentAt.is_null())
            .filter(mail_outbox::Column::FailedAt.is_null())
            .filter(mail_outbox::Column::NextAttemptAt.lte(now))
            .order_by_asc(mail_outbox::Column::NextAttemptAt)
            .limit(BATCH)
            .all(db)
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        for row in due {
            // Claim the row, so a second control plane does not send it as well.
            let claimed = mail_outbox::Entity::update_many()
                .col_expr(mail_outbox::Column::NextAttemptAt, Expr::value(now + CLAIM))
                .filter(mail_outbox::Column::Id.eq(row.id))
                .filter(mail_outbox::Column::NextAttemptAt.eq(row.next_attempt_at))
                .exec(db)
                .await?;
            if claimed.rows_affected != 1 {
                continue;
            }
            send_one(db, mailer, clock, row).await?;
        }
    }
}

async fn send_one(db: &sea_orm::DatabaseConnection, mailer: &Mailer, clock: &dyn Clock, row: mail_outbox::Model) -> Result<()> {
    let mail = Rendered { subject: row.subject.clone(), text: row.text_body.clone(), html: row.html_body.clone() };
    let attempts = row.attempts + 1;
    let mut am: mail_outbox::ActiveModel = row.clone().into();
    am.attempts = Set(attempts);
    match mailer.send(&row.recipient, &mail).await {
        Ok(()) => {
            info!(mail_id = %row.id, kind = %row.kind, attempts, "mail sent");
            am.sent_at = Set(Some(clock.now()));
            // The bodies carry single-use links; they are not kept once delivered.
            am.text_body = Set(String::new());
            am.html_body = Set(String::new());
            am.last_error = Set(None);
        }
        Err(e) => {
            let error: String = e.to_string().chars().take(500).collect();
            let now = clock.now();
            // A bad address will not get better by trying again.
            let permanent = matches!(e, crate::mail::MailError::Config(_));
            if attempts >= MAX_ATTEMPTS || permanent {
                warn!(mail_id = %row.id, kind = %row.kind, attempts, %error, "mail failed; giving up");
                am.failed_at = Set(Some(now));
            } else {
                warn!(mail_id = %row.id, kind = %row.kind, attempts, %error, "mail failed; will retry");
                am.next_attempt_at = Set(now + backoff(attempts));
            }
            am.last_error = Set(Some(error));
        }
    }
    sea_orm::ActiveModelTrait::update(am, db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), chrono::Duration::seconds(2));
        assert_eq!(backoff(2), chrono::Duration::seconds(4));
        assert_eq!(backoff(30), chrono::Duration::seconds(600));
    }
}
