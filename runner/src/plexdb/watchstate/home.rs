//! Home's side of a merge: the rows it touched after the snapshot, read one
//! at a time in one read transaction, so that memory does not grow with
//! the history merged (a whole history is 250k rows at the user's size).

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Statement, params};

use super::target::open_read;
use super::times::latest;
use super::{
    COUNTER, SETTINGS, TIME_COLUMNS, VIEWS, column_list, columns, key_text, missing_column,
    present, shared_columns,
};
use crate::plexdb::{PlexDbError, quote_ident};

/// Column names, to find a row's values by name.
pub(super) struct Columns(pub(super) Vec<String>);

impl Columns {
    pub(super) fn index(&self, column: &str) -> Option<usize> {
        self.0.iter().position(|c| c == column)
    }

    pub(super) fn get(&self, row: &[Value], column: &str) -> Value {
        self.index(column)
            .map(|i| row[i].clone())
            .unwrap_or(Value::Null)
    }
}

/// A row's values with the names of their columns.
pub(super) struct Named {
    pub(super) columns: Vec<String>,
    pub(super) values: Vec<Value>,
}

/// The home DB, open read-only, with the columns a merge copies.
pub(super) struct Home<'a> {
    conn: Connection,
    path: &'a Path,
    since: i64,
    /// `metadata_item_settings` columns both DBs have (`id` and the
    /// counter excluded).
    pub(super) settings: Columns,
    /// Its time columns (see [`TIME_COLUMNS`]).
    pub(super) settings_times: Vec<String>,
    /// `metadata_item_views` columns both DBs have (`id` and the counter
    /// excluded).
    pub(super) views: Columns,
}

