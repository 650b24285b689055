//! Raw `run.toml` → [`RunConfig`]: every value checked, defaults filled in,
//! secrets resolved, cross-key rules enforced. The first problem found is
//! returned, naming its key.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RunConfig;
use super::credentials::{self, CredentialSource, SecretKeys};
use super::error::{Problem, invalid, missing};
use super::raw::*;
use super::sections::*;
use super::types::*;

pub const DEFAULT_RUNS_PREFIX: &str = "runs/";
pub const DEFAULT_REFERENCE_PREFIX: &str = "reference/";
pub const DEFAULT_ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const DEFAULT_SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const DEFAULT_PLEX_TOKEN_ENV: &str = "PLEX_TOKEN";
pub const DEFAULT_SCW_SECRET_KEY_ENV: &str = "SCW_SECRET_KEY";
pub const DEFAULT_DOCKER_IMAGE: &str = "plexinc/pms-docker";
pub const DEFAULT_SCW_API_URL: &str = "https://api.scaleway.com";
pub const DEFAULT_SCW_METADATA_URL: &str = "http://169.254.42.42";
pub const DEFAULT_ANCHOR_SAMPLES: u32 = 8;
pub const DEFAULT_PLEX_PORT: u16 = 32400;
pub const DEFAULT_PLEXTV_URL: &str = "https://plex.tv";
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_LOST_ITEMS: u64 = 10;
pub const DEFAULT_MAX_LOST_FRACTION: f64 = 0.05;
pub const DEFAULT_DEAD_MAN_GRACE: Duration = Duration::from_secs(3600);
const APP_SUPPORT_UNDER_CONFIG: &str = "Library/Application Support/Plex Media Server";

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Longer than any run could sensibly be billed for.
const MAX_RUN: Duration = Duration::from_secs(30 * 24 * 3600);

type Result<T> = std::result::Result<T, Problem>;

/// A checked newtype from the raw string at `key`.
fn parse<T: TryFrom<String, Error = String>>(key: &str, value: &str) -> Result<T> {
    T::try_from(value.to_string()).map_err(|e| invalid(key, e))
}

fn parse_opt<T: TryFrom<String, Error = String>>(
    key: &str,
    value: &Option<String>,
) -> Result<Option<T>> {
    value.as_deref().map(|v| parse(key, v)).transpose()
}

pub(super) fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<RunConfig> {
    let run_id: RunId = parse("run_id", &raw.run_id)?;
    let work_dir: AbsPath = parse("work_dir", &raw.work_dir)?;
    let s3 = s3_settings(&raw.s3, env)?;
    let pull = pull_limits(&raw.pull)?;
    let media = media_settings(raw.media, &s3.connection, env)?;
    let mode = mode(raw.mode, raw.reference, raw.library, &media.mount_point)?;
    let plex = plex_settings(raw.plex, &mode, &work_dir, env)?;
    // The container gets the mount's parent folder (process.rs says why):
    // never the whole root.
    if matches!(plex.runtime, PlexRuntime::Docker { .. })
        && media.mount_point.as_path().parent() == Some(Path::new("/"))
    {
        return Err(invalid(
            "media.mount_point",
            "with plex.runtime = \"docker\" it needs a parent folder other than \"/\" \
             (shared with Plex's container so that a remount reaches it), e.g. /mnt/media",
        ));
    }
    let path_mappings = path_mappings(raw.path_mapping)?;
    let phases = phases(raw.phases)?;
    let deadlines = deadlines(raw.deadlines)?;
    let guard = guard(raw.guard)?;
    let termination = termination(raw.termination, env)?;
    let wipe = wipe(raw.wipe)?;
    let canary = raw.canary.map(|c| canary(c, &path_mappings)).transpose()?;
    let cost = raw.cost.map(cost).transpose()?;
    let notify =
        crate::notify::targets(&raw.notify, env).map_err(|e| match e.split_once(": ") {
            Some((key, message)) => invalid(key, message),
            None => invalid("notify", e),
        })?;
    Ok(RunConfig {
        run_id,
        work_dir,
        mode,
        s3,
        pull,
        media,
        plex,
        path_mappings,
        phases,
        deadlines,
        guard,
        termination,
        wipe,
        canary,
        notify,
        notify_tables: raw.notify,
        cost,
    })
}

