//! The instance a run lives on (`[termination] provider = "scaleway"`). At
//! start the user data, which holds the run's secrets, is deleted from the
//! metadata service (cloud-init has written its files; nothing else on the
//! instance should read them again; their copies on disk go too: `wipe`). At the end the instance terminates
//! itself through the API (a guest shutdown would leave it billed), and so
//! it does after a failure once the run's deadline has passed (restarts
//! could only fail again), unless `keep_on_failure`.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{RunConfig, ScalewayTermination, Termination};
use crate::scaleway::{Client, Metadata, ServerAction, Zone};

/// The user-data key cloud-init reads.
const USER_DATA_KEY: &str = "cloud-init";
/// 2 + 4 + 8 + 16 + 32 s between attempts: about a minute.
const USER_DATA_ATTEMPTS: u32 = 6;
const TERMINATE_PATIENCE: Duration = Duration::from_secs(30 * 60);
const TERMINATE_PAUSE: Duration = Duration::from_secs(30);

fn scaleway(cfg: &RunConfig) -> Option<&ScalewayTermination> {
    match cfg.termination() {
        Termination::Scaleway(s) => Some(s),
        Termination::None => None,
    }
}

/// Deletes the run's user data from the metadata service, trying again
/// for about a minute: it holds the run's secrets, so a failure is the
/// run's to report (in status.json), not only a log line.
pub async fn forget_user_data(cfg: &RunConfig) -> Result<()> {
    let Some(scw) = scaleway(cfg) else {
        return Ok(());
    };
    let metadata = Metadata::new(scw.metadata_url.as_ref())?;
    let mut pause = Duration::from_secs(2);
    for attempt in 1..=USER_DATA_ATTEMPTS {
        match metadata.delete_user_data(USER_DATA_KEY).await {
            Ok(()) => {
                tracing::info!("the run's user data was deleted from the metadata service");
                return Ok(());
            }
            Err(e) if attempt == USER_DATA_ATTEMPTS => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the run's user data (its secrets) could not be deleted from the metadata service after {attempt} attempts"
                )));
            }
            Err(e) => {
                tracing::warn!(
                    attempt,
                    "cannot delete the run's user data from the metadata service: {e}; trying again"
                );
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Whether the run ends by terminating its instance.
pub fn terminates(cfg: &RunConfig) -> bool {
    scaleway(cfg).is_some()
}

/// Whether a failed run keeps its instance for inspection.
pub fn kept_on_failure(cfg: &RunConfig) -> bool {
    scaleway(cfg).is_some_and(|s| s.keep_on_failure)
}

/// Terminates this instance, trying again (its secrets are in memory only
/// by now: a restarted runner could not) for [`TERMINATE_PATIENCE`].
pub async fn terminate_until_accepted(cfg: &RunConfig) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match terminate(cfg).await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() >= TERMINATE_PATIENCE => {
                return Err(e.context(format!(
                    "gave up after {}; the dead-man ends the instance at the deadline",
                    humantime::format_duration(TERMINATE_PATIENCE)
                )));
            }
            Err(e) => {
                // An answer, even a refusal, is the run moving on: the
                // watchdog must not restart a runner that holds the only
                // copy of its secrets.
                crate::systemd::beat();
                tracing::warn!("{e:#}; trying again in {}s", TERMINATE_PAUSE.as_secs());
                tokio::time::sleep(TERMINATE_PAUSE).await;
            }
        }
    }
}

/// Terminates this instance, when the run is configured to.
pub async fn terminate(cfg: &RunConfig) -> Result<()> {
    let Some(scw) = scaleway(cfg) else {
        return Ok(());
    };
    let metadata = Metadata::new(scw.metadata_url.as_ref())?;
    let me = metadata
        .conf()
        .await
        .context("cannot ask the metadata service which server this is")?;
    let zone: Zone = me.instance_zone().unwrap_or_else(|_| scw.zone.clone());
    tracing::info!(server = %me.id, %zone, "terminating this instance");
    Client::new(scw.api_url.as_ref(), scw.secret_key.clone())?
        .server_action(&zone, &me.id, ServerAction::Terminate)
        .await
        .with_context(|| format!("cannot terminate this instance ({})", me.id))
}

/// Terminates this instance after a final failure, unless the run keeps it
/// for inspection (`keep_on_failure`). Never fails: the failure being
/// reported is the run's.
pub async fn terminate_after_failure(cfg: &RunConfig) {
    match scaleway(cfg) {
        Some(scw) if scw.keep_on_failure => {
            tracing::warn!("the run failed; the instance is kept for inspection (keep_on_failure)")
        }
        Some(_) => {
            if let Err(e) = terminate(cfg).await {
                tracing::error!(
                    "the run failed and the instance could not terminate itself: {e:#}"
                );
            }
        }
        None => {}
    }
}
