//! Watch state made at home while the cloud run worked on a snapshot.
//!
//! The home server stays in use during a run: people watch, rate, skip.
//! The cloud result was built from a snapshot taken at `since`, so before it
//! replaces the home DB, what home recorded after `since` is copied into it:
//! `metadata_item_settings` (keyed by `guid` + `account_id`), the history in
//! `metadata_item_views`, and the `accounts` / `devices` rows they name.
//! None of these tables has an `_icu` trigger (plex.md), so stock SQLite
//! writes them; a trigger that needed Plex's modules would fail the write and
//! roll the whole merge back.
//!
//! Precedence, per (`guid`, `account_id`): a home row counts only if one of
//! its timestamps is after `since`; it then replaces the target's watch
//! columns unless the target's row is newer still (latest timestamp wins,
//! home wins ties). Home rows not touched since the snapshot never overwrite
//! anything. Deletions at home are not carried over. Merging twice changes
//! nothing the second time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

use super::{PlexDbError, ensure_plex_library, open_for_write, open_plex_read_only, quote_ident};

const SETTINGS: &str = "metadata_item_settings";
const VIEWS: &str = "metadata_item_views";

/// The columns a settings update copies (those present in both DBs).
const WATCH_COLUMNS: [&str; 10] = [
    "rating",
    "view_offset",
    "view_count",
    "last_viewed_at",
    "updated_at",
    "skip_count",
    "last_skipped_at",
    "changed_at",
    "extra_data",
    "last_rated_at",
];

/// A settings row's "last touched": the latest of these.
const STAMP_COLUMNS: [&str; 5] = [
    "updated_at",
    "changed_at",
    "last_viewed_at",
    "last_rated_at",
    "last_skipped_at",
];

/// What a merge did (or, for [`preview`], would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStateReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Only home rows touched after this unix second were considered.
    pub since: i64,
    /// Settings rows of the target given home's newer watch columns.
    pub settings_updated: u64,
    /// Settings rows the target lacked.
    pub settings_inserted: u64,
    /// Home rows already equal in the target (e.g. a second merge).
    pub settings_unchanged: u64,
    /// Home rows not applied because the target's row is newer.
    pub settings_kept_newer: u64,
    pub views_inserted: u64,
    /// History rows the target already had (same guid, account, viewed_at).
    pub views_present: u64,
    pub accounts_added: u64,
    pub devices_added: u64,
    /// Distinct guids of merged rows with no `metadata_items` row in the
    /// target: kept anyway, Plex matches watch state by guid.
    pub guids_not_found: u64,
}

impl WatchStateReport {
    /// Rows written (or that would be).
    pub fn changes(&self) -> u64 {
        self.settings_updated
            + self.settings_inserted
            + self.views_inserted
            + self.accounts_added
            + self.devices_added
    }
}

/// Copies into `into` the watch state `home` recorded after `since` (unix
/// seconds), in one transaction. `home` is opened read-only.
pub fn merge(home: &Path, into: &Path, since: i64) -> Result<WatchStateReport, PlexDbError> {
    refuse_same_file(home, into)?;
    let source = read_home(home, into, since)?;
    let mut conn = open_for_write(into)?;
    ensure_plex_library(&conn, into)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| PlexDbError::sqlite(into, e))?;
    let report = apply(&source, &tx, into, since, true)?;
    tx.commit().map_err(|e| PlexDbError::sqlite(into, e))?;
    tracing::info!(
        settings_updated = report.settings_updated,
        settings_inserted = report.settings_inserted,
        views_inserted = report.views_inserted,
        db = %into.display(),
        "watch state merged"
    );
    Ok(report)
}

/// What [`merge`] would do; writes nothing to either DB.
pub fn preview(home: &Path, into: &Path, since: i64) -> Result<WatchStateReport, PlexDbError> {
    refuse_same_file(home, into)?;
    let source = read_home(home, into, since)?;
    let conn = open_plex_read_only(into)?;
    apply(&source, &conn, into, since, false)
}

