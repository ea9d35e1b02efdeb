//! Test support for the throttles: a scratch database (`db::scratch`) with two
//! connection pools on it that stand for two replicas. It needs only the database, so
//! the throttles' tests do not depend on the whole state.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sea_orm::DatabaseConnection;

use crate::db::scratch::ScratchDb;

/// A migrated database of its own and two pools on it, one per replica.
pub(crate) struct Replicas {
    pub(crate) a: DatabaseConnection,
    pub(crate) b: DatabaseConnection,
    /// A directory of the test's own, removed with the database.
    pub(crate) dir: PathBuf,
    scratch: ScratchDb,
}

impl Replicas {
    pub(crate) async fn new() -> Replicas {
        let scratch = ScratchDb::new().await;
        let b = crate::connect(&scratch.url).await.unwrap();
        Replicas { a: scratch.db.clone(), b, dir: scratch.dir.clone(), scratch }
    }

    pub(crate) async fn close(self) {
        self.b.close().await.unwrap();
        self.scratch.close().await;
    }
}