fn cost(raw: RawCost) -> Result<Cost> {
    let euros = |key: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(invalid(key, format!("{v} is not an amount in EUR")))
        }
    };
    Ok(Cost {
        eur_per_hour: euros("cost.eur_per_hour", raw.eur_per_hour)?,
        estimate_eur: raw
            .estimate_eur
            .map(|v| euros("cost.estimate_eur", v))
            .transpose()?,
        estimate_basis: raw.estimate_basis,
    })
}

fn s3_settings(raw: &RawS3, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Settings> {
    let bucket: BucketName = parse("s3.bucket", &raw.bucket)?;
    let creds = S3Creds {
        access_key: &raw.access_key,
        secret_key: &raw.secret_key,
        access_key_env: &raw.access_key_env,
        secret_key_env: &raw.secret_key_env,
        credentials_file: &raw.credentials_file,
    };
    let connection = connection(
        "s3",
        &raw.endpoint,
        &raw.region,
        raw.path_style,
        &bucket,
        creds,
        env,
    )?;
    Ok(S3Settings {
        connection,
        bucket,
        runs_prefix: parse(
            "s3.runs_prefix",
            raw.runs_prefix.as_deref().unwrap_or(DEFAULT_RUNS_PREFIX),
        )?,
        reference_prefix: parse(
            "s3.reference_prefix",
            raw.reference_prefix
                .as_deref()
                .unwrap_or(DEFAULT_REFERENCE_PREFIX),
        )?,
    })
}

struct S3Creds<'a> {
    access_key: &'a Option<String>,
    secret_key: &'a Option<String>,
    access_key_env: &'a Option<String>,
    secret_key_env: &'a Option<String>,
    credentials_file: &'a Option<String>,
}

