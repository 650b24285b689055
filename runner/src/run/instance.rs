//! The instance a run lives on (`[termination] provider = "scaleway"`). At
//! start the user data, which holds the run's secrets, is deleted from the
//! metadata service (cloud-init has written its files; nothing else on the
//! instance should read them again). At the end the instance terminates
//! itself through the API (a guest shutdown would leave it billed), and so
//! it does after a failure once the run's deadline has passed (restarts
//! could only fail again), unless `keep_on_failure`.

use anyhow::{Context, Result};

use crate::config::{RunConfig, ScalewayTermination, Termination};
use crate::scaleway::{Client, Metadata, ServerAction, Zone};

/// The user-data key cloud-init reads.
const USER_DATA_KEY: &str = "cloud-init";

fn scaleway(cfg: &RunConfig) -> Option<&ScalewayTermination> {
    match cfg.termination() {
        Termination::Scaleway(s) => Some(s),
        Termination::None => None,
    }
}

/// Deletes the run's user data from the metadata service. Best effort: a
/// failure is logged (the user data dies with the instance anyway).
pub async fn forget_user_data(cfg: &RunConfig) {
    let Some(scw) = scaleway(cfg) else { return };
    let forgotten = async {
        Metadata::new(scw.metadata_url.as_ref())?
            .delete_user_data(USER_DATA_KEY)
            .await
    };
    match forgotten.await {
        Ok(()) => tracing::info!("the run's user data was deleted from the metadata service"),
        Err(e) => {
            tracing::warn!("cannot delete the run's user data from the metadata service: {e}")
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
