//! The stand-in Plex image (`plex_image`), without Docker: its archive as
//! `docker load` reads it, and its layer run as a container runs it (new
//! mount and PID namespaces, its own /proc, device nodes, chrooted into
//! the extracted layer, the image's environment plus the runner's
//! variables), checked against what the real image's scripts do
//! (plexinc/pms-docker: 40-plex-first-run, services.d/plex/run,
//! healthcheck.sh).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use plex_burst_tests::bins::workspace_bin;
use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::plex_image::{self, Image, STAND_IN_LABEL, VERSION_LABEL};
use plex_burst_tests::plexdouble::container::{
    FIRST_RUN_MARKER, HEALTHCHECK, INIT, PLEX_SQLITE, PMS_BINARY,
};
use plex_burst_tests::plexdouble::harness::{
    PlexTvDouble, free_port, get, scanner_processes, tail, xml_elements,
};
use plex_burst_tests::plexdouble::pms::prefs::processed_machine_identifier;
use sha2::{Digest, Sha256};

/// The runner's pinned version (runner/src/config).
const VERSION: &str = "1.41.3.9314-a0bfb8370";
/// PLEX_UID and PLEX_GID: neither the test's nor the image's default.
const PLEX_ID: u32 = 990;
const ACCOUNT: &str = "account-token-1234";
/// A hang guard, not a speed requirement.
const WAIT: Duration = Duration::from_secs(60);
const APP_SUPPORT: &str = "config/Library/Application Support/Plex Media Server";
const LIBRARY_DB: &str = "Plug-in Support/Databases/com.plexapp.plugins.library.db";

fn build(dir: &Path, name: &str) -> Image {
    let double = workspace_bin("plex-double");
    let spec = plex_image::Spec {
        version: VERSION,
        double: &double,
        env: &[],
    };
    plex_image::build(&spec, &dir.join(name)).expect("the image builds")
}

/// One entry of a tar.
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
    link: Option<PathBuf>,
}

/// The entries of a tar, by path.
struct Entries(BTreeMap<String, Entry>);

impl Entries {
    fn read(bytes: &[u8]) -> (Entries, Vec<String>) {
        let mut archive = tar::Archive::new(bytes);
        let mut map = BTreeMap::new();
        let mut order = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let header = entry.header().clone();
            let link = entry.link_name().unwrap().map(|l| l.into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            order.push(path.clone());
            map.insert(
                path,
                Entry {
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    mtime: header.mtime().unwrap(),
                    data,
                    link,
                },
            );
        }
        (Entries(map), order)
    }

    fn data(&self, path: &str) -> &[u8] {
        &self
            .0
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in the archive"))
            .data
    }

    /// Fixed dates, sorted paths: the same inputs give the same bytes.
    fn assert_reproducible(&self, order: &[String]) {
        let mut sorted = order.to_vec();
        sorted.sort();
        assert_eq!(order, sorted, "entries in path order");
        for (path, entry) in &self.0 {
            assert_eq!(entry.mtime, 0, "{path} has a fixed mtime");
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn the_archive_is_docker_saves_layout_tagged_and_labelled_as_the_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), "a.tar");
    let bytes = std::fs::read(&image.archive).unwrap();
    assert_eq!(image.sha256, sha256(&bytes));
    assert_eq!(image.size, bytes.len() as u64);
    let again = build(dir.path(), "b.tar");
    assert_eq!(again.sha256, image.sha256, "same inputs, same archive");
    println!(
        "stand-in image {}: {} bytes, sha256 {}",
        image.tag, image.size, image.sha256
    );

