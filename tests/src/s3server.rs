//! A real S3 server for tests: `rclone serve s3` on a free loopback port,
//! over a temporary directory whose top-level folders are the buckets.
//! Killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runner::s3::Connection;
use runner::secret::Secret;
use tempfile::TempDir;

/// Realistic lengths: rclone refuses very short keys.
pub const ACCESS_KEY: &str = "plexbursttestkey";
pub const SECRET_KEY: &str = "plexbursttestsecret0123456789";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl S3Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the server with extra rclone flags (e.g. `--bwlimit 100M`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        let mut dir = tempfile::Builder::new()
            .prefix("plex-burst-s3-")
            .tempdir()
            .expect("create the S3 server's temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create the S3 server's data dir");
        let rclone = rclone_path();
        // The free port is found by binding port 0; another process could
        // take it before rclone does, so a failed start is tried again.
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = free_port();
            let log = dir.path().join("rclone.log");
            let child = Command::new(&rclone)
                .args(["serve", "s3", "--addr", &addr.to_string()])
                .args(["--auth-key", &format!("{ACCESS_KEY},{SECRET_KEY}")])
                .args(["--log-file", &log.to_string_lossy()])
                .args(extra_args)
                .arg(&data)
                .env("RCLONE_CONFIG", dir.path().join("rclone.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", rclone.display()));
            let mut server = S3Server { child, addr, dir };
            if server.wait_ready(Duration::from_secs(30)) {
                return server;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            dir = server.into_dir();
        }
        panic!("rclone serve s3 did not start; its log:\n{last_log}");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connection straight to this server.
    pub fn connection(&self) -> Connection {
        self.connection_via(&self.endpoint())
    }

    /// A connection with this server's credentials through another endpoint
    /// (a fault proxy in front of it).
    pub fn connection_via(&self, endpoint: &str) -> Connection {
        Connection {
            endpoint: Some(endpoint.to_string()),
            region: REGION.into(),
            path_style: true,
            access_key: ACCESS_KEY.into(),
            secret_key: Secret::new(SECRET_KEY),
        }
    }

    /// The folder holding the buckets.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A bucket is a top-level folder of the data dir.
    pub fn create_bucket(&self, name: &str) {
        let path = self.data_dir().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create bucket {}: {e}", path.display()));
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rclone.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the process and hands back the temp dir (for a retry).
    fn into_dir(mut self) -> TempDir {
        self.stop();
        let dir = tempfile::Builder::new()
            .prefix("plex-burst-s3-")
            .tempdir()
            .expect("create a temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PLEX_BURST_RCLONE`, else the pinned copy in `.local/tools/bin`, else
/// `rclone` on PATH. Never skips silently: without rclone the tests cannot run.
pub fn rclone_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PLEX_BURST_RCLONE") {
        return PathBuf::from(path);
    }
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/tools/bin/rclone");
    if pinned.is_file() {
        return pinned;
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("rclone"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| panic!("rclone not found: run ./scripts/test (it installs the pinned rclone) or set PLEX_BURST_RCLONE"))
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((crate::listen_host().as_str(), 0)).expect("bind a free port");
    listener.local_addr().expect("read the bound port")
}
