//! The caller's API keys: create one (the whole key is shown this once), list them by
//! prefix, revoke one. Each route is one `Market` call made for the caller.
use std::time::Duration;

use axum::{
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use souq_proto::market::{self, CreateKeyRequest, KeyRef, ListKeysRequest};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    access::credential::key_hash,
    error::{ApiError, Problem, Result},
    extract::{Caller, Json},
    rest::{
        ACCESS_PATIENCE, MessageBody, grpc,
        openapi::{Forbidden, NotFound, PROBLEM_JSON, Unauthorized, Unprocessable},
    },
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A new key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// What the key is for, e.g. `laptop`.
    pub name: String,
}

/// An API key, as listed: never the key itself.
#[derive(Serialize, ToSchema)]
pub struct KeyBody {
    /// The key's id (a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `souq_<prefix>`: the start of the key, to recognise it by.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; null while the key works.
    pub revoked_at: Option<String>,
}

impl From<market::Key> for KeyBody {
    fn from(k: market::Key) -> Self {
        KeyBody { id: k.id, name: k.name, prefix: k.prefix, created_at: k.created_at, revoked_at: k.revoked_at }
    }
}

/// A created key, with the whole key: shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeyBody {
    /// The key's id (a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
    /// `souq_<prefix>`.
    pub prefix: String,
    /// RFC 3339.
    pub created_at: String,
    /// The whole key, `souq_<prefix>_<secret>`: send it as `X-API-Key`. Store it now; it
    /// cannot be shown again.
    pub key: String,
}

/// The caller's keys.
#[derive(Serialize, ToSchema)]
pub struct KeyListBody {
    /// Live keys first, then recently revoked ones.
    pub keys: Vec<KeyBody>,
}

/// The `{id}` of a key in a path, in canonical form; anything not a UUID is a 404.
pub struct KeyId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such key");
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found())?;
        let id = uuid::Uuid::try_parse(&raw).map_err(|_| not_found())?;
        Ok(KeyId(id.hyphenated().to_string()))
    }
}

/// Creates an API key. The answer holds the whole key, once.
#[utoipa::path(post, path = "/api/v1/keys", request_body = CreateKeyBody, tag = "keys", security(("bearer" = [])),
    responses((status = 201, body = CreatedKeyBody),
        Unauthorized,
        Forbidden,
        (status = 409, description = "Too many live keys", body = Problem, content_type = PROBLEM_JSON),
        Unprocessable))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateKeyBody>,
) -> Result<impl IntoResponse> {
    let req = grpc(CreateKeyRequest { name: body.name }, Some(&caller.token), TIMEOUT);
    let created = state.market.clone().create_key(req).await?.into_inner();
    let k = created.key.unwrap_or_default();
    // Answer once this edge knows the key, so it works on the very next call.
    let hash = key_hash(&created.secret);
    state.access.wait_for(|t| t.key(&hash).is_some(), ACCESS_PATIENCE).await;
    let body =
        CreatedKeyBody { id: k.id, name: k.name, prefix: k.prefix, created_at: k.created_at, key: created.secret };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

/// The caller's keys, by prefix only.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = KeyListBody), Unauthorized))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<KeyListBody>> {
    let resp =
        state.market.clone().list_keys(grpc(ListKeysRequest {}, Some(&caller.token), TIMEOUT)).await?.into_inner();
    Ok(axum::Json(KeyListBody { keys: resp.keys.into_iter().map(KeyBody::from).collect() }))
}

/// Revokes one of the caller's keys; every edge refuses it within a second.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, body = MessageBody), Unauthorized,
        NotFound))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    KeyId(key_id): KeyId,
) -> Result<axum::Json<MessageBody>> {
    let req = grpc(KeyRef { key_id: key_id.clone() }, Some(&caller.token), TIMEOUT);
    let resp = state.market.clone().revoke_key(req).await?.into_inner();
    // Answer once this edge refuses the key.
    state.access.wait_for(|t| !t.has_key_id(&key_id), ACCESS_PATIENCE).await;
    Ok(axum::Json(MessageBody { message: resp.message }))
}

/// These routes, each served and documented from its handler.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(revoke))
}
