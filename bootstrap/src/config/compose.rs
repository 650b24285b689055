//! A run's `run.toml`, composed from `bootstrap.toml`'s `[run]` and `[s3]`
//! tables and what only a launch knows (run id, Plex version, reference
//! archive, termination). Secrets never enter it: the instance reads them
//! from the environment file the run's user data writes beside it.

use super::{INSTANCE_WORK_DIR, ScalewaySettings};
use runner::scaleway::Zone;

/// Where the run's user data puts its config and secrets on the instance
/// (the runner unit reads the secrets as its environment).
pub const RUN_CONFIG_PATH: &str = "/etc/plex-burst/run.toml";
pub const RUN_SECRETS_PATH: &str = "/etc/plex-burst/secrets.env";
/// The plex.tv account token, apart: only the claim needs it, and the
/// runner deletes this file once the server is claimed.
pub const RUN_PLEXTV_PATH: &str = "/etc/plex-burst/plextv.env";
/// Where cloud-init keeps copies of the user data (the raw user data, the
/// cloud-config made from it, the pickled datasource) and may log it: the
/// runner scrubs them at boot.
const USER_DATA_COPIES: [&str; 3] = [
    "/var/lib/cloud",
    "/var/log/cloud-init.log",
    "/var/log/cloud-init-output.log",
];

/// The environment variables a run's secrets arrive in: the runner's
/// default credential sources.
const RUN_SECRET_VARS: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SCW_SECRET_KEY",
    "PLEX_TOKEN",
    MEDIA_ACCESS_KEY_VAR,
    MEDIA_SECRET_KEY_VAR,
];

/// Where the run's read-only media key arrives (`[media.s3]` names them).
const MEDIA_ACCESS_KEY_VAR: &str = "MEDIA_AWS_ACCESS_KEY_ID";
const MEDIA_SECRET_KEY_VAR: &str = "MEDIA_AWS_SECRET_ACCESS_KEY";

/// Keys bootstrap writes itself: the user cannot set them under `[run]`.
const OWNED_KEYS: [&str; 8] = [
    "run_id",
    "work_dir",
    "s3",
    "reference",
    "termination",
    "wipe",
    "cost",
    // From bootstrap.toml's own `[[notify]]`.
    "notify",
];

/// Credential keys: a run only ever gets its own per-run key.
const CREDENTIAL_KEYS: [&str; 7] = [
    "access_key",
    "secret_key",
    "access_key_env",
    "secret_key_env",
    "credentials_file",
    "account_token",
    "account_token_env",
];

/// A Plex version used only to check `[run]` before a reference is known.
pub const PROBE_PLEX_VERSION: &str = "1.0.0.0-00000000";

/// What a launch decides for one run.
#[derive(Debug, Clone)]
pub struct RunParams {
    pub run_id: String,
    pub plex_version: String,
    /// `(archive_key, manifest_key)` in delta mode.
    pub reference: Option<(String, String)>,
    pub zone: Zone,
    pub api_url: String,
    pub metadata_url: Option<String>,
    pub keep_on_failure: bool,
    pub dead_man_grace: std::time::Duration,
    /// A rehearsal's slice of the work, for `launch --canary`.
    pub canary: Option<super::CanarySettings>,
    /// The run's price and estimate, for its report (`[cost]`).
    pub cost: Option<runner::config::Cost>,
}

impl RunParams {
    /// Stand-in values, to check `[run]` when the config is loaded.
    pub(super) fn probe(scaleway: &ScalewaySettings) -> RunParams {
        RunParams {
            run_id: "config-check".into(),
            plex_version: PROBE_PLEX_VERSION.into(),
            reference: Some((
                "reference/probe.tar.zst".into(),
                "reference/probe.manifest.json".into(),
            )),
            zone: scaleway.zone.clone(),
            api_url: scaleway.api_url.clone(),
            metadata_url: scaleway.metadata_url.clone(),
            keep_on_failure: scaleway.keep_on_failure,
            dead_man_grace: scaleway.dead_man_grace,
            canary: None,
            cost: None,
        }
    }
}

/// The run's secrets, written to [`RUN_SECRETS_PATH`] (mode 0600).
pub struct RunSecrets {
    pub access_key: String,
    pub secret_key: runner::secret::Secret,
    /// The read-only key the media bucket is mounted with.
    pub media_access_key: String,
    pub media_secret_key: runner::secret::Secret,
    pub plex_token: Option<runner::secret::Secret>,
    /// `[[notify]]`'s secrets, as `run.toml` names them.
    pub notify: Vec<(String, runner::secret::Secret)>,
}

