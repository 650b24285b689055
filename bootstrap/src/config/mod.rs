//! `bootstrap.toml`: the user's one file at home. Its `[s3]` and `[run]`
//! tables are the runner's `run.toml` schema (checked by the runner's own
//! validation, so the two can never drift); the other sections are
//! bootstrap's: Scaleway, the image recipe, the home Plex.
//! `bootstrap/bootstrap.example.toml` documents every key.

mod compose;
mod raw;

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner::config::{ConfigError, Problem, RunConfig};
use runner::scaleway::Zone;
use runner::secret::Secret;

pub use compose::{PROBE_PLEX_VERSION, RUN_CONFIG_PATH, RUN_SECRETS_PATH, RunParams, RunSecrets};

/// Where a run's instance keeps its work (the image's `StateDirectory`).
pub const INSTANCE_WORK_DIR: &str = "/var/lib/plex-burst";
/// `[scaleway] dead_man_grace` when not set.
const DEFAULT_DEAD_MAN_GRACE: Duration = Duration::from_secs(3600);

/// `bootstrap.toml` is wrong: one line naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct BootstrapConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub scaleway: ScalewaySettings,
    pub image: ImageSettings,
    pub home: HomeSettings,
    pub canary: CanarySettings,
    /// `[s3]` as written (home credentials included).
    s3_table: toml::Table,
    /// `[run]` as written.
    run_table: toml::Table,
    /// The runner's view of `[s3]`: the connection bootstrap itself uses.
    checked: RunConfig,
    plex_token: Option<Secret>,
    /// `[[notify]]` for bootstrap's own events.
    notify: Vec<runner::notify::Target>,
    /// `[[notify]]` as the run's `run.toml` names its secrets, and their
    /// values for the run's secrets file.
    notify_run: Vec<runner::notify::RawTarget>,
    notify_secrets: Vec<(String, Secret)>,
}

#[derive(Debug, Clone)]
pub struct ScalewaySettings {
    pub api_url: String,
    pub metadata_url: Option<String>,
    pub secret_key: Secret,
    pub organization_id: String,
    pub project_id: String,
    pub zone: Zone,
    pub commercial_type: String,
    pub root_volume_gb: u64,
    pub keep_on_failure: bool,
    /// The run's dead-man ends its instance this long after the deadline.
    pub dead_man_grace: Duration,
}

/// `[canary]`: what `launch --canary` runs instead of the real run.
#[derive(Debug, Clone)]
pub struct CanarySettings {
    /// The smallest type that runs Plex: minutes cost cents.
    pub commercial_type: String,
    pub deadline: Duration,
    pub sonic_tracks: u64,
    pub folders: Vec<String>,
}

/// DEV1-S (2 vCPU, 2 GB): the cheapest type Plex and Sonic run on;
/// whether a 2 GB instance holds the user's DB in Plex is what the canary
/// finds out (set `[canary] commercial_type` to DEV1-M otherwise).
pub const CANARY_COMMERCIAL_TYPE: &str = "DEV1-S";
const CANARY_DEADLINE: Duration = Duration::from_secs(45 * 60);
const CANARY_SONIC_TRACKS: u64 = 50;

