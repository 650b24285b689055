//! The target, a file downloaded from the cloud: untrusted. Opened as
//! every toolkit connection is (`plexdb::harden`: `trusted_schema` off,
//! SQLite's defensive mode); refused when a table the merge writes is not
//! as Plex makes it; and its change counter.

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{COUNTER, WRITTEN, columns, invalid};
use crate::plexdb::{PlexDbError, open_plex_read_only, quote_ident};

/// A Plex DB opened read-only (hardened, as every toolkit connection).
pub(super) fn open_read(path: &Path) -> Result<Connection, PlexDbError> {
    open_plex_read_only(path)
}

/// Refuses a target whose written tables carry a trigger or are views:
/// Plex makes neither, and either would run SQL of the file's choosing.
pub(super) fn refuse_foreign_schema(conn: &Connection, path: &Path) -> Result<(), PlexDbError> {
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
pub(super) struct Counter {
    last: i64,
}

impl Counter {
    /// The maximum over every `changed_at` / `*_changed_at` column of the
    /// ordinary tables (virtual ones may need modules we lack).
    pub(super) fn of(conn: &Connection, path: &Path) -> Result<Counter, PlexDbError> {
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

    pub(super) fn next(&mut self, path: &Path) -> Result<Value, PlexDbError> {
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