fn connection(
    section: &str,
    endpoint: &Option<String>,
    region: &str,
    path_style: Option<bool>,
    bucket: &BucketName,
    creds: S3Creds<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Connection> {
    let endpoint = parse_opt(&format!("{section}.endpoint"), endpoint)?;
    let region = parse(&format!("{section}.region"), region)?;
    let path_style = match path_style {
        Some(false) if bucket.needs_path_style() => {
            return Err(invalid(
                format!("{section}.path_style"),
                format!(
                    "bucket {bucket:?} has dots, which need path_style = true (virtual-hosted names break TLS)"
                ),
            ));
        }
        Some(p) => p,
        None => bucket.needs_path_style(),
    };
    let keys = [
        SecretKeys {
            name: "access_key",
            inline: creds.access_key.as_deref(),
            env: creds.access_key_env.as_deref(),
            default_env: DEFAULT_ACCESS_KEY_ENV,
        },
        SecretKeys {
            name: "secret_key",
            inline: creds.secret_key.as_deref(),
            env: creds.secret_key_env.as_deref(),
            default_env: DEFAULT_SECRET_KEY_ENV,
        },
    ];
    let (credential_source, secrets) =
        credentials::resolve(section, &keys, creds.credentials_file.as_deref(), env)?;
    let [access_key, secret_key]: [_; 2] = secrets
        .try_into()
        .map_err(|_| invalid(section, "internal: expected two secrets"))?;
    Ok(S3Connection {
        endpoint,
        region,
        path_style,
        access_key,
        secret_key,
        credential_source,
    })
}

fn media_settings(
    raw: RawMedia,
    s3: &S3Connection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MediaSettings> {
    let remote = media_remote(&raw.remote)?;
    let mount_point: AbsPath = parse("media.mount_point", &raw.mount_point)?;
    if mount_point.as_str() == "/" {
        return Err(invalid(
            "media.mount_point",
            "\"/\" cannot be a mount point",
        ));
    }
    let anchor_samples = raw.anchor_samples.unwrap_or(DEFAULT_ANCHOR_SAMPLES);
    if !(1..=1000).contains(&anchor_samples) {
        return Err(invalid(
            "media.anchor_samples",
            format!("{anchor_samples} is not in 1..=1000"),
        ));
    }
    let probe_timeout = raw.probe_timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
    check_duration("media.probe_timeout", probe_timeout, 10 * MINUTE)?;
    let health_interval = raw.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL);
    check_duration("media.health_interval", health_interval, 6 * HOUR)?;
    let (connection, own_connection) = match &raw.s3 {
        None => (s3.clone(), false),
        Some(c) => {
            let creds = S3Creds {
                access_key: &c.access_key,
                secret_key: &c.secret_key,
                access_key_env: &c.access_key_env,
                secret_key_env: &c.secret_key_env,
                credentials_file: &c.credentials_file,
            };
            let conn = connection(
                "media.s3",
                &c.endpoint,
                &c.region,
                c.path_style,
                &remote.bucket,
                creds,
                env,
            )?;
            (conn, true)
        }
    };
    if !own_connection && remote.bucket.needs_path_style() && !connection.path_style {
        return Err(invalid(
            "media.remote",
            format!(
                "bucket {:?} has dots, which need path_style = true: set it in [s3] or [media.s3]",
                remote.bucket
            ),
        ));
    }
    Ok(MediaSettings {
        remote,
        mount_point,
        profile: match raw.profile.unwrap_or(RawProfile::Balanced) {
            RawProfile::Small => RcloneProfile::Small,
            RawProfile::Balanced => RcloneProfile::Balanced,
            RawProfile::Large => RcloneProfile::Large,
        },
        anchor_samples,
        probe_timeout,
        health_interval,
        connection,
        own_connection,
    })
}

fn media_remote(value: &str) -> Result<MediaRemote> {
    let (bucket, path) = value.split_once('/').unwrap_or((value, ""));
    let path = path.trim_end_matches('/');
    let bucket = parse("media.remote", bucket)?;
    if !path.is_empty() {
        ObjectKey::try_from(path).map_err(|_| {
            invalid(
                "media.remote",
                format!("{value:?} is not bucket[/path] (no empty, '.' or '..' segments, no control characters)"),
            )
        })?;
    }
    Ok(MediaRemote {
        bucket,
        path: path.to_string(),
    })
}

fn mode(
    mode: RawMode,
    reference: Option<RawReference>,
    libraries: Vec<RawLibrary>,
    mount_point: &AbsPath,
) -> Result<Mode> {
    match mode {
        RawMode::Delta => {
            if !libraries.is_empty() {
                return Err(invalid(
                    "library",
                    "[[library]] declares libraries for mode = \"scratch\"; a delta run takes them from the reference DB",
                ));
            }
            let Some(r) = reference else {
                return Err(invalid(
                    "reference",
                    "mode = \"delta\" needs a [reference] table with archive_key",
                ));
            };
            Ok(Mode::Delta {
                reference: Reference {
                    archive_key: parse("reference.archive_key", &r.archive_key)?,
                    manifest_key: parse_opt("reference.manifest_key", &r.manifest_key)?,
                },
            })
        }
        RawMode::Scratch => {
            if reference.is_some() {
                return Err(invalid(
                    "reference",
                    "[reference] is for mode = \"delta\"; a scratch run starts from an empty Plex",
                ));
            }
            if libraries.is_empty() {
                return Err(invalid(
                    "library",
                    "mode = \"scratch\" needs at least one [[library]] (title, type, language, locations)",
                ));
            }
            let mut titles = HashSet::new();
            let libraries = libraries
                .into_iter()
                .enumerate()
                .map(|(i, l)| library(i, l, mount_point))
                .collect::<Result<Vec<_>>>()?;
            for (i, l) in libraries.iter().enumerate() {
                if !titles.insert(l.title.to_lowercase()) {
                    return Err(invalid(
                        format!("library[{i}].title"),
                        format!("{:?} is declared twice", l.title),
                    ));
                }
            }
            Ok(Mode::Scratch { libraries })
        }
    }
}

fn library(i: usize, raw: RawLibrary, mount_point: &AbsPath) -> Result<Library> {
    let key = |k: &str| format!("library[{i}].{k}");
    let kind = match raw.kind {
        RawLibraryType::Movie => LibraryType::Movie,
        RawLibraryType::Show => LibraryType::Show,
        RawLibraryType::Artist => LibraryType::Artist,
        RawLibraryType::Photo => LibraryType::Photo,
    };
    if raw.locations.is_empty() {
        return Err(invalid(key("locations"), "at least one location is needed"));
    }
    let mut locations: Vec<AbsPath> = Vec::new();
    for (j, l) in raw.locations.iter().enumerate() {
        let lkey = format!("{}[{j}]", key("locations"));
        let path: AbsPath = parse(&lkey, l)?;
        if !path.is_within(mount_point) {
            return Err(invalid(
                lkey,
                format!(
                    "{path} is not under media.mount_point {mount_point}: Plex would see it as empty"
                ),
            ));
        }
        if locations.contains(&path) {
            return Err(invalid(lkey, format!("{path} is listed twice")));
        }
        locations.push(path);
    }
    Ok(Library {
        title: parse(&key("title"), &raw.title)?,
        agent: parse(
            &key("agent"),
            raw.agent.as_deref().unwrap_or(kind.default_agent()),
        )?,
        scanner: parse(
            &key("scanner"),
            raw.scanner.as_deref().unwrap_or(kind.default_scanner()),
        )?,
        language: parse(&key("language"), &raw.language)?,
        kind,
        locations,
    })
}

fn plex_settings(
    raw: RawPlex,
    mode: &Mode,
    work_dir: &AbsPath,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PlexSettings> {
    let version = parse("plex.version", &raw.version)?;
    let runtime = match raw.runtime.unwrap_or(RawRuntime::Docker) {
        RawRuntime::Docker => PlexRuntime::Docker {
            image: parse(
                "plex.image",
                raw.image.as_deref().unwrap_or(DEFAULT_DOCKER_IMAGE),
            )?,
            env: container_env(raw.container_env.unwrap_or_default())?,
        },
        RawRuntime::Double => {
            for (key, given) in [
                ("image", raw.image.is_some()),
                ("container_env", raw.container_env.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        format!("plex.{key}"),
                        "only used with runtime = \"docker\"",
                    ));
                }
            }
            PlexRuntime::Double {
                binary: parse_opt("plex.double_binary", &raw.double_binary)?,
            }
        }
    };
    if raw.double_binary.is_some() && !matches!(runtime, PlexRuntime::Double { .. }) {
        return Err(invalid(
            "plex.double_binary",
            "only used with runtime = \"double\"",
        ));
    }
    let port = raw.port.unwrap_or(DEFAULT_PLEX_PORT);
    if port == 0 {
        return Err(invalid("plex.port", "0 is not a port"));
    }
    let plextv_url = parse(
        "plex.plextv_url",
        raw.plextv_url.as_deref().unwrap_or(DEFAULT_PLEXTV_URL),
    )?;
    let claim = if raw.claim.unwrap_or(false) {
        let forget_after_claim = raw.forget_token_after_claim.unwrap_or(false);
        let file = raw.credentials_file.as_deref();
        if forget_after_claim && file.is_none() {
            return Err(invalid(
                "plex.forget_token_after_claim",
                "needs plex.credentials_file (the file deleted after the claim)",
            ));
        }
        let keys = [SecretKeys {
            name: "account_token",
            inline: raw.account_token.as_deref(),
            env: raw.account_token_env.as_deref(),
            default_env: DEFAULT_PLEX_TOKEN_ENV,
        }];
        // A forgotten token's file is gone: an earlier attempt claimed the
        // server, which keeps its own token.
        let forgotten = forget_after_claim && file.is_some_and(|f| !Path::new(f).exists());
        let (source, account_token) = if let (true, Some(file)) = (forgotten, file) {
            let var = raw
                .account_token_env
                .as_deref()
                .unwrap_or(DEFAULT_PLEX_TOKEN_ENV);
            let source = CredentialSource::File {
                path: parse("plex.credentials_file", file)?,
                vars: vec![var.to_string()],
            };
            (source, None)
        } else {
            let (source, secrets) = credentials::resolve("plex", &keys, file, env)?;
            let token = secrets
                .into_iter()
                .next()
                .ok_or_else(|| missing("plex.account_token"))?;
            (source, Some(token))
        };
        Some(PlexClaim {
            account_token,
            source,
            forget_after_claim,
        })
    } else {
        let given = [
            ("account_token", raw.account_token.is_some()),
            ("account_token_env", raw.account_token_env.is_some()),
            ("credentials_file", raw.credentials_file.is_some()),
            (
                "forget_token_after_claim",
                raw.forget_token_after_claim.is_some(),
            ),
        ];
        if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("plex.{name}"),
                "only used with claim = true",
            ));
        }
        None
    };
    let libraries = library_filter(raw.include_libraries, raw.exclude_libraries, mode)?;
    let app_support_dir = match &raw.app_support_dir {
        Some(dir) => parse::<AbsPath>("plex.app_support_dir", dir)?
            .as_path()
            .to_path_buf(),
        None => default_app_support(work_dir),
    };
    Ok(PlexSettings {
        version,
        runtime,
        claim,
        libraries,
        app_support_dir,
        port,
        plextv_url,
        uid: raw.uid,
        gid: raw.gid,
    })
}