#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// Marketplace label of the base OS.
    pub base_image: String,
    pub rclone_version: String,
    /// A zip laid out like rclone's releases; overrides `rclone_version`'s.
    pub rclone_url: Option<String>,
    /// The zip's sha256 (lowercase hex), checked by the builder: required,
    /// nothing unverified goes into an image.
    pub rclone_sha256: String,
    /// `sha256:<64 hex>`: the Plex image is pulled as `image:tag@digest`.
    pub plex_image_digest: Option<String>,
    /// A `docker save` archive of the Plex image, loaded by the builder
    /// instead of a pull (a site without the registry; the VM test's
    /// stand-in). Its sha256 is checked and is part of the recipe.
    pub plex_image_archive: Option<PathBuf>,
    /// The runner binary baked into the image.
    pub runner_binary: PathBuf,
    pub builder_commercial_type: String,
    pub build_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HomeSettings {
    pub layout: HomeLayoutKind,
    pub control: HomeControl,
    pub url: String,
    pub keep_backups: usize,
    /// Free space the install leaves on the disk Plex lives on; `None`:
    /// `runner::archive::margin` of the free space.
    pub free_space_margin: Option<u64>,
    pub plex_timeout: Duration,
    /// Where bootstrap keeps its own copy of each launch record (`None`:
    /// `$XDG_STATE_HOME/plex-burst`, see `records.rs`).
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeLayoutKind {
    Native,
    Docker { config_dir: PathBuf },
    Custom { app_support_dir: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeControl {
    Docker {
        container: String,
    },
    Systemd {
        unit: String,
    },
    Command {
        stop: Vec<String>,
        start: Vec<String>,
    },
}

impl BootstrapConfig {
    /// Reads and validates `path`; secrets come from the environment or the
    /// files the config names.
    pub fn load(path: &Path) -> Result<BootstrapConfig, BootstrapConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| BootstrapConfigError {
            file: path.display().to_string(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, &|var| std::env::var(var).ok()).map_err(|message| BootstrapConfigError {
            file: path.display().to_string(),
            message,
        })
    }

    /// Validates `text`; `env` stands in for the process environment.
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BootstrapConfig, String> {
        let document = toml::Deserializer::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let line = text[..offset].matches('\n').count() + 1;
            format!("TOML syntax error at line {line}: {}", e.message().trim())
        })?;
        let raw: raw::RawBootstrap =
            serde_path_to_error::deserialize(document).map_err(schema_error)?;

        let scaleway = scaleway_settings(&raw.scaleway, env)?;
        let image = image_settings(&raw.image, &scaleway)?;
        let home = home_settings(&raw.home)?;
        let canary = canary_settings(raw.canary)?;
        compose::check_run_table(&raw.run)?;
        let plex_token = plex_token(&raw.scaleway, &raw.run, env)?;

        let notify = runner::notify::targets(&raw.notify, env)?;
        let (notify_run, notify_secrets) = runner::notify::for_run(&raw.notify, env)?;

        // The runner validates [s3] and [run] exactly as the instance will.
        let probe = compose::compose(
            &raw.s3,
            &raw.run,
            &raw.notify,
            &RunParams::probe(&scaleway),
            true,
        );
        let checked = RunConfig::from_toml_str(&probe, &|var| {
            env(var).or_else(|| compose::run_secret_var(var).then(|| "no-value".to_owned()))
        })
        .map_err(rename_keys)?;

        Ok(BootstrapConfig {
            scaleway,
            image,
            home,
            canary,
            s3_table: raw.s3,
            run_table: raw.run,
            checked,
            plex_token,
            notify,
            notify_run,
            notify_secrets,
        })
    }

    /// The bucket connection bootstrap uses (the home credentials).
    pub fn s3_connection(&self) -> runner::s3::Connection {
        self.checked.s3_connection()
    }

    pub fn bucket(&self) -> &str {
        self.checked.s3_bucket()
    }

    pub fn runs_prefix(&self) -> &str {
        &self.checked.s3().runs_prefix
    }

    pub fn reference_prefix(&self) -> &str {
        &self.checked.s3().reference_prefix
    }

    /// `<runs_prefix><run_id>/<name>`.
    pub fn run_key(&self, run_id: &str, name: &str) -> String {
        format!("{}{run_id}/{name}", self.runs_prefix())
    }

    /// The run settings as the instance sees them (probe values for what
    /// only a launch knows).
    pub fn run_settings(&self) -> &RunConfig {
        &self.checked
    }

    /// The plex.tv account token, when the run claims its server.
    pub fn plex_token(&self) -> Option<&Secret> {
        self.plex_token.as_ref()
    }

    /// What the user configured for runs, as canonical text: `[s3]`
    /// without its credentials, and `[run]`. A canary proves a later run
    /// configured the same (`canary.rs`).
    pub fn run_identity(&self) -> String {
        let mut s3 = self.s3_table.clone();
        s3.retain(|k, _| !compose::is_credential_key(k));
        let mut doc = toml::Table::new();
        doc.insert("s3".into(), s3.into());
        doc.insert("run".into(), self.run_table.clone().into());
        toml::to_string(&doc).expect("a TOML table serialises")
    }

    /// `[[notify]]`'s targets, for bootstrap's own events.
    pub fn notify(&self) -> &[runner::notify::Target] {
        &self.notify
    }

    /// `(variable, value)` of the notification secrets a run gets.
    pub fn notify_secrets(&self) -> &[(String, Secret)] {
        &self.notify_secrets
    }

    /// The run's `run.toml`, checked by the runner's validation.
    pub fn render_run_toml(&self, params: &RunParams) -> Result<String, String> {
        let text = compose::compose(
            &self.s3_table,
            &self.run_table,
            &self.notify_run,
            params,
            false,
        );
        RunConfig::from_toml_str(&text, &|var| {
            let notify = self.notify_secrets.iter().find(|(k, _)| k == var);
            notify
                .map(|(_, v)| v.expose().to_owned())
                .or_else(|| compose::run_secret_var(var).then(|| "no-value".to_owned()))
        })
        .map_err(|e| format!("the run's config is invalid: {}", rename_keys(e)))?;
        Ok(text)
    }
}

/// The run.toml text for `params`, unchecked (for display: the run id may
/// be a placeholder).
pub fn compose_preview(cfg: &BootstrapConfig, params: &RunParams) -> String {
    compose::compose(
        &cfg.s3_table,
        &cfg.run_table,
        &cfg.notify_run,
        params,
        false,
    )
}

fn scaleway_settings(
    raw: &raw::RawScaleway,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ScalewaySettings, String> {
    let zone: Zone = raw
        .zone
        .parse()
        .map_err(|e| format!("scaleway.zone: {e}"))?;
    for (key, value) in [
        ("scaleway.organization_id", &raw.organization_id),
        ("scaleway.project_id", &raw.project_id),
    ] {
        if !is_uuid(value) {
            return Err(format!("{key}: {value:?} is not a UUID"));
        }
    }
    if raw.commercial_type.trim().is_empty() {
        return Err("scaleway.commercial_type: is empty".into());
    }
    let secret_key = secret(
        "scaleway",
        "secret_key",
        raw.secret_key.as_deref(),
        raw.secret_key_env.as_deref().unwrap_or("SCW_SECRET_KEY"),
        raw.credentials_file.as_deref(),
        env,
    )?;
    let root_volume_gb = raw.root_volume_gb.unwrap_or(100);
    if !(20..=10_000).contains(&root_volume_gb) {
        return Err(format!(
            "scaleway.root_volume_gb: {root_volume_gb} is outside 20-10000 (GB)"
        ));
    }
    Ok(ScalewaySettings {
        api_url: url_value(
            "scaleway.api_url",
            raw.api_url.as_deref(),
            runner::scaleway::DEFAULT_API_URL,
        )?,
        metadata_url: raw
            .metadata_url
            .as_deref()
            .map(|u| url_value("scaleway.metadata_url", Some(u), ""))
            .transpose()?,
        secret_key,
        organization_id: raw.organization_id.clone(),
        project_id: raw.project_id.clone(),
        zone,
        commercial_type: raw.commercial_type.clone(),
        root_volume_gb,
        keep_on_failure: raw.keep_on_failure,
        // Checked by the runner's schema, as the instance will.
        dead_man_grace: raw.dead_man_grace.unwrap_or(DEFAULT_DEAD_MAN_GRACE),
    })
}

fn image_settings(
    raw: &raw::RawImage,
    scaleway: &ScalewaySettings,
) -> Result<ImageSettings, String> {
    let rclone_version = raw.rclone_version.clone().unwrap_or("1.68.2".into());
    if !rclone_version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "image.rclone_version: {rclone_version:?} is not a version like \"1.68.2\""
        ));
    }
    let runner_binary = match &raw.runner_binary {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => {
            return Err(format!(
                "image.runner_binary: {p:?} is not an absolute path"
            ));
        }
        None => beside_this_binary("runner"),
    };
    let rclone_url = raw
        .rclone_url
        .as_deref()
        .map(|u| download_url("image.rclone_url", u))
        .transpose()?;
    let rclone_sha256 = match raw.rclone_sha256.as_deref() {
        Some(h) => sha256_hex("image.rclone_sha256", h)?,
        None => {
            return Err("image.rclone_sha256: required (the sha256 of the rclone zip the builder downloads, from the release's SHA256SUMS)".into());
        }
    };
    let plex_image_digest = raw
        .plex_image_digest
        .as_deref()
        .map(|d| match d.strip_prefix("sha256:") {
            Some(h) => sha256_hex("image.plex_image_digest", h).map(|h| format!("sha256:{h}")),
            None => Err(format!(
                "image.plex_image_digest: {d:?} is not a digest like \"sha256:<64 hex digits>\""
            )),
        })
        .transpose()?;
    let plex_image_archive = match &raw.plex_image_archive {
        Some(p) if Path::new(p).is_absolute() => Some(PathBuf::from(p)),
        Some(p) => {
            return Err(format!(
                "image.plex_image_archive: {p:?} is not an absolute path"
            ));
        }
        None => None,
    };
    if plex_image_archive.is_some() && plex_image_digest.is_some() {
        return Err("image.plex_image_archive: an archive is pinned by its own sha256; drop image.plex_image_digest".into());
    }
    let build_timeout = raw.build_timeout.unwrap_or(Duration::from_secs(45 * 60));
    if build_timeout < Duration::from_secs(1) {
        return Err("image.build_timeout: must be at least 1s".into());
    }
    Ok(ImageSettings {
        base_image: raw.base_image.clone().unwrap_or("debian_bookworm".into()),
        rclone_version,
        rclone_url,
        rclone_sha256,
        plex_image_digest,
        plex_image_archive,
        runner_binary,
        builder_commercial_type: raw
            .builder_commercial_type
            .clone()
            .unwrap_or_else(|| scaleway.commercial_type.clone()),
        build_timeout,
    })
}

