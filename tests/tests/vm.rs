//! The image really boots: `bootstrap` bakes the base image (a stand-in of
//! Scaleway's Debian bookworm) with the real builder user data and
//! `image/provision.sh`, then launches runs whose user data it renders, each
//! booted in QEMU as Scaleway boots it (tests/vm/hypervisor.py, run by the
//! Scaleway double at poweron). The image runs Plex as production does, in
//! Docker: the recipe installs Debian's docker.io and loads a stand-in of
//! the pinned `plexinc/pms-docker` image (tests/src/plex_image.rs: the Plex
//! double inside, with the real image's contract) where Scaleway's builder
//! pulls the real one. In the guest, cloud-init reads the Scaleway
//! datasource from the metadata double at 169.254.42.42, systemd starts the
//! runner, which mounts the media with rclone, starts the Plex container,
//! uploads its result and terminates its own server through the API.
//!
//! Needs root, QEMU and the network namespace `scripts/vm-e2e` makes (it
//! runs this test inside it): see that script. Timings are printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::bootstrap_world::{
    HomePlex, bootstrap_command, ok_stdout, repo, run_key, shipped_logs, text,
};
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::plex_image;
use plex_burst_tests::plexdouble::harness::PlexTvDouble;
use plex_burst_tests::s3server::{ACCESS_KEY, S3Server};
use plex_burst_tests::scwdouble::harness::{ScwDouble, ScwOptions};
use serde_json::Value;
use tempfile::TempDir;

const BUCKET: &str = "plex-burst";
const MEDIA: &str = "media";
const ACCOUNT_TOKEN: &str = "account-token-for-the-vm-test-0123";
const TRACKS: u64 = 300;
/// Tracks the Plex double analyses per second in the guest: slow enough
/// that the hard reset lands in the Sonic phase.
const SONIC_RATE: &str = "4";
/// `deadlines.watchdog` of every run here: above the longest silent step
/// of a healthy run in the guest, short enough to test the freeze.
const WATCHDOG: &str = "60s";
/// What systemd logs (to the guest's console) when the watchdog fires.
const WATCHDOG_FIRED: &str = "plex-burst-runner.service: Watchdog timeout";
/// The guest's side of the test network (tests/vm/net.sh).
const GATEWAY: &str = "10.77.0.1";
/// Plex's user and group in the container (PLEX_UID/PLEX_GID): not the
/// runner's, so that ownership is seen to be set.
const PLEX_UID: u32 = 990;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this test through ./scripts/vm-e2e"))
}

fn spec() -> Spec {
    Spec {
        seed: 23,
        media_root: "/data/media".into(),
        libraries: vec![
            LibrarySpec::single("Music", LibraryKind::Music, TRACKS as u32, 0.3),
            LibrarySpec::single("Movies", LibraryKind::Movie, 12, 0.0),
        ],
    }
}

struct World {
    dir: TempDir,
    s3: S3Server,
    scw: ScwDouble,
    _plextv: PlexTvDouble,
    plextv_url: String,
    app_support: PathBuf,
    home: HomePlex,
    disks: PathBuf,
    inject: PathBuf,
    keys: Vec<(String, String)>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        // Two keys per launch (the run's, the media's) for its five
        // launches: the double hands them out, S3 accepts them.
        let keys: Vec<_> = (0..10).map(|_| run_key()).collect();
        let auth: Vec<String> = keys
            .iter()
            .flat_map(|(a, s)| ["--auth-key".to_string(), format!("{a},{s}")])
            .collect();
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let s3 = S3Server::start_with(&auth);
        s3.create_bucket(BUCKET);
        s3.create_bucket(MEDIA);
        write_media_tree(&s3.data_dir().join(MEDIA), &spec()).unwrap();

        let app = write_app_support(&dir.path().join("home"), &spec()).unwrap();
        let home = HomePlex::new(dir.path().join("home-ctl"), &app.dir);

