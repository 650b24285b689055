//! The manifest: what an archive holds (per-file size and sha256) and the
//! digest of the compressed stream, as JSON beside the archive.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::safety;

/// The manifest layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// RFC 3339, UTC, seconds (`2026-11-23T21:07:06Z`).
    pub created_at: String,
    #[serde(default)]
    pub plex_version: Option<String>,
    /// Sorted by path; paths are relative to the `Databases` folder.
    pub files: Vec<FileEntry>,
    pub archive: ArchiveDigest,
    /// Database statistics, filled in by the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// Free-form notes on where the data came from (run id, host, mode).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Size and sha256 of the compressed stream, as stored in S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveDigest {
    pub size: u64,
    pub sha256: String,
    pub compression: Compression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest format_version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version { found: u32 },
    #[error("manifest: {field} {detail}")]
    Invalid { field: String, detail: String },
}

impl Manifest {
    /// A manifest stamped now, for the given files and archive.
    pub fn new(
        plex_version: Option<String>,
        files: Vec<FileEntry>,
        archive: ArchiveDigest,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            plex_version,
            files,
            archive,
            stats: None,
            source: BTreeMap::new(),
        }
    }

    /// Parses and validates a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let bytes = std::fs::read(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&bytes)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ManifestError> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Total size of the files, uncompressed.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Refuses what a reader must not trust: unknown versions, unsafe paths,
    /// duplicates, malformed digests or timestamps.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ManifestError::Version {
                found: self.format_version,
            });
        }
        if humantime::parse_rfc3339(&self.created_at).is_err() {
            return Err(invalid(
                "created_at",
                format!("{:?} is not an RFC 3339 UTC time", self.created_at),
            ));
        }
        check_sha256("archive.sha256", &self.archive.sha256)?;
        let mut seen = HashSet::new();
        for (i, file) in self.files.iter().enumerate() {
            if let Err(reason) = safety::check_relative(&file.path) {
                return Err(invalid(
                    &format!("files[{i}].path"),
                    format!("{:?} {reason}", file.path),
                ));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(invalid(
                    &format!("files[{i}].path"),
                    format!("{:?} is listed twice", file.path),
                ));
            }
            check_sha256(&format!("files[{i}].sha256"), &file.sha256)?;
        }
        Ok(())
    }
}

fn check_sha256(field: &str, value: &str) -> Result<(), ManifestError> {
    let well_formed = value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a sha256 (64 lowercase hex digits)"),
        ))
    }
}

fn invalid(field: &str, detail: String) -> ManifestError {
    ManifestError::Invalid {
        field: field.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::new(
            Some("1.41.0".into()),
            vec![FileEntry {
                path: "com.plexapp.plugins.library.db".into(),
                size: 3,
                sha256: "a".repeat(64),
            }],
            ArchiveDigest {
                size: 10,
                sha256: "b".repeat(64),
                compression: Compression::Zstd,
            },
        )
    }

    fn reject(edit: impl FnOnce(&mut Manifest)) -> String {
        let mut manifest = sample();
        edit(&mut manifest);
        let json = manifest.to_json().expect("serializes");
        Manifest::from_json(&json)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn round_trips_through_json() {
        let manifest = sample();
        let back = Manifest::from_json(&manifest.to_json().expect("serializes")).expect("valid");
        assert_eq!(back, manifest);
    }

    #[test]
    fn refuses_unsafe_or_malformed_fields() {
        type Edit = Box<dyn FnOnce(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| m.files[0].path = "/etc/passwd".into()),
                "absolute",
            ),
            (
                Box::new(|m| m.files[0].path = "a/../../b".into()),
                "escapes",
            ),
            (Box::new(|m| m.files[0].path = "".into()), "empty"),
            (
                Box::new(|m| m.files[0].sha256 = "XYZ".into()),
                "files[0].sha256",
            ),
            (
                Box::new(|m| m.archive.sha256 = "A".repeat(64)),
                "archive.sha256",
            ),
            (
                Box::new(|m| m.created_at = "yesterday".into()),
                "created_at",
            ),
            (Box::new(|m| m.format_version = 9), "format_version 9"),
            (
                Box::new(|m| {
                    let dup = m.files[0].clone();
                    m.files.push(dup)
                }),
                "listed twice",
            ),
        ];
        for (edit, expected) in cases {
            let message = reject(edit);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(!message.contains('\n'), "{message:?} is not one line");
        }
    }

    #[test]
    fn refuses_json_that_is_not_a_manifest() {
        let message = Manifest::from_json(b"{\"format_version\": 1}")
            .expect_err("incomplete")
            .to_string();
        assert!(message.starts_with("manifest is not valid"), "{message}");
    }
}
