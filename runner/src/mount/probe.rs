//! The health probe (lessons.md 1 and 3): is it a live FUSE mount with
//! rclone behind it, does it list, and does it serve the bytes of files
//! the DB says exist, and does the bucket behind it (a read through the
//! mount may come from rclone's cache: `bucket.rs`)? Each call on the mount
//! runs on its own thread with a timeout ([`super::watchdog`]), so a hung
//! mount costs the probe its bounds, never more.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::bucket::BucketReads;
use super::health::{Health, Problem, ProblemKind, Verdict, classify, no_answer};
use super::mountinfo;
use super::watchdog::{Outcome, Watchdog};

/// What to look at besides the mount root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeTargets {
    /// Files the DB says exist (see [`crate::plexdb::anchors::sample`]).
    /// When empty (a scratch run has no DB yet), the probe picks files by
    /// random descents from the mount root instead.
    pub anchors: Vec<PathBuf>,
    /// Folders that must list something, e.g. the library roots.
    pub dirs: Vec<PathBuf>,
}

impl ProbeTargets {
    pub fn new(anchors: Vec<PathBuf>) -> ProbeTargets {
        ProbeTargets {
            anchors,
            dirs: Vec::new(),
        }
    }

    pub fn with_dirs(mut self, dirs: Vec<PathBuf>) -> ProbeTargets {
        self.dirs = dirs;
        self
    }
}

/// How many anchor reads must succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    All,
    /// At least this many (all of them when fewer are given).
    AtLeast(usize),
}

/// Where in an anchor file the probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    Start,
    /// A random offset: a file's start may sit in rclone's VFS cache from an
    /// earlier read, and a cached read proves nothing about the bucket.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLimits {
    /// For each folder listing (all run at once).
    pub list_timeout: Duration,
    /// For each anchor read (open, size, read), and again for the read of
    /// its object from the bucket.
    pub read_timeout: Duration,
    pub read_bytes: usize,
    pub read_at: ReadAt,
    pub quorum: Quorum,
    /// Anchor reads in flight at once.
    pub parallel: usize,
    /// A listing stops after this many entries: it proves the folder lists.
    pub max_list_entries: usize,
    /// Files to find when no anchors are given.
    pub discover: usize,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            list_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            read_bytes: 512,
            read_at: ReadAt::Random,
            quorum: Quorum::All,
            parallel: 8,
            max_list_entries: 1000,
            discover: 4,
        }
    }
}

impl ProbeLimits {
    /// The defaults, with `timeout` for each listing and each read.
    pub fn with_timeout(timeout: Duration) -> ProbeLimits {
        ProbeLimits {
            list_timeout: timeout,
            read_timeout: timeout,
            ..ProbeLimits::default()
        }
    }

    /// The longest a probe of `anchors` files can take, setup aside: one
    /// listing round (two without anchors: the search for some), then the
    /// reads in waves of `parallel`, each a read through the mount and one
    /// from the bucket.
    pub fn bound(&self, anchors: usize) -> Duration {
        let (listings, reads) = match anchors {
            0 => (2, self.discover),
            n => (1, n),
        };
        let waves = reads.div_ceil(self.parallel.max(1)) as u32;
        self.list_timeout * listings + self.read_timeout * 2 * waves
    }

    fn required(&self, total: usize) -> usize {
        match self.quorum {
            Quorum::All => total,
            Quorum::AtLeast(n) => n.min(total),
        }
    }
}

/// The state of rclone, as the handle knows it.
pub(crate) enum Rclone {
    Running,
    Exited(String),
    NotStarted,
}