fn refuse_same_file(home: &Path, into: &Path) -> Result<(), PlexDbError> {
    let same = match (std::fs::canonicalize(home), std::fs::canonicalize(into)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(PlexDbError::Io {
            path: into.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "cannot merge a database's watch state into itself",
            ),
        });
    }
    Ok(())
}

/// Rows of one table, with the column names they follow.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }

    fn get(&self, row: &[Value], column: &str) -> Value {
        self.index(column)
            .map(|i| row[i].clone())
            .unwrap_or(Value::Null)
    }
}

/// Rows by id, each with the column names its values follow.
type RowsById = BTreeMap<i64, (Vec<String>, Vec<Value>)>;

/// What home recorded after `since`, with the rows it may need to copy.
struct HomeState {
    /// One row per (guid, account_id), the latest, with its stamp last.
    settings: Rows,
    views: Rows,
    accounts: RowsById,
    devices: RowsById,
}

fn read_home(home: &Path, into: &Path, since: i64) -> Result<HomeState, PlexDbError> {
    let target = open_plex_read_only(into)?;
    let conn = open_plex_read_only(home)?;
    let sqlite = |e| PlexDbError::sqlite(home, e);
    // One read transaction: every row comes from the same state.
    conn.execute_batch("BEGIN").map_err(sqlite)?;

    let latest = latest_sql(&columns(&conn, home, SETTINGS)?);
    let settings_columns = shared_columns(&conn, home, &target, into, SETTINGS)?;
    for key in ["guid", "account_id"] {
        if !settings_columns.iter().any(|c| c == key) {
            return Err(missing_column(home, SETTINGS, key));
        }
    }
    let mut settings = select(
        &conn,
        home,
        &settings_columns,
        &format!("{latest} AS plexburst_latest"),
        SETTINGS,
        &format!("{latest} > ?1 ORDER BY id"),
        since,
    )?;
    // Keep the latest row per key, so duplicates at home cannot make a
    // preview and a merge disagree.
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    let mut kept: Vec<Vec<Value>> = Vec::new();
    for row in std::mem::take(&mut settings.rows) {
        let key = (
            key_text(&settings.get(&row, "guid")),
            key_text(&settings.get(&row, "account_id")),
        );
        match by_key.get(&key) {
            Some(&i) if stamp(&kept[i]) > stamp(&row) => {}
            Some(&i) => kept[i] = row,
            None => {
                by_key.insert(key, kept.len());
                kept.push(row);
            }
        }
    }
    settings.rows = kept;

    let views_columns = shared_columns(&conn, home, &target, into, VIEWS)?;
    for key in ["guid", "account_id", "viewed_at"] {
        if !views_columns.iter().any(|c| c == key) {
            return Err(missing_column(home, VIEWS, key));
        }
    }
    let views = select(
        &conn,
        home,
        &views_columns,
        "NULL",
        VIEWS,
        "viewed_at > ?1 ORDER BY id",
        since,
    )?;

    let mut account_ids: HashSet<i64> = HashSet::new();
    for (rows, column) in [(&settings, "account_id"), (&views, "account_id")] {
        account_ids.extend(
            rows.rows
                .iter()
                .filter_map(|r| as_i64(&rows.get(r, column))),
        );
    }
    let device_ids: HashSet<i64> = views
        .rows
        .iter()
        .filter_map(|r| as_i64(&views.get(r, "device_id")))
        .collect();
    let accounts = rows_by_id(&conn, home, &target, into, "accounts", &account_ids)?;
    let devices = rows_by_id(&conn, home, &target, into, "devices", &device_ids)?;
    Ok(HomeState {
        settings,
        views,
        accounts,
        devices,
    })
}

