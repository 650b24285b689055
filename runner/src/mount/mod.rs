//! The media mount: rclone's FUSE view of the media bucket, supervised by
//! the runner (lessons.md 1-5).
//!
//! - [`MountSpec`] says what to mount and how; [`RcloneInvocation`] turns it
//!   into one rclone command line whose secrets travel only in the child's
//!   environment (`command.rs` holds every flag and its reason).
//! - [`Mount`] owns the rclone child: `start`, `probe`, `remount`, `stop`.
//! - [`Health`] is what a probe found: a live FUSE mount, a bounded listing,
//!   and real reads of "anchor" files the DB says exist, through the mount
//!   and from the bucket (rclone's cache may answer the first).
//!
//! Any call into a FUSE file system can block forever, so every one of them
//! runs on a dedicated thread that is abandoned after its timeout
//! (`watchdog.rs`); nothing here holds a lock across such a call, and every
//! wait is bounded and cancellable.

mod bucket;
mod command;
mod error;
mod handle;
mod health;
mod logtail;
mod mountinfo;
mod probe;
mod process;
mod spec;
mod unmount;
mod watchdog;

pub use command::{REMOTE_NAME, RcloneInvocation};
pub use error::MountError;
pub use handle::{Mount, RemountPolicy};
pub use health::{Health, Problem, ProblemKind, Verdict};
pub use mountinfo::{MountEntry, is_mounted, mount_at};
pub use probe::{ProbeLimits, ProbeTargets, Quorum, ReadAt};
pub use spec::{MountLimits, MountSpec};
pub use unmount::lazy_unmount;