/// Runs every check; never fails, never exceeds [`ProbeLimits::bound`]
/// (plus the cost of reading `/proc/self/mountinfo`). An anchor counts as
/// read when the mount served it and, with `bucket`, so did the bucket.
pub(crate) async fn probe(
    mount_point: &Path,
    rclone: Rclone,
    targets: &ProbeTargets,
    limits: &ProbeLimits,
    dog: &Watchdog,
    bucket: Option<&BucketReads>,
) -> Health {
    let started = Instant::now();
    let mut problems = Vec::new();
    let at_mount = |detail: String, kind| Problem {
        kind,
        path: mount_point.display().to_string(),
        detail,
    };
    let mounted = match mountinfo::mount_at(mount_point) {
        Ok(Some(entry)) if entry.is_fuse() => true,
        Ok(Some(entry)) => {
            let detail = format!("holds a {} mount, not rclone's FUSE mount", entry.fstype);
            problems.push(at_mount(detail, ProblemKind::NotMounted));
            false
        }
        Ok(None) => {
            problems.push(at_mount("not mounted".into(), ProblemKind::NotMounted));
            false
        }
        Err(e) => {
            let detail = format!("cannot read /proc/self/mountinfo: {e}");
            problems.push(at_mount(detail, ProblemKind::NotMounted));
            false
        }
    };
    match rclone {
        Rclone::Running => {}
        Rclone::Exited(how) => problems.push(at_mount(
            format!("rclone is not running ({how})"),
            ProblemKind::RcloneNotRunning,
        )),
        Rclone::NotStarted => problems.push(at_mount(
            "rclone is not running (not started)".into(),
            ProblemKind::RcloneNotRunning,
        )),
    }
    let mut health = Health {
        mount_point: mount_point.display().to_string(),
        verdict: Verdict::MountFailure,
        problems: Vec::new(),
        dirs_listed: 0,
        dirs_total: 1 + targets.dirs.len(),
        anchors_read: 0,
        anchors_total: targets.anchors.len(),
        anchors_required: limits.required(targets.anchors.len()),
        anchors_discovered: false,
        blocked_calls: 0,
        listing_ms: 0,
        reads_ms: 0,
        slowest_read_ms: 0,
        total_ms: 0,
    };
    // Without the mount, the path is the empty folder under it: listing
    // that would only mislead. (A mounted, dead connection is still probed:
    // its "socket not connected" answers come at once and say what is wrong.)
    if mounted {
        let listing = Instant::now();
        health.dirs_listed = list_dirs(mount_point, targets, limits, dog, &mut problems).await;
        health.listing_ms = millis(listing.elapsed());
        let reading = Instant::now();
        let anchors = if targets.anchors.is_empty() {
            health.anchors_discovered = true;
            discover(mount_point, targets, limits, dog, &mut problems).await
        } else {
            targets.anchors.clone()
        };
        health.anchors_total = anchors.len();
        health.anchors_required = limits.required(anchors.len());
        let (read, slowest) =
            read_anchors(mount_point, &anchors, limits, dog, bucket, &mut problems).await;
        health.anchors_read = read;
        health.slowest_read_ms = millis(slowest);
        health.reads_ms = millis(reading.elapsed());
    }
    health.verdict = if problems.iter().any(|p| p.kind.is_mount_failure()) {
        Verdict::MountFailure
    } else if health.dirs_listed < health.dirs_total
        || health.anchors_total == 0
        || health.anchors_read < health.anchors_required
    {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    health.problems = problems;
    health.blocked_calls = dog.in_flight();
    health.total_ms = millis(started.elapsed());
    health
}

/// Lists the mount root and `targets.dirs`, all at once; returns how many
/// listed something.
async fn list_dirs(
    mount_point: &Path,
    targets: &ProbeTargets,
    limits: &ProbeLimits,
    dog: &Watchdog,
    problems: &mut Vec<Problem>,
) -> usize {
    let dirs: Vec<PathBuf> = std::iter::once(mount_point.to_path_buf())
        .chain(targets.dirs.iter().cloned())
        .collect();
    let max = limits.max_list_entries.max(1);
    let runs = dirs.iter().map(|dir| {
        let dir = dir.clone();
        async move {
            if !dir.starts_with(mount_point) {
                return Err(outside(&dir));
            }
            let path = dir.clone();
            let outcome = dog
                .run("mount-list", limits.list_timeout, move || list(&path, max))
                .await;
            match outcome {
                Outcome::Done(Ok(0)) => Err(Problem {
                    kind: ProblemKind::Empty,
                    path: dir.display().to_string(),
                    detail: "lists nothing (wrong bucket or path, or a degraded mount)".into(),
                }),
                Outcome::Done(Ok(_)) => Ok(()),
                other => Err(failure(&dir, other.into_failure(), limits.list_timeout)),
            }
        }
    });
    let mut listed = 0;
    for result in futures::future::join_all(runs).await {
        match result {
            Ok(()) => listed += 1,
            Err(problem) => problems.push(problem),
        }
    }
    listed
}

/// Reads each anchor, `limits.parallel` at a time, through the mount and
/// then from `bucket`; returns how many were read and the slowest read.
async fn read_anchors(
    mount_point: &Path,
    anchors: &[PathBuf],
    limits: &ProbeLimits,
    dog: &Watchdog,
    bucket: Option<&BucketReads>,
    problems: &mut Vec<Problem>,
) -> (usize, Duration) {
    let reads = anchors.iter().enumerate().map(|(i, anchor)| {
        let anchor = anchor.clone();
        async move {
            let started = Instant::now();
            if !anchor.starts_with(mount_point) {
                return (i, started.elapsed(), Err(outside(&anchor)));
            }
            let path = anchor.clone();
            let (bytes, at) = (limits.read_bytes, limits.read_at);
            let outcome = dog
                .run("mount-read", limits.read_timeout, move || {
                    read_anchor(&path, bytes, at)
                })
                .await;
            let result = match (outcome, bucket) {
                (Outcome::Done(Ok(_)), None) => Ok(()),
                (Outcome::Done(Ok(_)), Some(bucket)) => bucket
                    .read(mount_point, &anchor, limits.read_bytes, limits.read_timeout)
                    .await
                    .map_err(|(kind, detail)| Problem {
                        kind,
                        path: anchor.display().to_string(),
                        detail,
                    }),
                (other, _) => Err(failure(&anchor, other.into_failure(), limits.read_timeout)),
            };
            (i, started.elapsed(), result)
        }
    });
    let mut results: Vec<_> = futures::stream::iter(reads)
        .buffer_unordered(limits.parallel.max(1))
        .collect()
        .await;
    // Problems in the caller's order, whatever order the reads ended in.
    results.sort_by_key(|(i, _, _)| *i);
    let mut read = 0;
    let mut slowest = Duration::ZERO;
    for (_, elapsed, result) in results {
        slowest = slowest.max(elapsed);
        match result {
            Ok(()) => read += 1,
            Err(problem) => problems.push(problem),
        }
    }
    (read, slowest)
}

/// Without anchors from the DB: files found by random descents from the
/// mount root (or `targets.dirs`), within one listing timeout.
async fn discover(
    mount_point: &Path,
    targets: &ProbeTargets,
    limits: &ProbeLimits,
    dog: &Watchdog,
    problems: &mut Vec<Problem>,
) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = targets
        .dirs
        .iter()
        .filter(|d| d.starts_with(mount_point))
        .cloned()
        .collect();
    if roots.is_empty() {
        roots.push(mount_point.to_path_buf());
    }
    let (want, max) = (limits.discover.max(1), limits.max_list_entries.max(1));
    let outcome = dog
        .run("mount-discover", limits.list_timeout, move || {
            find_files(&roots, want, max)
        })
        .await;
    let problem = match outcome {
        Outcome::Done(Ok(files)) if !files.is_empty() => return files,
        Outcome::Done(Ok(_)) => Problem {
            kind: ProblemKind::Missing,
            path: mount_point.display().to_string(),
            detail: "no anchor files given, and no file found under the mount to read".into(),
        },
        other => failure(mount_point, other.into_failure(), limits.list_timeout),
    };
    problems.push(problem);
    Vec::new()
}

