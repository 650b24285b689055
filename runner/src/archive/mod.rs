//! The archive format: what plex-burst writes and what it reads.
//!
//! Written (`pack`): a tar stream compressed with multi-threaded zstd (frame
//! checksums on), entries `Plug-in Support/Databases/<file>`, regular files
//! only, sorted, with stable headers (mode, size, mtime; uid/gid 0, no user
//! names). The same folder always gives the same bytes, whatever the number
//! of zstd workers: a resumed multipart upload relies on re-producing
//! identical parts. The `Manifest` (per-file size and sha256, digest of the
//! compressed stream) travels beside the archive, not inside it.
//!
//! Read (`unpack`): tar.zst, or the user's tar.gz, detected by magic bytes.
//! Only entries under a `Plug-in Support/Databases/` component sequence are
//! kept, whatever the root prefix; the rest is counted and skipped. Plex's
//! dated backups in it (`dated.rs`) are read past, not written, whoever
//! pulls: only the home server that made them can use them.
//!
//! Safety decisions (a Plex `Databases` folder holds only regular files and
//! folders, so anything else is refused rather than interpreted):
//! - anywhere in the archive: absolute paths, `..` components and NUL bytes
//!   are refused, even in entries that would be skipped;
//! - inside the kept folder: symbolic and hard links (whatever their
//!   target), devices, fifos, sparse and unknown entry types, names that are
//!   not UTF-8, and duplicate entries are refused; outside it they are only
//!   skipped, since nothing is written for them;
//! - a dated backup is skipped only after the checks any entry passes
//!   (name, type, duplicate, the manifest's listing and size; its bytes
//!   are covered by the archive's digest) and within the same bound;
//! - extraction goes into a fresh `.<name>.partial-<pid>` folder beside the
//!   destination; files are created with `O_NOFOLLOW` + `create_new`, so no
//!   existing path is ever followed or overwritten;
//! - files are 0600 and folders 0700 whatever modes the archive gives:
//!   received files are data, given their owner by whoever uses them;
//! - the decoded stream is bounded (`bound.rs`: the manifest's sizes, else
//!   the caller's `Limits`) before a byte of it is written;
//! - only after the whole stream was read and every digest matched is the
//!   folder fsynced and swapped into place (atomic exchange); any failure
//!   removes the partial folder and leaves the destination untouched.

mod bound;
mod dated;
mod decode;
mod error;
mod extract;
mod hashing;
mod manifest;
mod pack;
mod safety;
mod staging;
mod unpack;

pub use bound::{Cap, DEFAULT_MAX_RATIO, Limits, RATIO_FLOOR, margin, parse_size, size};
pub use dated::{DatedBackups, is_dated_backup};
pub use error::{ArchiveError, Unsafe};
pub use manifest::{
    ArchiveDigest, Compression, FORMAT_VERSION, FileEntry, Manifest, ManifestError,
};
pub use pack::{PackOptions, pack};
pub use unpack::{Expectation, UnpackReport, unpack};

/// Where the Plex databases live inside an archive (and inside a Plex data
/// folder): the two path components every reader looks for.
pub const DATABASES_COMPONENTS: [&str; 2] = ["Plug-in Support", "Databases"];
