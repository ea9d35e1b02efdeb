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
    state::State,
};

/// Implements `souq.accounts.v1.Accounts`.
pub struct AccountsService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
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
        ok(signup::reset_password(&self.state.accounts, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn change_password(&self, req: Request<ChangePasswordRequest>) -> Answer<MessageResponse> {
        let token = souq_proto::bearer(req.metadata()).map(str::to_owned);
        ok(session::change_password(&self.state.accounts, token.as_deref(), req.into_inner()).await)
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
