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
//! do not have. Given `Plex SQLite` (Plex's build, which has the modules,
//! see [`super::plex_sqlite`]), its full `PRAGMA integrity_check` is used
//! instead.
//!
//! An index under a collation of Plex's own (`index_title_sort_icu`) is
//! checked with the collations of [`super::collation`]. Where the order
//! cannot be verified faithfully (a collation we only approximate, or one
//! whose order disagrees with the index while the index holds exactly the
//! table's rows), the index's contents are compared with its table's row by
//! row, and the report names the index whose order was not verified: a
//! damaged index is still corrupt, a sound one is never called so.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

use super::plex_sqlite::PlexSqlite;
use super::{PlexDbError, collation, first_line, open_plex_read_only, quote_ident};

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
    /// Indexes whose contents were verified but not their order.
    #[serde(default)]
    pub order_not_verified: Vec<UnverifiedOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMethod {
    PerTable,
    /// Plex's own shell, as [`PlexSqlite::describe`] names it.
    PlexSqlite(String),
}

/// An index whose rows match its table's, under a collation whose order
/// could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnverifiedOrder {
    pub index: String,
    pub collation: String,
    /// Why, in a line a user understands.
    pub reason: String,
}

/// `ok (...)`: which checker ran, and what it could not verify.
impl std::fmt::Display for IntegrityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.method {
            CheckMethod::PlexSqlite(tool) => write!(f, "ok (Plex SQLite: {tool})")?,
            CheckMethod::PerTable => write!(
                f,
                "ok ({} tables checked with the bundled SQLite, {} virtual tables left to Plex)",
                self.tables_checked,
                self.virtual_tables_skipped.len()
            )?,
        }
        for unverified in &self.order_not_verified {
            write!(
                f,
                "; order of index {} not verified: {}",
                unverified.index, unverified.reason
            )?;
        }
        Ok(())
    }
}

/// Checks `db` without modifying it. Any problem is an error:
/// [`PlexDbError::Corrupt`] names the table and the first problem; a
/// `plex_sqlite` that cannot run is [`PlexDbError::Tool`].
pub fn check(db: &Path, plex_sqlite: Option<&PlexSqlite>) -> Result<IntegrityReport, PlexDbError> {
    // Open ourselves first so that a missing, empty, foreign or non-Plex
    // file gives the same error whatever the method.
    let conn = open_plex_read_only(db)?;
    match plex_sqlite {
        Some(tool) => {
            drop(conn);
            tool.check(db)
        }
        None => check_per_table(&conn, db),
    }
}

/// [`check`] with Plex's own shell where it runs, else the per-table check
/// (which is right too, see the module's doc): a Plex image or install
/// that fails to start its shell must not fail a sound DB.
pub fn check_best(
    db: &Path,
    plex_sqlite: Option<&PlexSqlite>,
) -> Result<IntegrityReport, PlexDbError> {
    match check(db, plex_sqlite) {
        Err(PlexDbError::Tool { tool, detail, .. }) => {
            tracing::warn!(tool = %tool.display(), %detail, "Plex SQLite did not run: checking with the bundled SQLite instead");
            check(db, None)
        }
        other => other,
    }
}

/// An index whose key uses a collation SQLite does not have by itself.
struct CollatedIndex {
    name: String,
    table: String,
    collation: String,
    /// Key columns with their collation and direction, None for an
    /// expression; empty for a partial index (contents not comparable).
    keys: Vec<Option<(String, String, bool)>>,
}

