//! Repair by recovery: copy whatever is readable into a new file, check
//! it, and only then swap it in, keeping the original as a backup.
//!
//! SQLite's `.recover` lives in the `sqlite3` shell, not in the library
//! rusqlite bundles, and Debian's `sqlite3` (3.40) cannot run it (its
//! library lacks `sqlite_dbpage`). So the salvage is done here with the
//! bundled SQLite: the schema is rebuilt from `sqlite_schema`, and each
//! table is copied by rowid ranges; a range that cannot be read is split in
//! two until the damaged rows are isolated, so one bad page costs the rows
//! on it and not the rest of the table (where `.dump` stops at the first
//! error). Indexes are rebuilt from the copied rows, those under Plex's
//! collations with the same collations, and the planner's statistics
//! (`sqlite_stat1`) are carried over. Virtual tables,
//! triggers and views are carried over as schema rows, verbatim, because
//! stock SQLite cannot instantiate Plex's modules.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::integrity::{self, IntegrityReport};
use super::{
    PlexDbError, backup_path, collation, first_line, is_closed_wal_db, open_read_only, quote_ident,
    sync_dir,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The damaged original (its `-wal`, if any, beside it with `-wal`).
    pub backup: PathBuf,
    pub tables: Vec<TableRecovery>,
    pub rows_recovered: u64,
    /// Rowid ranges that could not be read, over all tables.
    pub unreadable_ranges: u64,
    /// Rows counted in the damaged tables beyond those recovered.
    #[serde(default)]
    pub rows_missing: u64,
    /// The check the recovered file passed before being swapped in.
    pub integrity: IntegrityReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecovery {
    pub name: String,
    pub rows: u64,
    /// Ranges skipped because reading them failed (rows lost).
    pub unreadable_ranges: u64,
    /// Rows the damaged table counts beyond those recovered (lost).
    #[serde(default)]
    pub rows_missing: u64,
}

/// One `sqlite_schema` row of the damaged DB.
struct SchemaRow {
    kind: String,
    name: String,
    table: String,
    sql: String,
}

/// Rebuilds `db` by recovery. The original (and its WAL) is copied into
/// `backup_dir` first; the recovered file replaces `db` only after it
/// passes [`integrity::check`]. Any row that could not be read is reported,
/// and logged as a warning.
pub fn recover(db: &Path, backup_dir: &Path) -> Result<RepairReport, PlexDbError> {
    let failed = |detail: String| PlexDbError::RecoveryFailed {
        path: db.to_path_buf(),
        detail,
    };
    let source = open_read_only(db)?;
    let backup = back_up_files(db, backup_dir)?;

    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = dir.join(format!("{name}.recovering"));
    remove_if_present(&fresh)?;

    let result = salvage(&source, db, &fresh).and_then(|tables| {
        drop(source);
        std::fs::File::open(&fresh)
            .and_then(|f| f.sync_all())
            .map_err(|e| PlexDbError::io(&fresh, e))?;
        let integrity = integrity::check(&fresh, None)
            .map_err(|e| failed(format!("the recovered copy fails its check: {e}")))?;
        Ok((tables, integrity))
    });
    let (tables, integrity) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&fresh);
            return Err(e);
        }
    };

    // The old WAL belongs to the old file: applied to the new one it would
    // corrupt it. It is in the backup.
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&sibling(db, suffix))?;
    }
    std::fs::rename(&fresh, db).map_err(|e| PlexDbError::io(db, e))?;
    sync_dir(dir)?;

    let rows_recovered = tables.iter().map(|t| t.rows).sum();
    let unreadable_ranges = tables.iter().map(|t| t.unreadable_ranges).sum();
    let rows_missing = tables.iter().map(|t| t.rows_missing).sum();
    for t in tables
        .iter()
        .filter(|t| t.unreadable_ranges > 0 || t.rows_missing > 0)
    {
        tracing::warn!(table = %t.name, rows = t.rows, lost_ranges = t.unreadable_ranges,
            rows_missing = t.rows_missing, "rows lost in recovery");
    }
    tracing::warn!(db = %db.display(), backup = %backup.display(), rows_recovered, unreadable_ranges,
        rows_missing, "database rebuilt by recovery");
    Ok(RepairReport {
        backup,
        tables,
        rows_recovered,
        unreadable_ranges,
        rows_missing,
        integrity,
    })
}

