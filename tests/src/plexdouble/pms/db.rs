//! The library DB as the double uses it: one writer and one reader
//! connection in WAL mode, each behind a lock held only for short
//! transactions (never across file I/O), both with Plex's collations.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub struct Db {
    pub path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        Ok(Db {
            path: path.to_path_buf(),
            writer: Mutex::new(open_writer(path)?),
            reader: Mutex::new(open_reader(path)?),
        })
    }

    pub fn write<T>(&self, work: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        work(&mut conn)
    }

    pub fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        work(&conn)
    }

    /// Folds the WAL into the DB file and truncates it, as Plex does on a
    /// clean stop, so that the file alone is the whole DB.
    pub fn checkpoint(&self) -> Result<()> {
        self.write(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .context("checkpointing the WAL")
        })
    }
}

/// The double's write connection.
pub fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Real Plex DBs carry `_icu` triggers on metadata_items and tags that
    // write into FTS tables using the `collating` tokenizer, which only
    // Plex's own SQLite has: with stock SQLite every title write fails.
    // The double plays Plex, so its own connection runs with triggers off;
    // the triggers stay in the DB untouched for whoever opens it next.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    register_collations(&conn)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "{} refused WAL mode ({mode})",
        path.display()
    );
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", path.display()))?;
    register_collations(&conn)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Plex's own SQLite has the `icu_root` (and, in old DBs, `naturalsort`)
/// collation of `index_title_sort_icu`: every insert or update of
/// `metadata_items` must place the row in that index, and a query may
/// order by it. The double plays Plex, so it registers them as Plex has them.
fn register_collations(conn: &Connection) -> Result<()> {
    runner::plexdb::collation::register(conn).context("registering Plex's collations")
}
