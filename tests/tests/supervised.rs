//! The runner with Plex under supervision, end to end: the real runner
//! binary, a real S3 server on loopback holding the reference archive and
//! the media bucket, a real rclone FUSE mount started by the runner, the
//! Plex double started by the runner, and the plex.tv double.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::browser::{Browser, PHONE_WIDTH};
use plex_burst_tests::faultproxy::{Fault, FaultProxy, Plan, When};
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::notifyreceiver::{NTFY_TOKEN, Receiver};
use plex_burst_tests::real_dbs::{self, RealDb};
use plex_burst_tests::s3server::{S3Server, rclone_path};
use rusqlite::Connection;
use tempfile::TempDir;

const BUCKET: &str = "plex-burst";
const MEDIA: &str = "media";
const REFERENCE: &str = "reference/home.tar.gz";
const ACCOUNT_TOKEN: &str = "account-token-for-tests-0123456789";
/// `deadlines.watchdog` of these runs (its minimum, 30 s).
const WATCHDOG_SECS: u64 = 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A library like the user's, scaled down: music (20% Sonic-analysed),
/// movies, shows and photos.
fn spec(tracks: u32) -> Spec {
    Spec {
        seed: 7,
        media_root: "/data/media".into(),
        libraries: vec![
            LibrarySpec::single("Music", LibraryKind::Music, tracks, 0.2),
            LibrarySpec::single("Movies", LibraryKind::Movie, 40, 0.0),
            LibrarySpec::single("TV Shows", LibraryKind::Show, 60, 0.0),
            LibrarySpec::single("Photos", LibraryKind::Photo, 80, 0.0),
        ],
    }
}

/// The stall window, a hang guard: 90 s without progress. The double lists
/// a 10k-track library over the FUSE mount before its first progress (up
/// to half a minute on two busy cores), which a 30 s window took for a stall.
const STALL_CHECKS: u32 = 9;

/// The plex.tv double, its own process.
struct PlexTv {
    child: Child,
    url: String,
}