        let disks = dir.path().join("disks");
        let inject = dir.path().join("inject");
        std::fs::create_dir_all(&disks).unwrap();
        // The sandboxing and the firewall as the guest has them, on its
        // console (the journal goes there), once the run's units started.
        write_tree(
            &inject,
            "etc/systemd/system/pb-test-show.service",
            "# The VM test shows the units' sandboxing and the firewall (not in the image).\n\
             [Unit]\nAfter=plex-burst-deadman.service plex-burst-firewall.service\n\
             [Service]\nType=oneshot\n\
             ExecStart=/bin/sh -c 'for u in plex-burst-runner plex-burst-deadman plex-burst-firewall; do \
             systemctl show -p ActiveState -p NoNewPrivileges -p ProtectSystem -p PrivateTmp \
             -p RestrictNamespaces -p StartLimitBurst $$u.service | tr \"\\\\n\" \" \" | sed \"s/^/pb-test: $$u /\"; echo; done; \
             nft list chain inet plex-burst input | grep -q \"policy drop\" && echo pb-test: input policy drop'\n",
        );
        let wants = inject.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/etc/systemd/system/pb-test-show.service",
            wants.join("pb-test-show.service"),
        )
        .unwrap();
        // A failure shows the guest's console: the journal goes there too.
        write_tree(
            &inject,
            "etc/systemd/journald.conf.d/pb-test-console.conf",
            "# The VM test's console shows the journal (not in the image).\n\
             [Journal]\nForwardToConsole=yes\nTTYPath=/dev/ttyS0\nMaxLevelConsole=info\n",
        );
        let hook = format!(
            "PB_VM_DISKS='{}' PB_VM_INJECT='{}' exec python3 '{}'",
            disks.display(),
            inject.display(),
            repo().join("tests/vm/hypervisor.py").display()
        );
        let scw = ScwDouble::start(ScwOptions {
            transition_delay: Duration::from_millis(500),
            on_poweron: Some(hook),
            metadata: true,
            metadata_listen: Some("169.254.42.42:80".into()),
            api_key_pool: keys.clone(),
            // The guest reaches S3 through Object Storage's access control.
            s3_front: Some((s3.addr().to_string(), ACCESS_KEY.to_owned())),
            ..ScwOptions::default()
        });
        let plextv = PlexTvDouble::start(ACCOUNT_TOKEN, &[]);
        let plextv_url = plextv.url("");
        let world = World {
            dir,
            s3,
            scw,
            _plextv: plextv,
            plextv_url,
            app_support: app.dir,
            home,
            disks,
            inject,
            keys,
        };
        world.write_config("1h", &world.rclone_sha256(), false);
        world.home.start();
        world
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("bootstrap.toml")
    }

    /// The sha256 of the rclone zip the guest's mirror serves.
    fn rclone_sha256(&self) -> String {
        let www = PathBuf::from(env("PB_VM_WWW"));
        let sha = std::fs::read_to_string(www.join("artifacts/rclone.zip.sha256")).unwrap();
        sha.trim().to_owned()
    }

    /// bootstrap.toml; `run_deadline` is `[run.deadlines] run`; a failed
    /// run's instance is kept when `keep_on_failure` (the dead-man ends it).
    fn write_config(&self, run_deadline: &str, rclone_sha256: &str, keep_on_failure: bool) {
        let toml = format!(
            r#"[scaleway]
organization_id = "{org}"
project_id = "{project}"
zone = "fr-par-1"
commercial_type = "DEV1-S"
root_volume_gb = 20
api_url = "{api}"
secret_key_env = "TEST_SCW_SECRET"
plex_token_env = "TEST_PLEX_TOKEN"
dead_man_grace = "20s"
keep_on_failure = {keep_on_failure}

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{BUCKET}"
path_style = true
access_key_env = "TEST_S3_KEY"
secret_key_env = "TEST_S3_SECRET"

[image]
runner_binary = "{runner}"
plex_image_archive = "{plex_image}"
rclone_url = "http://{GATEWAY}/artifacts/rclone.zip"
rclone_sha256 = "{rclone_sha256}"
build_timeout = "30m"

[home]
layout = "custom"
app_support_dir = "{app}"
control = "command"
stop_command = ["{home_plex}", "stop", "{ctl}"]
start_command = ["{home_plex}", "start", "{ctl}"]
url = "http://{addr}"
keep_backups = 2
plex_timeout = "30s"

[run]
mode = "delta"

[run.media]
remote = "{MEDIA}"
mount_point = "/mnt/media"
profile = "small"
probe_timeout = "20s"
health_interval = "30s"

[run.plex]
runtime = "docker"
plextv_url = "{plextv}"
claim = true
uid = {PLEX_UID}
gid = {PLEX_UID}

[run.plex.container_env]
# The double's settings (real Plex knows where plex.tv is).
PLEX_DOUBLE_PLEXTV_URL = "{plextv}"
PLEX_DOUBLE_SONIC_RATE = "{SONIC_RATE}"

[[run.path_mapping]]
from = "/data/media"
to = "/mnt/media"

[run.deadlines]
run = "{run_deadline}"
plex_ready = "3m"
poll_interval = "2s"
idle_checks = 2
stall_interval = "30s"
stall_checks = 6
snapshot_interval = "20s"
# Every run here is watched at this: a healthy run must never trip it.
watchdog = "{WATCHDOG}"
"#,
            org = self.scw.organization_id(),
            project = self.scw.project_id(),
            api = self.scw.api_url(),
            endpoint = self.scw.s3_front_url().unwrap(),
            runner = self.stripped("runner").display(),
            app = self.app_support.display(),
            home_plex = HomePlex::script().display(),
            ctl = self.home.ctl.display(),
            addr = self.home.addr,
            plex_image = self.plex_image().display(),
            plextv = self.plextv_url,
        );
        std::fs::write(self.config_path(), toml).unwrap();
    }

    /// Where the stand-in of the Plex image is built.
    fn plex_image(&self) -> PathBuf {
        self.dir.path().join("pms-docker.tar")
    }

    /// Builds the stand-in of `plexinc/pms-docker:<the reference's Plex
    /// version>`, which the builder loads where Scaleway's pulls.
    fn build_plex_image(&self) {
        let reference = self.s3.data_dir().join(BUCKET).join("reference");
        let manifest = std::fs::read_dir(&reference)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
            .expect("the reference's manifest");
        let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        let version = manifest["plex_version"]
            .as_str()
            .expect("the home Plex version");
        let double = self.stripped("plex-double");
        let image = plex_image::build(
            &plex_image::Spec {
                version,
                double: &double,
                env: &[("PLEX_DOUBLE_VERSION", version)],
            },
            &self.plex_image(),
        )
        .unwrap();
        eprintln!(
            "vm-e2e saw: the stand-in {} built, {} MB",
            image.tag,
            image.size / 1_000_000
        );
    }

    /// A workspace binary without its debug sections: what an image
    /// carries (a tenth of the size: faster to bake and to boot).
    fn stripped(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("bin").join(name);
        if !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let status = Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&path)
                .arg(workspace_bin(name))
                .status()
                .unwrap();
            assert!(status.success(), "strip {name}");
        }
        path
    }

    fn bootstrap(&self, args: &[&str]) -> Output {
        bootstrap_command(&self.config_path(), &self.scw, &self.s3, ACCOUNT_TOKEN)
            .args(args)
            .env("PLEX_BURST_POLL_MS", "500")
            .output()
            .unwrap()
    }

    /// `bootstrap ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        ok_stdout(&self.bootstrap(args), args, || self.what_happened())
    }

    /// Launches a run; its id.
    fn launch(&self) -> String {
        let out = self.ok(&["launch"]);
        out.lines()
            .find_map(|l| l.strip_prefix("run ").filter(|r| !r.contains(' ')))
            .unwrap_or_else(|| panic!("no run id in {out}"))
            .to_owned()
    }

    fn object(&self, key: &str) -> PathBuf {
        self.s3.data_dir().join(BUCKET).join(key)
    }

    fn json(&self, key: &str) -> Option<Value> {
        let bytes = std::fs::read(self.object(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn status(&self, run_id: &str) -> Value {
        self.json(&format!("runs/{run_id}/status.json"))
            .unwrap_or_default()
    }

    /// What a failure shows, the most telling first: what the hypervisor
    /// said, the last calls to the Scaleway double (API and metadata), the
    /// end of every guest's serial console (the most recently written first,
    /// longest) and of the test network's DHCP log.
    fn what_happened(&self) -> String {
        let mut out = String::from("--- the hypervisor (the Scaleway double's stderr)\n");
        out.push_str(&tail(&self.scw.stderr(), 30));
        out.push_str("--- the last calls to the Scaleway double\n");
        let calls = self.scw.calls();
        for c in &calls[calls.len().saturating_sub(30)..] {
            let server = c["server_id"].as_str().unwrap_or_default();
            out.push_str(&format!(
                "{} {} {} {} -> {} {server}\n",
                c["seq"], c["service"], c["method"], c["path"], c["status"]
            ));
        }
        let mut consoles: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.disks)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("console.log"))
            .filter_map(|console| Some((console.metadata().ok()?.modified().ok()?, console)))
            .collect();
        consoles.sort_by_key(|c| std::cmp::Reverse(c.0));
        for (i, (_, console)) in consoles.iter().enumerate() {
            let text = std::fs::read_to_string(console).unwrap_or_default();
            let lines = if i == 0 { 80 } else { 20 };
            out.push_str(&format!(
                "--- {}\n{}",
                console.display(),
                tail(&text, lines)
            ));
        }
        if let Some(net) = std::env::var_os("PB_VM_NET") {
            let log = Path::new(&net).join("dnsmasq.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            out.push_str(&format!("--- {}\n{}", log.display(), tail(&text, 15)));
        }
        out
    }

    /// Waits until `done` says the run is where the test wants it; a
    /// failed run or the timeout panics with its status and the consoles.
    fn wait_run(&self, run_id: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(run_id);
            if done(&status) {
                return;
            }
            if status["state"] == "failed" || Instant::now() > deadline {
                panic!(
                    "run {run_id}: no {what}; status: {status}\n{}",
                    self.what_happened()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Waits for the run's `DONE`, as [`World::wait_run`] waits.
    fn wait_done(&self, run_id: &str, what: &str, timeout: Duration) {
        self.wait_run(run_id, what, timeout, |_| {
            self.object(&format!("runs/{run_id}/DONE")).exists()
        });
    }

    /// The run's server, while it exists.
    fn server(&self, run_id: &str) -> Option<Value> {
        let name = format!("plex-burst-{run_id}");
        self.scw.state()["servers"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name.as_str())
            .cloned()
    }

    fn wait_server_gone(&self, run_id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.server(run_id).is_some() {
            assert!(
                Instant::now() < deadline,
                "the server of {run_id} is still there\n{}",
                self.what_happened()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The API call that terminated a server, if any (its `key`, `seq`).
    fn terminate_call(&self, server_id: &str) -> Option<Value> {
        self.scw.calls().into_iter().find(|c| {
            c["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("/servers/{server_id}/action")))
                && c["body"]["action"] == "terminate"
        })
    }

    /// `(name under logs/, text)` of every log the run shipped.
    fn shipped_logs(&self, run_id: &str) -> Vec<(String, String)> {
        shipped_logs(&self.s3.data_dir().join(BUCKET), run_id)
    }

    /// The runner.log the run shipped.
    fn runner_log(&self, run_id: &str) -> String {
        self.shipped_logs(run_id)
            .into_iter()
            .find(|l| l.0 == "runner.log")
            .unwrap_or_else(|| panic!("run {run_id} shipped no runner.log"))
            .1
    }

    fn assert_no_secret(&self, run_id: &str) {
        let mut secrets = vec![
            self.scw.secret_key().to_owned(),
            ACCOUNT_TOKEN.to_owned(),
            self.s3.connection().secret_key.expose().to_owned(),
        ];
        secrets.extend(self.keys.iter().map(|k| k.1.clone()));
        let mut seen = self.shipped_logs(run_id);
        for file in ["status.json", "launch.json"] {
            let path = self.object(&format!("runs/{run_id}/{file}"));
            seen.push((file.into(), std::fs::read_to_string(path).unwrap()));
        }
        for (name, text) in &seen {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret leaked into {name}"
                );
            }
        }
    }

    /// The root volume a terminated run left behind, read as anyone who
    /// got hold of it could (debugfs, no mount): no file on it holds a
    /// secret of the run. /usr is the image's and is skipped.
    fn assert_disk_holds_no_secret(&self, run_id: &str) {
        let record = self
            .json(&format!("runs/{run_id}/launch.json"))
            .expect("launch.json");
        let volume = record["root_volume_id"].as_str().expect("a root volume");
        let disk = self.disks.join(format!("{volume}.raw"));
        let out = tempfile::tempdir_in(&self.disks).unwrap();
        for dir in ["/etc", "/var", "/root", "/home", "/srv", "/opt", "/tmp"] {
            let dump = Command::new("debugfs")
                .args(["-R", &format!("rdump {dir} {}", out.path().display())])
                .arg(&disk)
                .output()
                .expect("debugfs runs");
            assert!(dump.status.success(), "debugfs: {}", text(&dump.stderr));
        }
        assert!(
            out.path().join("etc/plex-burst/run.toml").exists(),
            "the dump holds the run's files"
        );
        let mut secrets = vec![ACCOUNT_TOKEN.to_owned()];
        secrets.extend(self.keys.iter().map(|k| k.1.clone()));
        let mut files = 0;
        let mut leaks = Vec::new();
        let mut dirs = vec![out.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file() {
                    files += 1;
                    let bytes = std::fs::read(entry.path()).unwrap_or_default();
                    for (i, secret) in secrets.iter().enumerate() {
                        if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                            let path = entry.path();
                            let inside = path.strip_prefix(out.path()).unwrap();
                            leaks.push(format!("/{} holds secret #{i}", inside.display()));
                        }
                    }
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "secrets left on the root volume: {leaks:#?}"
        );
        eprintln!("vm-e2e saw: {files} files on the left-behind root volume, no secret in any");
    }

    /// The `stats` of a finished run's result manifest: `before`, `after`
    /// (per library and type, Sonic progress), `sonic`.
    fn result_stats(&self, run_id: &str) -> Value {
        let done = self.json(&format!("runs/{run_id}/DONE")).expect("DONE");
        let manifest = self
            .json(done["manifest_key"].as_str().unwrap())
            .expect("the result's manifest");
        manifest["stats"].clone()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.home.stop_quietly();
        // A VM still up (a failed test) goes with its hypervisor.
        let _ = Command::new("pkill")
            .args(["-f", &self.disks.display().to_string()])
            .status();
        if std::thread::panicking() {
            // The disks and consoles explain a failure: kept, and said
            // where.
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!(
                "vm-e2e: the failed test's disks and consoles are kept in {}",
                kept.display()
            );
        }
    }
}

/// The guest's address, as the hypervisor leased it (dnsmasq's hosts file).
fn guest_address(server_id: &str) -> std::net::Ipv4Addr {
    let hosts = PathBuf::from(env("PB_VM_NET"))
        .join("hosts")
        .join(server_id);
    let line = std::fs::read_to_string(&hosts).unwrap();
    line.trim().split(',').nth(1).unwrap().parse().unwrap()
}

/// Every TCP port of the guest, from the network namespace outside it,
/// refuses or times out, and a GDM search gets no answer.
fn probe_from_outside(server_id: &str) {
    use std::net::{SocketAddr, TcpStream, UdpSocket};
    use std::sync::atomic::{AtomicU32, Ordering};
    let ip = guest_address(server_id);
    let started = Instant::now();
    let next = AtomicU32::new(0);
    let open = std::sync::Mutex::new(Vec::new());
    // GDM first, while Plex surely runs.
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket
        .send_to(b"M-SEARCH * HTTP/1.0\r\n\r\n", (ip, 32414))
        .unwrap();
    let mut buf = [0u8; 1024];
    if let Ok((n, from)) = socket.recv_from(&mut buf) {
        panic!(
            "GDM answered from {from}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // Plex's own ports first, then every port; 1024 connects in flight,
    // each given 1 s: a port the guest's kernel answers (SYN-ACK or RST)
    // answers well within that even under TCG.
    let first = [32400u16, 32469, 32410, 32412, 32413, 32414];
    let ports: Vec<u16> = first
        .into_iter()
        .chain((1..=65535).filter(|p| !first.contains(p)))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..1024 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&port) = ports.get(i) else {
                        break;
                    };
                    let addr = SocketAddr::from((ip, port));
                    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                        open.lock().unwrap().push(port);
                    }
                }
            });
        }
    });
    let open = open.into_inner().unwrap();
    assert!(
        open.is_empty(),
        "TCP ports of the guest {ip} open from outside: {open:?}"
    );
    let probed = ports.len();
    eprintln!(
        "vm-e2e saw: {probed} TCP ports of {ip} closed from outside and no GDM answer ({}s)",
        started.elapsed().as_secs()
    );
}

