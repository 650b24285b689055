//! The writing half of `unpack`: tar entries → safety checks → sha256 →
//! files in the staging folder, checked against the manifest as they come.
//! Plex's dated backups pass the same checks, then are read past.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use super::dated::{DatedBackups, is_dated_backup};
use super::decode::stream_error;
use super::error::{ArchiveError, Unsafe};
use super::hashing::Digester;
use super::manifest::{FileEntry, Manifest};
use super::safety::{self, Placement};

const WRITE_BUFFER: usize = 1 << 20;
/// Modes of everything extracted, whatever the archive says.
pub(crate) const FILE_MODE: u32 = 0o600;
pub(crate) const DIR_MODE: u32 = 0o700;

/// What landed in the staging folder.
pub(crate) struct Extracted {
    pub files: Vec<FileEntry>,
    pub dirs: Vec<PathBuf>,
    pub bytes_written: u64,
    pub skipped_entries: u64,
    pub dated_backups: DatedBackups,
    pub root_prefix: String,
}

/// Extracts the `Databases` folder of the tar stream into `staging`, then
/// reads the stream to its end. `dest` only names the destination in errors.
pub(crate) fn extract(
    stream: impl Read,
    staging: &Path,
    dest: &Path,
    manifest: Option<&Manifest>,
    consumed: &AtomicU64,
) -> Result<Extracted, ArchiveError> {
    let mut state = Extraction {
        staging,
        dest,
        expected: manifest.map(|m| m.files.iter().map(|f| (f.path.as_str(), f)).collect()),
        expected_total: manifest.map(size_to_write),
        consumed,
        prefix: None,
        files: Vec::new(),
        dirs: Vec::new(),
        bytes_written: 0,
        skipped: 0,
        dated: HashSet::new(),
        dated_backups: DatedBackups::default(),
        buffer: vec![0u8; WRITE_BUFFER],
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(|e| state.stream_error(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| state.stream_error(e))?;
        state.entry(&mut entry)?;
    }
    // Past the end-of-archive blocks: read on, so the decoder reaches (and
    // checks) the end of the compressed stream.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| state.stream_error(e))?;
    state.finish()
}

struct Extraction<'a> {
    staging: &'a Path,
    dest: &'a Path,
    expected: Option<HashMap<&'a str, &'a FileEntry>>,
    expected_total: Option<u64>,
    consumed: &'a AtomicU64,
    prefix: Option<String>,
    files: Vec<FileEntry>,
    dirs: Vec<PathBuf>,
    bytes_written: u64,
    skipped: u64,
    /// The dated backups read past, by path (a second one is a duplicate).
    dated: HashSet<String>,
    dated_backups: DatedBackups,
    buffer: Vec<u8>,
}

/// What a manifest's files take on disk once its dated backups are left out.
pub(crate) fn size_to_write(manifest: &Manifest) -> u64 {
    manifest
        .files
        .iter()
        .filter(|f| !is_dated_backup(&f.path))
        .map(|f| f.size)
        .sum()
}