fn canary_settings(raw: raw::RawCanary) -> Result<CanarySettings, String> {
    let commercial_type = raw
        .commercial_type
        .unwrap_or_else(|| CANARY_COMMERCIAL_TYPE.into());
    if commercial_type.trim().is_empty() {
        return Err("canary.commercial_type: is empty".into());
    }
    let deadline = raw.deadline.unwrap_or(CANARY_DEADLINE);
    if !(Duration::from_secs(10 * 60)..=Duration::from_secs(6 * 3600)).contains(&deadline) {
        return Err(format!(
            "canary.deadline: {} is outside 10m-6h (a rehearsal of minutes)",
            humantime::format_duration(deadline)
        ));
    }
    let sonic_tracks = raw.sonic_tracks.unwrap_or(CANARY_SONIC_TRACKS);
    if sonic_tracks == 0 {
        return Err("canary.sonic_tracks: must be at least 1".into());
    }
    Ok(CanarySettings {
        commercial_type,
        deadline,
        sonic_tracks,
        folders: raw.folders,
    })
}

fn home_settings(raw: &raw::RawHome) -> Result<HomeSettings, String> {
    let abs = |key: &str, value: &Option<String>| -> Result<PathBuf, String> {
        match value {
            Some(p) if Path::new(p).is_absolute() => Ok(PathBuf::from(p)),
            Some(p) => Err(format!("{key}: {p:?} is not an absolute path")),
            None => Err(format!("{key}: required key is missing")),
        }
    };
    let layout = match raw.layout.as_str() {
        "native" if raw.app_support_dir.is_none() => HomeLayoutKind::Native,
        "docker" if raw.app_support_dir.is_none() => HomeLayoutKind::Docker {
            config_dir: abs("home.config_dir", &raw.config_dir)?,
        },
        "native" | "docker" | "custom" => HomeLayoutKind::Custom {
            app_support_dir: abs("home.app_support_dir", &raw.app_support_dir)?,
        },
        other => {
            return Err(format!(
                "home.layout: {other:?} is not one of \"docker\", \"native\", \"custom\""
            ));
        }
    };
    let control = match raw.control.as_str() {
        "docker" => HomeControl::Docker {
            container: raw.container.clone().unwrap_or("plex".into()),
        },
        "systemd" => HomeControl::Systemd {
            unit: raw.unit.clone().unwrap_or("plexmediaserver".into()),
        },
        "command" => {
            let argv = |key: &str, v: &Option<Vec<String>>| match v {
                Some(v) if !v.is_empty() && !v[0].is_empty() => Ok(v.clone()),
                Some(_) => Err(format!("{key}: needs at least the program")),
                None => Err(format!(
                    "{key}: required key is missing with control = \"command\""
                )),
            };
            HomeControl::Command {
                stop: argv("home.stop_command", &raw.stop_command)?,
                start: argv("home.start_command", &raw.start_command)?,
            }
        }
        other => {
            return Err(format!(
                "home.control: {other:?} is not one of \"docker\", \"systemd\", \"command\""
            ));
        }
    };
    let keep_backups = raw.keep_backups.unwrap_or(3);
    if keep_backups == 0 {
        return Err("home.keep_backups: at least 1 (the rollback needs one)".into());
    }
    Ok(HomeSettings {
        layout,
        control,
        url: url_value("home.url", raw.url.as_deref(), "http://127.0.0.1:32400")?,
        keep_backups,
        free_space_margin: raw
            .free_space_margin
            .as_deref()
            .map(|m| {
                runner::archive::parse_size(m).map_err(|e| format!("home.free_space_margin: {e}"))
            })
            .transpose()?,
        plex_timeout: raw.plex_timeout.unwrap_or(Duration::from_secs(300)),
        state_dir: match &raw.state_dir {
            None => None,
            Some(_) => Some(abs("home.state_dir", &raw.state_dir)?),
        },
    })
}

