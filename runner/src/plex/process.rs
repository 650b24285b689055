//! Starting and stopping the Plex Media Server process, however it runs on
//! the instance: the official container pinned to the home version, or the
//! test double as a plain process. Everything else about Plex goes through
//! its HTTP API.

use std::collections::BTreeMap;
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
    /// Where the process's own stdout/stderr go (the double's, or the
    /// container's `docker logs` once it ends).
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
    Docker {
        container: String,
        /// Docker's bridge gateway: where the runner's requests come from
        /// as the container sees them.
        gateway: String,
        console_log: PathBuf,
    },
}

/// Who may talk to the Plex of a run without a token: loopback only.
pub const LOOPBACK_NETWORK: &str = "127.0.0.1/32";

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
            PlexRuntime::Docker { image, env } => {
                let image = format!("{image}:{}", launch.version);
                let gateway = start_container(&image, env, launch).await?;
                Ok(PlexProcess::Docker {
                    container: launch.container.clone(),
                    gateway,
                    console_log: launch.console_log.clone(),
                })
            }
        }
    }

    /// The `allowedNetworks` the run's prefs hold: loopback, and with a
    /// bridged container the gateway its published port is proxied from
    /// (pms-docker's README: "localhost will appear to plex as coming from
    /// the docker networking gateway").
    pub fn allowed_networks(&self) -> String {
        match self {
            PlexProcess::Docker { gateway, .. } => format!("{LOOPBACK_NETWORK},{gateway}/32"),
            PlexProcess::Double(_) => LOOPBACK_NETWORK.to_string(),
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
            PlexProcess::Docker { container, .. } => {
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
        }
    }

    /// Plex's main process, to tell its scanners from any other's.
    pub async fn main_pid(&self) -> Option<u32> {
        let pid = match self {
            PlexProcess::Double(child) => return child.id(),
            PlexProcess::Docker { container, .. } => {
                output("docker", &["inspect", "-f", "{{.State.Pid}}", container]).await
            }
        };
        pid.ok()?.trim().parse().ok().filter(|p| *p > 0)
    }

    /// Stops Plex and waits until it has let go of its DB.
    pub async fn stop(&mut self) -> Result<()> {
        match self {
            PlexProcess::Double(child) => stop_child(child, STOP_GRACE).await,
            PlexProcess::Docker {
                container,
                console_log,
                ..
            } => {
                let grace = STOP_GRACE.as_secs().to_string();
                run("docker", &["stop", "-t", &grace, container]).await?;
                save_console(container, console_log).await;
                run("docker", &["rm", container]).await
            }
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
        .arg(LOOPBACK_NETWORK)
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

/// Starts the container; returns the bridge gateway it sees the runner as.
async fn start_container(
    image: &str,
    env: &BTreeMap<String, String>,
    launch: &Launch,
) -> Result<String> {
    // A container left by a killed runner, or one Plex crashed out of,
    // holds the port and the DB: stop it properly (its console kept)
    // before starting a fresh one.
    if output("docker", &["inspect", &launch.container])
        .await
        .is_ok()
    {
        tracing::warn!(container = %launch.container, "a Plex container from an earlier attempt is still there: stopping it");
        let grace = STOP_GRACE.as_secs().to_string();
        let _ = run("docker", &["stop", "-t", &grace, &launch.container]).await;
        save_console(&launch.container, &launch.console_log).await;
        run("docker", &["rm", "-f", &launch.container]).await?;
    }
    for dir in [&launch.config_dir, &launch.transcode_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let gateway = bridge_gateway().await?;
    let args = docker_run_args(image, env, launch, &gateway)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("docker", &args).await?;
    Ok(gateway)
}

/// The default bridge's gateway address (172.17.0.1 unless dockerd is
/// configured otherwise).
async fn bridge_gateway() -> Result<String> {
    let out = output(
        "docker",
        &[
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        ],
    )
    .await?;
    out.split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .with_context(|| format!("docker's bridge network has no IPv4 gateway ({out:?})"))
}

/// Appends the ended container's console (`docker logs`) to the console
/// log that is shipped with the run's logs. Best effort: a console that
/// cannot be read must not stop the run.
async fn save_console(container: &str, console_log: &Path) {
    let saved = async {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(console_log)?;
        let mut header = file.try_clone()?;
        std::io::Write::write_all(
            &mut header,
            format!("===== docker logs of {container}\n").as_bytes(),
        )?;
        let status = Command::new("docker")
            .args(["logs", "--timestamps", container])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "docker logs failed ({status})");
        anyhow::Ok(())
    };
    if let Err(e) = saved.await {
        tracing::warn!(container, "cannot save the Plex container's console: {e:#}");
    }
}

/// `docker run` for the run's Plex. On the default bridge, never the
/// host's network: only Plex's HTTP port is published, on loopback only
/// (Docker's local proxy serves it, no DNAT from outside), and GDM (UDP
/// 32410-32414), DLNA (UDP 1900, TCP 32469) and the rest stay inside the
/// container. ALLOWED_NETWORKS is what the unclaimed server lets in without
/// a token: loopback and the gateway the proxied requests come from.
///
/// The media reach the container through the mount point's parent folder,
/// bound `rslave`: a FUSE mount bound by itself would stay the dead one in
/// the container after rclone is remounted on the host, while mounts made
/// under a slave-bound folder propagate into it.
fn docker_run_args(
    image: &str,
    env: &BTreeMap<String, String>,
    launch: &Launch,
    gateway: &str,
) -> Result<Vec<String>> {
    let shared = launch
        .media_mount
        .parent()
        .filter(|p| *p != Path::new("/"))
        .with_context(|| {
            format!(
                "the media mount {} has no parent folder to share with the container",
                launch.media_mount.display()
            )
        })?
        .display()
        .to_string();
    let mut args = vec![
        "run".to_string(),
        "--detach".into(),
        // Baked into the image: a pull now would outlive the claim token
        // (lessons.md 8) and reach a registry the run has no need of.
        "--pull".into(),
        "never".into(),
        "--name".into(),
        launch.container.clone(),
        "--network".into(),
        "bridge".into(),
        "--publish".into(),
        format!("127.0.0.1:{}:32400/tcp", launch.port),
        "--env".into(),
        format!("PLEX_UID={}", launch.uid),
        "--env".into(),
        format!("PLEX_GID={}", launch.gid),
        "--env".into(),
        "TZ=UTC".into(),
        "--env".into(),
        format!("ALLOWED_NETWORKS={LOOPBACK_NETWORK},{gateway}/32"),
        "--volume".into(),
        format!("{}:/config", launch.config_dir.display()),
        "--volume".into(),
        format!("{}:/transcode", launch.transcode_dir.display()),
        // The FUSE mount seen at the same path inside, read-only.
        "--mount".into(),
        format!("type=bind,source={shared},target={shared},readonly,bind-propagation=rslave"),
    ];
    for (name, value) in env {
        args.push("--env".into());
        args.push(format!("{name}={value}"));
    }
    args.push(image.to_string());
    Ok(args)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            runtime: PlexRuntime::Double { binary: None },
            version: "1.41.3.9314-a0bfb8370".into(),
            app_support: "/w/plex/Library/Application Support/Plex Media Server".into(),
            port: 32401,
            uid: 990,
            gid: 990,
            media_mount: "/mnt/media".into(),
            config_dir: "/w/plex".into(),
            transcode_dir: "/w/transcode".into(),
            console_log: "/w/logs/plex-console.log".into(),
            container: "plex-burst-r1".into(),
            plextv_url: "https://plex.tv".into(),
        }
    }

    #[test]
    fn the_container_is_bridged_and_published_on_loopback_only() {
        let env = BTreeMap::from([("LANG".to_string(), "C.UTF-8".to_string())]);
        let args =
            docker_run_args("plexinc/pms-docker:1.41", &env, &launch(), "172.17.0.1").unwrap();
        let pairs: Vec<(&str, &str)> = args
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        assert!(pairs.contains(&("--network", "bridge")), "{args:?}");
        assert!(!args.iter().any(|a| a == "host"), "{args:?}");
        let published: Vec<&str> = pairs
            .iter()
            .filter(|(flag, _)| matches!(*flag, "--publish" | "-p" | "--expose"))
            .map(|(_, value)| *value)
            .collect();
        assert_eq!(published, ["127.0.0.1:32401:32400/tcp"]);
        assert!(!args.iter().any(|a| a == "--publish-all" || a == "-P"));
        assert!(
            pairs.contains(&("--env", "ALLOWED_NETWORKS=127.0.0.1/32,172.17.0.1/32")),
            "{args:?}"
        );
        // Never a pull at run time; the configured environment passed on.
        assert!(pairs.contains(&("--pull", "never")), "{args:?}");
        assert!(pairs.contains(&("--env", "LANG=C.UTF-8")), "{args:?}");
        assert_eq!(
            args.last().map(String::as_str),
            Some("plexinc/pms-docker:1.41")
        );
    }

    #[test]
    fn the_media_reach_the_container_through_their_parent_folder_bound_rslave() {
        let args = docker_run_args("i", &BTreeMap::new(), &launch(), "172.17.0.1").unwrap();
        assert!(
            args.iter()
                .any(|a| a == "type=bind,source=/mnt,target=/mnt,readonly,bind-propagation=rslave"),
            "{args:?}"
        );
        let at_root = Launch {
            media_mount: "/media".into(),
            ..launch()
        };
        let err = docker_run_args("i", &BTreeMap::new(), &at_root, "172.17.0.1").unwrap_err();
        assert!(err.to_string().contains("no parent folder"), "{err}");
    }

    #[test]
    fn only_loopback_and_the_bridge_gateway_are_allowed_without_a_token() {
        let docker = PlexProcess::Docker {
            container: "c".into(),
            gateway: "172.18.0.1".into(),
            console_log: "/w/logs/plex-console.log".into(),
        };
        assert_eq!(docker.allowed_networks(), "127.0.0.1/32,172.18.0.1/32");
    }
}