/// Docker and the double keep Plex's data under the work folder (docker
/// mounts `<work_dir>/plex` as `/config`).
pub(super) fn default_app_support(work_dir: &AbsPath) -> PathBuf {
    work_dir.join("plex").join(APP_SUPPORT_UNDER_CONFIG)
}

/// The image's variables that are the runner's to decide (process.rs sets
/// the first four; it claims through the API and advertises nothing), so
/// `plex.container_env` cannot undo the run's isolation or the DB's owner.
const RUNNER_CONTAINER_ENV: &[&str] = &[
    "PLEX_UID",
    "PLEX_GID",
    "TZ",
    "ALLOWED_NETWORKS",
    "ADVERTISE_IP",
    "PLEX_CLAIM",
];

/// `plex.container_env`: names as the shell spells them, values on one line.
fn container_env(env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    for (name, value) in &env {
        let key = format!("plex.container_env.{name}");
        let shaped = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !shaped {
            return Err(invalid(key, "not an environment variable name"));
        }
        if RUNNER_CONTAINER_ENV.contains(&name.as_str()) {
            return Err(invalid(key, "set by the runner itself"));
        }
        if value.contains(['\n', '\0']) {
            return Err(invalid(key, "must be one line"));
        }
    }
    Ok(env)
}

fn library_filter(
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    mode: &Mode,
) -> Result<LibraryFilter> {
    match (include, exclude) {
        (Some(_), Some(_)) => Err(invalid(
            "plex.exclude_libraries",
            "give include_libraries or exclude_libraries, not both",
        )),
        (None, None) => Ok(LibraryFilter::All),
        (Some(names), None) => library_names("plex.include_libraries", &names, mode)
            .map(|()| LibraryFilter::Include(names)),
        (None, Some(names)) => library_names("plex.exclude_libraries", &names, mode)
            .map(|()| LibraryFilter::Exclude(names)),
    }
}