/// What the guest's pb-test-show unit printed of the units' sandboxing and
/// the firewall.
fn sandboxing_in_effect(console: &str) {
    let line = |unit: &str| {
        console
            .lines()
            .find(|l| l.contains(&format!("pb-test: {unit} ")))
            .unwrap_or_else(|| panic!("the guest showed nothing of {unit}:\n{}", tail(console, 80)))
            .to_string()
    };
    let runner = line("plex-burst-runner");
    assert!(runner.contains("NoNewPrivileges=yes"), "{runner}");
    assert!(runner.contains("RestrictNamespaces=yes"), "{runner}");
    assert!(runner.contains("ProtectSystem=no"), "{runner}");
    // (Its watchdog shows only once started: the freeze below shows it.)
    assert!(runner.contains("StartLimitBurst=10"), "{runner}");
    let deadman = line("plex-burst-deadman");
    for property in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        assert!(deadman.contains(property), "{deadman}");
    }
    let firewall = line("plex-burst-firewall");
    assert!(firewall.contains("ActiveState=active"), "{firewall}");
    assert!(
        console.contains("pb-test: input policy drop"),
        "{}",
        tail(console, 80)
    );
    eprintln!("vm-e2e saw: {runner}\nvm-e2e saw: {deadman}\nvm-e2e saw: {firewall}");
}

