//! `souq.market.v1.Market`: plans, the catalogue, subscriptions, keys and usage, handed to
//! the marketplace area. Only the catalogue and public plans need no token.
use std::sync::Arc;

use souq_proto::{
    apis::ApiRef,
    market::{
        ApiUsage, ApiUsageRequest, ConsumerUsage, CreateKeyRequest, CreatePlanRequest, KeyCreated, KeyList, KeyRef,
        KeyRevoked, ListKeysRequest, MarketplacePage, MarketplaceRequest, MyUsageRequest, Plan, PlanList, Statement,
        StatementRequest, SubscribeRequest, Subscription, market_server,
    },
};
use tonic::Request;
use tracing::instrument;

use super::{Answer, maybe_user, ok, user};
use crate::{
    market::{catalog, keys, plans, statement, subscriptions, usage},
    state::State,
};

/// Implements `souq.market.v1.Market`.
pub struct MarketService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl market_server::Market for MarketService {
    #[instrument(skip_all)]
    async fn create_plan(&self, req: Request<CreatePlanRequest>) -> Answer<Plan> {
        let owner = user(&self.state, &req).await?;
        ok(plans::create(&self.state.market, owner, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn list_plans(&self, req: Request<ApiRef>) -> Answer<PlanList> {
        let caller = maybe_user(&self.state, &req).await?;
        ok(plans::list(&self.state.market, caller, &req.get_ref().api_id).await.map(|plans| PlanList { plans }))
    }

    #[instrument(skip_all)]
    async fn list_marketplace(&self, req: Request<MarketplaceRequest>) -> Answer<MarketplacePage> {
        ok(catalog::page(&self.state.market, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Answer<Subscription> {
        let caller = user(&self.state, &req).await?;
        ok(subscriptions::subscribe(&self.state.market, caller, req.into_inner()).await)
    }

    #[instrument(skip_all)]
    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Answer<KeyCreated> {
        let caller = user(&self.state, &req).await?;
        ok(keys::create(&self.state.market, caller, &req.get_ref().name).await)
    }

    #[instrument(skip_all)]
    async fn list_keys(&self, req: Request<ListKeysRequest>) -> Answer<KeyList> {
        let caller = user(&self.state, &req).await?;
        ok(keys::list(&self.state.market, caller).await.map(|keys| KeyList { keys }))
    }

    #[instrument(skip_all)]
    async fn revoke_key(&self, req: Request<KeyRef>) -> Answer<KeyRevoked> {
        let caller = user(&self.state, &req).await?;
        let done = keys::revoke(&self.state.market, caller, &req.get_ref().key_id).await;
        ok(done.map(|()| KeyRevoked { message: "The key is revoked.".into() }))
    }

    #[instrument(skip_all)]
    async fn get_api_usage(&self, req: Request<ApiUsageRequest>) -> Answer<ApiUsage> {
        let owner = user(&self.state, &req).await?;
        let req = req.into_inner();
        ok(usage::of_api(&self.state.market, owner, &req.api_id, req.hours).await)
    }

    #[instrument(skip_all)]
    async fn get_my_usage(&self, req: Request<MyUsageRequest>) -> Answer<ConsumerUsage> {
        let caller = user(&self.state, &req).await?;
        ok(usage::mine(&self.state.market, caller).await)
    }

    #[instrument(skip_all)]
    async fn get_statement(&self, req: Request<StatementRequest>) -> Answer<Statement> {
        let caller = user(&self.state, &req).await?;
        ok(statement::statement(&self.state.market, caller, &req.get_ref().month).await)
    }
}