impl PlexTv {
    fn start(plex_pass: bool) -> PlexTv {
        let port = free_port();
        let child = Command::new(workspace_bin("plex-double"))
            .args(["plextv", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--account-token", ACCOUNT_TOKEN])
            .args(["--plex-pass", if plex_pass { "true" } else { "false" }])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_for_port(port);
        PlexTv { child, url }
    }

    /// Every request it received, as the double records them.
    fn calls(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", &format!("{}/__double/calls", self.url)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PlexTv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One run's world.
struct World {
    s3: S3Server,
    plextv: PlexTv,
    dir: TempDir,
    run_id: String,
    /// Extra TOML appended to run.toml (phases, deadlines, ...).
    extra: String,
    /// Environment for the runner, inherited by the Plex double.
    env: Vec<(String, String)>,
    media_endpoint: Option<String>,
    /// Path mappings: a home prefix, and where it lies under the mount.
    mappings: Vec<(String, String)>,
    /// `[[library]]` tables: a scratch run (no reference) when set.
    scratch: Option<String>,
    /// `media.health_interval`: how often the runner probes the mount
    /// while Plex works.
    health_interval: &'static str,
    /// The library DB packed as the reference.
    reference_db: PathBuf,
}

impl World {
    fn new(run_id: &str, spec: Spec, plex_pass: bool) -> World {
        let (s3, dir) = (S3Server::start(), tempfile::tempdir().unwrap());
        let app = write_app_support(&dir.path().join("home"), &spec).unwrap();
        write_media_tree(&s3.data_dir().join(MEDIA), &spec).unwrap();
        World::with_reference(s3, dir, &app.dir, run_id, plex_pass)
    }

    /// A world whose reference is a copy of a DB a real Plex wrote, and
    /// whose media bucket holds a file at each of its live media paths
    /// (mapped under the mount by their library roots).
    fn from_real_db(run_id: &str, real: &RealDb) -> World {
        let (s3, dir) = (S3Server::start(), tempfile::tempdir().unwrap());
        let app = dir.path().join("home/Plex Media Server");
        let db = real.copy_into(&app.join("Plug-in Support/Databases"));
        let conn = Connection::open(&db).unwrap();
        let roots: Vec<String> = conn
            .prepare("SELECT DISTINCT root_path FROM section_locations")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let files: Vec<String> = conn
            .prepare("SELECT file FROM media_parts WHERE deleted_at IS NULL AND file != ''")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        drop(conn);
        let media = s3.data_dir().join(MEDIA);
        for file in files {
            let path = media.join(file.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("ID3 media of the real DB at {file}")).unwrap();
        }
        let mut world = World::with_reference(s3, dir, &app, run_id, true);
        world.mappings = roots.into_iter().map(|r| (r.clone(), r)).collect();
        world
    }

    /// The rest of a world around the app-support folder `app` (packed as
    /// the user's tar.gz reference).
    fn with_reference(
        s3: S3Server,
        dir: TempDir,
        app: &Path,
        run_id: &str,
        plex_pass: bool,
    ) -> World {
        s3.create_bucket(BUCKET);
        s3.create_bucket(MEDIA);
        let tarball = s3.data_dir().join(BUCKET).join(REFERENCE);
        std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
        let status = Command::new("tar")
            .arg("-C")
            .arg(app.parent().unwrap())
            .arg("-czf")
            .arg(&tarball)
            .arg(app.file_name().unwrap())
            .status()
            .unwrap();
        assert!(status.success());
        World {
            reference_db: app.join("Plug-in Support/Databases/com.plexapp.plugins.library.db"),
            health_interval: "2s",
            s3,
            plextv: PlexTv::start(plex_pass),
            dir,
            run_id: run_id.into(),
            extra: String::new(),
            env: vec![("PLEX_DOUBLE_SONIC_RATE".into(), "5000".into())],
            media_endpoint: None,
            mappings: vec![("/data/media".into(), String::new())],
            scratch: None,
        }
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn work_db(&self) -> PathBuf {
        self.work_dir()
            .join("plex/Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db")
    }

    fn media_bucket(&self) -> PathBuf {
        self.s3.data_dir().join(MEDIA)
    }

    /// Adds files to the media bucket that the reference DB does not know.
    fn add_new_media(&self) -> (u64, u64) {
        let tracks = find(&self.media_bucket().join("Music"), "flac");
        let movies = find(&self.media_bucket().join("Movies"), "mkv");
        let album = self
            .media_bucket()
            .join("Music/Nouvel Artiste/Premier Album (2026)");
        std::fs::create_dir_all(&album).unwrap();
        for i in 1..=12 {
            std::fs::copy(&tracks[0], album.join(format!("{i:02} - Morceau {i}.flac"))).unwrap();
        }
        let film = self.media_bucket().join("Movies/Nouveau Film (2026)");
        std::fs::create_dir_all(&film).unwrap();
        std::fs::copy(&movies[0], film.join("Nouveau Film (2026).mkv")).unwrap();
        (12, 1)
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("run.toml");
        let media_s3 = match &self.media_endpoint {
            Some(e) => format!(
                "[media.s3]\nendpoint = \"{e}\"\nregion = \"us-east-1\"\npath_style = true\naccess_key_env = \"TEST_S3_KEY\"\nsecret_key_env = \"TEST_S3_SECRET\"\n\n"
            ),
            None => String::new(),
        };
        let (mode, reference) = match &self.scratch {
            Some(libraries) => ("scratch", libraries.clone()),
            None => (
                "delta",
                format!("[reference]\narchive_key = \"{REFERENCE}\"\n"),
            ),
        };
        let toml = format!(
            r#"run_id = "{run_id}"
work_dir = "{work}"
mode = "{mode}"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{BUCKET}"
path_style = true
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"

{reference}
[media]
remote = "{MEDIA}"
mount_point = "{mount}"
profile = "small"
probe_timeout = "3s"
health_interval = "{health_interval}"

{media_s3}[plex]
version = "1.41.3.9314-a0bfb8370"
runtime = "double"
double_binary = "{double}"
port = {port}
plextv_url = "{plextv}"
claim = true
account_token_env = "TEST_PLEX_TOKEN"

{maps}[deadlines]
plex_ready = "60s"
poll_interval = "1s"
idle_checks = 2
stall_interval = "10s"
stall_checks = {stall_checks}
watchdog = "{WATCHDOG_SECS}s"

{extra}
[termination]
provider = "none"
"#,
            run_id = self.run_id,
            work = self.work_dir().display(),
            endpoint = self.s3.endpoint(),
            mount = self.mount_point().display(),
            double = workspace_bin("plex-double").display(),
            port = free_port(),
            plextv = self.plextv.url,
            extra = self.extra,
            stall_checks = STALL_CHECKS,
            health_interval = self.health_interval,
            maps = self
                .mappings
                .iter()
                .map(|(from, under)| format!(
                    "[[path_mapping]]\nfrom = \"{from}\"\nto = \"{}{under}\"\n\n",
                    self.mount_point().display()
                ))
                .collect::<String>(),
        );
        std::fs::write(&path, toml).unwrap();
        path
    }

    fn command(&self) -> Command {
        let conn = self.s3.connection();
        let mut cmd = Command::new(workspace_bin("runner"));
        cmd.arg("run")
            .arg("--config")
            .arg(self.config())
            .env("TEST_S3_KEY", &conn.access_key)
            .env("TEST_S3_SECRET", conn.secret_key.expose())
            .env("TEST_PLEX_TOKEN", ACCOUNT_TOKEN)
            .env("PLEX_BURST_RCLONE", rclone_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self) -> Output {
        self.command().output().unwrap()
    }

    fn object(&self, key: &str) -> PathBuf {
        self.s3.data_dir().join(BUCKET).join(key)
    }

    fn status(&self) -> serde_json::Value {
        let path = self.object(&format!("runs/{}/status.json", self.run_id));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.work_dir().join("checkpoint.json")).unwrap())
            .unwrap()
    }

    fn phase_output(&self, phase: &str) -> serde_json::Value {
        let ckpt = self.checkpoint();
        ckpt["done"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["phase"] == phase)
            .unwrap_or_else(|| panic!("phase {phase} not done: {ckpt}"))["output"]
            .clone()
    }

    /// Nothing of the run is left behind: no mount, no Plex.
    fn assert_clean(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mp = self.mount_point().display().to_string();
        assert!(!mounts.contains(&mp), "the media mount is still there");
        let work = self.work_dir().display().to_string();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                assert!(
                    !(cmdline.contains("plex-double server") && cmdline.contains(&work)),
                    "the Plex double still runs: {cmdline}"
                );
            }
        }
    }
}

/// Polls `probe` on the JSON file at `path` until it gives a value, while
/// the runner `child` still runs; `what` names the awaited event.
/// systemd's notification socket, as the runner's unit has it: records
/// what the runner says, and when.
struct NotifySocket {
    path: PathBuf,
    said: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = said.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut said = into.lock().unwrap();
                for line in text.lines() {
                    said.push((Instant::now(), line.to_owned()));
                }
            }
        });
        NotifySocket {
            path: path.to_owned(),
            said,
        }
    }

    /// Ready, the watchdog set to `interval`, then fed throughout: no
    /// silence as long as the interval from the arming to the end.
    fn assert_watchdog_fed(&self, interval: Duration) {
        let said = self.said.lock().unwrap().clone();
        let lines: Vec<&str> = said.iter().map(|(_, l)| l.as_str()).collect();
        let ready = lines.iter().position(|l| *l == "READY=1");
        let armed = lines
            .iter()
            .position(|l| *l == format!("WATCHDOG_USEC={}", interval.as_micros()));
        assert!(
            ready.is_some() && armed.is_some() && ready < armed,
            "not ready, then armed at {interval:?}: {lines:?}"
        );
        let beats: Vec<Instant> = said[armed.unwrap()..]
            .iter()
            .filter(|(_, l)| l == "WATCHDOG=1")
            .map(|(at, _)| *at)
            .collect();
        let (first, last) = (said[armed.unwrap()].0, said.last().unwrap().0);
        let longest = beats
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain([beats[0] - first, last - *beats.last().unwrap()])
            .max()
            .unwrap();
        eprintln!(
            "{} watchdog beats; the longest silence {longest:?} (watchdog {interval:?})",
            beats.len()
        );
        assert!(beats.len() >= 10, "{lines:?}");
        assert!(longest < interval, "silent for {longest:?}: {lines:?}");
    }
}