impl RunSecrets {
    /// `KEY=VALUE` lines, the format of systemd's `EnvironmentFile=`.
    pub fn env_file(&self) -> String {
        let mut text = format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nSCW_SECRET_KEY={}\n",
            self.access_key,
            self.secret_key.expose(),
            self.secret_key.expose()
        );
        text.push_str(&format!(
            "{MEDIA_ACCESS_KEY_VAR}={}\n{MEDIA_SECRET_KEY_VAR}={}\n",
            self.media_access_key,
            self.media_secret_key.expose()
        ));
        for (var, value) in &self.notify {
            text.push_str(&format!("{var}={}\n", value.expose()));
        }
        text
    }

    /// [`RUN_PLEXTV_PATH`]'s content: the account token when claiming.
    pub fn plextv_file(&self) -> String {
        match &self.plex_token {
            Some(token) => format!("PLEX_TOKEN={}\n", token.expose()),
            None => "# the run does not claim its server: no plex.tv token\n".into(),
        }
    }
}

pub(super) fn is_credential_key(key: &str) -> bool {
    CREDENTIAL_KEYS.contains(&key)
}

/// True for the variables a run's secrets arrive in.
pub(super) fn run_secret_var(var: &str) -> bool {
    RUN_SECRET_VARS.contains(&var)
}

/// Refuses what `[run]` may not hold.
pub(super) fn check_run_table(run: &toml::Table) -> Result<(), String> {
    if let Some(key) = OWNED_KEYS.iter().find(|k| run.contains_key(**k)) {
        return Err(format!(
            "run.{key}: bootstrap sets this for each run; remove it from [run]"
        ));
    }
    find_credential(run, "run")
}

