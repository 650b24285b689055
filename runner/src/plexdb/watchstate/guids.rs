//! What the target knows of a guid, and the count of those it lacks.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Statement};

use super::key_text;
use crate::plexdb::PlexDbError;

/// The target's items by guid, looked up one at a time: a cache would grow
/// with the rows merged. The statement is held, not taken from rusqlite's
/// cache: that clears its bindings after each use, which makes SQLite plan
/// a `guid IS ?1` query again every time (measured: half of a whole
/// history's merge).
pub(super) struct Sections<'c> {
    stmt: Statement<'c>,
    db: &'c Path,
}

impl<'c> Sections<'c> {
    pub(super) fn new(conn: &'c Connection, db: &'c Path) -> Result<Sections<'c>, PlexDbError> {
        let stmt = conn
            .prepare(
                "SELECT library_section_id FROM metadata_items WHERE guid IS ?1
                 ORDER BY deleted_at IS NOT NULL, id LIMIT 1",
            )
            .map_err(|e| PlexDbError::sqlite(db, e))?;
        Ok(Sections { stmt, db })
    }

    /// `metadata_items.library_section_id` of the item with `guid` (a live
    /// one first, then the lowest id); `Some(None)`: the item exists
    /// without a section (a playlist).
    pub(super) fn of(&mut self, guid: &Value) -> Result<Option<Option<i64>>, PlexDbError> {
        self.stmt
            .query_row([guid], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map_err(|e| PlexDbError::sqlite(self.db, e))
    }
}

/// The distinct guids of merged rows the target has no item for, kept in a
/// private temporary SQLite DB: past its page cache it spills to a
/// temporary file, so memory stays flat however many there are (every one,
/// were home's and the target's libraries unrelated).
pub(super) struct MissingGuids {
    conn: Connection,
    /// The target, which errors are about.
    db: std::path::PathBuf,
}

impl MissingGuids {
    pub(super) fn new(db: &Path) -> Result<MissingGuids, PlexDbError> {
        // An empty name: a private on-disk DB, deleted when closed.
        Connection::open("")
            .and_then(|conn| {
                conn.execute_batch("CREATE TABLE guids(key TEXT PRIMARY KEY) WITHOUT ROWID")?;
                Ok(conn)
            })
            .map(|conn| MissingGuids {
                conn,
                db: db.to_path_buf(),
            })
            .map_err(|e| PlexDbError::sqlite(db, e))
    }

    pub(super) fn insert(&self, guid: &Value) -> Result<(), PlexDbError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO guids(key) VALUES (?1)")
            .and_then(|mut s| s.execute([key_text(guid)]))
            .map(drop)
            .map_err(|e| PlexDbError::sqlite(&self.db, e))
    }

    pub(super) fn count(&self) -> Result<u64, PlexDbError> {
        self.conn
            .query_row("SELECT count(*) FROM guids", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| PlexDbError::sqlite(&self.db, e))
    }
}
