//! The Scaleway side of bootstrap: the client as configured, the bucket,
//! and the few multi-call operations every command shares (deleting a
//! server without leaving its block volume billed).

use std::time::Duration;

use anyhow::{Context, Result};
use runner::s3::{Bucket, Tuning};
use runner::scaleway::{Client, ScwError, Server, ServerAction, ServerState, Zone};

use crate::config::BootstrapConfig;

/// How long a server may take to change state (poweroff, boot).
pub const STATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How often a state is polled.
pub const POLL: Duration = Duration::from_secs(5);

/// Test runs shorten every wait through this variable (the Scaleway double
/// changes state in milliseconds).
fn poll() -> Duration {
    std::env::var("PLEX_BURST_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(POLL, Duration::from_millis)
}

pub fn client(cfg: &BootstrapConfig) -> Result<Client> {
    Client::new(&cfg.scaleway.api_url, cfg.scaleway.secret_key.clone())
        .context("cannot set up the Scaleway API client")
}

/// The bucket of references and runs, with settings for a small home
/// machine: 4 ranges of 8 MiB in flight bound a download to 32 MiB.
pub fn bucket(cfg: &BootstrapConfig) -> Bucket {
    let tuning = Tuning {
        concurrency: 4,
        ..Tuning::default()
    };
    Bucket::new(&cfg.s3_connection(), cfg.bucket(), tuning)
}

/// The poll interval every wait uses.
pub fn poll_interval() -> Duration {
    poll()
}

/// Deletes `server` and its block volumes: `terminate` would leave an
/// `sbs_volume` detached and billed, so the server is stopped, deleted,
/// and its volumes deleted once released.
pub async fn destroy_server(client: &Client, zone: &Zone, server: &Server) -> Result<()> {
    match stop_and_delete(client, zone, server).await {
        Ok(()) => {}
        // A run that ends itself deletes its server meanwhile: gone is
        // what was wanted.
        Err(e) if e.is_not_found() || matches!(e, ScwError::Gone { .. }) => {}
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot delete server {}", server.id))
            );
        }
    }
    delete_volumes(client, zone, server).await
}

async fn stop_and_delete(client: &Client, zone: &Zone, server: &Server) -> Result<(), ScwError> {
    let Some(mut current) = client.get_server(zone, &server.id).await? else {
        return Ok(());
    };
    if matches!(current.state, ServerState::Starting | ServerState::Stopping) {
        current = client
            .wait_server(
                zone,
                &server.id,
                |s| !matches!(s, ServerState::Starting | ServerState::Stopping),
                STATE_TIMEOUT,
                poll(),
            )
            .await?;
    }
    if current.state == ServerState::Running {
        client
            .server_action(zone, &server.id, ServerAction::Poweroff)
            .await?;
        client
            .wait_server(
                zone,
                &server.id,
                |s| *s == ServerState::Stopped,
                STATE_TIMEOUT,
                poll(),
            )
            .await?;
    }
    client.delete_server(zone, &server.id).await
}

/// Deletes the block volumes `server` had, waiting for each to be released.
async fn delete_volumes(client: &Client, zone: &Zone, server: &Server) -> Result<()> {
    for volume in server.volumes.values() {
        if volume.volume_type != "sbs_volume" {
            continue;
        }
        delete_volume(client, zone, &volume.id).await?;
    }
    Ok(())
}

/// Deletes a block volume once nothing uses it, and waits until it is
/// gone; a missing one is fine.
pub async fn delete_volume(client: &Client, zone: &Zone, id: &str) -> Result<()> {
    match client.get_volume(zone, id).await? {
        None => return Ok(()),
        Some(v) if v.status != "available" => {
            client
                .wait_volume_status(zone, id, "available", STATE_TIMEOUT, poll())
                .await
                .with_context(|| format!("volume {id} stays {}", v.status))?;
        }
        Some(_) => {}
    }
    client
        .delete_volume(zone, id)
        .await
        .with_context(|| format!("cannot delete volume {id}"))?;
    // Billed until it is gone: a caller told "deleted" can rely on it.
    client
        .wait_volume_gone(zone, id, STATE_TIMEOUT, poll())
        .await
        .with_context(|| format!("volume {id} is not going away"))
}