fn wait_for<T>(
    child: &mut Child,
    path: &Path,
    what: &str,
    probe: impl Fn(&serde_json::Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| probe(&v));
        if let Some(v) = value {
            return v;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the runner ended before {what}"
        );
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn count(db: &Path, sql: &str) -> u64 {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// Live tracks of the libraries (theme songs, tracks of the hidden section
/// -2, are Plex's own: never scanned as media nor Sonic-analysed).
const LIVE_TRACKS: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
     AND library_section_id IN (SELECT id FROM library_sections)";
const ANALYSED: &str = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
     AND library_section_id IN (SELECT id FROM library_sections) AND extra_data LIKE '%musicAnalysisVersion%'";

#[test]
fn a_delta_run_scans_new_media_and_completes_sonic() {
    let mut w = World::new("sup-full", spec(10_000), true);
    // The user is told how it goes: a webhook and a private ntfy topic.
    let receiver = Receiver::start();
    w.extra = format!(
        "\n[[notify]]\nkind = \"webhook\"\nurl = \"{}\"\n\n[[notify]]\nkind = \"ntfy\"\nurl = \"{}\"\ntoken_env = \"TEST_NTFY_TOKEN\"\nevents = [\"done\", \"failed\"]\n",
        receiver.url("/webhook/run"),
        receiver.url("/ntfy/private-run")
    );
    w.env.push(("TEST_NTFY_TOKEN".into(), NTFY_TOKEN.into()));
    let (new_tracks, new_movies) = w.add_new_media();
    // Run as systemd would: its notifications go to a socket of ours.
    let systemd = NotifySocket::bind(&w.dir.path().join("notify.sock"));
    let out = w
        .command()
        .env("NOTIFY_SOCKET", &systemd.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Sonic phase: done"), "{report}");
    assert!(w.object("runs/sup-full/DONE").is_file());
    systemd.assert_watchdog_fed(Duration::from_secs(WATCHDOG_SECS));

    let db = w.work_db();
    assert_eq!(count(&db, LIVE_TRACKS), 10_000 + new_tracks);
    assert_eq!(
        count(&db, ANALYSED),
        10_000 + new_tracks,
        "Sonic is not at 100%"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL"
        ),
        40 + new_movies
    );
    let preflight = &w.phase_output("scan")["preflight"];
    assert_eq!(preflight["anchors_total"], 8, "{preflight}");
    assert_eq!(preflight["missing"], 0, "{preflight}");
    let sonic = w.phase_output("sonic");
    assert_eq!(sonic["outcome"], "done", "{sonic}");
    assert_eq!(sonic["analysed_before"], 2000, "{sonic}");
    let status = w.status();
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["sonic"]["analysed"], 10_000 + new_tracks, "{status}");
    // The manifest carries the stats before and after, and the Sonic outcome.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.object("runs/sup-full/result/plex-db.manifest.json")).unwrap(),
    )
    .unwrap();
    let stats = &manifest["stats"];
    assert_eq!(stats["before"]["sonic"]["analysed"], 2000, "{stats}");
    assert_eq!(
        stats["after"]["sonic"]["analysed"],
        10_000 + new_tracks,
        "{stats}"
    );
    assert_eq!(stats["sonic"]["outcome"], "done", "{stats}");

    // The account token served the claim and nothing else: removing the
    // server from the account's devices is home's (bootstrap fetch).
    let calls = w.plextv.calls();
    assert!(calls.contains("/api/claim/token.json"), "{calls}");
    assert!(!calls.contains("/devices"), "{calls}");
    // rclone logged to its own file, and no secret reached it.
    let rclone_log = std::fs::read_to_string(w.work_dir().join("logs/rclone.log")).unwrap();
    let secret = w.s3.connection().secret_key.expose().to_string();
    assert!(!rclone_log.contains(&secret));
    assert!(
        !report.contains(ACCOUNT_TOKEN)
            && !String::from_utf8_lossy(&out.stderr).contains(ACCOUNT_TOKEN)
    );
    // Every event reached the webhook, in the run's order, and the ntfy
    // topic only those it asked for; all were sent before the runner ended.
    let got = receiver.received();
    let events: Vec<String> = got
        .iter()
        .filter(|r| r.service == "webhook")
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("started"),
        "{events:?}"
    );
    assert_eq!(
        events.get(1).map(String::as_str),
        Some("scan_done"),
        "{events:?}"
    );
    assert!(
        events[2..events.len() - 1]
            .iter()
            .all(|e| e == "sonic_progress")
            && events.len() >= 4,
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("done"),
        "{events:?}"
    );
    let scan_done = got
        .iter()
        .find(|r| r.service == "webhook" && r.json()["event"] == "scan_done")
        .unwrap()
        .json();
    let music = scan_done["details"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["library"] == "Music")
        .unwrap()
        .clone();
    // Tracks, and the albums and artist they brought.
    assert!(
        music["items_added"].as_u64().unwrap() > new_tracks,
        "{scan_done}"
    );
    let ntfy: Vec<_> = got.iter().filter(|r| r.service == "ntfy").collect();
    assert_eq!(ntfy.len(), 1, "ntfy asked for done and failed only");
    assert_eq!(ntfy[0].status, 200, "{}", ntfy[0].text());
    assert!(
        ntfy[0].text().ends_with("Next: bootstrap fetch sup-full"),
        "{}",
        ntfy[0].text()
    );
    let logs = format!(
        "{report}{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(w.work_dir().join("logs/runner.log")).unwrap()
    );
    assert!(!logs.contains(NTFY_TOKEN), "the ntfy token reached a log");

    // The report page: every notification links to it by a presigned URL
    // that fetches it with plain HTTP; a real browser draws it at a
    // phone's width with one curve point per Sonic sample.
    let page_file = w.object("runs/sup-full/report.html");
    let page = std::fs::read_to_string(&page_file).unwrap();
    assert!(page.contains("<span class=\"state succeeded\">"), "{page}");
    for r in got.iter().filter(|r| r.service == "webhook") {
        let event = r.json();
        let link = event["link"]
            .as_str()
            .unwrap_or_else(|| panic!("no link: {event}"));
        assert!(link.contains("/runs/sup-full/report.html?"), "{link}");
    }
    // The end's notification (the last of the webhook's; ntfy's is text).
    let done = got.iter().rfind(|r| r.service == "webhook").unwrap().json();
    let link = done["link"].as_str().unwrap().to_owned();
    let fetched = plex_burst_tests::http::get(&link, &[]).unwrap();
    assert_eq!(fetched.status, 200, "{}", fetched.body);
    assert_eq!(fetched.body, page, "the link serves the page as written");
    assert!(
        fetched
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        fetched.headers
    );
    let samples = runner::run::curve::Curve::read(&w.work_dir().join("sonic.jsonl")).len();
    assert!(samples >= 2, "Sonic was sampled as it went: {samples}");
    render_at_phone_width(&page_file, samples);
    w.assert_clean();
}

