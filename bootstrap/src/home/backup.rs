//! Backups of the home `Databases` folder, taken while Plex is stopped:
//! a sibling `Databases.plex-burst-backup-<UTC timestamp>` holding every
//! file byte for byte, with its mode, owner and mtime, and the sha256 of
//! each. Putting one back is a rename, so the restored folder is
//! byte-identical to what was backed up. Plex's dated backups are not
//! copied: they are Plex's own backups already, and stay in place
//! (`dated.rs`).

use std::collections::BTreeMap;
use std::fs::{File, FileTimes};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use runner::archive::is_dated_backup;
use sha2::{Digest as _, Sha256};

use super::dated::{self, DatedBackup};
use super::{BLOBS_DB, LIBRARY_DB};

/// `<Databases>` + this + timestamp names a backup.
pub const BACKUP_MARK: &str = ".plex-burst-backup-";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot back up {}: not a regular file, folder or symlink", .0.display())]
    Unsupported(PathBuf),
    #[error("cannot give {} the owner {uid}:{gid} it had (run as root or as the Plex user): {source}", path.display())]
    Owner {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("the backup {} no longer matches what was saved: {file} {problem}", path.display())]
    Damaged {
        path: PathBuf,
        file: String,
        problem: &'static str,
    },
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub sha256: String,
    pub len: u64,
}

#[derive(Debug, Clone)]
pub struct Backup {
    /// The backup folder.
    pub path: PathBuf,
    /// The folder it copies.
    pub source: PathBuf,
    /// Regular files by path relative to the folder.
    pub files: BTreeMap<String, FileRecord>,
    /// Plex's dated backups of the folder: left in it, not copied.
    pub dated: Vec<DatedBackup>,
}

/// The DB files that matter for "did anything write the DB": each name
/// maps to its sha256, or `None` when the file does not exist. `-shm` is
/// left out: it is SQLite's shared-memory index of the WAL, rebuilt from
/// the `-wal` and rewritten by any reader, and holds no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest(pub BTreeMap<String, Option<String>>);

fn digest_names() -> [String; 4] {
    [
        LIBRARY_DB.to_string(),
        format!("{LIBRARY_DB}-wal"),
        BLOBS_DB.to_string(),
        format!("{BLOBS_DB}-wal"),
    ]
}

/// The [`Digest`] of the DB files in `dir`.
pub fn digest_of(dir: &Path) -> Result<Digest, BackupError> {
    let mut found = BTreeMap::new();
    for name in digest_names() {
        let path = dir.join(&name);
        let sha = match File::open(&path) {
            Ok(file) => Some(hash_reader(file, &path)?.sha256),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path, e)),
        };
        found.insert(name, sha);
    }
    Ok(Digest(found))
}

impl Backup {
    /// Copies `databases_dir`, less Plex's dated backups, to a new sibling
    /// backup folder. The copy is built under a hidden name and renamed
    /// when complete.
    pub fn take(databases_dir: &Path) -> Result<Backup, BackupError> {
        let path = fresh_name(databases_dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let partial = path.with_file_name(format!(".{name}.partial"));
        let dated = dated::list(databases_dir)?;
        let mut files = BTreeMap::new();
        let result = copy_tree(databases_dir, &partial, "", &mut files)
            .and_then(|()| std::fs::rename(&partial, &path).map_err(|e| io(&path, e)))
            .and_then(|()| sync_parent(&path));
        if let Err(error) = result {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error);
        }
        tracing::info!(backup = %path.display(), files = files.len(), "home Databases folder backed up ({} left in place)", dated::tally(&dated));
        Ok(Backup {
            path,
            source: databases_dir.to_path_buf(),
            files,
            dated,
        })
    }

    /// The [`Digest`] of the source as it was copied.
    pub fn digest(&self) -> Digest {
        Digest(
            digest_names()
                .into_iter()
                .map(|n| {
                    let sha = self.files.get(&n).map(|f| f.sha256.clone());
                    (n, sha)
                })
                .collect(),
        )
    }

    /// Re-reads the backup: every recorded file with its content, nothing
    /// more.
    pub fn verify(&self) -> Result<(), BackupError> {
        let mut now = BTreeMap::new();
        list_files(&self.path, "", &mut now)?;
        let damaged = |file: &str, problem| BackupError::Damaged {
            path: self.path.clone(),
            file: file.to_string(),
            problem,
        };
        for (name, record) in &self.files {
            match now.remove(name) {
                None => return Err(damaged(name, "is missing")),
                Some(found) if found != *record => return Err(damaged(name, "changed")),
                Some(_) => {}
            }
        }
        match now.into_keys().next() {
            Some(extra) => Err(damaged(&extra, "was added")),
            None => Ok(()),
        }
    }

    /// Keeps the newest `keep` backups of the same folder (this one always
    /// among them); returns those removed.
    pub fn prune(&self, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
        let mut others: Vec<PathBuf> = list_backups(&self.source)?
            .into_iter()
            .filter(|p| *p != self.path)
            .collect();
        let keep_others = keep.saturating_sub(1);
        let excess = others.len().saturating_sub(keep_others);
        let removed: Vec<PathBuf> = others.drain(..excess).collect();
        for old in &removed {
            std::fs::remove_dir_all(old).map_err(|e| io(old, e))?;
            tracing::info!(backup = %old.display(), "old backup removed");
        }
        Ok(removed)
    }
}