fn library_names(key: &str, names: &[String], mode: &Mode) -> Result<()> {
    if names.is_empty() {
        return Err(invalid(
            key,
            "the list is empty: remove the key to work on every library",
        ));
    }
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        LibraryTitle::try_from(name.as_str()).map_err(|e| invalid(format!("{key}[{i}]"), e))?;
        if !seen.insert(name) {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        let declared = match mode {
            Mode::Scratch { libraries } => libraries.iter().any(|l| *l.title == **name),
            Mode::Delta { .. } => true, // known only once the reference DB is open
        };
        if !declared {
            return Err(invalid(
                format!("{key}[{i}]"),
                format!("{name:?} is not the title of any [[library]]"),
            ));
        }
    }
    Ok(())
}

/// Validated here into the DB toolkit's own `PathMapping`, so the run hands
/// them to `plexdb` as they are.
fn path_mappings(raw: Vec<RawPathMapping>) -> Result<Vec<PathMapping>> {
    let mut froms: Vec<AbsPath> = Vec::with_capacity(raw.len());
    let mut mappings = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let from: AbsPath = parse(&format!("path_mapping[{i}].from"), &m.from)?;
        let to: AbsPath = parse(&format!("path_mapping[{i}].to"), &m.to)?;
        // Overlapping prefixes would make the result depend on the order
        // the mappings are applied in.
        if let Some((j, other)) = froms
            .iter()
            .enumerate()
            .find(|(_, o)| from.is_within(o) || o.is_within(&from))
        {
            return Err(invalid(
                format!("path_mapping[{i}].from"),
                format!("{from} overlaps path_mapping[{j}].from {other}"),
            ));
        }
        let mapping = PathMapping::new(from.as_str(), to.as_str())
            .map_err(|e| invalid(format!("path_mapping[{i}]"), e.to_string()))?;
        froms.push(from);
        mappings.push(mapping);
    }
    Ok(mappings)
}

/// Sonic on this many tracks measures a rate (the default: enough to
/// average a few albums, minutes on the smallest instance).
const CANARY_SONIC_TRACKS: u64 = 50;

/// Folders are written as home paths (or instance paths): mapped as the
/// DB's paths are, so they name what Plex sees.
fn canary(raw: RawCanary, mappings: &[PathMapping]) -> Result<Canary> {
    let sonic_tracks = raw.sonic_tracks.unwrap_or(CANARY_SONIC_TRACKS);
    if sonic_tracks == 0 {
        return Err(invalid(
            "canary.sonic_tracks",
            "must be at least 1 (phases.sonic = false skips Sonic)",
        ));
    }
    let folders = raw
        .folders
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let key = format!("canary.folders[{i}]");
            let folder: AbsPath = parse(&key, f)?;
            parse(&key, &crate::plexdb::mapped_path(mappings, folder.as_str()))
        })
        .collect::<Result<_>>()?;
    Ok(Canary {
        sonic_tracks,
        folders,
    })
}

