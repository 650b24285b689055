//! `run.toml`: the one file that describes a run. cloud-init delivers it to
//! the instance; a local run differs from a cloud run only by this file.
//!
//! Loading goes in three steps: TOML syntax (errors carry line and column),
//! the schema (`raw`: unknown keys and wrong types, errors carry the dotted
//! key), then validation (`validate`: every value into a type that cannot
//! hold an invalid one, defaults, secrets resolved). `runner/run.example.toml`
//! documents every key.

mod credentials;
mod effective;
mod error;
mod raw;
mod sections;
mod types;
mod validate;

#[cfg(test)]
mod schema_tests;

use std::path::Path;
use std::time::Duration;

pub use credentials::{CredentialSource, parse_env_file};
pub use error::{ConfigError, Problem};
pub use sections::*;
pub use types::*;

/// The name errors use for a config given as text.
const TEXT_NAME: &str = "run.toml";

/// A validated run configuration. Built only by [`RunConfig::load`] or
/// [`RunConfig::from_toml_str`]; read through its accessors.
#[derive(Debug, Clone)]
pub struct RunConfig {
    run_id: RunId,
    work_dir: AbsPath,
    mode: Mode,
    s3: S3Settings,
    pull: crate::archive::Limits,
    media: MediaSettings,
    plex: PlexSettings,
    path_mappings: Vec<PathMapping>,
    phases: Phases,
    deadlines: Deadlines,
    guard: GuardLimits,
    termination: Termination,
    wipe: WipeSettings,
    canary: Option<Canary>,
    notify: Vec<crate::notify::Target>,
    /// `[[notify]]` as written (names of variables, no secrets).
    notify_tables: Vec<crate::notify::RawTarget>,
    cost: Option<Cost>,
}

impl RunConfig {
    /// Reads and validates `path`, resolving secrets from the process
    /// environment.
    pub fn load(path: &Path) -> Result<RunConfig, ConfigError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, Problem::Read(e)))?;
        Self::parse(&text, &|var| std::env::var(var).ok()).map_err(|p| ConfigError::new(name, p))
    }

    /// Validates `text`; `env` stands in for the process environment.
    pub fn from_toml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RunConfig, ConfigError> {
        Self::parse(text, env).map_err(|p| ConfigError::new(TEXT_NAME, p))
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RunConfig, Problem> {
        let document = toml::Deserializer::parse(text).map_err(|e| error::syntax(text, &e))?;
        let raw: raw::RawConfig =
            serde_path_to_error::deserialize(document).map_err(error::schema)?;
        validate::validate(raw, env)
    }

    /// The configuration with every default filled in and every secret
    /// masked, as TOML: what `runner check-config` prints.
    pub fn effective_toml(&self) -> String {
        effective::to_toml(self)
    }

    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Where the runner keeps its checkpoint, the extracted DB and Plex data.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn s3(&self) -> &S3Settings {
        &self.s3
    }

    /// `[pull]`: how far an archive without a manifest may expand.
    pub fn pull_limits(&self) -> crate::archive::Limits {
        self.pull
    }

    pub fn media(&self) -> &MediaSettings {
        &self.media
    }

    pub fn plex(&self) -> &PlexSettings {
        &self.plex
    }

    pub fn path_mappings(&self) -> &[PathMapping] {
        &self.path_mappings
    }

    pub fn phases(&self) -> &Phases {
        &self.phases
    }

    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    pub fn guard(&self) -> GuardLimits {
        self.guard
    }

    pub fn termination(&self) -> &Termination {
        &self.termination
    }

    /// `[cost]`, when bootstrap priced the run.
    pub fn cost(&self) -> Option<&Cost> {
        self.cost.as_ref()
    }

    /// Set when the run is a canary (`bootstrap launch --canary`).
    pub fn canary(&self) -> Option<&Canary> {
        self.canary.as_ref()
    }

    pub fn wipe(&self) -> &WipeSettings {
        &self.wipe
    }

    /// `[[notify]]`: where the run's events go.
    pub fn notify(&self) -> &[crate::notify::Target] {
        &self.notify
    }

    /// Takes the plex.tv account token out of the config: the run holds it
    /// in one place, and drops it once the server is claimed.
    pub fn take_plex_token(&mut self) -> Option<crate::secret::Secret> {
        self.plex.claim.as_mut()?.account_token.take()
    }

    /// `<runs_prefix><run_id>/<name>`: where this run's objects live.
    pub fn run_key(&self, name: &str) -> String {
        format!(
            "{}{}/{}",
            self.s3.runs_prefix,
            self.run_id,
            name.trim_start_matches('/')
        )
    }

    pub fn run_deadline(&self) -> Duration {
        self.deadlines.run
    }

    pub fn plex_version(&self) -> &PlexVersion {
        &self.plex.version
    }

    /// Plex's `.../Plex Media Server` folder.
    pub fn plex_app_support_dir(&self) -> &Path {
        &self.plex.app_support_dir
    }

    pub fn media_mount_point(&self) -> &Path {
        &self.media.mount_point
    }

    /// The `[s3]` connection, for [`crate::s3::Bucket::new`].
    pub fn s3_connection(&self) -> crate::s3::Connection {
        self.s3.connection.to_engine()
    }

    pub fn s3_bucket(&self) -> &str {
        &self.s3.bucket
    }
}

impl S3Connection {
    /// The S3 engine's view of this connection.
    pub fn to_engine(&self) -> crate::s3::Connection {
        crate::s3::Connection {
            endpoint: self.endpoint.as_ref().map(ToString::to_string),
            region: self.region.to_string(),
            path_style: self.path_style,
            access_key: self.access_key.expose().to_string(),
            secret_key: self.secret_key.clone(),
        }
    }
}