/// The plex.tv token the run needs to claim its server.
fn plex_token(
    raw: &raw::RawScaleway,
    run: &toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    let claims = run
        .get("plex")
        .and_then(|p| p.get("claim"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    if !claims {
        return Ok(None);
    }
    let var = raw.plex_token_env.as_deref().unwrap_or("PLEX_TOKEN");
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
        _ => Err(format!(
            "scaleway.plex_token_env: run.plex.claim is true but the environment variable {var} (the plex.tv account token) is not set"
        )),
    }
}

/// One secret from exactly one source: inline, a `KEY=VALUE` file, or the
/// environment.
fn secret(
    section: &str,
    name: &str,
    inline: Option<&str>,
    var: &str,
    file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{section}.{name}: choose one credential source: {section}.credentials_file is also set"
            ));
        }
        (Some(v), None) => Some(v.to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{section}.credentials_file: cannot read {path}: {e}"))?;
            let values = runner::config::parse_env_file(&text)
                .map_err(|e| format!("{section}.credentials_file: {path}: {e}"))?;
            Some(
                values.get(var).cloned().ok_or_else(|| {
                    format!("{section}.credentials_file: {path} does not set {var}")
                })?,
            )
        }
        (None, None) => env(var),
    };
    match value {
        Some(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
        Some(_) => Err(format!("{section}.{name}: is empty")),
        None => Err(format!(
            "{section}.{name}: not set (the environment variable {var} is missing)"
        )),
    }
}

