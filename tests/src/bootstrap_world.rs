//! What the end-to-end tests of `bootstrap` share (tests/tests/bootstrap.rs
//! on loopback, tests/tests/vm.rs in QEMU): the home Plex they snapshot and
//! install into, the per-run keys the Scaleway double hands out, the
//! `bootstrap` binary run as a user runs it, and the logs a run ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::bins::workspace_bin;
use crate::plexdouble::harness::{free_port, get, wait_for};
use crate::s3server::S3Server;
use crate::scwdouble::harness::ScwDouble;

/// The repository's root folder.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A per-run key as Scaleway would mint it (`SCW` + 17 characters): the
/// double hands it out, the S3 server accepts it, as on Scaleway where an
/// API key is also an Object Storage key. Made at run time: no key-shaped
/// literal lives in the repository.
pub fn run_key() -> (String, String) {
    let n: u64 = rand::random();
    let access = format!("SCW{:017}", n % 100_000_000_000_000_000);
    let secret = format!("{:08x}-1111-4111-8111-{:012x}", n as u32, n >> 16);
    (access, secret)
}

/// The home Plex: the Plex double on a home app-support folder, started
/// and stopped by `tests/instance/home-plex.sh` (what bootstrap's
/// `control = "command"` runs) from its control folder.
pub struct HomePlex {
    /// The control folder: its `env`, the pid and Plex's `plex.log`.
    pub ctl: PathBuf,
    /// `host:port` it listens on.
    pub addr: String,
}

impl HomePlex {
    /// Writes the control folder `ctl` for a home Plex on `app_support`,
    /// on a free loopback port. Starts nothing.
    pub fn new(ctl: PathBuf, app_support: &Path) -> HomePlex {
        std::fs::create_dir_all(&ctl).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            ctl.join("env"),
            format!(
                "BIN='{}'\nAPP='{}'\nADDR='{addr}'\n",
                workspace_bin("plex-double").display(),
                app_support.display()
            ),
        )
        .unwrap();
        HomePlex { ctl, addr }
    }

    /// The control script, for `[home] start_command` and `stop_command`.
    pub fn script() -> PathBuf {
        repo().join("tests/instance/home-plex.sh")
    }

    fn command(&self, action: &str) -> Command {
        let mut command = Command::new(HomePlex::script());
        command.args([action, &self.ctl.display().to_string()]);
        command
    }

    /// `home-plex.sh ACTION CTL` (`start` or `stop`), which must succeed.
    pub fn control(&self, action: &str) {
        let status = self.command(action).status().unwrap();
        assert!(status.success(), "home Plex {action}");
    }

    /// Starts it and waits until it answers.
    pub fn start(&self) {
        self.control("start");
        wait_for("the home Plex", Duration::from_secs(30), || {
            get(&format!("http://{}/identity", self.addr), &[])
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// Stops it, whatever happens: for a test world's `Drop`.
    pub fn stop_quietly(&self) {
        let _ = self.command("stop").status();
    }
}

/// `bootstrap --config CONFIG` as a user runs it, with the secrets the
/// tests' configs name in its environment (`TEST_SCW_SECRET`,
/// `TEST_S3_KEY`, `TEST_S3_SECRET`, `TEST_PLEX_TOKEN`); the caller adds
/// the arguments.
pub fn bootstrap_command(
    config: &Path,
    scw: &ScwDouble,
    s3: &S3Server,
    plex_token: &str,
) -> Command {
    let conn = s3.connection();
    let mut command = Command::new(workspace_bin("bootstrap"));
    command
        .arg("--config")
        .arg(config)
        .env("TEST_SCW_SECRET", scw.secret_key())
        .env("TEST_S3_KEY", &conn.access_key)
        .env("TEST_S3_SECRET", conn.secret_key.expose())
        .env("TEST_PLEX_TOKEN", plex_token);
    command
}

/// The stdout of `bootstrap ARGS`, which must have succeeded: a failure
/// panics with its stdout, its stderr and `more()` (what the test can show
/// of the instances).
pub fn ok_stdout(out: &Output, args: &[&str], more: impl FnOnce() -> String) -> String {
    assert!(
        out.status.success(),
        "bootstrap {args:?} failed:\n{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        more()
    );
    text(&out.stdout)
}

/// `(name under logs/, text)` of every log the run shipped to `bucket`
/// (the bucket's folder in the S3 server's data dir).
pub fn shipped_logs(bucket: &Path, run_id: &str) -> Vec<(String, String)> {
    let root = bucket.join(format!("runs/{run_id}/logs"));
    let mut found = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let name = path.strip_prefix(&root).unwrap().display().to_string();
                found.push((name, text));
            }
        }
    }
    found
}