/// The report page in headless Chromium at a phone's width: no console
/// message, nothing loaded beside it, one curve point per Sonic sample,
/// nothing wider than the screen.
fn render_at_phone_width(page: &Path, samples: usize) {
    let Some(browser) = Browser::phone() else {
        return;
    };
    browser.open(page);
    let seen = browser.eval(
        "const curve = document.getElementById('sonic-curve');
         return {
           width: window.innerWidth,
           scroll: document.documentElement.scrollWidth,
           points: curve ? curve.points.numberOfItems : -1,
           scripts: document.scripts.length,
           loaded: performance.getEntriesByType('resource').map(e => e.name),
           title: document.title,
         };",
    );
    let console = browser.console();
    assert!(console.is_empty(), "the page logged: {console:#?}");
    assert_eq!(seen["width"], PHONE_WIDTH, "the phone's viewport: {seen}");
    assert!(
        seen["scroll"].as_u64().unwrap() <= PHONE_WIDTH,
        "the page is wider than the phone: {seen}"
    );
    assert_eq!(seen["points"], samples as u64, "{seen}");
    assert_eq!(seen["scripts"], 0, "{seen}");
    assert_eq!(
        seen["loaded"],
        serde_json::json!([]),
        "self-contained: {seen}"
    );
    assert!(
        seen["title"].as_str().unwrap().contains("succeeded"),
        "{seen}"
    );
    // The console is really watched: an error logged now is seen.
    browser.eval("console.error('plex-burst probe'); return null;");
    let console = browser.console();
    assert!(
        console
            .iter()
            .any(|l| l.starts_with("SEVERE") && l.contains("plex-burst probe")),
        "{console:?}"
    );
}

#[test]
fn a_degraded_mount_is_refused_before_plex_touches_the_db() {
    let mut w = World::new("sup-degraded", spec(300), true);
    let proxy = FaultProxy::start(w.s3.addr()).unwrap();
    // Listing works; every read of a media object hangs (lessons.md 1).
    proxy.set(Some(
        Plan::new(Fault::Stall(Duration::from_secs(600)), When::Always)
            .matching(&format!("GET /{MEDIA}/")),
    ));
    w.media_endpoint = Some(proxy.endpoint());
    let out = w.run();
    assert!(
        !out.status.success(),
        "the run should have failed:\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("media mount is not healthy, Plex was not started"),
        "{err}"
    );
    let status = w.status();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["phase"], "scan");
    // Plex never ran: no identity was created, the DB is the reference's.
    let app = w
        .work_db()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(!app.join("Preferences.xml").exists());
    assert_eq!(count(&w.work_db(), LIVE_TRACKS), 300);
    assert!(!w.object("runs/sup-degraded/DONE").exists());
    w.assert_clean();
}

#[test]
fn a_scan_that_loses_items_quarantines_the_run() {
    let w = World::new("sup-quarantine", spec(300), true);
    // A third of the movies vanished from the bucket since the reference.
    let movies = find(&w.media_bucket().join("Movies"), "mkv");
    for m in movies.iter().take(15) {
        std::fs::remove_file(m).unwrap();
    }
    let out = w.run();
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected a quarantined run:\n{}",
        text(&out)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("QUARANTINED"), "{report}");
    assert!(
        report.contains("\"Movies\" lost 15 of 40 movies"),
        "{report}"
    );
    assert!(w.object("runs/sup-quarantine/QUARANTINED").is_file());
    assert!(
        w.object("runs/sup-quarantine/quarantine/plex-db.tar.zst")
            .is_file()
    );
    assert!(!w.object("runs/sup-quarantine/DONE").exists());
    assert!(
        !w.object("runs/sup-quarantine/result/plex-db.tar.zst")
            .exists()
    );
    assert_eq!(w.status()["state"], "quarantined");
    // Trash was never emptied: the lost movies are still rows, marked.
    assert_eq!(
        count(
            &w.work_db(),
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NOT NULL"
        ),
        15
    );
    // Sonic never ran on a quarantined DB.
    assert!(
        w.phase_output("sonic")["skipped"]
            .as_str()
            .unwrap()
            .contains("quarantined")
    );
    w.assert_clean();
}

#[test]
fn without_plex_pass_sonic_is_skipped_with_a_report_line() {
    let w = World::new("sup-nopass", spec(300), false);
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("no active Plex Pass"), "{report}");
    assert_eq!(count(&w.work_db(), ANALYSED), 60);
    w.assert_clean();
}

#[test]
fn a_stuck_activity_ends_the_scan_with_the_reason() {
    let mut w = World::new("sup-stuck", spec(300), true);
    w.env
        .push(("PLEX_DOUBLE_FAULT".into(), "stuck-activity".into()));
    let out = w.run();
    assert!(
        !out.status.success(),
        "the run should have failed:\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stalled: no progress for"), "{err}");
    w.assert_clean();
}

#[test]
fn a_plex_version_other_than_the_pinned_one_is_refused() {
    let mut w = World::new("sup-version", spec(300), true);
    w.env
        .push(("PLEX_DOUBLE_VERSION".into(), "1.42.0.9999-abcdef012".into()));
    let out = w.run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "reports version 1.42.0.9999-abcdef012 but the run is pinned to 1.41.3.9314-a0bfb8370"
        ),
        "{err}"
    );
    w.assert_clean();
}

#[test]
fn plex_slow_to_start_and_answering_5xx_bursts_is_waited_for() {
    let mut w = World::new("sup-flaky", spec(300), true);
    w.env.push((
        "PLEX_DOUBLE_FAULT".into(),
        "slow-start=4s,burst-5xx=3@6s".into(),
    ));
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    assert!(w.object("runs/sup-flaky/DONE").is_file());
    w.assert_clean();
}

#[test]
fn sigterm_stops_plex_and_the_mount_and_a_restart_finishes() {
    let mut w = World::new("sup-sigterm", spec(2_000), true);
    // Slow Sonic, so that the signal lands in the middle of it.
    w.env[0].1 = "100".into();
    let mut child = w
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &mut child,
        &w.object("runs/sup-sigterm/status.json"),
        "Sonic under way",
        |s| s["sonic"]["analysed"].as_u64().filter(|a| *a > 400),
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped by SIGTERM during phase sonic"));
    w.assert_clean();
    let analysed = count(&w.work_db(), ANALYSED);
    assert!(analysed > 400, "Sonic work was lost: {analysed}");

    w.env[0].1 = "5000".into();
    let out = w.run();
    assert!(
        out.status.success(),
        "the restarted runner failed:\n{}",
        text(&out)
    );
    assert_eq!(count(&w.work_db(), ANALYSED), 2_000);
    let sonic = w.phase_output("sonic");
    assert!(
        sonic["analysed_before"].as_u64().unwrap() >= analysed,
        "{sonic}"
    );
    w.assert_clean();
}

