//! `souq.apis.v1.Apis`: an API's rows and versions (the `apis` core), its desired state,
//! status and logs (`deploy`). Creating and deleting an API cross areas, and say so here:
//! a new API gets its free plan in the same transaction; a deleted one takes its
//! deployment, plans and subscriptions with it, then the reconciler and the access table
//! are told.
use std::sync::Arc;

use sea_orm::TransactionTrait;
use souq_proto::apis::{
    Api, ApiCreated, ApiDeleted, ApiList, ApiLogsRequest, ApiRef, ApiStatus, CreateApiRequest, DeployApiRequest,
    ListApisRequest, PutCodeRequest, UpdateApiRequest, Version, VersionList, apis_server,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use tracing::instrument;
use uuid::Uuid;

use super::{Answer, ok, user};
use crate::{
    apis::{self, versions},
    deploy::{desired, logs},
    error::Result,
    market::{self, access, plans},
    state::State,
};

/// Implements `souq.apis.v1.Apis`.
pub struct ApisService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

/// Creates an API with its first version and, in the same transaction, its free plan;
/// then the reconciler republishes the routes, which list every API.
pub(crate) async fn create_api(state: &State, owner: Uuid, req: CreateApiRequest) -> Result<ApiCreated> {
    let txn = state.db.begin().await?;
    let api = apis::create(&txn, owner, req, state.quotas.apis).await?;
    plans::insert(&txn, plans::free(api.id, api.created_at)).await?;
    txn.commit().await?;
    state.deployer.wake();
    tracing::info!(api_id = %api.id, slug = %api.slug, runtime = %api.runtime, "API created");
    Ok(ApiCreated { api: Some(apis::to_wire(&api)), version: 1 })
}

/// Stores new code as the API's next version and, in the same transaction, prunes the
/// oldest versions past the owner's quota that its deployment does not use (under the
/// deployer's check lock, so no deploy names a version while it goes).
pub(crate) async fn put_code(state: &State, owner: Uuid, req: PutCodeRequest) -> Result<Version> {
    let _held = state.deployer.checks.lock().await;
    let txn = state.db.begin().await?;
    let (api_id, version) = versions::put_code(&txn, owner, &req.api_id, req.code).await?;
    let in_use = desired::versions_in_use(&txn, api_id).await?;
    versions::prune(&txn, api_id, state.quotas.versions_per_api, &in_use).await?;
    txn.commit().await?;
    Ok(version)
}

/// Updates an API; a change reaches the routes (they carry the public flag).
pub(crate) async fn update_api(state: &State, owner: Uuid, req: UpdateApiRequest) -> Result<Api> {
    let updated = apis::update(&state.db, owner, req).await?;
    if updated.changed {
        state.deployer.wake();
    }
    Ok(apis::to_wire(&updated.api))
}

/// Deletes an API in one transaction: its instances are retired and its desired state,
/// subscriptions, plans, versions and row go; its subscriptions' plan history ends now and
/// stays, so consumers' past statement lines remain. Then the reconciler stops the
/// instances (their agents are told) and the access table drops the subscribers' grants.
pub(crate) async fn delete_api(state: &State, owner: Uuid, id: &str) -> Result<()> {
    let api = apis::owned(&state.db, owner, id).await?;
    let txn = state.db.begin().await?;
    desired::forget(&txn, api.id).await?;
    market::forget_api(&txn, api.id, state.market.clock.now()).await?;
    apis::delete(&txn, api.id).await?;
    txn.commit().await?;
    state.deployer.wake();
    access::publish_now(&state.market).await;
    tracing::info!(api_id = %api.id, "API deleted");
    Ok(())
}

#[tonic::async_trait]
impl apis_server::Apis for ApisService {
    #[instrument(skip_all)]
    async fn create_api(&self, req: Request<CreateApiRequest>) -> Answer<ApiCreated> {
        let owner = user(&self.state, &req).await?;
        ok(create_api(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn list_apis(&self, req: Request<ListApisRequest>) -> Answer<ApiList> {
        let owner = user(&self.state, &req).await?;
        ok(apis::list(&self.state.db, owner).await.map(|apis| ApiList { apis }))
    }

    #[instrument(skip_all)]
    async fn get_api(&self, req: Request<ApiRef>) -> Answer<Api> {
        let owner = user(&self.state, &req).await?;
        ok(apis::owned(&self.state.db, owner, &req.get_ref().api_id).await.map(|a| apis::to_wire(&a)))
    }

    #[instrument(skip_all)]
    async fn update_api(&self, req: Request<UpdateApiRequest>) -> Answer<Api> {
        let owner = user(&self.state, &req).await?;
        ok(update_api(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn delete_api(&self, req: Request<ApiRef>) -> Answer<ApiDeleted> {
        let owner = user(&self.state, &req).await?;
        let done = delete_api(&self.state, owner, &req.get_ref().api_id).await;
        ok(done.map(|()| ApiDeleted { message: "The API is deleted; its instances are stopping.".into() }))
    }

    #[instrument(skip_all)]
    async fn put_code(&self, req: Request<PutCodeRequest>) -> Answer<Version> {
        let owner = user(&self.state, &req).await?;
        ok(put_code(&self.state, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn list_versions(&self, req: Request<ApiRef>) -> Answer<VersionList> {
        let owner = user(&self.state, &req).await?;
        ok(versions::list(&self.state.db, owner, &req.get_ref().api_id).await.map(|versions| VersionList { versions }))
    }

    #[instrument(skip_all)]
    async fn deploy(&self, req: Request<DeployApiRequest>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        ok(desired::deploy(&self.state.deployer, owner, req.into_inner(), &self.state.quotas).await)
    }

    #[instrument(skip_all)]
    async fn stop_api(&self, req: Request<ApiRef>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        ok(desired::stop(&self.state.deployer, owner, &req.get_ref().api_id).await)
    }

    #[instrument(skip_all)]
    async fn get_api_status(&self, req: Request<ApiRef>) -> Answer<ApiStatus> {
        let owner = user(&self.state, &req).await?;
        let api = apis::owned(&self.state.db, owner, &req.get_ref().api_id).await?;
        ok(desired::status_of(&self.state.db, api.id).await)
    }

    type ApiLogsStream = ReceiverStream<Result<souq_proto::agent::LogLine, Status>>;

    #[instrument(skip_all)]
    async fn api_logs(&self, req: Request<ApiLogsRequest>) -> Answer<Self::ApiLogsStream> {
        let owner = user(&self.state, &req).await?;
        let req = req.into_inner();
        let api = apis::owned(&self.state.db, owner, &req.api_id).await?;
        ok(logs::stream(&self.state.nodes, api.id, req.tail, req.follow).await)
    }
}