/// Copies the file and its WAL as they are (the backup API would stop at
/// the damage); returns the main copy's path.
fn back_up_files(db: &Path, backup_dir: &Path) -> Result<PathBuf, PlexDbError> {
    let target = backup_path(db, backup_dir, "pre-repair")?;
    for suffix in ["", "-wal"] {
        let (from, to) = (sibling(db, suffix), sibling(&target, suffix));
        if suffix.is_empty() || from.exists() {
            std::fs::copy(&from, &to).map_err(|e| PlexDbError::io(&from, e))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(|e| PlexDbError::io(&to, e))?;
        }
    }
    sync_dir(backup_dir)?;
    Ok(target)
}

fn salvage(
    source: &Connection,
    db: &Path,
    fresh: &Path,
) -> Result<Vec<TableRecovery>, PlexDbError> {
    let failed = |detail: String| PlexDbError::RecoveryFailed {
        path: db.to_path_buf(),
        detail,
    };
    let schema = read_schema(source).map_err(|e| {
        failed(format!(
            "the schema is unreadable: {}",
            first_line(&e.to_string())
        ))
    })?;
    let pragma =
        |name: &str| source.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let (page_size, user_version, application_id) = (
        pragma("page_size"),
        pragma("user_version"),
        pragma("application_id"),
    );

    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let out =
        Connection::open_with_flags(fresh, flags).map_err(|e| PlexDbError::sqlite(fresh, e))?;
    let out_err = |e| PlexDbError::sqlite(fresh, e);
    // The damaged file is attached here: its schema is not trusted. Not in
    // defensive mode though: carrying its virtual tables, triggers and
    // views over needs `writable_schema` (below), which defensive mode
    // forbids; the rows written are the damaged file's own schema text,
    // never executed here.
    crate::plexdb::distrust_schema(&out).map_err(out_err)?;
    // The collated indexes are rebuilt under the collations Plex uses.
    collation::register(&out).map_err(out_err)?;
    if let Ok(size) = page_size {
        out.execute_batch(&format!("PRAGMA page_size = {size}"))
            .map_err(out_err)?;
    }
    // A scratch file until it is checked and synced: no syncs meanwhile.
    out.execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF")
        .map_err(out_err)?;
    let mut uri =
        url::Url::from_file_path(std::path::absolute(db).map_err(|e| PlexDbError::io(db, e))?)
            .map_err(|()| failed("the path cannot be written as a URI".into()))?;
    uri.set_query(Some(if is_closed_wal_db(db) {
        "immutable=1"
    } else {
        "mode=ro"
    }));
    out.execute("ATTACH ?1 AS damaged", [uri.as_str()])
        .map_err(out_err)?;
    // No enclosing transaction: once a read fails for damage, SQLite fails
    // every later read in the same transaction, so each copy statement
    // commits on its own.

    let ordinary = |row: &&SchemaRow| {
        row.kind == "table" && !row.name.starts_with("sqlite_") && !is_virtual(&row.sql)
    };
    for row in schema.iter().filter(ordinary) {
        out.execute_batch(&row.sql)
            .map_err(|e| failed(format!("cannot create table {:?}: {e}", row.name)))?;
    }
    let mut tables = Vec::new();
    for row in schema.iter().filter(ordinary) {
        tables.push(copy_table(&out, &row.name, db)?);
    }
    // AUTOINCREMENT counters, so that deleted ids are never reused.
    if schema.iter().any(|r| r.name == "sqlite_sequence") {
        out.execute_batch(
            "INSERT OR REPLACE INTO main.sqlite_sequence(name, seq)
             SELECT d.name, max(d.seq, coalesce((SELECT seq FROM main.sqlite_sequence m WHERE m.name = d.name), 0))
             FROM damaged.sqlite_sequence d",
        )
        .unwrap_or_else(|e| tracing::warn!(error = %e, "sqlite_sequence unreadable: ids restart from the highest recovered"));
    }
    for row in schema
        .iter()
        .filter(|r| r.kind == "index" && !r.sql.is_empty())
    {
        out.execute_batch(&row.sql)
            .map_err(|e| failed(format!("cannot rebuild index {:?}: {e}", row.name)))?;
    }
    copy_statistics(&out, &schema);
    // Verbatim schema rows for what stock SQLite cannot create itself.
    out.execute_batch("PRAGMA writable_schema = ON")
        .map_err(out_err)?;
    let carried = |r: &&SchemaRow| {
        (r.kind == "table" && is_virtual(&r.sql)) || matches!(r.kind.as_str(), "trigger" | "view")
    };
    for row in schema.iter().filter(carried) {
        out.execute(
            "INSERT INTO sqlite_schema(type, name, tbl_name, rootpage, sql) VALUES (?1, ?2, ?3, 0, ?4)",
            [&row.kind, &row.name, &row.table, &row.sql],
        )
        .map_err(|e| failed(format!("cannot carry over {} {:?}: {e}", row.kind, row.name)))?;
    }
    out.execute_batch("PRAGMA writable_schema = OFF")
        .map_err(out_err)?;
    for (name, value) in [
        ("user_version", user_version),
        ("application_id", application_id),
    ] {
        if let Ok(value) = value {
            out.execute_batch(&format!("PRAGMA {name} = {value}"))
                .map_err(out_err)?;
        }
    }
    out.execute_batch("DETACH damaged").map_err(out_err)?;
    out.close()
        .map_err(|(_, e)| PlexDbError::sqlite(fresh, e))?;
    Ok(tables)
}