#[test]
fn a_plex_that_keeps_crashing_fails_the_run_clearly() {
    let mut w = World::new("sup-crash", spec(300), true);
    w.env
        .push(("PLEX_DOUBLE_FAULT".into(), "crash-on-scan".into()));
    let out = w.run();
    assert!(
        !out.status.success(),
        "the run should have failed:\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("after 3 restarts"), "{err}");
    assert!(err.contains("--- Plex logs ---"), "no diagnostics: {err}");
    assert_eq!(w.status()["state"], "failed");
    w.assert_clean();
}

#[test]
fn a_replacement_instance_continues_sonic_from_the_last_snapshot() {
    let mut w = World::new("sup-replace", spec(3_000), true);
    w.env[0].1 = "60".into();
    w.extra = "snapshot_interval = \"3s\"\n".into();
    let mut child = w
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mirrored = w.object("runs/sup-replace/checkpoint/checkpoint.json");
    let snapshot_analysed = wait_for(&mut child, &mirrored, "a snapshot", |c| {
        c["snapshot"]["analysed"].as_u64().filter(|a| *a > 600)
    });
    // The instance dies: nothing of it survives but what is in S3.
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = Command::new("pkill")
        .args([
            "-f",
            &format!("rclone mount .* {}", w.mount_point().display()),
        ])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("fusermount3")
        .arg("-uz")
        .arg(w.mount_point())
        .status();
    std::fs::remove_dir_all(w.work_dir()).unwrap();

    w.env[0].1 = "5000".into();
    let out = w.run();
    assert!(
        out.status.success(),
        "the replacement run failed:\n{}",
        text(&out)
    );
    assert_eq!(w.phase_output("boot")["from_snapshot"], true);
    let sonic = w.phase_output("sonic");
    assert!(
        sonic["analysed_before"].as_u64().unwrap() >= snapshot_analysed,
        "Sonic started over: {sonic}"
    );
    assert_eq!(count(&w.work_db(), ANALYSED), 3_000);
    // The baseline of the guard is still the reference's.
    assert_eq!(
        w.phase_output("verify")["stats_before"]["sonic"]["analysed"],
        600
    );
    assert!(w.object("runs/sup-replace/DONE").is_file());
    w.assert_clean();
}

/// Pads the library DB at `db` with `mib` MiB of rows that compress about
/// nine to one, as Plex DBs do.
fn pad(db: &Path, mib: u64) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE burst_padding(b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO burst_padding SELECT randomblob(100) || zeroblob(924) FROM n;",
        rows = mib * 1024
    ))
    .unwrap();
}

/// A snapshot as the test saw it appear: a copy of its archive, the count
/// the runner recorded before taking it, and the live DB's count after.
struct SeenSnapshot {
    archive: PathBuf,
    recorded: u64,
    live_after: u64,
}

/// Copies each snapshot of the run `w` into `copies` as it appears, until
/// `done`.
fn watch_snapshots(w: &World, copies: &Path, done: &AtomicBool) -> Vec<SeenSnapshot> {
    let mirrored = w.object(&format!("runs/{}/checkpoint/checkpoint.json", w.run_id));
    let archive = w.object(&format!("runs/{}/checkpoint/plex-db.tar.zst", w.run_id));
    let mut seen = Vec::new();
    let mut last_taken = None;
    while !done.load(Ordering::SeqCst) {
        let record = std::fs::read(&mirrored)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|c| c["snapshot"].clone())
            .filter(|s| !s.is_null());
        if let Some(record) = record
            && last_taken.as_ref() != Some(&record["taken_at"])
        {
            // The archive is uploaded before the checkpoint naming it, and
            // the next one a snapshot interval later.
            let copy = copies.join(format!("{}.tar.zst", seen.len()));
            std::fs::copy(&archive, &copy).unwrap();
            let live = runner::plexdb::open_read_only(&w.work_db()).unwrap();
            let live_after: i64 = live.query_row(ANALYSED, [], |r| r.get(0)).unwrap();
            last_taken = Some(record["taken_at"].clone());
            seen.push(SeenSnapshot {
                archive: copy,
                recorded: record["analysed"].as_u64().unwrap(),
                live_after: live_after as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

#[test]
fn snapshots_of_a_big_db_are_taken_while_sonic_writes() {
    let (s3, dir) = (S3Server::start(), tempfile::tempdir().unwrap());
    let spec = spec(3_000);
    let app = write_app_support(&dir.path().join("home"), &spec).unwrap();
    // 50 MiB of 1 KiB pages: a backup in steps of 1024 pages with 5 ms
    // pauses gets through about 16 MiB between two of Sonic's writes.
    pad(&app.library_db, 50);
    write_media_tree(&s3.data_dir().join(MEDIA), &spec).unwrap();
    let mut w = World::with_reference(s3, dir, &app.dir, "sup-snapshots", true);
    // Sonic writes every 100 ms tick for about 40 s.
    w.env[0].1 = "60".into();
    w.extra = "snapshot_interval = \"3s\"\n".into();
    let copies = w.dir.path().join("snapshots");
    std::fs::create_dir(&copies).unwrap();
    let child = w
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = AtomicBool::new(false);
    let (out, seen) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| watch_snapshots(&w, &copies, &done));
        let out = output_within(child, &w, HANG_GUARD);
        done.store(true, Ordering::SeqCst);
        (out, watcher.join().unwrap())
    });
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let sonic = w.phase_output("sonic");
    assert_eq!(sonic["outcome"], "done", "{sonic}");
    assert!(
        sonic["snapshots"].as_u64().unwrap() >= 2 && seen.len() >= 2,
        "snapshots taken during Sonic: {sonic}, seen: {}",
        seen.len()
    );
    for (i, snapshot) in seen.iter().enumerate() {
        let dest = copies.join(format!("{i}"));
        let archive = std::fs::File::open(&snapshot.archive).unwrap();
        runner::archive::unpack(archive, &dest, &Default::default()).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| n.ends_with(".db")),
            "snapshot {i} holds {names:?}"
        );
        let db = dest.join("com.plexapp.plugins.library.db");
        runner::plexdb::integrity::check(&db, None)
            .unwrap_or_else(|e| panic!("snapshot {i} is not sound: {e}"));
        let analysed = count(&db, ANALYSED);
        assert!(
            snapshot.recorded <= analysed && analysed <= snapshot.live_after,
            "snapshot {i} holds {analysed} analysed tracks, recorded {} before it and {} live after",
            snapshot.recorded,
            snapshot.live_after
        );
    }
    // Taken mid-Sonic: the first one does not hold the finished count.
    assert!(
        seen[0].live_after < 3_000,
        "the first snapshot came after Sonic"
    );
    w.assert_clean();
}

