//! Reads of the anchors' objects straight from the bucket, with the
//! mount's own connection.
//!
//! rclone's full VFS cache keeps every byte the mount has served: once a
//! file was read (by an earlier probe, or by Plex's scanner, which reads
//! every file's header), a read through the mount is answered from the
//! local disk whatever the bucket does. A mount whose object reads hang
//! then passes its probe while every file Plex has not read yet hangs
//! (lessons.md 1). A ranged GET of the same object is a read no cache
//! answers.

use std::path::{Component, Path};
use std::time::Duration;

use super::MountSpec;
use super::health::{ProblemKind, no_answer};
use crate::s3::{Bucket, Tuning};

/// The media bucket, as the mount sees it.
pub(crate) struct BucketReads {
    bucket: Bucket,
    /// The mounted folder inside the bucket (`MountSpec::path`).
    prefix: String,
}

impl BucketReads {
    pub(crate) fn new(spec: &MountSpec) -> BucketReads {
        // One attempt: the probe's bound is the retry policy, and a retry
        // would only hide a hang behind a second one.
        let tuning = Tuning {
            max_attempts: 1,
            ..Tuning::default()
        };
        BucketReads {
            bucket: Bucket::new(&spec.connection.to_engine(), &spec.bucket, tuning),
            prefix: spec.path.clone(),
        }
    }

    /// Reads up to `bytes` bytes at the end of the object behind `anchor`
    /// (a path under `mount_point`), within `within`.
    pub(crate) async fn read(
        &self,
        mount_point: &Path,
        anchor: &Path,
        bytes: usize,
        within: Duration,
    ) -> Result<(), (ProblemKind, String)> {
        let Some(key) = object_key(&self.prefix, mount_point, anchor) else {
            return Err((
                ProblemKind::Outside,
                "names no object of the bucket (not a UTF-8 path under the mount)".into(),
            ));
        };
        let read = self.bucket.get_tail(&key, bytes.max(1) as u64);
        match tokio::time::timeout(within, read).await {
            Ok(Ok(Some(_))) => Ok(()),
            Ok(Ok(None)) => Err((
                ProblemKind::Missing,
                format!(
                    "read through the mount, but s3://{}/{key} does not exist",
                    self.bucket.name()
                ),
            )),
            Ok(Err(e)) => Err((
                ProblemKind::Io,
                format!("read through the mount (from rclone's cache?), but the bucket fails: {e}"),
            )),
            Err(_) => Err((
                ProblemKind::Timeout,
                format!(
                    "read through the mount (from rclone's cache?), but the bucket gave {}",
                    no_answer(within)
                ),
            )),
        }
    }
}

/// The object key of `anchor`: its path below `mount_point`, under `prefix`.
fn object_key(prefix: &str, mount_point: &Path, anchor: &Path) -> Option<String> {
    let relative = anchor.strip_prefix(mount_point).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_str()?),
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    let relative = parts.join("/");
    Some(match prefix.is_empty() {
        true => relative,
        false => format!("{prefix}/{relative}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_path_below_the_mount() {
        let mp = Path::new("/mnt/media");
        let anchor = Path::new("/mnt/media/Music/A/01 - x.flac");
        assert_eq!(
            object_key("", mp, anchor).as_deref(),
            Some("Music/A/01 - x.flac")
        );
        assert_eq!(
            object_key("library", mp, anchor).as_deref(),
            Some("library/Music/A/01 - x.flac")
        );
        assert_eq!(object_key("", mp, Path::new("/elsewhere/x.flac")), None);
        assert_eq!(object_key("", mp, mp), None);
        assert_eq!(
            object_key("", mp, Path::new("/mnt/media/../etc/passwd")),
            None
        );
    }
}
