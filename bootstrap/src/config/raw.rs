//! `bootstrap.toml` as written: the schema (unknown keys and wrong types are
//! errors naming the dotted key). `[s3]` and `[run]` are kept as TOML
//! tables: the runner's own schema checks them (one config schema).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootstrap {
    pub scaleway: RawScaleway,
    pub s3: toml::Table,
    #[serde(default)]
    pub image: RawImage,
    pub home: RawHome,
    pub run: toml::Table,
    #[serde(default)]
    pub canary: RawCanary,
    /// `[[notify]]`: the runner's schema (`runner::notify`), used at home
    /// and carried into each run.
    #[serde(default)]
    pub notify: Vec<runner::notify::RawTarget>,
}

/// `[canary]`: the rehearsal `launch --canary` runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub commercial_type: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<std::time::Duration>,
    pub sonic_tracks: Option<u64>,
    #[serde(default)]
    pub folders: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaleway {
    pub organization_id: String,
    pub project_id: String,
    pub zone: String,
    pub commercial_type: String,
    #[serde(default)]
    pub root_volume_gb: Option<u64>,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub metadata_url: Option<String>,
    #[serde(default)]
    pub keep_on_failure: bool,
    #[serde(default, with = "humantime_serde")]
    pub dead_man_grace: Option<std::time::Duration>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub secret_key_env: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<String>,
    #[serde(default)]
    pub plex_token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    #[serde(default)]
    pub base_image: Option<String>,
    #[serde(default)]
    pub rclone_version: Option<String>,
    #[serde(default)]
    pub rclone_url: Option<String>,
    #[serde(default)]
    pub rclone_sha256: Option<String>,
    #[serde(default)]
    pub plex_image_digest: Option<String>,
    #[serde(default)]
    pub plex_image_archive: Option<String>,
    #[serde(default)]
    pub runner_binary: Option<String>,
    #[serde(default)]
    pub builder_commercial_type: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub build_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHome {
    pub layout: String,
    #[serde(default)]
    pub config_dir: Option<String>,
    #[serde(default)]
    pub app_support_dir: Option<String>,
    pub control: String,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub keep_backups: Option<usize>,
    #[serde(default)]
    pub free_space_margin: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub plex_timeout: Option<std::time::Duration>,
    #[serde(default)]
    pub state_dir: Option<String>,
}
