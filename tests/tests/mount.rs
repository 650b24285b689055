//! The media mount for real: rclone FUSE mounts of a real S3 server on
//! loopback (`rclone serve s3`), a fault proxy in between where the network
//! must misbehave, and anchors sampled from a generated Plex DB whose paths
//! point into the mount. Needs root (or FUSE for the user) and rclone.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plex_burst_tests::faultproxy::{Fault, FaultProxy, Plan, When};
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, LocationSpec, Spec, generate_db, write_media_tree,
};
use plex_burst_tests::s3server::{ACCESS_KEY, S3Server, SECRET_KEY, rclone_path};
use runner::config::RunConfig;
use runner::mount::{
    Health, Mount, MountError, MountSpec, ProbeLimits, ProbeTargets, ProblemKind, RemountPolicy,
    Verdict, is_mounted, lazy_unmount, mount_at,
};
use runner::plexdb::anchors;
use rusqlite::Connection;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "plex-media";
const LIBRARIES: [&str; 3] = ["Movies", "Music", "TV Shows"];

/// Lazily unmounts the mount point when dropped, even after a failed
/// assertion, so that no test leaves a mount behind.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        if let Err(e) = lazy_unmount(&self.0) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A bucket holding a fixture media tree, the fixture's DB (paths under the
/// mount point), a work folder, and optionally a fault proxy in front of
/// the S3 server. Field order is drop order: unmount before deleting.
struct World {
    _unmount: Unmounter,
    proxy: Option<FaultProxy>,
    server: S3Server,
    dir: TempDir,
    mount_point: PathBuf,
    db: PathBuf,
}

impl World {
    fn new() -> World {
        Self::build(false)
    }

    fn behind_proxy() -> World {
        Self::build(true)
    }

    fn build(with_proxy: bool) -> World {
        let dir = tempfile::Builder::new()
            .prefix("plex-burst-mount-")
            .tempdir()
            .unwrap();
        let mount_point = dir.path().join("media");
        let unmount = Unmounter(mount_point.clone());
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let spec = fixture_spec(mount_point.to_str().unwrap());
        let db = dir.path().join("library.db");
        generate_db(&db, &spec).unwrap();
        write_media_tree(&server.data_dir().join(BUCKET), &spec).unwrap();
        let proxy = with_proxy.then(|| FaultProxy::start(server.addr()).unwrap());
        World {
            _unmount: unmount,
            proxy,
            server,
            dir,
            mount_point,
            db,
        }
    }

    fn endpoint(&self) -> String {
        match &self.proxy {
            Some(proxy) => proxy.endpoint(),
            None => self.server.endpoint(),
        }
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("logs/rclone.log")
    }

    /// The spec the runner would build from run.toml, for `remote`.
    fn spec_for(&self, remote: &str) -> MountSpec {
        let toml = format!(
            r#"run_id = "mount-test"
work_dir = "{work}"
mode = "delta"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "plex-burst"
path_style = true
access_key_env = "TEST_KEY"
secret_key_env = "TEST_SECRET"

[reference]
archive_key = "reference/home.tar.zst"

[media]
remote = "{remote}"
mount_point = "{mount}"
profile = "small"

[plex]
version = "1.41.3.9314-a0bfb8370"
runtime = "double"

[termination]
provider = "none"
"#,
            work = self.dir.path().join("work").display(),
            endpoint = self.endpoint(),
            mount = self.mount_point.display(),
        );
        let env = |var: &str| match var {
            "TEST_KEY" => Some(ACCESS_KEY.to_string()),
            "TEST_SECRET" => Some(SECRET_KEY.to_string()),
            _ => None,
        };
        let cfg = RunConfig::from_toml_str(&toml, &env).unwrap();
        let me = std::fs::metadata("/proc/self").unwrap();
        let mut spec =
            MountSpec::from_config(&cfg, me.uid(), me.gid(), cfg.work_dir(), self.log_file())
                .with_rclone(rclone_path());
        spec.limits.start = Duration::from_secs(20);
        spec
    }

    fn spec(&self) -> MountSpec {
        self.spec_for(BUCKET)
    }

