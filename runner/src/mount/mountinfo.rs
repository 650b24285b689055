//! Is something mounted at a path? Answered from `/proc/self/mountinfo`,
//! which never touches the mounted file system: a `stat` of a dead FUSE
//! mount fails, and one of a hung mount never returns.

use std::io;
use std::path::{Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The kernel's mount id; reused after an unmount, so a mount is told
    /// from another by its `device` (rclone's `--devname`).
    pub id: u64,
    pub mount_point: PathBuf,
    /// e.g. `fuse.rclone`, `ext4`.
    pub fstype: String,
    /// The mount source, e.g. `plexburst:bucket/path`.
    pub device: String,
}

impl MountEntry {
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// True when anything is mounted at `path`.
pub fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mount_at(path)?.is_some())
}

/// The topmost mount at `path` (the one a lookup sees), if any.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts_at(path)?.pop())
}

/// Every mount stacked at `path`, bottom first.
pub(crate) fn mounts_at(path: &Path) -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO)?;
    let wanted = comparable(path);
    Ok(parse(&text)
        .into_iter()
        .filter(|e| e.mount_point == wanted)
        .collect())
}

/// `path` as the kernel reports it: the parent resolved (symlinks in it
/// are followed), the last component kept as is. The mount point itself is
/// never resolved, since that would touch the mounted file system.
fn comparable(path: &Path) -> PathBuf {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    match std::fs::canonicalize(parent) {
        Ok(parent) => parent.join(name),
        Err(_) => path.to_path_buf(),
    }
}

pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `id parent maj:min root MOUNT_POINT options [optional...] - FSTYPE SOURCE super`
fn parse_line(line: &str) -> Option<MountEntry> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let id = head.next()?.parse().ok()?;
    let mount_point = head.nth(3)?;
    let mut tail = tail.split(' ');
    let fstype = tail.next()?;
    let device = tail.next().unwrap_or_default();
    Some(MountEntry {
        id,
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        device: unescape(device),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
42 22 0:39 / /tmp/a\\040b/mnt ro,nosuid,nodev,relatime shared:7 - fuse.rclone plexburst{g2OpE}:bkt ro,user_id=0,group_id=0,allow_other
43 22 0:40 / /mnt/media rw - tmpfs tmpfs rw
44 43 0:41 / /mnt/media ro - fuse.rclone plexburst:media ro
";

    #[test]
    fn lines_parse_with_escapes_and_optional_fields() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].id, 42);
        assert_eq!(entries[1].mount_point, Path::new("/tmp/a b/mnt"));
        assert_eq!(entries[1].fstype, "fuse.rclone");
        assert_eq!(entries[1].device, "plexburst{g2OpE}:bkt");
        assert!(entries[1].is_fuse());
        assert!(!entries[0].is_fuse());
        let stacked: Vec<_> = entries
            .iter()
            .filter(|e| e.mount_point == Path::new("/mnt/media"))
            .collect();
        assert_eq!(stacked.last().unwrap().fstype, "fuse.rclone");
    }

    #[test]
    fn unescaping_leaves_other_backslashes() {
        assert_eq!(unescape("a\\134b\\011c\\x"), "a\\b\tc\\x");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn the_root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()).unwrap());
    }
}
