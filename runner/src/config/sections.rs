//! The validated sections of a run configuration. Every field already holds
//! a checked value; combinations that make no sense have no representation
//! (a docker image only exists for the docker runtime, a claim always has
//! its token, a delta run always has its reference).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::credentials::CredentialSource;
use super::types::{
    AbsPath, BaseUrl, BucketName, DockerImage, KeyPrefix, Language, LibraryTitle, ObjectKey,
    PlexIdentifier, PlexVersion, Region,
};
use crate::scaleway::Zone;
use crate::secret::Secret;

/// How to reach an S3 service, credentials resolved.
#[derive(Debug, Clone)]
pub struct S3Connection {
    /// `None`: the AWS endpoint for `region`.
    pub endpoint: Option<BaseUrl>,
    pub region: Region,
    /// Path-style addressing (`endpoint/bucket/key`); always true for a
    /// bucket name with dots.
    pub path_style: bool,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub credential_source: CredentialSource,
}

/// `[s3]`: the bucket holding reference archives and run results.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub connection: S3Connection,
    pub bucket: BucketName,
    /// Ends with `/` or is empty; run objects live at `<runs_prefix><run_id>/`.
    pub runs_prefix: KeyPrefix,
    /// Where `bootstrap` stores reference archives.
    pub reference_prefix: KeyPrefix,
}

/// What the run starts from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The reference DB, scanned for changes; Sonic continues where it stopped.
    Delta { reference: Reference },
    /// A fresh Plex with these libraries, fully scanned.
    Scratch { libraries: Vec<Library> },
}

/// `[reference]`: the home DB archive in the `[s3]` bucket.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Format from the extension (`.tar.zst`, `.tar.gz`, `.tgz`) or the
    /// archive's magic bytes.
    pub archive_key: ObjectKey,
    /// `None`: `<archive stem>.manifest.json` beside it, if present.
    pub manifest_key: Option<ObjectKey>,
}

/// A `[[library]]` of a scratch run.
#[derive(Debug, Clone)]
pub struct Library {
    pub title: LibraryTitle,
    pub kind: LibraryType,
    pub agent: PlexIdentifier,
    pub scanner: PlexIdentifier,
    pub language: Language,
    /// Instance paths, each under `media.mount_point`; at least one.
    pub locations: Vec<AbsPath>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LibraryType {
    Movie,
    Show,
    Artist,
    Photo,
}

impl LibraryType {
    /// The name Plex's API uses (`type=` when creating a section).
    pub fn as_str(self) -> &'static str {
        match self {
            LibraryType::Movie => "movie",
            LibraryType::Show => "show",
            LibraryType::Artist => "artist",
            LibraryType::Photo => "photo",
        }
    }

    pub fn default_agent(self) -> &'static str {
        match self {
            LibraryType::Movie => "tv.plex.agents.movie",
            LibraryType::Show => "tv.plex.agents.series",
            LibraryType::Artist => "tv.plex.agents.music",
            LibraryType::Photo => "com.plexapp.agents.none",
        }
    }

    pub fn default_scanner(self) -> &'static str {
        match self {
            LibraryType::Movie => "Plex Movie",
            LibraryType::Show => "Plex TV Series",
            LibraryType::Artist => "Plex Music",
            LibraryType::Photo => "Plex Photo Scanner",
        }
    }
}

/// `[media]`: the media bucket and its rclone mount.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub remote: MediaRemote,
    pub mount_point: AbsPath,
    pub profile: RcloneProfile,
    /// DB files read on each mount health check.
    pub anchor_samples: u32,
    /// How long one listing or one anchor read may take on a health check.
    pub probe_timeout: Duration,
    /// How often the mount is checked while Plex works.
    pub health_interval: Duration,
    /// `[media.s3]`, or the `[s3]` connection when that table is absent.
    pub connection: S3Connection,
    /// True when `[media.s3]` was given.
    pub own_connection: bool,
}

/// `bucket[/path]`: what the rclone remote mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRemote {
    pub bucket: BucketName,
    /// Without leading or trailing `/`; empty for the whole bucket.
    pub path: String,
}

impl std::fmt::Display for MediaRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.bucket)
        } else {
            write!(f, "{}/{}", self.bucket, self.path)
        }
    }
}