    async fn start(&self) -> Mount {
        let started = Instant::now();
        let mount = Mount::start(self.spec(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("mount failed: {e}"));
        eprintln!("mounted in {:?}", started.elapsed());
        mount
    }

    fn anchors(&self, n: usize) -> Vec<PathBuf> {
        let anchors = anchors::sample(&self.db, n, &self.mount_point).unwrap();
        assert_eq!(anchors.len(), n, "the fixture has enough files");
        anchors
    }

    fn targets(&self, n: usize) -> ProbeTargets {
        let dirs = LIBRARIES.iter().map(|l| self.mount_point.join(l)).collect();
        ProbeTargets::new(self.anchors(n)).with_dirs(dirs)
    }

    /// Where the S3 server keeps the object behind a path in the mount.
    fn object(&self, in_mount: &Path) -> PathBuf {
        let relative = in_mount.strip_prefix(&self.mount_point).unwrap();
        self.server.data_dir().join(BUCKET).join(relative)
    }

    /// Mounts at the mount point in /proc/self/mountinfo.
    fn stacked_mounts(&self) -> usize {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let field = format!(" {} ", self.mount_point.display());
        text.lines().filter(|l| l.contains(&field)).count()
    }
}

/// Three small libraries under `media_root`, one movie marked deleted.
fn fixture_spec(media_root: &str) -> Spec {
    let library = |name: &str, kind, items, deleted| LibrarySpec {
        name: name.into(),
        kind,
        locations: vec![LocationSpec {
            path: name.into(),
            items,
        }],
        deleted,
        sonic_fraction: 0.0,
    };
    Spec {
        seed: 11,
        media_root: media_root.into(),
        libraries: vec![
            library("Movies", LibraryKind::Movie, 8, 1),
            library("TV Shows", LibraryKind::Show, 12, 0),
            library("Music", LibraryKind::Music, 40, 2),
        ],
    }
}

fn fast_limits() -> ProbeLimits {
    ProbeLimits {
        list_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        ..ProbeLimits::default()
    }
}

/// How long a call may take before the test calls it hung: a hang guard,
/// not a timing test (minutes, far beyond a busy machine's slowness).
const HANG_GUARD: Duration = Duration::from_secs(180);

/// Runs `f` on a thread and fails the test if it hangs (a call on a
/// broken mount must not hang the test).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| panic!("hang guard: {what} still blocked after {HANG_GUARD:?}"))
}

/// Awaits `call`, failing the test if it hangs.
async fn guarded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, call)
        .await
        .unwrap_or_else(|_| panic!("hang guard: {what} still running after {HANG_GUARD:?}"))
}

/// Every file and folder under `dir`, as paths relative to it.
fn walk(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            out.insert(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    Ok(out)
}

fn assert_healthy(health: &Health) {
    assert!(health.is_healthy(), "{}", health.summary());
    assert!(health.problems.is_empty(), "{:?}", health.problems);
}

#[tokio::test]
async fn a_mount_lists_reads_and_probes_healthy() {
    let world = World::new();
    let mut mount = world.start().await;
    assert!(mount.is_alive());
    assert!(is_mounted(&world.mount_point).unwrap());
    assert_eq!(
        mount_at(&world.mount_point).unwrap().unwrap().fstype,
        "fuse.rclone"
    );

    // The whole tree, as in the bucket; files read back byte for byte.
    let in_mount = walk(&world.mount_point).unwrap();
    let in_bucket = walk(&world.server.data_dir().join(BUCKET)).unwrap();
    assert_eq!(in_mount, in_bucket);
    let anchors = world.anchors(6);
    for anchor in &anchors {
        assert_eq!(
            std::fs::read(anchor).unwrap(),
            std::fs::read(world.object(anchor)).unwrap(),
            "{}",
            anchor.display()
        );
    }

    let targets = world.targets(6);
    let limits = fast_limits();
    let health = mount.probe(&targets, &limits).await;
    eprintln!(
        "{} (listing {} ms, reads {} ms)",
        health.summary(),
        health.listing_ms,
        health.reads_ms
    );
    assert_healthy(&health);
    assert_eq!((health.dirs_listed, health.dirs_total), (4, 4));
    assert_eq!((health.anchors_read, health.anchors_total), (6, 6));
    // Serialisable for status reports.
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["verdict"], "healthy");
    assert_eq!(serde_json::from_value::<Health>(json).unwrap(), health);

    // Without anchors from a DB it finds files to read by itself.
    let found = mount.probe(&ProbeTargets::default(), &limits).await;
    assert_healthy(&found);
    assert!(
        found.anchors_discovered && found.anchors_read > 0,
        "{}",
        found.summary()
    );

    mount.stop().await.unwrap();
    assert!(!mount.is_alive());
    assert!(!is_mounted(&world.mount_point).unwrap());
}

