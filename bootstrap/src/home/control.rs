//! Stopping and starting the home Plex, and knowing when it really did.
//!
//! A stop or start is a command (docker, systemctl, or the user's own argv,
//! run without a shell) followed by a bounded wait on `GET /identity`. The
//! stop command must return once Plex has exited, as `docker stop` and
//! `systemctl stop` do: the wait that follows only proves the HTTP side is
//! gone. Errors name the command, its exit status and the tail of its output.

use std::io::{Read, Seek};
use std::process::Stdio;
use std::time::{Duration, Instant};

use runner::plex::PlexError;
use runner::plex::api::{Identity, PlexApi};
use runner::plexdb::PlexSqlite;
use runner::secret::Secret;

/// How long a stop or start command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Between two `/identity` probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Output kept in an error message.
const TAIL_LINES: usize = 5;
const TAIL_CHARS: usize = 400;

pub const DEFAULT_URL: &str = "http://127.0.0.1:32400";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{what}: no command given")]
    Empty { what: &'static str },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("`{command}` did not finish within {}", humantime::format_duration(*.after))]
    TimedOut { command: String, after: Duration },
    #[error("Plex at {url} still answers {} after the stop command", humantime::format_duration(*.after))]
    StillAnswering { url: String, after: Duration },
    #[error("Plex at {url} did not answer /identity within {} (last: {last})", humantime::format_duration(*.after))]
    NotReady {
        url: String,
        after: Duration,
        last: String,
    },
    #[error(transparent)]
    Api(#[from] PlexError),
}

/// How the home Plex is stopped and started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlexControl {
    Docker {
        container: String,
    },
    Systemd {
        unit: String,
    },
    /// Argv vectors, run without a shell.
    Command {
        stop: Vec<String>,
        start: Vec<String>,
    },
}

impl PlexControl {
    pub fn stop_argv(&self) -> Vec<String> {
        match self {
            PlexControl::Docker { container } => argv(&["docker", "stop", container]),
            PlexControl::Systemd { unit } => argv(&["systemctl", "stop", unit]),
            PlexControl::Command { stop, .. } => stop.clone(),
        }
    }

    pub fn start_argv(&self) -> Vec<String> {
        match self {
            PlexControl::Docker { container } => argv(&["docker", "start", container]),
            PlexControl::Systemd { unit } => argv(&["systemctl", "start", unit]),
            PlexControl::Command { start, .. } => start.clone(),
        }
    }

    /// Plex's own SQLite shell at home: the container's image for a
    /// Plex in Docker (the container itself may be stopped), else a native
    /// install's, when there is one.
    pub fn plex_sqlite(&self) -> Option<PlexSqlite> {
        match self {
            PlexControl::Docker { container } => {
                let out = std::process::Command::new("docker")
                    .args(["inspect", "--format", "{{.Config.Image}}", container])
                    .stdin(Stdio::null())
                    .output();
                match out {
                    Ok(out) if out.status.success() => {
                        let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
                        (!image.is_empty()).then_some(PlexSqlite::Image(image))
                    }
                    _ => {
                        tracing::warn!(%container, "cannot read the Plex container's image: the integrity check uses the bundled SQLite");
                        None
                    }
                }
            }
            _ => PlexSqlite::native(),
        }
    }

    pub fn stop(&self) -> Result<(), ControlError> {
        run("stop Plex", &self.stop_argv(), COMMAND_TIMEOUT)
    }