/// rclone mount tuning, by instance size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcloneProfile {
    /// A few cores and a small disk: 10 GiB VFS cache, 16 MiB read-ahead,
    /// 4 transfers.
    Small,
    /// 8-16 cores: 50 GiB cache, 64 MiB read-ahead, 8 transfers.
    Balanced,
    /// 32+ cores, big local disk: 200 GiB cache, 128 MiB read-ahead,
    /// 16 transfers.
    Large,
}

/// The numbers behind an [`RcloneProfile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcloneTuning {
    pub vfs_cache_max_size_gib: u64,
    pub vfs_read_ahead_mib: u64,
    pub transfers: u32,
}

impl RcloneProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            RcloneProfile::Small => "small",
            RcloneProfile::Balanced => "balanced",
            RcloneProfile::Large => "large",
        }
    }

    pub fn tuning(self) -> RcloneTuning {
        let (vfs_cache_max_size_gib, vfs_read_ahead_mib, transfers) = match self {
            RcloneProfile::Small => (10, 16, 4),
            RcloneProfile::Balanced => (50, 64, 8),
            RcloneProfile::Large => (200, 128, 16),
        };
        RcloneTuning {
            vfs_cache_max_size_gib,
            vfs_read_ahead_mib,
            transfers,
        }
    }
}

/// `[plex]`.
#[derive(Debug, Clone)]
pub struct PlexSettings {
    /// The home server's version: the DB must not migrate past it.
    pub version: PlexVersion,
    pub runtime: PlexRuntime,
    /// `Some`: claim the server with this plex.tv account (needed for Sonic).
    pub claim: Option<PlexClaim>,
    pub libraries: LibraryFilter,
    /// `.../Plex Media Server`, the folder holding `Plug-in Support/Databases`.
    pub app_support_dir: PathBuf,
    /// Plex's HTTP port on the instance's loopback.
    pub port: u16,
    /// plex.tv (claim tokens, the account's devices); a double in tests.
    pub plextv_url: BaseUrl,
    /// The user Plex runs as: owns the DB files and the media mount.
    /// `None`: the runner's own.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlexRuntime {
    /// The official image, pre-pulled into the instance image, tagged
    /// with `plex.version`. (Plex's Debian package, a "native" runtime,
    /// was removed: the image recipe never installed it and nothing could
    /// test it.)
    Docker {
        image: DockerImage,
        /// More environment for the container (`plex.container_env`), e.g.
        /// Plex's own tuning variables; never one the runner sets itself.
        env: BTreeMap<String, String>,
    },
    /// The test double standing in for Plex; `None`: `plex-double` beside
    /// the runner binary, else on PATH.
    Double { binary: Option<AbsPath> },
}

impl PlexRuntime {
    pub fn as_str(&self) -> &'static str {
        match self {
            PlexRuntime::Docker { .. } => "docker",
            PlexRuntime::Double { .. } => "double",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlexClaim {
    /// The account's `X-Plex-Token`, used to get a claim token at the
    /// moment of claiming (claim tokens live ~4 minutes). `None`: it was
    /// used by an earlier claim and forgotten (`forget_after_claim`).
    pub account_token: Option<Secret>,
    pub source: CredentialSource,
    /// The token is needed only to claim: once the server is claimed it is
    /// dropped from memory and its `credentials_file` deleted.
    pub forget_after_claim: bool,
}

/// `[wipe]`: what holds the run's secrets on the instance's disk, which
/// outlives the instance (terminate leaves the root volume behind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WipeSettings {
    /// Deleted before the instance ends (the units' environment file).
    pub files: Vec<AbsPath>,
    /// Folders with copies of the user data (cloud-init's): every file in
    /// them holding a secret of the run is deleted at boot.
    pub user_data_copies: Vec<AbsPath>,
}

/// Which libraries the run works on, by title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryFilter {
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl LibraryFilter {
    pub fn selects(&self, title: &str) -> bool {
        match self {
            LibraryFilter::All => true,
            LibraryFilter::Include(names) => names.iter().any(|n| n == title),
            LibraryFilter::Exclude(names) => !names.iter().any(|n| n == title),
        }
    }
}

/// `[[path_mapping]]`: home path prefix → instance path prefix, by whole
/// leading components. One type for the config and the DB toolkit.
pub use crate::plexdb::PathMapping;

/// `[phases]`: the optional work of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub scan: bool,
    /// After the library's scan, a scan of each folder at the top of its
    /// locations (`path=`), for changes the incremental scan misses.
    pub deep_scan: bool,
    /// Media analysis (Butler-style `analyze`), slow and rarely needed.
    pub analysis: bool,
    /// Sonic (music) analysis; skipped with a report line without Plex Pass.
    pub sonic: bool,
    /// After its scan, refresh each library's metadata from the internet
    /// (`force=1`, Plex's "Refresh All Metadata": hours on a big library).
    pub refresh_metadata: bool,
}