fn url_value(key: &str, value: Option<&str>, default: &str) -> Result<String, String> {
    let value = value.unwrap_or(default);
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("{key}: {value:?} is not an http(s) URL")),
    }
}

/// A URL the builder downloads: http(s), kept as written. It lands in
/// build.env inside single quotes, so it may not hold one.
fn download_url(key: &str, value: &str) -> Result<String, String> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(format!("{key}: {value:?} is not an http(s) URL")),
    }
    if value.contains(['\'', '\n']) {
        return Err(format!(
            "{key}: {value:?} holds a quote or a line break (percent-encode it)"
        ));
    }
    Ok(value.to_owned())
}

/// A sha256 digest: 64 hex digits, lowercased.
fn sha256_hex(key: &str, value: &str) -> Result<String, String> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!("{key}: {value:?} is not a sha256 (64 hex digits)"))
    }
}

fn is_uuid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A binary installed beside `bootstrap` (the release layout), else the
/// bare name.
fn beside_this_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// serde's schema errors, with the dotted key.
fn schema_error(err: serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = err.path().to_string();
    let message = err.inner().message().trim().to_owned();
    if path == "." || path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// The runner names keys as in `run.toml`; in `bootstrap.toml` they live
/// under `[run]` (except `[s3]`, which is shared).
fn rename_keys(err: ConfigError) -> String {
    let key = |k: &str| {
        if k.starts_with("s3.") || k == "s3" {
            k.to_owned()
        } else if k == "termination.dead_man_grace" {
            // The one [termination] value the user sets, in [scaleway].
            "scaleway.dead_man_grace".to_owned()
        } else {
            format!("run.{k}")
        }
    };
    match err.problem() {
        Problem::UnknownKey { key: k, suggestion } => match suggestion {
            Some(s) => format!("unknown key {:?} (did you mean {s:?}?)", key(k)),
            None => format!("unknown key {:?}", key(k)),
        },
        Problem::Missing { key: k } => format!("{}: required key is missing", key(k)),
        Problem::Invalid { key: k, message } => format!("{}: {message}", key(k)),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
