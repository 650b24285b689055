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

mod guids;
mod home;
mod target;
#[cfg(test)]
mod tests;
mod times;

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

use self::guids::{MissingGuids, Sections};
use self::home::Home;
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
/// seconds), in one transaction. `home` is opened read-only and read as a
/// stream: memory does not grow with the rows merged.
pub fn merge(home: &Path, into: &Path, since: i64) -> Result<WatchStateReport, PlexDbError> {
    refuse_same_file(home, into)?;
    // Whatever home holds that refuses the merge does so before the target
    // is opened for writing.
    let home = Home::open(home, &open_read(into)?, into, since)?;
    let mut conn = open_for_write(into)?;
    ensure_plex_library(&conn, into)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| PlexDbError::sqlite(into, e))?;
    let report = apply(&home, &tx, into, since, true)?;
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
    let conn = open_read(into)?;
    let home = Home::open(home, &conn, into, since)?;
    apply(&home, &conn, into, since, false)
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

/// Applies (or, with `write` false, only counts) `home` onto `conn`, row
/// by row as home's rows come.
fn apply(
    home: &Home,
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
    let mut sections = Sections::new(conn, into)?;
    let guids_missing = MissingGuids::new(into)?;
    // Few: a household's accounts and devices.
    let mut accounts_used: BTreeSet<i64> = BTreeSet::new();
    let mut devices_used: BTreeSet<i64> = BTreeSet::new();

    let settings = &home.settings;
    let watch = present(&WATCH_COLUMNS, &settings.0);
    let times = &home.settings_times;
    // `+account_id`: without statistics SQLite picks the account index (one
    // account holds nearly every row: a scan per lookup, minutes at the
    // user's size); the guid index finds the one or two rows at once.
    let mut find = conn
        .prepare(&format!(
            "SELECT {} FROM {SETTINGS} WHERE guid IS ?1 AND +account_id IS ?2",
            column_list(&[vec!["id".to_string()], watch.clone(), times.clone()].concat()),
        ))
        .map_err(sqlite)?;
    let (insert_settings, counted) = insert_with_counter(conn, into, SETTINGS, &settings.0)?;
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
    home.each_setting(|row, stamp| {
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
            newest_target = newest_target.max(Some(latest(stamps, times, into, SETTINGS)?));
        }
        match newest_target {
            None => {
                if write {
                    let mut values = row[..settings.0.len()].to_vec();
                    if counted {
                        values.push(counter.next(into)?);
                    }
                    write_row(conn, into, &insert_settings, values)?;
                }
                report.settings_inserted += 1;
            }
            Some(latest) if latest > Some(stamp) => {
                report.settings_kept_newer += 1;
                return Ok(());
            }
            Some(_) => {
                let stale: Vec<i64> = found
                    .iter()
                    .filter(|(_, values, _)| *values != home_values)
                    .map(|(id, _, _)| *id)
                    .collect();
                if stale.is_empty() {
                    report.settings_unchanged += 1;
                    return Ok(());
                }
                if write {
                    for id in stale {
                        let mut values = vec![Value::Integer(id)];
                        values.extend(home_values.iter().cloned());
                        if counted {
                            values.push(counter.next(into)?);
                        }
                        write_row(conn, into, &update_sql, values)?;
                    }
                }
                report.settings_updated += 1;
            }
        }
        accounts_used.extend(as_i64(&account));
        if sections.of(&guid)?.is_none() {
            guids_missing.insert(&guid)?;
        }
        Ok(())
    })?;
    drop(find);

    let views = &home.views;
    // The guid index, as above (not the account's or the timestamp's).
    let mut present_view = conn
        .prepare(&format!(
            "SELECT 1 FROM {VIEWS} WHERE guid IS ?1 AND +account_id IS ?2 AND +viewed_at IS ?3 LIMIT 1"
        ))
        .map_err(sqlite)?;
    let (insert_view, views_counted) = insert_with_counter(conn, into, VIEWS, &views.0)?;
    let section_index = views.index("library_section_id");
    let mut earlier = home.earlier_views()?;
    home.each_view(|row, id| {
        let (guid, account, viewed_at) = (
            views.get(row, "guid"),
            views.get(row, "account_id"),
            views.get(row, "viewed_at"),
        );
        // Home's own duplicate, earlier, was merged (or found) first: a
        // preview, which writes nothing, must count it as a merge would.
        let exists = present_view
            .exists(params![guid, account, viewed_at])
            .map_err(sqlite)?
            || earlier.exist(id, &guid, &account, &viewed_at)?;
        if exists {
            report.views_present += 1;
            return Ok(());
        }
        let section = sections.of(&guid)?;
        if section.is_none() {
            guids_missing.insert(&guid)?;
        }
        if write {
            let mut values = row[..views.0.len()].to_vec();
            if let (Some(i), Some(Some(id))) = (section_index, section) {
                values[i] = Value::Integer(id);
            }
            if views_counted {
                values.push(counter.next(into)?);
            }
            write_row(conn, into, &insert_view, values)?;
        }
        report.views_inserted += 1;
        accounts_used.extend(as_i64(&account));
        devices_used.extend(as_i64(&views.get(row, "device_id")));
        Ok(())
    })?;
    drop(present_view);

    report.accounts_added = copy_missing(home, conn, into, "accounts", &accounts_used, write)?;
    report.devices_added = copy_missing(home, conn, into, "devices", &devices_used, write)?;
    report.guids_not_found = guids_missing.count()?;
    Ok(report)
}

/// Runs `sql`, a write done once per row merged, prepared once (rusqlite's
/// statement cache).
fn write_row(
    conn: &Connection,
    into: &Path,
    sql: &str,
    values: Vec<Value>,
) -> Result<(), PlexDbError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params_from_iter(values)))
        .map(drop)
        .map_err(|e| PlexDbError::sqlite(into, e))
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

/// Copies the home rows of `wanted` ids that the target lacks, in id
/// order; returns how many.
fn copy_missing(
    home: &Home,
    conn: &Connection,
    into: &Path,
    table: &str,
    wanted: &BTreeSet<i64>,
    write: bool,
) -> Result<u64, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(into, e);
    let mut added = 0;
    for &id in wanted {
        let Some(row) = home.row_by_id(table, id, conn, into)? else {
            continue;
        };
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
            conn.execute(
                &insert_sql(table, &row.columns),
                params_from_iter(&row.values),
            )
            .map_err(sqlite)?;
        }
        added += 1;
    }
    Ok(added)
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
