//! The staging folder beside the destination, and the atomic swap into
//! place. Until `commit` succeeds the destination is never touched; a
//! dropped `Staging` removes what it holds.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::error::ArchiveError;

pub(crate) struct Staging {
    dir: PathBuf,
    dest: PathBuf,
    armed: bool,
}

impl Staging {
    /// Creates `.<name>.partial-<pid>` in the destination's parent (same
    /// filesystem, so the final rename is atomic), after removing any such
    /// folder an earlier, killed extraction left. A destination that is a
    /// symbolic link is resolved: the link stays, its target is replaced.
    pub fn create(dest: &Path) -> Result<Self, ArchiveError> {
        let dest = resolve(dest)?;
        let (parent, name) = split(&dest)?;
        fs::create_dir_all(&parent).map_err(|e| ArchiveError::io("create", &parent, e))?;
        // An extraction killed half way (any earlier process) leaves its
        // staging folder behind: it holds nothing worth keeping.
        let prefix = format!(".{name}.partial-");
        let siblings = fs::read_dir(&parent).map_err(|e| ArchiveError::io("read", &parent, e))?;
        for entry in siblings.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let stale = entry.path();
                tracing::info!(path = %stale.display(), "removing an unfinished extraction");
                fs::remove_dir_all(&stale)
                    .map_err(|e| ArchiveError::io("remove stale", &stale, e))?;
            }
        }
        let dir = parent.join(format!("{prefix}{}", std::process::id()));
        // The received folder is data of the runner's user until its user
        // (the session's chown, the home install) gives it its owner.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ArchiveError::io("create", &dir, e))?;
        Ok(Self {
            dir,
            dest,
            armed: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The destination, symbolic link resolved.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Makes the folders' entries durable (files are synced as written).
    pub fn sync(&self, dirs: &[PathBuf]) -> Result<(), ArchiveError> {
        for dir in dirs.iter().rev().chain([&self.dir]) {
            sync_dir(dir).map_err(|e| ArchiveError::io("sync", dir, e))?;
        }
        Ok(())
    }

    /// Swaps the staging folder into place: an atomic exchange when the
    /// destination exists (then removes the old one), a no-replace rename
    /// otherwise.
    pub fn commit(mut self) -> Result<(), ArchiveError> {
        let exists = match fs::symlink_metadata(&self.dest) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(ArchiveError::io("inspect", &self.dest, e)),
        };
        let flags = if exists {
            RenameFlags::RENAME_EXCHANGE
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        match renameat2(AT_FDCWD, &self.dir, AT_FDCWD, &self.dest, flags) {
            Ok(()) => {}
            // Filesystems without renameat2 flags.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                self.swap_by_renames(exists)?
            }
            Err(e) => return Err(ArchiveError::io("swap into place", &self.dest, e.into())),
        }
        self.armed = false;
        self.sync_parent();
        if exists {
            remove_old(&self.dir); // after the exchange it holds the old folder
        }
        Ok(())
    }

    /// Fallback: old folder aside, new one in, old one back on failure.
    fn swap_by_renames(&self, exists: bool) -> Result<(), ArchiveError> {
        if !exists {
            return fs::rename(&self.dir, &self.dest)
                .map_err(|e| ArchiveError::io("move into place", &self.dest, e));
        }
        let (parent, name) = split(&self.dest)?;
        let aside = parent.join(format!(".{name}.previous-{}", std::process::id()));
        fs::rename(&self.dest, &aside)
            .map_err(|e| ArchiveError::io("move aside", &self.dest, e))?;
        if let Err(e) = fs::rename(&self.dir, &self.dest) {
            if let Err(back) = fs::rename(&aside, &self.dest) {
                tracing::error!(previous = %aside.display(), "cannot move the previous folder back: {back}");
            }
            return Err(ArchiveError::io("move into place", &self.dest, e));
        }
        // Put the old folder where `commit` expects it after an exchange.
        fs::rename(&aside, &self.dir).map_err(|e| ArchiveError::io("move", &aside, e))
    }

    fn sync_parent(&self) {
        if let Ok((parent, _)) = split(&self.dest)
            && let Err(e) = sync_dir(&parent)
        {
            // The new folder is in place either way; only durability is unsure.
            tracing::warn!(folder = %parent.display(), "cannot sync after the swap: {e}");
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            remove_old(&self.dir);
        }
    }
}

fn remove_old(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::warn!(folder = %dir.display(), "cannot remove: {e}");
    }
}

fn resolve(dest: &Path) -> Result<PathBuf, ArchiveError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dest.to_path_buf()),
        Err(e) => Err(ArchiveError::io("inspect", dest, e)),
        Ok(meta) if meta.is_dir() => Ok(dest.to_path_buf()),
        Ok(meta) if meta.file_type().is_symlink() => {
            let target =
                fs::canonicalize(dest).map_err(|e| ArchiveError::io("resolve", dest, e))?;
            if !target.is_dir() {
                return Err(ArchiveError::DestinationNotFolder { path: target });
            }
            Ok(target)
        }
        Ok(_) => Err(ArchiveError::DestinationNotFolder {
            path: dest.to_path_buf(),
        }),
    }
}

fn split(dest: &Path) -> Result<(PathBuf, String), ArchiveError> {
    let name = dest.file_name().and_then(|n| n.to_str());
    match (dest.parent(), name) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok((parent.to_path_buf(), name.to_string()))
        }
        _ => Err(ArchiveError::io(
            "extract into",
            dest,
            io::Error::new(io::ErrorKind::InvalidInput, "not a folder path with a name"),
        )),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dest: &Path, content: &[u8]) -> Staging {
        let staging = Staging::create(dest).expect("create staging");
        fs::write(staging.path().join("a.db"), content).expect("write");
        staging
    }

    #[test]
    fn both_swaps_replace_the_folder_and_leave_nothing_behind() {
        let tmp = tempfile::TempDir::new().expect("tempdir");
        let dest = tmp.path().join("Databases");
        for (round, fallback) in [(1u8, false), (2, true), (3, false)] {
            let staging = staged(&dest, &[round]);
            if fallback {
                // What filesystems without renameat2 flags get.
                staging
                    .swap_by_renames(dest.exists())
                    .expect("swap by renames");
                drop(staging); // removes the old folder, now in its place
            } else {
                staging.commit().expect("commit");
            }
            assert_eq!(fs::read(dest.join("a.db")).expect("read"), [round]);
            let names: Vec<_> = fs::read_dir(tmp.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names, ["Databases"], "round {round}");
        }
    }

    #[test]
    fn a_dropped_staging_folder_is_removed_and_a_file_is_no_destination() {
        let tmp = tempfile::TempDir::new().expect("tempdir");
        let dest = tmp.path().join("Databases");
        let dir = staged(&dest, b"x").dir.clone();
        assert!(!dir.exists() && !dest.exists());

        fs::write(&dest, b"a file").expect("write");
        let error = Staging::create(&dest).err().expect("a file is refused");
        assert!(
            matches!(error, ArchiveError::DestinationNotFolder { .. }),
            "{error}"
        );
    }
}
