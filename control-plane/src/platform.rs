//! The `Platform` service: the edge's gateway to accounts and execution.
use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, ActiveValue::Set, sea_query::OnConflict};
use souq_proto::{
    Kind,
    platform::{
        ExecuteRequest, ExecuteResponse, GetVerifyingKeyRequest, LoginRequest, LoginResponse,
        MeRequest, SignupRequest, SignupResponse, User, VerifyingKey, platform_server,
    },
};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};
use uuid::Uuid;

use crate::{
    State, accounts,
    auth::password,
    entity::users,
    error::{Error, Result},
};

/// The answer to every signup, whether or not the address was taken.
pub const SIGNUP_MESSAGE: &str = "If this address was not registered yet, its account now exists and you can log in.";

/// Implements `souq.platform.v1.Platform`.
pub struct PlatformService {
    pub(crate) state: Arc<State>,
}

impl PlatformService {
    /// The user id of the bearer token in the request's metadata.
    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<Uuid> {
        let token = souq_proto::bearer(req.metadata())
            .ok_or_else(|| Error::kind(Kind::Unauthenticated, "missing bearer token"))?;
        self.state.tokens.verify(token)
    }
}

#[tonic::async_trait]
impl platform_server::Platform for PlatformService {
    #[instrument(skip_all)]
    async fn signup(&self, req: Request<SignupRequest>) -> Result<Response<SignupResponse>, Status> {
        let req = req.into_inner();
        let email = accounts::normalize_email(&req.email)?;
        accounts::check_password(&req.password, &email)?;
        let name = accounts::check_name(req.name)?;
        let locale = accounts::check_locale(req.locale)?;
        // Hash before looking anything up, so a taken address costs the same time.
        let hash = password::hash(req.password).await?;
        let row = users::ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email),
            password_hash: Set(hash),
            name: Set(name),
            locale: Set(locale),
            email_verified: Set(false),
            created_at: Set(Utc::now()),
        };
        let inserted = users::Entity::insert(row)
            .on_conflict(OnConflict::column(users::Column::Email).do_nothing().to_owned())
            .exec_without_returning(&self.state.db)
            .await
            .map_err(Error::from)?;
        info!(created = inserted > 0, "signup");
        Ok(Response::new(SignupResponse { message: SIGNUP_MESSAGE.into() }))
    }

    #[instrument(skip_all)]
    async fn login(&self, req: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let req = req.into_inner();
        // A malformed email is just an unknown one: the same path, the same answer.
        let user = match accounts::normalize_email(&req.email) {
            Ok(email) => users::Entity::find()
                .filter(users::Column::Email.eq(email))
                .one(&self.state.db)
                .await
                .map_err(Error::from)?,
            Err(_) => None,
        };
        let ok = password::verify(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let user = match (ok, user) {
            (true, Some(u)) => u,
            _ => return Err(Error::kind(Kind::Unauthenticated, "invalid email or password").into()),
        };
        let access_token = self.state.tokens.issue(user.id)?;
        info!(user_id = %user.id, "login");
        Ok(Response::new(LoginResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.state.tokens.ttl().as_secs(),
            user: Some(accounts::to_wire(user)),
        }))
    }

    #[instrument(skip_all)]
    async fn me(&self, req: Request<MeRequest>) -> Result<Response<User>, Status> {
        let id = self.caller(&req)?;
        let user = users::Entity::find_by_id(id)
            .one(&self.state.db)
            .await
            .map_err(Error::from)?
            .ok_or_else(|| Error::kind(Kind::Unauthenticated, "invalid or expired token"))?;
        Ok(Response::new(accounts::to_wire(user)))
    }

    #[instrument(skip_all)]
    async fn execute(&self, req: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>, Status> {
        let user_id = self.caller(&req)?;
        Ok(Response::new(crate::execute::run(&self.state, user_id, req.into_inner()).await?))
    }

    async fn get_verifying_key(
        &self,
        _req: Request<GetVerifyingKeyRequest>,
    ) -> Result<Response<VerifyingKey>, Status> {
        Ok(Response::new(VerifyingKey {
            ed25519_public: self.state.tokens.public_key().to_vec(),
            issuer: souq_proto::claims::ISSUER.into(),
            audience: souq_proto::claims::AUDIENCE.into(),
        }))
    }
}
