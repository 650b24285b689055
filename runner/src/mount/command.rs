//! The one rclone invocation the runner makes, and every flag's reason.
//!
//! The remote is configured entirely through `RCLONE_CONFIG_<NAME>_*`
//! variables in the child's environment: the credentials never appear on
//! the command line (world-readable in `/proc/<pid>/cmdline`), in a config
//! file, or in a log line.

use std::ffi::OsString;
use std::path::PathBuf;

use super::MountSpec;
use crate::secret::Secret;

/// The remote's name on rclone's command line: `plexburst:bucket/path`.
pub const REMOTE_NAME: &str = "plexburst";

/// Program, arguments and environment of `rclone mount`. Arguments hold no
/// secret; environment values are [`Secret`]s, exposed only when the child
/// is spawned.
#[derive(Debug, Clone)]
pub struct RcloneInvocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The mount's source in mountinfo, unique to this invocation.
    pub devname: String,
    env: Vec<(String, Secret)>,
}

impl RcloneInvocation {
    pub fn new(spec: &MountSpec) -> RcloneInvocation {
        let devname = format!(
            "{REMOTE_NAME}-{:016x}:{}",
            rand::random::<u64>(),
            spec.remote()
        );
        RcloneInvocation {
            program: spec.rclone.clone(),
            args: args(spec, &devname),
            devname,
            env: remote_env(spec),
        }
    }

    /// Program and arguments as one line, for logs and reports.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Names of the environment variables set for the child (not values).
    pub fn env_names(&self) -> Vec<&str> {
        self.env.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The command, ready to spawn. Inherited `RCLONE_*` variables are
    /// removed: the flags here, and only they, decide how rclone runs.
    /// So is systemd's `NOTIFY_SOCKET`: rclone would report its mount ready
    /// to the runner's unit, which only listens to the runner.
    pub(crate) fn to_command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args).env_remove("NOTIFY_SOCKET");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RCLONE_") {
                cmd.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            cmd.env(key, value.expose());
        }
        cmd
    }
}

/// `rclone mount` and its flags. Each flag has its reason beside it.
fn args(spec: &MountSpec, devname: &str) -> Vec<OsString> {
    let tuning = spec.tuning;
    let mut remote = format!("{REMOTE_NAME}:{}", spec.bucket);
    if !spec.path.is_empty() {
        remote.push('/');
        remote.push_str(&spec.path);
    }
    let flag = |name: &str, value: String| [OsString::from(name), OsString::from(value)];
    let mut args: Vec<OsString> = vec![
        "mount".into(),
        remote.into(),
        spec.mount_point.clone().into(),
    ];
    // Tells this mount from any other in mountinfo, even one that reuses
    // its mount id after an unmount: a handle only ever unmounts its own.
    args.extend(flag("--devname", devname.into()));
    // No config file at all: the remote lives in the environment only.
    args.extend(flag("--config", "/dev/null".into()));
    // Plex never writes media; a read-only mount cannot damage the bucket.
    args.push("--read-only".into());
    // Plex runs as another user (or in a container): it must see the files.
    args.push("--allow-other".into());
    // Files belong to the Plex user, whatever rclone runs as.
    args.extend(flag("--uid", spec.uid.to_string()));
    args.extend(flag("--gid", spec.gid.to_string()));
    args.extend(flag("--umask", "0022".into()));
    // Defaults (5m idle, 10 low-level retries) let a mount die after ~30
    // minutes of a flaky network (lessons.md 2): wait and retry longer.
    args.extend(flag("--timeout", "10m".into()));
    args.extend(flag("--contimeout", "60s".into()));
    args.extend(flag("--low-level-retries", "20".into()));
    // Whole-operation retries: only some commands use them; set for those.
    args.extend(flag("--retries", "10".into()));
    // The bucket does not change during a run; long-lived listings spare
    // S3 the scanner's repeated walks. The probe's real reads, not the
    // listing, decide health (lessons.md 1).
    args.extend(flag("--dir-cache-time", "24h".into()));
    // Full VFS cache: Plex seeks inside files (headers, then the index at
    // the end); sized to the instance by the profile.
    args.extend(flag("--vfs-cache-mode", "full".into()));
    args.extend(flag(
        "--vfs-cache-max-size",
        format!("{}G", tuning.vfs_cache_max_size_gib),
    ));
    args.extend(flag(
        "--vfs-read-ahead",
        format!("{}M", tuning.vfs_read_ahead_mib),
    ));
    args.extend(flag("--transfers", tuning.transfers.to_string()));
    args.extend(flag("--cache-dir", path_text(&spec.cache_dir)));
    // Its own file, shipped with the run's logs; INFO shows mounts, errors
    // and retries without per-request noise.
    args.extend(flag("--log-file", path_text(&spec.log_file)));
    args.extend(flag("--log-level", "INFO".into()));
    // No --daemon: the runner is the supervisor, it must own the process.
    args
}

