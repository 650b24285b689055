//! The runner end to end, as systemd starts it: the real binary, a real S3
//! server on loopback, a generated Plex library packed as the user's tar.gz.
//! The kill test adds Plex's phases: a real rclone mount of a media bucket,
//! the Plex double the runner starts, and the plex.tv double.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::faultproxy::{Fault, FaultProxy, Plan, When};
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::plexdouble::harness::{PlexTvDouble, free_port};
use plex_burst_tests::s3server::{S3Server, rclone_path};
use runner::plexdb::stats::{self, Stats};
use runner::s3::Bucket;
use runner::transfer;
use rusqlite::Connection;
use tempfile::TempDir;

const BUCKET: &str = "plex-burst";
const MEDIA: &str = "media";
const REFERENCE: &str = "reference/home.tar.gz";
const PLEX_VERSION: &str = "1.41.3.9314-a0bfb8370";
const ACCOUNT_TOKEN: &str = "account-token-for-run-tests-0123";
/// A hang guard, not a timing test: minutes, far past a busy machine's
/// slowness.
const HANG_GUARD: Duration = Duration::from_secs(300);

/// One run's world: the S3 server holding a reference archive, a work folder
/// and a run.toml. Field order is drop order: the mount goes first.
struct Scenario {
    plex: Option<PlexSide>,
    /// S3 as the runner sees it when set: a fault proxy before the server.
    proxy: Option<FaultProxy>,
    server: S3Server,
    dir: TempDir,
    run_id: String,
    /// Live `media_parts` rows in the reference DB.
    parts: u64,
    mappings: Vec<(String, String)>,
}

/// Plex's side of a run: the plex.tv double and the media mount point.
struct PlexSide {
    _unmount: Unmounter,
    plextv: PlexTvDouble,
    mount_point: PathBuf,
}

/// Detaches whatever a failed test left mounted (a killed rclone's mount).
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        if let Err(e) = runner::mount::lazy_unmount(&self.0) {
            eprintln!("cleanup: {e}");
        }
    }
}

impl Scenario {
    fn new(run_id: &str) -> Scenario {
        Scenario::build(run_id, &Spec::tiny())
    }

    /// A run with Plex's phases on a small library under `/data/media`,
    /// whose files the media bucket holds; S3 behind a fault proxy.
    fn with_plex(run_id: &str) -> Scenario {
        let spec = Spec {
            seed: 7,
            media_root: "/data/media".into(),
            libraries: vec![
                LibrarySpec::single("Music", LibraryKind::Music, 120, 0.25),
                LibrarySpec::single("Movies", LibraryKind::Movie, 12, 0.0),
                LibrarySpec::single("TV Shows", LibraryKind::Show, 12, 0.0),
                LibrarySpec::single("Photos", LibraryKind::Photo, 12, 0.0),
            ],
        };
        let mut s = Scenario::build(run_id, &spec);
        s.server.create_bucket(MEDIA);
        write_media_tree(&s.server.data_dir().join(MEDIA), &spec).unwrap();
        let mount_point = s.dir.path().join("mnt");
        s.mappings = vec![("/data/media".into(), mount_point.display().to_string())];
        s.plex = Some(PlexSide {
            _unmount: Unmounter(mount_point.clone()),
            plextv: PlexTvDouble::start(ACCOUNT_TOKEN, &[]),
            mount_point,
        });
        s.behind_proxy()
    }

    /// The runner reaches S3 through a fault proxy from now on.
    fn behind_proxy(mut self) -> Scenario {
        self.proxy = Some(FaultProxy::start(self.server.addr()).unwrap());
        self.write_config();
        self
    }

