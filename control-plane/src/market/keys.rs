//! Consumers' API keys: `souq_<prefix>_<secret>`, shown in full once and stored only as
//! the SHA-256 of the whole key with its prefix. Keys are never logged; prefixes may be.
use sea_orm::{
    ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use sha2::{Digest, Sha256};
use sea_orm::ConnectionTrait;
use souq_proto::{
    Kind,
    market::{Key, KeyCreated},
};
use uuid::Uuid;

use super::{Market, access, check_label};
use crate::{
    clock::rfc3339,
    entity::api_keys,
    error::{Error, Result},
    quotas,
};

/// Most live (unrevoked) keys one user may hold.
pub const MAX_LIVE_KEYS: u64 = 20;
/// Most revoked keys a list shows, newest first, after every live key.
pub const MAX_REVOKED_LISTED: u64 = 80;
/// Characters of the prefix, from [a-z0-9].
pub const PREFIX_LEN: usize = 8;
/// Characters of the secret, from [A-Za-z0-9]: 32 × log2(62) ≈ 190 bits.
pub const SECRET_LEN: usize = 32;

const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn uniformly from `alphabet` with the OS's generator (bytes that
/// would bias the draw are rejected).
fn random_chars(len: usize, alphabet: &[u8]) -> Result<String> {
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("getrandom: {e}")))?;
        for b in buf.iter().map(|&b| usize::from(b)).filter(|&b| b < limit) {
            if out.len() == len {
                break;
            }
            out.push(char::from(alphabet[b % n]));
        }
    }
    Ok(out)
}

/// A new key: (its shown prefix `souq_<prefix>`, the whole key).
pub fn generate() -> Result<(String, String)> {
    let prefix = format!("souq_{}", random_chars(PREFIX_LEN, LOWER_DIGITS)?);
    let key = format!("{prefix}_{}", random_chars(SECRET_LEN, ALPHANUMERIC)?);
    Ok((prefix, key))
}

/// The stored form of a key: hex SHA-256 of the whole key string.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn to_wire(k: &api_keys::Model) -> Key {
    Key {
        id: k.id.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: rfc3339(k.created_at),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}

fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Db(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))))
}

/// Makes a key for the caller, whose address must be verified; the answer is the only
/// time the whole key is shown.
pub(crate) async fn create(market: &Market, user: Uuid, name: &str) -> Result<KeyCreated> {
    quotas::require_verified(&market.db, user, "creating API keys").await?;
    let name = check_label("name", name)?;
    let live = api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user))
        .filter(api_keys::Column::RevokedAt.is_null())
        .count(&market.db)
        .await?;
    if live >= MAX_LIVE_KEYS {
        return Err(Error::kind(Kind::Conflict, format!("you have {MAX_LIVE_KEYS} live keys, the most allowed; revoke one first")));
    }
    // A prefix is 36^8 ≈ 2.8e12 strong; a clash is rare, and the next draw will not clash.
    for attempt in 0..3 {
        let (prefix, key) = generate()?;
        let row = api_keys::Model {
            id: Uuid::now_v7(),
            user_id: user,
            name: name.clone(),
            prefix,
            sha256: hash(&key),
            created_at: market.clock.now(),
            revoked_at: None,
        };
        let inserted = api_keys::Entity::insert(row.clone().into_active_model()).exec_without_returning(&market.db).await;
        match inserted.map_err(Error::from) {
            Ok(_) => {
                tracing::info!(key_id = %row.id, prefix = %row.prefix, user_id = %user, "API key created");
                access::publish_now(market).await;
                return Ok(KeyCreated { key: Some(to_wire(&row)), secret: key });
            }
            Err(e) if attempt < 2 && is_unique_violation(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal("no free key prefix after 3 draws".into()))
}

/// The caller's keys that lists show: every live one, then the newest revoked ones, each
/// group newest first.
pub(crate) async fn listed(db: &impl ConnectionTrait, user: Uuid) -> Result<Vec<api_keys::Model>> {
    let mine = || api_keys::Entity::find().filter(api_keys::Column::UserId.eq(user));
    let newest = |q: sea_orm::Select<api_keys::Entity>| {
        q.order_by_desc(api_keys::Column::CreatedAt).order_by_desc(api_keys::Column::Id)
    };
    let mut keys = newest(mine().filter(api_keys::Column::RevokedAt.is_null())).limit(MAX_LIVE_KEYS).all(db).await?;
    let revoked =
        newest(mine().filter(api_keys::Column::RevokedAt.is_not_null())).limit(MAX_REVOKED_LISTED).all(db).await?;
    keys.extend(revoked);
    Ok(keys)
}

/// The caller's keys, as [`listed`] orders them.
pub(crate) async fn list(market: &Market, user: Uuid) -> Result<Vec<Key>> {
    Ok(listed(&market.db, user).await?.iter().map(to_wire).collect())
}

/// Revokes one of the caller's keys and republishes the access table at once, so every
/// edge refuses the key within a second. Revoking a revoked key succeeds and keeps its
/// first revocation time (a client may retry safely); another user's key, or an unknown
/// one, is not found.
pub(crate) async fn revoke(market: &Market, user: Uuid, id: &str) -> Result<()> {
    let not_found = || Error::kind(Kind::NotFound, "no such key");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let key = api_keys::Entity::find_by_id(id).one(&market.db).await?.filter(|k| k.user_id == user).ok_or_else(not_found)?;
    if key.revoked_at.is_some() {
        return Ok(());
    }
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(Some(market.clock.now())))
        .filter(api_keys::Column::Id.eq(key.id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(&market.db)
        .await?;
    tracing::info!(key_id = %key.id, prefix = %key.prefix, user_id = %user, "API key revoked");
    access::publish_now(market).await;
    Ok(())
}

/// After a password reset or change, inside its transaction: revokes every live key of
/// `user` when `revoke_all`, then counts the live keys left. Returns (revoked, live). The
/// caller republishes the access table once the transaction commits.
pub async fn revoke_all_and_count(
    db: &impl ConnectionTrait,
    user: Uuid,
    revoke_all: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(u64, u64)> {
    let mut revoked = 0;
    if revoke_all {
        revoked = api_keys::Entity::update_many()
            .col_expr(api_keys::Column::RevokedAt, Expr::value(Some(now)))
            .filter(api_keys::Column::UserId.eq(user))
            .filter(api_keys::Column::RevokedAt.is_null())
            .exec(db)
            .await?
            .rows_affected;
        tracing::info!(user_id = %user, keys = revoked, "every API key of the user revoked");
    }
    let live =
        api_keys::Entity::find().filter(api_keys::Column::UserId.eq(user)).filter(api_keys::Column::RevokedAt.is_null()).count(db).await?;
    Ok((revoked, live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_hash_whole() {
        let (prefix, key) = generate().unwrap();
        let (_, other) = generate().unwrap();
        assert_ne!(key, other);
        assert_eq!(prefix.len(), 5 + PREFIX_LEN);
        assert!(key.starts_with(&format!("{prefix}_")));
        let tail = &prefix[5..];
        assert!(tail.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let secret = &key[prefix.len() + 1..];
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        let h = hash(&key);
        assert_eq!(h.len(), 64);
        assert_ne!(h, hash(secret), "the hash covers the whole key, not the secret alone");
    }

    #[test]
    fn random_chars_cover_the_alphabet() {
        let s = random_chars(4000, LOWER_DIGITS).unwrap();
        assert_eq!(s.len(), 4000);
        assert!(LOWER_DIGITS.iter().all(|c| s.as_bytes().contains(c)));
    }
}