/// metadata_types of Plex's schema.
const MOVIE: i64 = 1;
const ARTIST: i64 = 8;
const ALBUM: i64 = 9;
const TRACK: i64 = 10;

/// Items of each (library, metadata_type) in `db`: live ones only, or
/// every row (live or marked unavailable) with `all_rows`.
fn items_by_library(db: &Path, all_rows: bool) -> BTreeMap<(String, i64), u64> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let live = if all_rows {
        ""
    } else {
        "AND mi.deleted_at IS NULL"
    };
    conn.prepare(&format!(
        "SELECT ls.name, mi.metadata_type, count(*) FROM metadata_items mi
         JOIN library_sections ls ON ls.id = mi.library_section_id
         WHERE 1 {live} GROUP BY 1, 2"
    ))
    .unwrap()
    .query_map([], |r| {
        Ok(((r.get(0)?, r.get(1)?), r.get::<_, i64>(2)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The runner's own log of its runs (the journal's copy, without colours).
fn runner_log(w: &World) -> String {
    std::fs::read_to_string(w.work_dir().join("logs/runner.log")).unwrap()
}

/// The Plex double's log, while Plex may still write it (empty before).
fn plex_log_so_far(w: &World) -> String {
    let db = w.work_db();
    let app = db.ancestors().nth(3).unwrap();
    std::fs::read_to_string(app.join("Logs/Plex Media Server.log")).unwrap_or_default()
}

/// Waits until the Plex double's log has a line containing `line`.
fn wait_for_plex_log(child: &mut Child, w: &World, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !plex_log_so_far(w).contains(line) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the runner ended before Plex logged {line:?}"
        );
        assert!(Instant::now() < deadline, "Plex never logged {line:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runner's output, within a hang guard: past it the runner, its
/// rclone and its Plex are killed (a hung rclone first, which frees Plex's
/// reads) and the test fails.
fn output_within(child: Child, w: &World, guard: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(guard) {
        Ok(out) => {
            waiter.join().unwrap().unwrap();
            out
        }
        Err(_) => {
            let mount = w.mount_point().display().to_string();
            let work = w.work_dir().display().to_string();
            for (pattern, what) in [
                (format!("rclone mount .* {mount}"), "rclone"),
                (format!("plex-double server .*{work}"), "the Plex double"),
            ] {
                let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
                eprintln!("hang guard: killed {what}");
            }
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().unwrap();
            let _ = Command::new("fusermount3").arg("-uz").arg(&mount).status();
            panic!(
                "the runner did not end within {}: killed\n{}\n--- runner log\n{}",
                humantime::format_duration(guard),
                text(&out),
                runner_log(w)
            );
        }
    }
}

/// Generous: a run of these tests takes under two minutes.
const HANG_GUARD: Duration = Duration::from_secs(600);

/// Checks the scan phase's record of each library: scanned on `remounts`
/// fresh mounts (Music) and passed by the deletion guard with no loss.
fn assert_scans_passed(w: &World, music_remounts: u64) {
    let scan = w.phase_output("scan");
    assert!(scan["quarantine"].is_null(), "{scan}");
    let libraries = scan["libraries"].as_array().unwrap();
    let titles: Vec<&str> = libraries
        .iter()
        .map(|l| l["library"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Music", "Movies", "TV Shows", "Photos"], "{scan}");
    for library in libraries {
        let remounts = if library["library"] == "Music" {
            music_remounts
        } else {
            0
        };
        assert_eq!(library["remounts"], remounts, "{library}");
        assert_eq!(library["guard"]["passed"], true, "{library}");
        assert_eq!(
            library["guard"]["losses"],
            serde_json::json!([]),
            "{library}"
        );
    }
    let log = runner_log(w);
    for title in titles {
        assert!(
            log.contains(&format!(
                "deletion guard: {title:?} passed (0 losses within the limits)"
            )),
            "no guard decision for {title}\n{log}"
        );
    }
    let package = w.phase_output("package");
    assert_eq!(package["guard"]["passed"], true, "{package}");
    assert_eq!(
        package["guard"]["losses"],
        serde_json::json!([]),
        "{package}"
    );
    assert!(package["quarantine"].is_null(), "{package}");
}

/// rclone killed under Plex's scan of Music: the product's one answer is
/// the health check's "mount failure", Plex's work paused, one remount, and
/// the library scanned again on the new mount, which makes available again
/// what the scan over the dead mount marked unavailable. Every library
/// then holds what an uninterrupted run gives, the guard passes them all,
/// and the run publishes. The runner probes only once the scan is over
/// here (the probe during a scan is the next test's): a scan that ended
/// over a dead mount is never trusted.
#[test]
fn rclone_killed_during_a_scan_is_remounted_and_the_library_scanned_again() {
    let mut w = World::new("sup-killmount", spec(5_000), true);
    w.health_interval = "1h";
    w.extra = "\n[phases]\nsonic = false\n".into();
    // The uninterrupted result: the reference and what is new in the bucket.
    let mut expected = items_by_library(&w.reference_db, false);
    let (new_tracks, new_movies) = w.add_new_media();
    for (key, added) in [
        (("Music".to_string(), ARTIST), 1),
        (("Music".to_string(), ALBUM), 1),
        (("Music".to_string(), TRACK), new_tracks),
        (("Movies".to_string(), MOVIE), new_movies),
    ] {
        *expected.get_mut(&key).unwrap() += added;
    }
    let mut child = w
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_plex_log(&mut child, &w, "Scanner: scanning section 1 'Music'");
    // rclone dies under Plex's scan: reads now fail with ENOTCONN.
    let killed = Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!("rclone mount .* {}", w.mount_point().display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "no rclone to kill");
    let out = output_within(child, &w, HANG_GUARD);
    assert!(out.status.success(), "the run failed:\n{}", text(&out));

    // The fault hit: the scan over the dead mount marked Music's tracks
    // unavailable, and the scan on the new mount brought them back.
    let plex = plex_log(&w);
    let music_scans: Vec<&str> = plex
        .lines()
        .filter(|l| l.contains("Scanner: section 1 'Music' done:"))
        .collect();
    assert_eq!(music_scans.len(), 2, "{music_scans:#?}");
    let marked = |line: &str| -> u64 {
        let (head, _) = line.split_once(" marked unavailable").unwrap();
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(marked(music_scans[0]) > 0, "{}", music_scans[0]);
    assert!(
        music_scans[1].contains(&format!(
            "{new_tracks} added, {} restored, 0 marked unavailable",
            marked(music_scans[0])
        )),
        "{}",
        music_scans[1]
    );

    // What the runner said: the probe's verdict, the pause, one remount.
    let mp = w.mount_point().display().to_string();
    let log = runner_log(&w);
    let unhealthy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("media mount unhealthy"))
        .collect();
    eprintln!("the runner said: {}", unhealthy.join("\n"));
    assert_eq!(unhealthy.len(), 1, "{log}");
    assert!(
        unhealthy[0].contains(&format!(
            "mount {mp} mount failure: read 0/8 anchor files (need 6)"
        )) && unhealthy[0].contains("rclone is not running")
            && unhealthy[0].ends_with("; pausing Plex and remounting"),
        "{}",
        unhealthy[0]
    );
    assert_eq!(log.matches("remounting the media").count(), 1, "{log}");
    assert!(
        log.contains(&format!("remounted: mount {mp} healthy")),
        "{log}"
    );

    // Every library as the uninterrupted run leaves it, nothing left
    // marked unavailable, the guard's verdicts, and the result published.
    assert_eq!(items_by_library(&w.work_db(), false), expected);
    assert_eq!(items_by_library(&w.work_db(), true), expected);
    assert_scans_passed(&w, 1);
    assert_eq!(w.status()["state"], "succeeded");
    assert!(w.status()["quarantine"].is_null());
    assert!(w.object("runs/sup-killmount/DONE").is_file());
    assert!(!w.object("runs/sup-killmount/QUARANTINED").exists());
    w.assert_clean();
}

/// A mount that degrades under a scan: listings still answer from rclone's
/// dir cache, but every object read hangs (the files read before are
/// still served from rclone's VFS cache). The health check during the
/// scan calls it degraded, pauses Plex and remounts; the reads still hang
/// on every new mount, so the scan phase fails with that one-line reason
/// after three attempts. The guard never judges a scan that did not end,
/// nothing is published, the DB is sound and keeps every item. Once the
/// bucket answers again a restart resumes at the scan and publishes every
/// library whole.
#[test]
fn a_mount_whose_reads_hang_during_a_scan_fails_the_scan_and_a_restart_finishes() {
    let mut w = World::new("sup-degrading", spec(2_000), true);
    let proxy = FaultProxy::start(w.s3.addr()).unwrap();
    w.media_endpoint = Some(proxy.endpoint());
    w.extra = "\n[phases]\nsonic = false\n".into();
    let expected = items_by_library(&w.reference_db, false);
    let mut child = w
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_plex_log(&mut child, &w, "Scanner: scanning section 1 'Music'");
    // Object GETs hang; listings (`GET /media?...`) still answer.
    proxy.set(Some(
        Plan::new(Fault::Stall(HANG_GUARD), When::Always).matching(&format!("GET /{MEDIA}/")),
    ));
    let out = output_within(child, &w, HANG_GUARD);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(proxy.counts().injected > 0, "no read met the fault");

    // The reason, on the last line of stderr.
    let mp = w.mount_point().display().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.lines().last().unwrap();
    eprintln!("the run failed with: {reason}");
    let degraded = format!("mount {mp} degraded: read 0/8 anchor files (need 6); ");
    for part in [
        format!("error: phase scan failed: the media mount failed ({degraded}"),
        "but the bucket gave no answer within 3s".to_string(),
        format!(
            ") and could not be remounted: remount of {mp} failed after 3 attempts; last: {degraded}"
        ),
    ] {
        assert!(reason.contains(&part), "{part:?} not in\n{reason}");
    }
    let status = w.status();
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["phase"], "scan", "{status}");

    // The health check's decisions: degraded during the scan, Plex paused,
    // three remounts that stayed degraded.
    let log = runner_log(&w);
    assert!(
        log.lines().any(
            |l| l.contains(&format!("media mount unhealthy: {degraded}"))
                && l.ends_with("; pausing Plex and remounting")
        ),
        "{log}"
    );
    assert_eq!(log.matches("remounting the media").count(), 3, "{log}");
    // No scan ended, so the guard judged none, and nothing was offered.
    assert!(!log.contains("deletion guard"), "{log}");
    assert!(!w.object("runs/sup-degrading/DONE").exists());
    assert!(!w.object("runs/sup-degrading/QUARANTINED").exists());
    w.assert_clean();
    // The DB is sound and holds every item (Plex may have marked some
    // unavailable before it was paused, never deleted one).
    let db = w.work_db();
    runner::plexdb::integrity::check(&db, None).expect("the DB passes the check");
    assert_eq!(items_by_library(&db, true), expected);

    // The bucket answers again: the restart resumes at the scan.
    proxy.set(None);
    let child = w
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, &w, HANG_GUARD);
    assert!(out.status.success(), "the restart failed:\n{}", text(&out));
    assert!(
        runner_log(&w).contains("resuming from the checkpoint run=sup-degrading resume_at=scan"),
        "{}",
        runner_log(&w)
    );
    assert_eq!(items_by_library(&w.work_db(), false), expected);
    assert_eq!(items_by_library(&w.work_db(), true), expected);
    assert_scans_passed(&w, 0);
    assert_eq!(w.status()["state"], "succeeded");
    assert!(w.object("runs/sup-degrading/DONE").is_file());
    w.assert_clean();
}

/// A delta run whose reference is the user's tar.gz of a DB that a real
/// Plex 1.41 wrote (a music library): verify, remap, scan and Sonic go
/// through, the result passes the check and loses nothing.
/// The Plex double's own log of a finished run.
fn plex_log(w: &World) -> String {
    let db = w.work_db();
    let app = db.ancestors().nth(3).unwrap();
    std::fs::read_to_string(app.join("Logs/Plex Media Server.log")).unwrap()
}

#[test]
fn a_deep_scan_scans_each_top_folder_and_never_refreshes_metadata() {
    let mut w = World::new("sup-deep", spec(300), true);
    let (new_tracks, _) = w.add_new_media();
    w.extra = "\n[phases]\ndeep_scan = true\nsonic = false\n".into();
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let log = plex_log(&w);
    // force=1 is Plex's "Refresh All Metadata": hours of downloads on a
    // real library, never part of a scan.
    assert!(!log.contains("force=1"), "{log}");
    assert!(!log.contains("refreshing all metadata"), "{log}");
    // Every artist folder of the bucket, as Plex saw it under the mount.
    let music = w.mount_point().join("Music");
    let mut artists: Vec<String> = std::fs::read_dir(w.media_bucket().join("Music"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| music.join(p.file_name().unwrap()).display().to_string())
        .collect();
    artists.sort();
    assert!(artists.len() > 1, "{artists:?}");
    for artist in &artists {
        assert!(
            log.contains(&format!("(force=0, path={artist})")),
            "no partial scan of {artist}\n{log}"
        );
    }
    let libraries = &w.phase_output("scan")["libraries"];
    let music_out = libraries
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["library"] == "Music")
        .unwrap();
    assert_eq!(music_out["folders"], artists.len(), "{libraries}");
    assert_eq!(count(&w.work_db(), LIVE_TRACKS), 300 + new_tracks);
    w.assert_clean();
}

#[test]
fn the_metadata_refresh_is_its_own_option_and_refreshes_every_item() {
    let mut w = World::new("sup-refresh", spec(300), true);
    w.extra = "\n[phases]\nrefresh_metadata = true\nsonic = false\n".into();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let log = plex_log(&w);
    let libraries = w.phase_output("scan")["libraries"].clone();
    for library in libraries.as_array().unwrap() {
        let section = library["section"].as_str().unwrap();
        assert!(
            log.contains(&format!("refreshing all metadata of section {section} ")),
            "{log}"
        );
        assert!(library["metadata_refresh_seconds"].is_number(), "{library}");
    }
    assert_eq!(
        count(
            &w.work_db(),
            &format!(
                "SELECT count(*) FROM metadata_items WHERE deleted_at IS NULL AND library_section_id > 0
                 AND (refreshed_at IS NULL OR refreshed_at < {started})"
            )
        ),
        0,
        "an item's metadata was not refreshed"
    );
    w.assert_clean();
}

#[test]
fn a_run_from_a_real_plex_db_completes_sonic_and_loses_nothing() {
    let real = real_dbs::version("1.41.1");
    let w = World::from_real_db("sup-real", &real);
    let reference = real.copy_into(&w.dir.path().join("reference-copy"));
    let items = count(
        &reference,
        "SELECT count(*) FROM metadata_items WHERE deleted_at IS NULL",
    );
    let tracks = count(&reference, LIVE_TRACKS);
    assert!(tracks > 0, "the real music library has tracks");
    assert_eq!(count(&reference, ANALYSED), 0);

    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    assert!(w.object("runs/sup-real/DONE").is_file());
    let verify = w.phase_output("verify");
    assert_eq!(verify["integrity"]["method"], "per_table", "{verify}");
    let package = w.phase_output("package");
    assert_eq!(package["guard"]["passed"], true, "{package}");
    assert!(
        package["integrity"]["order_not_verified"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{package}"
    );
    let db = w.work_db();
    runner::plexdb::integrity::check(&db, None).expect("the result passes the check");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE deleted_at IS NULL"
        ),
        items
    );
    assert_eq!(count(&db, ANALYSED), tracks, "Sonic is not at 100%");
    // Every media path now lies under the mount, in the stored form.
    let mount = w.mount_point().display().to_string();
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM media_parts WHERE file != '' AND substr(file, 1, {}) != '{mount}/'",
                mount.len() + 1
            )
        ),
        0
    );
    w.assert_clean();
}