    fn build(run_id: &str, spec: &Spec) -> Scenario {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let app = write_app_support(&home, spec).unwrap();
        let parts = count(
            &app.library_db,
            "SELECT count(*) FROM media_parts WHERE deleted_at IS NULL",
        );
        // The user's archives: a tar.gz of the app-support folder, made by GNU tar.
        let tarball = server.data_dir().join(BUCKET).join(REFERENCE);
        std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
        let status = Command::new("tar")
            .arg("-C")
            .arg(app.dir.parent().unwrap())
            .arg("-czf")
            .arg(&tarball)
            .arg("Plex Media Server")
            .status()
            .unwrap();
        assert!(status.success());
        let s = Scenario {
            plex: None,
            proxy: None,
            server,
            dir,
            run_id: run_id.to_owned(),
            parts,
            mappings: vec![
                ("/data/media".into(), "/mnt/media".into()),
                ("/data/photos2".into(), "/mnt/media/photos2".into()),
            ],
        };
        s.write_config();
        s
    }

    fn proxy(&self) -> &FaultProxy {
        self.proxy.as_ref().expect("a scenario behind a proxy")
    }

    fn endpoint(&self) -> String {
        match &self.proxy {
            Some(proxy) => proxy.endpoint(),
            None => self.server.endpoint(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("run.toml")
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn write_config(&self) {
        self.write_config_with(&self.endpoint());
    }

    fn write_config_with(&self, endpoint: &str) {
        let maps: String = self
            .mappings
            .iter()
            .map(|(from, to)| format!("[[path_mapping]]\nfrom = \"{from}\"\nto = \"{to}\"\n\n"))
            .collect();
        let toml = format!(
            r#"run_id = "{run_id}"
work_dir = "{work}"
mode = "delta"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{BUCKET}"
path_style = true
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"

[reference]
archive_key = "{REFERENCE}"

{media_and_plex}
{maps}[termination]
provider = "none"
"#,
            run_id = self.run_id,
            work = self.work_dir().display(),
            media_and_plex = self.media_and_plex(),
        );
        std::fs::write(self.config_path(), toml).unwrap();
    }

    /// run.toml's `[media]` and `[plex]`, and what goes with them.
    fn media_and_plex(&self) -> String {
        let Some(side) = &self.plex else {
            // The foundation's phases alone: Plex and the mount are tested
            // in supervised.rs.
            return format!(
                r#"[media]
remote = "media"
mount_point = "/mnt/media"

[plex]
version = "{PLEX_VERSION}"
runtime = "double"

[phases]
scan = false
sonic = false
"#
            );
        };
        format!(
            r#"[media]
remote = "{MEDIA}"
mount_point = "{mount}"
profile = "small"
probe_timeout = "3s"
health_interval = "2s"

[plex]
version = "{PLEX_VERSION}"
runtime = "double"
double_binary = "{double}"
# A port of its own for each start: a killed Plex's may linger.
port = {port}
plextv_url = "{plextv}"
claim = true
account_token_env = "TEST_PLEX_TOKEN"

[deadlines]
plex_ready = "60s"
poll_interval = "1s"
idle_checks = 2
stall_interval = "10s"
stall_checks = 9
"#,
            mount = side.mount_point.display(),
            double = workspace_bin("plex-double").display(),
            port = free_port(),
            plextv = side.plextv.url,
        )
    }

    fn command(&self) -> Command {
        if self.plex.is_some() {
            self.write_config();
        }
        let conn = self.server.connection();
        let mut cmd = Command::new(workspace_bin("runner"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("TEST_S3_KEY", &conn.access_key)
            .env("TEST_S3_SECRET", conn.secret_key.expose())
            .env("TEST_PLEX_TOKEN", ACCOUNT_TOKEN)
            .env("PLEX_BURST_RCLONE", rclone_path())
            // Sonic as fast as the double goes: the test is about resuming.
            .env("PLEX_DOUBLE_SONIC_RATE", "5000")
            .env_remove("PLEX_DOUBLE_FAULT")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        cmd
    }

    fn run(&self) -> Output {
        self.command().output().unwrap()
    }

    fn bucket(&self) -> Bucket {
        Bucket::new(&self.server.connection(), BUCKET, Default::default())
    }

    fn object(&self, key: &str) -> PathBuf {
        self.server.data_dir().join(BUCKET).join(key)
    }

    fn status(&self) -> serde_json::Value {
        let path = self.object(&format!("runs/{}/status.json", self.run_id));
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.work_dir().join("checkpoint.json")).unwrap())
            .unwrap()
    }

    /// The phases the checkpoint records as done, in order, with what
    /// each recorded (finished_at among it).
    fn done(&self) -> Vec<serde_json::Value> {
        match std::fs::read(self.work_dir().join("checkpoint.json")) {
            Ok(bytes) => {
                let ckpt: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                ckpt["done"].as_array().unwrap().clone()
            }
            Err(_) => Vec::new(),
        }
    }

    fn runner_log(&self) -> PathBuf {
        self.work_dir().join("logs/runner.log")
    }

    fn plex_log(&self) -> PathBuf {
        self.work_dir()
            .join("plex/Library/Application Support/Plex Media Server/Logs/Plex Media Server.log")
    }
}

/// What a file says past `from` bytes (what one process appended).
fn appended(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default()).into_owned()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last line on stderr: what a user reads when a run fails.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned()
}

/// Runs `command` to its end, killing it past the hang guard.
fn output_guarded(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(HANG_GUARD) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("hang guard: the runner still ran after {HANG_GUARD:?}");
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn count(db: &Path, sql: &str) -> u64 {
    let n: i64 = Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap();
    n as u64
}

/// Pulls the run's result back the way `bootstrap fetch` will, checking the
/// manifest, and returns the library DB path.
fn fetch_result(s: &Scenario, into: &Path) -> PathBuf {
    let bucket = s.bucket();
    let key = format!("runs/{}/result/plex-db.tar.zst", s.run_id);
    rt().block_on(async {
        let manifest = transfer::fetch_manifest(&bucket, &transfer::manifest_key_for(&key))
            .await
            .unwrap();
        assert!(
            manifest.stats.is_some(),
            "the manifest carries the stats before and after"
        );
        let dest = into.join("Databases");
        transfer::pull(&bucket, &key, &dest, Some(manifest))
            .await
            .unwrap();
        dest.join("com.plexapp.plugins.library.db")
    })
}

#[test]
fn a_delta_run_pulls_remaps_and_publishes_a_verified_result() {
    let s = Scenario::new("e2e-ok");
    let out = s.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("plex-burst run e2e-ok: done"), "{report}");
    assert!(report.contains("/data/media -> /mnt/media"), "{report}");

    // DONE is written last, and only for a complete, verified result.
    assert!(s.object("runs/e2e-ok/DONE").is_file());
    let status = s.status();
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["phases_done"].as_array().unwrap().len(), 10);

    let got = tempfile::tempdir().unwrap();
    let db = fetch_result(&s, got.path());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM media_parts WHERE deleted_at IS NULL"
        ),
        s.parts
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM media_parts WHERE file LIKE '/data/%'"
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            // Plex's own parts (theme songs, trailers) are not library media.
            "SELECT count(*) FROM media_parts WHERE (file LIKE '/mnt/media/%' OR file = '' OR file LIKE '%/Plex Media Server/Metadata/%') AND deleted_at IS NULL"
        ),
        s.parts
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM section_locations WHERE root_path NOT LIKE '/mnt/media/%'"
        ),
        0
    );
    // The Databases folder travels, but for Plex's dated backups.
    assert!(
        db.with_file_name("com.plexapp.plugins.library.blobs.db")
            .is_file()
    );
    let dated: Vec<String> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".db-20"))
        .collect();
    assert!(dated.is_empty(), "dated backups pulled: {dated:?}");
}