    let (outer, order) = Entries::read(&bytes);
    outer.assert_reproducible(&order);
    let manifest: serde_json::Value = serde_json::from_slice(outer.data("manifest.json")).unwrap();
    let items = manifest.as_array().expect("a list of images");
    assert_eq!(items.len(), 1, "{manifest}");
    let item = &items[0];
    let tag = format!("plexinc/pms-docker:{VERSION}");
    assert_eq!(item["RepoTags"], serde_json::json!([tag]));
    assert_eq!(image.tag, tag);
    let config_name = item["Config"].as_str().unwrap();
    let config_bytes = outer.data(config_name);
    assert_eq!(
        config_name,
        format!("{}.json", sha256(config_bytes)),
        "the image id names its config"
    );
    let config: serde_json::Value = serde_json::from_slice(config_bytes).unwrap();
    let layers: Vec<&str> = item["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256(outer.data(l))))
        .collect();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(diff_ids),
        "diff_ids are the layers' sha256"
    );
    assert_eq!(config["os"], "linux");

    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!([INIT]));
    assert_eq!(c["Labels"][STAND_IN_LABEL], "true", "{c}");
    assert_eq!(c["Labels"][VERSION_LABEL], VERSION);
    // HEALTHCHECK --interval=5s --timeout=2s --retries=20 CMD /healthcheck.sh
    let health = &c["Healthcheck"];
    assert_eq!(health["Test"], serde_json::json!(["CMD", HEALTHCHECK]));
    assert_eq!(health["Interval"], 5_000_000_000u64);
    assert_eq!(health["Timeout"], 2_000_000_000u64);
    assert_eq!(health["Retries"], 20);
    let volumes: Vec<&String> = c["Volumes"].as_object().unwrap().keys().collect();
    assert_eq!(volumes, ["/config", "/transcode"]);
    for port in ["32400/tcp", "32469/tcp", "1900/udp", "32414/udp"] {
        assert!(c["ExposedPorts"].get(port).is_some(), "{port} exposed: {c}");
    }
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for wanted in ["CHANGE_CONFIG_DIR_OWNERSHIP=true", "HOME=/config"] {
        assert!(env.contains(&wanted), "{wanted} in {env:?}");
    }

    assert_eq!(layers.len(), 1);
    let (layer, order) = Entries::read(outer.data(layers[0]));
    layer.assert_reproducible(&order);
    for link in [INIT, HEALTHCHECK, PLEX_SQLITE] {
        let entry = &layer.0[link.trim_start_matches('/')];
        assert_eq!(entry.kind, tar::EntryType::Symlink, "{link}");
        assert_eq!(entry.link.as_deref(), Some(Path::new(PMS_BINARY)), "{link}");
    }
    let pms = &layer.0[PMS_BINARY.trim_start_matches('/')];
    assert_eq!((pms.kind, pms.mode), (tar::EntryType::Regular, 0o755));
    assert!(
        pms.data.starts_with(b"\x7fELF"),
        "Plex Media Server is a program"
    );
    let pms = layer.data(PMS_BINARY.trim_start_matches('/')).len();
    let unstripped = std::fs::metadata(workspace_bin("plex-double"))
        .unwrap()
        .len();
    println!("Plex Media Server in the image: {pms} bytes (the build's plex-double: {unstripped})");
    assert!(
        layer.0.keys().any(|p| p.contains("ld-linux")),
        "the dynamic loader is in the image: {:?}",
        layer.0.keys().collect::<Vec<_>>()
    );
}

/// Root is needed (namespaces, chroot, chown to another uid). Without it
/// the test says so loudly and passes, unless PLEX_BURST_REQUIRE_VM is set
/// (CI): then it fails.
fn as_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = "SKIPPED: the stand-in Plex image test runs its layer as a container: it needs root (unshare, chroot, chown)";
    assert!(
        std::env::var_os("PLEX_BURST_REQUIRE_VM").is_none(),
        "{why}, and PLEX_BURST_REQUIRE_VM is set"
    );
    // Past the test harness's capture, which would hide it on a pass.
    let _ = writeln!(std::io::stderr(), "\x1b[1;31m{why}\x1b[0m");
    false
}

