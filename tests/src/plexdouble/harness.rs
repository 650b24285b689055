//! Starting the doubles from tests: each runs as its own process on a free
//! loopback port, is waited for until it answers, and is killed on drop.
//! Also a minimal blocking HTTP client (tests must see exact statuses and
//! set any header) and XML attribute extraction for assertions.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use quick_xml::events::Event;

use crate::bins::workspace_bin;

/// A port nothing listens on right now (the OS picked it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The double's process, with its stderr kept in a temporary file.
struct Process {
    child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Process {
    fn spawn(args: &[String], env: &[(&str, &str)]) -> Process {
        let stderr = tempfile::NamedTempFile::new().expect("a temporary file");
        let mut command = Command::new(workspace_bin("plex-double"));
        // Only what the test sets: nothing inherited configures the double.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PLEX_DOUBLE_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("the stderr file"));
        let child = command.spawn().expect("plex-double starts");
        Process { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// SIGTERM, then wait up to `timeout`; kills and panics past it.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // Already exited is fine: the wait below reports it.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match self.wait(timeout) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                panic!("plex-double did not stop within {timeout:?} of SIGTERM");
            }
        }
    }

    /// The exit status, if the process ends within `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PMS double.
pub struct PlexDouble {
    process: Process,
    pub addr: SocketAddr,
    pub url: String,
    pub app_support: PathBuf,
}

impl PlexDouble {
    /// Starts `plex-double server --app-support DIR --listen <free port>`
    /// with `args` and `env` added, and waits until `/identity` answers
    /// and the start-up window is over (library writes accepted).
    pub fn start(app_support: &Path, args: &[&str], env: &[(&str, &str)]) -> PlexDouble {
        let mut double = PlexDouble::spawn(app_support, args, env);
        if let Err(error) = double.wait_ready(Duration::from_secs(30)) {
            panic!("{error}");
        }
        double.wait_started(Duration::from_secs(60));
        double
    }

    /// Waits for the log line that closes this process's start-up window
    /// (or for the process to end: a test of a crash sees it exit).
    pub fn wait_started(&mut self, timeout: Duration) {
        let line = crate::plexdouble::pms::startup::finished_line(self.pid());
        wait_for("the end of the start-up window", timeout, || {
            let exited = matches!(self.process.child.try_wait(), Ok(Some(_)));
            (exited || self.log().contains(&line)).then_some(())
        });
    }

    /// Starts it without waiting for it to answer.
    pub fn spawn(app_support: &Path, args: &[&str], env: &[(&str, &str)]) -> PlexDouble {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut all = vec![
            "server".to_string(),
            "--app-support".into(),
            app_support.display().to_string(),
            "--listen".into(),
            addr.to_string(),
        ];
        // GDM on a port of its own (the default, 32414, is one per host).
        if !args.contains(&"--gdm-port") {
            all.extend(["--gdm-port".into(), free_port().to_string()]);
        }
        all.extend(args.iter().map(|a| a.to_string()));
        PlexDouble {
            process: Process::spawn(&all, env),
            addr,
            url: format!("http://{addr}"),
            app_support: app_support.to_path_buf(),
        }
    }

    /// Polls `/identity` until it answers 200; the error carries the last
    /// answer, stderr and the log's tail.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match get(&self.url("/identity"), &[]) {
                Ok(reply) if reply.status == 200 => return Ok(()),
                Ok(reply) => last = format!("status {}: {}", reply.status, reply.body),
                Err(error) => last = error.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the PMS double did not answer /identity within {timeout:?} (last: {last})\nstderr:\n{}\nlog tail:\n{}",
            self.process.stderr(),
            tail(&self.log(), 20)
        ))
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.app_support.join("Logs/Plex Media Server.log"))
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn library_db(&self) -> PathBuf {
        self.app_support
            .join("Plug-in Support/Databases/com.plexapp.plugins.library.db")
    }

    pub fn terminate(&mut self) -> ExitStatus {
        self.process.terminate(Duration::from_secs(15))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait(timeout)
    }
}

/// The plex.tv double.
pub struct PlexTvDouble {
    process: Process,
    pub url: String,
    pub account_token: String,
}

impl PlexTvDouble {
    /// Starts `plex-double plextv --account-token TOKEN` with `args` added
    /// and waits until it answers.
    pub fn start(account_token: &str, args: &[&str]) -> PlexTvDouble {
        let addr = format!("{}:{}", crate::listen_host(), free_port());
        let mut all = vec![
            "plextv".to_string(),
            "--listen".into(),
            addr.clone(),
            "--account-token".into(),
            account_token.into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let double = PlexTvDouble {
            process: Process::spawn(&all, &[]),
            url: format!("http://{addr}"),
            account_token: account_token.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(&double.url("/__double/calls"), &[]).is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "the plex.tv double did not answer; stderr:\n{}",
                double.process.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        double
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    /// A fresh claim token, as the account would get one.
    pub fn claim_token(&self) -> String {
        let reply = get(
            &self.url("/api/claim/token.json"),
            &[("X-Plex-Token", &self.account_token)],
        )
        .expect("plex.tv double answers");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        json["token"].as_str().expect("a token").to_string()
    }

    /// Every token the double issued so far: claim tokens and the tokens
    /// of the servers claimed with them.
    pub fn issued_tokens(&self) -> Vec<String> {
        let reply = get(&self.url("/__double/tokens"), &[]).expect("plex.tv double answers");
        serde_json::from_str(&reply.body).expect("JSON array of strings")
    }

    /// A claim token's state in the double: `{"used": _, "expired": _}`
    /// (null for a token it never issued).
    pub fn claim(&self, token: &str) -> serde_json::Value {
        let reply = get(&self.url("/__double/claims"), &[]).expect("plex.tv double answers");
        let claims: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON object");
        claims[token].clone()
    }

    /// Every call the double received so far.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        let reply = get(&self.url("/__double/calls"), &[]).expect("plex.tv double answers");
        serde_json::from_str(&reply.body).expect("JSON array")
    }
}

pub use crate::http::{Reply, get, request};

/// The attributes of every `element` in an XML document, in order.
pub fn xml_elements(xml: &str, element: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut found = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if e.name().as_ref() == element.as_bytes() =>
            {
                let attrs = e
                    .attributes()
                    .filter_map(Result::ok)
                    .map(|a| {
                        (
                            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                            a.unescape_value()
                                .map(|v| v.into_owned())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                found.push(attrs);
            }
            Ok(Event::Eof) => return found,
            Err(error) => panic!("bad XML ({error}): {xml}"),
            _ => {}
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Processes that look like Plex's scanner (argv[0] `Plex Media Scanner`)
/// and are children of `parent`.
pub fn scanner_processes(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // ppid is the second field after the parenthesised comm.
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            argv0 == b"Plex Media Scanner" && ppid == Some(parent)
        })
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with
/// `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
