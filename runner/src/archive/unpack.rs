//! `unpack`: tar.zst / tar.gz from any reader → a verified `Databases`
//! folder, swapped into place only when everything matched.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::thread;

use super::bound::{self, Bound, Limits};
use super::dated::DatedBackups;
use super::decode::{self, DecodeFailure, StreamDigest};
use super::error::ArchiveError;
use super::extract::{self, Extracted, size_to_write};
use super::manifest::{Compression, FileEntry, Manifest};
use super::staging::Staging;
use crate::pipe::pipe;

/// Decompressed chunks in flight between the two threads (1 MiB each).
pub(crate) const PIPE_CHUNKS: usize = 16;

/// What the archive must match. With a manifest: exactly its files, sizes
/// and digests, and its archive size and sha256; without, it must stay
/// within `limits`.
#[derive(Debug, Clone, Default)]
pub struct Expectation<'a> {
    pub manifest: Option<&'a Manifest>,
    pub archive_sha256: Option<String>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// Relative to the `Databases` folder, in archive order.
    pub files: Vec<FileEntry>,
    pub bytes_written: u64,
    pub archive_bytes: u64,
    pub archive_sha256: String,
    pub compression: Compression,
    /// Entries outside `Plug-in Support/Databases` (not extracted).
    pub skipped_entries: u64,
    /// Plex's dated backups in it, read past (not in `files`).
    pub dated_backups: DatedBackups,
    /// What preceded `Plug-in Support/Databases` in the archive ("" for ours).
    pub root_prefix: String,
}

/// Extracts the `Plug-in Support/Databases` folder of the archive read from
/// `source` so that it becomes `dest`. On any error `dest` is left exactly
/// as it was and nothing stays behind.
pub fn unpack(
    source: impl Read,
    dest: &Path,
    expect: &Expectation<'_>,
) -> Result<UnpackReport, ArchiveError> {
    let staging = Staging::create(dest)?;
    if let Some(manifest) = expect.manifest {
        check_free_space(staging.path(), staging.dest(), manifest)?;
    }
    let bound = Bound::new(expect.manifest, &expect.limits, staging.path())?;

    let consumed = AtomicU64::new(0);
    let (tx, rx) = pipe(PIPE_CHUNKS);
    let (decoded, extracted) = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            extract::extract(
                rx,
                staging.path(),
                staging.dest(),
                expect.manifest,
                &consumed,
            )
        });
        let decoded = decode::decode(source, tx, &consumed, &bound);
        let extracted = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (decoded, extracted)
    });
    // A failed stream explains whatever the writer saw; a writer that gave
    // up explains why the stream was cut short.
    let stream = match decoded {
        Ok(stream) => stream,
        Err(DecodeFailure::Archive(error)) => return Err(error),
        Err(DecodeFailure::ConsumerGone) => {
            return Err(extracted.err().unwrap_or_else(|| ArchiveError::Corrupt {
                after: 0,
                detail: "extraction stopped reading before the end of the archive".into(),
            }));
        }
    };
    let extracted = extracted?;
    check_archive(&stream, expect)?;

    staging.sync(&extracted.dirs)?;
    staging.commit()?;
    let DatedBackups { files, bytes } = extracted.dated_backups;
    if files > 0 {
        tracing::info!(
            files,
            bytes,
            "Plex's dated backups read past, not extracted"
        );
    }
    Ok(report(stream, extracted))
}

fn check_archive(stream: &StreamDigest, expect: &Expectation<'_>) -> Result<(), ArchiveError> {
    let mismatch = |expected: &str| ArchiveError::ArchiveDigestMismatch {
        expected: expected.to_string(),
        actual: stream.sha256.clone(),
    };
    if let Some(expected) = &expect.archive_sha256
        && !expected.eq_ignore_ascii_case(&stream.sha256)
    {
        return Err(mismatch(expected));
    }
    if let Some(manifest) = expect.manifest {
        if manifest.archive.size != stream.size {
            return Err(ArchiveError::ArchiveSizeMismatch {
                expected: manifest.archive.size,
                actual: stream.size,
            });
        }
        if manifest.archive.sha256 != stream.sha256 {
            return Err(mismatch(&manifest.archive.sha256));
        }
    }
    Ok(())
}

/// Refuses up front to start what cannot fit (dated backups are not
/// written): filling the disk would hurt whatever else lives on it (a
/// running Plex at home).
fn check_free_space(staging: &Path, dest: &Path, manifest: &Manifest) -> Result<(), ArchiveError> {
    let available = bound::free_space(staging)?;
    let need = size_to_write(manifest);
    if need > available {
        return Err(ArchiveError::DiskFull {
            file: manifest
                .files
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
            dir: dest.to_path_buf(),
            need: need - available,
        });
    }
    Ok(())
}

fn report(stream: StreamDigest, extracted: Extracted) -> UnpackReport {
    UnpackReport {
        files: extracted.files,
        bytes_written: extracted.bytes_written,
        archive_bytes: stream.size,
        archive_sha256: stream.sha256,
        compression: stream.compression,
        skipped_entries: extracted.skipped_entries,
        dated_backups: extracted.dated_backups,
        root_prefix: extracted.root_prefix,
    }
}
