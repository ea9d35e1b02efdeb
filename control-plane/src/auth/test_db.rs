//! Test support for the throttles: a migrated database of a test's own, SQLite in a
//! temporary directory or a new PostgreSQL database when `SOUQ_TEST_PG_URL` is set (as in
//! `crate::testing`), with two connection pools on it that stand for two replicas. It
//! needs only the database, so the throttles' tests do not depend on the whole state.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use uuid::Uuid;

/// A migrated database of its own and two pools on it, one per replica.
pub(crate) struct Replicas {
    pub(crate) a: DatabaseConnection,
    pub(crate) b: DatabaseConnection,
    /// A directory of the test's own, removed with the database.
    pub(crate) dir: PathBuf,
    pg: Option<(String, String)>,
}

impl Replicas {
    pub(crate) async fn new() -> Replicas {
        let id = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("souq-cp-throttle-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (url, pg) = match std::env::var("SOUQ_TEST_PG_URL") {
            Ok(template) => {
                let name = format!("souq_cp_throttle_{id}");
                let admin = crate::connect(&template.replace("{db}", "postgres")).await.unwrap();
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                (template.replace("{db}", &name), Some((template, name)))
            }
            Err(_) => (format!("sqlite://{}?mode=rwc", dir.join("souq.db").display()), None),
        };
        let a = crate::connect(&url).await.unwrap();
        crate::migrate(&a).await.unwrap();
        let b = crate::connect(&url).await.unwrap();
        Replicas { a, b, dir, pg }
    }

    pub(crate) async fn close(self) {
        self.a.close().await.unwrap();
        self.b.close().await.unwrap();
        if let Some((template, name)) = self.pg {
            let admin = crate::connect(&template.replace("{db}", "postgres")).await.unwrap();
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