fn find_credential(table: &toml::Table, at: &str) -> Result<(), String> {
    for (key, value) in table {
        let here = format!("{at}.{key}");
        if CREDENTIAL_KEYS.iter().any(|c| c == key) {
            return Err(format!(
                "{here}: a run uses the per-run key bootstrap creates (and PLEX_TOKEN from bootstrap's environment); remove this key"
            ));
        }
        match value {
            toml::Value::Table(t) => find_credential(t, &here)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        find_credential(t, &format!("{here}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The instance mounts the media bucket with the run's read-only media key:
/// `[media.s3]` (the `[s3]` connection when `[run.media.s3]` is not given)
/// names the variables it arrives in.
fn media_key(doc: &mut toml::Table, s3: &toml::Table) {
    let Some(toml::Value::Table(media)) = doc.get_mut("media") else {
        return;
    };
    let connection = media.entry("s3").or_insert_with(|| {
        let mut c = toml::Table::new();
        for key in ["endpoint", "region", "path_style"] {
            if let Some(v) = s3.get(key) {
                c.insert(key.into(), v.clone());
            }
        }
        c.into()
    });
    if let toml::Value::Table(c) = connection {
        c.insert("access_key_env".into(), MEDIA_ACCESS_KEY_VAR.into());
        c.insert("secret_key_env".into(), MEDIA_SECRET_KEY_VAR.into());
    }
}

/// A canary's run: its `[canary]` table, its own deadline (budgets longer
/// than it dropped: the runner caps its defaults), and none of the
/// optional long work (deep scan, metadata refresh, media analysis).
fn canary_slice(doc: &mut toml::Table, canary: &super::CanarySettings) {
    let mut table = toml::Table::new();
    table.insert("sonic_tracks".into(), (canary.sonic_tracks as i64).into());
    if !canary.folders.is_empty() {
        table.insert("folders".into(), canary.folders.clone().into());
    }
    doc.insert("canary".into(), table.into());
    if let toml::Value::Table(phases) = doc
        .entry("phases")
        .or_insert_with(|| toml::Table::new().into())
    {
        for long in ["deep_scan", "refresh_metadata", "analysis"] {
            phases.insert(long.into(), false.into());
        }
    }
    if let toml::Value::Table(deadlines) = doc
        .entry("deadlines")
        .or_insert_with(|| toml::Table::new().into())
    {
        drop_longer(deadlines, canary.deadline);
        deadlines.insert(
            "run".into(),
            humantime::format_duration(canary.deadline)
                .to_string()
                .into(),
        );
    }
}

/// Removes the durations longer than `limit`, in nested tables too.
fn drop_longer(table: &mut toml::Table, limit: std::time::Duration) {
    table.retain(|_, v| match v {
        toml::Value::String(s) => humantime::parse_duration(s).map_or(true, |d| d <= limit),
        _ => true,
    });
    for (_, value) in table.iter_mut() {
        if let toml::Value::Table(t) = value {
            drop_longer(t, limit);
        }
    }
}

/// The run's `run.toml`. `keep_s3_credentials`: keep `[s3]`'s own
/// credential keys and home paths (bootstrap's view); the instance's copy
/// has neither.
pub(super) fn compose(
    s3: &toml::Table,
    run: &toml::Table,
    notify: &[runner::notify::RawTarget],
    params: &RunParams,
    keep_s3_credentials: bool,
) -> String {
    let mut doc = run.clone();
    if !notify.is_empty() {
        doc.insert(
            "notify".into(),
            toml::Value::try_from(notify).expect("notify tables serialise"),
        );
    }
    doc.insert("run_id".into(), params.run_id.clone().into());
    doc.insert("work_dir".into(), INSTANCE_WORK_DIR.into());

    let mut s3 = s3.clone();
    if !keep_s3_credentials {
        s3.retain(|k, _| !CREDENTIAL_KEYS.contains(&k));
    }
    if !keep_s3_credentials {
        media_key(&mut doc, &s3);
    }
    doc.insert("s3".into(), s3.into());

    let delta = doc.get("mode").and_then(toml::Value::as_str) != Some("scratch");
    if let (true, Some((archive, manifest))) = (delta, &params.reference) {
        let mut reference = toml::Table::new();
        reference.insert("archive_key".into(), archive.clone().into());
        reference.insert("manifest_key".into(), manifest.clone().into());
        doc.insert("reference".into(), reference.into());
    }

    if let toml::Value::Table(plex) = doc
        .entry("plex")
        .or_insert_with(|| toml::Table::new().into())
    {
        plex.entry("version")
            .or_insert_with(|| params.plex_version.clone().into());
        // The image installs the Plex double beside the runner, where the
        // runner looks by default: home's path means nothing there.
        if !keep_s3_credentials {
            plex.remove("double_binary");
        }
        if plex.get("claim").and_then(toml::Value::as_bool) == Some(true) {
            plex.insert("credentials_file".into(), RUN_PLEXTV_PATH.into());
            plex.insert("forget_token_after_claim".into(), true.into());
        }
    }

    if let Some(canary) = &params.canary {
        canary_slice(&mut doc, canary);
    }

    // Nothing secret stays on the disk, which outlives the instance.
    let mut wipe = toml::Table::new();
    wipe.insert(
        "files".into(),
        vec![RUN_SECRETS_PATH, RUN_PLEXTV_PATH].into(),
    );
    wipe.insert("user_data_copies".into(), USER_DATA_COPIES.to_vec().into());
    doc.insert("wipe".into(), wipe.into());

    let mut termination = toml::Table::new();
    termination.insert("provider".into(), "scaleway".into());
    termination.insert("zone".into(), params.zone.as_str().into());
    termination.insert("api_url".into(), params.api_url.clone().into());
    if let Some(url) = &params.metadata_url {
        termination.insert("metadata_url".into(), url.clone().into());
    }
    termination.insert("keep_on_failure".into(), params.keep_on_failure.into());
    termination.insert(
        "dead_man_grace".into(),
        humantime::format_duration(params.dead_man_grace)
            .to_string()
            .into(),
    );
    doc.insert("termination".into(), termination.into());
    if let Some(c) = &params.cost {
        let mut cost = toml::Table::new();
        cost.insert("eur_per_hour".into(), c.eur_per_hour.into());
        if let Some(eur) = c.estimate_eur {
            cost.insert("estimate_eur".into(), eur.into());
        }
        if let Some(basis) = &c.estimate_basis {
            cost.insert("estimate_basis".into(), basis.clone().into());
        }
        doc.insert("cost".into(), cost.into());
    }

    format!(
        "# run.toml for plex-burst run {}, written by `bootstrap launch`.\n\
         # Secrets are not here: the runner reads them from {RUN_SECRETS_PATH}.\n\n{}",
        params.run_id,
        toml::to_string_pretty(&doc).expect("a TOML table serialises")
    )
}
