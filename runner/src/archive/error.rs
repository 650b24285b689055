//! `ArchiveError`: every way packing or unpacking can fail, one line each.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::bound::Cap;
use super::manifest::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a tar.zst or tar.gz archive: {detail}")]
    NotAnArchive { detail: String },

    #[error("archive is truncated (stream ended after {after} bytes)")]
    Truncated { after: u64 },

    #[error("archive is corrupt (detected after {after} bytes of the stream): {detail}")]
    Corrupt { after: u64, detail: String },

    #[error("reading the archive failed after {after} bytes: {source}")]
    Read { after: u64, source: io::Error },

    #[error("writing the archive failed after {after} bytes: {source}")]
    Write { after: u64, source: io::Error },

    #[error("archive entry {entry:?} {reason}: refused")]
    UnsafeEntry { entry: String, reason: Unsafe },

    #[error(
        "no \"Plug-in Support/Databases\" folder in the archive ({skipped} entries, none under it)"
    )]
    NoDatabasesFolder { skipped: u64 },

    #[error(
        "the \"Plug-in Support/Databases\" folder in the archive (under {prefix:?}) holds no file"
    )]
    EmptyDatabasesFolder { prefix: String },

    #[error(
        "archive holds a \"Plug-in Support/Databases\" folder under both {first:?} and {second:?}: ambiguous, refused"
    )]
    AmbiguousRoot { first: String, second: String },

    #[error("archive sha256 is {actual}, expected {expected}")]
    ArchiveDigestMismatch { expected: String, actual: String },

    #[error("archive is {actual} bytes, the manifest says {expected}")]
    ArchiveSizeMismatch { expected: u64, actual: u64 },

    #[error("{path:?} in the archive has sha256 {actual}, the manifest says {expected}")]
    FileDigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("{path:?} in the archive is {actual} bytes, the manifest says {expected}")]
    FileSizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },

    #[error("{path:?} is listed in the manifest but missing from the archive")]
    MissingFile { path: String },

    #[error("archive holds {path:?}, which the manifest does not list")]
    UnexpectedFile { path: String },

    #[error("disk full while extracting {file:?} into {} (need at least {need} more bytes)", .dir.display())]
    DiskFull {
        file: String,
        dir: PathBuf,
        need: u64,
    },

    #[error("the archive expands beyond {limit}, {cap}: refused, nothing was kept")]
    ExpandsBeyond { limit: String, cap: Cap },

    #[error(
        "the archive expands more than {ratio}:1 ({expanded} from {compressed} read), the cap ([pull] max_expansion_ratio): refused as a decompression bomb, nothing was kept"
    )]
    ExpansionRatio {
        expanded: String,
        compressed: String,
        ratio: u64,
    },

    #[error("{} exists and is not a folder", .path.display())]
    DestinationNotFolder { path: PathBuf },

    #[error("{} is a symbolic link: refused (plex-burst archives hold regular files only)", .path.display())]
    SymlinkInFolder { path: PathBuf },

    #[error("{} changed while it was being archived ({detail}); stop Plex and retry", .path.display())]
    FileChanged { path: PathBuf, detail: String },

    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl ArchiveError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why an archive entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsafe {
    Absolute,
    ParentComponent,
    NulInName,
    NotUtf8,
    SymbolicLink { target: String },
    HardLink { target: String },
    Special { kind: &'static str },
    Duplicate,
    RootNotFolder,
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absolute => f.write_str("has an absolute path"),
            Self::ParentComponent => f.write_str("escapes the destination"),
            Self::NulInName => f.write_str("has a NUL byte in its name"),
            Self::NotUtf8 => f.write_str("has a name that is not UTF-8"),
            Self::SymbolicLink { target } => write!(f, "is a symbolic link to {target:?}"),
            Self::HardLink { target } => write!(f, "is a hard link to {target:?}"),
            Self::Special { kind } => write!(f, "is a {kind}, not a regular file"),
            Self::Duplicate => f.write_str("appears twice"),
            Self::RootNotFolder => f.write_str("is the Databases folder but not a folder"),
        }
    }
}