impl Extraction<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(()); // metadata for the whole archive, not a member
        }
        let raw = entry.path_bytes().into_owned();
        let refuse = |reason| ArchiveError::UnsafeEntry {
            entry: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let (prefix, rel) = match safety::place(&raw).map_err(refuse)? {
            Placement::Outside => {
                self.skipped += 1;
                return Ok(());
            }
            Placement::Root { prefix } => (prefix, None),
            Placement::Inside { prefix, rel } => (prefix, Some(rel)),
        };
        self.claim_prefix(prefix)?;
        let link_target = || {
            entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default()
        };
        let Some(rel) = rel else {
            return match kind {
                T::Directory => Ok(()),
                _ => Err(refuse(Unsafe::RootNotFolder)),
            };
        };
        match kind {
            T::Regular | T::Continuous if is_dated_backup(&rel) => self.read_past(rel, entry),
            T::Regular | T::Continuous => self.write_file(rel, entry),
            T::Directory => self.create_dirs(&rel),
            T::Symlink => Err(refuse(Unsafe::SymbolicLink {
                target: link_target(),
            })),
            T::Link => Err(refuse(Unsafe::HardLink {
                target: link_target(),
            })),
            T::Char => Err(refuse(Unsafe::Special {
                kind: "character device",
            })),
            T::Block => Err(refuse(Unsafe::Special {
                kind: "block device",
            })),
            T::Fifo => Err(refuse(Unsafe::Special { kind: "fifo" })),
            T::GNUSparse => Err(refuse(Unsafe::Special {
                kind: "sparse file (unsupported)",
            })),
            _ => Err(refuse(Unsafe::Special {
                kind: "member of an unsupported type",
            })),
        }
    }

    /// All kept entries must share one prefix: two would mean two Plex
    /// installations in one archive, and no way to tell which is meant.
    fn claim_prefix(&mut self, prefix: String) -> Result<(), ArchiveError> {
        match &self.prefix {
            None => self.prefix = Some(prefix),
            Some(first) if *first != prefix => {
                return Err(ArchiveError::AmbiguousRoot {
                    first: first.clone(),
                    second: prefix,
                });
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The manifest's sha256 for `rel`, once its listing and size match.
    fn expected_digest(&self, rel: &str, size: u64) -> Result<Option<String>, ArchiveError> {
        let Some(expected) = &self.expected else {
            return Ok(None);
        };
        match expected.get(rel) {
            None => Err(ArchiveError::UnexpectedFile { path: rel.into() }),
            Some(f) if f.size != size => Err(ArchiveError::FileSizeMismatch {
                path: rel.into(),
                expected: f.size,
                actual: size,
            }),
            Some(f) => Ok(Some(f.sha256.clone())),
        }
    }

    /// A dated backup: checked like a file, counted, not written. Its
    /// bytes are not hashed: the archive's digest covers them.
    fn read_past<R: Read>(
        &mut self,
        rel: String,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ArchiveError> {
        let size = entry.size();
        self.expected_digest(&rel, size)?;
        if self.dated.contains(&rel) {
            return Err(ArchiveError::UnsafeEntry {
                entry: rel,
                reason: Unsafe::Duplicate,
            });
        }
        let read = io::copy(entry, &mut io::sink()).map_err(|e| self.stream_error(e))?;
        if read != size {
            return Err(ArchiveError::Truncated {
                after: self.consumed.load(Ordering::Relaxed),
            });
        }
        self.dated_backups.add(size);
        self.dated.insert(rel);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        rel: String,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ArchiveError> {
        let size = entry.size();
        let mtime = entry.header().mtime().unwrap_or(0);
        let expected = self.expected_digest(&rel, size)?;
        if let Some((parent, _)) = rel.rsplit_once('/') {
            self.create_dirs(parent)?;
        }
        let path = self.staging.join(&rel);
        // create_new + O_NOFOLLOW: never follows or reuses an existing path.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ArchiveError::UnsafeEntry {
                    entry: rel,
                    reason: Unsafe::Duplicate,
                });
            }
            Err(e) => return Err(self.write_error(e, &rel, &path, size)),
        };

        let mut digest = Digester::default();
        loop {
            let n = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            };
            if let Err(e) = file.write_all(&self.buffer[..n]) {
                return Err(self.write_error(e, &rel, &path, size - digest.bytes()));
            }
            digest.update(&self.buffer[..n]);
            self.bytes_written += n as u64;
        }
        if digest.bytes() != size {
            return Err(ArchiveError::Truncated {
                after: self.consumed.load(Ordering::Relaxed),
            });
        }
        self.finish_file(&file, &rel, &path, mtime)?;
        let sha256 = digest.finish();
        if let Some(expected) = expected
            && expected != sha256
        {
            return Err(ArchiveError::FileDigestMismatch {
                path: rel,
                expected,
                actual: sha256,
            });
        }
        self.files.push(FileEntry {
            path: rel,
            size,
            sha256,
        });
        Ok(())
    }

    /// Mode, mtime, and durability. The archive's mode bits are not
    /// taken: received files are data, readable and writable by their owner
    /// only (`create` already asked for 0600; this undoes any umask quirk).
    /// Whoever uses them gives them their owner (the run's chown to the
    /// Plex user, the home install's owner and mode of the replaced files).
    fn finish_file(
        &self,
        file: &File,
        rel: &str,
        path: &Path,
        mtime: u64,
    ) -> Result<(), ArchiveError> {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .and_then(|()| file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime)))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.write_error(e, rel, path, 0))
    }

    /// Creates the folders of `rel` (a `/`-joined relative path) that do not
    /// exist yet. The staging folder is fresh and holds nothing but what we
    /// created, so an existing non-folder means the archive clashes.
    fn create_dirs(&mut self, rel: &str) -> Result<(), ArchiveError> {
        let mut path = self.staging.to_path_buf();
        for component in rel.split('/') {
            path.push(component);
            match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => self.dirs.push(path.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                    if !is_dir {
                        return Err(ArchiveError::UnsafeEntry {
                            entry: rel.to_string(),
                            reason: Unsafe::Duplicate,
                        });
                    }
                }
                Err(e) => return Err(self.write_error(e, rel, &path, 0)),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Extracted, ArchiveError> {
        let Some(root_prefix) = self.prefix else {
            return Err(ArchiveError::NoDatabasesFolder {
                skipped: self.skipped,
            });
        };
        match &self.expected {
            Some(expected) => {
                let seen: HashSet<&str> = (self.files.iter().map(|f| f.path.as_str()))
                    .chain(self.dated.iter().map(String::as_str))
                    .collect();
                let mut missing: Vec<&str> = expected
                    .keys()
                    .filter(|path| !seen.contains(*path))
                    .copied()
                    .collect();
                missing.sort_unstable();
                if let Some(path) = missing.first() {
                    return Err(ArchiveError::MissingFile {
                        path: path.to_string(),
                    });
                }
            }
            // Without a manifest, an empty folder is far likelier a wrong
            // archive than a wish to wipe the databases.
            None if self.files.is_empty() => {
                return Err(ArchiveError::EmptyDatabasesFolder {
                    prefix: root_prefix,
                });
            }
            None => {}
        }
        Ok(Extracted {
            files: self.files,
            dirs: self.dirs,
            bytes_written: self.bytes_written,
            skipped_entries: self.skipped,
            dated_backups: self.dated_backups,
            root_prefix,
        })
    }

    fn stream_error(&self, e: io::Error) -> ArchiveError {
        stream_error(e, self.consumed.load(Ordering::Relaxed))
    }

    /// A failed write: a full disk is named as such, with what is missing.
    fn write_error(&self, e: io::Error, rel: &str, path: &Path, file_left: u64) -> ArchiveError {
        let full = e.kind() == io::ErrorKind::StorageFull
            || e.kind() == io::ErrorKind::QuotaExceeded
            || e.raw_os_error() == Some(libc::EDQUOT);
        if !full {
            return ArchiveError::io("write", path, e);
        }
        let need = match self.expected_total {
            Some(total) => total.saturating_sub(self.bytes_written),
            None => file_left,
        };
        ArchiveError::DiskFull {
            file: rel.to_string(),
            dir: self.dest.to_path_buf(),
            need: need.max(1),
        }
    }
}
