//! The `Platform` service: the edge's gateway to accounts, execution, deployed APIs and
//! the marketplace.
//! Each method hands its request to the module that owns the flow.
use std::sync::Arc;

use souq_proto::platform::{
    Api, ApiCreated, ApiList, ApiLogsRequest, ApiRef, ApiStatus, ApiUsage, ApiUsageRequest, ChangePasswordRequest,
    ConsumerUsage, CreateApiRequest, CreateKeyRequest, CreatePlanRequest, DeployApiRequest, ExecuteRequest,
    ExecuteResponse, ForgotPasswordRequest, GetVerifyingKeyRequest, KeyCreated, KeyList, KeyRef, ListKeysRequest,
    ListRevocationsRequest, LoginRequest, LoginResponse, MarketplacePage, MarketplaceRequest, MeRequest,
    MessageResponse, MyUsageRequest, Plan, PlanList, PutCodeRequest, RefreshRequest, ResetPasswordRequest,
    Revocations, SignupRequest, SignupResponse, Statement, StatementRequest, SubscribeRequest, Subscription,
    UpdateApiRequest, User, VerifyEmailRequest, VerifyingKey, Version, VersionList, platform_server,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    State,
    accounts::{self, session, signup},
    deploy::{apis, desired, logs},
    market::{catalog, keys, plans, subscriptions, usage},
};

/// Implements `souq.platform.v1.Platform`.
pub struct PlatformService {
    pub(crate) state: Arc<State>,
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(r: crate::Result<T>) -> Answer<T> {
    r.map(Response::new).map_err(Status::from)
}

/// The id of the user whose access token the request carries.
async fn user<T>(state: &State, req: &Request<T>) -> Result<uuid::Uuid, Status> {
    Ok(session::caller(state, souq_proto::bearer(req.metadata())).await?.id)
}

/// The caller, for calls that anyone may make: none without a token; a token that is
/// present must be valid.
async fn maybe_user<T>(state: &State, req: &Request<T>) -> Result<Option<uuid::Uuid>, Status> {
    match souq_proto::bearer(req.metadata()) {
        None => Ok(None),
        Some(token) => Ok(Some(session::caller(state, Some(token)).await?.id)),
    }
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

    #[instrument(skip_all)]
    async fn create_api(&self, req: Request<CreateApiRequest>) -> Answer<ApiCreated> {
        let owner = user(&self.state, &req).await?;
        ok(apis::create(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn list_apis(&self, req: Request<souq_proto::platform::ListApisRequest>) -> Answer<ApiList> {
        let owner = user(&self.state, &req).await?;
        ok(apis::list(&self.state, owner).await.map(|apis| ApiList { apis }))
    }

    #[instrument(skip_all)]
    async fn get_api(&self, req: Request<ApiRef>) -> Answer<Api> {
        let owner = user(&self.state, &req).await?;
        ok(apis::owned(&self.state, owner, &req.get_ref().api_id).await.map(|a| apis::to_wire(&a)))
    }

    #[instrument(skip_all)]
    async fn delete_api(&self, req: Request<ApiRef>) -> Answer<MessageResponse> {
        let owner = user(&self.state, &req).await?;
        let done = apis::delete(&self.state, owner, &req.get_ref().api_id).await;
        ok(done.map(|()| MessageResponse { message: "The API is deleted; its instances are stopping.".into() }))
    }

    #[instrument(skip_all)]
    async fn put_code(&self, req: Request<PutCodeRequest>) -> Answer<Version> {
        let owner = user(&self.state, &req).await?;
        let req = req.into_inner();
        ok(apis::put_code(&self.state, owner, &req.api_id, req.code).await)
    }

    #[instrument(skip_all)]
    async fn list_versions(&self, req: Request<ApiRef>) -> Answer<VersionList> {
        let owner = user(&self.state, &req).await?;
        ok(apis::versions(&self.state, owner, &req.get_ref().api_id).await.map(|versions| VersionList { versions }))
    }

    #[instrument(skip_all)]
    async fn deploy(&self, req: Request<DeployApiRequest>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        ok(desired::deploy(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn stop_api(&self, req: Request<ApiRef>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        ok(desired::stop(&self.state, owner, &req.get_ref().api_id).await)
    }

    #[instrument(skip_all)]
    async fn get_api_status(&self, req: Request<ApiRef>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        let api = apis::owned(&self.state, owner, &req.get_ref().api_id).await?;
        ok(desired::status_of(&self.state, api.id).await)
    }

    type ApiLogsStream = tokio_stream::wrappers::ReceiverStream<Result<souq_proto::agent::LogLine, Status>>;

    #[instrument(skip_all)]
    async fn api_logs(&self, req: Request<ApiLogsRequest>) -> Answer<Self::ApiLogsStream> {
        let owner = user(&self.state, &req).await?;
        let req = req.into_inner();
        let api = apis::owned(&self.state, owner, &req.api_id).await?;
        ok(logs::stream(&self.state, api.id, req.tail, req.follow).await)
    }

    #[instrument(skip_all)]
    async fn update_api(&self, req: Request<UpdateApiRequest>) -> Answer<Api> {
        let owner = user(&self.state, &req).await?;
        ok(apis::update(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn create_plan(&self, req: Request<CreatePlanRequest>) -> Answer<Plan> {
        let owner = user(&self.state, &req).await?;
        ok(plans::create(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn list_plans(&self, req: Request<ApiRef>) -> Answer<PlanList> {
        let caller = maybe_user(&self.state, &req).await?;
        ok(plans::list(&self.state, caller, &req.get_ref().api_id).await.map(|plans| PlanList { plans }))
    }

    #[instrument(skip_all)]
    async fn list_marketplace(&self, req: Request<MarketplaceRequest>) -> Answer<MarketplacePage> {
        ok(catalog::page(&self.state, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Answer<Subscription> {
        let caller = user(&self.state, &req).await?;
        ok(subscriptions::subscribe(&self.state, caller, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Answer<KeyCreated> {
        let caller = user(&self.state, &req).await?;
        ok(keys::create(&self.state, caller, &req.get_ref().name).await)
    }

    #[instrument(skip_all)]
    async fn list_keys(&self, req: Request<ListKeysRequest>) -> Answer<KeyList> {
        let caller = user(&self.state, &req).await?;
        ok(keys::list(&self.state, caller).await.map(|keys| KeyList { keys }))
    }

    #[instrument(skip_all)]
    async fn revoke_key(&self, req: Request<KeyRef>) -> Answer<MessageResponse> {
        let caller = user(&self.state, &req).await?;
        let done = keys::revoke(&self.state, caller, &req.get_ref().key_id).await;
        ok(done.map(|()| MessageResponse { message: "The key is revoked.".into() }))
    }

    #[instrument(skip_all)]
    async fn get_api_usage(&self, req: Request<ApiUsageRequest>) -> Answer<ApiUsage> {
        let owner = user(&self.state, &req).await?;
        let req = req.into_inner();
        ok(usage::of_api(&self.state, owner, &req.api_id, req.hours).await)
    }

    #[instrument(skip_all)]
    async fn get_my_usage(&self, req: Request<MyUsageRequest>) -> Answer<ConsumerUsage> {
        let caller = user(&self.state, &req).await?;
        ok(usage::mine(&self.state, caller).await)
    }

    #[instrument(skip_all)]
    async fn get_statement(&self, req: Request<StatementRequest>) -> Answer<Statement> {
        let caller = user(&self.state, &req).await?;
        ok(usage::statement(&self.state, caller, &req.get_ref().month).await)
    }
}
