//! An integrity check that works on a Plex DB.
//!
//! A plain `PRAGMA integrity_check` in stock SQLite (>= 3.44) also checks
//! virtual tables, so on a valid Plex DB it fails with `unknown tokenizer:
//! collating`. Instead, with stock SQLite, every ordinary table is checked
//! alone: `PRAGMA integrity_check("<table>")` walks the table's B-tree and
//! all its indexes. The shadow tables behind the virtual tables
//! (`fts4_*_segments`, `spellfix_*_vocab`, `locations_node`, ...) are
//! ordinary tables and get checked too; only the virtual tables themselves
//! are skipped, as their check would compare index content using modules we
//! do not have. Given `Plex SQLite` (Plex's build, which has the modules),
//! its full `PRAGMA integrity_check` is used instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{PlexDbError, first_line, open_plex_read_only, quote_ident};

/// Problems kept per check; the rest are only counted.
const KEEP_PROBLEMS: usize = 20;

/// A check that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    pub method: CheckMethod,
    /// Ordinary tables checked (with their indexes); 0 with Plex SQLite,
    /// which checks the whole file at once.
    pub tables_checked: usize,
    /// Virtual tables not checked by the per-table method.
    pub virtual_tables_skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMethod {
    PerTable,
    PlexSqlite(PathBuf),
}

/// Checks `db` without modifying it. Any problem is an error:
/// [`PlexDbError::Corrupt`] names the table and the first problem.
pub fn check(db: &Path, plex_sqlite: Option<&Path>) -> Result<IntegrityReport, PlexDbError> {
    // Open ourselves first so that a missing, empty, foreign or non-Plex
    // file gives the same error whatever the method.
    let conn = open_plex_read_only(db)?;
    match plex_sqlite {
        Some(tool) => {
            drop(conn);
            check_with_tool(db, tool)
        }
        None => check_per_table(&conn, db),
    }
}

fn check_per_table(conn: &rusqlite::Connection, db: &Path) -> Result<IntegrityReport, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    let mut tables = Vec::new();
    let mut virtual_tables = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT name, coalesce(sql, '') FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sqlite)?;
        for row in rows {
            let (name, sql) = row.map_err(sqlite)?;
            let is_virtual = sql
                .trim_start()
                .get(..20)
                .is_some_and(|s| s.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"));
            if is_virtual {
                virtual_tables.push(name)
            } else {
                tables.push(name)
            }
        }
    }
    // The schema table itself holds every root page number: check it first.
    tables.insert(0, "sqlite_schema".into());

    let mut problems: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    for table in &tables {
        let sql = format!("PRAGMA integrity_check({})", quote_ident(table));
        let found = conn.prepare(&sql).and_then(|mut stmt| {
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.filter(|r| !matches!(r.as_deref(), Ok("ok")))
                .collect::<Result<Vec<_>, _>>()
        });
        // A B-tree too damaged to walk fails the statement itself.
        let found = found.unwrap_or_else(|e| vec![first_line(&e.to_string())]);
        total += found.len();
        for problem in found {
            if problems.len() < KEEP_PROBLEMS {
                problems.push((table.clone(), problem));
            }
        }
    }
    if let Some((table, problem)) = problems.into_iter().next() {
        return Err(PlexDbError::Corrupt {
            path: db.to_path_buf(),
            table: Some(table),
            problem,
            more: total - 1,
        });
    }
    Ok(IntegrityReport {
        method: CheckMethod::PerTable,
        tables_checked: tables.len(),
        virtual_tables_skipped: virtual_tables,
    })
}

/// `Plex SQLite -readonly <db> "PRAGMA integrity_check;"` prints `ok` or
/// one line per problem.
fn check_with_tool(db: &Path, tool: &Path) -> Result<IntegrityReport, PlexDbError> {
    let output = Command::new(tool)
        .arg("-readonly")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .map_err(|e| PlexDbError::Tool {
            tool: tool.into(),
            path: db.into(),
            detail: format!("cannot run: {e}"),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if output.status.success() && lines == ["ok"] {
        return Ok(IntegrityReport {
            method: CheckMethod::PlexSqlite(tool.into()),
            tables_checked: 0,
            virtual_tables_skipped: vec![],
        });
    }
    let path = db.to_path_buf();
    if stderr.contains("file is not a database") {
        return Err(PlexDbError::NotADatabase(path));
    }
    if output.status.success() || stderr.contains("malformed") || stderr.contains("corrupt") {
        let mut all = lines
            .iter()
            .map(|l| l.to_string())
            .chain(stderr.lines().map(first_line).filter(|l| !l.is_empty()));
        let problem = all
            .next()
            .unwrap_or_else(|| "integrity_check printed nothing".into());
        let more = all.count();
        return Err(PlexDbError::Corrupt {
            path,
            table: None,
            problem,
            more,
        });
    }
    let detail = first_line(&stderr);
    let detail = if detail.is_empty() {
        format!("exited with {}", output.status)
    } else {
        detail
    };
    Err(PlexDbError::Tool {
        tool: tool.into(),
        path,
        detail,
    })
}
