//! Starting and stopping the Plex Media Server process, however it runs on
//! the instance: the official container pinned to the home version, the
//! Debian package's service, or the test double. Everything else about Plex
//! goes through its HTTP API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, Command};

use crate::config::{PlexRuntime, RunConfig};

/// Where and how Plex runs, from the run config.
#[derive(Debug, Clone)]
pub struct Launch {
    pub runtime: PlexRuntime,
    /// The pinned version: the container tag.
    pub version: String,
    pub app_support: PathBuf,
    pub port: u16,
    pub uid: u32,
    pub gid: u32,
    pub media_mount: PathBuf,
    /// Docker's `/config` (the folder above `Library/`).
    pub config_dir: PathBuf,
    pub transcode_dir: PathBuf,
    /// Where the process's own stdout/stderr go (the double; docker logs).
    pub console_log: PathBuf,
    /// Docker container name: one per run, so a restarted runner finds it.
    pub container: String,
    /// Where the double finds plex.tv (real Plex knows it).
    pub plextv_url: String,
}

impl Launch {
    pub fn from_config(cfg: &RunConfig, logs_dir: &Path) -> Launch {
        let plex = cfg.plex();
        Launch {
            runtime: plex.runtime.clone(),
            version: cfg.plex_version().to_string(),
            app_support: plex.app_support_dir.clone(),
            port: plex.port,
            uid: plex.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
            gid: plex.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw()),
            media_mount: cfg.media_mount_point().to_path_buf(),
            config_dir: cfg.work_dir().join("plex"),
            transcode_dir: cfg.work_dir().join("transcode"),
            console_log: logs_dir.join("plex-console.log"),
            container: format!("plex-burst-{}", cfg.run_id()),
            plextv_url: plex.plextv_url.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The main log Plex writes in its app-support folder.
    pub fn server_log(&self) -> PathBuf {
        self.app_support.join("Logs").join("Plex Media Server.log")
    }
}

/// A running Plex.
pub enum PlexProcess {
    Double(Child),
    Docker { container: String },
    Native,
}

const NATIVE_UNIT: &str = "plexmediaserver.service";
/// Plex may take a while to finish writes and checkpoint on stop.
const STOP_GRACE: Duration = Duration::from_secs(120);

impl PlexProcess {
    pub async fn start(launch: &Launch) -> Result<PlexProcess> {
        if let Some(dir) = launch.console_log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        match &launch.runtime {
            PlexRuntime::Double { binary } => {
                let binary = match binary {
                    Some(b) => b.as_path().to_path_buf(),
                    None => double_binary()?,
                };
                start_double(&binary, launch).map(PlexProcess::Double)
            }
            PlexRuntime::Docker { image } => {
                start_container(&format!("{image}:{}", launch.version), launch).await?;
                Ok(PlexProcess::Docker {
                    container: launch.container.clone(),
                })
            }
            PlexRuntime::Native => {
                run("systemctl", &["start", NATIVE_UNIT]).await?;
                Ok(PlexProcess::Native)
            }
        }
    }

    /// `Some(reason)` once the process is gone.
    pub async fn exited(&mut self) -> Option<String> {
        match self {
            PlexProcess::Double(child) => match child.try_wait() {
                Ok(Some(status)) => Some(format!("the Plex process exited ({status})")),
                Ok(None) => None,
                Err(e) => Some(format!("cannot watch the Plex process: {e}")),
            },
            PlexProcess::Docker { container } => {
                match output(
                    "docker",
                    &["inspect", "-f", "{{.State.Running}}", container],
                )
                .await
                {
                    Ok(s) if s.trim() == "true" => None,
                    Ok(_) => Some(format!("the Plex container {container} stopped")),
                    Err(e) => Some(format!("{e:#}")),
                }
            }
            PlexProcess::Native => match output("systemctl", &["is-active", NATIVE_UNIT]).await {
                Ok(s) if s.trim() == "active" => None,
                _ => Some(format!("{NATIVE_UNIT} is not active")),
            },
        }
    }

