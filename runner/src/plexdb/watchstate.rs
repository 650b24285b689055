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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::UNIX_EPOCH;

use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

use super::{PlexDbError, ensure_plex_library, open_for_write, open_plex_read_only, quote_ident};

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
    harden(&conn, into)?;
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

/// A Plex DB opened read-only, with [`harden`]'s settings.
fn open_read(path: &Path) -> Result<Connection, PlexDbError> {
    let conn = open_plex_read_only(path)?;
    harden(&conn, path)?;
    Ok(conn)
}

/// Functions named in the schema (views, defaults, indexes) may only be
/// innocuous ones, and the schema and shadow tables cannot be written.
fn harden(conn: &Connection, path: &Path) -> Result<(), PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(path, e);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(sqlite)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(sqlite)?;
    conn.execute_batch("PRAGMA trusted_schema = OFF")
        .map_err(sqlite)
}

/// Refuses a target whose written tables carry a trigger or are views:
/// Plex makes neither, and either would run SQL of the file's choosing.
fn refuse_foreign_schema(conn: &Connection, path: &Path) -> Result<(), PlexDbError> {
    let found: Option<(String, String, String)> = conn
        .query_row(
            "SELECT type, name, tbl_name FROM sqlite_schema
             WHERE type IN ('trigger', 'view') AND lower(tbl_name) IN (?1, ?2, ?3, ?4)
             ORDER BY type, name LIMIT 1",
            WRITTEN,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(|e| PlexDbError::sqlite(path, e))?;
    let Some((kind, name, table)) = found else {
        return Ok(());
    };
    let what = if kind == "view" {
        format!("{table} is a view, not a table")
    } else {
        format!("trigger {name:?} on table {table}")
    };
    Err(invalid(
        path,
        std::io::ErrorKind::InvalidData,
        format!(
            "watch-state merge refused: {what}; Plex makes none, so this file is not as Plex wrote it"
        ),
    ))
}

/// The target's change counter: the next value above every one in use.
struct Counter {
    last: i64,
}

impl Counter {
    /// The maximum over every `changed_at` / `*_changed_at` column of the
    /// ordinary tables (virtual ones may need modules we lack).
    fn of(conn: &Connection, path: &Path) -> Result<Counter, PlexDbError> {
        let sqlite = |e| PlexDbError::sqlite(path, e);
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table'
                 AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sqlite)?;
        let mut last = 0;
        for table in tables {
            for column in columns(conn, path, &table)? {
                if column != COUNTER && !column.ends_with("_changed_at") {
                    continue;
                }
                let max: Option<i64> = conn
                    .query_row(
                        &format!(
                            "SELECT max({c}) FROM {t} WHERE typeof({c}) = 'integer'",
                            c = quote_ident(&column),
                            t = quote_ident(&table)
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .map_err(sqlite)?;
                last = last.max(max.unwrap_or(0));
            }
        }
        Ok(Counter { last })
    }

    fn next(&mut self, path: &Path) -> Result<Value, PlexDbError> {
        self.last = self.last.checked_add(1).ok_or_else(|| {
            invalid(
                path,
                std::io::ErrorKind::InvalidData,
                format!(
                    "watch-state merge refused: the change counter ({COUNTER}) is at its maximum"
                ),
            )
        })?;
        Ok(Value::Integer(self.last))
    }
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

/// Unix seconds from a stored time: integer seconds (Plex 1.20 on) or the
/// text date-time of older versions (`2020-08-15 09:37:21`, UTC, maybe with
/// a fraction, `T` or `Z`). NULL is no time.
///
/// Anything else refuses the merge rather than skipping the row: a time we
/// cannot read may be after the snapshot, and guessing either way can drop
/// or overwrite what home watched. Every real DB seen (1.19 to 1.43)
/// parses, so this blocks no real user.
fn seconds(
    value: &Value,
    path: &Path,
    table: &str,
    column: &str,
) -> Result<Option<i64>, PlexDbError> {
    let parsed = match value {
        Value::Null => return Ok(None),
        Value::Integer(i) => Some(*i),
        Value::Real(f) if f.is_finite() => Some(*f as i64),
        Value::Text(t) => t.trim().parse().ok().or_else(|| text_seconds(t.trim())),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        let shown: String = match value {
            Value::Text(t) => format!("{:?}", t.chars().take(40).collect::<String>()),
            Value::Blob(_) => "a blob".into(),
            other => format!("{other:?}"),
        };
        invalid(
            path,
            std::io::ErrorKind::InvalidData,
            format!("watch-state merge refused: {table}.{column} holds {shown}, neither Unix seconds nor a date-time"),
        )
    })
}

fn text_seconds(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// The latest of a row's `values` of time `columns`; `None` if all NULL.
fn latest(
    values: &[Value],
    columns: &[String],
    path: &Path,
    table: &str,
) -> Result<Option<i64>, PlexDbError> {
    let mut latest = None;
    for (value, column) in values.iter().zip(columns) {
        latest = latest.max(seconds(value, path, table, column)?);
    }
    Ok(latest)
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

    /// A settings row; `changed_at` is the DB's next counter value, as Plex
    /// keeps it (a counter, not a time).
    fn setting(conn: &Connection, account: i64, guid: &str, count: i64, at: i64) {
        conn.execute(
            "INSERT INTO metadata_item_settings(account_id, guid, view_count, view_offset, last_viewed_at,
                created_at, updated_at, changed_at) VALUES (?1, ?2, ?3, 0, ?4, ?4, ?4,
                (SELECT coalesce(max(changed_at), 100) + 1 FROM metadata_item_settings))",
            params![account, guid, count, at],
        )
        .unwrap();
    }

    fn changed_at(conn: &Connection, guid: &str) -> i64 {
        conn.query_row(
            "SELECT changed_at FROM metadata_item_settings WHERE guid = ?1",
            [guid],
            |r| r.get(0),
        )
        .unwrap()
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
        // An index that fails the second table's insert (one view per account).
        let t = Connection::open(&into).unwrap();
        t.execute_batch("CREATE UNIQUE INDEX boom ON metadata_item_views(account_id);")
            .unwrap();
        drop(t);
        let before = std::fs::read(&into).unwrap();
        let error = merge(&home, &into, SINCE).unwrap_err();
        assert!(error.to_string().contains("UNIQUE"), "{error}");
        assert_eq!(std::fs::read(&into).unwrap(), before);
    }

    #[test]
    fn a_trigger_on_a_written_table_refuses_the_merge() {
        for table in [SETTINGS, VIEWS, "accounts", "devices"] {
            let (_dir, home, into) = pair();
            let h = Connection::open(&home).unwrap();
            setting(&h, 1, "plex://episode/c", 4, SINCE + 5);
            drop(h);
            let t = Connection::open(&into).unwrap();
            t.execute_batch(&format!(
                "CREATE TRIGGER sneaky AFTER UPDATE ON {table} BEGIN SELECT 1; END;"
            ))
            .unwrap();
            drop(t);
            let before = std::fs::read(&into).unwrap();
            for error in [
                preview(&home, &into, SINCE).unwrap_err(),
                merge(&home, &into, SINCE).unwrap_err(),
            ] {
                let text = error.to_string();
                assert!(
                    text.contains(&format!("refused: trigger \"sneaky\" on table {table}")),
                    "{text}"
                );
                assert_eq!(text.lines().count(), 1, "{text}");
            }
            assert_eq!(std::fs::read(&into).unwrap(), before, "{table}");
        }
    }

    #[test]
    fn connections_are_hardened() {
        let (_dir, _, into) = pair();
        let conn = open_read(&into).unwrap();
        assert!(conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE).unwrap());
        assert!(
            !conn
                .db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA)
                .unwrap()
        );
        let trusted: i64 = conn
            .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(trusted, 0);
    }

    #[test]
    fn a_huge_home_counter_never_beats_a_newer_target_row() {
        let (_dir, home, into) = pair();
        // Home: watched after the snapshot, with a counter near 7.6e18.
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 5, updated_at = ?1,
                changed_at = 7596562620373592267 WHERE guid = 'plex://movie/a'",
            [SINCE + 10],
        )
        .unwrap();
        drop(h);
        // Target: watched later still, with a small counter.
        let t = Connection::open(&into).unwrap();
        t.execute(
            "UPDATE metadata_item_settings SET view_count = 6, updated_at = ?1, changed_at = 150
             WHERE guid = 'plex://movie/a'",
            [SINCE + 20],
        )
        .unwrap();
        drop(t);
        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(report.settings_kept_newer, 1, "{report:?}");
        assert_eq!(report.changes(), 0, "{report:?}");
        let t = Connection::open(&into).unwrap();
        assert_eq!(view_count(&t, 1, "plex://movie/a"), [6]);
        assert_eq!(changed_at(&t, "plex://movie/a"), 150);
    }

    #[test]
    fn a_home_row_newer_only_by_its_counter_is_not_merged() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 9, view_offset = 1234,
                changed_at = 7596562620373592267 WHERE guid = 'plex://movie/b'",
            [],
        )
        .unwrap();
        drop(h);
        let before = std::fs::read(&into).unwrap();
        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(report.changes(), 0, "{report:?}");
        assert_eq!(report.settings_unchanged + report.settings_kept_newer, 0);
        assert_eq!(std::fs::read(&into).unwrap(), before);
    }

    #[test]
    fn written_rows_get_the_targets_next_counter_values() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 2, updated_at = ?1,
                changed_at = 7596562620373592267 WHERE guid = 'plex://movie/a'",
            [SINCE + 10],
        )
        .unwrap();
        setting(&h, 1, "plex://episode/c", 1, SINCE + 20);
        drop(h);
        // The counter is shared by the DB's tables: an item holds the maximum.
        let t = Connection::open(&into).unwrap();
        t.execute_batch(
            "UPDATE metadata_items SET changed_at = 500 WHERE id = 3;
             UPDATE metadata_items SET resources_changed_at = 499 WHERE id = 2;",
        )
        .unwrap();
        drop(t);
        merge(&home, &into, SINCE).unwrap();
        let t = Connection::open(&into).unwrap();
        assert_eq!(changed_at(&t, "plex://movie/a"), 501);
        assert_eq!(changed_at(&t, "plex://episode/c"), 502);
        assert_eq!(changed_at(&t, "plex://movie/b"), 102, "untouched row kept");
    }

    #[test]
    fn text_date_times_are_parsed_as_utc() {
        let p = Path::new("x.db");
        let at = |v: &str| seconds(&Value::Text(v.into()), p, SETTINGS, "updated_at").unwrap();
        assert_eq!(at("2020-08-15 09:37:21"), Some(1_597_484_241));
        assert_eq!(at("2020-08-15T09:37:21Z"), Some(1_597_484_241));
        assert_eq!(at("2020-08-15 09:37:21.875"), Some(1_597_484_241));
        assert_eq!(at("1597484241"), Some(1_597_484_241));
        assert_eq!(
            seconds(&Value::Null, p, SETTINGS, "updated_at").unwrap(),
            None
        );
        for bad in ["15/08/2020", "2020-13-01 00:00:00", "yesterday", ""] {
            let error = seconds(&Value::Text(bad.into()), p, SETTINGS, "updated_at").unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("metadata_item_settings.updated_at holds {bad:?}")),
                "{error}"
            );
        }
    }

    #[test]
    fn text_times_at_home_are_compared_with_since() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        // SINCE is 2027-01-15 08:00:00 UTC.
        h.execute_batch(
            "UPDATE metadata_item_settings SET view_count = 4, updated_at = '2027-01-15 08:00:01'
               WHERE guid = 'plex://movie/a';
             UPDATE metadata_item_settings SET view_count = 8, updated_at = '2027-01-15 07:59:59.900'
               WHERE guid = 'plex://movie/b';",
        )
        .unwrap();
        drop(h);
        let report = merge(&home, &into, SINCE).unwrap();
        assert_eq!(report.settings_updated, 1, "{report:?}");
        let t = Connection::open(&into).unwrap();
        assert_eq!(view_count(&t, 1, "plex://movie/a"), [4]);
        assert_eq!(view_count(&t, 1, "plex://movie/b"), [1]);
    }

    #[test]
    fn an_unreadable_time_refuses_the_merge() {
        let (_dir, home, into) = pair();
        let h = Connection::open(&home).unwrap();
        h.execute(
            "UPDATE metadata_item_settings SET view_count = 4, last_viewed_at = 'last tuesday'
             WHERE guid = 'plex://movie/a'",
            [],
        )
        .unwrap();
        drop(h);
        let before = std::fs::read(&into).unwrap();
        let error = merge(&home, &into, SINCE).unwrap_err().to_string();
        assert!(
            error.contains("refused: metadata_item_settings.last_viewed_at holds \"last tuesday\""),
            "{error}"
        );
        assert_eq!(std::fs::read(&into).unwrap(), before);
    }

    #[test]
    fn a_db_is_not_merged_into_itself() {
        let (_dir, home, _) = pair();
        let error = merge(&home, &home, SINCE).unwrap_err();
        assert!(error.to_string().contains("into itself"), "{error}");
    }
}