fn path_text(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `RCLONE_CONFIG_PLEXBURST_*`: the S3 remote, credentials included.
fn remote_env(spec: &MountSpec) -> Vec<(String, Secret)> {
    let c = &spec.connection;
    let prefix = format!("RCLONE_CONFIG_{}_", REMOTE_NAME.to_ascii_uppercase());
    let var = |name: &str, value: &str| (format!("{prefix}{name}"), Secret::new(value));
    let mut env = vec![var("TYPE", "s3")];
    match &c.endpoint {
        Some(endpoint) => {
            env.push(var("PROVIDER", "Other"));
            env.push(var("ENDPOINT", endpoint));
        }
        None => env.push(var("PROVIDER", "AWS")),
    }
    env.push(var("REGION", &c.region));
    env.push(var(
        "FORCE_PATH_STYLE",
        if c.path_style { "true" } else { "false" },
    ));
    // Only the keys given here, never ambient AWS credentials.
    env.push(var("ENV_AUTH", "false"));
    env.push(var("ACCESS_KEY_ID", c.access_key.expose()));
    env.push(var("SECRET_ACCESS_KEY", c.secret_key.expose()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CredentialSource, RcloneProfile, S3Connection};

    pub(crate) fn spec() -> MountSpec {
        MountSpec {
            rclone: "rclone".into(),
            bucket: "media-bucket".into(),
            path: "library/music".into(),
            mount_point: "/mnt/media".into(),
            connection: S3Connection {
                endpoint: Some(
                    "https://s3.fr-par.scw.cloud"
                        .to_string()
                        .try_into()
                        .unwrap(),
                ),
                region: "fr-par".try_into().unwrap(),
                path_style: false,
                access_key: Secret::new("SCWACCESSKEYVALUE"),
                secret_key: Secret::new("secret-value-0123456789"),
                credential_source: CredentialSource::Inline,
            },
            uid: 998,
            gid: 997,
            tuning: RcloneProfile::Small.tuning(),
            cache_dir: "/var/lib/plex-burst/rclone-cache".into(),
            log_file: "/var/lib/plex-burst/logs/rclone.log".into(),
            limits: Default::default(),
        }
    }

    #[test]
    fn the_command_line_holds_every_flag_and_no_secret() {
        let inv = RcloneInvocation::new(&spec());
        let line = inv.command_line();
        assert!(line.starts_with("rclone mount plexburst:media-bucket/library/music /mnt/media "));
        for expected in [
            "--config /dev/null",
            "--read-only",
            "--allow-other",
            "--uid 998 --gid 997",
            "--timeout 10m",
            "--contimeout 60s",
            "--low-level-retries 20",
            "--retries 10",
            "--dir-cache-time 24h",
            "--vfs-cache-mode full",
            "--vfs-cache-max-size 10G",
            "--vfs-read-ahead 16M",
            "--transfers 4",
            "--cache-dir /var/lib/plex-burst/rclone-cache",
            "--log-file /var/lib/plex-burst/logs/rclone.log",
            "--log-level INFO",
        ] {
            assert!(line.contains(expected), "{expected} missing from {line}");
        }
        assert!(!line.contains("--daemon"));
        assert!(inv.devname.starts_with("plexburst-"));
        assert!(inv.devname.ends_with(":media-bucket/library/music"));
        assert!(line.contains(&format!("--devname {}", inv.devname)));
        assert_ne!(RcloneInvocation::new(&spec()).devname, inv.devname);
        assert!(!line.contains("SCWACCESSKEYVALUE") && !line.contains("secret-value"));
        assert!(!format!("{inv:?}").contains("secret-value"));
    }

    #[test]
    fn the_remote_is_configured_in_the_environment() {
        let inv = RcloneInvocation::new(&spec());
        let cmd = inv.to_command();
        let env: std::collections::HashMap<String, String> = cmd
            .as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        let get = |k: &str| {
            env.get(&format!("RCLONE_CONFIG_PLEXBURST_{k}"))
                .map(String::as_str)
        };
        assert_eq!(get("TYPE"), Some("s3"));
        assert_eq!(get("PROVIDER"), Some("Other"));
        assert_eq!(get("ENDPOINT"), Some("https://s3.fr-par.scw.cloud"));
        assert_eq!(get("REGION"), Some("fr-par"));
        assert_eq!(get("FORCE_PATH_STYLE"), Some("false"));
        assert_eq!(get("ACCESS_KEY_ID"), Some("SCWACCESSKEYVALUE"));
        assert_eq!(get("SECRET_ACCESS_KEY"), Some("secret-value-0123456789"));
        assert!(
            inv.env_names()
                .contains(&"RCLONE_CONFIG_PLEXBURST_SECRET_ACCESS_KEY")
        );
        let removed: Vec<_> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_owned())
            .collect();
        assert!(removed.iter().any(|k| k == "NOTIFY_SOCKET"), "{removed:?}");
    }

    #[test]
    fn a_whole_bucket_on_aws_has_no_endpoint() {
        let mut s = spec();
        s.path.clear();
        s.connection.endpoint = None;
        let inv = RcloneInvocation::new(&s);
        assert!(
            inv.command_line()
                .contains(" plexburst:media-bucket /mnt/media ")
        );
        let provider = inv
            .env
            .iter()
            .find(|(k, _)| k.ends_with("_PROVIDER"))
            .map(|(_, v)| v.expose().to_string());
        assert_eq!(provider.as_deref(), Some("AWS"));
        assert!(!inv.env_names().iter().any(|k| k.ends_with("_ENDPOINT")));
    }
}
