//! What can go wrong with the mount itself; each message is one line.

use std::path::PathBuf;
use std::time::Duration;

/// Errors a caller must decide on. A failing health check is not an error:
/// it is a [`super::Health`] value.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot prepare {}: {source}", path.display())]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already holds a live {fstype} mount of {device}: refusing to mount over it", path.display())]
    AlreadyMounted {
        path: PathBuf,
        fstype: String,
        device: String,
    },
    #[error("cannot start rclone ({}): {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("rclone exited ({status}) before the mount at {} was ready; its log ends: {log_tail}", mount_point.display())]
    RcloneExited {
        mount_point: PathBuf,
        status: String,
        log_tail: String,
    },
    #[error("the mount at {} was not ready within {}: {what}; rclone's log ends: {log_tail}",
        mount_point.display(), humantime::format_duration(*after))]
    Timeout {
        mount_point: PathBuf,
        after: Duration,
        what: String,
        log_tail: String,
    },
    /// The mount came up but its root cannot be listed (a missing bucket on
    /// a real S3, wrong credentials, an unreachable endpoint).
    #[error("the mount of {remote} at {} cannot be listed: {detail}; rclone's log ends: {log_tail}", mount_point.display())]
    NotReady {
        remote: String,
        mount_point: PathBuf,
        detail: String,
        log_tail: String,
    },
    /// Plex would take an empty media root for "everything was deleted".
    #[error("the mount of {remote} at {} lists nothing: wrong bucket or path?", mount_point.display())]
    EmptyRoot {
        remote: String,
        mount_point: PathBuf,
    },
    #[error("cancelled while {0}")]
    Cancelled(&'static str),
    #[error("cannot unmount {}: {detail}", path.display())]
    Unmount { path: PathBuf, detail: String },
    #[error("rclone (pid {pid}) did not exit after SIGKILL")]
    Unkillable { pid: u32 },
    #[error("remount of {} failed after {attempts} attempts; last: {last}", mount_point.display())]
    RemountFailed {
        mount_point: PathBuf,
        attempts: u32,
        last: String,
    },
}