#[tokio::test]
async fn secrets_stay_out_of_the_command_line_and_the_log() {
    let world = World::new();
    let mut mount = world.start().await;
    let pid = mount.pid().unwrap();
    let line = mount.invocation().command_line();
    eprintln!("{line}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(" mount plexburst:plex-media "),
        "{cmdline}"
    );
    // Positive control: the keys do reach rclone, through its environment.
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .into_owned();
    assert!(environ.contains(&format!(
        "RCLONE_CONFIG_PLEXBURST_SECRET_ACCESS_KEY={SECRET_KEY}"
    )));
    // Some traffic for the log, then a stop, which rclone logs too.
    for anchor in world.anchors(3) {
        std::fs::read(anchor).unwrap();
    }
    let stopping = Instant::now();
    mount.stop().await.unwrap();
    eprintln!("stopped in {:?}", stopping.elapsed());
    // The log is rclone's (it names the bucket), at INFO.
    let log = std::fs::read_to_string(world.log_file()).unwrap();
    assert!(log.contains("INFO") && log.contains(BUCKET), "{log}");
    for secret in [ACCESS_KEY, SECRET_KEY] {
        assert!(!line.contains(secret), "command line: {line}");
        assert!(!cmdline.contains(secret), "/proc/{pid}/cmdline: {cmdline}");
        assert!(!log.contains(secret), "rclone log: {log}");
        assert!(!format!("{:?}", mount.spec()).contains(secret));
    }
}

#[tokio::test]
async fn a_degraded_mount_still_lists_but_fails_the_probe_in_bounds() {
    let world = World::behind_proxy();
    let proxy = world.proxy.as_ref().unwrap();
    let mut mount = world.start().await;
    // Warm rclone's dir-cache, as Plex's scanner does.
    let before = walk(&world.mount_point).unwrap();
    let targets = world.targets(6);
    let limits = fast_limits();

    // Every object GET hangs (listings are `GET /bucket?...`, unaffected).
    proxy.set(Some(
        Plan::new(Fault::Stall(HANG_GUARD), When::Always).matching(&format!("GET /{BUCKET}/")),
    ));
    let mount_point = world.mount_point.clone();
    let after = within("the listing", move || walk(&mount_point).unwrap());
    assert_eq!(after, before, "the listing still looks complete");
    let started = Instant::now();
    let health = guarded("the probe", mount.probe(&targets, &limits)).await;
    eprintln!(
        "stalled GETs: {} in {:?}",
        health.summary(),
        started.elapsed()
    );
    assert_eq!(health.verdict, Verdict::Degraded, "{}", health.summary());
    // In bounds: it returned while its reads still hang (the proxy holds
    // each, and every retry, as long as the hang guard), by its timeouts.
    assert!(health.blocked_calls > 0, "the stalled reads are still out");
    assert_eq!(health.anchors_read, 0);
    assert_eq!(
        health.dirs_listed, health.dirs_total,
        "listings still answer"
    );
    for anchor in &targets.anchors {
        let problem = health
            .problems
            .iter()
            .find(|p| Path::new(&p.path) == anchor)
            .unwrap_or_else(|| panic!("{} not named in {}", anchor.display(), health.summary()));
        assert_eq!(problem.kind, ProblemKind::Timeout);
        assert_eq!(
            problem.to_string(),
            format!("{}: no answer within 2s", anchor.display())
        );
    }

    // Everything fails now, listings included: the dir-cache still answers.
    proxy.set(Some(Plan::new(Fault::Status(503), When::Always)));
    let other = ProbeTargets::new(world.anchors(12).split_off(6));
    let health = mount.probe(&other, &limits).await;
    eprintln!("503 for everything: {}", health.summary());
    assert!(!health.is_healthy());
    assert!(!health.is_mount_failure(), "{}", health.summary());
    assert_eq!(health.dirs_listed, health.dirs_total);

    let stopping = Instant::now();
    mount.stop().await.unwrap();
    eprintln!("stopped with reads blocked in {:?}", stopping.elapsed());
    assert!(!is_mounted(&world.mount_point).unwrap());
}