/// The image's layer, extracted, with what Docker adds: device nodes.
fn extract(image: &Image, root: &Path) -> Vec<String> {
    let bytes = std::fs::read(&image.archive).unwrap();
    let (outer, _) = Entries::read(&bytes);
    let manifest: serde_json::Value = serde_json::from_slice(outer.data("manifest.json")).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(outer.data(manifest[0]["Config"].as_str().unwrap())).unwrap();
    let layer = outer.data(manifest[0]["Layers"][0].as_str().unwrap());
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(root).unwrap();
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    for (name, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
        mknod(
            &root.join("dev").join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .unwrap();
        // mknod's mode goes through the umask.
        let node = root.join("dev").join(name);
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

/// The layer run as a container: `/init` as PID 1 of its own PID
/// namespace, chrooted, with only the image's and the given variables.
struct Container {
    unshare: Child,
    init: u32,
    console: PathBuf,
}

impl Container {
    fn start(root: &Path, image_env: &[String], env: &[(&str, &str)], console: &Path) -> Container {
        let out = std::fs::File::create(console).unwrap();
        let mut command = Command::new("unshare");
        command
            .arg("--mount")
            .arg("--pid")
            .arg("--fork")
            .arg(format!("--mount-proc={}", root.join("proc").display()))
            .arg("chroot")
            .arg(root)
            .arg(INIT)
            .env_clear()
            .envs(image_env.iter().filter_map(|e| e.split_once('=')))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut unshare = command.spawn().expect("unshare starts");
        // unshare forks the namespace's PID 1, which becomes chroot, /init,
        // then Plex: one process throughout.
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + WAIT;
        let init = loop {
            let first = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = first.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            if let Some(status) = unshare.try_wait().unwrap() {
                let console = std::fs::read_to_string(console).unwrap_or_default();
                panic!("the container ended ({status}) as it started:\n{console}");
            }
            assert!(
                Instant::now() < deadline,
                "hang guard: no PID 1 within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Container {
            unshare,
            init,
            console: console.to_path_buf(),
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// `docker stop`: SIGTERM to PID 1, then its exit status.
    fn stop(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.init as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hang guard: the container did not stop within {WAIT:?} of SIGTERM\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Still running (a failed assertion): SIGKILL to the namespace's
        // PID 1 ends all of it.
        if matches!(self.unshare.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.init as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

/// What the run's Plex container gets (runner/src/plex/process.rs
/// docker_run_args), the claim, and where the double listens and finds
/// plex.tv.
struct RunEnv {
    listen: String,
    gdm_port: String,
    plextv: String,
    claim: String,
    advertise: String,
}

impl RunEnv {
    fn pairs(&self) -> Vec<(&str, &str)> {
        vec![
            ("PLEX_UID", "990"),
            ("PLEX_GID", "990"),
            ("TZ", "UTC"),
            ("ALLOWED_NETWORKS", "127.0.0.1/32"),
            ("ADVERTISE_IP", &self.advertise),
            ("PLEX_CLAIM", &self.claim),
            ("PLEX_DOUBLE_LISTEN", &self.listen),
            ("PLEX_DOUBLE_GDM_PORT", &self.gdm_port),
            ("PLEX_DOUBLE_PLEXTV_URL", &self.plextv),
            ("PLEX_DOUBLE_STARTUP_WINDOW", "0s"),
        ]
    }
}

/// `/identity`'s answer once Plex answers (the console and log on failure).
fn wait_identity(container: &mut Container, root: &Path, listen: &str) -> BTreeMap<String, String> {
    let url = format!("http://{listen}/identity");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(reply) = get(&url, &[]).ok().filter(|r| r.status == 200) {
            return xml_elements(&reply.body, "MediaContainer").remove(0);
        }
        if let Some(status) = container.unshare.try_wait().unwrap() {
            panic!(
                "the container ended ({status}) before /identity answered\n{}",
                container.console()
            );
        }
        let log =
            std::fs::read_to_string(root.join(APP_SUPPORT).join("Logs/Plex Media Server.log"))
                .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "hang guard: no /identity within {WAIT:?}\nconsole:\n{}\nlog:\n{}",
            container.console(),
            tail(&log, 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn plex_log(root: &Path) -> String {
    std::fs::read_to_string(root.join(APP_SUPPORT).join("Logs/Plex Media Server.log"))
        .unwrap_or_default()
}

/// Preferences.xml's attributes, read only.
fn prefs(root: &Path) -> BTreeMap<String, String> {
    let path = root.join(APP_SUPPORT).join("Preferences.xml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    xml_elements(&text, "Preferences").remove(0)
}

fn pref<'a>(prefs: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    prefs.get(key).map(String::as_str)
}

/// `/healthcheck.sh` in the root, as Docker runs it in the container.
fn healthcheck(root: &Path, image_env: &[String], listen: &str) -> ExitStatus {
    Command::new("chroot")
        .arg(root)
        .arg(HEALTHCHECK)
        .env_clear()
        .envs(image_env.iter().filter_map(|e| e.split_once('=')))
        .env("PLEX_DOUBLE_LISTEN", listen)
        .stdout(Stdio::null())
        .status()
        .unwrap()
}

fn exchanges(plextv: &PlexTvDouble) -> usize {
    plextv
        .calls()
        .iter()
        .filter(|c| c["method"] == "POST" && c["path"] == "/api/claim/exchange")
        .count()
}

/// `Plex SQLite -readonly DB "PRAGMA integrity_check;"` in the root, as
/// uid 990: its stdout and stderr.
fn plex_sqlite(root: &Path, image_env: &[String], db: &Path) -> (String, String) {
    let out = Command::new("chroot")
        .arg(format!("--userspec={PLEX_ID}:{PLEX_ID}"))
        .arg(root)
        .arg(PLEX_SQLITE)
        .arg("-readonly")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .env_clear()
        .envs(image_env.iter().filter_map(|e| e.split_once('=')))
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// Zeroes the header of `table`'s root page.
fn zero_page_header(db: &Path, table: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let root_page: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(db).unwrap();
    let start = ((root_page - 1) * page_size) as usize;
    bytes[start..start + 8].fill(0);
    std::fs::write(db, bytes).unwrap();
}

/// Every path under `dir` whose owner is not `uid:gid`.
fn not_owned_by(dir: &Path, uid: u32, gid: u32) -> Vec<String> {
    let mut wrong = Vec::new();
    let meta = std::fs::symlink_metadata(dir).unwrap();
    if (meta.uid(), meta.gid()) != (uid, gid) {
        wrong.push(format!("{} ({}:{})", dir.display(), meta.uid(), meta.gid()));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            wrong.extend(not_owned_by(&entry.unwrap().path(), uid, gid));
        }
    }
    wrong
}

/// `Uid:`/`Gid:` of /proc/PID/status: real, effective, saved, fs.
fn ids_of(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (field("Uid:"), field("Gid:"))
}

#[test]
fn the_stand_in_runs_as_the_real_image_first_run_claim_scan_stop_and_restart() {
    if !as_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = build(dir.path(), "image.tar");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let image_env = extract(&image, &root);

    // /config as the runner leaves it (the DB it pulled, no Preferences.xml:
    // the home server's identity never goes to the cloud), owned by root;
    // the media under /data/media, where the DB says.
    let spec = Spec {
        seed: 14,
        media_root: "/data/media".into(),
        libraries: vec![LibrarySpec::single("Movies", LibraryKind::Movie, 6, 0.0)],
    };
    let app = write_app_support(&root.join("config"), &spec).unwrap();
    std::fs::remove_file(app.dir.join("Preferences.xml")).unwrap();
    write_media_tree(&root.join("data/media"), &spec).unwrap();

    let plextv = PlexTvDouble::start(ACCOUNT, &[]);
    let mut run = RunEnv {
        listen: format!("127.0.0.1:{}", free_port()),
        gdm_port: free_port().to_string(),
        plextv: plextv.url.clone(),
        claim: plextv.claim_token(),
        advertise: "http://10.1.2.3:32400/".into(),
    };
    let console = dir.path().join("console-1.log");
    let mut container = Container::start(&root, &image_env, &run.pairs(), &console);
    let identity = wait_identity(&mut container, &root, &run.listen);

    // The ids as 40-plex-first-run makes them, reported by Plex.
    let first = prefs(&root);
    let machine = pref(&first, "MachineIdentifier")
        .expect("MachineIdentifier")
        .to_string();
    assert_eq!(machine.len(), 36, "{machine}");
    assert_eq!(
        &machine[14..15],
        "4",
        "a random (version 4) UUID: {machine}"
    );
    let processed = pref(&first, "ProcessedMachineIdentifier")
        .expect("ProcessedMachineIdentifier")
        .to_string();
    assert_eq!(processed, processed_machine_identifier(&machine));
    assert_eq!(identity["machineIdentifier"], processed);
    // The claim exchanged once, by the ProcessedMachineIdentifier, with
    // the script's device name; its token kept.
    assert_eq!(exchanges(&plextv), 1, "{:?}", plextv.calls());
    let token = pref(&first, "PlexOnlineToken")
        .expect("PlexOnlineToken after the claim")
        .to_string();
    assert!(
        plextv.issued_tokens().contains(&token),
        "a token plex.tv issued"
    );
    assert_ne!(token, run.claim);
    let devices = get(&plextv.url("/devices.xml"), &[("X-Plex-Token", ACCOUNT)]).unwrap();
    let devices = xml_elements(&devices.body, "Device");
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["clientIdentifier"], processed);
    assert_eq!(devices[0]["name"], "PlexMediaServer");
    assert_eq!(
        pref(&first, "customConnections"),
        Some("http://10.1.2.3:32400/")
    );
    assert_eq!(pref(&first, "allowedNetworks"), Some("127.0.0.1/32"));
    assert_eq!(pref(&first, "TranscoderTempDirectory"), Some("/transcode"));
    assert!(root.join(FIRST_RUN_MARKER.trim_start_matches('/')).exists());

    // Plex is PID 1 (what docker stop signals: /init became it), as
    // 990:990, with the run script's environment and the container's (TZ).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", container.init)).unwrap();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap();
    assert_eq!(String::from_utf8_lossy(argv0), PMS_BINARY);
    let ids = ("990 990 990 990".to_string(), "990 990 990 990".to_string());
    assert_eq!(ids_of(container.init), ids);
    let environ = std::fs::read(format!("/proc/{}/environ", container.init)).unwrap();
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for wanted in [
        "PLEX_MEDIA_SERVER_APPLICATION_SUPPORT_DIR=/config/Library/Application Support",
        "PLEX_MEDIA_SERVER_HOME=/usr/lib/plexmediaserver",
        "PLEX_MEDIA_SERVER_INFO_VENDOR=Docker",
        "TZ=UTC",
    ] {
        assert!(
            environ.iter().any(|v| v == wanted),
            "{wanted} in {environ:?}"
        );
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("\nplex:x:990:990:"), "{passwd}");
    assert!(
        healthcheck(&root, &image_env, &run.listen).success(),
        "healthcheck while Plex answers"
    );

    // A scan runs Plex Media Scanner, the image's binary, below Plex; it
    // adds a new film, which Plex writes to its WAL.
    let film = root.join("data/media/Movies/New Film (2024)/New Film (2024).mkv");
    std::fs::create_dir_all(film.parent().unwrap()).unwrap();
    std::fs::write(&film, b"\x1a\x45\xdf\xa3 a new film").unwrap();
    let reply = get(
        &format!("http://{}/library/sections/1/refresh", run.listen),
        &[("X-Plex-Token", &token)],
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let deadline = Instant::now() + WAIT;
    let scanners = loop {
        let found = scanner_processes(container.init);
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: no Plex Media Scanner within {WAIT:?} of a scan; log:\n{}",
            tail(&plex_log(&root), 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", scanners[0])).unwrap(),
        root.join(PMS_BINARY.trim_start_matches('/'))
    );
    // Everything Plex and the first run left under /config and /transcode
    // is plex's (the runner's files were root's).
    assert_eq!(
        not_owned_by(&root.join("config"), PLEX_ID, PLEX_ID),
        Vec::<String>::new()
    );
    assert_eq!(
        not_owned_by(&root.join("transcode"), PLEX_ID, PLEX_ID),
        Vec::<String>::new()
    );

    let db = root.join(APP_SUPPORT).join(LIBRARY_DB);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let deadline = Instant::now() + WAIT;
    while !plex_log(&root).contains("1 added") {
        assert!(
            Instant::now() < deadline,
            "hang guard: the new film was not added within {WAIT:?}; log:\n{}",
            tail(&plex_log(&root), 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the scan's writes are in the WAL"
    );

    // docker stop: a clean exit, the WAL checkpointed into the DB.
    let status = container.stop();
    assert!(status.success(), "{status:?}\n{}", container.console());
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL content left: {} bytes",
        std::fs::metadata(&wal).unwrap().len()
    );
    assert!(
        !healthcheck(&root, &image_env, &run.listen).success(),
        "healthcheck with Plex down"
    );
    // Plex SQLite, as the runner runs it (as the DB's owner, read-only):
    // the DB is sound; a copy with a table's page header zeroed is not.
    let in_root = Path::new("/").join(APP_SUPPORT).join(LIBRARY_DB);
    let (out, err) = plex_sqlite(&root, &image_env, &in_root);
    assert_eq!(out.trim(), "ok", "{err}");
    let damaged = root.join("tmp/damaged.db");
    std::fs::copy(&db, &damaged).unwrap();
    zero_page_header(&damaged, "metadata_items");
    let (out, err) = plex_sqlite(&root, &image_env, Path::new("/tmp/damaged.db"));
    assert!(
        out.trim() != "ok" && !(out.trim().is_empty() && err.is_empty()),
        "a damaged DB passed: {out} {err}"
    );
    println!("Plex SQLite on a damaged DB: {} {}", out.trim(), err.trim());
    drop(container);

    // Restarted (the marker is there): no first run, whatever the
    // variables say now; the same server.
    run.claim = plextv.claim_token();
    run.advertise = "http://10.9.9.9:32400/".into();
    let console = dir.path().join("console-2.log");
    let mut container = Container::start(&root, &image_env, &run.pairs(), &console);
    let identity = wait_identity(&mut container, &root, &run.listen);
    assert_eq!(
        exchanges(&plextv),
        1,
        "no second exchange: {:?}",
        plextv.calls()
    );
    assert_eq!(identity["machineIdentifier"], processed);
    let second = prefs(&root);
    assert_eq!(pref(&second, "MachineIdentifier"), Some(machine.as_str()));
    assert_eq!(pref(&second, "PlexOnlineToken"), Some(token.as_str()));
    assert_eq!(
        pref(&second, "customConnections"),
        Some("http://10.1.2.3:32400/"),
        "first run skipped"
    );
    assert!(container.stop().success(), "{}", container.console());
    drop(container);

    // A new container on the same /config (no marker in its root): the
    // first run again, which keeps the ids and the token (no exchange)
    // and, the prefs being plex's already, leaves other owners alone.
    std::fs::remove_file(root.join(FIRST_RUN_MARKER.trim_start_matches('/'))).unwrap();
    let foreign = root.join("config/left-by-root");
    std::fs::write(&foreign, "x").unwrap();
    let console = dir.path().join("console-3.log");
    let mut container = Container::start(&root, &image_env, &run.pairs(), &console);
    let identity = wait_identity(&mut container, &root, &run.listen);
    assert_eq!(
        exchanges(&plextv),
        1,
        "a claimed server is not claimed again"
    );
    assert_eq!(identity["machineIdentifier"], processed);
    let third = prefs(&root);
    assert_eq!(pref(&third, "MachineIdentifier"), Some(machine.as_str()));
    assert_eq!(pref(&third, "PlexOnlineToken"), Some(token.as_str()));
    assert_eq!(
        pref(&third, "customConnections"),
        Some("http://10.9.9.9:32400/"),
        "first run done"
    );
    assert_eq!(
        std::fs::metadata(&foreign).unwrap().uid(),
        0,
        "no ownership walk"
    );
    assert!(container.stop().success(), "{}", container.console());
}
