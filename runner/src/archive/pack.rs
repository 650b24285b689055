//! `pack`: a `Databases` folder → tar.zst on any writer, and its manifest.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::error::ArchiveError;
use super::hashing::HashingReader;
use super::hashing::HashingWriter;
use super::manifest::{ArchiveDigest, Compression, FileEntry, Manifest};

/// Large enough that tar hands zstd big slices and files are read in few
/// system calls.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// zstd level (1..=22).
    pub level: i32,
    /// zstd workers; the output does not depend on it (always multi-threaded
    /// mode, whose job boundaries depend only on the level).
    pub threads: u32,
    pub plex_version: Option<String>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            level: 3,
            threads: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            plex_version: None,
        }
    }
}

type Stream<W> = tar::Builder<BufWriter<zstd::stream::write::Encoder<'static, HashingWriter<W>>>>;

/// Writes the regular files of `databases_dir` (recursively, sorted) as
/// tar.zst into `sink` and returns the manifest. The caller makes sure the
/// databases are checkpointed and nothing writes to them meanwhile; a file
/// whose size changes while it is read is reported, not archived.
pub fn pack(
    databases_dir: &Path,
    sink: impl Write,
    opts: &PackOptions,
) -> Result<Manifest, ArchiveError> {
    let root = databases_dir;
    let meta = fs::metadata(root).map_err(|e| ArchiveError::io("read", root, e))?;
    if !meta.is_dir() {
        return Err(ArchiveError::DestinationNotFolder {
            path: root.to_path_buf(),
        });
    }
    let mut paths = Vec::new();
    collect(root, &mut Vec::new(), &mut paths)?;
    paths.sort();

    let configure = |e| ArchiveError::io("set up zstd compression for", root, e);
    let mut encoder = zstd::stream::write::Encoder::new(HashingWriter::new(sink), opts.level)
        .map_err(configure)?;
    // Multi-threaded mode even for one worker: its output depends only on
    // the level, so a different core count re-produces the same bytes.
    encoder
        .multithread(opts.threads.max(1))
        .and_then(|()| encoder.include_checksum(true))
        .map_err(configure)?;
    let mut stream: Stream<_> = tar::Builder::new(BufWriter::with_capacity(WRITE_BUFFER, encoder));

    let mut files = Vec::with_capacity(paths.len());
    for rel in paths {
        files.push(append_file(&mut stream, root, rel)?);
    }

    let before_end = stream.get_ref().get_ref().get_ref().digest.bytes();
    let finished = stream
        .into_inner()
        .and_then(|buffered| {
            buffered
                .into_inner()
                .map_err(io::IntoInnerError::into_error)
        })
        .and_then(|encoder| encoder.finish());
    let mut hashed = finished.map_err(|e| encoder_error(e, before_end))?;
    let written = hashed.digest.bytes();
    hashed.flush().map_err(|e| ArchiveError::Write {
        after: written,
        source: e,
    })?;
    let (_, digest) = hashed.into_parts();
    let archive = ArchiveDigest {
        size: digest.bytes(),
        sha256: digest.finish(),
        compression: Compression::Zstd,
    };
    Ok(Manifest::new(opts.plex_version.clone(), files, archive))
}

/// Relative paths (`/`-joined) of the regular files under `dir`.
fn collect(dir: &Path, rel: &mut Vec<String>, out: &mut Vec<String>) -> Result<(), ArchiveError> {
    let here = dir.join(rel.join("/"));
    let entries = fs::read_dir(&here).map_err(|e| ArchiveError::io("list", &here, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ArchiveError::io("list", &here, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| ArchiveError::io("inspect", &path, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(ArchiveError::io(
                "archive",
                &path,
                io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
            ));
        };
        rel.push(name);
        if kind.is_dir() {
            collect(dir, rel, out)?;
        } else if kind.is_file() {
            out.push(rel.join("/"));
        } else if kind.is_symlink() {
            return Err(ArchiveError::SymlinkInFolder { path });
        } else {
            let what = if kind.is_socket() {
                "socket"
            } else {
                "special file"
            };
            tracing::warn!(path = %path.display(), "skipping {what}: only regular files are archived");
        }
        rel.pop();
    }
    Ok(())
}

/// Appends one file: header from the open file (no second lookup by path),
/// contents hashed as they stream into tar.
fn append_file<W: Write>(
    stream: &mut Stream<W>,
    root: &Path,
    rel: String,
) -> Result<FileEntry, ArchiveError> {
    let path = root.join(&rel);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| ArchiveError::io("open", &path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| ArchiveError::io("inspect", &path, e))?;
    if !meta.is_file() {
        return Err(changed(&path, "it is no longer a regular file".into()));
    }
    let size = meta.len();

    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);

    let mut reader = HashingReader::new(file.take(size));
    let name = format!("Plug-in Support/Databases/{rel}");
    if let Err(e) = stream.append_data(&mut header, &name, &mut reader) {
        return Err(if reader.failed {
            ArchiveError::io("read", &path, e)
        } else {
            let after = stream.get_ref().get_ref().get_ref().digest.bytes();
            ArchiveError::Write { after, source: e }
        });
    }
    let (taken, digest) = reader.into_parts();
    let read = digest.bytes();
    let grew = taken
        .into_inner()
        .read(&mut [0u8; 1])
        .map_err(|e| ArchiveError::io("read", &path, e))?;
    if read != size || grew != 0 {
        let now = if grew != 0 {
            "more".to_string()
        } else {
            read.to_string()
        };
        return Err(changed(
            &path,
            format!("{size} bytes when opened, {now} when read"),
        ));
    }
    Ok(FileEntry {
        path: rel,
        size,
        sha256: digest.finish(),
    })
}

fn changed(path: &Path, detail: String) -> ArchiveError {
    ArchiveError::FileChanged {
        path: path.to_path_buf(),
        detail,
    }
}

fn encoder_error(e: io::Error, after: u64) -> ArchiveError {
    ArchiveError::Write { after, source: e }
}