#[test]
fn a_scratch_run_waits_out_plex_start_up_and_creates_its_libraries() {
    let mut w = World::new("sup-scratch", spec(300), true);
    let mount = w.mount_point().display().to_string();
    w.scratch = Some(format!(
        "[[library]]\ntitle = \"Music\"\ntype = \"artist\"\nlanguage = \"fr-FR\"\nlocations = [\"{mount}/Music\"]\n\n\
         [[library]]\ntitle = \"Movies\"\ntype = \"movie\"\nlanguage = \"fr-FR\"\nlocations = [\"{mount}/Movies\"]\n\n"
    ));
    // Longer than the claim takes, so that the first library write lands in it.
    w.env
        .push(("PLEX_DOUBLE_STARTUP_WINDOW".into(), "15s".into()));
    w.extra = "\n[phases]\nsonic = false\n".into();
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let app = w.work_db();
    let app = app.ancestors().nth(3).unwrap();
    let log = std::fs::read_to_string(app.join("Logs/Plex Media Server.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("POST /library/sections?") && l.ends_with("-> 400")),
        "the window never refused a write: the test proves nothing\n{log}"
    );
    let db = w.work_db();
    assert_eq!(count(&db, LIVE_TRACKS), 300);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL"
        ),
        40
    );
    assert!(w.object("runs/sup-scratch/DONE").is_file());
    w.assert_clean();
}