/// The checks of what only Docker has, run in the guest beside run A (not
/// in the image): the published port, the DB's owner, the media as the
/// container sees them (through its root in /proc), before and after
/// rclone is killed while Plex scans and the runner remounts it, then
/// Plex killed inside its container, which the runner must revive.
const DOCKER_CHECKS: &str = r#"#!/bin/sh
say() { echo "pb-test: $*"; }
container() { docker ps --filter name=plex-burst- --format '{{.Names}}' | head -n1; }
until c=$(container) && [ -n "$c" ]; do sleep 1; done
pid=$(docker inspect -f '{{.State.Pid}}' "$c")
say "container $c ports: $(docker port "$c" | tr '
' ' ')"
config=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/config"}}{{.Source}}{{end}}{{end}}' "$c")
db="$config/Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"
until [ -e "$db" ]; do sleep 1; done
say "db owner $(stat -c %u:%g "$db")"
media() { # what the container sees of the media
    if out=$(ls "/proc/$pid/root/mnt/media" 2>&1); then
        echo "$(printf '%s
' "$out" | grep -c .) entries"
    else
        echo "unreadable: $out"
    fi
}
say "the container sees the media: $(media)"
n=0
until pgrep -f 'Plex Media Scanner' >/dev/null || [ $n -ge 1200 ]; do sleep 0.1; n=$((n + 1)); done
old=$(pgrep -x rclone)
pkill -KILL -x rclone
if [ $n -lt 1200 ]; then say "rclone $old killed while Plex scans"; else say "rclone $old killed, no scanner seen"; fi
# Remounted when the host lists the media again (an empty folder first).
until new=$(pgrep -x rclone) && [ "$new" != "$old" ] && [ -n "$(ls /mnt/media 2>/dev/null)" ]; do sleep 1; done
n=0
until media | grep -q '^[1-9]' || [ $n -ge 30 ]; do sleep 1; n=$((n + 1)); done
say "after the remount the container sees the media: $(media)"
kill -KILL "$pid"
say "Plex (pid $pid, the container's init) killed"
until c=$(container) && [ -n "$c" ] && [ "$(docker inspect -f '{{.State.Pid}}' "$c")" != "$pid" ]; do sleep 1; done
say "Plex revived in a new container"
"#;

