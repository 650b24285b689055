//! Moving whole `Databases` folders: the atomic exchange that installs the
//! new one, giving it the owner and modes of the one it replaces, and
//! putting a backup back.

use super::backup::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::LIBRARY_DB;
use super::backup::{BackupError, own, split};

/// Exchanges the two folders in one step (`renameat2(RENAME_EXCHANGE)`):
/// at no moment is there no `Databases` folder. A filesystem without the
/// exchange gets two renames instead (Plex is stopped meanwhile).
pub fn exchange(a: &Path, b: &Path) -> Result<(), BackupError> {
    match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {}
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            tracing::warn!("this filesystem cannot exchange folders atomically: using two renames");
            let aside = aside_name(b, "swapping")?;
            rename(b, &aside)?;
            rename(a, b)?;
            rename(&aside, a)?;
        }
        Err(e) => return Err(io(b, std::io::Error::from(e))),
    }
    sync_parent(b)
}

/// Gives `incoming` and its files the owner, group and mode of `home` and
/// of the files they replace (the library DB's for new names).
pub fn match_ownership(home: &Path, incoming: &Path) -> Result<usize, BackupError> {
    let fallback = std::fs::metadata(home.join(LIBRARY_DB)).map_err(|e| io(home, e))?;
    let mut changed = 0;
    for entry in std::fs::read_dir(incoming).map_err(|e| io(incoming, e))? {
        let entry = entry.map_err(|e| io(incoming, e))?;
        if !entry
            .file_type()
            .map_err(|e| io(&entry.path(), e))?
            .is_file()
        {
            continue;
        }
        let reference = match std::fs::metadata(home.join(entry.file_name())) {
            Ok(meta) => meta,
            Err(_) => fallback.clone(),
        };
        changed += usize::from(give(&entry.path(), &reference)?);
    }
    let dir = std::fs::metadata(home).map_err(|e| io(home, e))?;
    changed += usize::from(give(incoming, &dir)?);
    Ok(changed)
}

/// Owner and mode of `reference` onto `path`; true when something changed.
fn give(path: &Path, reference: &std::fs::Metadata) -> Result<bool, BackupError> {
    let now = std::fs::metadata(path).map_err(|e| io(path, e))?;
    let mode = reference.mode() & 0o7777;
    let differs =
        (now.uid(), now.gid(), now.mode() & 0o7777) != (reference.uid(), reference.gid(), mode);
    if differs {
        own(path, reference, false)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(path, e))?;
    }
    Ok(differs)
}

/// Puts `backup` in place of `databases_dir` by renames; what was there
/// moves to a sibling `<name>.plex-burst-<why>-<stamp>`, returned.
pub fn put_back(
    backup: &Path,
    databases_dir: &Path,
    why: &str,
) -> Result<Option<PathBuf>, BackupError> {
    let aside = if databases_dir.exists() {
        let aside = aside_name(databases_dir, why)?;
        rename(databases_dir, &aside)?;
        Some(aside)
    } else {
        None
    };
    rename(backup, databases_dir)?;
    sync_parent(databases_dir)?;
    Ok(aside)
}

fn aside_name(dir: &Path, why: &str) -> Result<PathBuf, BackupError> {
    super::backup::stamped_sibling(dir, &format!(".plex-burst-{why}-"))
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::rename(from, to).map_err(|e| io(from, e))
}

fn sync_parent(path: &Path) -> Result<(), BackupError> {
    let (parent, _) = split(path)?;
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(&parent, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_exchanged_and_put_back() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("incoming"), root.path().join("Databases"));
        for (dir, text) in [(&a, "new"), (&b, "old")] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join(LIBRARY_DB), text).unwrap();
        }
        std::fs::set_permissions(b.join(LIBRARY_DB), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(a.join("extra.db"), "x").unwrap();
        assert_eq!(
            match_ownership(&b, &a).unwrap(),
            2,
            "the DB and the extra file get 0600"
        );
        assert_eq!(
            std::fs::metadata(a.join("extra.db")).unwrap().mode() & 0o777,
            0o600
        );
        exchange(&a, &b).unwrap();
        assert_eq!(std::fs::read_to_string(b.join(LIBRARY_DB)).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(a.join(LIBRARY_DB)).unwrap(), "old");

        let aside = put_back(&a, &b, "failed")
            .unwrap()
            .expect("something was in place");
        assert_eq!(std::fs::read_to_string(b.join(LIBRARY_DB)).unwrap(), "old");
        assert_eq!(
            std::fs::read_to_string(aside.join(LIBRARY_DB)).unwrap(),
            "new"
        );
        assert!(!a.exists());
        let name = aside.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("Databases.plex-burst-failed-"), "{name}");
    }
}
