//! Unmounting: clean (fails while files are open) and lazy (detaches at
//! once; the kernel finishes when the last user lets go). Root calls
//! `umount2` directly; anyone else goes through `fusermount3`.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};

use super::MountError;
use super::mountinfo;

/// More mounts than this stacked at one point is not something we made.
const MAX_STACKED: usize = 16;

/// Detaches every mount at `path`, dead FUSE mounts included (lessons.md 3).
/// Synchronous and safe anywhere, `Drop` included: a lazy unmount never
/// waits for the mounted file system. Ok when nothing is mounted.
pub fn lazy_unmount(path: &Path) -> Result<(), MountError> {
    for _ in 0..MAX_STACKED {
        let mounted = mountinfo::is_mounted(path).map_err(|e| failed(path, e.to_string()))?;
        if !mounted {
            return Ok(());
        }
        unmount(path, MntFlags::MNT_DETACH, "-uz")?;
    }
    Err(failed(
        path,
        format!("still mounted after {MAX_STACKED} lazy unmounts"),
    ))
}

/// Detaches the topmost mount at `path` only.
pub(crate) fn detach_top(path: &Path) -> Result<(), MountError> {
    unmount(path, MntFlags::MNT_DETACH, "-uz")
}

/// Unmounts the topmost mount at `path` cleanly; fails (busy) while a file
/// in it is open.
pub(crate) fn clean_unmount(path: &Path) -> Result<(), MountError> {
    unmount(path, MntFlags::empty(), "-u")
}

fn unmount(path: &Path, flags: MntFlags, fusermount_flag: &str) -> Result<(), MountError> {
    match umount2(path, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => fusermount(path, fusermount_flag),
        // Gone in the meantime (rclone unmounts itself on SIGTERM).
        Err(_) if !mountinfo::is_mounted(path).unwrap_or(true) => Ok(()),
        Err(e) => Err(failed(path, e.desc().to_string())),
    }
}

fn fusermount(path: &Path, flag: &str) -> Result<(), MountError> {
    for program in ["fusermount3", "fusermount"] {
        let run = Command::new(program)
            .arg(flag)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match run {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let line = stderr.lines().next().unwrap_or("no message").trim();
                return Err(failed(path, format!("{program} {flag}: {line}")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(path, format!("{program}: {e}"))),
        }
    }
    Err(failed(
        path,
        "not root, and neither fusermount3 nor fusermount is installed".into(),
    ))
}

fn failed(path: &Path, detail: String) -> MountError {
    MountError::Unmount {
        path: path.to_path_buf(),
        detail,
    }
}
