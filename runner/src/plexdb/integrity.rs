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
//! The tables are independent: they are checked in parallel, each worker
//! on its own read-only connection, the largest first, and the report is
//! put together in table order, so it does not depend on the workers.
//! The user-size fixture's `metadata_items` (24 B-trees) is about 70% of
//! the work, which bounds the gain on 2 cores to about 0.7x.
//!
//! An index under a collation of Plex's own (`index_title_sort_icu`) is
//! checked with the collations of [`super::collation`]. Where the order
//! cannot be verified faithfully (a collation we only approximate, or one
//! whose order disagrees with the index while the index holds exactly the
//! table's rows), the index's contents are compared with its table's row by
//! row, and the report names the index whose order was not verified: a
//! damaged index is still corrupt, a sound one is never called so.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

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
/// `plex_sqlite` that cannot run is [`PlexDbError::Tool`]. The per-table
/// method uses every core ([`check_with`]).
pub fn check(db: &Path, plex_sqlite: Option<&PlexSqlite>) -> Result<IntegrityReport, PlexDbError> {
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    check_with(db, plex_sqlite, cores)
}

/// [`check`] with the per-table method spread over `workers` threads, each
/// on its own read-only connection. The report and the error do not depend
/// on `workers` (a benchmark compares 1 with all cores).
pub fn check_with(
    db: &Path,
    plex_sqlite: Option<&PlexSqlite>,
    workers: NonZeroUsize,
) -> Result<IntegrityReport, PlexDbError> {
    // Open ourselves first so that a missing, empty, foreign or non-Plex
    // file gives the same error whatever the method.
    let conn = open_plex_read_only(db)?;
    match plex_sqlite {
        Some(tool) => {
            drop(conn);
            tool.check(db)
        }
        None => check_per_table(&conn, db, workers.get()),
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

fn check_per_table(
    conn: &Connection,
    db: &Path,
    workers: usize,
) -> Result<IntegrityReport, PlexDbError> {
    let sqlite = |e| PlexDbError::sqlite(db, e);
    let (mut tables, virtual_tables) = list_tables(conn).map_err(sqlite)?;
    let collated = collated_indexes(conn).map_err(sqlite)?;
    register_placeholders(conn, &collated).map_err(sqlite)?;
    // The schema table itself holds every root page number: check it first.
    tables.insert(0, "sqlite_schema".into());
    let weights = weights(conn, &tables).map_err(sqlite)?;

    let checks = in_parallel(db, &collated, &tables, &weights, workers, |conn, table| {
        check_table(conn, table, &collated)
    })?;
    // Reported as one connection checking table after table would.
    let mut problems = Problems::default();
    let mut compared = Vec::new();
    for (table, check) in tables.iter().zip(checks) {
        for problem in check.problems {
            problems.add(table, problem);
        }
        compared.extend(check.compared);
    }
    compared.sort_by_key(|c| c.index);
    let mut order_not_verified = Vec::new();
    for Compared {
        index,
        disagreements,
        result,
    } in compared
    {
        let index = &collated[index];
        match result {
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

/// What the check of one table found.
struct TableCheck {
    /// Problems, except those about a collated index.
    problems: Vec<String>,
    /// The table's collated indexes whose contents were compared.
    compared: Vec<Compared>,
}

struct Compared {
    /// Position in the list of collated indexes.
    index: usize,
    /// Problems integrity_check found in the index, set aside.
    disagreements: usize,
    /// [`compare_contents`]'s answer.
    result: rusqlite::Result<Option<String>>,
}

/// `integrity_check(table)`, then the contents of each collated index of
/// the table whose order it could not vouch for.
fn check_table(conn: &Connection, table: &str, collated: &[CollatedIndex]) -> TableCheck {
    let started = Instant::now();
    let sql = format!("PRAGMA integrity_check({})", quote_ident(table));
    let found = conn.prepare(&sql).and_then(|mut stmt| {
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.filter(|r| !matches!(r.as_deref(), Ok("ok")))
            .collect::<Result<Vec<_>, _>>()
    });
    // A B-tree too damaged to walk fails the statement itself.
    let found = found.unwrap_or_else(|e| vec![first_line(&e.to_string())]);
    let mut problems = Vec::new();
    let mut set_aside = vec![0; collated.len()];
    for problem in found.iter().flat_map(|p| problem_lines(p)) {
        let index = collated
            .iter()
            .position(|i| i.table == table && names_index(&problem, &i.name));
        match index {
            Some(n) => set_aside[n] += 1,
            None => problems.push(problem),
        }
    }
    let compared = collated
        .iter()
        .enumerate()
        .filter(|(n, i)| {
            i.table == table && (set_aside[*n] > 0 || !collation::is_faithful(&i.collation))
        })
        .map(|(n, i)| Compared {
            index: n,
            disagreements: set_aside[n],
            result: compare_contents(conn, i),
        })
        .collect();
    tracing::debug!(table, elapsed = ?started.elapsed(), "table checked");
    TableCheck { problems, compared }
}

/// The check's work on each table, roughly: it walks the table and looks
/// every row up in each index, so rows times (1 + indexes). `count(*)`
/// reads only the table's smallest B-tree: 0.1 s for all tables of the
/// user-size fixture (731 MB), where dbstat's page counts take 3 s (every
/// page read) and `sqlite_stat1` is as old as Plex's last ANALYZE. Only
/// the order of the work depends on it: a count that fails counts as 0.
fn weights(conn: &Connection, tables: &[String]) -> rusqlite::Result<Vec<u64>> {
    let indexes: HashMap<String, u64> = conn
        .prepare(
            "SELECT tbl_name, count(*) FROM sqlite_schema WHERE type = 'index' GROUP BY tbl_name",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    Ok(tables
        .iter()
        .map(|table| {
            let rows: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM {}", quote_ident(table)),
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            let indexes = indexes.get(table).copied().unwrap_or(0);
            (rows as u64).saturating_mul(1 + indexes)
        })
        .collect())
}

/// Runs `work` on every item, the heaviest first so that the largest table
/// does not finish last, on up to `workers` threads, each with its own
/// read-only connection to `db`; returns the results in `items`' order.
fn in_parallel<T: Sync, R: Send>(
    db: &Path,
    collated: &[CollatedIndex],
    items: &[T],
    weights: &[u64],
    workers: usize,
    work: impl Fn(&Connection, &T) -> R + Sync,
) -> Result<Vec<R>, PlexDbError> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
    let next = AtomicUsize::new(0);
    let worker = || -> Result<Vec<(usize, R)>, PlexDbError> {
        // Opened as the caller's was, with the same stand-in collations.
        let conn = open_plex_read_only(db)?;
        register_placeholders(&conn, collated).map_err(|e| PlexDbError::sqlite(db, e))?;
        let mut done = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((i, work(&conn, &items[i])));
        }
        Ok(done)
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers.clamp(1, items.len().max(1)))
            .map(|_| scope.spawn(worker))
            .collect();
        for thread in threads {
            let done = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            for (i, result) in done {
                results[i] = Some(result);
            }
        }
        Ok(())
    })?;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every item was worked on"))
        .collect())
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

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    /// The tables of a Plex library and others around them, each spanning
    /// several 1 KiB pages, the last the largest; indexes under Plex's
    /// collations and under one unknown to plex-burst.
    fn library(path: &Path) {
        let conn = Connection::open(path).unwrap();
        collation::register(&conn).unwrap();
        conn.create_collation("mystery", |a: &str, b: &str| b.cmp(a))
            .unwrap();
        conn.execute_batch("PRAGMA page_size = 1024").unwrap();
        for (table, rows) in [
            ("accounts", 50),
            ("library_sections", 100),
            ("media_parts", 300),
            ("metadata_items", 300),
            ("section_locations", 100),
            ("views", 2000),
        ] {
            conn.execute_batch(&format!(
                "CREATE TABLE {table}(id INTEGER PRIMARY KEY, title TEXT);
                 CREATE INDEX {table}_title ON {table}(title);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO {table}(title) SELECT '{table} ' || i || hex(zeroblob(50)) FROM n;"
            ))
            .unwrap();
        }
        conn.execute_batch(
            "CREATE INDEX sort_icu ON metadata_items(title COLLATE icu_root);
             CREATE INDEX sort_natural ON media_parts(title COLLATE naturalsort);
             CREATE INDEX sort_mystery ON views(title COLLATE mystery);",
        )
        .unwrap();
    }

    /// Garbage over the middle of a leaf page of `table`.
    fn damage(db: &Path, table: &str) {
        let conn = Connection::open(db).unwrap();
        let page: i64 = conn
            .query_row(
                "SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf'
                 ORDER BY pageno LIMIT 1 OFFSET 2",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        drop(conn);
        let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.seek(SeekFrom::Start((page as u64 - 1) * 1024 + 512))
            .unwrap();
        file.write_all(&[0xA5; 256]).unwrap();
    }

    fn workers(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn the_report_does_not_depend_on_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("library.db");
        library(&db);
        let report = check_with(&db, None, workers(1)).unwrap();
        let unverified: Vec<&str> = report
            .order_not_verified
            .iter()
            .map(|u| u.index.as_str())
            .collect();
        assert_eq!(unverified, ["sort_mystery", "sort_natural"], "{report:?}");
        assert_eq!(report.tables_checked, 7, "{report:?}");
        for n in [2, 3, 8] {
            assert_eq!(check_with(&db, None, workers(n)).unwrap(), report, "{n}");
        }
    }

    #[test]
    fn damage_is_reported_for_the_first_damaged_table_in_table_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("library.db");
        library(&db);
        // `views` is checked first (the largest), `media_parts` reported.
        damage(&db, "views");
        damage(&db, "media_parts");
        let serial = check_with(&db, None, workers(1)).unwrap_err();
        match &serial {
            PlexDbError::Corrupt { table, more, .. } => {
                assert_eq!(table.as_deref(), Some("media_parts"), "{serial}");
                assert!(*more > 0, "the damage in views is counted: {serial}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        for n in [2, 3, 8] {
            let parallel = check_with(&db, None, workers(n)).unwrap_err();
            assert_eq!(parallel.to_string(), serial.to_string(), "{n} workers");
        }
    }
}