/// Up to `want` distinct files, each found by descending from a root
/// through randomly chosen entries.
fn find_files(roots: &[PathBuf], want: usize, max_entries: usize) -> io::Result<Vec<PathBuf>> {
    const MAX_DEPTH: usize = 8;
    let mut found: Vec<PathBuf> = Vec::new();
    for attempt in 0..want * 4 {
        if found.len() == want {
            break;
        }
        let mut dir = roots[attempt % roots.len()].clone();
        for _ in 0..MAX_DEPTH {
            let entries = std::fs::read_dir(&dir)?
                .take(max_entries)
                .collect::<io::Result<Vec<_>>>()?;
            if entries.is_empty() {
                break;
            }
            let entry = &entries[rand::random_range(0..entries.len())];
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dir = entry.path();
                continue;
            }
            if kind.is_file() && !found.contains(&entry.path()) {
                found.push(entry.path());
            }
            break;
        }
    }
    Ok(found)
}

/// A call's outcome other than success, as one kind of failure.
enum Failure {
    Error(io::Error),
    TimedOut,
    Refused(usize),
    Failed(String),
}

impl<T> Outcome<io::Result<T>> {
    fn into_failure(self) -> Failure {
        match self {
            Outcome::Done(Ok(_)) => Failure::Failed("succeeded".into()),
            Outcome::Done(Err(e)) => Failure::Error(e),
            Outcome::TimedOut => Failure::TimedOut,
            Outcome::Refused(n) => Failure::Refused(n),
            Outcome::Failed(why) => Failure::Failed(why),
        }
    }
}