#[tokio::test]
async fn a_dead_mount_is_a_mount_failure_and_remount_heals_it() {
    let world = World::new();
    let mut mount = world.start().await;
    let targets = world.targets(6);
    let limits = fast_limits();
    assert_healthy(&mount.probe(&targets, &limits).await);

    let pid = mount.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    guarded("rclone's death after kill -9", async {
        while mount.is_alive() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The kernel keeps the dead mount: reads say "not connected".
    assert!(is_mounted(&world.mount_point).unwrap());
    let anchor = targets.anchors[0].clone();
    let error = within("a read on the dead mount", move || {
        std::fs::read(anchor).unwrap_err()
    });
    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected, "{error}");

    let health = mount.probe(&targets, &limits).await;
    eprintln!("dead: {}", health.summary());
    assert_eq!(health.verdict, Verdict::MountFailure);
    assert!(health.is_mount_failure());
    let details: Vec<String> = health.problems.iter().map(ToString::to_string).collect();
    assert!(
        details.iter().any(|d| d.contains("rclone is not running")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("socket not connected")),
        "{details:?}"
    );
    assert!(
        health.problems.iter().all(|p| p.kind.is_mount_failure()),
        "{details:?}"
    );

    let policy = RemountPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };
    let started = Instant::now();
    let healed = mount
        .remount(&targets, &limits, &policy, &CancellationToken::new())
        .await
        .unwrap();
    eprintln!("remounted in {:?}: {}", started.elapsed(), healed.summary());
    assert_healthy(&healed);
    assert_ne!(mount.pid(), Some(pid));
    assert_eq!(
        world.stacked_mounts(),
        1,
        "the dead mount is not left under the new one"
    );
    std::fs::read(&targets.anchors[1]).unwrap();

    mount.stop().await.unwrap();
    assert_eq!(world.stacked_mounts(), 0);
}