/// Applies (or, with `write` false, only counts) `home` onto `conn`.
fn apply(
    home: &HomeState,
    conn: &Connection,
    into: &Path,
    since: i64,
    write: bool,
) -> Result<WatchStateReport, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(into, e);
    let mut report = WatchStateReport {
        dry_run: !write,
        since,
        ..WatchStateReport::default()
    };
    let mut sections = SectionsByGuid::default();
    let mut guids_missing: HashSet<String> = HashSet::new();
    let mut accounts_used: HashSet<i64> = HashSet::new();
    let mut devices_used: HashSet<i64> = HashSet::new();

    let settings = &home.settings;
    let target_latest = latest_sql(&columns(conn, into, SETTINGS)?);
    let watch: Vec<&str> = WATCH_COLUMNS
        .into_iter()
        .filter(|c| settings.index(c).is_some())
        .collect();
    let watch_list = watch
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    // `+account_id`: without statistics SQLite picks the account index (one
    // account holds nearly every row: a scan per lookup, minutes at the
    // user's size); the guid index finds the one or two rows at once.
    let mut find = conn
        .prepare(&format!(
            "SELECT id, {target_latest}, {watch_list} FROM {SETTINGS} WHERE guid IS ?1 AND +account_id IS ?2"
        ))
        .map_err(sqlite)?;
    let assignments = watch
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", quote_ident(c), i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let update_sql = format!("UPDATE {SETTINGS} SET {assignments} WHERE id = ?1");
    let insert_settings = insert_sql(SETTINGS, &settings.columns);
    for row in &settings.rows {
        let (guid, account) = (settings.get(row, "guid"), settings.get(row, "account_id"));
        let home_values: Vec<Value> = watch.iter().map(|c| settings.get(row, c)).collect();
        let found: Vec<(i64, i64, Vec<Value>)> = find
            .query_map(params![guid, account], |r| {
                let values = (0..watch.len())
                    .map(|i| r.get::<_, Value>(i + 2))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0), values))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let newest_target = found.iter().map(|(_, latest, _)| *latest).max();
        match newest_target {
            None => {
                if write {
                    conn.execute(
                        &insert_settings,
                        params_from_iter(row[..settings.columns.len()].iter()),
                    )
                    .map_err(sqlite)?;
                }
                report.settings_inserted += 1;
            }
            Some(latest) if latest > stamp(row) => {
                report.settings_kept_newer += 1;
                continue;
            }
            Some(_) => {
                let stale: Vec<i64> = found
                    .iter()
                    .filter(|(_, _, values)| *values != home_values)
                    .map(|(id, _, _)| *id)
                    .collect();
                if stale.is_empty() {
                    report.settings_unchanged += 1;
                    continue;
                }
                if write {
                    for id in stale {
                        let values =
                            std::iter::once(Value::Integer(id)).chain(home_values.iter().cloned());
                        conn.execute(&update_sql, params_from_iter(values))
                            .map_err(sqlite)?;
                    }
                }
                report.settings_updated += 1;
            }
        }
        accounts_used.extend(as_i64(&account));
        if sections.lookup(conn, into, &guid)?.is_none() {
            guids_missing.insert(key_text(&guid));
        }
    }
    drop(find);

    let views = &home.views;
    // The guid index, as above (not the account's or the timestamp's).
    let mut present = conn
        .prepare(&format!(
            "SELECT 1 FROM {VIEWS} WHERE guid IS ?1 AND +account_id IS ?2 AND +viewed_at IS ?3 LIMIT 1"
        ))
        .map_err(sqlite)?;
    let insert_view = insert_sql(VIEWS, &views.columns);
    let section_index = views.index("library_section_id");
    let mut inserted: HashSet<(String, String, String)> = HashSet::new();
    for row in &views.rows {
        let (guid, account, viewed_at) = (
            views.get(row, "guid"),
            views.get(row, "account_id"),
            views.get(row, "viewed_at"),
        );
        let key = (key_text(&guid), key_text(&account), key_text(&viewed_at));
        let exists = inserted.contains(&key)
            || present
                .exists(params![guid, account, viewed_at])
                .map_err(sqlite)?;
        if exists {
            report.views_present += 1;
            continue;
        }
        let section = sections.lookup(conn, into, &guid)?;
        if section.is_none() {
            guids_missing.insert(key_text(&guid));
        }
        if write {
            let mut values = row[..views.columns.len()].to_vec();
            if let (Some(i), Some(Some(id))) = (section_index, section) {
                values[i] = Value::Integer(id);
            }
            conn.execute(&insert_view, params_from_iter(values.iter()))
                .map_err(sqlite)?;
        }
        inserted.insert(key);
        report.views_inserted += 1;
        accounts_used.extend(as_i64(&account));
        devices_used.extend(as_i64(&views.get(row, "device_id")));
    }
    drop(present);

    report.accounts_added = copy_missing(
        conn,
        into,
        "accounts",
        &home.accounts,
        &accounts_used,
        write,
    )?;
    report.devices_added =
        copy_missing(conn, into, "devices", &home.devices, &devices_used, write)?;
    report.guids_not_found = guids_missing.len() as u64;
    Ok(report)
}

