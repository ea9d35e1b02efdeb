//! The `Platform` service: the edge's gateway to accounts and execution. Each method
//! hands its request to the module that owns the flow.
use std::sync::Arc;

use souq_proto::platform::{
    ChangePasswordRequest, ExecuteRequest, ExecuteResponse, ForgotPasswordRequest, GetVerifyingKeyRequest,
    ListRevocationsRequest, LoginRequest, LoginResponse, MeRequest, MessageResponse, RefreshRequest,
    ResetPasswordRequest, Revocations, SignupRequest, SignupResponse, User, VerifyEmailRequest, VerifyingKey,
    platform_server,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    State,
    accounts::{self, session, signup},
};

/// Implements `souq.platform.v1.Platform`.
pub struct PlatformService {
    pub(crate) state: Arc<State>,
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(r: crate::Result<T>) -> Answer<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl platform_server::Platform for PlatformService {
    #[instrument(skip_all)]
    async fn signup(&self, req: Request<SignupRequest>) -> Answer<SignupResponse> {
        ok(signup::signup(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn login(&self, req: Request<LoginRequest>) -> Answer<LoginResponse> {
        ok(session::login(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn me(&self, req: Request<MeRequest>) -> Answer<User> {
        ok(session::caller(&self.state, souq_proto::bearer(req.metadata())).await.map(accounts::to_wire))
    }

    #[instrument(skip_all)]
    async fn refresh(&self, req: Request<RefreshRequest>) -> Answer<LoginResponse> {
        ok(session::refresh(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn verify_email(&self, req: Request<VerifyEmailRequest>) -> Answer<MessageResponse> {
        ok(signup::verify_email(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn forgot_password(&self, req: Request<ForgotPasswordRequest>) -> Answer<MessageResponse> {
        ok(signup::forgot_password(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn reset_password(&self, req: Request<ResetPasswordRequest>) -> Answer<MessageResponse> {
        ok(signup::reset_password(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn change_password(&self, req: Request<ChangePasswordRequest>) -> Answer<MessageResponse> {
        let token = souq_proto::bearer(req.metadata()).map(str::to_owned);
        ok(session::change_password(&self.state, token.as_deref(), req.into_inner()).await)
    }

    async fn list_revocations(&self, req: Request<ListRevocationsRequest>) -> Answer<Revocations> {
        ok(session::list_revocations(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn execute(&self, req: Request<ExecuteRequest>) -> Answer<ExecuteResponse> {
        let user = session::caller(&self.state, souq_proto::bearer(req.metadata())).await?;
        ok(crate::execute::run(&self.state, user.id, req.into_inner()).await)
    }

    async fn get_verifying_key(&self, _req: Request<GetVerifyingKeyRequest>) -> Answer<VerifyingKey> {
        Ok(Response::new(VerifyingKey {
            ed25519_public: self.state.tokens.public_key().to_vec(),
            issuer: souq_proto::claims::ISSUER.into(),
            audience: souq_proto::claims::AUDIENCE.into(),
        }))
    }
}
