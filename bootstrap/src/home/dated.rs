//! Plex's dated backups in the home `Databases` folder
//! (`runner::archive::is_dated_backup`) stay where Plex keeps them. A
//! snapshot leaves them out, an install's backup does not copy them (they
//! are Plex's own backups already), and the install hard-links them into
//! the incoming folder just before the exchange: no byte is copied, and at
//! every moment they are in the live folder, so a crash anywhere leaves
//! them there. A rollback links them into the backup before putting it
//! back.

use std::path::Path;

use runner::archive::{DatedBackups, is_dated_backup};

use super::backup::{BackupError, io};

/// One dated backup: its name in the folder and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedBackup {
    pub name: String,
    pub len: u64,
}

/// Plex's dated backups at the top of `dir` (regular files), by name.
pub fn list(dir: &Path) -> Result<Vec<DatedBackup>, BackupError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_dated_backup(&name) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| io(&entry.path(), e))?;
        if meta.is_file() {
            found.push(DatedBackup {
                name,
                len: meta.len(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Their count and bytes.
pub fn tally(found: &[DatedBackup]) -> DatedBackups {
    let mut tally = DatedBackups::default();
    for backup in found {
        tally.add(backup.len);
    }
    tally
}

/// Hard-links each of `found` from `from` into `to` (the same file: bytes,
/// owner, mode and times), then makes `to`'s entries durable.
pub fn link(found: &[DatedBackup], from: &Path, to: &Path) -> Result<(), BackupError> {
    for backup in found {
        let (source, target) = (from.join(&backup.name), to.join(&backup.name));
        std::fs::hard_link(&source, &target).map_err(|e| {
            io(
                &source,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot keep Plex's dated backup in place by a hard link to {}: {e}",
                        target.display()
                    ),
                ),
            )
        })?;
    }
    if !found.is_empty() {
        std::fs::File::open(to)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(to, e))?;
    }
    Ok(())
}

/// Removes the dated backups at the top of `dir`; returns what it removed.
pub fn remove(dir: &Path) -> Result<DatedBackups, BackupError> {
    let found = list(dir)?;
    for backup in &found {
        let path = dir.join(&backup.name);
        std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
    }
    Ok(tally(&found))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn dated_backups_are_listed_linked_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let (home, incoming) = (root.path().join("Databases"), root.path().join("incoming"));
        for dir in [&home, &incoming] {
            std::fs::create_dir(dir).unwrap();
        }
        for (name, data) in [
            ("com.plexapp.plugins.library.db", &b"live"[..]),
            ("com.plexapp.plugins.library.db-wal", b"wal"),
            ("com.plexapp.plugins.library.db-2026-11-20", b"dated"),
            (
                "com.plexapp.plugins.library.blobs.db-2026-11-20",
                b"blobs, dated",
            ),
            ("com.plexapp.plugins.library.db-2026-11-31", b"no such day"),
        ] {
            std::fs::write(home.join(name), data).unwrap();
        }
        std::fs::create_dir(home.join("com.plexapp.plugins.library.db-2026-11-19")).unwrap();

        let found = list(&home).unwrap();
        let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "com.plexapp.plugins.library.blobs.db-2026-11-20",
                "com.plexapp.plugins.library.db-2026-11-20"
            ]
        );
        assert_eq!(
            tally(&found),
            DatedBackups {
                files: 2,
                bytes: 17
            }
        );

        link(&found, &home, &incoming).unwrap();
        for backup in &found {
            let (a, b) = (home.join(&backup.name), incoming.join(&backup.name));
            let (ma, mb) = (
                std::fs::metadata(&a).unwrap(),
                std::fs::metadata(&b).unwrap(),
            );
            assert_eq!((ma.dev(), ma.ino()), (mb.dev(), mb.ino()), "the same file");
        }
        let again = link(&found, &home, &incoming).unwrap_err().to_string();
        assert!(again.contains("hard link"), "{again}");

        assert_eq!(remove(&incoming).unwrap(), tally(&found));
        assert!(list(&incoming).unwrap().is_empty());
        assert_eq!(list(&home).unwrap(), found, "home's are untouched");
    }
}
