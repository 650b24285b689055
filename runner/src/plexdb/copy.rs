//! Consistent copies of a Plex DB as one self-contained file, with SQLite's
//! online backup (lessons.md 22: never a file copy of a live WAL-mode DB):
//! the remap's backup, the home snapshot, the runner's snapshots during
//! Sonic.
//!
//! A copy never blocks Plex's writes for long and never starts over
//! forever: SQLite's backup starts over whenever another connection writes
//! the source between two of its steps, and Plex writes every second or so
//! during Sonic, so a DB of several GB copied in steps would never be done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{PlexDbError, is_closed_wal_db, open_read_only};

/// Pages per step of a copy in steps, the pause between two steps, and
/// the restarts (a write between two steps) it takes before giving up.
const STEP_PAGES: i32 = 1024;
const STEP_PAUSE: Duration = Duration::from_millis(5);
const MAX_RESTARTS: u32 = 20;

/// A consistent copy of the DB at `src`, which Plex may be writing, as the
/// new file `dest`.
///
/// In WAL mode (Plex's) the copy is one backup step, so one read
/// transaction: it sees one state of the DB while Plex's writers go on
/// appending to the WAL (readers never block WAL writers; a checkpoint
/// cannot pass the reader, so the WAL grows until the copy is done). A
/// closed WAL-mode DB, which nobody writes, is copied in one step too. In
/// rollback-journal mode a reader blocks writers, so the copy goes in
/// short steps, and gives up once the DB has been written during it
/// [`MAX_RESTARTS`] times.
pub fn copy_live(src: &Path, dest: &Path) -> Result<(), PlexDbError> {
    let source = open_read_only(src)?;
    // Opened `immutable`, a closed WAL-mode DB reports `delete`.
    let mode: String = source
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(|e| PlexDbError::sqlite(src, e))?;
    if mode.eq_ignore_ascii_case("wal") || is_closed_wal_db(src) {
        return copy_connection(&source, src, dest);
    }
    tracing::info!(
        db = %src.display(),
        mode,
        "not in WAL mode: copying in steps, which start over whenever Plex writes"
    );
    into_file(dest, |out| {
        let backup = Backup::new(&source, out).map_err(|e| PlexDbError::sqlite(src, e))?;
        let mut restarts = 0;
        let mut remaining = i32::MAX;
        loop {
            match backup
                .step(STEP_PAGES)
                .map_err(|e| PlexDbError::sqlite(src, e))?
            {
                StepResult::Done => return Ok(()),
                StepResult::More => {}
                _ => return Err(PlexDbError::Busy(src.to_path_buf())),
            }
            // A step copies pages unless the copy started over.
            let progress = backup.progress();
            if progress.remaining >= remaining {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(PlexDbError::WrittenDuringCopy {
                        path: src.to_path_buf(),
                        restarts,
                        mode: mode.clone(),
                    });
                }
            }
            remaining = progress.remaining;
            std::thread::sleep(STEP_PAUSE);
        }
    })
}

/// Copies the DB as `conn` (open on `db`) sees it, in one backup step, as
/// the new file `dest`: for a caller that holds the DB's write lock, or a
/// WAL-mode reader.
pub fn copy_connection(conn: &Connection, db: &Path, dest: &Path) -> Result<(), PlexDbError> {
    into_file(dest, |out| {
        let backup = Backup::new(conn, out).map_err(|e| PlexDbError::sqlite(db, e))?;
        match backup.step(-1).map_err(|e| PlexDbError::sqlite(db, e))? {
            StepResult::Done => Ok(()),
            _ => Err(PlexDbError::Busy(db.to_path_buf())),
        }
    })
}

/// Fills a new DB at `dest` + `.partial` with `fill`, folds a WAL-mode
/// header into one plain file, fsyncs it and renames it to `dest`; the
/// partial file is removed when anything fails.
fn into_file(
    dest: &Path,
    fill: impl FnOnce(&mut Connection) -> Result<(), PlexDbError>,
) -> Result<(), PlexDbError> {
    let partial = partial_path(dest);
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut out = Connection::open_with_flags(&partial, flags)
            .map_err(|e| PlexDbError::sqlite(&partial, e))?;
        fill(&mut out)?;
        out.execute_batch("PRAGMA journal_mode = DELETE")
            .map_err(|e| PlexDbError::sqlite(&partial, e))?;
        out.close()
            .map_err(|(_, e)| PlexDbError::sqlite(&partial, e))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| PlexDbError::io(&partial, e))?;
        std::fs::rename(&partial, dest).map_err(|e| PlexDbError::io(dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_one_plain_file_holding_what_the_wal_had_and_nothing_is_left_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("live.db");
        let live = Connection::open(&src).unwrap();
        live.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t(n INTEGER); INSERT INTO t VALUES (1), (2), (3);",
        )
        .unwrap();
        assert!(src.with_file_name("live.db-wal").metadata().unwrap().len() > 0);
        let dest = dir.path().join("copy.db");
        copy_live(&src, &dest).unwrap();
        let copy = Connection::open(&dest).unwrap();
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        let n: i64 = copy
            .query_row("SELECT sum(n) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 6);
        // A destination that cannot be written: an error, and no partial file.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::create_dir(blocked.join("copy.db")).unwrap();
        assert!(copy_live(&src, &blocked.join("copy.db")).is_err());
        let left: Vec<_> = std::fs::read_dir(&blocked)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["copy.db"]);
    }
}