/// Carries the planner's statistics over (Plex's queries were planned
/// with them; without them SQLite may pick other indexes). The table is
/// created from the damaged DB's own statement (`ANALYZE` would also add a
/// `sqlite_stat4` Plex's DBs lack); unreadable statistics are only a
/// warning.
fn copy_statistics(out: &Connection, schema: &[SchemaRow]) {
    let Some(stat1) = schema.iter().find(|r| r.name == "sqlite_stat1") else {
        return;
    };
    let copied = out.execute_batch(&format!(
        "PRAGMA writable_schema = ON; {}; PRAGMA writable_schema = OFF;
         INSERT INTO main.sqlite_stat1(tbl, idx, stat) SELECT tbl, idx, stat FROM damaged.sqlite_stat1;",
        stat1.sql
    ));
    if let Err(e) = copied {
        let _ = out.execute_batch("PRAGMA writable_schema = OFF");
        tracing::warn!(error = %e, "sqlite_stat1 not carried over: SQLite plans without Plex's statistics until the next ANALYZE");
    }
}

fn read_schema(source: &Connection) -> rusqlite::Result<Vec<SchemaRow>> {
    let mut stmt = source.prepare(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SchemaRow {
            kind: r.get(0)?,
            name: r.get(1)?,
            table: r.get(2)?,
            sql: r.get(3)?,
        })
    })?;
    rows.collect()
}