    /// Plex's main process, to tell its scanners from any other's.
    pub async fn main_pid(&self) -> Option<u32> {
        let pid = match self {
            PlexProcess::Double(child) => return child.id(),
            PlexProcess::Docker { container } => {
                output("docker", &["inspect", "-f", "{{.State.Pid}}", container]).await
            }
            PlexProcess::Native => {
                output(
                    "systemctl",
                    &["show", "-p", "MainPID", "--value", NATIVE_UNIT],
                )
                .await
            }
        };
        pid.ok()?.trim().parse().ok().filter(|p| *p > 0)
    }

    /// Stops Plex and waits until it has let go of its DB.
    pub async fn stop(&mut self) -> Result<()> {
        match self {
            PlexProcess::Double(child) => stop_child(child, STOP_GRACE).await,
            PlexProcess::Docker { container } => {
                let grace = STOP_GRACE.as_secs().to_string();
                run("docker", &["stop", "-t", &grace, container]).await?;
                run("docker", &["rm", container]).await
            }
            PlexProcess::Native => run("systemctl", &["stop", NATIVE_UNIT]).await,
        }
    }
}

/// `plex-double` beside the runner binary, else on PATH.
fn double_binary() -> Result<PathBuf> {
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("plex-double")))
        .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("plex-double"))
        .find(|p| p.is_file())
        .context("plex.runtime = \"double\" but no plex-double binary beside the runner or on PATH: set plex.double_binary")
}

fn start_double(binary: &Path, launch: &Launch) -> Result<Child> {
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.console_log)
        .with_context(|| format!("cannot open {}", launch.console_log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("server")
        .arg("--app-support")
        .arg(&launch.app_support)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", launch.port))
        // Like the container's ALLOWED_NETWORKS: the runner may talk to the
        // unclaimed server from loopback without a token.
        .arg("--allowed-networks")
        .arg("127.0.0.1/32")
        .arg("--plextv-url")
        .arg(&launch.plextv_url)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    // The double dies with the runner (as a service's children do), so a
    // restarted runner never finds a stray one holding the port.
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start the Plex double {}", binary.display()))
}

async fn start_container(image: &str, launch: &Launch) -> Result<()> {
    // A container left by a killed runner holds the port and the DB: stop
    // it properly before starting a fresh one.
    if output("docker", &["inspect", &launch.container])
        .await
        .is_ok()
    {
        tracing::warn!(container = %launch.container, "a Plex container from an earlier attempt is still there: stopping it");
        let grace = STOP_GRACE.as_secs().to_string();
        let _ = run("docker", &["stop", "-t", &grace, &launch.container]).await;
        run("docker", &["rm", "-f", &launch.container]).await?;
    }
    for dir in [&launch.config_dir, &launch.transcode_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mount = launch.media_mount.display().to_string();
    let args = [
        "run".to_string(),
        "--detach".into(),
        "--name".into(),
        launch.container.clone(),
        "--network".into(),
        "host".into(),
        "--env".into(),
        format!("PLEX_UID={}", launch.uid),
        "--env".into(),
        format!("PLEX_GID={}", launch.gid),
        "--env".into(),
        "TZ=UTC".into(),
        "--env".into(),
        "ALLOWED_NETWORKS=127.0.0.1/32".into(),
        "--volume".into(),
        format!("{}:/config", launch.config_dir.display()),
        "--volume".into(),
        format!("{}:/transcode", launch.transcode_dir.display()),
        // The FUSE mount seen at the same path inside, read-only; rslave so
        // a remount on the host reaches the container.
        "--mount".into(),
        format!("type=bind,source={mount},target={mount},readonly,bind-propagation=rslave"),
        image.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("docker", &args).await
}

async fn stop_child(child: &mut Child, grace: Duration) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            let status = status?;
            if !status.success() {
                tracing::warn!(%status, "Plex exited with an error on stop");
            }
            Ok(())
        }
        Err(_) => {
            child.kill().await?;
            bail!(
                "Plex did not stop within {}: killed",
                humantime::format_duration(grace)
            )
        }
    }
}

async fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).await.map(drop)
}

async fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `lines` lines of a log file, for error reports.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
