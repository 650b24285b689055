//! A consistent copy of the home DBs while Plex may be running, for a run
//! to work on: SQLite's online backup API (lessons.md 22), never a file copy
//! of a live WAL-mode DB.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use runner::archive::DatedBackups;

use super::{BLOBS_DB, LIBRARY_DB, dated};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no Plex library DB at {}", .0.display())]
    NoLibrary(PathBuf),
    #[error("cannot copy {}: {detail}", path.display())]
    Copy { path: PathBuf, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    PlexDb(#[from] runner::plexdb::PlexDbError),
    #[error(transparent)]
    Listing(#[from] super::BackupError),
}

/// What [`consistent_copy`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCopy {
    /// The copies, in `dest`.
    pub files: Vec<PathBuf>,
    /// Home rows stamped after this unix second may be missing from the
    /// copy: the second before the copy started. (A change made in the
    /// copy's own second may or may not be in it; claiming one second
    /// earlier makes the watch-state merge re-apply it, which is harmless
    /// as the merge is idempotent.)
    pub snapshot_time: i64,
    /// Plex's dated backups in `databases_dir`, not copied.
    pub left_out: DatedBackups,
}

/// Copies the library DB and the blobs DB (if any) from `databases_dir`
/// into `dest` (created if needed), each as one self-contained file.
/// Plex's dated backups (`*.db-YYYY-MM-DD`, only the home server can use
/// them) and `-wal`/`-shm` files are not copied: the copies hold the WAL's
/// committed content.
pub fn consistent_copy(databases_dir: &Path, dest: &Path) -> Result<SnapshotCopy, SnapshotError> {
    let library = databases_dir.join(LIBRARY_DB);
    if !library.is_file() {
        return Err(SnapshotError::NoLibrary(library));
    }
    let left_out = dated::list(databases_dir)?;
    std::fs::create_dir_all(dest).map_err(|e| io(dest, e))?;
    let snapshot_time = unix_now() - 1;
    let mut files = Vec::new();
    for name in [LIBRARY_DB, BLOBS_DB] {
        let source = databases_dir.join(name);
        if name != LIBRARY_DB && !source.is_file() {
            continue;
        }
        let target = dest.join(name);
        runner::plexdb::copy::copy_live(&source, &target)?;
        files.push(target);
    }
    sync_dir(dest)?;
    tracing::info!(files = files.len(), snapshot_time, "home DB copied");
    Ok(SnapshotCopy {
        files,
        snapshot_time,
        left_out: dated::tally(&left_out),
    })
}

/// Every library root (`section_locations.root_path`), for the manifest.
pub fn library_roots(db: &Path) -> Result<Vec<String>, SnapshotError> {
    let conn = runner::plexdb::open_read_only(db)?;
    let copy_error = |e: rusqlite::Error| SnapshotError::Copy {
        path: db.to_path_buf(),
        detail: e.to_string(),
    };
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT root_path FROM section_locations
             WHERE root_path IS NOT NULL ORDER BY root_path",
        )
        .map_err(copy_error)?;
    let roots = stmt
        .query_map([], |r| r.get(0))
        .map_err(copy_error)?
        .collect::<Result<Vec<String>, _>>()
        .map_err(copy_error)?;
    Ok(roots)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn io(path: &Path, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn wal_db(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE section_locations (id INTEGER PRIMARY KEY, root_path varchar(255));
             INSERT INTO section_locations(root_path) VALUES ('/data/music'), ('/data/movies'), ('/data/music');",
        )
        .unwrap();
        conn
    }

    #[test]
    fn copies_what_a_live_writer_committed_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (home, dest) = (dir.path().join("Databases"), dir.path().join("snap"));
        std::fs::create_dir(&home).unwrap();
        // Plex keeps its connection open: committed rows sit in the -wal.
        let live = wal_db(&home.join(LIBRARY_DB));
        live.execute(
            "INSERT INTO section_locations(root_path) VALUES ('/data/photos')",
            [],
        )
        .unwrap();
        assert!(home.join(format!("{LIBRARY_DB}-wal")).exists());
        std::fs::write(home.join(format!("{LIBRARY_DB}-2026-11-20")), b"old").unwrap();
        std::fs::write(home.join(format!("{LIBRARY_DB}-2026-11-20-wal")), b"wal").unwrap();
        std::fs::write(home.join(format!("{BLOBS_DB}-2026-11-20")), b"blobs").unwrap();
        let before = unix_now();

        let copy = consistent_copy(&home, &dest).unwrap();
        assert_eq!(copy.files, [dest.join(LIBRARY_DB)], "no blobs DB here");
        assert!(copy.snapshot_time < before + 1 && copy.snapshot_time >= before - 2);
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [LIBRARY_DB], "only the DB itself, one file");
        assert_eq!(
            copy.left_out,
            DatedBackups {
                files: 3,
                bytes: 11
            }
        );
        assert_eq!(
            library_roots(&dest.join(LIBRARY_DB)).unwrap(),
            ["/data/movies", "/data/music", "/data/photos"]
        );
        drop(live);
    }

    #[test]
    fn a_folder_without_a_library_db_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = consistent_copy(dir.path(), &dir.path().join("x")).unwrap_err();
        assert!(matches!(error, SnapshotError::NoLibrary(_)), "{error}");
    }
}