/// `metadata_items.library_section_id` by guid in the target, cached.
/// `Some(None)`: the item exists without a section (a playlist).
#[derive(Default)]
struct SectionsByGuid(HashMap<String, Option<Option<i64>>>);

impl SectionsByGuid {
    fn lookup(
        &mut self,
        conn: &Connection,
        db: &Path,
        guid: &Value,
    ) -> Result<Option<Option<i64>>, PlexDbError> {
        let key = key_text(guid);
        if let Some(found) = self.0.get(&key) {
            return Ok(*found);
        }
        // A live item first, then the lowest id.
        let found = conn
            .prepare_cached(
                "SELECT library_section_id FROM metadata_items WHERE guid IS ?1
                 ORDER BY deleted_at IS NOT NULL, id LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([guid], |r| r.get::<_, Option<i64>>(0))
                    .optional()
            })
            .map_err(|e| PlexDbError::sqlite(db, e))?;
        self.0.insert(key, found);
        Ok(found)
    }
}

/// Copies the rows of `wanted` ids that the target lacks; returns how many.
fn copy_missing(
    conn: &Connection,
    into: &Path,
    table: &str,
    home_rows: &RowsById,
    wanted: &HashSet<i64>,
    write: bool,
) -> Result<u64, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(into, e);
    let mut added = 0;
    for (id, (columns, values)) in home_rows {
        if !wanted.contains(id) {
            continue;
        }
        let exists = conn
            .prepare_cached(&format!(
                "SELECT 1 FROM {} WHERE id = ?1",
                quote_ident(table)
            ))
            .and_then(|mut s| s.exists([id]))
            .map_err(sqlite)?;
        if exists {
            continue;
        }
        if write {
            conn.execute(&insert_sql(table, columns), params_from_iter(values.iter()))
                .map_err(sqlite)?;
        }
        added += 1;
    }
    Ok(added)
}