#[tokio::test]
async fn start_refuses_with_a_clear_error_and_leaves_nothing_mounted() {
    let world = World::new();

    // rclone exits at once: the mount point holds a stray file. With a
    // start limit past the hang guard, only a start that sees the exit
    // (not one that waits out its limit) returns.
    std::fs::create_dir_all(&world.mount_point).unwrap();
    std::fs::write(world.mount_point.join("stray.txt"), b"x").unwrap();
    let mut spec = world.spec();
    spec.limits.start = HANG_GUARD * 10;
    let started = Instant::now();
    let error = guarded(
        "a start whose rclone exited",
        Mount::start(spec, &CancellationToken::new()),
    )
    .await
    .err()
    .expect("rclone refuses a non-empty mount point");
    eprintln!("{error} ({:?})", started.elapsed());
    let MountError::RcloneExited { log_tail, .. } = &error else {
        panic!("unexpected error: {error}");
    };
    assert!(log_tail.contains("is not empty"), "{log_tail}");
    assert!(!error.to_string().contains('\n'));
    assert!(!is_mounted(&world.mount_point).unwrap());
    std::fs::remove_file(world.mount_point.join("stray.txt")).unwrap();

    // A bucket that does not exist lists nothing: refused, not mounted.
    let error = Mount::start(world.spec_for("no-such-bucket"), &CancellationToken::new())
        .await
        .err()
        .expect("an empty mount is refused");
    eprintln!("{error}");
    assert!(
        matches!(
            error,
            MountError::EmptyRoot { .. } | MountError::NotReady { .. }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("no-such-bucket"), "{error}");
    assert!(!is_mounted(&world.mount_point).unwrap());

    // No rclone binary.
    let spec = world.spec().with_rclone("/nonexistent/rclone");
    let error = Mount::start(spec, &CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(error, MountError::Spawn { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/rclone"), "{error}");

    // A cancelled start gives up at once and cleans up.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = Mount::start(world.spec(), &cancel).await.err().unwrap();
    assert!(matches!(error, MountError::Cancelled(_)), "{error}");
    assert!(!is_mounted(&world.mount_point).unwrap());
}

#[tokio::test]
async fn start_detaches_a_dead_mount_but_refuses_a_live_one() {
    let world = World::new();
    let first = world.start().await;

    let error = Mount::start(world.spec(), &CancellationToken::new())
        .await
        .err()
        .expect("a live mount is refused");
    eprintln!("{error}");
    assert!(
        matches!(error, MountError::AlreadyMounted { .. }),
        "{error}"
    );
    assert!(
        first.is_alive(),
        "the refused start left the live mount alone"
    );

    // rclone dies: its dead mount stays, and the next start clears it.
    let pid = first.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    guarded("rclone's death after kill -9", async {
        while first.is_alive() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut second = world.start().await;
    assert_eq!(world.stacked_mounts(), 1);
    // The old handle must not take the new mount with it.
    drop(first);
    assert!(second.is_alive());
    assert_healthy(&second.probe(&world.targets(4), &fast_limits()).await);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn stop_is_idempotent_and_leaves_nothing_mounted_even_when_busy() {
    let world = World::new();
    let mut mount = world.start().await;
    // An open file makes a clean unmount fail (busy): stop detaches lazily.
    let anchor = world.anchors(1).remove(0);
    let open = std::fs::File::open(&anchor).unwrap();
    let started = Instant::now();
    mount.stop().await.unwrap();
    eprintln!("busy stop took {:?}", started.elapsed());
    assert!(!is_mounted(&world.mount_point).unwrap());
    assert!(!mount.is_alive());
    mount.stop().await.unwrap();
    drop(open);
    mount.stop().await.unwrap();
    drop(mount);
    assert!(!is_mounted(&world.mount_point).unwrap());

    // Dropping a running mount cleans up too.
    let mount = world.start().await;
    drop(mount);
    assert!(!is_mounted(&world.mount_point).unwrap());
}

#[test]
fn anchors_are_live_files_under_the_mount_spread_over_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let root = "/mnt/media";
    let mut spec = fixture_spec(root);
    spec.libraries[2].locations[0].items = 400;
    // A second music location outside the mount.
    spec.libraries[2].locations.push(LocationSpec {
        path: "/elsewhere/music".into(),
        items: 50,
    });
    let db = dir.path().join("library.db");
    generate_db(&db, &spec).unwrap();
    let conn = Connection::open(&db).unwrap();
    let live: BTreeSet<String> = conn
        .prepare("SELECT file FROM media_parts WHERE deleted_at IS NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let under_root = live.iter().filter(|f| f.starts_with("/mnt/media/")).count();

    for _ in 0..20 {
        let picked = anchors::sample(&db, 8, Path::new(root)).unwrap();
        let texts: BTreeSet<String> = picked.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(texts.len(), 8, "distinct: {picked:?}");
        assert!(texts.iter().all(|f| live.contains(f)), "live: {picked:?}");
        assert!(
            picked.iter().all(|p| p.starts_with(root)),
            "under: {picked:?}"
        );
        let libraries: BTreeSet<_> = picked
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().components().next().unwrap())
            .collect();
        assert_eq!(libraries.len(), 3, "spread over libraries: {picked:?}");
        let folders: BTreeSet<_> = picked.iter().map(|p| p.parent().unwrap()).collect();
        assert_eq!(folders.len(), 8, "one file per folder: {picked:?}");
    }

    // Counts: all of them when fewer exist; none under a partial name.
    assert_eq!(
        anchors::sample(&db, 100_000, Path::new(root))
            .unwrap()
            .len(),
        under_root
    );
    assert!(
        anchors::sample(&db, 8, Path::new("/mnt/med"))
            .unwrap()
            .is_empty()
    );
    let movies = anchors::sample(&db, 100, Path::new("/mnt/media/Movies")).unwrap();
    assert_eq!(movies.len(), 8, "the live movies, not the deleted one");
    let elsewhere = anchors::sample(&db, 5, Path::new("/elsewhere")).unwrap();
    assert!(elsewhere.len() == 5 && elsewhere.iter().all(|p| p.starts_with("/elsewhere/music")));
}
