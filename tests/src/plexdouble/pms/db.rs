//! The library DB as the double uses it: one writer and one reader
//! connection in WAL mode, each behind a lock held only for short
//! transactions (never across file I/O), both with Plex's collations.
//!
//! Every write is timed from asking for it to its end (waiting for the
//! writer lock and for SQLite's locks included), and the writer waits out
//! a locked DB rather than failing: what another process reading the DB
//! (the runner's snapshots) costs Plex shows in [`WriteStats`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub struct Db {
    pub path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    meter: WriteMeter,
}

/// The double's writes so far: how many, the longest (from asking for the
/// write to its end), and how often SQLite found the DB locked and waited.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WriteStats {
    pub writes: u64,
    pub max_write_ms: f64,
    pub busy_retries: u64,
}

impl std::fmt::Display for WriteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes, the longest {:.1} ms, {} busy retries",
            self.writes, self.max_write_ms, self.busy_retries
        )
    }
}

#[derive(Default)]
struct WriteMeter {
    writes: AtomicU64,
    max_micros: AtomicU64,
    /// Shared with the writer's busy handler.
    busy_retries: Arc<AtomicU64>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let meter = WriteMeter::default();
        Ok(Db {
            path: path.to_path_buf(),
            writer: Mutex::new(open_writer(path, Arc::clone(&meter.busy_retries))?),
            reader: Mutex::new(open_reader(path)?),
            meter,
        })
    }

    pub fn write<T>(&self, work: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let asked = Instant::now();
        let result = {
            let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut conn)
        };
        let micros = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.meter.writes.fetch_add(1, Ordering::Relaxed);
        self.meter.max_micros.fetch_max(micros, Ordering::Relaxed);
        result
    }

    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            writes: self.meter.writes.load(Ordering::Relaxed),
            max_write_ms: self.meter.max_micros.load(Ordering::Relaxed) as f64 / 1000.0,
            busy_retries: self.meter.busy_retries.load(Ordering::Relaxed),
        }
    }

    /// Starts the counts over, for a measure of one window.
    pub fn reset_write_stats(&self) {
        self.meter.writes.store(0, Ordering::Relaxed);
        self.meter.max_micros.store(0, Ordering::Relaxed);
        self.meter.busy_retries.store(0, Ordering::Relaxed);
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

/// Pause between two tries of a locked DB, and the writer's patience:
/// ten seconds, then the write fails.
const BUSY_PAUSE: Duration = Duration::from_millis(2);
const BUSY_TRIES: i32 = 5_000;

/// The double's write connection; `busy_retries` counts its waits on a
/// locked DB.
pub fn open_writer(path: &Path, busy_retries: Arc<AtomicU64>) -> Result<Connection> {
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Real Plex DBs carry `_icu` triggers on metadata_items and tags that
    // write into FTS tables using the `collating` tokenizer, which only
    // Plex's own SQLite has: with stock SQLite every title write fails.
    // The double plays Plex, so its own connection runs with triggers off;
    // the triggers stay in the DB untouched for whoever opens it next.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
    register_collations(&conn)?;
    conn.busy_handler(Some(move |tries: i32| {
        if tries >= BUSY_TRIES {
            return false;
        }
        busy_retries.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(BUSY_PAUSE);
        true
    }))?;
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
