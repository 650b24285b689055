//! The Plex DB toolkit: everything plex-burst does to a Plex library
//! database file (`com.plexapp.plugins.library.db`).
//!
//! A real Plex DB declares virtual tables whose modules stock SQLite lacks
//! (FTS4 with the `collating` tokenizer, `spellfix1`), triggers that write
//! to them, and an index under a collation of Plex's own ([`collation`]).
//! Every function here works with the bundled stock SQLite anyway: every
//! connection it opens has Plex's collations, and it never instantiates
//! those virtual tables nor writes a table that has such a trigger.

pub mod anchors;
pub mod collation;
pub mod copy;
pub mod coverage;
mod file_url;
pub mod integrity;
mod paths;
pub mod plex_sqlite;
pub mod remap;
pub mod repair;
pub mod stats;
pub mod watchstate;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use coverage::CoverageReport;
pub use integrity::IntegrityReport;
pub use paths::PathMapping;
pub use plex_sqlite::PlexSqlite;
pub use remap::RemapReport;
pub use repair::RepairReport;
pub use stats::Stats;

/// How long a statement waits for a lock held by another process (Plex
/// checkpointing, a scanner) before failing with [`PlexDbError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tables every Plex library DB has; their absence means a wrong file.
const PLEX_TABLES: [&str; 4] = [
    "library_sections",
    "section_locations",
    "metadata_items",
    "media_parts",
];

/// What can go wrong; every message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PlexDbError {
    #[error("database not found: {}", .0.display())]
    NotFound(PathBuf),
    #[error("database file is empty: {}", .0.display())]
    Empty(PathBuf),
    #[error("not a SQLite database: {}", .0.display())]
    NotADatabase(PathBuf),
    #[error("not a Plex library database: {} has no table {table:?}", path.display())]
    NotPlexLibrary { path: PathBuf, table: &'static str },
    /// `table` is the table whose check failed, when known; `more` counts
    /// the further problems found.
    #[error("database is corrupt: {}: {}{problem}{}", path.display(),
        table.as_ref().map(|t| format!("table {t:?}: ")).unwrap_or_default(),
        if *more > 0 { format!(" (and {more} more problems)") } else { String::new() })]
    Corrupt {
        path: PathBuf,
        table: Option<String>,
        problem: String,
        more: usize,
    },
    #[error("database is locked by another process: {}", .0.display())]
    Busy(PathBuf),
    #[error(
        "{} was written {restarts} times while being copied ({mode} journal mode: a copy in \
         one go would block Plex's writes, and one in steps starts over at each write)",
        path.display()
    )]
    WrittenDuringCopy {
        path: PathBuf,
        restarts: u32,
        mode: String,
    },
    #[error("SQLite error on {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid path mapping {from:?} -> {to:?}: {reason}")]
    BadMapping {
        from: String,
        to: String,
        reason: &'static str,
    },
    #[error("remap refused on {}: trigger {trigger:?} on table {table:?} needs Plex's own SQLite modules", path.display())]
    UnsafeTrigger {
        path: PathBuf,
        trigger: String,
        table: String,
    },
    #[error("remap of {} aborted, nothing written: {detail}", path.display())]
    RemapAborted { path: PathBuf, detail: String },
    #[error("{}", .0)]
    NotCovered(String),
    #[error("{} failed on {}: {detail}", tool.display(), path.display())]
    Tool {
        tool: PathBuf,
        path: PathBuf,
        detail: String,
    },
    #[error("recovery of {} failed, original left untouched: {detail}", path.display())]
    RecoveryFailed { path: PathBuf, detail: String },
}

