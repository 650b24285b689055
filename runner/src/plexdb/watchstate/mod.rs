//! Watch state made at home while the cloud run worked on a snapshot.
//!
//! The home server stays in use during a run: people watch, rate, skip.
//! The cloud result was built from a snapshot taken at `since`, so before it
//! replaces the home DB, what home recorded after `since` is copied into it:
//! `metadata_item_settings` (keyed by `guid` + `account_id`), the history in
//! `metadata_item_views`, and the `accounts` / `devices` rows they name.
//!
//! Precedence, per (`guid`, `account_id`): a home row counts only if one of
//! its times (`updated_at`, `last_viewed_at`, `last_rated_at`,
//! `last_skipped_at`) is after `since`; it then replaces the target's watch
//! columns unless the target's row is newer still (latest time wins, home
//! wins ties). Home rows not touched since the snapshot never overwrite
//! anything. Deletions at home are not carried over. Merging twice changes
//! nothing the second time.
//!
//! `changed_at` is not a time. Measured on real DBs (1.19 to 1.43): it is
//! one change counter per database, shared by every table that has a
//! `changed_at` (or `content_changed_at`, `resources_changed_at`) column:
//! no two rows of one DB share a value, rows written later carry higher
//! ones (same order as `updated_at`), and it runs from about 100 to 8,864
//! on most servers but near 7.6e18 or 8.5e18 on others (1.40.3 jumped from
//! 5,203 to 7.6e18 between two rows). No table or preference stores the
//! current value (only a `SyncedNeedsChangedAtUpdate` flag), so Plex must
//! take it from the maximum in use; we are fairly but not fully sure of
//! that. So it never decides precedence, home's values are never copied,
//! and every row the merge writes gets the next value above the target's
//! maximum, so that Plex sees it changed.
//!
//! The target is a file downloaded from the cloud: untrusted. It is opened
//! with `trusted_schema` off and SQLite's defensive mode, and a merge is
//! refused if a table it writes carries a trigger (real Plex DBs have
//! triggers only on `metadata_items` and `tags`): a write then fires
//! nothing but the insert or update itself.

mod target;
#[cfg(test)]
mod tests;
mod times;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

use self::target::{Counter, open_read, refuse_foreign_schema};
use self::times::latest;
use super::{PlexDbError, ensure_plex_library, open_for_write, quote_ident};

const SETTINGS: &str = "metadata_item_settings";
const VIEWS: &str = "metadata_item_views";
/// The tables a merge writes.
const WRITTEN: [&str; 4] = [SETTINGS, VIEWS, "accounts", "devices"];
/// The target's change counter column (see the module comment).
const COUNTER: &str = "changed_at";

/// The columns a settings update copies (those present in both DBs).
const WATCH_COLUMNS: [&str; 9] = [
    "rating",
    "view_offset",
    "view_count",
    "last_viewed_at",
    "updated_at",
    "skip_count",
    "last_skipped_at",
    "extra_data",
    "last_rated_at",
];

/// A settings row's "last touched": the latest of these times.
const TIME_COLUMNS: [&str; 4] = [
    "updated_at",
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
    let conn = open_read(into)?;
    apply(&source, &conn, into, since, false)
}

fn refuse_same_file(home: &Path, into: &Path) -> Result<(), PlexDbError> {
    let same = match (std::fs::canonicalize(home), std::fs::canonicalize(into)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(invalid(
            into,
            std::io::ErrorKind::InvalidInput,
            "cannot merge a database's watch state into itself".into(),
        ));
    }
    Ok(())
}

/// Rows of one table, with the column names they follow and each row's
/// latest time (`stamps[i]` for `rows[i]`).
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    stamps: Vec<i64>,
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
    /// One row per (guid, account_id), the latest.
    settings: Rows,
    views: Rows,
    accounts: RowsById,
    devices: RowsById,
}

