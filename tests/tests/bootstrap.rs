//! `bootstrap` end to end, the binary as a user runs it, against real parts
//! and strict doubles: a real S3 server on loopback (the bucket and the
//! media bucket), the Scaleway double (API + metadata service), the home
//! Plex (the PMS double on a fixture library, stopped and started by
//! `tests/instance/home-plex.sh`), the plex.tv double, and a stand-in for
//! the instance (`tests/instance/local-instance.py`, run by the double at
//! poweron) that applies the user data like cloud-init and starts the real
//! runner, which mounts the media with rclone, supervises the Plex double,
//! uploads its result and terminates its own server through the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::bootstrap_world::{
    HomePlex, bootstrap_command, ok_stdout, repo, run_key, shipped_logs, text,
};
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::notifyreceiver::Receiver;
use plex_burst_tests::plexdouble::harness::{
    PlexDouble, PlexTvDouble, free_port, get, request, wait_for, xml_elements,
};
use plex_burst_tests::s3server::{ACCESS_KEY, S3Server, SECRET_KEY, rclone_path};
use plex_burst_tests::scwdouble::harness::{ScwDouble, ScwOptions};
use plex_burst_tests::scwdouble::s3front::OWNER_USER_ID;
use runner::s3::{Bucket, S3Error};
use runner::secret::Secret;
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

#[path = "bootstrap/canary.rs"]
mod canary;

const BUCKET: &str = "plex-burst";
const MEDIA: &str = "media";
const ACCOUNT_TOKEN: &str = "account-token-for-bootstrap-tests-0123";
const PLEX_VERSION: &str = "1.41.3.9314-a0bfb8370";

fn spec() -> Spec {
    Spec {
        seed: 11,
        media_root: "/data/media".into(),
        libraries: vec![
            LibrarySpec::single("Music", LibraryKind::Music, 300, 0.3),
            LibrarySpec::single("Movies", LibraryKind::Movie, 20, 0.0),
        ],
    }
}

struct World {
    dir: TempDir,
    /// `(bootstrap ARGS, stdout + stderr)` of every bootstrap run.
    outputs: std::cell::RefCell<Vec<(String, String)>>,
    s3: S3Server,
    scw: ScwDouble,
    plextv: PlexTvDouble,
    app_support: PathBuf,
    home: HomePlex,
    run_key: (String, String),
    /// The run's read-only key for the media bucket.
    media_key: (String, String),
    /// The Slack webhook the config notifies.
    notify: Receiver,
}

const SLACK_PATH: &str = "/slack/services/T0BURST/B0BURST/bootstrap-test-secret";

struct WorldOptions {
    quota_volumes_gb: Option<u64>,
    root_volume_gb: u64,
    /// `[run.deadlines] run`.
    run_deadline: &'static str,
    /// Faults of the Plex double on the instance (`PLEX_DOUBLE_FAULT`).
    plex_fault: &'static str,
    /// How many runs the world launches (each mints two keys).
    launches: usize,
    /// Arguments of the plex.tv double.
    plextv_args: &'static [&'static str],
    /// Tracks per second the instance's Plex double analyses.
    sonic_rate: u32,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            quota_volumes_gb: None,
            root_volume_gb: 20,
            run_deadline: "2h",
            plex_fault: "",
            launches: 1,
            plextv_args: &[],
            sonic_rate: 5000,
        }
    }
}

impl World {
    fn new(opts: WorldOptions) -> World {
        let yaml = Command::new("python3")
            .args(["-c", "import yaml"])
            .status()
            .unwrap();
        assert!(
            yaml.success(),
            "python3 with PyYAML is needed by the instance stand-in: run the tests through ./scripts/test"
        );
        let dir = tempfile::tempdir().unwrap();
        // A launch mints the run's key, then its media key.
        let pool: Vec<(String, String)> = (0..2 * opts.launches).map(|_| run_key()).collect();
        let (run_key, media_key) = (pool[0].clone(), pool[1].clone());
        let auth: Vec<String> = pool
            .iter()
            .flat_map(|(a, s)| ["--auth-key".to_owned(), format!("{a},{s}")])
            .collect();
        let s3 = S3Server::start_with(&auth.iter().map(String::as_str).collect::<Vec<_>>());
        s3.create_bucket(BUCKET);
        s3.create_bucket(MEDIA);
        write_media_tree(&s3.data_dir().join(MEDIA), &spec()).unwrap();

        let app = write_app_support(&dir.path().join("home"), &spec()).unwrap();
        let home = HomePlex::new(dir.path().join("home-ctl"), &app.dir);

        let instances = dir.path().join("instances");
        std::fs::create_dir_all(&instances).unwrap();
        let hook = format!(
            "PB_INSTANCE_ROOT='{}' PB_RUNNER='{}' PLEX_BURST_RCLONE='{}' PLEX_DOUBLE_SONIC_RATE={} {} python3 '{}'",
            instances.display(),
            workspace_bin("runner").display(),
            rclone_path().display(),
            opts.sonic_rate,
            match opts.plex_fault {
                "" => String::new(),
                fault => format!("PLEX_DOUBLE_FAULT='{fault}'"),
            },
            repo().join("tests/instance/local-instance.py").display()
        );
        let scw = ScwDouble::start(ScwOptions {
            transition_delay: Duration::from_millis(100),
            quota_volumes_gb: opts.quota_volumes_gb,
            on_poweron: Some(hook),
            metadata: true,
            api_key_pool: pool,
            // Everyone reaches S3 through Object Storage's access control.
            s3_front: Some((s3.addr().to_string(), ACCESS_KEY.to_owned())),
            ..ScwOptions::default()
        });
        let plextv = PlexTvDouble::start(ACCOUNT_TOKEN, opts.plextv_args);
        let world = World {
            dir,
            outputs: Default::default(),
            s3,
            scw,
            plextv,
            app_support: app.dir,
            home,
            run_key,
            media_key,
            notify: Receiver::start(),
        };
        world.lock_media_bucket();
        world.write_config(&opts);
        world.home.start();
        world
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("bootstrap.toml")
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn write_config(&self, opts: &WorldOptions) {
        let toml = format!(
            r#"[scaleway]
organization_id = "{org}"
project_id = "{project}"
zone = "fr-par-1"
commercial_type = "DEV1-S"
root_volume_gb = {root_volume_gb}
api_url = "{api}"
metadata_url = "{metadata}"
secret_key_env = "TEST_SCW_SECRET"
plex_token_env = "TEST_PLEX_TOKEN"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{BUCKET}"
path_style = true
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"

[image]
runner_binary = "{runner}"
# The stand-in builder installs no rclone (local-instance.py).
rclone_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
build_timeout = "60s"

[home]
layout = "custom"
app_support_dir = "{app}"
control = "command"
stop_command = ["{home_plex}", "stop", "{ctl}"]
start_command = ["{home_plex}", "start", "{ctl}"]
url = "http://{addr}"
keep_backups = 2
plex_timeout = "30s"
state_dir = "{state}"

[run]
mode = "delta"

[run.media]
remote = "{MEDIA}"
mount_point = "{mount}"
profile = "small"
probe_timeout = "3s"
health_interval = "2s"

[run.plex]
runtime = "double"
double_binary = "{double}"
port = {port}
plextv_url = "{plextv}"
claim = true

[[run.path_mapping]]
from = "/data/media"
to = "{mount}"

[run.deadlines]
run = "{run_deadline}"
plex_ready = "20s"
poll_interval = "1s"
idle_checks = 2
stall_interval = "10s"
stall_checks = 3

# The run, the dead-man and bootstrap tell a Slack webhook how it goes.
[[notify]]
kind = "slack"
url_env = "TEST_SLACK_URL"
"#,
            org = self.scw.organization_id(),
            project = self.scw.project_id(),
            api = self.scw.api_url(),
            metadata = self.scw.metadata_url().unwrap(),
            endpoint = self.scw.s3_front_url().unwrap(),
            runner = workspace_bin("runner").display(),
            app = self.app_support.display(),
            home_plex = HomePlex::script().display(),
            ctl = self.home.ctl.display(),
            addr = self.home.addr,
            mount = self.mount_point().display(),
            double = workspace_bin("plex-double").display(),
            port = free_port(),
            plextv = self.plextv.url(""),
            root_volume_gb = opts.root_volume_gb,
            state = self.state_dir().display(),
            run_deadline = opts.run_deadline,
        );
        std::fs::write(self.config_path(), toml).unwrap();
    }

    /// `bootstrap` as a user runs it, with the secrets the config names
    /// in its environment.
    fn command(&self) -> Command {
        let mut command =
            bootstrap_command(&self.config_path(), &self.scw, &self.s3, ACCOUNT_TOKEN);
        command
            .env("PLEX_BURST_POLL_MS", "200")
            .env("TEST_SLACK_URL", self.notify.url(SLACK_PATH));
        command
    }

    /// Runs `bootstrap ARGS`, its output kept for a failure's report.
    fn bootstrap(&self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().unwrap();
        self.outputs.borrow_mut().push((
            format!("bootstrap {}", args.join(" ")),
            text(&out.stdout) + &text(&out.stderr),
        ));
        out
    }

    /// `bootstrap ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        ok_stdout(&self.bootstrap(args), args, || self.instance_logs())
    }