fn phases(raw: RawPhases) -> Result<Phases> {
    let scan = raw.scan.unwrap_or(true);
    let deep_scan = raw.deep_scan.unwrap_or(false);
    if deep_scan && !scan {
        return Err(invalid("phases.deep_scan", "needs phases.scan = true"));
    }
    // The refresh follows each library's scan, inside the deletion guard's
    // before/after window (a forced refresh scans too).
    let refresh_metadata = raw.refresh_metadata.unwrap_or(false);
    if refresh_metadata && !scan {
        return Err(invalid(
            "phases.refresh_metadata",
            "needs phases.scan = true",
        ));
    }
    Ok(Phases {
        scan,
        deep_scan,
        analysis: raw.analysis.unwrap_or(false),
        sonic: raw.sonic.unwrap_or(true),
        refresh_metadata,
    })
}

/// Defaults, before capping at the run's deadline.
pub(super) mod default_deadline {
    use super::Duration;
    pub const RUN: Duration = Duration::from_secs(72 * 3600);
    pub const PULL: Duration = Duration::from_secs(4 * 3600);
    pub const PLEX_READY: Duration = Duration::from_secs(10 * 60);
    pub const PLEX_STARTUP: Duration = Duration::from_secs(5 * 60);
    pub const SCAN: Duration = Duration::from_secs(24 * 3600);
    pub const ANALYSIS: Duration = Duration::from_secs(24 * 3600);
    pub const REFRESH_METADATA: Duration = Duration::from_secs(24 * 3600);
    pub const SONIC: Duration = Duration::from_secs(72 * 3600);
    pub const UPLOAD: Duration = Duration::from_secs(4 * 3600);
    pub const STALL_INTERVAL: Duration = Duration::from_secs(5 * 60);
    pub const STALL_CHECKS: u32 = 12;
    pub const POLL_INTERVAL: Duration = Duration::from_secs(10);
    pub const IDLE_CHECKS: u32 = 3;
    pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(6 * 3600);
    /// Above the longest step that shows no progress on the user's size
    /// (an integrity check, a snapshot's copy: under a minute measured at
    /// 490k items, docs/performance.md), with room for a slower disk.
    pub const WATCHDOG: Duration = Duration::from_secs(10 * 60);
}

