//! `souq.accounts.v1.Accounts`: signup, login, sessions and passwords, handed to the
//! accounts area. Calls on behalf of a user carry their access token.
use std::sync::Arc;

use souq_proto::accounts::{
    ChangePasswordRequest, ForgotPasswordRequest, GetVerifyingKeyRequest, ListRevocationsRequest, LoginRequest,
    LoginResponse, MeRequest, MessageResponse, RefreshRequest, ResetPasswordRequest, Revocations, SignupRequest,
    SignupResponse, User, VerifyEmailRequest, VerifyingKey, accounts_server,
};
use tonic::{Request, Response};
use tracing::instrument;

use super::{Answer, ok};
use crate::{
    accounts::{self, session, signup},
    error::Result,
    market,
    state::State,
};

/// Implements `souq.accounts.v1.Accounts`.
pub struct AccountsService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

impl AccountsService {
    /// After a password reset or change: when it revoked API keys, every edge learns it
    /// from the access table at once.
    async fn keys_revoked(&self, done: Result<(MessageResponse, u64)>) -> Result<MessageResponse> {
        let (answer, revoked) = done?;
        if revoked > 0 {
            market::access::publish_now(&self.state.market).await;
        }
        Ok(answer)
    }
}

#[tonic::async_trait]
impl accounts_server::Accounts for AccountsService {
    #[instrument(skip_all)]
    async fn signup(&self, req: Request<SignupRequest>) -> Answer<SignupResponse> {
        ok(signup::signup(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn login(&self, req: Request<LoginRequest>) -> Answer<LoginResponse> {
        ok(session::login(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn me(&self, req: Request<MeRequest>) -> Answer<User> {
        ok(session::caller(&self.state.accounts, souq_proto::bearer(req.metadata())).await.map(accounts::to_wire))
    }

    #[instrument(skip_all)]
    async fn refresh(&self, req: Request<RefreshRequest>) -> Answer<LoginResponse> {
        ok(session::refresh(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn verify_email(&self, req: Request<VerifyEmailRequest>) -> Answer<MessageResponse> {
        ok(signup::verify_email(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn forgot_password(&self, req: Request<ForgotPasswordRequest>) -> Answer<MessageResponse> {
        ok(signup::forgot_password(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn reset_password(&self, req: Request<ResetPasswordRequest>) -> Answer<MessageResponse> {
        let done = signup::reset_password(&self.state.accounts, req.into_inner()).await;
        ok(self.keys_revoked(done).await)
    }

    #[instrument(skip_all)]
    async fn change_password(&self, req: Request<ChangePasswordRequest>) -> Answer<MessageResponse> {
        let token = souq_proto::bearer(req.metadata()).map(str::to_owned);
        let done = session::change_password(&self.state.accounts, token.as_deref(), req.into_inner()).await;
        ok(self.keys_revoked(done).await)
    }

    async fn list_revocations(&self, req: Request<ListRevocationsRequest>) -> Answer<Revocations> {
        ok(session::list_revocations(&self.state.accounts, req.into_inner()).await)
    }

    async fn get_verifying_key(&self, _req: Request<GetVerifyingKeyRequest>) -> Answer<VerifyingKey> {
        Ok(Response::new(VerifyingKey {
            ed25519_public: self.state.accounts.tokens.public_key().to_vec(),
            issuer: souq_proto::claims::ISSUER.into(),
            audience: souq_proto::claims::AUDIENCE.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! The refresh-token races of a password reset, their orderings written out.
    #![allow(clippy::unwrap_used)]
    use chrono::DurationRound;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    use crate::{
        accounts::tokens::{Rotation, find_refresh, issue_refresh, revoke_all_refresh, rotate_refresh},
        clock::Clock,
        entity::refresh_tokens,
        testing::TestDb,
    };

    /// The race of a refresh with a reset, its ordering written out: the refresh read its
    /// token, then the reset's revocation committed, then the refresh rotates. The rotating
    /// update requires the token unrevoked, so the revocation wins.
    #[tokio::test]
    async fn a_revocation_between_reading_and_rotating_wins() {
        let t = TestDb::new().await;
        let db = &t.state.db;
        let user = t.user(true).await;
        let now = t.clock.now();
        let raw = issue_refresh(db, user, None, now).await.unwrap();
        let read = find_refresh(db, &raw).await.unwrap().unwrap();
        revoke_all_refresh(db, user, now).await.unwrap();
        assert!(matches!(rotate_refresh(db, read.clone(), None, now).await.unwrap(), Rotation::Refused));
        let rows = refresh_tokens::Entity::find().filter(refresh_tokens::Column::UserId.eq(user)).all(db).await.unwrap();
        assert_eq!(rows.len(), 1, "no new token was issued");
        assert!(rows[0].used_at.is_none(), "the revoked token was not marked used");
        t.close().await;
    }

    /// A token made before its user's cut-off is refused, revoked or not; one made at it
    /// rotates, and its successor keeps its stamp.
    #[tokio::test]
    async fn tokens_made_before_the_cut_off_are_refused() {
        let t = TestDb::new().await;
        let db = &t.state.db;
        let user = t.user(true).await;
        let now = t.clock.now();
        // Cut-offs are whole seconds, as a reset sets them.
        let cut = now.duration_trunc(chrono::Duration::seconds(1)).unwrap() + chrono::Duration::seconds(1);
        let early = issue_refresh(db, user, None, now).await.unwrap();
        let row = find_refresh(db, &early).await.unwrap().unwrap();
        assert!(matches!(rotate_refresh(db, row, Some(cut), now).await.unwrap(), Rotation::Refused));
        let on_time = issue_refresh(db, user, None, cut).await.unwrap();
        let row = find_refresh(db, &on_time).await.unwrap().unwrap();
        let Rotation::Rotated { refresh_token, .. } = rotate_refresh(db, row, Some(cut), now).await.unwrap() else {
            panic!("a token made at the cut-off rotates");
        };
        let next = find_refresh(db, &refresh_token).await.unwrap().unwrap();
        assert_eq!(next.created_at, cut, "the successor is stamped no earlier than its parent");
        t.close().await;
    }
}
