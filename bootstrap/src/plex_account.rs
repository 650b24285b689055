//! The run's Plex server on the user's plex.tv account. The instance gives
//! the account token up once its server is claimed, so removing that server
//! from the account's devices is home's job (`fetch`, `sweep`), with the
//! token home holds.
//!
//! The run names its server in `status.json`, which the run can write: a
//! device is removed only if it is a Plex Media Server with that
//! identifier, registered on the account after the run was launched (the
//! time in the record kept at home), and not the home server.

use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use runner::plex::plextv::{Device, PlexTv};
use runner::run::status::Status;

use crate::config::BootstrapConfig;
use crate::home;
use crate::runs::LaunchRecord;

const SERVER_PRODUCT: &str = "Plex Media Server";
/// plex.tv's clock and ours may disagree a little.
const CLOCK_SLACK_SECS: i64 = 300;

/// The devices that are the run's server, by the rules above.
pub fn run_servers<'a>(
    devices: &'a [Device],
    record: &LaunchRecord,
    status: &Status,
    home_server: Option<&str>,
) -> Vec<&'a Device> {
    let Some(id) = status.plex_server.as_deref().filter(|id| !id.is_empty()) else {
        return Vec::new();
    };
    if Some(id) == home_server {
        return Vec::new();
    }
    let launched = record
        .launched_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    devices
        .iter()
        .filter(|d| d.client_identifier == id && d.product == SERVER_PRODUCT)
        .filter(|d| match (d.created_at, launched) {
            (Some(created), Some(launched)) => created + CLOCK_SLACK_SECS >= launched,
            _ => false,
        })
        .collect()
}

/// The account's devices, when the run claims its server (`None`: it does
/// not, or home has no token to ask with).
pub async fn devices(cfg: &BootstrapConfig) -> Result<Option<Vec<Device>>> {
    let Some(plextv) = client(cfg)? else {
        return Ok(None);
    };
    let devices = plextv
        .devices()
        .await
        .context("cannot list the plex.tv account's devices")?;
    Ok(Some(devices))
}

/// Removes the run's server from the account; a line for each removed.
pub async fn forget_run_server(
    cfg: &BootstrapConfig,
    record: &LaunchRecord,
    status: Option<&Status>,
) -> Result<Vec<String>> {
    let (Some(plextv), Some(status)) = (client(cfg)?, status) else {
        return Ok(Vec::new());
    };
    let devices = plextv
        .devices()
        .await
        .context("cannot list the plex.tv account's devices")?;
    let home = home_server(cfg);
    let mut removed = Vec::new();
    for device in run_servers(&devices, record, status, home.as_deref()) {
        plextv.delete_device(&device.id).await.with_context(|| {
            format!(
                "cannot remove the run's server {} from plex.tv",
                device.name
            )
        })?;
        removed.push(format!(
            "removed the run's Plex server {:?} ({}) from your plex.tv account",
            device.name, device.client_identifier
        ));
    }
    Ok(removed)
}

/// Removes one device (sweep, after listing it).
pub async fn delete_device(cfg: &BootstrapConfig, id: &str) -> Result<()> {
    let plextv = client(cfg)?.context("no plex.tv token at home to remove the server with")?;
    plextv.delete_device(id).await?;
    Ok(())
}

/// The home server's identifier on the account, so that it is never taken
/// for the run's.
pub fn home_server(cfg: &BootstrapConfig) -> Option<String> {
    let layout = home::layout_of(&cfg.home);
    runner::plex::preferences::Preferences::read(&layout.app_support_dir)
        .ok()
        .flatten()
        .and_then(|p| p.processed_machine_identifier().map(str::to_owned))
}

fn client(cfg: &BootstrapConfig) -> Result<Option<PlexTv>> {
    let Some(token) = cfg.plex_token() else {
        return Ok(None);
    };
    let url = cfg.run_settings().plex().plextv_url.to_string();
    Ok(Some(PlexTv::new(&url, token.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, product: &str, created_at: Option<i64>) -> Device {
        Device {
            id: format!("d-{id}"),
            name: "plex".into(),
            client_identifier: id.into(),
            product: product.into(),
            created_at,
        }
    }

    fn record(launched_at: &str) -> LaunchRecord {
        let mut r: LaunchRecord = serde_json::from_value(serde_json::json!({
            "run_id": "r1", "state": "launched", "zone": "fr-par-1",
            "project_id": "p", "commercial_type": "DEV1-S", "hourly_price": null,
            "root_volume_gb": 20, "image_id": null, "server_id": null,
            "root_volume_id": null, "api_key": null, "launched_at": launched_at,
            "deadline": launched_at, "snapshot_time": null, "reference_key": null,
            "plex_version": "1", "bootstrap_version": "1"
        }))
        .unwrap();
        r.kept_at_home = true;
        r
    }

    #[test]
    fn only_a_server_with_the_named_id_registered_after_the_launch_is_the_runs() {
        let launched = 1_800_000_000;
        let r = record("2027-01-15T08:00:00Z");
        let mut status = Status::new("r1");
        status.plex_server = Some("cloud".into());
        let devices = [
            device("cloud", SERVER_PRODUCT, Some(launched + 600)),
            device("cloud", "Plex Web", Some(launched + 600)),
            device("home", SERVER_PRODUCT, Some(launched - 86_400)),
        ];
        let found = run_servers(&devices, &r, &status, Some("home"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "d-cloud");

        // A status rewritten by the run to name the home server, or an
        // older device: never removed.
        status.plex_server = Some("home".into());
        assert!(run_servers(&devices, &r, &status, Some("home")).is_empty());
        assert!(run_servers(&devices, &r, &status, None).is_empty());
        status.plex_server = None;
        assert!(run_servers(&devices, &r, &status, None).is_empty());
    }
}
