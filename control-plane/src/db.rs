//! The database: connecting (with the pool and SQLite settings the control plane needs)
//! and applying the migrations; on SQLite, the lock that keeps a database to one control
//! plane.
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::error::{Error, Result};

/// Connects to the database; never logs the URL, which may hold a password.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut opts = ConnectOptions::new(database_url.to_owned());
    // SQLite has one writer at a time, and a WAL transaction that reads and then writes
    // fails at once (SQLITE_BUSY_SNAPSHOT) if another connection wrote in between; one
    // connection serialises the control plane's work on it instead.
    let connections = if database_url.starts_with("sqlite:") { 1 } else { 16 };
    opts.max_connections(connections).connect_timeout(Duration::from_secs(10)).sqlx_logging(false);
    // SQLite (the embedded default): write-ahead logging, so readers never wait for the
    // writer, and fsync at checkpoints rather than on every commit. A crash of Souq loses
    // nothing; a power cut may lose the last commits.
    opts.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal).busy_timeout(Duration::from_secs(10))
    });
    Ok(Database::connect(opts).await?)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<()> {
    souq_migrations::Migrator::up(db, None).await?;
    Ok(())
}

/// The lock that makes one SQLite database one control plane's: an exclusive lock on
/// `<db file>.lock`, held while the value lives. `None` for PostgreSQL and in-memory
/// SQLite. SQLite has no lease another replica could honour from afar: two control planes
/// on one file would both reconcile, so the second is refused at start.
pub fn lock_sqlite(database_url: &str) -> Result<Option<std::fs::File>> {
    let Some(path) = sqlite_file(database_url) else { return Ok(None) };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Internal(format!("cannot open the SQLite lock file {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Internal(format!(
            "another control plane uses this SQLite database ({}); SQLite allows one control plane: use PostgreSQL for several",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Internal(format!("cannot lock the SQLite lock file {}: {e}", lock_path.display())))
        }
    }
}

/// The file of a SQLite URL (`sqlite://path?…`, `sqlite:path`); `None` for other
/// databases and in-memory SQLite.
fn sqlite_file(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url.strip_prefix("sqlite://").or_else(|| database_url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory");
    (!memory).then(|| std::path::PathBuf::from(path))
}

/// Scratch databases for tests: SQLite in a temporary directory, or a new PostgreSQL
/// database when `SOUQ_TEST_PG_URL` (a URL template with `{db}`, as the whole-system
/// tests take) is set. The one place tests make a database; `testing` builds a `State`
/// on it, and modules below `state` use it directly.
#[cfg(test)]
pub(crate) mod scratch {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use sea_orm::{ConnectionTrait, DatabaseConnection};
    use sea_orm_migration::MigratorTrait;

    /// A database of its own; [`ScratchDb::close`] removes it.
    pub(crate) struct ScratchDb {
        /// The connection.
        pub(crate) db: DatabaseConnection,
        /// Its URL, for a second pool (a second replica).
        pub(crate) url: String,
        /// A directory of the test's own, removed with the database.
        pub(crate) dir: PathBuf,
        pg: Option<(String, String)>,
    }

    impl ScratchDb {
        /// A fresh, migrated database.
        pub(crate) async fn new() -> ScratchDb {
            Self::migrated_to(None).await
        }

        /// A fresh database with only the first `steps` migrations applied (all when
        /// `None`).
        pub(crate) async fn migrated_to(steps: Option<u32>) -> ScratchDb {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let dir = std::env::temp_dir().join(format!("souq-cp-test-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (url, pg) = match std::env::var("SOUQ_TEST_PG_URL") {
                Ok(template) => {
                    let name = format!("souq_cp_test_{id}");
                    let admin = super::connect(&template.replace("{db}", "postgres")).await.unwrap();
                    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                    (template.replace("{db}", &name), Some((template, name)))
                }
                Err(_) => (format!("sqlite://{}?mode=rwc", dir.join("souq.db").display()), None),
            };
            let db = super::connect(&url).await.unwrap();
            souq_migrations::Migrator::up(&db, steps).await.unwrap();
            ScratchDb { db, url, dir, pg }
        }

        /// Closes the database and removes it.
        pub(crate) async fn close(self) {
            self.db.close().await.unwrap();
            if let Some((template, name)) = self.pg {
                let admin = super::connect(&template.replace("{db}", "postgres")).await.unwrap();
                admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sqlite_files_are_found_in_urls() {
        assert_eq!(sqlite_file("sqlite:///tmp/x/souq.db?mode=rwc"), Some("/tmp/x/souq.db".into()));
        assert_eq!(sqlite_file("sqlite:souq.db"), Some("souq.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn a_second_control_plane_on_one_sqlite_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("souq-cp-lock-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("souq.db").display());
        let first = lock_sqlite(&url).unwrap();
        assert!(first.is_some());
        let second = lock_sqlite(&url).unwrap_err().to_string();
        assert!(second.contains("another control plane uses this SQLite database"), "{second}");
        assert!(second.contains("use PostgreSQL for several"), "{second}");
        drop(first);
        assert!(lock_sqlite(&url).unwrap().is_some(), "free again once the first has stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