fn failure(path: &Path, failure: Failure, bound: Duration) -> Problem {
    let (kind, detail) = match failure {
        Failure::Error(e) => classify(&e),
        Failure::TimedOut => (ProblemKind::Timeout, no_answer(bound)),
        Failure::Refused(n) => (
            ProblemKind::Overloaded,
            format!("not tried: {n} earlier calls are still blocked on the mount"),
        ),
        Failure::Failed(why) => (ProblemKind::Io, why),
    };
    Problem {
        kind,
        path: path.display().to_string(),
        detail,
    }
}

fn outside(path: &Path) -> Problem {
    Problem {
        kind: ProblemKind::Outside,
        path: path.display().to_string(),
        detail: "not under the mount point".into(),
    }
}

/// Counts up to `max` entries of `dir`.
pub(crate) fn list(dir: &Path, max: usize) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)?.take(max) {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// Opens `path` and reads up to `bytes` bytes of it.
fn read_anchor(path: &Path, bytes: usize, at: ReadAt) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let want = (bytes.max(1) as u64).min(len);
    let offset = match at {
        ReadAt::Start => 0,
        ReadAt::Random => rand::random_range(0..=len - want),
    };
    let mut buf = vec![0u8; want as usize];
    match file.read_at(&mut buf, offset)? {
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("no data at offset {offset} of a {len}-byte file"),
        )),
        n => Ok(n),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_and_bound() {
        let limits = ProbeLimits {
            list_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(3),
            parallel: 4,
            ..ProbeLimits::default()
        };
        // No anchors: a search listing, then `discover` (4) reads, each
        // through the mount and from the bucket.
        assert_eq!(limits.bound(0), Duration::from_secs(10));
        assert_eq!(limits.bound(4), Duration::from_secs(8));
        assert_eq!(limits.bound(5), Duration::from_secs(14));
        assert_eq!(limits.required(6), 6);
        let some = ProbeLimits {
            quorum: Quorum::AtLeast(3),
            ..limits
        };
        assert_eq!(some.required(6), 3);
        assert_eq!(some.required(2), 2);
    }

    #[test]
    fn local_reads_and_listings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.flac");
        std::fs::write(&file, vec![7u8; 10_000]).unwrap();
        assert_eq!(read_anchor(&file, 512, ReadAt::Random).unwrap(), 512);
        assert_eq!(read_anchor(&file, 20_000, ReadAt::Start).unwrap(), 10_000);
        assert_eq!(list(dir.path(), 10).unwrap(), 1);
        let missing = read_anchor(&dir.path().join("b"), 1, ReadAt::Start).unwrap_err();
        assert_eq!(classify(&missing).0, ProblemKind::Missing);
    }

    #[tokio::test]
    async fn an_unmounted_path_is_a_mount_failure_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("x.mkv");
        std::fs::write(&anchor, b"x").unwrap();
        let health = probe(
            dir.path(),
            Rclone::NotStarted,
            &ProbeTargets::new(vec![anchor]),
            &ProbeLimits::default(),
            &Watchdog::new(4),
            None,
        )
        .await;
        assert_eq!(health.verdict, Verdict::MountFailure);
        assert_eq!(health.anchors_read, 0);
        let kinds: Vec<_> = health.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [ProblemKind::NotMounted, ProblemKind::RcloneNotRunning]
        );
    }
}