/// Home rows of `table` with the given ids that the target lacks, with
/// their `id`, in the columns both DBs have.
fn rows_by_id(
    conn: &Connection,
    home: &Path,
    target: &Connection,
    into: &Path,
    table: &str,
    ids: &HashSet<i64>,
) -> Result<RowsById, PlexDbError> {
    let mut found = BTreeMap::new();
    // A DB without the table (devices in an old schema) has nothing to copy.
    if ids.is_empty()
        || columns(conn, home, table)?.is_empty()
        || columns(target, into, table)?.is_empty()
    {
        return Ok(found);
    }
    let mut shared = shared_columns(conn, home, target, into, table)?;
    shared.insert(0, "id".into());
    let list = column_list(&shared);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {list} FROM {} WHERE id = ?1",
            quote_ident(table)
        ))
        .map_err(|e| PlexDbError::sqlite(home, e))?;
    for id in ids {
        let row = stmt
            .query_row([id], |r| {
                (0..shared.len())
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .optional()
            .map_err(|e| PlexDbError::sqlite(home, e))?;
        if let Some(row) = row {
            found.insert(*id, (shared.clone(), row));
        }
    }
    Ok(found)
}

/// `SELECT <columns>, <extra> FROM table WHERE <filter>` with `?1` = since.
fn select(
    conn: &Connection,
    path: &Path,
    columns: &[String],
    extra: &str,
    table: &str,
    filter: &str,
    since: i64,
) -> Result<Rows, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(path, e);
    let sql = format!(
        "SELECT {}, {extra} FROM {} WHERE {filter}",
        column_list(columns),
        quote_ident(table)
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
    let width = columns.len() + 1;
    let rows = stmt
        .query_map([since], |r| {
            (0..width)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite)?;
    Ok(Rows {
        columns: columns.to_vec(),
        rows,
    })
}

/// The latest-timestamp value carried last in a settings row.
fn stamp(row: &[Value]) -> i64 {
    row.last().and_then(as_i64).unwrap_or(0)
}

/// SQL for a row's latest stamp among the [`STAMP_COLUMNS`] it has.
fn latest_sql(columns: &[String]) -> String {
    let parts: Vec<String> = STAMP_COLUMNS
        .iter()
        .filter(|c| columns.iter().any(|have| have == *c))
        .map(|c| format!("coalesce({}, 0)", quote_ident(c)))
        .collect();
    match parts.len() {
        0 => "0".into(),
        // SQLite's max() with one argument is the aggregate.
        1 => parts[0].clone(),
        _ => format!("max({})", parts.join(", ")),
    }
}

fn columns(conn: &Connection, path: &Path, table: &str) -> Result<Vec<String>, PlexDbError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(|e| PlexDbError::sqlite(path, e))?;
    stmt.query_map([table], |r| r.get(0))
        .map_err(|e| PlexDbError::sqlite(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| PlexDbError::sqlite(path, e))
}

/// The columns of `table` both DBs have, `id` excluded, in home's order.
fn shared_columns(
    home: &Connection,
    home_path: &Path,
    target: &Connection,
    into: &Path,
    table: &str,
) -> Result<Vec<String>, PlexDbError> {
    let theirs = columns(target, into, table)?;
    if theirs.is_empty() {
        return Err(PlexDbError::NotPlexLibrary {
            path: into.to_path_buf(),
            table: static_name(table),
        });
    }
    Ok(columns(home, home_path, table)?
        .into_iter()
        .filter(|c| c != "id" && theirs.contains(c))
        .collect())
}

fn static_name(table: &str) -> &'static str {
    [SETTINGS, VIEWS, "accounts", "devices"]
        .into_iter()
        .find(|t| *t == table)
        .unwrap_or("metadata_item_settings")
}

fn missing_column(path: &Path, table: &str, column: &str) -> PlexDbError {
    PlexDbError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("table {table} has no column {column:?} in both databases"),
        ),
    }
}