/// A test unit in the guest: `script` run once the runner started.
fn inject_unit(inject: &Path, name: &str, what: &str, script: &str) {
    write_tree(inject, &format!("usr/local/lib/pb-test/{name}.sh"), script);
    write_tree(
        inject,
        &format!("etc/systemd/system/{name}.service"),
        &format!(
            "# {what} (not in the image).\n\
             [Unit]\nAfter=plex-burst-runner.service\n[Service]\nType=simple\n\
             ExecStart=/bin/sh /usr/local/lib/pb-test/{name}.sh\n"
        ),
    );
    let wants = inject.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        format!("/etc/systemd/system/{name}.service"),
        wants.join(format!("{name}.service")),
    )
    .unwrap();
}

/// Later guests do without it.
fn remove_unit(inject: &Path, name: &str) {
    for path in [
        format!("usr/local/lib/pb-test/{name}.sh"),
        format!("etc/systemd/system/{name}.service"),
        format!("etc/systemd/system/multi-user.target.wants/{name}.service"),
    ] {
        std::fs::remove_file(inject.join(path)).unwrap();
    }
}

/// The runner log's line saying where a restarted runner resumed.
fn resumed(runner_log: &str) -> String {
    runner_log
        .lines()
        .find(|l| l.contains("resuming from the checkpoint"))
        .unwrap_or_else(|| panic!("no resume in the runner's log:\n{runner_log}"))
        .to_string()
}

/// The first line of the guest's console that holds `text`.
fn console_line_with(console: &str, text: &str) -> String {
    console
        .lines()
        .find_map(|l| l.find(text).map(|at| l[at..].to_string()))
        .unwrap_or_default()
}

/// The line of the guest's console that starts with `pb-test: {prefix}`.
fn console_line(console: &str, prefix: &str) -> String {
    let marker = format!("pb-test: {prefix}");
    console
        .lines()
        .find_map(|l| l.find(&marker).map(|at| l[at..].to_string()))
        .unwrap_or_else(|| {
            panic!(
                "the guest said nothing of {prefix:?}:\n{}",
                tail(console, 80)
            )
        })
}

