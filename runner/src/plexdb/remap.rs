//! Path remapping: home paths → instance paths, by whole leading components.
//!
//! Rewrites `section_locations.root_path`, `media_parts.file`, absolute
//! `directories.path` (relative ones follow their location) and
//! `media_streams.url` when it is a `file://` URL: matched on its decoded
//! path, so a subtitle moves with its media, and written back in the form
//! it was stored in, percent-encoded or raw (see [`super::file_url::UrlForm`];
//! URLs that show no form follow the DB's others). The longest matching
//! `from` wins and each value is mapped at most once. Everything happens in
//! one transaction, after a consistent backup taken under the same write
//! lock.
//!
//! The matching runs in Rust, inside SQLite, as a SQL function: one pass
//! per table, no `LIKE` (case-insensitive, `_`/`%` wildcards) and no
//! `REPLACE` (which rewrites substrings anywhere).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::file_url::{FILE_URL_SCHEME, UrlForm};
use super::paths::{Mapper, PathMapping};
use super::{
    PlexDbError, backup_path, open_for_write, open_plex_read_only, open_read_only, sync_dir,
};

/// The suffix of the backups `apply` takes.
const BACKUP_PURPOSE: &str = "pre-remap";

/// What a value in a column is.
#[derive(Clone, Copy)]
enum Kind {
    Path,
    FileUrl,
}

/// The columns that hold paths (plex.md). None of these tables carries a
/// trigger that needs Plex's own SQLite modules; [`refuse_unsafe_triggers`]
/// makes sure of that on the actual file.
const TARGETS: [(&str, &str, Kind); 4] = [
    ("section_locations", "root_path", Kind::Path),
    ("media_parts", "file", Kind::Path),
    ("directories", "path", Kind::Path),
    ("media_streams", "url", Kind::FileUrl),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemapReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// The copy taken before writing (None on a dry run).
    pub backup: Option<PathBuf>,
    /// One entry per mapping, in the caller's order.
    pub mappings: Vec<MappingCount>,
    pub total_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingCount {
    pub from: String,
    pub to: String,
    /// Rows changed per `table.column`, every target listed (0 included).
    pub rows: BTreeMap<String, u64>,
    pub total: u64,
}

impl RemapReport {
    /// Mappings that matched nothing (likely a typo in `from`).
    pub fn unused(&self) -> impl Iterator<Item = &MappingCount> {
        self.mappings.iter().filter(|m| m.total == 0)
    }
}

/// Counts the rows `apply` would change; writes nothing.
pub fn dry_run(db: &Path, mappings: &[PathMapping]) -> Result<RemapReport, PlexDbError> {
    let mapper = Mapper::new(mappings)?;
    let conn = open_plex_read_only(db)?;
    let mapper = Arc::new(mapper.with_neutral_urls(db_url_form(&conn, db)?));
    register_functions(&conn, &mapper).map_err(|e| PlexDbError::sqlite(db, e))?;
    let mut report = empty_report(mappings, true);
    count_all(&conn, db, &mut report)?;
    Ok(report)
}

/// Applies `mappings` to `db` after backing it up into `backup_dir`.
/// All or nothing: any failure rolls the whole remap back.
pub fn apply(
    db: &Path,
    mappings: &[PathMapping],
    backup_dir: &Path,
) -> Result<RemapReport, PlexDbError> {
    let mapper = Mapper::new(mappings)?;
    // Check the file is a Plex DB before taking any lock on it.
    drop(open_plex_read_only(db)?);
    let mut conn = open_for_write(db)?;
    let sqlite = |e| PlexDbError::sqlite(db, e);
    // Rewriting 456k paths touches most of the file index: 128 MiB of
    // cache holds it (as fast as 256 MiB at the user's size, 100 MB less).
    conn.execute_batch("PRAGMA cache_size = -131072")
        .map_err(sqlite)?;
    refuse_unsafe_triggers(&conn, db)?;

    // The write lock from here to commit, so the backup is exactly the
    // state the remap starts from. SQLite cannot back up from a connection
    // holding a write transaction, so a second connection reads the copy:
    // readers are not blocked by a writer that has not written yet.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let backup = backup_into(&open_read_only(db)?, db, backup_dir)?;
    // Read under the lock too: the count and the update see the same form.
    let mapper = Arc::new(mapper.with_neutral_urls(db_url_form(&tx, db)?));
    register_functions(&tx, &mapper).map_err(sqlite)?;

    let mut report = empty_report(mappings, false);
    report.backup = Some(backup);
    count_all(&tx, db, &mut report)?;
    for (table, column, kind) in TARGETS {
        let expected: u64 = report
            .mappings
            .iter()
            .map(|m| m.rows[&target_name(table, column)])
            .sum();
        let changed = tx
            .execute(&update_sql(table, column, kind), [])
            .map_err(sqlite)? as u64;
        // The count and the update use the same function on the same
        // snapshot: a difference means a bug, and nothing gets committed.
        if changed != expected {
            return Err(PlexDbError::RemapAborted {
                path: db.to_path_buf(),
                detail: format!("{table}.{column}: updated {changed} rows, counted {expected}"),
            });
        }
    }
    tx.commit().map_err(sqlite)?;
    for unused in report.unused() {
        tracing::warn!(from = %unused.from, to = %unused.to, "path mapping matched no row");
    }
    tracing::info!(rows = report.total_rows, db = %db.display(), "paths remapped");
    Ok(report)
}

/// Puts back the DB as it was before the first `apply` that left a backup
/// in `backup_dir`, and forgets later backups. A remap whose process died
/// after committing but before its caller recorded it is then undone, so
/// mappings apply exactly once. Returns the backup used, if any.
pub fn restore_first_backup(backup_dir: &Path, db: &Path) -> Result<Option<PathBuf>, PlexDbError> {
    let entries = match std::fs::read_dir(backup_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PlexDbError::io(backup_dir, e)),
    };
    let mut backups = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PlexDbError::io(backup_dir, e))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == BACKUP_PURPOSE) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| PlexDbError::io(&path, e))?;
            backups.push((modified, path));
        }
    }
    // Oldest first; names break ties (two backups in one second).
    backups.sort();
    let Some((_, first)) = backups.first() else {
        return Ok(None);
    };
    // Beside `db`, so the rename below cannot cross filesystems.
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let restoring = db.with_file_name(format!(".{name}.restoring"));
    std::fs::copy(first, &restoring)
        .and_then(|_| std::fs::File::open(&restoring)?.sync_all())
        .map_err(|e| PlexDbError::io(&restoring, e))?;
    // The backup is a single file: a WAL left beside `db` belongs to the
    // remapped state and must not be replayed onto it.
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PlexDbError::io(Path::new(&side), e));
            }
            _ => {}
        }
    }
    std::fs::rename(&restoring, db).map_err(|e| PlexDbError::io(db, e))?;
    if let Some(parent) = db.parent() {
        sync_dir(parent)?;
    }
    for (_, later) in &backups[1..] {
        std::fs::remove_file(later).map_err(|e| PlexDbError::io(later, e))?;
    }
    Ok(Some(first.clone()))
}

