//! The database: connecting (with the pool and SQLite settings the control plane needs)
//! and applying the migrations.
use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;

use crate::error::Result;

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
