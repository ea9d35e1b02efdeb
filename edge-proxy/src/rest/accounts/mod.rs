//! Accounts: signup, login, sessions and passwords, and the current user; each route is
//! one `Accounts` call. The reset mail's landing page is [`reset_page`].
pub mod reset_page;

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use souq_proto::accounts::{
    self, ChangePasswordRequest, ForgotPasswordRequest, LoginRequest, LoginResponse, MeRequest, RefreshRequest,
    ResetPasswordRequest, SignupRequest, VerifyEmailRequest,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    MessageBody, grpc,
    openapi::{BadRequest, Forbidden, Gone, TooManyRequests, Unauthorized, Unavailable, Unprocessable},
};
use crate::{
    AppState,
    error::{ApiError, Result},
    extract::{Caller, ClientIp, Json, PreferredLocale},
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The area's routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(refresh))
        .routes(routes!(verify_email))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(change_password))
}

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
    /// `en` or `ar`; from `Accept-Language` when absent, else `en`.
    pub locale: Option<String>,
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

impl From<accounts::User> for UserBody {
    fn from(u: accounts::User) -> Self {
        UserBody {
            id: u.id,
            email: u.email,
            name: u.name,
            locale: u.locale,
            email_verified: u.email_verified,
            created_at: u.created_at,
        }
    }
}

/// A successful login or refresh.
#[derive(Serialize, ToSchema)]
pub struct TokenBody {
    /// EdDSA JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque; trade it at `/api/v1/auth/refresh` for a new pair. It rotates on every use.
    pub refresh_token: String,
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

fn token_body(resp: LoginResponse) -> Result<axum::Json<TokenBody>> {
    let user = resp
        .user
        .map(UserBody::from)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"))?;
    Ok(axum::Json(TokenBody {
        access_token: resp.access_token,
        refresh_token: resp.refresh_token,
        token_type: resp.token_type,
        expires_in: resp.expires_in,
        user,
    }))
}

/// A refresh token to trade.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// An address that forgot its password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    /// The account's email address.
    pub email: String,
}

/// A new password, with the token from the reset mail.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// The token from the reset mail.
    pub token: String,
    /// 8 to 128 characters.
    pub password: String,
    /// Also revoke every API key of the account (default false).
    #[serde(default)]
    pub revoke_api_keys: bool,
}

/// A password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// The password in use now.
    pub current_password: String,
    /// 8 to 128 characters.
    pub new_password: String,
    /// Also revoke every API key of the account (default false).
    #[serde(default)]
    pub revoke_api_keys: bool,
}

/// Creates an account. The answer is the same whether or not the address was taken.
/// Signups are limited per client address and in all: 429 with `Retry-After` beyond.
#[utoipa::path(post, path = "/api/v1/auth/signup", request_body = SignupBody, tag = "auth",
    responses((status = 202, body = MessageBody), Unprocessable, TooManyRequests, Unavailable))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    PreferredLocale(preferred): PreferredLocale,
    Json(body): Json<SignupBody>,
) -> Result<impl IntoResponse> {
    let locale = body.locale.or(preferred);
    let req = SignupRequest { email: body.email, password: body.password, name: body.name, locale, client_ip };
    let resp = state.accounts.clone().signup(grpc(req, None, TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(MessageBody { message: resp.message })))
}

/// Logs in; wrong password and unknown email give the same 401. Attempts are counted
/// before the password is checked: past the limit, 429 with `Retry-After`. When every
/// password check of the control plane is busy, 503 with `Retry-After` at once.
#[utoipa::path(post, path = "/api/v1/auth/login", request_body = LoginBody, tag = "auth",
    responses((status = 200, body = TokenBody), Unauthorized,
        TooManyRequests, Unavailable))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<LoginBody>,
) -> Result<axum::Json<TokenBody>> {
    if body.email.len() > 1024 || body.password.len() > 1024 {
        return Err(ApiError::unauthenticated("invalid email or password"));
    }
    let req = LoginRequest { email: body.email, password: body.password, client_ip };
    token_body(state.accounts.clone().login(grpc(req, None, TIMEOUT)).await?.into_inner())
}

/// Trades a refresh token for a new pair. Using a rotated token again revokes its family.
#[utoipa::path(post, path = "/api/v1/auth/refresh", request_body = RefreshBody, tag = "auth",
    responses((status = 200, body = TokenBody), Unauthorized))]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<RefreshBody>,
) -> Result<axum::Json<TokenBody>> {
    let req = RefreshRequest { refresh_token: body.refresh_token, client_ip };
    token_body(state.accounts.clone().refresh(grpc(req, None, TIMEOUT)).await?.into_inner())
}

/// Confirms an address with the link from its verification mail.
#[utoipa::path(get, path = "/api/v1/auth/verify-email/{token}", tag = "auth",
    params(("token" = String, Path, description = "The token from the mail")),
    responses((status = 200, body = MessageBody), BadRequest,
        Gone))]
pub async fn verify_email(State(state): State<AppState>, Path(token): Path<String>) -> Result<axum::Json<MessageBody>> {
    let token: String = token.chars().take(256).collect();
    let resp =
        state.accounts.clone().verify_email(grpc(VerifyEmailRequest { token }, None, TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// Mails a reset link if the address has an account; the answer is the same either way.
/// Requests are limited per client address and in all: 429 with `Retry-After` beyond.
#[utoipa::path(post, path = "/api/v1/auth/forgot-password", request_body = ForgotBody, tag = "auth",
    responses((status = 202, body = MessageBody), Unprocessable, TooManyRequests))]
pub async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<ForgotBody>,
) -> Result<impl IntoResponse> {
    let req = ForgotPasswordRequest { email: body.email, client_ip };
    let resp = state.accounts.clone().forgot_password(grpc(req, None, TIMEOUT)).await?.into_inner();
    Ok((StatusCode::ACCEPTED, axum::Json(MessageBody { message: resp.message })))
}

/// Sets a new password with the token from the reset mail. It does not log in, and it
/// voids every earlier session (open log follows end too); with `revoke_api_keys`, every
/// API key is revoked as well. A mail tells the owner, with the count of live keys.
#[utoipa::path(post, path = "/api/v1/auth/reset-password", request_body = ResetBody, tag = "auth",
    responses((status = 200, body = MessageBody), BadRequest,
        Gone, Unprocessable, Unavailable))]
pub async fn reset_password(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<ResetBody>,
) -> Result<axum::Json<MessageBody>> {
    let req =
        ResetPasswordRequest { token: body.token, password: body.password, client_ip, revoke_api_keys: body.revoke_api_keys };
    let resp = state.accounts.clone().reset_password(grpc(req, None, TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// Changes the caller's password; every earlier session stops working (open log follows
/// end too); with `revoke_api_keys`, every API key is revoked as well. A mail tells the
/// owner, with the count of live keys.
#[utoipa::path(post, path = "/api/v1/auth/change-password", request_body = ChangeBody, tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MessageBody), Unauthorized,
        Forbidden, Unprocessable, TooManyRequests, Unavailable))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(client_ip): ClientIp,
    Json(body): Json<ChangeBody>,
) -> Result<axum::Json<MessageBody>> {
    let req = ChangePasswordRequest {
        current_password: body.current_password,
        new_password: body.new_password,
        client_ip,
        revoke_api_keys: body.revoke_api_keys,
    };
    let resp = state.accounts.clone().change_password(grpc(req, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// The user the bearer token belongs to.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeBody), Unauthorized))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<MeBody>> {
    let resp = state.accounts.clone().me(grpc(MeRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(MeBody { user: UserBody::from(resp) }))
}