#[test]
fn a_second_start_after_success_changes_nothing() {
    let s = Scenario::new("e2e-again");
    assert!(s.run().status.success());
    let first = s.checkpoint();
    let out = s.run();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        s.checkpoint(),
        first,
        "a finished run must not redo any phase"
    );
}

/// Where a runner process of the kill test is held, then killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hold {
    /// Between the phase it resumed at and the next: the phase is in the
    /// local checkpoint, its mirror to S3 hangs.
    AfterPhase,
    /// Half of the reference archive sent, the rest hangs.
    InPull,
    /// The first library's scan never ends (the double's stuck-activity).
    InScan,
    /// Sonic stops after a few tracks (the double's stuck-sonic).
    InSonic,
}

/// Each start of the kill test: the phase it must resume at, and where it
/// is killed. Every phase boundary, and inside pull, scan and Sonic.
const KILLS: [(&str, Hold); 13] = [
    ("boot", Hold::AfterPhase),
    ("pull", Hold::InPull),
    ("pull", Hold::AfterPhase),
    ("verify", Hold::AfterPhase),
    ("remap", Hold::AfterPhase),
    ("scan", Hold::InScan),
    ("scan", Hold::AfterPhase),
    ("analysis", Hold::AfterPhase),
    ("sonic", Hold::InSonic),
    ("sonic", Hold::AfterPhase),
    ("stop", Hold::AfterPhase),
    ("package", Hold::AfterPhase),
    ("upload", Hold::AfterPhase),
];