    /// `bootstrap ARGS`, which must fail; its one-line error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.bootstrap(args);
        assert!(
            !out.status.success(),
            "bootstrap {args:?} should fail:\n{}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "one error line expected:\n{err}");
        err
    }

    /// Writes an object through the S3 API (the server caches listings:
    /// a file dropped on its disk may stay invisible).
    fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        let bucket = runner::s3::Bucket::new(&self.s3.connection(), BUCKET, Default::default());
        let body: Vec<u8> = body.into();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(bucket.put_bytes(key, body.into(), "application/octet-stream"))
            .unwrap();
    }

    /// Where bootstrap keeps its own copy of the launch records.
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A launch record made by this machine: in the bucket and at home.
    fn put_record(&self, run_id: &str, record: &str) {
        self.put(&format!("runs/{run_id}/launch.json"), record);
        let home = self.state_dir().join("runs").join(run_id);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("launch.json"), record).unwrap();
    }

    /// A security group as the API shows it (`None` once deleted).
    fn security_group(&self, id: &str) -> Option<Value> {
        let reply = self.scw.api(
            "GET",
            &format!("/instance/v1/zones/fr-par-1/security_groups/{id}"),
            None,
        );
        match reply.status {
            404 => None,
            200 => Some(reply.json()["security_group"].clone()),
            other => panic!("GET security group {id}: {other} {}", reply.body),
        }
    }

    fn object(&self, key: &str) -> PathBuf {
        self.s3.data_dir().join(BUCKET).join(key)
    }

    fn json(&self, key: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.object(key)).unwrap()).unwrap()
    }

    fn home_db(&self) -> PathBuf {
        self.app_support
            .join("Plug-in Support/Databases/com.plexapp.plugins.library.db")
    }

    /// The runner logs of every instance the double booted.
    fn instance_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("instances")) {
            for entry in entries.flatten() {
                if let Ok(log) = std::fs::read_to_string(entry.path().join("runner.log")) {
                    out.push_str(&format!("--- {}\n{log}\n", entry.path().display()));
                }
            }
        }
        out
    }

    /// Waits until the run leaves `marker` (DONE, QUARANTINED) in S3; a
    /// failed run or a timeout panics with the instance's runner log.
    fn wait_run_end(&self, run_id: &str, marker: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            if self.object(&format!("runs/{run_id}/{marker}")).exists() {
                return;
            }
            let status = std::fs::read(self.object(&format!("runs/{run_id}/status.json")))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            let failed = status.as_ref().is_some_and(|s| s["state"] == "failed");
            if failed || std::time::Instant::now() > deadline {
                panic!(
                    "run {run_id} ended without {marker}; status: {}\n{}",
                    status.unwrap_or_default(),
                    self.instance_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `(name under logs/, text)` of every log the run shipped.
    fn shipped_logs(&self, run_id: &str) -> Vec<(String, String)> {
        shipped_logs(&self.s3.data_dir().join(BUCKET), run_id)
    }

    /// The API calls the double saw (metadata calls excluded), as
    /// "METHOD path".
    fn api_calls(&self) -> Vec<String> {
        self.scw
            .calls()
            .iter()
            .filter(|c| c["service"] != "metadata")
            .map(|c| {
                format!(
                    "{} {}",
                    c["method"].as_str().unwrap_or(""),
                    c["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    fn state(&self) -> Value {
        self.scw.state()
    }

    /// The image bootstrap baked.
    fn image_id(&self) -> String {
        let state = self.state();
        let image = state["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| {
                i["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "plex-burst"))
            })
            .unwrap_or_else(|| panic!("no plex-burst image: {state}"));
        image["id"].as_str().unwrap().to_owned()
    }

    /// A server created with the admin key, as bootstrap would (stopped).
    fn create_server(&self, name: &str, tags: &[String]) -> Value {
        let reply = self.scw.api(
            "POST",
            "/instance/v1/zones/fr-par-1/servers",
            Some(&json!({
                "name": name, "commercial_type": "DEV1-S", "image": self.image_id(),
                "project": self.scw.project_id(), "tags": tags,
                "volumes": {"0": {"size": 20_000_000_000u64, "volume_type": "sbs_volume"}}
            })),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["server"].clone()
    }

    /// `bucket` through the S3 front, as the holder of `key`.
    fn s3_as(&self, key: &(String, String), bucket: &str) -> Bucket {
        let mut conn = self.s3.connection_via(self.scw.s3_front_url().unwrap());
        conn.access_key = key.0.clone();
        conn.secret_key = Secret::new(&key.1);
        Bucket::new(&conn, bucket, Default::default())
    }

    /// The media bucket has a policy of the user's (its Owner reads and
    /// writes): launches add the media key's statement to it.
    fn lock_media_bucket(&self) {
        let owner = self.s3_as(&(ACCESS_KEY.into(), SECRET_KEY.into()), MEDIA);
        let policy = json!({"Version": "2023-04-17", "Statement": [{
            "Sid": "the owner", "Effect": "Allow",
            "Principal": {"SCW": format!("user_id:{OWNER_USER_ID}")},
            "Action": "*", "Resource": [MEDIA, format!("{MEDIA}/*")]}]});
        block_on(owner.put_policy(&policy.to_string())).unwrap();
    }

    /// `bucket`'s policy, as its Owner reads it.
    fn bucket_policy(&self, bucket: &str) -> String {
        let owner = self.s3_as(&(ACCESS_KEY.into(), SECRET_KEY.into()), bucket);
        block_on(owner.get_policy()).unwrap().unwrap_or_default()
    }

    /// What the run's keys reach while the run exists: its own runs/<id>/
    /// and the reference (read), the media bucket (read, media key only);
    /// nothing else.
    fn check_run_access(&self, run_id: &str) {
        let denied = |r: Result<(), S3Error>| {
            assert!(matches!(r, Err(S3Error::AccessDenied { .. })), "{r:?}");
        };
        let put = |b: &Bucket, key: &str| {
            block_on(b.put_bytes(key, b"planted".to_vec().into(), "text/plain"))
        };
        let run = self.s3_as(&self.run_key, BUCKET);
        put(&run, &format!("runs/{run_id}/access-probe")).unwrap();
        block_on(run.get_bytes(&format!("runs/{run_id}/access-probe"))).unwrap();
        block_on(run.get_bytes("reference/plex-db.manifest.json")).unwrap();
        denied(put(&run, "runs/another-run/launch.json"));
        denied(put(&run, "reference/plex-db.manifest.json"));
        denied(block_on(run.delete(&format!("runs/{run_id}/access-probe"))));
        denied(block_on(run.list("runs/")).map(drop));
        denied(put(&self.s3_as(&self.run_key, MEDIA), "planted"));
        denied(block_on(self.s3_as(&self.run_key, MEDIA).first("")).map(drop));

        let media = self.s3_as(&self.media_key, MEDIA);
        assert!(block_on(media.first("")).unwrap().is_some());
        denied(put(&media, "planted"));
        denied(block_on(media.delete("planted")));
        let media_on_bucket = self.s3_as(&self.media_key, BUCKET);
        denied(put(&media_on_bucket, &format!("runs/{run_id}/planted")));
        denied(block_on(media_on_bucket.get_bytes("reference/plex-db.manifest.json")).map(drop));
    }

    /// The Plex servers on the plex.tv double's account.
    fn plex_servers_on_account(&self) -> Vec<BTreeMap<String, String>> {
        let devices = get(
            &self.plextv.url("/devices.xml"),
            &[("X-Plex-Token", ACCOUNT_TOKEN)],
        )
        .unwrap();
        assert_eq!(devices.status, 200, "{}", devices.body);
        xml_elements(&devices.body, "Device")
            .into_iter()
            .filter(|d| d.get("product").map(String::as_str) == Some("Plex Media Server"))
            .collect()
    }

    /// Every secret of the world: none may reach a record, a status or a log.
    fn secrets(&self) -> Vec<String> {
        vec![
            self.scw.secret_key().to_owned(),
            self.run_key.1.clone(),
            self.media_key.1.clone(),
            ACCOUNT_TOKEN.to_owned(),
            self.s3.connection().secret_key.expose().to_owned(),
            SLACK_PATH.to_owned(),
        ]
    }

    /// The titles the Slack receiver got, in order.
    fn told(&self) -> Vec<String> {
        self.notify
            .received()
            .iter()
            .filter(|r| r.service == "slack" && r.status == 200)
            .map(|r| {
                r.json()["text"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .trim_matches('*')
                    .to_string()
            })
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.home.stop_quietly();
        // A runner still going (a failed test) would keep the mount busy.
        let _ = Command::new("pkill")
            .args([
                "-f",
                &self.dir.path().join("instances").display().to_string(),
            ])
            .status();
        let _ = Command::new("fusermount3")
            .args(["-uz", &self.mount_point().display().to_string()])
            .status();
    }
}

/// Runs one S3 call to its end.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A `launch.json` as bootstrap writes it, for a run the test made up.
fn launch_record(run_id: &str, state: &str, server: Option<&Value>, deadline: &str) -> Value {
    let server = server.cloned().unwrap_or(Value::Null);
    json!({
        "run_id": run_id, "state": state, "zone": "fr-par-1",
        "project_id": "", "commercial_type": "DEV1-S",
        "hourly_price": 0.0088, "root_volume_gb": 20, "image_id": server["image"]["id"],
        "server_id": server["id"], "root_volume_id": server["volumes"]["0"]["id"],
        "api_key": null, "launched_at": "2026-01-01T00:00:00Z",
        "deadline": deadline, "snapshot_time": 0,
        "reference_key": null, "plex_version": PLEX_VERSION, "bootstrap_version": "0"
    })
}

/// The run id a launch at `t` takes when its minute is free.
fn minute_run_id(t: std::time::SystemTime) -> String {
    let now = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}-{}{}", &now[..10], &now[11..13], &now[14..16])
}

fn position(calls: &[String], what: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(what) || c.contains(what))
        .unwrap_or_else(|| panic!("no call {what:?} in {calls:#?}"))
}

fn count(calls: &[String], what: &str) -> usize {
    calls.iter().filter(|c| c.contains(what)).count()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// sha256 of every file of a folder, by name.
fn digests(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256(&e.path()),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_run_goes_from_the_home_snapshot_to_an_install_that_keeps_the_watch_state() {
    let w = World::new(WorldOptions::default());

    // The reference: a consistent copy of the running home Plex's DB.
    let out = w.ok(&["snapshot"]);
    assert!(out.contains("reference uploaded"), "{out}");
    let manifest = w.json("reference/plex-db.manifest.json");
    assert_eq!(manifest["plex_version"], PLEX_VERSION);
    let snapshot_time: i64 = manifest["source"]["snapshot_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        manifest["source"]["library_roots"]
            .as_str()
            .unwrap()
            .contains("/data/media/Music")
    );
    assert_eq!(manifest["stats"]["sonic"]["tracks"], 300);

    // A dry run plans and prices, and creates nothing.
    let out = w.ok(&["launch", "--dry-run"]);
    assert!(out.contains("estimate   about"), "{out}");
    assert!(out.contains("210 tracks left"), "{out}");
    assert!(out.contains("dry run: nothing created"), "{out}");
    assert_eq!(count(&w.api_calls(), "POST"), 0, "{:#?}", w.api_calls());

    // The launch bakes the image first (the instance stand-in provisions
    // the builder), then starts the run.
    let out = w.ok(&["launch"]);
    let run_id = out
        .lines()
        .find_map(|l| l.strip_prefix("run ").filter(|r| !r.contains(' ')))
        .unwrap_or_else(|| panic!("no run id in {out}"))
        .to_owned();
    let calls = w.api_calls();
    let builder = position(&calls, "POST /instance/v1/zones/fr-par-1/servers");
    assert!(position(&calls, "/snapshots") > builder);
    assert!(position(&calls, "POST /instance/v1/zones/fr-par-1/images") > builder);
    let key = position(&calls, "POST /iam/v1alpha1/api-keys");
    let run_server = builder
        + 1
        + calls[builder + 1..]
            .iter()
            .position(|c| c == "POST /instance/v1/zones/fr-par-1/servers")
            .expect("the run's server is created");
    assert!(
        key < run_server,
        "the key exists before the server: {calls:#?}"
    );
    let state = w.state();
    let server = state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| *t == format!("plex-burst-run={run_id}"))
        })
        .cloned();
    let launch = w.json(&format!("runs/{run_id}/launch.json"));
    assert_eq!(launch["state"], "launched");
    assert_eq!(launch["snapshot_time"], snapshot_time);
    assert_eq!(launch["api_key"], w.run_key.0.as_str());
    // The server is in the run's own group: inbound dropped, no rule
    // letting anything in (the project's default group accepts all).
    let group_id = launch["security_group_id"].as_str().unwrap().to_owned();
    let group = w
        .security_group(&group_id)
        .expect("the run's security group");
    assert_eq!(group["inbound_default_policy"], "drop", "{group}");
    assert_eq!(group["outbound_default_policy"], "accept", "{group}");
    assert_eq!(group["stateful"], true, "{group}");
    assert_eq!(group["project_default"], false, "{group}");
    assert_eq!(group["name"], format!("plex-burst-{run_id}"), "{group}");
    let rules = w.scw.api(
        "GET",
        &format!("/instance/v1/zones/fr-par-1/security_groups/{group_id}/rules"),
        None,
    );
    assert!(
        rules.json()["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["direction"] == "outbound"),
        "{}",
        rules.body
    );
    let run_server = w.scw.api(
        "GET",
        &format!(
            "/instance/v1/zones/fr-par-1/servers/{}",
            launch["server_id"].as_str().unwrap()
        ),
        None,
    );
    if run_server.status == 200 {
        assert_eq!(
            run_server.json()["server"]["security_group"]["id"],
            group_id.as_str()
        );
    }
    // The root volume (untagged by Scaleway) is named after its server.
    let root = w.scw.api(
        "GET",
        &format!(
            "/block/v1/zones/fr-par-1/volumes/{}",
            launch["root_volume_id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(root.status, 200, "{}", root.body);
    assert_eq!(root.json()["name"], format!("plex-burst-{run_id}"));
    // User data before poweron (a running server would not read it).
    if let Some(server) = &server {
        assert_eq!(
            server["user_data"]["cloud-init"]["set_before_first_poweron"], true,
            "{server}"
        );
    }
    let poweron = calls.iter().rposition(|c| c.ends_with("/action")).unwrap();
    let user_data = calls
        .iter()
        .rposition(|c| c.contains("/user_data/cloud-init"))
        .unwrap();
    assert!(user_data < poweron, "{calls:#?}");

    // While the run works, the household keeps watching at home.
    let watched = watch_at_home(&w.home_db(), snapshot_time);

    // The runner finishes, uploads, and terminates its own server.
    w.wait_run_end(&run_id, "DONE");
    // Its keys reach only the run's share (Scaleway's IAM and bucket
    // policies, as the double's S3 front enforces them).
    w.check_run_access(&run_id);
    wait_for(
        "the run's server to be gone",
        Duration::from_secs(60),
        || {
            let state = w.state();
            (!state["servers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == format!("plex-burst-{run_id}")))
            .then_some(())
        },
    );
    let terminate = w
        .scw
        .calls()
        .into_iter()
        .find(|c| {
            c["path"].as_str().unwrap_or("").ends_with("/action")
                && c["body"]["action"] == "terminate"
        })
        .expect("the runner terminated its server");
    assert_eq!(terminate["key"], w.run_key.0.as_str(), "{terminate}");
    // The user data (it holds the run's secrets) was deleted once read.
    assert!(
        w.scw.calls().iter().any(|c| c["service"] == "metadata"
            && c["method"] == "DELETE"
            && c["path"] == "/user_data/cloud-init"),
        "{:#?}",
        w.scw.calls()
    );

    // The root volume the terminate left behind keeps no secret: the
    // user data's copies went at boot, the secrets files, Plex's token and
    // any secret in a log before the instance ended.
    let disk = w
        .dir
        .path()
        .join("instances")
        .join(launch["server_id"].as_str().unwrap());
    assert!(
        disk.join("work/checkpoint.json").exists(),
        "the run's disk is there"
    );
    let leaks = secrets_on_disk(&disk, &w.secrets());
    assert!(
        leaks.is_empty(),
        "secrets left on the instance's disk: {leaks:#?}"
    );
    assert!(!disk.join("etc/plex-burst/plextv.env").exists());
    assert!(
        !disk
            .join("var/lib/cloud/instances")
            .join(launch["server_id"].as_str().unwrap())
            .join("user-data.txt")
            .exists()
    );
    // The run gave the account token up after the claim: its server is
    // still on the account, for home to remove.
    assert_eq!(w.plex_servers_on_account().len(), 1);

    // Status: done; the root volume outlived the server and is flagged;
    // the end of the runner's shipped log is shown.
    let out = w.ok(&["status", &run_id]);
    assert!(out.contains("state      done"), "{out}");
    assert!(out.contains("outlived the server"), "{out}");
    assert!(out.contains("  | ") && out.contains("phase done"), "{out}");
    // The run shipped its logs: the runner's, rclone's, Plex's.
    let logs = w.shipped_logs(&run_id);
    for name in ["runner.log", "rclone.log", "plex/Plex Media Server.log"] {
        assert!(
            logs.iter().any(|(n, _)| n == name),
            "{name} not shipped: {:?}",
            logs.iter().map(|l| &l.0).collect::<Vec<_>>()
        );
    }
    let list = w.ok(&["status"]);
    assert!(list.contains(&run_id) && list.contains("done"), "{list}");
    // The run's report page, by a link that plain HTTP fetches. The link
    // is a capability the user asked for: not kept with the outputs that
    // the leak check below reads.
    let out = w
        .command()
        .args(["status", &run_id, "--link"])
        .output()
        .unwrap();
    let link = ok_stdout(&out, &["status", "--link"], String::new);
    let page = plex_burst_tests::http::get(link.trim(), &[]).unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains(&format!("<h1>plex-burst run {run_id}</h1>"))
            && page.body.contains("<span class=\"state succeeded\">"),
        "{}",
        page.body
    );
    // Priced at launch: the page shows the cost so far beside the estimate.
    let estimate = w.json(&format!("runs/{run_id}/launch.json"))["estimate"]["eur"]
        .as_f64()
        .unwrap();
    assert!(
        page.body
            .contains(&format!("; estimated at launch: EUR {estimate:.2}</p>")),
        "{}",
        page.body
    );

    // The run's key could rewrite its launch.json to name a server it did
    // not make: fetch goes by the record kept at home, refuses, and
    // deletes nothing.
    let victim = w.create_server("the-users-own", &[]);
    let victim_id = victim["id"].as_str().unwrap();
    let record_key = format!("runs/{run_id}/launch.json");
    let original = std::fs::read(w.object(&record_key)).unwrap();
    let mut tampered = w.json(&record_key);
    tampered["server_id"] = json!(victim_id);
    w.put(&record_key, tampered.to_string());
    let err = w.fails(&["fetch", &run_id]);
    assert!(
        err.contains(&format!(
            "names server {victim_id}, the record kept at home names"
        )) && err.contains("refusing to delete"),
        "{err}"
    );
    assert!(w.security_group(&group_id).is_some(), "nothing deleted");
    w.put(&record_key, original);

    // Fetch installs the result, keeping what home watched meanwhile.
    let out = w.ok(&["fetch", &run_id]);
    assert!(out.contains("installed"), "{out}");
    // What it cost is recorded beside what was expected at launch, and
    // the next estimate learns from it (the reference still has 210 left).
    assert!(out.contains("estimated at launch EUR"), "{out}");
    let record = w.json(&format!("runs/{run_id}/launch.json"));
    assert!(
        record["estimate"]["eur"].as_f64().unwrap() > 0.0,
        "{record}"
    );
    let actual = &record["actual"];
    assert_eq!(actual["sonic_tracks"], 210, "{record}");
    assert!(
        actual["server_hours"].as_f64().unwrap() > 0.0
            && actual["volume_hours"].as_f64() >= actual["server_hours"].as_f64(),
        "{record}"
    );
    let status = w.ok(&["status", &run_id]);
    assert!(status.contains("estimate   about"), "{status}");
    let out = w.ok(&["launch", "--dry-run"]);
    assert!(
        out.contains(&format!(
            "learned from run {run_id}'s actual (210 tracks in"
        )),
        "{out}"
    );
    // The user was told, from the instance and from home, through the
    // webhook URL that reached the run in its secrets file only.
    let told = w.told();
    let at = |what: &str| {
        told.iter()
            .position(|t| *t == format!("plex-burst run {run_id}: {what}"))
            .unwrap_or_else(|| panic!("not told {what:?}: {told:#?}"))
    };
    assert!(
        at("under way") < at("scan done")
            && at("scan done") < at("done")
            && at("done") < at("installed at home"),
        "{told:#?}"
    );
    let done = w
        .notify
        .received()
        .into_iter()
        .map(|r| r.json()["text"].as_str().unwrap_or_default().to_string())
        .find(|t| t.starts_with(&format!("*plex-burst run {run_id}: done*")))
        .unwrap();
    assert!(
        done.contains(" Cost: EUR ") && done.contains("; estimated at launch: EUR "),
        "{done}"
    );
    let out = w.ok(&["notify", "test"]);
    assert!(out.contains("sent      slack at 127.0.0.1:"), "{out}");
    assert_eq!(
        w.told().last().map(String::as_str),
        Some("plex-burst: test")
    );
    let conn = Connection::open(w.home_db()).unwrap();
    let count_now: i64 = conn
        .query_row(
            "SELECT view_count FROM metadata_item_settings WHERE guid = ?1 AND account_id = 1",
            [&watched.0],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count_now, watched.1, "the view made at home survived");
    let analysed: i64 = conn
        .query_row(
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND extra_data LIKE '%musicAnalysisVersion%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(analysed, 300, "the cloud's Sonic work is home");
    let paths: i64 = conn
        .query_row(
            // Plex's own parts (theme songs, trailers) name no library path.
            "SELECT count(*) FROM media_parts WHERE file NOT LIKE '/data/media/%' AND file != '' AND file NOT LIKE '%/Plex Media Server/Metadata/%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(paths, 0, "cloud paths were mapped back to home paths");
    drop(conn);
    // Home Plex answers on the new DB.
    assert_eq!(
        get(&format!("http://{}/identity", w.home.addr), &[])
            .unwrap()
            .status,
        200
    );

    // The run's statements left the bucket policies with its keys.
    for bucket in [BUCKET, MEDIA] {
        let policy = w.bucket_policy(bucket);
        assert!(
            !policy.contains(&format!("plex-burst run {run_id} ")),
            "{policy}"
        );
    }
    assert!(w.bucket_policy(MEDIA).contains("the owner"));
    let gone = block_on(
        w.s3_as(&w.run_key, BUCKET)
            .get_bytes("reference/plex-db.manifest.json"),
    );
    assert!(
        matches!(gone, Err(S3Error::AccessDenied { .. })),
        "{gone:?}"
    );

    // Nothing of the run stays billed, its key and its group are gone; the
    // server it did not make stays.
    assert!(
        w.security_group(&group_id).is_none(),
        "the run's group is deleted"
    );
    let state = w.state();
    let servers = state["servers"].as_array().unwrap();
    assert!(servers.iter().any(|s| s["id"] == victim_id), "{state}");
    let victim_volume = &victim["volumes"]["0"]["id"];
    let volumes = state["volumes"].as_array().unwrap();
    assert!(volumes.iter().all(|v| v["id"] == *victim_volume), "{state}");
    assert!(
        state["api_keys"].as_array().unwrap().is_empty(),
        "{}",
        state["api_keys"]
    );
    assert_eq!(
        w.json(&format!("runs/{run_id}/launch.json"))["state"],
        "fetched"
    );
    assert!(
        w.plex_servers_on_account().is_empty(),
        "fetch removed the run's server from the plex.tv account"
    );
    let out = w.ok(&["sweep"]);
    assert!(out.contains("nothing left behind"), "{out}");

    // No secret, by value or by shape, in what left the instance or
    // reached the terminal: the records, the status, every shipped log
    // (Plex's logs name tokens in URLs, as real Plex's do), the runner's
    // log and bootstrap's output.
    let mut seen: Vec<(String, String)> = ["launch.json", "status.json", "report.html"]
        .iter()
        .map(|f| {
            let key = format!("runs/{run_id}/{f}");
            (
                key.clone(),
                std::fs::read_to_string(w.object(&key)).unwrap(),
            )
        })
        .collect();
    seen.push(("instance runner.log".into(), w.instance_logs()));
    seen.extend(w.shipped_logs(&run_id));
    seen.extend(w.outputs.borrow().iter().cloned());
    let mut secrets = w.secrets();
    let issued = w.plextv.issued_tokens();
    assert!(
        issued.iter().any(|t| t.starts_with("claim-")) && issued.len() >= 2,
        "the run claimed its server: {issued:?}"
    );
    secrets.extend(issued);
    let launch_json = format!("runs/{run_id}/launch.json");
    let leaks = plex_burst_tests::leaks::find(&seen, &secrets, &[&launch_json]);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    // The masking kept the logs readable.
    let plex_log = &seen
        .iter()
        .find(|(n, _)| n == "plex/Plex Media Server.log")
        .unwrap()
        .1;
    assert!(
        plex_log.contains("/myplex/claim?token=********"),
        "{plex_log}"
    );
}

/// Every file under `root` holding one of `secrets`, and which.
fn secrets_on_disk(root: &Path, secrets: &[String]) -> Vec<String> {
    let mut leaks = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                for (i, secret) in secrets.iter().enumerate() {
                    if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                        leaks.push(format!("{} holds secret #{i}", path.display()));
                    }
                }
            }
        }
    }
    leaks
}

/// Watch state made at home after the snapshot: a film watched again.
/// Returns its guid and the view count home now has.
fn watch_at_home(db: &Path, snapshot_time: i64) -> (String, i64) {
    let conn = Connection::open(db).unwrap();
    let (id, guid, count): (i64, String, i64) = conn
        .query_row(
            "SELECT s.id, s.guid, s.view_count FROM metadata_item_settings s
             JOIN metadata_items m ON m.guid = s.guid AND m.metadata_type = 1
             WHERE s.account_id = 1 ORDER BY s.id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the fixture has watch state for films");
    conn.execute(
        "UPDATE metadata_item_settings SET view_count = view_count + 3, last_viewed_at = ?1, updated_at = ?1 WHERE id = ?2",
        params![snapshot_time + 5, id],
    )
    .unwrap();
    (guid, count + 3)
}

#[test]
fn a_failed_image_build_shows_the_log_and_deletes_the_builder_then_a_good_one_is_reused() {
    let w = World::new(WorldOptions::default());
    std::fs::write(w.dir.path().join("instances/fail-build"), "plex").unwrap();
    let err = w.fails(&["image", "build", "--plex-version", PLEX_VERSION]);
    assert!(
        err.contains("provisioning failed at step \"plex\""),
        "{err}"
    );
    assert!(
        err.contains("simulated failure in step plex"),
        "the log tail is shown: {err}"
    );
    assert!(err.contains("the builder was deleted"), "{err}");
    let state = w.state();
    assert!(state["servers"].as_array().unwrap().is_empty(), "{state}");
    assert!(state["volumes"].as_array().unwrap().is_empty(), "{state}");

    std::fs::remove_file(w.dir.path().join("instances/fail-build")).unwrap();
    // This builder's self-halt ends `stopped in place`, not `running`.
    std::fs::write(w.dir.path().join("instances/halt-ends"), "stopped in place").unwrap();
    let out = w.ok(&["image", "build", "--plex-version", PLEX_VERSION]);
    assert!(out.contains("available after"), "{out}");
    let state = w.state();
    let images = state["images"].as_array().unwrap();
    let ours: Vec<&Value> = images
        .iter()
        .filter(|i| {
            i["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "plex-burst"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "{images:#?}");
    assert!(
        ours[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| *t == format!("plex={PLEX_VERSION}"))
    );
    assert!(
        state["servers"].as_array().unwrap().is_empty(),
        "builder deleted"
    );
    assert!(
        state["volumes"].as_array().unwrap().is_empty(),
        "builder volume deleted"
    );
    // The builder sat in a closed group of its own, deleted after it.
    let calls = w.api_calls();
    assert!(
        position(&calls, "POST /instance/v1/zones/fr-par-1/security_groups")
            < position(&calls, "POST /instance/v1/zones/fr-par-1/servers"),
        "{calls:#?}"
    );
    let groups = w
        .scw
        .api("GET", "/instance/v1/zones/fr-par-1/security_groups", None)
        .json();
    assert!(
        !groups["security_groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("plex-burst-builder")),
        "{groups}"
    );

    let servers_before = count(&w.api_calls(), "POST /instance/v1/zones/fr-par-1/servers");
    let out = w.ok(&["image", "build", "--plex-version", PLEX_VERSION]);
    assert!(out.contains("reused"), "{out}");
    assert_eq!(
        count(&w.api_calls(), "POST /instance/v1/zones/fr-par-1/servers"),
        servers_before,
        "no second builder"
    );
}

#[test]
fn launch_refuses_what_would_waste_money_before_creating_anything() {
    let w = World::new(WorldOptions::default());

    // No reference yet.
    let err = w.fails(&["launch"]);
    assert!(err.contains("run `bootstrap snapshot` first"), "{err}");

    // Wrong credentials: the API's own answer, in one line.
    let out = w
        .command()
        .arg("launch")
        .env("TEST_SCW_SECRET", "00000000-0000-4000-8000-000000000000")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the Scaleway credentials do not work"),
        "{err}"
    );
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("00000000-0000-4000-8000-000000000000"),
        "the key is not echoed"
    );

    // A type the zone does not offer.
    w.ok(&["snapshot"]);
    let text_cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        text_cfg.replace("\"DEV1-S\"", "\"POP9-HUGE\""),
    )
    .unwrap();
    let err = w.fails(&["launch"]);
    assert!(
        err.contains("\"POP9-HUGE\" is not offered in fr-par-1"),
        "{err}"
    );
    std::fs::write(w.config_path(), &text_cfg).unwrap();

    // An empty media bucket.
    let media = w.s3.data_dir().join(MEDIA);
    let moved = w.dir.path().join("media-away");
    std::fs::rename(&media, &moved).unwrap();
    std::fs::create_dir(&media).unwrap();
    let err = w.fails(&["launch"]);
    assert!(err.contains("run.media.remote"), "{err}");
    std::fs::remove_dir(&media).unwrap();
    std::fs::rename(&moved, &media).unwrap();

    // A broken bootstrap.toml: one line naming the key.
    std::fs::write(
        w.config_path(),
        text_cfg.replace("keep_backups", "keep_backup"),
    )
    .unwrap();
    let err = w.fails(&["launch"]);
    assert!(err.contains("home.keep_backup"), "{err}");

    let posts: Vec<String> = w
        .api_calls()
        .into_iter()
        .filter(|c| !c.starts_with("GET"))
        .collect();
    assert!(posts.is_empty(), "nothing was created: {posts:#?}");
}

#[test]
fn a_launch_refused_by_the_quota_or_cut_short_leaves_nothing_behind() {
    // The builder's 20 GB fit the quota; the run's 40 GB root does not.
    let w = World::new(WorldOptions {
        quota_volumes_gb: Some(30),
        root_volume_gb: 40,
        ..WorldOptions::default()
    });
    w.ok(&["snapshot"]);
    let err = w.fails(&["launch"]);
    assert!(err.contains("quotas_exceeded"), "{err}");
    assert!(err.contains("everything it created was deleted"), "{err}");
    let state = w.state();
    assert!(state["servers"].as_array().unwrap().is_empty(), "{state}");
    assert!(state["volumes"].as_array().unwrap().is_empty(), "{state}");
    assert!(
        state["api_keys"].as_array().unwrap().is_empty(),
        "the run key is deleted"
    );
    let records: Vec<PathBuf> = std::fs::read_dir(w.object("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("launch.json"))
        .collect();
    assert_eq!(records.len(), 1);
    let record: Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["state"], "abandoned");

    // A launch killed half way (its record says `creating`, its server and
    // key exist): the next launch deletes them before anything else.
    let run_id = "2026-01-01-0000";
    let server = w.create_server(
        &format!("plex-burst-{run_id}"),
        &["plex-burst".into(), format!("plex-burst-run={run_id}")],
    );
    let record = launch_record(run_id, "creating", Some(&server), "2026-01-01T02:00:00Z");
    w.put_record(run_id, &record.to_string());

    // A dry run says so and deletes nothing.
    let out = w.ok(&["launch", "--dry-run"]);
    assert!(
        out.contains(&format!("launch of run {run_id} was interrupted")),
        "{out}"
    );
    assert_eq!(w.state()["servers"].as_array().unwrap().len(), 1);
    // The next launch cleans it, then fails on the quota again, cleanly.
    let err = w.fails(&["launch"]);
    assert!(err.contains("quotas_exceeded"), "{err}");
    let state = w.state();
    assert!(state["servers"].as_array().unwrap().is_empty(), "{state}");
    assert!(state["volumes"].as_array().unwrap().is_empty(), "{state}");
    assert_eq!(
        w.json(&format!("runs/{run_id}/launch.json"))["state"],
        "abandoned"
    );
}

#[test]
fn fetch_never_installs_a_quarantined_or_unverified_result() {
    let w = World::new(WorldOptions::default());
    let databases = w.app_support.join("Plug-in Support/Databases");
    w.home.control("stop");
    let before = digests(&databases);
    w.home.control("start");

    let record =
        |run_id: &str| launch_record(run_id, "launched", None, "2026-01-01T02:00:00Z").to_string();
    let put = |key: &str, body: &str| w.put(key, body);

    // Quarantined: refused, with the reason.
    w.put_record("q", &record("q"));
    put("runs/q/QUARANTINED", "{}");
    put(
        "runs/q/status.json",
        &json!({"run_id": "q", "state": "quarantined", "phase": null, "phases_done": [],
                "started_at": "x", "updated_at": "2026-01-01T01:00:00Z", "runner_version": "0",
                "last_error": null, "result_key": null,
                "quarantine": "library Movies lost 15 of 40 items"})
        .to_string(),
    );
    let err = w.fails(&["fetch", "q"]);
    assert!(
        err.contains("quarantined (library Movies lost 15 of 40 items)"),
        "{err}"
    );
    assert!(err.contains("never installed"), "{err}");

    // A DONE whose digest is not the manifest's: refused.
    w.ok(&["snapshot"]);
    w.put_record("d", &record("d"));
    let manifest = w.json("reference/plex-db.manifest.json");
    put(
        "runs/d/result/plex-db.manifest.json",
        &serde_json::to_string(&json!({
            "format_version": manifest["format_version"],
            "created_at": manifest["created_at"],
            "plex_version": PLEX_VERSION,
            "files": manifest["files"],
            "archive": manifest["archive"],
            "stats": {"after": manifest["stats"]}
        }))
        .unwrap(),
    );
    let archive = std::fs::read(w.object("reference/plex-db.tar.zst")).unwrap();
    w.put("runs/d/result/plex-db.tar.zst", archive.clone());
    put(
        "runs/d/DONE",
        &json!({"archive_key": "runs/d/result/plex-db.tar.zst",
                "manifest_key": "runs/d/result/plex-db.manifest.json",
                "archive_sha256": "0".repeat(64)})
        .to_string(),
    );
    let err = w.fails(&["fetch", "d"]);
    assert!(err.contains("is not the one DONE records"), "{err}");

    // Archive bytes damaged in S3: the download's digest check refuses.
    let mut bytes = archive;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    w.put("runs/d/result/plex-db.tar.zst", bytes);
    put(
        "runs/d/DONE",
        &json!({"archive_key": "runs/d/result/plex-db.tar.zst",
                "manifest_key": "runs/d/result/plex-db.manifest.json",
                "archive_sha256": manifest["archive"]["sha256"]})
        .to_string(),
    );
    let err = w.fails(&["fetch", "d"]);
    assert!(err.contains("the home DB was not touched"), "{err}");

    // A result made by a newer Plex than home's: refused before download.
    let newer = serde_json::to_string(&json!({
        "format_version": manifest["format_version"],
        "created_at": manifest["created_at"],
        "plex_version": "1.42.0.1-abcdef0",
        "files": manifest["files"],
        "archive": manifest["archive"],
        "stats": {"after": manifest["stats"]}
    }))
    .unwrap();
    put("runs/d/result/plex-db.manifest.json", &newer);
    let err = w.fails(&["fetch", "d"]);
    assert!(
        err.contains("made by Plex 1.42.0.1-abcdef0 but home runs 1.41.3.9314-a0bfb8370"),
        "{err}"
    );

    w.home.control("stop");
    assert_eq!(digests(&databases), before, "home is byte-identical");
}

#[test]
fn sweep_lists_what_is_left_billed_with_its_cost_and_deletes_it_on_yes() {
    let w = World::new(WorldOptions::default());
    w.ok(&["image", "build", "--plex-version", PLEX_VERSION]);
    // A server tagged by plex-burst that belongs to no run, and a run's
    // root volume left detached by a terminate: untagged, as Scaleway
    // leaves it, and named after its server, as launch names it.
    for name in ["stray", "plex-burst-lost"] {
        let server = w.create_server(name, &["plex-burst".into()]);
        if name == "plex-burst-lost" {
            let id = server["id"].as_str().unwrap().to_owned();
            let volume = server["volumes"]["0"]["id"].as_str().unwrap();
            let renamed = w.scw.api(
                "PATCH",
                &format!("/block/v1/zones/fr-par-1/volumes/{volume}"),
                Some(&json!({"name": name})),
            );
            assert_eq!(renamed.status, 200, "{}", renamed.body);
            assert_eq!(renamed.json()["tags"], json!([]));
            let action = |a: &str| {
                let r = w.scw.api(
                    "POST",
                    &format!("/instance/v1/zones/fr-par-1/servers/{id}/action"),
                    Some(&json!({"action": a})),
                );
                assert_eq!(r.status, 202, "{}", r.body);
            };
            action("poweron");
            wait_for("running", Duration::from_secs(20), || {
                (w.scw
                    .api(
                        "GET",
                        &format!("/instance/v1/zones/fr-par-1/servers/{id}"),
                        None,
                    )
                    .json()["server"]["state"]
                    == "running")
                    .then_some(())
            });
            action("terminate");
        }
    }
    wait_for(
        "the terminated server to go",
        Duration::from_secs(20),
        || (w.state()["servers"].as_array().unwrap().len() == 1).then_some(()),
    );
    // A newer image supersedes the baked one, whose snapshot stays in_use
    // a while after that image is deleted.
    let stray = &w.state()["servers"][0];
    let snapshot = w.scw.api(
        "POST",
        "/block/v1/zones/fr-par-1/snapshots",
        Some(
            &json!({"volume_id": stray["volumes"]["0"]["id"], "name": "newer",
                     "project_id": w.scw.project_id(), "tags": ["plex-burst"]}),
        ),
    );
    assert_eq!(snapshot.status, 200, "{}", snapshot.body);
    let snapshot_id = snapshot.json()["id"].as_str().unwrap().to_owned();
    let image = wait_for("a newer image", Duration::from_secs(20), || {
        let r = w.scw.api(
            "POST",
            "/instance/v1/zones/fr-par-1/images",
            Some(
                &json!({"name": "plex-burst-newer", "root_volume": snapshot_id,
                         "arch": "x86_64", "project": w.scw.project_id(),
                         "tags": ["plex-burst"], "public": false}),
            ),
        );
        (r.status == 201).then(|| r.json())
    });
    let newer = image["image"]["id"].as_str().unwrap().to_owned();

    let out = w.ok(&["sweep"]);
    assert!(
        out.contains("tagged plex-burst but belongs to no run"),
        "{out}"
    );
    assert!(out.contains("detached volume (billed)"), "{out}");
    assert!(out.contains("superseded by a newer image"), "{out}");
    assert!(out.contains("EUR"), "{out}");
    assert!(out.contains("nothing deleted"), "{out}");
    assert_eq!(w.state()["servers"].as_array().unwrap().len(), 1);

    let out = w.ok(&["sweep", "--yes"]);
    assert!(out.contains("deleted server"), "{out}");
    assert!(out.contains("deleted image"), "{out}");
    let state = w.state();
    assert!(state["servers"].as_array().unwrap().is_empty(), "{state}");
    assert!(state["volumes"].as_array().unwrap().is_empty(), "{state}");
    let ours: Vec<&Value> = state["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("plex-burst")))
        })
        .collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(ours[0]["id"], json!(newer));
    // The superseded image's snapshot was deleted (and is soon gone).
    wait_for("one snapshot left", Duration::from_secs(20), || {
        (w.state()["snapshots"].as_array().unwrap().len() == 1).then_some(())
    });
    let out = w.ok(&["sweep"]);
    assert!(out.contains("nothing left behind"), "{out}");
}

#[test]
fn a_snapshot_with_plex_stopped_restarts_it_and_a_run_past_its_deadline_is_flagged() {
    let w = World::new(WorldOptions::default());
    let out = w.ok(&["snapshot", "--stop-plex"]);
    assert!(out.contains("reference uploaded"), "{out}");
    let plex_log = std::fs::read_to_string(w.home.ctl.join("plex.log")).unwrap_or_default();
    assert!(
        get(&format!("http://{}/identity", w.home.addr), &[]).is_ok_and(|r| r.status == 200),
        "the home Plex runs again after the copy: {plex_log}"
    );
    let manifest = w.json("reference/plex-db.manifest.json");
    assert_eq!(manifest["plex_version"], PLEX_VERSION);

    // A run whose deadline passed while its server is still up.
    w.ok(&["image", "build", "--plex-version", PLEX_VERSION]);
    let run_id = "2026-01-02-0300";
    let server = w.create_server(
        &format!("plex-burst-{run_id}"),
        &["plex-burst".into(), format!("plex-burst-run={run_id}")],
    );
    w.put(
        &format!("runs/{run_id}/launch.json"),
        launch_record(run_id, "launched", Some(&server), "2026-01-02T05:00:00Z").to_string(),
    );
    // A damaged record elsewhere does not hide this run.
    w.put("runs/damaged/launch.json", "{ not json");
    let out = w.bootstrap(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("run damaged is skipped"),
        "{}",
        text(&out.stderr)
    );
    let list = text(&out.stdout);
    assert!(list.contains(run_id) && list.contains("(!)"), "{list}");
    let out = w.ok(&["status", run_id]);
    assert!(out.contains("PAST DEADLINE"), "{out}");
    assert!(out.contains("cost       EUR"), "{out}");
    // No runner wrote a page for it: one line says so.
    let err = w.fails(&["status", run_id, "--open"]);
    assert!(
        err.contains(&format!("run {run_id} has no report page yet")),
        "{err}"
    );

    // A status read while it was being replaced: one look says so; a watch
    // says so and looks again, up to five times in a row.
    let status_key = format!("runs/{run_id}/status.json");
    w.put(&status_key, "{\"state\": \"runn");
    let err = w.fails(&["status", run_id]);
    assert!(err.contains("status.json is unreadable"), "{err}");
    let watch = ["status", run_id, "--watch", "--every", "1"];
    let out = w.bootstrap(&watch);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("trying again (5 of 5)"), "{err}");
    assert!(
        err.lines().last().unwrap().contains("is unreadable"),
        "{err}"
    );
    let bucket = Bucket::new(&w.s3.connection(), BUCKET, Default::default());
    block_on(bucket.delete(&status_key)).unwrap();
    let out = w.ok(&["sweep"]);
    assert!(out.contains("run past its deadline"), "{out}");
}

#[test]
fn a_run_failing_past_its_deadline_terminates_its_server_and_is_never_installed() {
    // Plex's scan never settles; the run's deadline passes during it.
    let w = World::new(WorldOptions {
        run_deadline: "25s",
        plex_fault: "stuck-activity",
        ..WorldOptions::default()
    });
    w.ok(&["snapshot"]);
    // Runs of another bucket in this minute and the next, known only to
    // this machine's records (a demo beside a real run): their ids are
    // not reused, or fetch and sweep would act on the wrong record.
    let elsewhere: Vec<String> = [0, 60]
        .into_iter()
        .map(|s| minute_run_id(std::time::SystemTime::now() + Duration::from_secs(s)))
        .collect();
    for id in &elsewhere {
        let home = w.state_dir().join("runs").join(id);
        std::fs::create_dir_all(&home).unwrap();
        let record = launch_record(id, "launched", None, "2026-01-02T00:00:00Z");
        std::fs::write(home.join("launch.json"), record.to_string()).unwrap();
    }
    let out = w.ok(&["launch"]);
    let run_id = out
        .lines()
        .find_map(|l| l.strip_prefix("run ").filter(|r| !r.contains(' ')))
        .unwrap()
        .to_owned();
    assert!(
        !elsewhere.contains(&run_id) && elsewhere.iter().any(|id| run_id.starts_with(id)),
        "launched as {run_id}, beside {elsewhere:?}"
    );
    wait_for("the run to fail", Duration::from_secs(120), || {
        let status = w.object(&format!("runs/{run_id}/status.json"));
        let status: Value = serde_json::from_slice(&std::fs::read(status).ok()?).ok()?;
        (status["state"] == "failed").then_some(())
    });
    wait_for(
        "the server to be terminated",
        Duration::from_secs(60),
        || {
            w.state()["servers"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(())
        },
    );
    let out = w.ok(&["status", &run_id]);
    assert!(out.contains("state      failed"), "{out}");
    assert!(out.contains("deadline"), "the last error says why: {out}");
    assert!(out.contains("server     gone"), "{out}");
    let err = w.fails(&["fetch", &run_id]);
    assert!(
        err.contains(&format!("run {run_id} failed in phase scan")),
        "{err}"
    );
    // The failed run shipped its logs too, the failure in them.
    let logs = w.shipped_logs(&run_id);
    let runner_log = &logs
        .iter()
        .find(|(n, _)| n == "runner.log")
        .expect("runner.log shipped")
        .1;
    assert!(runner_log.contains("deadline"), "{runner_log}");
}

#[test]
fn sweep_deletes_only_what_carries_its_runs_tag_in_the_project_whatever_a_record_says() {
    let w = World::new(WorldOptions::default());
    w.ok(&["image", "build", "--plex-version", PLEX_VERSION]);
    let zone = "/instance/v1/zones/fr-par-1";
    // The user's own detached volume (untagged): a server of theirs
    // terminated.
    let own = w.create_server("the-users-own", &[]);
    let own_id = own["id"].as_str().unwrap().to_owned();
    let own_volume = own["volumes"]["0"]["id"].as_str().unwrap().to_owned();
    let action = |a: &str| {
        let r = w.scw.api(
            "POST",
            &format!("{zone}/servers/{own_id}/action"),
            Some(&json!({"action": a})),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    action("poweron");
    wait_for("running", Duration::from_secs(20), || {
        (w.scw
            .api("GET", &format!("{zone}/servers/{own_id}"), None)
            .json()["server"]["state"]
            == "running")
            .then_some(())
    });
    action("terminate");
    wait_for(
        "the terminated server to go",
        Duration::from_secs(20),
        || {
            (w.scw
                .api("GET", &format!("{zone}/servers/{own_id}"), None)
                .status
                == 404)
                .then_some(())
        },
    );
    // A server of another project tagged like a run's.
    let run_id = "2026-01-01-0000";
    let other_project = "0e7a1b2c-3d4e-4f50-8a6b-7c8d9e0f1a2b";
    let foreign = w.scw.api(
        "POST",
        &format!("{zone}/servers"),
        Some(&json!({
            "name": format!("plex-burst-{run_id}"), "commercial_type": "DEV1-S",
            "image": w.image_id(), "project": other_project,
            "tags": ["plex-burst", format!("plex-burst-run={run_id}")],
        })),
    );
    assert_eq!(foreign.status, 201, "{}", foreign.body);
    let foreign_id = foreign.json()["server"]["id"].as_str().unwrap().to_owned();
    // The run's key rewrote its bucket record to name them (no copy of it
    // at home: it looks launched from another machine).
    let mut record = launch_record(run_id, "fetched", None, "2026-01-01T02:00:00Z");
    record["server_id"] = json!(foreign_id);
    record["root_volume_id"] = json!(own_volume);
    w.put(&format!("runs/{run_id}/launch.json"), record.to_string());
    // A group a run left behind, no server in it.
    let left_run = "2026-01-01-0100";
    let group = w.scw.api(
        "POST",
        &format!("{zone}/security_groups"),
        Some(&json!({
            "name": format!("plex-burst-{left_run}"), "project": w.scw.project_id(),
            "tags": ["plex-burst", format!("plex-burst-run={left_run}")], "stateful": true,
            "inbound_default_policy": "drop", "outbound_default_policy": "accept",
        })),
    );
    assert_eq!(group.status, 201, "{}", group.body);
    let group_id = group.json()["security_group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = w.ok(&["sweep"]);
    assert!(
        out.contains(&group_id) && out.contains("security group of run"),
        "{out}"
    );
    assert!(
        !out.contains(&own_volume) && !out.contains(&foreign_id),
        "{out}"
    );
    w.ok(&["sweep", "--yes"]);
    assert!(
        w.security_group(&group_id).is_none(),
        "the leftover group is deleted"
    );
    let state = w.state();
    let volumes = state["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v["id"] == own_volume.as_str()),
        "{state}"
    );
    let servers = state["servers"].as_array().unwrap();
    assert!(
        servers.iter().any(|s| s["id"] == foreign_id.as_str()),
        "{state}"
    );

    // Fetch refuses a run with no record at home unless told to trust the
    // bucket's.
    let err = w.fails(&["fetch", run_id]);
    assert!(err.contains("no launch record kept at home"), "{err}");
}

#[test]
fn sweep_removes_a_crashed_runs_server_from_the_account_by_the_id_plex_registered_never_the_home_one()
 {
    let w = World::new(WorldOptions::default());
    // The home server is on the account, registered as the official image
    // registers it: the claim exchange under its ProcessedMachineIdentifier.
    let home_prefs = plex_burst_tests::plexdouble::pms::prefs::Preferences::load_or_create(
        &w.app_support.join("Preferences.xml"),
        PLEX_VERSION,
    )
    .unwrap();
    let home_id = home_prefs
        .get("ProcessedMachineIdentifier")
        .unwrap()
        .to_owned();
    assert_ne!(home_prefs.get("MachineIdentifier"), Some(home_id.as_str()));
    let exchange = request(
        "POST",
        &w.plextv.url(&format!(
            "/api/claim/exchange?token={}",
            w.plextv.claim_token()
        )),
        &[("X-Plex-Client-Identifier", &home_id)],
    )
    .unwrap();
    assert_eq!(exchange.status, 200, "{}", exchange.body);

    // A run whose instance died after its Plex was claimed; its status names
    // the server as the runner does, by what /identity reports.
    let app = w.dir.path().join("crashed-run-plex");
    let mut plex = PlexDouble::start(
        &app,
        &[
            "--allowed-networks",
            "127.0.0.0/8",
            "--plextv-url",
            &w.plextv.url,
        ],
        &[],
    );
    let claim = format!("/myplex/claim?token={}", w.plextv.claim_token());
    let claimed = request(
        "POST",
        &plex.url(&claim),
        &[("X-Plex-Token", ACCOUNT_TOKEN)],
    )
    .unwrap();
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    let identity = get(&plex.url("/identity"), &[]).unwrap();
    let run_server = xml_elements(&identity.body, "MediaContainer")[0]["machineIdentifier"].clone();
    plex.terminate();
    assert_eq!(w.plex_servers_on_account().len(), 2);

    // Two runs launched an hour ago, past their deadline: the crashed one,
    // and one whose key rewrote its status.json to name the home server.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let deadline = humantime::format_rfc3339_seconds(hour_ago + Duration::from_secs(1800));
    for (run_id, server) in [
        ("2026-01-01-0200", &run_server),
        ("2026-01-01-0300", &home_id),
    ] {
        let mut record = launch_record(run_id, "launched", None, &deadline.to_string());
        record["launched_at"] = json!(humantime::format_rfc3339_seconds(hour_ago).to_string());
        w.put_record(run_id, &record.to_string());
        let mut status = runner::run::status::Status::new(run_id);
        status.plex_server = Some(server.clone());
        w.put(
            &format!("runs/{run_id}/status.json"),
            serde_json::to_vec(&status).unwrap(),
        );
    }

    let out = w.ok(&["sweep"]);
    assert!(
        out.contains("run 2026-01-01-0200's Plex server on your plex.tv account"),
        "{out}"
    );
    assert!(
        !out.contains("run 2026-01-01-0300's Plex server"),
        "the home server is never the run's: {out}"
    );
    w.ok(&["sweep", "--yes"]);
    let left: Vec<String> = w
        .plex_servers_on_account()
        .iter()
        .map(|d| d["clientIdentifier"].clone())
        .collect();
    assert_eq!(left, [home_id], "only the home server stays on the account");
}