fn insert_sql(table: &str, columns: &[String]) -> String {
    let marks = (1..=columns.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {}({}) VALUES({marks})",
        quote_ident(table),
        column_list(columns)
    )
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => Some(*i),
        Value::Real(f) => Some(*f as i64),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

/// A value as a map key (NULL and text never collide with numbers).
fn key_text(value: &Value) -> String {
    match value {
        Value::Null => "n:".into(),
        Value::Integer(i) => format!("i:{i}"),
        Value::Real(f) => format!("r:{f}"),
        Value::Text(t) => format!("t:{t}"),
        Value::Blob(b) => format!("b:{b:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const SINCE: i64 = 1_800_000_000;

    /// The real `CREATE TABLE` statements of the tables a merge touches,
    /// from the schema dump in the shared reference folder.
    fn plex_db(path: &Path) -> Connection {
        let shared = std::env::var_os("PLEX_BURST_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
        let dump = std::fs::read_to_string(shared.join("reference/plex-library-schema.sql"))
            .expect("schema dump readable");
        let conn = Connection::open(path).unwrap();
        for table in [
            "library_sections",
            "section_locations",
            "metadata_items",
            "media_parts",
            SETTINGS,
            VIEWS,
            "accounts",
            "devices",
        ] {
            let create = dump
                .lines()
                .find(|l| l.starts_with(&format!("CREATE TABLE IF NOT EXISTS \"{table}\" ")))
                .unwrap_or_else(|| panic!("{table} in the dump"));
            conn.execute_batch(create).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO accounts(id, name) VALUES (1, 'owner');
             INSERT INTO devices(id, identifier, name) VALUES (1, 'dev-1', 'TV');
             INSERT INTO library_sections(id, name, section_type) VALUES (1, 'Movies', 1), (2, 'Shows', 2);
             INSERT INTO metadata_items(id, library_section_id, metadata_type, guid, title)
               VALUES (1, 1, 1, 'plex://movie/a', 'A'), (2, 1, 1, 'plex://movie/b', 'B'),
                      (3, 2, 4, 'plex://episode/c', 'C');",
        )
        .unwrap();
        conn
    }

    fn setting(conn: &Connection, account: i64, guid: &str, count: i64, at: i64) {
        conn.execute(
            "INSERT INTO metadata_item_settings(account_id, guid, view_count, view_offset, last_viewed_at,
                created_at, updated_at, changed_at) VALUES (?1, ?2, ?3, 0, ?4, ?4, ?4, 0)",
            params![account, guid, count, at],
        )
        .unwrap();
    }

    fn view(conn: &Connection, account: i64, guid: &str, at: i64, section: i64, device: i64) {
        conn.execute(
            "INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title,
                viewed_at, device_id) VALUES (?1, ?2, 1, ?3, 't', ?4, ?5)",
            params![account, guid, section, at, device],
        )
        .unwrap();
    }

    fn view_count(conn: &Connection, account: i64, guid: &str) -> Vec<i64> {
        conn.prepare(
            "SELECT view_count FROM metadata_item_settings WHERE account_id = ?1 AND guid = ?2",
        )
        .unwrap()
        .query_map(params![account, guid], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// `snap` is the state both had at `SINCE`; home then moved on.
    fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (home, into) = (dir.path().join("home.db"), dir.path().join("into.db"));
        for path in [&home, &into] {
            let conn = plex_db(path);
            setting(&conn, 1, "plex://movie/a", 1, SINCE - 100);
            setting(&conn, 1, "plex://movie/b", 1, SINCE - 100);
            view(&conn, 1, "plex://movie/a", SINCE - 100, 1, 1);
        }
        (dir, home, into)
    }

    #[test]
    fn home_changes_after_the_snapshot_are_merged() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        // Watched again at home after the snapshot.
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 2, last_viewed_at = ?1, updated_at = ?1
             WHERE guid = 'plex://movie/a'",
            [SINCE + 10],
        )
        .unwrap();
        view(&h, 1, "plex://movie/a", SINCE + 10, 99, 1);
        // A new user, on a new device, watching an episode.
        h.execute_batch(
            "INSERT INTO accounts(id, name) VALUES (7, 'guest');
             INSERT INTO devices(id, identifier, name) VALUES (5, 'dev-5', 'Phone');",
        )
        .unwrap();
        setting(&h, 7, "plex://episode/c", 1, SINCE + 20);
        view(&h, 7, "plex://episode/c", SINCE + 20, 2, 5);
        // Something the target does not know at all.
        setting(&h, 1, "plex://movie/gone", 3, SINCE + 30);
        drop(h);
        let home_hash = std::fs::read(&home).unwrap();

        let preview_report = preview(&home, &into, SINCE).unwrap();
        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(std::fs::read(&home).unwrap(), home_hash, "home was written");
        assert!(preview_report.dry_run && !report.dry_run);
        assert_eq!(
            WatchStateReport {
                dry_run: false,
                ..preview_report
            },
            report,
            "preview and merge disagree"
        );
        assert_eq!(report.settings_updated, 1, "{report:?}");
        assert_eq!(report.settings_inserted, 2, "{report:?}");
        assert_eq!(report.views_inserted, 2, "{report:?}");
        assert_eq!(report.accounts_added, 1, "{report:?}");
        assert_eq!(report.devices_added, 1, "{report:?}");
        assert_eq!(report.guids_not_found, 1, "{report:?}");

        let t = Connection::open(&into).unwrap();
        assert_eq!(view_count(&t, 1, "plex://movie/a"), [2]);
        assert_eq!(view_count(&t, 7, "plex://episode/c"), [1]);
        assert_eq!(view_count(&t, 1, "plex://movie/gone"), [3]);
        assert_eq!(
            count(
                &t,
                "SELECT count(*) FROM accounts WHERE id = 7 AND name = 'guest'"
            ),
            1
        );
        assert_eq!(count(&t, "SELECT count(*) FROM devices WHERE id = 5"), 1);
        // The section comes from the target's item, not home's row.
        assert_eq!(
            count(
                &t,
                &format!(
                    "SELECT library_section_id FROM metadata_item_views WHERE viewed_at = {}",
                    SINCE + 10
                )
            ),
            1
        );
        assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_views"), 3);
    }

    #[test]
    fn merging_twice_adds_nothing() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
        view(&h, 1, "plex://episode/c", SINCE + 5, 2, 1);
        drop(h);
        let first = merge(&home, &into, SINCE).unwrap();
        assert_eq!((first.settings_inserted, first.views_inserted), (1, 1));
        let before = std::fs::read(&into).unwrap();
        let second = merge(&home, &into, SINCE).unwrap();
        assert_eq!(second.changes(), 0, "{second:?}");
        assert_eq!((second.settings_unchanged, second.views_present), (1, 1));
        let t = Connection::open(&into).unwrap();
        assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_views"), 2);
        assert_eq!(count(&t, "SELECT count(*) FROM metadata_item_settings"), 3);
        drop(t);
        assert_eq!(
            std::fs::read(&into).unwrap(),
            before,
            "a no-op merge rewrote the file"
        );
    }

    #[test]
    fn older_home_rows_never_overwrite_and_a_newer_target_row_wins() {
        let (_dir, home, into) = pair();
        // Before the snapshot at home, different in the target: not copied.
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 9 WHERE guid = 'plex://movie/b'",
            [],
        )
        .unwrap();
        // Changed at home after the snapshot, but later still in the target.
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 5, updated_at = ?1 WHERE guid = 'plex://movie/a'",
            [SINCE + 10],
        )
        .unwrap();
        drop(h);
        let t = Connection::open(&into).unwrap();
        t.execute(
            "UPDATE metadata_item_settings SET view_count = 6, updated_at = ?1 WHERE guid = 'plex://movie/a'",
            [SINCE + 20],
        )
        .unwrap();
        drop(t);

        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(report.settings_kept_newer, 1, "{report:?}");
        assert_eq!(report.changes(), 0, "{report:?}");
        let t = Connection::open(&into).unwrap();
        assert_eq!(view_count(&t, 1, "plex://movie/b"), [1]);
        assert_eq!(view_count(&t, 1, "plex://movie/a"), [6]);
    }

    #[test]
    fn a_rating_or_skip_counts_as_a_change() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET rating = 8.0, last_rated_at = ?1 WHERE guid = 'plex://movie/b'",
            [SINCE + 1],
        )
        .unwrap();
        drop(h);
        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(report.settings_updated, 1, "{report:?}");
        let t = Connection::open(&into).unwrap();
        let rating: f64 = t
            .query_row(
                "SELECT rating FROM metadata_item_settings WHERE guid = 'plex://movie/b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rating, 8.0);
    }

    #[test]
    fn a_failed_write_leaves_the_target_untouched() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
        view(&h, 1, "plex://episode/c", SINCE + 5, 2, 1);
        drop(h);
        // A trigger that fails the second table's insert.
        let t = Connection::open(&into).unwrap();
        t.execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON metadata_item_views BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
        drop(t);
        let before = std::fs::read(&into).unwrap();
        let error = merge(&home, &into, SINCE).unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
        assert_eq!(std::fs::read(&into).unwrap(), before);
    }

    #[test]
    fn a_db_is_not_merged_into_itself() {
        let (_dir, home, _) = pair();
        let error = merge(&home, &home, SINCE).unwrap_err();
        assert!(error.to_string().contains("into itself"), "{error}");
    }
}