fn empty_report(mappings: &[PathMapping], dry_run: bool) -> RemapReport {
    let rows: BTreeMap<String, u64> = TARGETS
        .iter()
        .map(|(t, c, _)| (target_name(t, c), 0))
        .collect();
    let mappings = mappings
        .iter()
        .map(|m| MappingCount {
            from: m.from.clone(),
            to: m.to.clone(),
            rows: rows.clone(),
            total: 0,
        })
        .collect();
    RemapReport {
        dry_run,
        backup: None,
        mappings,
        total_rows: 0,
    }
}

fn count_all(conn: &Connection, db: &Path, report: &mut RemapReport) -> Result<(), PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    for (table, column, kind) in TARGETS {
        let (rule, filter) = (rule_call(column, kind), prefilter(column, kind));
        let sql = format!(
            "SELECT {rule}, count(*) FROM {table} WHERE {filter} AND {rule} IS NOT NULL GROUP BY 1"
        );
        let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as u64))
            })
            .map_err(sqlite)?;
        for row in rows {
            let (index, count) = row.map_err(sqlite)?;
            let mapping = &mut report.mappings[index];
            *mapping.rows.entry(target_name(table, column)).or_default() += count;
            mapping.total += count;
            report.total_rows += count;
        }
    }
    Ok(())
}

fn update_sql(table: &str, column: &str, kind: Kind) -> String {
    let new_value = match kind {
        Kind::Path => format!("plexburst_map_path({column})"),
        Kind::FileUrl => format!("plexburst_map_url({column})"),
    };
    let (rule, filter) = (rule_call(column, kind), prefilter(column, kind));
    format!("UPDATE {table} SET {column} = {new_value} WHERE {filter} AND {rule} IS NOT NULL")
}