fn deadlines(raw: RawDeadlines) -> Result<Deadlines> {
    use default_deadline as d;
    let run = raw.run.unwrap_or(d::RUN);
    check_duration("deadlines.run", run, MAX_RUN)?;
    // A phase given explicitly must fit in the run; a default is capped.
    let phase = |name: &str, value: Option<Duration>, default: Duration| -> Result<Duration> {
        match value {
            Some(v) => {
                let key = format!("deadlines.{name}");
                check_duration(&key, v, MAX_RUN)?;
                if v > run {
                    return Err(invalid(
                        key,
                        format!("{} exceeds deadlines.run ({})", fmt(v), fmt(run)),
                    ));
                }
                Ok(v)
            }
            None => Ok(default.min(run)),
        }
    };
    let scan = phase("scan", raw.scan, d::SCAN)?;
    let per = &raw.scan_per_type;
    let scan_per_type = ScanPerType {
        movie: phase("scan_per_type.movie", per.movie, scan)?,
        show: phase("scan_per_type.show", per.show, scan)?,
        artist: phase("scan_per_type.artist", per.artist, scan)?,
        photo: phase("scan_per_type.photo", per.photo, scan)?,
    };
    let stall_interval = raw.stall_interval.unwrap_or(d::STALL_INTERVAL);
    check_duration("deadlines.stall_interval", stall_interval, 6 * HOUR)?;
    if stall_interval < Duration::from_secs(10) {
        return Err(invalid(
            "deadlines.stall_interval",
            format!(
                "{} is too short to see progress (at least 10s)",
                fmt(stall_interval)
            ),
        ));
    }
    let stall_checks = raw.stall_checks.unwrap_or(d::STALL_CHECKS);
    if !(1..=1000).contains(&stall_checks) {
        return Err(invalid(
            "deadlines.stall_checks",
            format!("{stall_checks} is not in 1..=1000"),
        ));
    }
    let poll_interval = raw.poll_interval.unwrap_or(d::POLL_INTERVAL);
    check_duration("deadlines.poll_interval", poll_interval, 10 * MINUTE)?;
    let idle_checks = raw.idle_checks.unwrap_or(d::IDLE_CHECKS);
    if !(1..=100).contains(&idle_checks) {
        return Err(invalid(
            "deadlines.idle_checks",
            format!("{idle_checks} is not in 1..=100"),
        ));
    }
    let snapshot_interval = phase(
        "snapshot_interval",
        raw.snapshot_interval,
        d::SNAPSHOT_INTERVAL,
    )?;
    let watchdog = raw.watchdog.unwrap_or(d::WATCHDOG);
    check_duration("deadlines.watchdog", watchdog, 6 * HOUR)?;
    // A watch beats once per poll: several polls must fit in the interval.
    if watchdog < (3 * poll_interval).max(Duration::from_secs(30)) {
        return Err(invalid(
            "deadlines.watchdog",
            format!(
                "{} is too short: at least 30s and 3 x deadlines.poll_interval ({})",
                fmt(watchdog),
                fmt(poll_interval)
            ),
        ));
    }
    Ok(Deadlines {
        run,
        pull: phase("pull", raw.pull, d::PULL)?,
        plex_ready: phase("plex_ready", raw.plex_ready, d::PLEX_READY)?,
        plex_startup: phase("plex_startup", raw.plex_startup, d::PLEX_STARTUP)?,
        scan,
        scan_per_type,
        analysis: phase("analysis", raw.analysis, d::ANALYSIS)?,
        refresh_metadata: phase(
            "refresh_metadata",
            raw.refresh_metadata,
            d::REFRESH_METADATA,
        )?,
        sonic: phase("sonic", raw.sonic, d::SONIC)?,
        upload: phase("upload", raw.upload, d::UPLOAD)?,
        stall_interval,
        stall_checks,
        poll_interval,
        idle_checks,
        snapshot_interval,
        watchdog,
    })
}

fn check_duration(key: &str, value: Duration, max: Duration) -> Result<()> {
    if value < Duration::from_secs(1) {
        return Err(invalid(
            key,
            format!("{} is too short (at least 1s)", fmt(value)),
        ));
    }
    if value > max {
        return Err(invalid(
            key,
            format!("{} is longer than the limit of {}", fmt(value), fmt(max)),
        ));
    }
    Ok(())
}

fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn guard(raw: RawGuard) -> Result<GuardLimits> {
    let max_lost_fraction = raw.max_lost_fraction.unwrap_or(DEFAULT_MAX_LOST_FRACTION);
    if !(0.0..=1.0).contains(&max_lost_fraction) {
        return Err(invalid(
            "guard.max_lost_fraction",
            format!("{max_lost_fraction} is not a fraction in 0.0..=1.0"),
        ));
    }
    Ok(GuardLimits {
        max_lost_items: raw.max_lost_items.unwrap_or(DEFAULT_MAX_LOST_ITEMS),
        max_lost_fraction,
    })
}

fn wipe(raw: RawWipe) -> Result<WipeSettings> {
    let paths = |key: &str, list: Vec<String>| -> Result<Vec<AbsPath>> {
        list.iter()
            .map(|p| parse::<AbsPath>(&format!("wipe.{key}"), p))
            .collect()
    };
    Ok(WipeSettings {
        files: paths("files", raw.files)?,
        user_data_copies: paths("user_data_copies", raw.user_data_copies)?,
    })
}