    pub fn start(&self) -> Result<(), ControlError> {
        run("start Plex", &self.start_argv(), COMMAND_TIMEOUT)
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// The home server: how to control it and where its API answers.
#[derive(Debug, Clone)]
pub struct HomePlex {
    pub control: PlexControl,
    /// e.g. [`DEFAULT_URL`].
    pub url: String,
    pub token: Option<Secret>,
}

impl HomePlex {
    /// `url` defaults to [`DEFAULT_URL`].
    pub fn new(control: PlexControl, url: Option<&str>, token: Option<Secret>) -> HomePlex {
        HomePlex {
            control,
            url: url.unwrap_or(DEFAULT_URL).trim_end_matches('/').to_string(),
            token,
        }
    }

    /// A client for the API, with the token when there is one.
    pub fn api(&self) -> Result<PlexApi, ControlError> {
        let mut api = PlexApi::new(&self.url)?;
        if let Some(token) = &self.token {
            api.set_token(token.clone());
        }
        Ok(api)
    }

    /// Whether anything answers `/identity` (any HTTP status counts).
    pub fn is_answering(&self) -> Result<bool, ControlError> {
        let api = self.api()?;
        Ok(block_on(|| async { api.probe_identity().await.is_ok() }))
    }

    /// `GET /identity` of the running server.
    pub fn identity(&self) -> Result<Identity, ControlError> {
        let api = self.api()?;
        Ok(block_on(|| async { api.identity().await })?)
    }

    /// The running server's version.
    pub fn version(&self) -> Result<String, ControlError> {
        Ok(self.identity()?.version)
    }

    /// Runs the stop command, then waits until `/identity` no longer answers.
    pub fn stop_and_wait(&self, timeout: Duration) -> Result<(), ControlError> {
        let api = self.api()?;
        let started = Instant::now();
        self.control.stop()?;
        block_on(|| async {
            loop {
                if api.probe_identity().await.is_err() {
                    tracing::info!(url = %self.url, "home Plex stopped");
                    return Ok(());
                }
                if started.elapsed() >= timeout {
                    return Err(ControlError::StillAnswering {
                        url: self.url.clone(),
                        after: timeout,
                    });
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        })
    }

    /// Runs the start command, then waits (bounded) until `/identity`
    /// answers 200; the error quotes the last answer.
    pub fn start_and_wait(&self, timeout: Duration) -> Result<Identity, ControlError> {
        let api = self.api()?;
        let started = Instant::now();
        self.control.start()?;
        block_on(|| async {
            loop {
                let last = match api.probe_identity().await {
                    Ok((status, _)) if status.is_success() => {
                        let identity = api.identity().await?;
                        tracing::info!(url = %self.url, version = %identity.version, "home Plex answers");
                        return Ok(identity);
                    }
                    Ok((status, body)) => {
                        format!("HTTP {}: {}", status.as_u16(), one_line(&body, 200))
                    }
                    Err(e) => e.to_string(),
                };
                if started.elapsed() >= timeout {
                    return Err(ControlError::NotReady {
                        url: self.url.clone(),
                        after: timeout,
                        last,
                    });
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        })
    }
}

/// Runs an async call to completion on a private runtime in its own
/// thread: works from plain code and from inside a caller's runtime alike.
/// The future is made there, so no connection outlives its runtime.
pub fn block_on<T, F, Fut>(make: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the Plex API")
                    .block_on(make())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `argv` (no shell) with its output in a temporary file, so that a
/// daemon it leaves behind holding stdout cannot hang the wait.
fn run(what: &'static str, argv: &[String], timeout: Duration) -> Result<(), ControlError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ControlError::Empty { what });
    };
    let command = display(argv);
    let spawn_error = |source| ControlError::Spawn {
        command: command.clone(),
        source,
    };
    let mut output = tempfile::tempfile().map_err(spawn_error)?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.try_clone().map_err(spawn_error)?)
        .stderr(output.try_clone().map_err(spawn_error)?)
        .spawn()
        .map_err(spawn_error)?;
    tracing::info!(%command, "{what}");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_error)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ControlError::TimedOut {
                command,
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = output
        .rewind()
        .and_then(|_| output.read_to_string(&mut text));
    Err(ControlError::Failed {
        command,
        status: status.to_string(),
        output: tail(&text),
    })
}

/// The last lines of a command's output, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    if joined.is_empty() {
        return "no output".into();
    }
    let chars: Vec<char> = joined.chars().collect();
    let start = chars.len().saturating_sub(TAIL_CHARS);
    let cut: String = chars[start..].iter().collect();
    if start > 0 { format!("…{cut}") } else { cut }
}

fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "(empty body)".into();
    }
    line.chars().take(max).collect()
}

/// An argv as a user would type it.
fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty()
                || a.chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c == '"')
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        argv(&["sh", "-c", script])
    }

    #[test]
    fn docker_and_systemd_commands() {
        let docker = PlexControl::Docker {
            container: "plex".into(),
        };
        assert_eq!(docker.stop_argv(), ["docker", "stop", "plex"]);
        assert_eq!(docker.start_argv(), ["docker", "start", "plex"]);
        let unit = PlexControl::Systemd {
            unit: "plexmediaserver".into(),
        };
        assert_eq!(unit.stop_argv(), ["systemctl", "stop", "plexmediaserver"]);
    }

    #[test]
    fn a_failing_command_says_which_with_status_and_output() {
        let control = PlexControl::Command {
            stop: sh("echo starting; echo 'cannot stop: permission denied' >&2; exit 3"),
            start: vec!["/nonexistent/plex-start".into()],
        };
        let error = control.stop().unwrap_err().to_string();
        assert!(error.starts_with("`sh -c 'echo starting;"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.contains("cannot stop: permission denied"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let error = control.start().unwrap_err().to_string();
        assert!(
            error.starts_with("cannot run `/nonexistent/plex-start`"),
            "{error}"
        );
    }

    #[test]
    fn a_daemon_left_holding_the_output_does_not_hang_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("daemon.pid");
        // The daemon holds the command's output for ten minutes, past the
        // hang guard below: only a wait that does not read to its end
        // returns while it still runs.
        let control = PlexControl::Command {
            stop: vec![],
            start: sh(&format!(
                "sleep 600 & echo $! > '{}'; echo started",
                pid_file.display()
            )),
        };
        let (done, started) = std::sync::mpsc::channel();
        let starter = control.clone();
        std::thread::spawn(move || done.send(starter.start()));
        let outcome = started
            .recv_timeout(Duration::from_secs(120))
            .expect("hang guard: start waited for the daemon holding its output");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let daemon = nix::unistd::Pid::from_raw(pid);
        let alive = nix::sys::signal::kill(daemon, None).is_ok();
        let _ = nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGKILL);
        outcome.unwrap();
        assert!(alive, "start returned only once the daemon was gone");
        assert!(matches!(control.stop(), Err(ControlError::Empty { .. })));
    }

    #[test]
    fn a_command_past_its_time_is_killed() {
        let error = run("stop Plex", &sh("sleep 30"), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, ControlError::TimedOut { .. }), "{error}");
    }

    #[test]
    fn waits_are_bounded_and_quote_the_last_probe() {
        let plex = HomePlex::new(
            PlexControl::Command {
                stop: sh("true"),
                start: sh("true"),
            },
            Some(&format!("http://127.0.0.1:{}", free_port())),
            None,
        );
        // Nothing listens: stopped at once, never ready.
        plex.stop_and_wait(Duration::from_secs(5)).unwrap();
        let error = plex
            .start_and_wait(Duration::from_millis(600))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("did not answer /identity within 600ms"),
            "{error}"
        );
        assert!(error.contains("does not answer"), "{error}");
        // And it works from inside a caller's runtime too.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async { plex.stop_and_wait(Duration::from_secs(5)).unwrap() });
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