fn check_per_table(conn: &Connection, db: &Path) -> Result<IntegrityReport, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    let (mut tables, virtual_tables) = list_tables(conn).map_err(sqlite)?;
    let collated = collated_indexes(conn).map_err(sqlite)?;
    register_placeholders(conn, &collated).map_err(sqlite)?;
    // The schema table itself holds every root page number: check it first.
    tables.insert(0, "sqlite_schema".into());

    let mut problems = Problems::default();
    // Problems integrity_check found in each collated index, set aside
    // until its contents are compared.
    let mut set_aside: BTreeMap<&str, usize> = BTreeMap::new();
    for table in &tables {
        let sql = format!("PRAGMA integrity_check({})", quote_ident(table));
        let found = conn.prepare(&sql).and_then(|mut stmt| {
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.filter(|r| !matches!(r.as_deref(), Ok("ok")))
                .collect::<Result<Vec<_>, _>>()
        });
        // A B-tree too damaged to walk fails the statement itself.
        let found = found.unwrap_or_else(|e| vec![first_line(&e.to_string())]);
        for problem in found.iter().flat_map(|p| problem_lines(p)) {
            let index = collated
                .iter()
                .find(|i| i.table == *table && names_index(&problem, &i.name));
            match index {
                Some(index) => *set_aside.entry(&index.name).or_default() += 1,
                None => problems.add(table, problem),
            }
        }
    }
    let mut order_not_verified = Vec::new();
    for index in &collated {
        let disagreements = set_aside.get(index.name.as_str()).copied().unwrap_or(0);
        if disagreements == 0 && collation::is_faithful(&index.collation) {
            continue;
        }
        match compare_contents(conn, index) {
            Ok(None) => order_not_verified.push(UnverifiedOrder {
                index: index.name.clone(),
                collation: index.collation.clone(),
                reason: unverified_reason(index, disagreements),
            }),
            Ok(Some(problem)) => problems.add(&index.table, problem),
            Err(e) => problems.add(&index.table, first_line(&e.to_string())),
        }
    }
    problems.into_result(db)?;
    Ok(IntegrityReport {
        method: CheckMethod::PerTable,
        tables_checked: tables.len(),
        virtual_tables_skipped: virtual_tables,
        order_not_verified,
    })
}

/// The first problems found, by table, and how many there were.
#[derive(Default)]
struct Problems {
    kept: Vec<(String, String)>,
    total: usize,
}

impl Problems {
    fn add(&mut self, table: &str, problem: String) {
        self.total += 1;
        if self.kept.len() < KEEP_PROBLEMS {
            self.kept.push((table.to_string(), problem));
        }
    }

    fn into_result(self, db: &Path) -> Result<(), PlexDbError> {
        match self.kept.into_iter().next() {
            None => Ok(()),
            Some((table, problem)) => Err(PlexDbError::Corrupt {
                path: db.to_path_buf(),
                table: Some(table),
                problem,
                more: self.total - 1,
            }),
        }
    }
}

/// Ordinary and virtual tables, by name.
fn list_tables(conn: &Connection) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let mut tables = Vec::new();
    let mut virtual_tables = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, coalesce(sql, '') FROM sqlite_schema WHERE type = 'table' ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, sql) = row?;
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
    Ok((tables, virtual_tables))
}

/// Every index with a key under a collation SQLite lacks by itself.
fn collated_indexes(conn: &Connection) -> rusqlite::Result<Vec<CollatedIndex>> {
    let mut stmt = conn.prepare(
        "SELECT s.name, s.tbl_name, coalesce(l.partial, 0) FROM sqlite_schema s
         LEFT JOIN pragma_index_list(s.tbl_name) l ON l.name = s.name
         WHERE s.type = 'index' ORDER BY s.name",
    )?;
    let indexes: Vec<(String, String, bool)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut keys = conn.prepare(
        "SELECT name, coll, desc FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
    )?;
    let mut collated = Vec::new();
    for (name, table, partial) in indexes {
        let columns: Vec<(Option<String>, String, bool)> = keys
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let Some(foreign) = columns
            .iter()
            .map(|(_, coll, _)| coll)
            .find(|coll| !collation::is_built_in(coll))
        else {
            continue;
        };
        let keys = if partial {
            Vec::new()
        } else {
            columns
                .iter()
                .map(|(column, coll, desc)| column.clone().map(|c| (c, coll.clone(), *desc)))
                .collect()
        };
        collated.push(CollatedIndex {
            collation: foreign.clone(),
            name,
            table,
            keys,
        });
    }
    Ok(collated)
}