#[test]
fn a_runner_killed_anywhere_resumes_there_and_ends_as_an_uninterrupted_run() {
    // What the run gives without interruption, from the same library.
    let whole = Scenario::with_plex("e2e-whole");
    let out = output_guarded(whole.command());
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let expected = result_view(&whole);
    drop(whole);

    let s = Scenario::with_plex("e2e-kill");
    let reference_bytes = size(&s.object(REFERENCE));
    for (i, (phase, hold)) in KILLS.into_iter().enumerate() {
        let before = s.done();
        let (log_from, plex_log_from) = (size(&s.runner_log()), size(&s.plex_log()));
        let checkpoint_mirror =
            format!("PUT /{BUCKET}/runs/{}/checkpoint/checkpoint.json", s.run_id);
        let plan = match hold {
            Hold::InPull => Plan::new(Fault::StallAfterBody(reference_bytes / 2), When::FirstN(1))
                .matching(&format!("GET /{BUCKET}/{REFERENCE}")),
            _ => Plan::new(Fault::Stall(HANG_GUARD * 2), When::FirstN(1))
                .matching(&checkpoint_mirror),
        };
        s.proxy().set(Some(plan));
        let mut command = s.command();
        match hold {
            Hold::InScan => command.env("PLEX_DOUBLE_FAULT", "stuck-activity"),
            Hold::InSonic => command.env("PLEX_DOUBLE_FAULT", "stuck-sonic"),
            _ => &mut command,
        };
        let mut runner = Service::start(command, &s.dir.path().join(format!("runner-{i}.err")));
        let what = format!("{hold:?} of phase {phase}");
        match hold {
            Hold::AfterPhase | Hold::InPull => {
                runner.wait_until(&what, || s.proxy().counts().injected == 1)
            }
            Hold::InScan => runner.wait_until(&what, || {
                appended(&s.plex_log(), plex_log_from)
                    .contains("fault stuck-activity: the scan of section")
            }),
            Hold::InSonic => runner.wait_until(&what, || {
                appended(&s.plex_log(), plex_log_from)
                    .contains("fault stuck-sonic: Sonic analysis stops making progress")
            }),
        }
        assert_eq!(s.status()["phase"], phase, "{what}: status.json");
        let status = runner.kill();
        assert_eq!(
            status.signal(),
            Some(Signal::SIGKILL as i32),
            "{what}: the runner had ended ({status}) before the kill:\n{}",
            runner.stderr()
        );

        // It resumed where the checkpoint said, and redid nothing before.
        let log = appended(&s.runner_log(), log_from);
        let started = phases_started(&log);
        assert_eq!(
            started.first().map(String::as_str),
            Some(phase),
            "{what}: {started:?}"
        );
        let resumed = log.contains("resuming from the checkpoint")
            && log.contains(&format!("resume_at={phase}"));
        assert_eq!(resumed, i > 0, "{what}: resumed? the log says:\n{log}");
        let after = s.done();
        assert_eq!(
            after[..before.len()],
            before[..],
            "{what}: a finished phase was redone"
        );
        let added: Vec<&str> = after[before.len()..]
            .iter()
            .map(|r| r["phase"].as_str().unwrap())
            .collect();
        match hold {
            Hold::AfterPhase => assert_eq!(added, [phase], "{what}"),
            _ => assert!(added.is_empty(), "{what}: {added:?} recorded"),
        }
    }

    // Killed after the upload: a start now only finishes the run off.
    s.proxy().set(None);
    let log_from = size(&s.runner_log());
    let before = s.done();
    let out = output_guarded(s.command());
    assert!(
        out.status.success(),
        "the last start failed:\n{}",
        text(&out)
    );
    let started = phases_started(&appended(&s.runner_log(), log_from));
    assert!(started.is_empty(), "a finished run redid {started:?}");
    assert_eq!(s.done(), before);
    assert_eq!(s.status()["state"], "succeeded");
    assert!(s.object("runs/e2e-kill/DONE").is_file());
    let (stats, rows) = result_view(&s);
    assert_eq!(stats, expected.0, "the interrupted run's statistics differ");
    let differ: Vec<_> = rows
        .iter()
        .zip(&expected.1)
        .filter(|(got, want)| got != want)
        .take(5)
        .collect();
    assert!(
        differ.is_empty() && rows.len() == expected.1.len(),
        "the interrupted run's result differs ({} rows, {} expected): {differ:#?}",
        rows.len(),
        expected.1.len()
    );
}