/// The backups of `databases_dir`, oldest first (names sort by time).
pub fn list_backups(databases_dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let (parent, name) = split(databases_dir)?;
    let prefix = format!("{name}{BACKUP_MARK}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&parent).map_err(|e| io(&parent, e))? {
        let entry = entry.map_err(|e| io(&parent, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(&prefix) && entry.path().is_dir() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// `<parent>/<name>.plex-burst-backup-20261123T210512Z`, with `-N` added
/// if that exists.
fn fresh_name(databases_dir: &Path) -> Result<PathBuf, BackupError> {
    stamped_sibling(databases_dir, BACKUP_MARK)
}

/// `<parent>/<name><mark><UTC stamp>`, with `-N` added if that exists.
pub(crate) fn stamped_sibling(dir: &Path, mark: &str) -> Result<PathBuf, BackupError> {
    let (parent, name) = split(dir)?;
    let stamp = utc_stamp();
    for n in 0u32.. {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = parent.join(format!("{name}{mark}{stamp}{suffix}"));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    unreachable!("u32 ran out of names")
}

/// `20261123T210512Z`: RFC 3339 without the separators a name does not want.
pub(crate) fn utc_stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

pub(crate) fn split(dir: &Path) -> Result<(PathBuf, String), BackupError> {
    let absolute = std::path::absolute(dir).map_err(|e| io(dir, e))?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => {
            Ok((parent.to_path_buf(), name.to_string_lossy().into_owned()))
        }
        _ => Err(io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a folder with a parent",
            ),
        )),
    }
}

/// Copies `from` to the new folder `to`, recording files under `rel`.
fn copy_tree(
    from: &Path,
    to: &Path,
    rel: &str,
    files: &mut BTreeMap<String, FileRecord>,
) -> Result<(), BackupError> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| io(from, e))?;
    std::fs::create_dir(to).map_err(|e| io(to, e))?;
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| io(from, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_name = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().map_err(|e| io(&src, e))?;
        if rel.is_empty() && kind.is_file() && is_dated_backup(&rel_name) {
            continue; // Plex's own backup, left in place
        }
        if kind.is_dir() {
            copy_tree(&src, &dst, &rel_name, files)?;
        } else if kind.is_file() {
            files.insert(rel_name, copy_file(&src, &dst)?);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| io(&src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io(&dst, e))?;
            let link = std::fs::symlink_metadata(&src).map_err(|e| io(&src, e))?;
            own(&dst, &link, true)?;
        } else {
            return Err(BackupError::Unsupported(src));
        }
    }
    // The folder's own attributes last: its mtime moved with each file.
    keep_attributes(to, &meta)
}

/// Copies one file, hashing what it reads, and syncs it.
fn copy_file(from: &Path, to: &Path) -> Result<FileRecord, BackupError> {
    let meta = std::fs::metadata(from).map_err(|e| io(from, e))?;
    let mut src = File::open(from).map_err(|e| io(from, e))?;
    let mut dst = File::create(to).map_err(|e| io(to, e))?;
    let (mut hasher, mut len, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = src.read(&mut buf).map_err(|e| io(from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| io(to, e))?;
        len += n as u64;
    }
    dst.sync_all().map_err(|e| io(to, e))?;
    drop(dst);
    keep_attributes(to, &meta)?;
    Ok(FileRecord {
        sha256: hex::encode(hasher.finalize()),
        len,
    })
}

/// Gives `path` the owner, mode and times in `meta`.
pub(crate) fn keep_attributes(path: &Path, meta: &std::fs::Metadata) -> Result<(), BackupError> {
    own(path, meta, false)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io(path, e))?;
    let times = FileTimes::new()
        .set_accessed(meta.accessed().map_err(|e| io(path, e))?)
        .set_modified(meta.modified().map_err(|e| io(path, e))?);
    File::open(path)
        .and_then(|f| f.set_times(times))
        .map_err(|e| io(path, e))
}

/// Gives `path` the owner in `meta`, when it differs (only root may).
pub(crate) fn own(path: &Path, meta: &std::fs::Metadata, link: bool) -> Result<(), BackupError> {
    let now = std::fs::symlink_metadata(path).map_err(|e| io(path, e))?;
    if now.uid() == meta.uid() && now.gid() == meta.gid() {
        return Ok(());
    }
    let (uid, gid) = (Some(meta.uid()), Some(meta.gid()));
    let result = if link {
        std::os::unix::fs::lchown(path, uid, gid)
    } else {
        std::os::unix::fs::chown(path, uid, gid)
    };
    result.map_err(|source| BackupError::Owner {
        path: path.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
        source,
    })
}