impl<'a> Home<'a> {
    /// Opens `path` and begins the read transaction every row comes from;
    /// `target` is the DB merged into, which may still be read-only.
    pub(super) fn open(
        path: &'a Path,
        target: &Connection,
        into: &Path,
        since: i64,
    ) -> Result<Home<'a>, PlexDbError> {
        let conn = open_read(path)?;
        conn.execute_batch("BEGIN")
            .map_err(|e| PlexDbError::sqlite(path, e))?;
        let copied = |table, keys: &[&str]| {
            let mut shared = shared_columns(&conn, path, target, into, table)?;
            // The counter is the target's own: never copied (see the module comment).
            shared.retain(|c| c != COUNTER);
            match keys.iter().find(|k| !shared.iter().any(|c| c == *k)) {
                Some(key) => Err(missing_column(path, table, key)),
                None => Ok(Columns(shared)),
            }
        };
        let settings = copied(SETTINGS, &["guid", "account_id"])?;
        let views = copied(VIEWS, &["guid", "account_id", "viewed_at"])?;
        let home = Home {
            settings_times: present(&TIME_COLUMNS, &settings.0),
            conn,
            path,
            since,
            settings,
            views,
        };
        // Every time is read once now, so that one we cannot read refuses
        // the merge before the target is opened for writing.
        for (table, times) in [
            (SETTINGS, &home.settings_times[..]),
            (VIEWS, &["viewed_at".to_string()][..]),
        ] {
            if times.is_empty() {
                continue;
            }
            let sql = select_since(table, &[], times, "");
            home.each_since(&sql, &[], times, table, |_, _, _| Ok(()))?;
        }
        Ok(home)
    }

    /// Calls `each` with the latest settings row of every (guid,
    /// account_id) touched after `since`, and its latest time, in the order
    /// of each key's first such row.
    pub(super) fn each_setting(
        &self,
        mut each: impl FnMut(&[Value], i64) -> Result<(), PlexDbError>,
    ) -> Result<(), PlexDbError> {
        let (columns, times) = (&self.settings.0, &self.settings_times);
        // `+account_id`: the guid index, not the account's (see `apply`).
        let mut same_key = self.prepare(&select_since(
            SETTINGS,
            columns,
            times,
            "guid IS ?2 AND +account_id IS ?3 AND",
        ))?;
        let all = select_since(SETTINGS, columns, times, "");
        self.each_since(&all, columns, times, SETTINGS, |row, stamp, id| {
            let (first, latest, stamp) =
                self.latest_of_key(&mut same_key, row)?
                    .unwrap_or((id, row.to_vec(), stamp));
            // Applied at the key's first row, not again at its others.
            if first == id {
                each(&latest, stamp)?;
            }
            Ok(())
        })
    }

    /// Of the settings rows with `row`'s guid and account_id touched after
    /// `since` (one, nearly always): the first one's id, and the latest
    /// with its time. Of two equally recent, the later row, so that
    /// duplicates at home cannot make a preview and a merge disagree.
    fn latest_of_key(
        &self,
        same_key: &mut Statement,
        row: &[Value],
    ) -> Result<Option<(i64, Vec<Value>, i64)>, PlexDbError> {
        let (columns, times) = (&self.settings.0, &self.settings_times);
        let key = |row: &[Value]| {
            let value = |c| key_text(&self.settings.get(row, c));
            (value("guid"), value("account_id"))
        };
        let wanted = key(row);
        let (guid, account) = (
            self.settings.get(row, "guid"),
            self.settings.get(row, "account_id"),
        );
        let mut rows = same_key
            .query(params![self.since, guid, account])
            .map_err(|e| self.error(e))?;
        let mut found: Option<(i64, Vec<Value>, i64)> = None;
        while let Some(r) = rows.next().map_err(|e| self.error(e))? {
            let (values, id) = self.values(r, columns.len() + times.len())?;
            // SQL's IS may match a value of another type; a key does not.
            if key(&values) != wanted {
                continue;
            }
            match latest(&values[columns.len()..], times, self.path, SETTINGS)? {
                Some(stamp) if stamp > self.since => match &mut found {
                    Some((_, latest, at)) if stamp >= *at => (*latest, *at) = (values, stamp),
                    Some(_) => {}
                    None => found = Some((id, values, stamp)),
                },
                _ => {}
            }
        }
        Ok(found)
    }

    /// Calls `each` with every history row viewed after `since`, in id
    /// order, and its id (for [`EarlierViews`]).
    pub(super) fn each_view(
        &self,
        mut each: impl FnMut(&[Value], i64) -> Result<(), PlexDbError>,
    ) -> Result<(), PlexDbError> {
        let columns = &self.views.0;
        let times = ["viewed_at".to_string()];
        let all = select_since(VIEWS, columns, &times, "");
        self.each_since(&all, columns, &times, VIEWS, |row, _, id| each(row, id))
    }

    /// A lookup of the history rows merged before a given one.
    pub(super) fn earlier_views(&self) -> Result<EarlierViews<'_>, PlexDbError> {
        let stmt = self.prepare(&format!(
            "SELECT 1 FROM {VIEWS} WHERE guid IS ?1 AND +account_id IS ?2
             AND +viewed_at IS ?3 AND id < ?4 LIMIT 1"
        ))?;
        Ok(EarlierViews {
            stmt,
            path: self.path,
        })
    }

    /// The row of `table` with `id`, `id` first, then the columns both DBs
    /// have; None when home lacks the row or either DB the table (devices
    /// in an old schema).
    pub(super) fn row_by_id(
        &self,
        table: &str,
        id: i64,
        target: &Connection,
        into: &Path,
    ) -> Result<Option<Named>, PlexDbError> {
        if columns(&self.conn, self.path, table)?.is_empty()
            || columns(target, into, table)?.is_empty()
        {
            return Ok(None);
        }
        let mut shared = shared_columns(&self.conn, self.path, target, into, table)?;
        shared.insert(0, "id".into());
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM {} WHERE id = ?1",
                column_list(&shared),
                quote_ident(table)
            ))
            .and_then(|mut s| {
                s.query_row([id], |r| {
                    (0..shared.len())
                        .map(|i| r.get::<_, Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .optional()
            })
            .map_err(|e| self.error(e))?;
        Ok(row.map(|values| Named {
            columns: shared,
            values,
        }))
    }

    /// Runs `sql` (from [`select_since`]) and calls `each` with every row
    /// whose latest time is after `since`: its values, that time, its id.
    fn each_since(
        &self,
        sql: &str,
        columns: &[String],
        times: &[String],
        table: &str,
        mut each: impl FnMut(&[Value], i64, i64) -> Result<(), PlexDbError>,
    ) -> Result<(), PlexDbError> {
        let mut stmt = self.prepare(sql)?;
        let mut rows = stmt.query([self.since]).map_err(|e| self.error(e))?;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let (values, id) = self.values(row, columns.len() + times.len())?;
            if let Some(stamp) = latest(&values[columns.len()..], times, self.path, table)?
                && stamp > self.since
            {
                each(&values, stamp, id)?;
            }
        }
        Ok(())
    }

    /// A row's first `width` values, and its id (the last column).
    fn values(&self, row: &Row, width: usize) -> Result<(Vec<Value>, i64), PlexDbError> {
        let values = (0..width)
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|v| Ok((v, row.get(width)?)))
            .map_err(|e| self.error(e))?;
        Ok(values)
    }

    fn prepare(&self, sql: &str) -> Result<Statement<'_>, PlexDbError> {
        self.conn.prepare(sql).map_err(|e| self.error(e))
    }

    fn error(&self, e: rusqlite::Error) -> PlexDbError {
        PlexDbError::sqlite(self.path, e)
    }
}

/// `SELECT columns, times, id` of the rows of `table` matching `scope`
/// (parameters from ?2) with a time after ?1, in id order.
fn select_since(table: &str, columns: &[String], times: &[String], scope: &str) -> String {
    // SQLite orders every text after every number, so text date-times pass
    // this coarse filter too; the exact test is done on each row, parsed.
    let filter = match times {
        [] => "?1 IS NULL".to_string(),
        _ => times
            .iter()
            .map(|t| format!("{} > ?1", quote_ident(t)))
            .collect::<Vec<_>>()
            .join(" OR "),
    };
    format!(
        "SELECT {}, id FROM {} WHERE {scope} ({filter}) ORDER BY id",
        column_list(&[columns, times].concat()),
        quote_ident(table)
    )
}

/// History rows before a given id with its guid, account and time (so
/// viewed after `since` too): such a row was merged first. Held, not
/// cached, like [`super::guids::Sections`].
pub(super) struct EarlierViews<'h> {
    stmt: Statement<'h>,
    path: &'h Path,
}

impl EarlierViews<'_> {
    pub(super) fn exist(
        &mut self,
        id: i64,
        guid: &Value,
        account: &Value,
        viewed_at: &Value,
    ) -> Result<bool, PlexDbError> {
        self.stmt
            .exists(params![guid, account, viewed_at, id])
            .map_err(|e| PlexDbError::sqlite(self.path, e))
    }
}