impl PlexDbError {
    /// Classifies a SQLite error met while working on `path`.
    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> PlexDbError {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => PlexDbError::NotADatabase(path),
            Some(ErrorCode::DatabaseCorrupt) => PlexDbError::Corrupt {
                path,
                table: None,
                problem: first_line(&source.to_string()),
                more: 0,
            },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => PlexDbError::Busy(path),
            _ => PlexDbError::Sqlite { path, source },
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> PlexDbError {
        PlexDbError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `path` as the run's Plex sees it: the mapping that covers it applied
/// (mappings that do not validate together map nothing).
pub fn mapped_path(mappings: &[PathMapping], path: &str) -> String {
    match paths::Mapper::new(mappings) {
        Ok(mapper) => mapper.apply(path),
        Err(_) => path.to_string(),
    }
}

/// Opens an existing DB read-only: the file, its WAL and its schema are
/// never written, and a missing path is an error, never a new file. Fails
/// with [`PlexDbError::NotADatabase`] at once for a file that is not SQLite.
///
/// A WAL-mode DB (as Plex keeps it) without a `-wal` file is closed: no
/// process has it open, since SQLite creates the `-wal` at the first open
/// and removes it at the last close. Such a file is opened `immutable`, so
/// that reading it does not leave `-wal`/`-shm` files behind. When a `-wal`
/// exists (Plex running), the normal read-only mode sees its latest commits.
pub fn open_read_only(path: &Path) -> Result<Connection, PlexDbError> {
    if is_closed_wal_db(path) {
        let absolute = std::path::absolute(path).map_err(|e| PlexDbError::io(path, e))?;
        if let Ok(mut uri) = url::Url::from_file_path(&absolute) {
            uri.set_query(Some("immutable=1"));
            return open_at(
                path,
                Path::new(uri.as_str()),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            );
        }
    }
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

/// True for a WAL-mode file (header bytes 18 and 19 are 2) with no `-wal`.
pub(crate) fn is_closed_wal_db(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    let wal_mode = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok()
        && header.starts_with(b"SQLite format 3\0")
        && header[18] == 2
        && header[19] == 2;
    wal_mode && !wal_path(path).exists()
}

/// The DB's write-ahead log beside it (`<db>-wal`).
pub fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Opens an existing DB for writing; never creates one.
pub fn open_for_write(path: &Path) -> Result<Connection, PlexDbError> {
    open(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
}

fn open(path: &Path, mode: OpenFlags) -> Result<Connection, PlexDbError> {
    open_at(path, path, mode)
}

/// Opens `target` (the path, or a URI for it) after checking `path`.
fn open_at(path: &Path, target: &Path, mode: OpenFlags) -> Result<Connection, PlexDbError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PlexDbError::NotFound(path.to_path_buf()),
        _ => PlexDbError::io(path, e),
    })?;
    if !meta.is_file() {
        return Err(PlexDbError::NotADatabase(path.to_path_buf()));
    }
    // SQLite treats an empty file as a valid empty database: say what it is.
    if meta.len() == 0 {
        return Err(PlexDbError::Empty(path.to_path_buf()));
    }
    // No SQLITE_OPEN_CREATE: a path that vanished in between is an error.
    let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(target, flags).map_err(|e| PlexDbError::sqlite(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| PlexDbError::sqlite(path, e))?;
    collation::register(&conn).map_err(|e| PlexDbError::sqlite(path, e))?;
    harden(&conn).map_err(|e| PlexDbError::sqlite(path, e))?;
    // Opening is lazy: read the header now so that garbage fails here.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(|e| PlexDbError::sqlite(path, e))?;
    Ok(conn)
}

/// Every DB the toolkit opens came from elsewhere (the reference from S3 on
/// the instance, the result from S3 at home) and is data, not code: the
/// functions its schema names (views, defaults, generated columns,
/// indexes) may only be innocuous ones, and neither its schema nor the
/// shadow tables of its virtual tables can be written through SQL
/// (SQLite's defensive mode). Repair's rebuild, which writes schema rows
/// verbatim, is the one connection without defensive mode (repair.rs).
pub(crate) fn harden(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    distrust_schema(conn)
}

/// `trusted_schema` off, through the configuration and the pragma alike.
pub(crate) fn distrust_schema(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.execute_batch("PRAGMA trusted_schema = OFF")
}

/// Folds the WAL into the DB file (lessons.md 22): an archive of the folder
/// then holds the whole database in the main file.
pub fn checkpoint_wal(db: &Path) -> Result<(), PlexDbError> {
    let conn = open_for_write(db)?;
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(|e| PlexDbError::sqlite(db, e))?;
    if busy != 0 {
        return Err(PlexDbError::Busy(db.to_path_buf()));
    }
    Ok(())
}

/// Fails unless `conn` holds the tables of a Plex library DB.
pub(crate) fn ensure_plex_library(conn: &Connection, path: &Path) -> Result<(), PlexDbError> {
    let mut stmt = conn
        .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1")
        .map_err(|e| PlexDbError::sqlite(path, e))?;
    for table in PLEX_TABLES {
        let present = stmt
            .exists([table])
            .map_err(|e| PlexDbError::sqlite(path, e))?;
        if !present {
            return Err(PlexDbError::NotPlexLibrary {
                path: path.to_path_buf(),
                table,
            });
        }
    }
    Ok(())
}

/// Opens read-only and checks that the file is a Plex library DB.
pub(crate) fn open_plex_read_only(path: &Path) -> Result<Connection, PlexDbError> {
    let conn = open_read_only(path)?;
    ensure_plex_library(&conn, path)?;
    Ok(conn)
}

/// A fresh path in `dir` for a copy of `db`, e.g.
/// `com.plexapp.plugins.library.db.20261123T210512Z.pre-remap`; never one
/// that exists.
pub(crate) fn backup_path(db: &Path, dir: &Path, purpose: &str) -> Result<PathBuf, PlexDbError> {
    std::fs::create_dir_all(dir).map_err(|e| PlexDbError::io(dir, e))?;
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plex.db".into());
    // RFC 3339 without the separators a file name does not want.
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    for n in 0u32.. {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = dir.join(format!("{name}.{stamp}{suffix}.{purpose}"));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    unreachable!("u32 ran out of backup names")
}

/// Flushes a directory entry (a rename or a new file) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PlexDbError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PlexDbError::io(dir, e))
}

pub(crate) fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// `name` quoted as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
