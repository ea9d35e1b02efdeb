//! Test support: a `State` over a fresh, migrated database of its own, SQLite in a
//! temporary directory, or a new PostgreSQL database when `SOUQ_TEST_PG_URL` (a URL
//! template with `{db}`, as the whole-system tests take) is set.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{EntityTrait, IntoActiveModel};
use uuid::Uuid;

use crate::{Config, ManualClock, auth::token::TokenSigner, db::scratch::ScratchDb, entity::users, state::State};

/// A state on its own database; [`TestDb::close`] removes the database.
pub(crate) struct TestDb {
    /// The state, as the services see it.
    pub(crate) state: Arc<State>,
    /// The clock every area reads; move it to test months and expiry.
    pub(crate) clock: Arc<ManualClock>,
    scratch: ScratchDb,
}

impl TestDb {
    /// A fresh, migrated database and a state over it, with a manual clock.
    pub(crate) async fn new() -> TestDb {
        Self::migrated_to(None).await
    }

    /// A fresh database with only the first `steps` migrations applied (all when `None`).
    pub(crate) async fn migrated_to(steps: Option<u32>) -> TestDb {
        let scratch = ScratchDb::migrated_to(steps).await;
        let (db, url, dir) = (scratch.db.clone(), scratch.url.clone(), scratch.dir.clone());
        let clock = Arc::new(ManualClock::new());
        let mut cfg = Config::new(url, dir.join("jwt.pem"), "join".into(), "http://localhost".into(), dir.join("mail"));
        cfg.clock = clock.clone();
        let tokens = TokenSigner::load_or_create(&cfg.signing_key_path, cfg.access_token_ttl).unwrap();
        let state = Arc::new(State::new(&cfg, db, tokens, Arc::default(), tokio_util::sync::CancellationToken::new()));
        TestDb { state, clock, scratch }
    }

    /// A new user, with a verified address or not.
    pub(crate) async fn user(&self, verified: bool) -> Uuid {
        let id = Uuid::now_v7();
        let user = users::Model {
            id,
            email: format!("{id}@example.com"),
            password_hash: String::new(),
            name: None,
            locale: "en".into(),
            email_verified: verified,
            created_at: Utc::now(),
            tokens_valid_after: None,
        };
        users::Entity::insert(user.into_active_model()).exec_without_returning(&self.state.db).await.unwrap();
        id
    }

    /// Closes the database and removes it.
    pub(crate) async fn close(self) {
        self.scratch.close().await;
    }
}