/// What run A showed of Plex in Docker, on its console and in its logs.
fn docker_checks(console: &str, logs: &[(String, String)], run_id: &str) {
    let ports = console_line(console, "container ");
    assert!(
        ports.contains(&format!(
            "plex-burst-{run_id} ports: 32400/tcp -> 127.0.0.1:"
        )),
        "{ports}"
    );
    assert!(
        !ports.contains("0.0.0.0") && !ports.contains("[::]"),
        "{ports}"
    );
    let owner = console_line(console, "db owner");
    assert!(
        owner.ends_with(&format!("{PLEX_UID}:{PLEX_UID}")),
        "{owner}"
    );
    let seen = |what: &str| {
        let line = console_line(console, what);
        let entries: u32 = line
            .rsplit_once(": ")
            .and_then(|(_, n)| n.strip_suffix(" entries"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(entries > 0, "{line}");
        line
    };
    let before = seen("the container sees the media");
    let killed = console_line(console, "rclone ");
    assert!(killed.ends_with("killed while Plex scans"), "{killed}");
    let after = seen("after the remount the container sees the media");
    let revived = console_line(console, "Plex revived");
    let log = |name: &str| {
        &logs
            .iter()
            .find(|l| l.0 == name)
            .unwrap_or_else(|| panic!("{name} not shipped"))
            .1
    };
    let runner = log("runner.log");
    let line = |what: &str| {
        runner
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the runner's log:\n{}", tail(runner, 60)))
    };
    assert!(line("remounting").contains("mount"));
    assert!(line("restarting Plex").contains("container"));
    let scanners = runner
        .lines()
        .find(|l| l.contains("scan done") && !l.contains("scanner_processes=0"))
        .unwrap_or_else(|| {
            panic!(
                "the runner saw no scanner process in the container:\n{}",
                tail(runner, 60)
            )
        });
    let integrity = line("integrity of the reference DB");
    assert!(integrity.contains("Plex SQLite"), "{integrity}");
    line("Plex stopped cleanly");
    // Both containers' consoles: the one Plex was killed in, the last one.
    let console_log = log("plex-console.log");
    assert_eq!(
        console_log.matches("===== docker logs of").count(),
        2,
        "{console_log}"
    );
    eprintln!(
        "vm-e2e saw: {ports}\nvm-e2e saw: {owner}\nvm-e2e saw: {before}\nvm-e2e saw: {killed}\n\
         vm-e2e saw: {after}\nvm-e2e saw: {revived}\nvm-e2e saw: {scanners}\nvm-e2e saw: {integrity}"
    );
}

/// No guest of the test looked up a name of a container registry: the
/// image was loaded at bake time and nothing pulls at run time.
fn no_registry_lookup() {
    let log = Path::new(&env("PB_VM_NET")).join("dnsmasq.log");
    let log = std::fs::read_to_string(&log).unwrap();
    let queries: Vec<&str> = log.lines().filter(|l| l.contains(" query[")).collect();
    let registry: Vec<&&str> = queries.iter().filter(|l| l.contains("docker")).collect();
    assert!(registry.is_empty(), "registry lookups: {registry:#?}");
    eprintln!(
        "vm-e2e saw: {} DNS queries from the guests, none of a registry",
        queries.len()
    );
}

fn write_tree(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The last `lines` lines of `text`, each ending with a newline.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn minutes(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

fn timing(what: &str, d: Duration) {
    eprintln!("vm-e2e timing: {what:<28} {}", minutes(d));
}

fn analysed(stats: &Value) -> u64 {
    stats["sonic"]["analysed"].as_u64().unwrap_or_default()
}

#[test]
#[ignore = "boots QEMU guests in the network namespace of ./scripts/vm-e2e, which runs it (./scripts/test runs that script)"]
fn the_baked_image_boots_runs_survives_a_hard_reset_and_a_freeze_and_is_ended_by_its_dead_man() {
    let w = World::new();
    w.ok(&["snapshot"]);
    w.build_plex_image();

    // A bake that fails in the guest says why, with the guest's cloud-init
    // status and journal, and leaves no builder behind.
    w.write_config("1h", &"0".repeat(64), false);
    let out = w.bootstrap(&["image", "build"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("provisioning failed at step \"rclone\""),
        "{err}"
    );
    for part in [
        "== cloud-init status",
        "== journal of this boot",
        "sha256sum",
    ] {
        assert!(err.contains(part), "{part} not shown:\n{err}");
    }
    assert_eq!(w.scw.state()["servers"], serde_json::json!([]));
    eprintln!("vm-e2e saw: a failed bake shows the guest's log, cloud-init status and journal");
    w.write_config("1h", &w.rclone_sha256(), false);

    // The bake: the base image boots as a builder with the real user data.
    let started = Instant::now();
    w.ok(&["image", "build"]);
    timing("bake (boot + provision)", started.elapsed());

    // 1. A run, uninterrupted but for what Docker must survive: rclone
    // killed while Plex scans, Plex killed inside its container.
    inject_unit(
        &w.inject,
        "pb-test-docker",
        "The VM test's checks of Plex in Docker",
        DOCKER_CHECKS,
    );
    let started = Instant::now();
    let run_a = w.launch();
    let server_a = w.server(&run_a).expect("the run's server")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.wait_run(&run_a, "runner start", Duration::from_secs(600), |s| {
        s["state"].is_string()
    });
    timing("boot to runner start", started.elapsed());
    // While Plex works (listening on every address, GDM on by default in
    // the double): nothing of the guest answers from outside it.
    w.wait_run(&run_a, "Sonic", Duration::from_secs(1200), |s| {
        s["phase"] == "sonic"
    });
    probe_from_outside(&server_a);
    sandboxing_in_effect(
        &std::fs::read_to_string(w.disks.join(&server_a).join("console.log")).unwrap(),
    );
    w.wait_done(&run_a, "DONE", Duration::from_secs(1200));
    w.wait_server_gone(&run_a, Duration::from_secs(120));
    timing("run (launch to terminated)", started.elapsed());

    let terminate = w
        .terminate_call(&server_a)
        .expect("the runner terminated its server");
    assert!(
        w.keys.iter().any(|k| terminate["key"] == k.0.as_str()),
        "terminated with the run's own key: {terminate}"
    );
    eprintln!(
        "vm-e2e saw: terminate of {server_a} with the run's key (call {})",
        terminate["seq"]
    );
    // cloud-init read the user data from a privileged port, then the
    // runner deleted it.
    let metadata: Vec<Value> = w
        .scw
        .calls()
        .into_iter()
        .filter(|c| c["service"] == "metadata" && c["server_id"] == server_a.as_str())
        .collect();
    let read = metadata
        .iter()
        .position(|c| {
            c["method"] == "GET" && c["path"] == "/user_data/cloud-init" && c["status"] == 200
        })
        .unwrap_or_else(|| panic!("cloud-init never read its user data: {metadata:#?}"));
    assert!(metadata[read]["source_port"].as_u64().unwrap() < 1024);
    let deleted = metadata
        .iter()
        .position(|c| c["method"] == "DELETE" && c["path"] == "/user_data/cloud-init")
        .unwrap_or_else(|| panic!("the user data was never deleted: {metadata:#?}"));
    assert!(read < deleted, "{metadata:#?}");
    eprintln!(
        "vm-e2e saw: user data read from source port {}, deleted afterwards",
        metadata[read]["source_port"]
    );

    remove_unit(&w.inject, "pb-test-docker");
    let console_a = std::fs::read_to_string(w.disks.join(&server_a).join("console.log")).unwrap();
    assert_eq!(
        console_a.matches(WATCHDOG_FIRED).count(),
        0,
        "a healthy run tripped the watchdog:\n{}",
        tail(&console_a, 60)
    );
    let stats_a = w.result_stats(&run_a);
    assert_eq!(analysed(&stats_a["before"]), 90, "{stats_a}");
    assert_eq!(analysed(&stats_a["after"]), TRACKS, "{stats_a}");
    let logs = w.shipped_logs(&run_a);
    docker_checks(
        &std::fs::read_to_string(w.disks.join(&server_a).join("console.log")).unwrap(),
        &logs,
        &run_a,
    );
    let names: Vec<&str> = logs.iter().map(|l| l.0.as_str()).collect();
    for name in [
        "runner.log",
        "journal.txt",
        "rclone.log",
        "plex-console.log",
        "plex/Plex Media Server.log",
    ] {
        assert!(names.contains(&name), "{name} not shipped: {names:?}");
    }
    let journal = &logs.iter().find(|l| l.0 == "journal.txt").unwrap().1;
    assert!(journal.contains("plex-burst-runner"), "{journal}");
    eprintln!("vm-e2e saw: shipped logs {names:?}");
    w.assert_no_secret(&run_a);
    w.assert_disk_holds_no_secret(&run_a);
    // Fetch checks DONE, the manifest and every digest, and installs.
    let out = w.ok(&["fetch", &run_a]);
    assert!(out.contains("installed"), "{out}");

    // 2. A hard reset during Sonic: the same disk boots again and the
    // runner resumes from its checkpoint.
    let run_b = w.launch();
    let server_b = w.server(&run_b).unwrap()["id"].as_str().unwrap().to_owned();
    w.wait_run(&run_b, "Sonic progress", Duration::from_secs(1200), |s| {
        s["phase"] == "sonic" && s["sonic"]["analysed"].as_u64().unwrap_or(0) >= 200
    });
    let at = w.status(&run_b)["sonic"]["analysed"].clone();
    let folder = w.disks.join(&server_b);
    std::fs::write(folder.join("reset"), "").unwrap();
    let pid = std::fs::read_to_string(folder.join("qemu.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    eprintln!("vm-e2e saw: hard reset of {server_b} at {at} tracks analysed");
    let started = Instant::now();
    w.wait_done(&run_b, "DONE after the reset", Duration::from_secs(1200));
    timing("reset to DONE", started.elapsed());
    w.wait_server_gone(&run_b, Duration::from_secs(120));
    let console = std::fs::read_to_string(folder.join("console.log")).unwrap();
    assert_eq!(console.matches("===== hypervisor: boot").count(), 2);
    assert_eq!(
        console.matches(WATCHDOG_FIRED).count(),
        0,
        "{}",
        tail(&console, 60)
    );
    let runner_log = w.runner_log(&run_b);
    let resume = resumed(&runner_log);
    assert!(resume.contains("sonic"), "{resume}");
    eprintln!("vm-e2e saw: {resume}");
    // What the reset lost of the log (NUL bytes on the disk) is said in words.
    assert!(!runner_log.contains('\0'), "{runner_log}");
    if let Some(lost) = runner_log
        .lines()
        .find(|l| l.contains("bytes of this log were lost"))
    {
        eprintln!("vm-e2e saw: {lost}");
    }
    let stats_b = w.result_stats(&run_b);
    assert_eq!(
        stats_b["after"], stats_a["after"],
        "the same result as without the reset"
    );
    w.assert_no_secret(&run_b);

    // 3. The watchdog: the runner frozen (SIGSTOP) once Plex runs stops
    // beating; systemd kills it within `deadlines.watchdog` and starts it
    // again, and the run resumes and finishes with the same result.
    inject_unit(
        &w.inject,
        "pb-test-freeze",
        "The VM test freezes the runner once Plex runs",
        "until docker ps -q --filter name=plex-burst- | grep -q .; do sleep 2; done\n\
         systemctl kill --kill-who=main --signal=SIGSTOP plex-burst-runner.service\n\
         echo pb-test: runner frozen\n",
    );
    let run_w = w.launch();
    let server_w = w.server(&run_w).unwrap()["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    w.wait_done(&run_w, "DONE after the freeze", Duration::from_secs(1500));
    w.wait_server_gone(&run_w, Duration::from_secs(120));
    timing("frozen run to terminated", started.elapsed());
    remove_unit(&w.inject, "pb-test-freeze");
    let console = std::fs::read_to_string(w.disks.join(&server_w).join("console.log")).unwrap();
    assert!(
        console.contains("pb-test: runner frozen"),
        "{}",
        tail(&console, 60)
    );
    assert_eq!(
        console.matches(WATCHDOG_FIRED).count(),
        1,
        "one freeze, one kill:\n{}",
        tail(&console, 60)
    );
    // At the run's `deadlines.watchdog`, not the unit's default.
    let fired = console_line_with(&console, WATCHDOG_FIRED);
    assert!(fired.contains("(limit 1min)"), "{fired}");
    eprintln!("vm-e2e saw: {fired}");
    eprintln!("vm-e2e saw: {}", resumed(&w.runner_log(&run_w)));
    assert_eq!(w.status(&run_w)["state"], "succeeded");
    assert_eq!(
        w.result_stats(&run_w)["after"],
        stats_a["after"],
        "the same result as without the freeze"
    );
    w.assert_no_secret(&run_w);

    // 4. The dead-man: a runner frozen again at every start (SIGSTOP) is
    // killed and restarted by the watchdog each time and never finishes,
    // and the run keeps its instance on failure; at the run's deadline
    // plus its grace the dead-man ships the logs and terminates it.
    // Kept on failure: a runner restarted past the deadline fails at once
    // and leaves the instance up; only the dead-man ends it.
    w.write_config("4m", &w.rclone_sha256(), true);
    inject_unit(
        &w.inject,
        "pb-test-freeze",
        "The VM test freezes the runner at every start once Plex runs",
        "until docker ps -q --filter name=plex-burst- | grep -q .; do sleep 2; done\n\
         last=0\n\
         while true; do\n\
         pid=$(systemctl show -p MainPID --value plex-burst-runner.service)\n\
         if [ \"$pid\" != 0 ] && [ \"$pid\" != \"$last\" ]; then\n\
         sleep 5; kill -STOP \"$pid\" && echo \"pb-test: runner $pid frozen\"; last=$pid\n\
         fi\n\
         sleep 1\n\
         done\n",
    );
    let run_c = w.launch();
    let server_c = w.server(&run_c).unwrap()["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    w.wait_server_gone(&run_c, Duration::from_secs(900));
    timing("dead-man run to terminated", started.elapsed());
    let terminate = w
        .terminate_call(&server_c)
        .expect("the dead-man terminated the server");
    assert!(w.keys.iter().any(|k| terminate["key"] == k.0.as_str()));
    assert!(!w.object(&format!("runs/{run_c}/DONE")).exists());
    let status = w.status(&run_c);
    assert_eq!(status["state"], "failed", "{status}");
    // Frozen, the runner got no further than the phase it froze in.
    assert!(
        !status["phases_done"]
            .as_array()
            .is_some_and(|done| done.iter().any(|p| p == "sonic")),
        "{status}"
    );
    // Not before its time: first start + run (4m) + grace (20 s).
    assert!(
        started.elapsed() >= Duration::from_secs(260),
        "the dead-man acted early"
    );
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("dead-man"),
        "{status}"
    );
    let logs = w.shipped_logs(&run_c);
    let names: Vec<&str> = logs.iter().map(|l| l.0.as_str()).collect();
    for name in ["runner.log", "journal.txt", "deadman.txt"] {
        assert!(names.contains(&name), "{name} not shipped: {names:?}");
    }
    eprintln!(
        "vm-e2e saw: dead-man status {}, shipped {names:?}",
        status["last_error"]
    );
    let console = std::fs::read_to_string(w.disks.join(&server_c).join("console.log")).unwrap();
    let kills = console.matches(WATCHDOG_FIRED).count();
    assert!(
        kills >= 2,
        "frozen again and again, killed {kills} times:\n{}",
        tail(&console, 60)
    );
    eprintln!(
        "vm-e2e saw: the watchdog killed the frozen runner {kills} times before the dead-man"
    );
    w.assert_no_secret(&run_c);
    remove_unit(&w.inject, "pb-test-freeze");

    // 5. A crash loop: the runner fails at every start (the unit's command
    // replaced), systemd stops restarting it at its start limit, and the
    // dead-man ends the run then, not at its deadline an hour away.
    w.write_config("1h", &w.rclone_sha256(), false);
    write_tree(
        &w.inject,
        "etc/systemd/system/plex-burst-runner.service.d/pb-test-crash.conf",
        "# The VM test's runner fails at every start (not in the image).\n\
         [Service]\nExecStart=\nExecStart=/bin/false\nRestartSec=1s\n",
    );
    let run_d = w.launch();
    let server_d = w.server(&run_d).unwrap()["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    w.wait_server_gone(&run_d, Duration::from_secs(600));
    timing("crash loop to terminated", started.elapsed());
    let terminate = w
        .terminate_call(&server_d)
        .expect("the dead-man terminated the server");
    assert!(w.keys.iter().any(|k| terminate["key"] == k.0.as_str()));
    let console = std::fs::read_to_string(w.disks.join(&server_d).join("console.log")).unwrap();
    let limit = console_line_with(
        &console,
        "plex-burst-runner.service: Start request repeated too quickly",
    );
    assert!(!limit.is_empty(), "{}", tail(&console, 60));
    eprintln!("vm-e2e saw: {limit}");
    let status = w.status(&run_d);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["last_error"].as_str().unwrap_or("").starts_with(
            "ended by the dead-man before the deadline: systemd stopped restarting the runner"
        ),
        "{status}"
    );
    eprintln!("vm-e2e saw: crash loop status {}", status["last_error"]);
    w.assert_no_secret(&run_d);
    no_registry_lookup();
}
