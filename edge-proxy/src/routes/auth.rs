//! Accounts: signup, login and the current user.
use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use souq_proto::platform::{self, LoginRequest, MeRequest, SignupRequest};
use utoipa::ToSchema;

use super::grpc;
use crate::{
    AppState,
    error::{ApiError, Problem, Result},
    extract::{Caller, Json},
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A new account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// The account's email address.
    pub email: String,
    /// 8 to 128 characters, not the email.
    pub password: String,
    /// Display name.
    pub name: Option<String>,
    /// `en` or `ar`.
    pub locale: Option<String>,
}

/// A plain message.
#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    /// What happened.
    pub message: String,
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The account's email address.
    pub email: String,
    /// Its password.
    pub password: String,
}

/// A user as clients see it.
#[derive(Serialize, ToSchema)]
pub struct UserBody {
    /// User id.
    pub id: String,
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// `en` or `ar`.
    pub locale: String,
    /// Whether the address is confirmed.
    pub email_verified: bool,
    /// RFC 3339.
    pub created_at: String,
}

impl From<platform::User> for UserBody {
    fn from(u: platform::User) -> Self {
        UserBody { id: u.id, email: u.email, name: u.name, locale: u.locale, email_verified: u.email_verified, created_at: u.created_at }
    }
}

/// A successful login.
#[derive(Serialize, ToSchema)]
pub struct TokenBody {
    /// EdDSA JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The user.
    pub user: UserBody,
}

/// The current user.
#[derive(Serialize, ToSchema)]
pub struct MeBody {
    /// The user.
    pub user: UserBody,
}

fn user_of(u: Option<platform::User>) -> Result<UserBody> {
    u.map(UserBody::from)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"))
}

/// Creates an account. The answer is the same whether or not the address was taken.
#[utoipa::path(post, path = "/api/v1/auth/signup", request_body = SignupBody, tag = "auth",
    responses((status = 202, body = MessageBody), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn signup(State(state): State<AppState>, Json(body): Json<SignupBody>) -> Result<impl IntoResponse> {
    let req = SignupRequest { email: body.email, password: body.password, name: body.name, locale: body.locale };
    let resp = state.platform.clone().signup(grpc(req, None, TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(MessageBody { message: resp.message })))
}

/// Logs in; wrong password and unknown email give the same 401.
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginBody, tag = "auth",
    responses((status = 200, body = TokenBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn login(State(state): State<AppState>, Json(body): Json<LoginBody>) -> Result<axum::Json<TokenBody>> {
    if body.email.len() > 1024 || body.password.len() > 1024 {
        return Err(ApiError::unauthenticated("invalid email or password"));
    }
    let req = LoginRequest { email: body.email, password: body.password };
    let resp = state.platform.clone().login(grpc(req, None, TIMEOUT)).await?.into_inner();
    Ok(axum::Json(TokenBody {
        access_token: resp.access_token,
        token_type: resp.token_type,
        expires_in: resp.expires_in,
        user: user_of(resp.user)?,
    }))
}

/// The user the bearer token belongs to.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeBody), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<MeBody>> {
    let resp = state.platform.clone().me(grpc(MeRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MeBody { user: UserBody::from(resp) }))
}
