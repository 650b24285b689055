//! The library DBs real Plex servers wrote (`reference/real-plex-dbs/` in
//! the shared folder), for tests that check plex-burst on what Plex really
//! writes. Tests work on copies: the originals are never opened.

use std::path::{Path, PathBuf};

use crate::fixture::SHARED_ENV;

/// The one that is really damaged (a broken B-tree page).
pub const DAMAGED: &str = "1.41.3";

/// The library DB's file name, as Plex names it.
pub const DB_NAME: &str = "com.plexapp.plugins.library.db";

/// One real DB: its Plex version and the folder holding it (with its
/// `-wal` where one was committed beside it).
#[derive(Debug, Clone)]
pub struct RealDb {
    pub version: String,
    pub dir: PathBuf,
}

impl RealDb {
    pub fn is_damaged(&self) -> bool {
        self.version == DAMAGED
    }

    /// Copies the DB and its `-wal` into `dir` (created), writable; returns
    /// the copy's path.
    pub fn copy_into(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("copy folder creatable");
        for suffix in ["", "-wal"] {
            let from = self.dir.join(format!("{DB_NAME}{suffix}"));
            if from.exists() {
                let to = dir.join(format!("{DB_NAME}{suffix}"));
                std::fs::copy(&from, &to)
                    .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
                let mut perms = std::fs::metadata(&to).expect("copied").permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&to, perms).expect("copy made writable");
            }
        }
        dir.join(DB_NAME)
    }
}

/// The folder of real DBs. Panics, saying what is missing, when the shared
/// folder is not there: these tests never skip silently.
pub fn folder() -> PathBuf {
    let shared = std::env::var_os(SHARED_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let folder = shared.join("reference/real-plex-dbs");
    assert!(
        folder.is_dir(),
        "the real Plex DBs are missing: {} is not a folder (set {SHARED_ENV} to the shared folder)",
        folder.display()
    );
    folder
}

/// Every real DB, by version.
pub fn all() -> Vec<RealDb> {
    let folder = folder();
    let mut dbs: Vec<RealDb> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()))
        .map(|e| e.expect("folder entry").path())
        .filter(|dir| dir.join(DB_NAME).is_file())
        .map(|dir| RealDb {
            version: dir.file_name().unwrap().to_string_lossy().into_owned(),
            dir,
        })
        .collect();
    dbs.sort_by(|a, b| a.version.cmp(&b.version));
    assert!(
        dbs.len() >= 7 && dbs.iter().any(RealDb::is_damaged),
        "expected the seven real Plex DBs in {}, found {:?}",
        folder.display(),
        dbs.iter().map(|d| &d.version).collect::<Vec<_>>()
    );
    dbs
}

/// The real DB of one version.
pub fn version(version: &str) -> RealDb {
    all()
        .into_iter()
        .find(|d| d.version == version)
        .unwrap_or_else(|| panic!("no real Plex DB {version} in {}", folder().display()))
}

/// Every real DB but the damaged one.
pub fn sound() -> Vec<RealDb> {
    all().into_iter().filter(|d| !d.is_damaged()).collect()
}