#[test]
fn a_scan_ends_only_once_plex_has_processed_the_new_items() {
    let mut w = World::new("sup-queue", spec(300), true);
    let (new_tracks, new_movies) = w.add_new_media();
    // Photos are scanned last: 10 new photos at 2 items a second keep the
    // queue busy for seconds after the last scan's activity ends.
    let photos = find(&w.media_bucket().join("Photos"), "jpg");
    let album = w.media_bucket().join("Photos/Nouvel Album");
    std::fs::create_dir_all(&album).unwrap();
    for i in 1..=10 {
        std::fs::copy(&photos[0], album.join(format!("IMG_{i:04}.jpg"))).unwrap();
    }
    w.env.push(("PLEX_DOUBLE_METADATA_RATE".into(), "2".into()));
    w.extra = "\n[phases]\nsonic = false\n".into();
    let out = w.run();
    assert!(out.status.success(), "runner failed:\n{}", text(&out));
    let db = w.work_db();
    assert_eq!(count(&db, LIVE_TRACKS), 300 + new_tracks);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL"
        ),
        40 + new_movies
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE refreshed_at IS NULL
             AND library_section_id IN (SELECT id FROM library_sections)"
        ),
        0,
        "Plex was stopped with items still in its metadata update queue"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 13 AND deleted_at IS NULL"
        ),
        80 + 10
    );
    w.assert_clean();
}