/// The SQL expression giving the index of the mapping for a value, or NULL.
fn rule_call(column: &str, kind: Kind) -> String {
    match kind {
        Kind::Path => format!("plexburst_path_rule({column})"),
        Kind::FileUrl => format!("plexburst_url_rule({column})"),
    }
}

/// A cheap SQL test that skips rows no mapping can touch (relative paths,
/// non-file URLs) without calling into Rust.
fn prefilter(column: &str, kind: Kind) -> String {
    match kind {
        Kind::Path => format!("substr({column}, 1, 1) = '/'"),
        Kind::FileUrl => format!(
            "substr({column}, 1, {}) = '{FILE_URL_SCHEME}'",
            FILE_URL_SCHEME.len()
        ),
    }
}

/// The form the DB's `file://` URLs are written in (see [`UrlForm::of_db`]).
fn db_url_form(conn: &Connection, db: &Path) -> Result<UrlForm, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    let sql = format!(
        "SELECT substr(url, {}) FROM media_streams WHERE typeof(url) = 'text' AND {}",
        FILE_URL_SCHEME.len() + 1,
        prefilter("url", Kind::FileUrl)
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
    let forms: Vec<Option<UrlForm>> = stmt
        .query_map([], |r| Ok(UrlForm::of(&r.get::<_, String>(0)?)))
        .map_err(sqlite)?
        .collect::<Result<_, _>>()
        .map_err(sqlite)?;
    Ok(UrlForm::of_db(forms))
}

fn target_name(table: &str, column: &str) -> String {
    format!("{table}.{column}")
}

/// `plexburst_{path,url}_rule(text)` → mapping index or NULL, and
/// `plexburst_map_{path,url}(text)` → mapped text (unchanged if no rule).
fn register_functions(conn: &Connection, mapper: &Arc<Mapper>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_DIRECTONLY;
    type MapFn = fn(&Mapper, &str) -> Option<(usize, String)>;
    let kinds: [(&str, MapFn); 2] = [("path", Mapper::map_path), ("url", Mapper::map_file_url)];
    for (kind, map) in kinds {
        let m = Arc::clone(mapper);
        conn.create_scalar_function(
            format!("plexburst_{kind}_rule").as_str(),
            1,
            flags,
            move |ctx| {
                let value: Option<String> = ctx.get(0)?;
                Ok(value.and_then(|v| map(&m, &v)).map(|(i, _)| i as i64))
            },
        )?;
        let m = Arc::clone(mapper);
        conn.create_scalar_function(
            format!("plexburst_map_{kind}").as_str(),
            1,
            flags,
            move |ctx| {
                let value: Option<String> = ctx.get(0)?;
                Ok(value.map(|v| map(&m, &v).map(|(_, mapped)| mapped).unwrap_or(v)))
            },
        )?;
    }
    Ok(())
}

/// Refuses to write a target table that has a trigger touching a virtual
/// table: in a real Plex DB those triggers feed the `_icu` FTS tables and
/// would fail (or worse, half-run) under stock SQLite.
fn refuse_unsafe_triggers(conn: &Connection, db: &Path) -> Result<(), PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    let mut stmt = conn
        .prepare("SELECT lower(name) FROM sqlite_schema WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'")
        .map_err(sqlite)?;
    let virtual_tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(sqlite)?
        .collect::<Result<_, _>>()
        .map_err(sqlite)?;
    let mut stmt = conn
        .prepare("SELECT name, tbl_name, lower(coalesce(sql, '')) FROM sqlite_schema WHERE type = 'trigger'")
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(sqlite)?;
    for row in rows {
        let (trigger, table, sql) = row.map_err(sqlite)?;
        let targeted = TARGETS
            .iter()
            .any(|(t, _, _)| t.eq_ignore_ascii_case(&table));
        if targeted && virtual_tables.iter().any(|v| sql.contains(v.as_str())) {
            return Err(PlexDbError::UnsafeTrigger {
                path: db.to_path_buf(),
                trigger,
                table,
            });
        }
    }
    Ok(())
}

/// Copies the DB as `conn` sees it into a new file in `dir` (one backup
/// step: we hold the write lock anyway), then makes its name durable.
fn backup_into(conn: &Connection, db: &Path, dir: &Path) -> Result<PathBuf, PlexDbError> {
    let target = backup_path(db, dir, BACKUP_PURPOSE)?;
    super::copy::copy_connection(conn, db, &target)?;
    sync_dir(dir)?;
    Ok(target)
}
