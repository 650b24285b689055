//! Is Plex working? There is no single flag (plex.md): a section says it is
//! refreshing, activities run, scanner processes live on after both
//! (lessons.md 11), and a section's metadata update queue drains after its
//! scan's activity has ended (its timeline's `updateQueueSize`, issue 13).
//! Plex is idle only when all four say so.

use serde::Serialize;

use super::api::PlexApi;
use super::error::PlexError;

/// What Plex was doing at one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Busy {
    /// Sections with `refreshing = 1`.
    pub refreshing: Vec<String>,
    /// `type: title (progress%)` of each activity.
    pub activities: Vec<String>,
    /// Live `Plex Media Scanner` processes.
    pub scanners: usize,
    /// `section: n items` of each section whose update queue is not empty.
    pub update_queues: Vec<String>,
    /// The highest progress of the activities, to tell work from a stall.
    #[serde(skip)]
    pub progress: Vec<(String, i64)>,
}

impl Busy {
    pub fn is_idle(&self) -> bool {
        self.refreshing.is_empty()
            && self.activities.is_empty()
            && self.scanners == 0
            && self.update_queues.is_empty()
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_idle() {
            return f.write_str("idle");
        }
        let mut parts = Vec::new();
        if !self.refreshing.is_empty() {
            parts.push(format!(
                "refreshing sections {}",
                self.refreshing.join(", ")
            ));
        }
        if !self.activities.is_empty() {
            parts.push(format!("activities: {}", self.activities.join("; ")));
        }
        if self.scanners > 0 {
            parts.push(format!("{} scanner process(es)", self.scanners));
        }
        if !self.update_queues.is_empty() {
            parts.push(format!(
                "metadata update queues: {}",
                self.update_queues.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// One poll of everything that says Plex is working; scanners count when
/// they descend from `plex_pid` (any scanner when it is unknown).
pub async fn observe(api: &PlexApi, plex_pid: Option<u32>) -> Result<Busy, PlexError> {
    let sections = api.sections().await?;
    let activities = api.activities().await?;
    // After the activities: a scan queues its items before its activity ends.
    let mut queues = Vec::new();
    for section in &sections {
        let size = api.timeline(section.key.as_str()).await?.update_queue_size;
        if size > 0 {
            queues.push((section.key.to_string(), size));
        }
    }
    Ok(Busy {
        refreshing: sections
            .iter()
            .filter(|s| s.refreshing.0)
            .map(|s| s.key.to_string())
            .collect(),
        activities: activities
            .iter()
            .map(|a| match a.progress {
                Some(p) if p >= 0.0 => format!("{}: {} ({p:.0}%)", a.kind, a.title),
                _ => format!("{}: {}", a.kind, a.title),
            })
            .collect(),
        // A draining queue is progress too (never taken for a stall).
        progress: activities
            .iter()
            .map(|a| (a.kind.clone(), a.progress.unwrap_or(-1.0).round() as i64))
            .chain(
                queues
                    .iter()
                    .map(|(key, size)| (format!("updateQueueSize {key}"), *size as i64)),
            )
            .collect(),
        update_queues: queues
            .iter()
            .map(|(key, size)| format!("section {key}: {size} items"))
            .collect(),
        scanners: scanner_processes(plex_pid),
    })
}

/// Processes whose command line starts with Plex's scanner binary name
/// (the container's processes are visible from the host too), below
/// `root` when given.
pub fn scanner_processes(root: Option<u32>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_scanner(&c)))
        .filter(|pid| root.is_none_or(|root| descends_from(*pid, root)))
        .count()
}

/// Walks the parent chain of `pid` up to init.
fn descends_from(mut pid: u32, root: u32) -> bool {
    for _ in 0..64 {
        if pid == root {
            return true;
        }
        match parent_of(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields resume
    // after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn is_scanner(cmdline: &[u8]) -> bool {
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    argv0
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("Plex Media Scanner"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_descends_from_its_parent() {
        let me = std::process::id();
        let parent = parent_of(me).unwrap();
        assert!(descends_from(me, me));
        assert!(descends_from(me, parent));
        assert!(!descends_from(parent, me));
    }

    #[test]
    fn a_metadata_update_queue_is_work() {
        let busy = Busy {
            update_queues: vec!["section 3: 12 items".into()],
            ..Busy::default()
        };
        assert!(!busy.is_idle());
        assert_eq!(
            busy.to_string(),
            "metadata update queues: section 3: 12 items"
        );
        assert!(Busy::default().is_idle());
    }

    #[test]
    fn recognises_the_scanner_by_its_program_name() {
        assert!(is_scanner(
            b"/usr/lib/plexmediaserver/Plex Media Scanner\0--analyze\0"
        ));
        assert!(is_scanner(b"Plex Media Scanner\0"));
        assert!(!is_scanner(b"/usr/bin/grep\0Plex Media Scanner\0"));
        assert!(!is_scanner(b""));
    }
}
