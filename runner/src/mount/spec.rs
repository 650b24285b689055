//! What to mount, where, as whom, and the bounds of each step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{RcloneTuning, RunConfig, S3Connection};

/// Everything [`super::Mount`] needs. Built from the run config by
/// [`MountSpec::from_config`]; the fields are public so that a caller (or a
/// test) can adjust one before starting.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// The rclone binary; `rclone` is looked up on PATH.
    pub rclone: PathBuf,
    pub bucket: String,
    /// Inside the bucket, without leading or trailing `/`; empty for all of it.
    pub path: String,
    pub mount_point: PathBuf,
    /// Holds the credentials as [`crate::secret::Secret`]s.
    pub connection: S3Connection,
    /// Owner of every file in the mount: the Plex user.
    pub uid: u32,
    pub gid: u32,
    pub tuning: RcloneTuning,
    /// rclone's VFS cache, on the instance's local disk.
    pub cache_dir: PathBuf,
    /// rclone's own log, shipped with the run's logs (lessons.md 26).
    pub log_file: PathBuf,
    pub limits: MountLimits,
}

/// Bounds of the mount's own steps (the probe has [`super::ProbeLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountLimits {
    /// From spawning rclone to a listed mount root.
    pub start: Duration,
    /// How long rclone gets to exit after an unmount, then after SIGTERM.
    pub stop_grace: Duration,
    /// How long to wait for the exit after SIGKILL.
    pub kill_wait: Duration,
    /// One unmount call (they run on a thread: FUSE can make them hang).
    pub unmount: Duration,
    /// Deciding whether a FUSE mount left at the mount point is dead.
    pub stale_check: Duration,
}

impl Default for MountLimits {
    fn default() -> Self {
        MountLimits {
            start: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            kill_wait: Duration::from_secs(5),
            unmount: Duration::from_secs(5),
            stale_check: Duration::from_secs(3),
        }
    }
}

impl MountSpec {
    /// The `[media]` section of `cfg`, owned by `uid`:`gid`, with rclone's
    /// VFS cache in `<work_dir>/rclone-cache` and its log in `log_file`.
    pub fn from_config(
        cfg: &RunConfig,
        uid: u32,
        gid: u32,
        work_dir: &Path,
        log_file: PathBuf,
    ) -> MountSpec {
        let media = cfg.media();
        MountSpec {
            rclone: PathBuf::from("rclone"),
            bucket: media.remote.bucket.to_string(),
            path: media.remote.path.clone(),
            mount_point: media.mount_point.as_path().to_path_buf(),
            connection: media.connection.clone(),
            uid,
            gid,
            tuning: media.profile.tuning(),
            cache_dir: work_dir.join("rclone-cache"),
            log_file,
            limits: MountLimits::default(),
        }
    }

    /// Uses this rclone binary instead of the one on PATH.
    pub fn with_rclone(mut self, rclone: impl Into<PathBuf>) -> MountSpec {
        self.rclone = rclone.into();
        self
    }

    /// `bucket[/path]`, as the user wrote it.
    pub fn remote(&self) -> String {
        if self.path.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}/{}", self.bucket, self.path)
        }
    }
}
