//! `run.toml` exactly as written: serde structs that accept any well-typed
//! value. Nothing here is trusted; `validate` turns it into the checked
//! types. Every table denies unknown keys, so a typo is an error, not a
//! silently ignored setting. `effective` serializes the same structs back,
//! so the printed config uses exactly the keys a user writes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub run_id: String,
    pub work_dir: String,
    pub mode: RawMode,
    pub s3: RawS3,
    pub reference: Option<RawReference>,
    #[serde(default)]
    pub pull: RawPull,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub library: Vec<RawLibrary>,
    pub media: RawMedia,
    pub plex: RawPlex,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_mapping: Vec<RawPathMapping>,
    #[serde(default)]
    pub phases: RawPhases,
    #[serde(default)]
    pub deadlines: RawDeadlines,
    #[serde(default)]
    pub guard: RawGuard,
    pub termination: RawTermination,
    #[serde(default)]
    pub wipe: RawWipe,
    pub canary: Option<RawCanary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::RawTarget>,
    pub cost: Option<RawCost>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    Delta,
    Scratch,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub path_style: Option<bool>,
    pub runs_prefix: Option<String>,
    pub reference_prefix: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub credentials_file: Option<String>,
}

/// `[media.s3]`: a connection of its own for the media bucket.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnection {
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: Option<bool>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub credentials_file: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReference {
    pub archive_key: String,
    pub manifest_key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    pub max_expanded_size: Option<String>,
    pub max_expansion_ratio: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLibrary {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: RawLibraryType,
    pub agent: Option<String>,
    pub scanner: Option<String>,
    pub language: String,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLibraryType {
    Movie,
    Show,
    Artist,
    Photo,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub remote: String,
    pub mount_point: String,
    pub profile: Option<RawProfile>,
    pub anchor_samples: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub probe_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    pub s3: Option<RawConnection>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProfile {
    Small,
    Balanced,
    Large,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlex {
    pub version: String,
    pub runtime: Option<RawRuntime>,
    pub image: Option<String>,
    pub claim: Option<bool>,
    pub account_token: Option<String>,
    pub account_token_env: Option<String>,
    pub credentials_file: Option<String>,
    pub forget_token_after_claim: Option<bool>,
    pub include_libraries: Option<Vec<String>>,
    pub exclude_libraries: Option<Vec<String>>,
    pub app_support_dir: Option<String>,
    pub port: Option<u16>,
    pub plextv_url: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub double_binary: Option<String>,
    pub container_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawRuntime {
    Docker,
    Double,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathMapping {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhases {
    pub scan: Option<bool>,
    pub deep_scan: Option<bool>,
    pub analysis: Option<bool>,
    pub sonic: Option<bool>,
    pub refresh_metadata: Option<bool>,
}

/// `[cost]`: what the run is billed, for its report (bootstrap writes it).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub eur_per_hour: f64,
    pub estimate_eur: Option<f64>,
    pub estimate_basis: Option<String>,
}

/// `[canary]`: a rehearsal run on a slice of the work.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub sonic_tracks: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadlines {
    #[serde(default, with = "humantime_serde")]
    pub run: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub pull: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub plex_ready: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub plex_startup: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub scan: Option<Duration>,
    #[serde(default)]
    pub scan_per_type: RawScanPerType,
    #[serde(default, with = "humantime_serde")]
    pub analysis: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_metadata: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub sonic: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upload: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stall_interval: Option<Duration>,
    pub stall_checks: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub poll_interval: Option<Duration>,
    pub idle_checks: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub snapshot_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub watchdog: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScanPerType {
    #[serde(default, with = "humantime_serde")]
    pub movie: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub show: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub artist: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub photo: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub max_lost_items: Option<u64>,
    pub max_lost_fraction: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWipe {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_data_copies: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTermination {
    pub provider: RawProvider,
    pub keep_on_failure: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub dead_man_grace: Option<Duration>,
    pub zone: Option<String>,
    pub api_url: Option<String>,
    pub metadata_url: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_env: Option<String>,
    pub credentials_file: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProvider {
    Scaleway,
    None,
}
