//! What a probe found, in words a user understands and in a form a status
//! report can serialise.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The probe's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Listed, and enough anchor files read: Plex may scan.
    Healthy,
    /// The FUSE mount is there but does not serve data (reads fail or hang,
    /// or it lists nothing): Plex must not scan. Lessons.md 1.
    Degraded,
    /// The mount is gone, rclone is gone, or the kernel says the FUSE
    /// connection is dead: a remount is the remedy. Lessons.md 3.
    MountFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Nothing, or not a FUSE file system, at the mount point.
    NotMounted,
    RcloneNotRunning,
    /// "Socket not connected", "connection aborted", or "permission
    /// denied" on a mount that must be readable: a dead FUSE connection.
    MountFailure,
    /// No answer within the probe's bound.
    Timeout,
    /// An error from rclone (e.g. it could not fetch the object).
    Io,
    /// The file or folder does not exist in the mount.
    Missing,
    /// A folder that must hold media lists nothing.
    Empty,
    /// Too many earlier calls are still blocked on the mount: not tried.
    Overloaded,
    /// The path is not under the mount point: a caller's mistake.
    Outside,
}

impl ProblemKind {
    pub fn is_mount_failure(self) -> bool {
        matches!(
            self,
            ProblemKind::NotMounted | ProblemKind::RcloneNotRunning | ProblemKind::MountFailure
        )
    }
}

/// One thing wrong, about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: String,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

/// The result of one [`super::Mount::probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub mount_point: String,
    pub verdict: Verdict,
    /// Every problem seen, failed anchors below the quorum's tolerance
    /// included (the verdict can be healthy with some).
    pub problems: Vec<Problem>,
    /// Folders listed successfully, of those tried (the mount root first).
    pub dirs_listed: usize,
    pub dirs_total: usize,
    /// Anchor files read successfully (through the mount and from the
    /// bucket), of those given; `anchors_required` is what the quorum
    /// asked for.
    pub anchors_read: usize,
    pub anchors_total: usize,
    pub anchors_required: usize,
    /// No anchors were given: the files read were found by listing.
    pub anchors_discovered: bool,
    /// Calls on the mount still unanswered when the probe ended: threads
    /// left blocked by a hung mount.
    pub blocked_calls: usize,
    /// Time spent listing, reading anchors, and in all.
    pub listing_ms: u64,
    pub reads_ms: u64,
    pub slowest_read_ms: u64,
    pub total_ms: u64,
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        self.verdict == Verdict::Healthy
    }

    pub fn is_mount_failure(&self) -> bool {
        self.verdict == Verdict::MountFailure
    }

    /// One line: the verdict and the first problems.
    pub fn summary(&self) -> String {
        if self.is_healthy() {
            let warnings = match self.problems.len() {
                0 => String::new(),
                n => format!(" ({n} anchor problems within the quorum)"),
            };
            let found = if self.anchors_discovered {
                " (found by listing)"
            } else {
                ""
            };
            return format!(
                "mount {} healthy: listed {} folders, read {}/{} anchor files{found} in {} ms{warnings}",
                self.mount_point,
                self.dirs_listed,
                self.anchors_read,
                self.anchors_total,
                self.total_ms
            );
        }
        const SHOWN: usize = 3;
        let what = match self.verdict {
            Verdict::MountFailure => "mount failure",
            _ => "degraded",
        };
        let shown: Vec<String> = self
            .problems
            .iter()
            .take(SHOWN)
            .map(ToString::to_string)
            .collect();
        let more = match self.problems.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        format!(
            "mount {} {what}: read {}/{} anchor files (need {}); {}{more}",
            self.mount_point,
            self.anchors_read,
            self.anchors_total,
            self.anchors_required,
            shown.join("; ")
        )
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// What an error from a call on the mount means. A dead FUSE connection
/// answers "Socket not connected" to reads and "Permission denied" to
/// writes (lessons.md 3); on this read-only mount, readable by design,
/// permission errors mean the same.
pub(crate) fn classify(e: &io::Error) -> (ProblemKind, String) {
    let detail = match e.raw_os_error() {
        Some(libc::ENOTCONN) => {
            return (
                ProblemKind::MountFailure,
                "socket not connected: the FUSE mount is dead".into(),
            );
        }
        Some(libc::ECONNABORTED) => {
            return (
                ProblemKind::MountFailure,
                "connection aborted: the FUSE mount is dead".into(),
            );
        }
        Some(libc::EACCES | libc::EPERM) => {
            return (
                ProblemKind::MountFailure,
                "permission denied on a mount that must be readable: taken as a dead mount".into(),
            );
        }
        Some(libc::ENOENT) => {
            return (
                ProblemKind::Missing,
                "no such file (renamed or deleted in the bucket?)".into(),
            );
        }
        Some(libc::EIO) => "input/output error (rclone could not fetch it from the bucket)".into(),
        _ => e.to_string(),
    };
    (ProblemKind::Io, detail)
}

/// "no answer within 10s".
pub(crate) fn no_answer(bound: Duration) -> String {
    format!("no answer within {}", humantime::format_duration(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_socket_and_permission_errors_are_mount_failures() {
        for errno in [
            libc::ENOTCONN,
            libc::ECONNABORTED,
            libc::EACCES,
            libc::EPERM,
        ] {
            let (kind, _) = classify(&io::Error::from_raw_os_error(errno));
            assert_eq!(kind, ProblemKind::MountFailure, "errno {errno}");
            assert!(kind.is_mount_failure());
        }
        let (kind, detail) = classify(&io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(kind, ProblemKind::Io);
        assert!(detail.contains("input/output"));
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::ENOENT)).0,
            ProblemKind::Missing
        );
        assert_eq!(no_answer(Duration::from_secs(10)), "no answer within 10s");
    }

    #[test]
    fn summaries_are_one_line_and_name_the_paths() {
        let mut health = Health {
            mount_point: "/mnt/media".into(),
            verdict: Verdict::Degraded,
            problems: (0..5)
                .map(|i| Problem {
                    kind: ProblemKind::Timeout,
                    path: format!("/mnt/media/Movies/{i}.mkv"),
                    detail: "no answer within 10s".into(),
                })
                .collect(),
            dirs_listed: 1,
            dirs_total: 1,
            anchors_read: 0,
            anchors_total: 5,
            anchors_required: 5,
            anchors_discovered: false,
            blocked_calls: 0,
            listing_ms: 3,
            reads_ms: 10_000,
            slowest_read_ms: 10_000,
            total_ms: 10_003,
        };
        let line = health.summary();
        assert!(!line.contains('\n'));
        assert!(line.contains("degraded"), "{line}");
        assert!(
            line.contains("/mnt/media/Movies/0.mkv: no answer within 10s"),
            "{line}"
        );
        assert!(line.ends_with("(and 2 more)"), "{line}");
        let json = serde_json::to_string(&health).unwrap();
        assert_eq!(serde_json::from_str::<Health>(&json).unwrap(), health);
        health.verdict = Verdict::Healthy;
        health.problems.clear();
        assert!(health.summary().contains("healthy"));
    }
}