fn read_home(home: &Path, into: &Path, since: i64) -> Result<HomeState, PlexDbError> {
    let target = open_read(into)?;
    let conn = open_read(home)?;
    let sqlite = |e| PlexDbError::sqlite(home, e);
    // One read transaction: every row comes from the same state.
    conn.execute_batch("BEGIN").map_err(sqlite)?;

    let mut settings_columns = shared_columns(&conn, home, &target, into, SETTINGS)?;
    // The counter is the target's own: never copied (see the module comment).
    settings_columns.retain(|c| c != COUNTER);
    for key in ["guid", "account_id"] {
        if !settings_columns.iter().any(|c| c == key) {
            return Err(missing_column(home, SETTINGS, key));
        }
    }
    let times = present(&TIME_COLUMNS, &settings_columns);
    let settings = latest_per_key(select_since(
        &conn,
        home,
        SETTINGS,
        &settings_columns,
        &times,
        since,
    )?);

    let mut views_columns = shared_columns(&conn, home, &target, into, VIEWS)?;
    views_columns.retain(|c| c != COUNTER);
    for key in ["guid", "account_id", "viewed_at"] {
        if !views_columns.iter().any(|c| c == key) {
            return Err(missing_column(home, VIEWS, key));
        }
    }
    let views = select_since(
        &conn,
        home,
        VIEWS,
        &views_columns,
        &["viewed_at".into()],
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

/// Keeps the latest row per (guid, account_id), so that duplicates at home
/// cannot make a preview and a merge disagree.
fn latest_per_key(mut settings: Rows) -> Rows {
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    let (mut rows, mut stamps) = (Vec::new(), Vec::new());
    let taken = std::mem::take(&mut settings.rows);
    for (row, stamp) in taken.into_iter().zip(std::mem::take(&mut settings.stamps)) {
        let key = (
            key_text(&settings.get(&row, "guid")),
            key_text(&settings.get(&row, "account_id")),
        );
        match by_key.get(&key) {
            Some(&i) if stamps[i] > stamp => {}
            Some(&i) => (rows[i], stamps[i]) = (row, stamp),
            None => {
                by_key.insert(key, rows.len());
                rows.push(row);
                stamps.push(stamp);
            }
        }
    }
    Rows {
        rows,
        stamps,
        ..settings
    }
}

/// Applies (or, with `write` false, only counts) `home` onto `conn`.
fn apply(
    home: &HomeState,
    conn: &Connection,
    into: &Path,
    since: i64,
    write: bool,
) -> Result<WatchStateReport, PlexDbError> {
    refuse_foreign_schema(conn, into)?;
    let sqlite = |e| PlexDbError::sqlite(into, e);
    let mut report = WatchStateReport {
        dry_run: !write,
        since,
        ..WatchStateReport::default()
    };
    let mut counter = Counter::of(conn, into)?;
    let mut sections = SectionsByGuid::default();
    let mut guids_missing: HashSet<String> = HashSet::new();
    let mut accounts_used: HashSet<i64> = HashSet::new();
    let mut devices_used: HashSet<i64> = HashSet::new();

    let settings = &home.settings;
    let watch = present(&WATCH_COLUMNS, &settings.columns);
    let times = present(&TIME_COLUMNS, &settings.columns);
    // `+account_id`: without statistics SQLite picks the account index (one
    // account holds nearly every row: a scan per lookup, minutes at the
    // user's size); the guid index finds the one or two rows at once.
    let mut find = conn
        .prepare(&format!(
            "SELECT {} FROM {SETTINGS} WHERE guid IS ?1 AND +account_id IS ?2",
            column_list(&[vec!["id".to_string()], watch.clone(), times.clone()].concat()),
        ))
        .map_err(sqlite)?;
    let (insert_settings, counted) = insert_with_counter(conn, into, SETTINGS, &settings.columns)?;
    let mut assigned = watch.clone();
    if counted {
        assigned.push(COUNTER.into());
    }
    let assignments = assigned
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", quote_ident(c), i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let update_sql = format!("UPDATE {SETTINGS} SET {assignments} WHERE id = ?1");
    for (row, &stamp) in settings.rows.iter().zip(&settings.stamps) {
        let (guid, account) = (settings.get(row, "guid"), settings.get(row, "account_id"));
        let home_values: Vec<Value> = watch.iter().map(|c| settings.get(row, c)).collect();
        let found: Vec<(i64, Vec<Value>, Vec<Value>)> = find
            .query_map(params![guid, account], |r| {
                let value = |i| r.get::<_, Value>(i);
                Ok((
                    r.get(0)?,
                    (1..=watch.len()).map(value).collect::<Result<_, _>>()?,
                    (1 + watch.len()..1 + watch.len() + times.len())
                        .map(value)
                        .collect::<Result<_, _>>()?,
                ))
            })
            .map_err(sqlite)?
            .collect::<Result<_, _>>()
            .map_err(sqlite)?;
        let mut newest_target = None;
        for (_, _, stamps) in &found {
            newest_target = newest_target.max(Some(latest(stamps, &times, into, SETTINGS)?));
        }
        match newest_target {
            None => {
                if write {
                    let mut values = row[..settings.columns.len()].to_vec();
                    if counted {
                        values.push(counter.next(into)?);
                    }
                    conn.execute(&insert_settings, params_from_iter(values))
                        .map_err(sqlite)?;
                }
                report.settings_inserted += 1;
            }
            Some(latest) if latest > Some(stamp) => {
                report.settings_kept_newer += 1;
                continue;
            }
            Some(_) => {
                let stale: Vec<i64> = found
                    .iter()
                    .filter(|(_, values, _)| *values != home_values)
                    .map(|(id, _, _)| *id)
                    .collect();
                if stale.is_empty() {
                    report.settings_unchanged += 1;
                    continue;
                }
                if write {
                    for id in stale {
                        let mut values = vec![Value::Integer(id)];
                        values.extend(home_values.iter().cloned());
                        if counted {
                            values.push(counter.next(into)?);
                        }
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
    let mut present_view = conn
        .prepare(&format!(
            "SELECT 1 FROM {VIEWS} WHERE guid IS ?1 AND +account_id IS ?2 AND +viewed_at IS ?3 LIMIT 1"
        ))
        .map_err(sqlite)?;
    let (insert_view, views_counted) = insert_with_counter(conn, into, VIEWS, &views.columns)?;
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
            || present_view
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
            if views_counted {
                values.push(counter.next(into)?);
            }
            conn.execute(&insert_view, params_from_iter(values))
                .map_err(sqlite)?;
        }
        inserted.insert(key);
        report.views_inserted += 1;
        accounts_used.extend(as_i64(&account));
        devices_used.extend(as_i64(&views.get(row, "device_id")));
    }
    drop(present_view);

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

/// The INSERT for `copied` columns of `table`, with the target's counter column
/// last when the table has one (true then).
fn insert_with_counter(
    conn: &Connection,
    into: &Path,
    table: &str,
    copied: &[String],
) -> Result<(String, bool), PlexDbError> {
    let counted = columns(conn, into, table)?.iter().any(|c| c == COUNTER);
    let mut all = copied.to_vec();
    if counted {
        all.push(COUNTER.into());
    }
    Ok((insert_sql(table, &all), counted))
}

/// The names of `wanted` that `have` holds, in `wanted`'s order.
fn present(wanted: &[&str], have: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| have.iter().any(|h| h == *w))
        .map(|w| w.to_string())
        .collect()
}

fn invalid(path: &Path, kind: std::io::ErrorKind, message: String) -> PlexDbError {
    PlexDbError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, message),
    }
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

/// The rows of `table` (its `columns`, then its `times`) with a time after
/// `since`, in id order.
fn select_since(
    conn: &Connection,
    path: &Path,
    table: &str,
    columns: &[String],
    times: &[String],
    since: i64,
) -> Result<Rows, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(path, e);
    // SQLite orders every text after every number, so text date-times pass
    // this coarse filter too; the exact test is done below, parsed.
    let filter = match times {
        [] => "0".to_string(),
        _ => times
            .iter()
            .map(|t| format!("{} > ?1", quote_ident(t)))
            .collect::<Vec<_>>()
            .join(" OR "),
    };
    let sql = format!(
        "SELECT {} FROM {} WHERE {filter} ORDER BY id",
        column_list(&[columns, times].concat()),
        quote_ident(table)
    );
    let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
    let width = columns.len() + times.len();
    let all = stmt
        .query_map([since], |r| {
            (0..width)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(sqlite)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite)?;
    let (mut rows, mut stamps) = (Vec::new(), Vec::new());
    for row in all {
        if let Some(stamp) = latest(&row[columns.len()..], times, path, table)?
            && stamp > since
        {
            rows.push(row);
            stamps.push(stamp);
        }
    }
    Ok(Rows {
        columns: columns.to_vec(),
        rows,
        stamps,
    })
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