fn is_virtual(sql: &str) -> bool {
    sql.trim_start()
        .get(..20)
        .is_some_and(|s| s.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"))
}

/// Failed reads tolerated per table before the rest of its damaged ranges
/// are given up (bounds the splitting on a badly damaged or sparse table).
const FAILED_READS_PER_TABLE: u32 = 100_000;

/// Copies `damaged.<table>` into `main.<table>`: in one pass when every
/// page reads, else by rowid ranges, splitting any range whose read fails
/// for damage until the damage is isolated. Any other error (a full disk,
/// a constraint) fails the recovery.
fn copy_table(out: &Connection, table: &str, db: &Path) -> Result<TableRecovery, PlexDbError> {
    let quoted = quote_ident(table);
    let mut report = TableRecovery {
        name: table.to_string(),
        rows: 0,
        unreadable_ranges: 0,
        rows_missing: 0,
    };
    // One pass in B-tree order reads every cell, even those whose rowids
    // damage left out of order (real 1.41.3: 37..41 then 33..36), which a
    // range seek would skip without an error. `LIMIT -1` keeps SQLite from
    // its transfer shortcut, which would copy the damaged indexes as they
    // are instead of building them from the rows.
    let whole = out.execute(
        &format!("INSERT INTO main.{quoted} SELECT * FROM damaged.{quoted} NOT INDEXED LIMIT -1"),
        [],
    );
    match whole {
        Ok(rows) => {
            report.rows = rows as u64;
            return Ok(report);
        }
        Err(e) if is_damage(&e) => {}
        Err(e) => return Err(copy_failed(db, table, &e)),
    }
    copy_by_ranges(out, &quoted, db, &mut report)?;
    // Counting walks the B-tree without reading the rows: what it sees
    // beyond the rows copied was lost, and is said so.
    let counted = out.query_row(
        &format!("SELECT count(*) FROM damaged.{quoted} NOT INDEXED"),
        [],
        |r| r.get::<_, i64>(0),
    );
    if let Ok(counted) = counted {
        report.rows_missing = (counted as u64).saturating_sub(report.rows);
    }
    Ok(report)
}

fn copy_failed(db: &Path, table: &str, error: &rusqlite::Error) -> PlexDbError {
    PlexDbError::RecoveryFailed {
        path: db.to_path_buf(),
        detail: format!(
            "copying table {table:?}: {}",
            first_line(&error.to_string())
        ),
    }
}

/// The range-splitting copy of [`copy_table`].
fn copy_by_ranges(
    out: &Connection,
    quoted: &str,
    db: &Path,
    report: &mut TableRecovery,
) -> Result<(), PlexDbError> {
    let bounds = out
        .query_row(
            &format!("SELECT min(rowid), max(rowid) FROM damaged.{quoted}"),
            [],
            |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .unwrap_or((Some(i64::MIN), Some(i64::MAX)));
    let (low, high) = match bounds {
        (Some(low), Some(high)) if low <= high => (low, high),
        // Out of order: the bounds cannot be trusted.
        (Some(_), Some(_)) => (i64::MIN, i64::MAX),
        _ => return Ok(()),
    };
    let range = format!(
        "INSERT INTO main.{quoted} SELECT * FROM damaged.{quoted} WHERE rowid BETWEEN ?1 AND ?2"
    );
    // A one-row range by equality: a range scan would step on to the next
    // page, which may be the damaged one, and lose a readable row.
    let single =
        format!("INSERT INTO main.{quoted} SELECT * FROM damaged.{quoted} WHERE rowid = ?1");
    let mut failures = 0u32;
    // Ranges are popped in ascending order, so adjacent lost rows merge.
    let mut last_lost: Option<i64> = None;
    let mut pending = vec![(low, high)];
    while let Some((low, high)) = pending.pop() {
        // Each statement is atomic: a failed range leaves nothing behind.
        let copied = if low == high {
            out.execute(&single, [low])
        } else {
            out.execute(&range, [low, high])
        };
        let error = match copied {
            Ok(rows) => {
                report.rows += rows as u64;
                continue;
            }
            Err(e) if is_damage(&e) => e,
            Err(e) => return Err(copy_failed(db, &report.name, &e)),
        };
        failures += 1;
        if low < high && failures < FAILED_READS_PER_TABLE {
            let mid = low + ((high as i128 - low as i128) / 2) as i64;
            pending.push((mid + 1, high));
            pending.push((low, mid));
            continue;
        }
        tracing::debug!(table = %report.name, low, high, error = %error, "unreadable rows skipped");
        if last_lost.is_none_or(|prev| prev.checked_add(1) != Some(low)) {
            report.unreadable_ranges += 1;
        }
        last_lost = Some(high);
    }
    Ok(())
}

/// Errors that mean "these pages cannot be read".
fn is_damage(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase, SystemIoFailure};
    matches!(
        error.sqlite_error_code(),
        Some(DatabaseCorrupt | NotADatabase | SystemIoFailure)
    )
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), PlexDbError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PlexDbError::io(path, e)),
        _ => Ok(()),
    }
}