fn termination(raw: RawTermination, env: &dyn Fn(&str) -> Option<String>) -> Result<Termination> {
    match raw.provider {
        RawProvider::None => {
            let scaleway_only = [
                ("keep_on_failure", raw.keep_on_failure.is_some()),
                ("dead_man_grace", raw.dead_man_grace.is_some()),
                ("zone", raw.zone.is_some()),
                ("api_url", raw.api_url.is_some()),
                ("metadata_url", raw.metadata_url.is_some()),
                ("secret_key", raw.secret_key.is_some()),
                ("secret_key_env", raw.secret_key_env.is_some()),
                ("credentials_file", raw.credentials_file.is_some()),
            ];
            match scaleway_only.iter().find(|(_, set)| *set) {
                Some((name, _)) => Err(invalid(
                    format!("termination.{name}"),
                    "only used with provider = \"scaleway\"",
                )),
                None => Ok(Termination::None),
            }
        }
        RawProvider::Scaleway => {
            let zone = match &raw.zone {
                // One zone type: the Scaleway client's.
                Some(z) => z.parse().map_err(|e| invalid("termination.zone", e))?,
                None => return Err(missing("termination.zone")),
            };
            let keys = [SecretKeys {
                name: "secret_key",
                inline: raw.secret_key.as_deref(),
                env: raw.secret_key_env.as_deref(),
                default_env: DEFAULT_SCW_SECRET_KEY_ENV,
            }];
            let (source, secrets) =
                credentials::resolve("termination", &keys, raw.credentials_file.as_deref(), env)?;
            let secret_key = secrets
                .into_iter()
                .next()
                .ok_or_else(|| missing("termination.secret_key"))?;
            let dead_man_grace = raw.dead_man_grace.unwrap_or(DEFAULT_DEAD_MAN_GRACE);
            check_duration("termination.dead_man_grace", dead_man_grace, MAX_RUN)?;
            Ok(Termination::Scaleway(ScalewayTermination {
                keep_on_failure: raw.keep_on_failure.unwrap_or(false),
                dead_man_grace,
                zone,
                api_url: parse(
                    "termination.api_url",
                    raw.api_url.as_deref().unwrap_or(DEFAULT_SCW_API_URL),
                )?,
                metadata_url: parse(
                    "termination.metadata_url",
                    raw.metadata_url
                        .as_deref()
                        .unwrap_or(DEFAULT_SCW_METADATA_URL),
                )?,
                secret_key,
                source,
            }))
        }
    }
}

/// `[pull]`: without a key, the archive module's defaults (the
/// destination's free space less a margin; 100:1).
fn pull_limits(raw: &RawPull) -> Result<crate::archive::Limits> {
    let mut limits = crate::archive::Limits::default();
    if let Some(text) = &raw.max_expanded_size {
        let max =
            crate::archive::parse_size(text).map_err(|e| invalid("pull.max_expanded_size", e))?;
        if max == 0 {
            return Err(invalid(
                "pull.max_expanded_size",
                "0 would refuse every archive",
            ));
        }
        limits.max_expanded = Some(max);
    }
    if let Some(ratio) = raw.max_expansion_ratio {
        if ratio < 2 {
            return Err(invalid(
                "pull.max_expansion_ratio",
                format!("{ratio} would refuse any compressed archive (Plex DBs compress 5-10:1)"),
            ));
        }
        limits.max_ratio = ratio;
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, RunConfig};
    use super::*;

    const EXAMPLE: &str = include_str!("../../run.example.toml");

    fn load(text: &str) -> std::result::Result<RunConfig, ConfigError> {
        RunConfig::from_toml_str(text, &|_| Some("secret-value".into()))
    }

    fn grace(cfg: &RunConfig) -> Duration {
        match cfg.termination() {
            Termination::Scaleway(s) => s.dead_man_grace,
            Termination::None => panic!("provider none"),
        }
    }

    #[test]
    fn dead_man_grace_defaults_to_an_hour_and_is_checked() {
        let cfg = load(EXAMPLE).unwrap();
        assert_eq!(grace(&cfg), DEFAULT_DEAD_MAN_GRACE);
        assert!(cfg.effective_toml().contains("dead_man_grace = \"1h\""));

        let without = EXAMPLE.replace("dead_man_grace = \"1h\"\n", "");
        assert_eq!(grace(&load(&without).unwrap()), DEFAULT_DEAD_MAN_GRACE);
        let set = EXAMPLE.replace("dead_man_grace = \"1h\"", "dead_man_grace = \"90m\"");
        assert_eq!(grace(&load(&set).unwrap()), 90 * MINUTE);

        let zero = EXAMPLE.replace("dead_man_grace = \"1h\"", "dead_man_grace = \"0s\"");
        let err = load(&zero).unwrap_err().to_string();
        assert!(
            err.contains("termination.dead_man_grace") && err.contains("at least 1s"),
            "{err}"
        );
    }

    #[test]
    fn dead_man_grace_is_only_for_scaleway() {
        let text = format!(
            "{}[termination]\nprovider = \"none\"\ndead_man_grace = \"1h\"\n",
            &EXAMPLE[..EXAMPLE.find("[termination]").unwrap()]
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("termination.dead_man_grace") && err.contains("only used with"),
            "{err}"
        );
    }
}