/// A collation neither SQLite nor we know gets a byte-order stand-in, so
/// that the rest of its table can be checked; its index's order is then
/// not verified.
fn register_placeholders(conn: &Connection, collated: &[CollatedIndex]) -> rusqlite::Result<()> {
    for index in collated {
        if !collation::is_registered(&index.collation) {
            conn.create_collation(index.collation.as_str(), |a: &str, b: &str| a.cmp(b))?;
        }
    }
    Ok(())
}

/// The problems in one row of integrity_check's output, without the
/// `*** in database main ***` header it puts before the first.
fn problem_lines(row: &str) -> impl Iterator<Item = String> + '_ {
    row.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("*** in database"))
        .map(str::to_string)
}

/// True when an integrity_check message is about `index` ("row 5 missing
/// from index X", "wrong # of entries in index X", ...).
fn names_index(problem: &str, index: &str) -> bool {
    problem
        .strip_suffix(index)
        .is_some_and(|head| head.ends_with("index "))
}

fn unverified_reason(index: &CollatedIndex, disagreements: usize) -> String {
    let what = if disagreements > 0 {
        format!(
            "{disagreements} of its rows are out of order under our {} (Plex's may differ)",
            index.collation
        )
    } else if collation::is_registered(&index.collation) {
        format!("our {} only approximates Plex's", index.collation)
    } else {
        format!("collation {} is unknown to plex-burst", index.collation)
    };
    format!("{what}: its rows match the table's, their order was not verified")
}

/// Compares the rows of a collated index with its table's: None when they
/// are the same, else the first difference.
fn compare_contents(conn: &Connection, index: &CollatedIndex) -> rusqlite::Result<Option<String>> {
    let keys: Option<Vec<&(String, String, bool)>> =
        index.keys.iter().map(Option::as_ref).collect();
    let keys = match keys {
        Some(keys) if !keys.is_empty() => keys,
        _ => {
            return Ok(Some(format!(
                "index {} cannot be compared with its table (a partial or expression index)",
                index.name
            )));
        }
    };
    let columns = keys
        .iter()
        .map(|(c, _, _)| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let order = keys
        .iter()
        .map(|(c, coll, desc)| {
            let direction = if *desc { "DESC" } else { "ASC" };
            format!(
                "{} COLLATE {} {direction}",
                quote_ident(c),
                quote_ident(coll)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let table = quote_ident(&index.table);
    let in_index = entries(
        conn,
        &format!(
            "SELECT {columns}, rowid FROM {table} INDEXED BY {} ORDER BY {order}",
            quote_ident(&index.name)
        ),
    )?;
    let in_table = entries(
        conn,
        &format!("SELECT {columns}, rowid FROM {table} NOT INDEXED"),
    )?;
    if in_index == in_table {
        return Ok(None);
    }
    let first_difference = in_index
        .iter()
        .zip(&in_table)
        .find(|(a, b)| a != b)
        .map(|(a, b)| a.min(b))
        .or_else(|| {
            in_index
                .get(in_table.len())
                .or(in_table.get(in_index.len()))
        });
    let rowid = first_difference.map_or(0, |(_, rowid)| *rowid);
    Ok(Some(format!(
        "index {} holds {} entries for {} rows, first differing at row {rowid}",
        index.name,
        in_index.len(),
        in_table.len()
    )))
}

/// One index entry: its key values as comparable bytes, and its rowid.
type Entry = (Vec<(u8, Vec<u8>)>, i64);

/// The rows of `sql` (key columns, then rowid), sorted.
fn entries(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(sql)?;
    let width = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let mut key = Vec::with_capacity(width - 1);
        for i in 0..width - 1 {
            key.push(match row.get::<_, Value>(i)? {
                Value::Null => (0, Vec::new()),
                Value::Integer(n) => (1, n.to_be_bytes().to_vec()),
                Value::Real(f) => (2, f.to_bits().to_be_bytes().to_vec()),
                Value::Text(t) => (3, t.into_bytes()),
                Value::Blob(b) => (4, b),
            });
        }
        entries.push((key, row.get(width - 1)?));
    }
    entries.sort_unstable();
    Ok(entries)
}