fn list_files(
    dir: &Path,
    rel: &str,
    out: &mut BTreeMap<String, FileRecord>,
) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_name = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
        if kind.is_dir() {
            list_files(&entry.path(), &rel_name, out)?;
        } else if kind.is_file() {
            let path = entry.path();
            let file = File::open(&path).map_err(|e| io(&path, e))?;
            out.insert(rel_name, hash_reader(file, &path)?);
        }
    }
    Ok(())
}

fn hash_reader(mut file: File, path: &Path) -> Result<FileRecord, BackupError> {
    let (mut hasher, mut len, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(FileRecord {
        sha256: hex::encode(hasher.finalize()),
        len,
    })
}

fn sync_parent(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(parent) => File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(parent, e)),
        None => Ok(()),
    }
}

/// An I/O error on `path`, for every step of the backup, swap and dated
/// backups' handling.
pub(super) fn io(path: &Path, source: std::io::Error) -> BackupError {
    BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn databases(root: &Path) -> PathBuf {
        let dir = root.join("Databases");
        std::fs::create_dir(&dir).unwrap();
        for (name, data) in [
            (LIBRARY_DB, &b"main"[..]),
            (&format!("{LIBRARY_DB}-wal"), b"wal"),
            (&format!("{LIBRARY_DB}-shm"), b"shm"),
            (BLOBS_DB, b"blobs"),
            (&format!("{LIBRARY_DB}-2026-11-20"), b"dated"),
        ] {
            std::fs::write(dir.join(name), data).unwrap();
        }
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let db = dir.join(LIBRARY_DB);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        File::open(&db)
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        dir
    }

    #[test]
    fn a_backup_is_every_file_with_its_attributes() {
        let root = tempfile::tempdir().unwrap();
        let dir = databases(root.path());
        let backup = Backup::take(&dir).unwrap();
        let name = backup
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("Databases.plex-burst-backup-2"), "{name}");
        assert!(name.ends_with('Z'), "{name}");
        // Plex's dated backup stays where it is, uncopied.
        assert_eq!(backup.files.len(), 4);
        let dated = format!("{LIBRARY_DB}-2026-11-20");
        assert!(!backup.files.contains_key(&dated) && !backup.path.join(&dated).exists());
        assert_eq!(
            backup.dated,
            [dated::DatedBackup {
                name: dated.clone(),
                len: 5
            }]
        );
        for (file, record) in &backup.files {
            let (a, b) = (dir.join(file), backup.path.join(file));
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            let (ma, mb) = (
                std::fs::metadata(&a).unwrap(),
                std::fs::metadata(&b).unwrap(),
            );
            assert_eq!(ma.mode(), mb.mode(), "{file}");
            assert_eq!(ma.modified().unwrap(), mb.modified().unwrap(), "{file}");
            assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{file}");
            assert_eq!(record.len, ma.len());
        }
        backup.verify().unwrap();
        assert_eq!(digest_of(&dir).unwrap(), backup.digest());
        assert_eq!(digest_of(&backup.path).unwrap(), backup.digest());

        // -shm is not part of the digest; the WAL is.
        std::fs::write(dir.join(format!("{LIBRARY_DB}-shm")), b"other").unwrap();
        assert_eq!(digest_of(&dir).unwrap(), backup.digest());
        std::fs::write(dir.join(format!("{LIBRARY_DB}-wal")), b"more").unwrap();
        assert_ne!(digest_of(&dir).unwrap(), backup.digest());
        std::fs::remove_file(dir.join(format!("{LIBRARY_DB}-wal"))).unwrap();
        assert_ne!(
            digest_of(&dir).unwrap(),
            backup.digest(),
            "a vanished WAL is a change"
        );

        std::fs::write(backup.path.join(BLOBS_DB), b"tampered").unwrap();
        let error = backup.verify().unwrap_err().to_string();
        assert!(
            error.contains("com.plexapp.plugins.library.blobs.db changed"),
            "{error}"
        );
    }

    #[test]
    fn prune_keeps_the_newest() {
        let root = tempfile::tempdir().unwrap();
        let dir = databases(root.path());
        let old: Vec<PathBuf> = ["20240101T000000Z", "20250101T000000Z", "20250601T000000Z"]
            .iter()
            .map(|s| root.path().join(format!("Databases{BACKUP_MARK}{s}")))
            .collect();
        for path in &old {
            std::fs::create_dir(path).unwrap();
        }
        // Not a backup of this folder.
        std::fs::create_dir(
            root.path()
                .join(format!("Other{BACKUP_MARK}20200101T000000Z")),
        )
        .unwrap();
        let backup = Backup::take(&dir).unwrap();
        let removed = backup.prune(2).unwrap();
        assert_eq!(removed, old[..2]);
        assert_eq!(
            list_backups(&dir).unwrap(),
            [old[2].clone(), backup.path.clone()]
        );
        assert_eq!(
            backup.prune(0).unwrap(),
            [old[2].clone()],
            "keeps itself at least"
        );
        assert!(backup.path.is_dir());
        assert!(
            root.path()
                .join(format!("Other{BACKUP_MARK}20200101T000000Z"))
                .is_dir()
        );
    }
}
