//! The runner end to end, as systemd starts it: the real binary, a real S3
//! server on loopback, a generated Plex library packed as the user's tar.gz.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::fixture::{Spec, write_app_support};
use plex_burst_tests::s3server::S3Server;
use runner::s3::Bucket;
use runner::transfer;
use rusqlite::Connection;
use tempfile::TempDir;

const BUCKET: &str = "plex-burst";
const REFERENCE: &str = "reference/home.tar.gz";

/// One run's world: the S3 server holding a reference archive, a work folder
/// and a run.toml.
struct Scenario {
    server: S3Server,
    dir: TempDir,
    run_id: String,
    /// Live `media_parts` rows in the reference DB.
    parts: u64,
}

impl Scenario {
    fn new(run_id: &str) -> Scenario {
        let server = S3Server::start();
        server.create_bucket(BUCKET);
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let app = write_app_support(&home, &Spec::tiny()).unwrap();
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
            server,
            dir,
            run_id: run_id.to_owned(),
            parts,
        };
        s.write_config(&[
            ("/data/media", "/mnt/media"),
            ("/data/photos2", "/mnt/media/photos2"),
        ]);
        s
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("run.toml")
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn write_config(&self, mappings: &[(&str, &str)]) {
        self.write_config_with(&self.server.endpoint(), mappings);
    }

    fn write_config_with(&self, endpoint: &str, mappings: &[(&str, &str)]) {
        let maps: String = mappings
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

[media]
remote = "media"
mount_point = "/mnt/media"

[plex]
version = "1.41.3.9314-a0bfb8370"
runtime = "double"

# The foundation's phases alone: Plex and the mount are tested in
# supervised.rs.
[phases]
scan = false
sonic = false

{maps}[termination]
provider = "none"
"#,
            run_id = self.run_id,
            work = self.work_dir().display(),
        );
        std::fs::write(self.config_path(), toml).unwrap();
    }

    fn command(&self) -> Command {
        let conn = self.server.connection();
        let mut cmd = Command::new(workspace_bin("runner"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("TEST_S3_KEY", &conn.access_key)
            .env("TEST_S3_SECRET", conn.secret_key.expose())
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
    // The whole Databases folder travels, dated backups included.
    assert!(
        db.with_file_name("com.plexapp.plugins.library.blobs.db")
            .is_file()
    );
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

#[test]
fn a_killed_runner_resumes_at_its_first_unfinished_phase() {
    let s = Scenario::new("e2e-kill");
    // Kill it as soon as the pull is recorded; whatever it was doing then,
    // the restart must finish the run without redoing finished phases.
    let mut child: Child = s
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = s.work_dir().join("checkpoint.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pulled = std::fs::read_to_string(&ckpt).is_ok_and(|t| t.contains("\"pull\""));
        if pulled || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the runner never finished its pull"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = s.checkpoint();
    let boot_finished = before["done"][0]["finished_at"].clone();

    let out = s.run();
    assert!(
        out.status.success(),
        "the restarted runner failed:\n{}",
        text(&out)
    );
    let after = s.checkpoint();
    assert_eq!(
        after["done"][0]["finished_at"], boot_finished,
        "boot was redone"
    );
    assert!(after["generation"].as_u64() > before["generation"].as_u64());
    let got = tempfile::tempdir().unwrap();
    let db = fetch_result(&s, got.path());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM media_parts WHERE file LIKE '/data/%'"
        ),
        0
    );
}

#[test]
fn a_library_root_outside_the_mount_stops_the_run_naming_the_path() {
    let s = Scenario::new("e2e-uncovered");
    // Photos' second location has no mapping: it stays outside the mount.
    s.write_config(&[("/data/media", "/mnt/media")]);
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
}

#[test]
fn wrong_credentials_are_one_clear_line_not_a_retry_storm() {
    let s = Scenario::new("e2e-creds");
    let started = Instant::now();
    let out = s
        .command()
        .env("TEST_S3_SECRET", "not-the-secret-at-all-0000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.to_lowercase().contains("access"), "{line}");
    assert!(
        !text(&out).contains("not-the-secret-at-all"),
        "the secret reached the output"
    );
    // A hang guard, not a timing test: retrying a 403 for minutes is the bug.
    assert!(started.elapsed() < Duration::from_secs(60));
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
    s.write_config_with(
        &format!("http://127.0.0.1:{port}"),
        &[("/data/media", "/mnt/media")],
    );
    let out = s.run();
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("phase boot failed"), "{line}");
}
