//! The stand-in image's `Plex SQLite`. Plex ships its own build of the
//! sqlite3 shell because its DBs need its collation (`icu_root` indexes
//! every library DB: a stock shell stops at "no such collation sequence:
//! icu_root"), its FTS4 tokenizer (`collating`) and `spellfix1`. This one
//! is SQLite (rusqlite's) with the collations the double registers as
//! Plex's, and the shell's command line as the runner uses it:
//! `[-readonly] DB SQL...`, rows in list mode (`|` between columns),
//! errors as `Error: ...` on stderr with status 1.
//!
//! Without Plex's modules a whole-DB `PRAGMA integrity_check` cannot open
//! the virtual tables ("unknown tokenizer: collating"), so that statement
//! checks every ordinary table instead (B-tree and indexes, the virtual
//! tables' shadow tables among them): `ok`, or the problems found.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, OpenFlags};

/// The shell's exit: 0, or 1 after one `Error: ...` line.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the shell's arguments (those after the program name).
pub fn run(args: &[String]) -> Result<()> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let mut rest = args.iter();
    let db = loop {
        match rest.next().map(String::as_str) {
            Some("-readonly") => flags = OpenFlags::SQLITE_OPEN_READ_ONLY,
            Some(option) if option.starts_with('-') => bail!("unknown option: {option}"),
            Some(db) => break PathBuf::from(db),
            None => bail!("usage: Plex SQLite [-readonly] DB SQL... (no interactive mode)"),
        }
    };
    let sql: Vec<&String> = rest.collect();
    if sql.is_empty() {
        bail!("no SQL given: this stand-in runs the SQL on its command line only");
    }
    let conn = Connection::open_with_flags(&db, flags | OpenFlags::SQLITE_OPEN_URI)
        .with_context(|| format!("unable to open database \"{}\"", db.display()))?;
    runner::plexdb::collation::register(&conn)?;
    for text in sql {
        if is_whole_integrity_check(text) {
            check_ordinary_tables(&conn)?;
            continue;
        }
        let mut batch = Batch::new(&conn, text);
        while let Some(mut statement) = batch.next()? {
            let columns = statement.column_count();
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let fields: Vec<String> = (0..columns)
                    .map(|i| row.get_ref(i).map(list_mode))
                    .collect::<rusqlite::Result<_>>()?;
                println!("{}", fields.join("|"));
            }
        }
    }
    Ok(())
}

/// `PRAGMA integrity_check;` on the whole DB, as the runner sends it.
fn is_whole_integrity_check(sql: &str) -> bool {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    words == ["pragma", "integrity_check"]
}

/// `PRAGMA integrity_check("<table>")` on each ordinary table.
fn check_ordinary_tables(conn: &Connection) -> Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut problems = Vec::new();
    for table in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let mut statement = conn.prepare(&format!("PRAGMA integrity_check({quoted})"))?;
        let lines = statement.query_map([], |row| row.get::<_, String>(0))?;
        for line in lines {
            let line = line?;
            if line != "ok" {
                problems.push(line);
            }
        }
    }
    if problems.is_empty() {
        println!("ok");
    }
    for problem in problems {
        println!("{problem}");
    }
    Ok(())
}

/// A value as the shell's list mode shows it (NULL is empty).
fn list_mode(value: ValueRef) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn options_and_sql_are_read_as_the_shell_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db").display().to_string();
        run(&args(&[
            &db,
            "CREATE TABLE t(s); INSERT INTO t VALUES ('a');",
        ]))
        .unwrap();
        let error = run(&args(&["-readonly", &db, "INSERT INTO t VALUES ('b');"])).unwrap_err();
        assert!(format!("{error:#}").contains("readonly"), "{error:#}");
        assert!(run(&args(&["-bail", &db, "SELECT 1"])).is_err());
        assert!(is_whole_integrity_check("pragma  INTEGRITY_CHECK ;"));
        assert!(!is_whole_integrity_check("PRAGMA integrity_check(t);"));
        assert!(run(&args(&[&db])).is_err());
    }
}