/// `[cost]`: what the run is billed per hour (the instance and its root
/// volume at list price) and what launch estimated it would cost. Figures
/// for the run's report and its last notification only.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub eur_per_hour: f64,
    pub estimate_eur: Option<f64>,
    /// How the estimate was made, in a line.
    pub estimate_basis: Option<String>,
}

/// `[canary]`: the run is a rehearsal. Each library's scan is a partial
/// scan of one folder (after a read check of its first files through the
/// mount), Sonic stops after `sonic_tracks` and a missing Plex Pass fails
/// the run instead of skipping Sonic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub sonic_tracks: u64,
    /// The folders to scan, as Plex sees them (mapped); a library without
    /// one of them scans the first folder at the top of its locations.
    pub folders: Vec<AbsPath>,
}

/// `[deadlines]`: every value is > 0 and no phase outlives `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub run: Duration,
    pub pull: Duration,
    pub plex_ready: Duration,
    /// How long requests Plex answers "still starting up" are sent again.
    pub plex_startup: Duration,
    pub scan: Duration,
    pub scan_per_type: ScanPerType,
    pub analysis: Duration,
    /// One library's metadata refresh (`phases.refresh_metadata`).
    pub refresh_metadata: Duration,
    pub sonic: Duration,
    pub upload: Duration,
    /// A phase stalls after `stall_checks` checks `stall_interval` apart
    /// with no progress.
    pub stall_interval: Duration,
    pub stall_checks: u32,
    /// How often Plex's state is polled while waiting.
    pub poll_interval: Duration,
    /// Plex is idle after this many polls in a row saw no work.
    pub idle_checks: u32,
    /// A consistent DB snapshot goes to S3 this often during Sonic.
    pub snapshot_interval: Duration,
    /// systemd's watchdog: a runner that shows no progress for this long
    /// is killed and restarted (it resumes from its checkpoint).
    pub watchdog: Duration,
}

/// Scan deadline of one library, by type (photos make thumbnails: slow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanPerType {
    pub movie: Duration,
    pub show: Duration,
    pub artist: Duration,
    pub photo: Duration,
}

impl Deadlines {
    pub fn scan_for(&self, kind: LibraryType) -> Duration {
        match kind {
            LibraryType::Movie => self.scan_per_type.movie,
            LibraryType::Show => self.scan_per_type.show,
            LibraryType::Artist => self.scan_per_type.artist,
            LibraryType::Photo => self.scan_per_type.photo,
        }
    }
}

/// `[guard]`: a library fails the deletion guard when it lost more than
/// `max_lost_items` items or more than `max_lost_fraction` of its items;
/// a run never publishes a DB with a failing library.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardLimits {
    pub max_lost_items: u64,
    /// In `0.0..=1.0`.
    pub max_lost_fraction: f64,
}

/// `[termination]`: what happens to the instance when the run ends.
#[derive(Debug, Clone)]
pub enum Termination {
    /// Nothing is terminated (local runs, tests).
    None,
    Scaleway(ScalewayTermination),
}

#[derive(Debug, Clone)]
pub struct ScalewayTermination {
    /// Leave the instance up after a failure, for inspection (still billed).
    pub keep_on_failure: bool,
    /// The dead-man ends the instance this long after the run's deadline,
    /// whatever the runner is doing (`keep_on_failure` included).
    pub dead_man_grace: Duration,
    pub zone: Zone,
    pub api_url: BaseUrl,
    pub metadata_url: BaseUrl,
    pub secret_key: Secret,
    pub source: CredentialSource,
}