/// The phases a runner's log says it started, in order.
fn phases_started(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("phase started"))
        .filter_map(|l| {
            l.split_once("phase=").map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .collect()
}

/// What a run's result holds that a resumed run must reproduce: the
/// runner's statistics of it, and each item, part and library location
/// with what Sonic did to it (ids, titles and paths under the mount point,
/// which differs between scenarios; no timestamps).
fn result_view(s: &Scenario) -> (Stats, Vec<String>) {
    let mount_point = s.plex.as_ref().unwrap().mount_point.display().to_string();
    let got = tempfile::tempdir().unwrap();
    let db = fetch_result(s, got.path());
    let stats = stats::collect(&db).unwrap();
    let conn = Connection::open(&db).unwrap();
    let mut rows = Vec::new();
    for sql in [
        "SELECT 'item', id, library_section_id, metadata_type, title, deleted_at IS NULL,
                coalesce(extra_data LIKE '%musicAnalysisVersion%', 0) FROM metadata_items ORDER BY id",
        "SELECT 'part', id, media_item_id, 0, file, deleted_at IS NULL, 0 FROM media_parts ORDER BY id",
        "SELECT 'location', id, library_section_id, 0, root_path, 1, 0 FROM section_locations ORDER BY id",
    ] {
        let mut statement = conn.prepare(sql).unwrap();
        let found = statement
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {:?} {} {:?} {} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .unwrap()
            .map(|row| row.unwrap().replace(&mount_point, "<mount>"));
        rows.extend(found);
    }
    (stats, rows)
}

/// A runner started as systemd starts a service, and killed as systemd
/// kills one: SIGKILL to it and to all it started.
struct Service {
    child: Child,
    stderr: PathBuf,
    ended: Option<ExitStatus>,
}

impl Service {
    fn start(mut command: Command, stderr: &Path) -> Service {
        let file = std::fs::File::create(stderr).unwrap();
        // Its own process group, which Plex and its scanners share.
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap();
        Service {
            child,
            stderr: stderr.to_path_buf(),
            ended: None,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `reached` while the runner runs; fails if it ends first.
    fn wait_until(&mut self, what: &str, mut reached: impl FnMut() -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        while !reached() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the runner ended ({status}) before {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hang guard: never saw {what}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the runner's group (the runner, Plex, its scanners) and
    /// to rclone, which has a group of its own; frozen first, so that
    /// nothing new starts meanwhile. Returns the runner's exit status.
    fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.ended {
            return status;
        }
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGSTOP);
        let strays = children_outside_group(self.child.id());
        let _ = killpg(group, Signal::SIGKILL);
        for pid in strays {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let status = self.child.wait().unwrap();
        self.ended = Some(status);
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Children of `parent` in a process group other than its own (rclone).
fn children_outside_group(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the parenthesised comm: state, ppid, pgrp.
            let ids: Vec<u32> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| {
                    rest.split_whitespace()
                        .skip(1)
                        .take(2)
                        .filter_map(|f| f.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            matches!(ids[..], [ppid, pgrp] if ppid == parent && pgrp != parent)
        })
        .collect()
}

#[test]
fn a_library_root_outside_the_mount_stops_the_run_naming_the_path() {
    let mut s = Scenario::new("e2e-uncovered");
    // Photos' second location has no mapping: it stays outside the mount.
    s.mappings = vec![("/data/media".into(), "/mnt/media".into())];
    s.write_config();
    let out = s.run();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("/data/photos2"), "{line}");
    let status = s.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["phase"], "remap");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("/data/photos2"),
        "{status}"
    );
    assert!(!s.object("runs/e2e-uncovered/DONE").exists());
}

#[test]
fn a_reference_that_is_not_an_archive_fails_the_pull_cleanly() {
    let s = Scenario::new("e2e-garbage");
    std::fs::write(
        s.object(REFERENCE),
        b"<html>Access denied</html>".repeat(100),
    )
    .unwrap();
    let out = s.run();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(
        line.contains("phase pull failed") && line.contains("not"),
        "{line}"
    );
    assert_eq!(s.status()["phase"], "pull");
    // Nothing half-extracted stays behind.
    let databases = s
        .work_dir()
        .join("plex/Library/Application Support/Plex Media Server/Plug-in Support");
    let leftovers: Vec<_> = std::fs::read_dir(&databases)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn a_missing_reference_is_named_at_boot() {
    let s = Scenario::new("e2e-missing");
    std::fs::remove_file(s.object(REFERENCE)).unwrap();
    let out = s.run();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(
        line.contains("phase boot failed") && line.contains(REFERENCE),
        "{line}"
    );
    // The report page says it too, at once (a state change is not held
    // back by the page's once-a-minute pace).
    let page = std::fs::read_to_string(s.object("runs/e2e-missing/report.html")).unwrap();
    assert!(
        page.contains("<span class=\"state failed\">failed</span> in phase boot"),
        "{page}"
    );
    assert!(
        page.contains("<p class=\"problem\"><b>error</b>: phase boot failed")
            && page.contains(REFERENCE),
        "{page}"
    );
    assert!(page.contains("<td>boot</td><td colspan=\"5\" class=\"muted\">failed"));
}

#[test]
fn wrong_credentials_are_one_clear_line_not_a_retry_storm() {
    let s = Scenario::new("e2e-creds").behind_proxy();
    // A plan that injects nothing (first 0): it counts the boot's look at
    // the reference.
    let head = format!("HEAD /{BUCKET}/{REFERENCE}");
    s.proxy().set(Some(
        Plan::new(Fault::Status(500), When::FirstN(0)).matching(&head),
    ));
    let mut command = s.command();
    command.env("TEST_S3_SECRET", "not-the-secret-at-all-0000");
    let out = output_guarded(command);
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.to_lowercase().contains("access"), "{line}");
    assert!(
        !text(&out).contains("not-the-secret-at-all"),
        "the secret reached the output"
    );
    // A 403 is final: asked once, not retried.
    let counts = s.proxy().counts();
    assert_eq!(counts.matched, 1, "{head} sent {} times", counts.matched);
    assert_eq!(counts.injected, 0);
}

#[test]
fn an_unreachable_s3_fails_with_the_cause() {
    let s = Scenario::new("e2e-down");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.write_config_with(&format!("http://127.0.0.1:{port}"));
    let out = s.run();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("phase boot failed"), "{line}");
}
