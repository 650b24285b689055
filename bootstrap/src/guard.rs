//! Every deletion fetch, sweep and a launch's clean-up make is checked
//! against the resource itself first: it exists (GET), it is in the
//! configured project, and it carries the run's tag or name (or, for the
//! tool's own images and snapshots, the `plex-burst` tag). Anything else is
//! refused in one line and nothing is deleted: an id from a record the run
//! could rewrite never reaches a DELETE on its own.

use anyhow::{Context, Result, bail};

use runner::scaleway::{Client, Image, SecurityGroup, Server, Snapshot, Volume};

use crate::cloud;
use crate::config::BootstrapConfig;
use crate::runs::{TAG, run_tag};

/// Whose a resource must be.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// A run's: its `plex-burst-run=` tag or its name.
    Run(&'a str),
    /// The tool's, not a run's (images, snapshots, builders): the
    /// `plex-burst` tag.
    Tool,
}

/// What a run's name starts with (the API lists volumes by name prefix).
pub const RUN_NAME_PREFIX: &str = "plex-burst-";

/// The name a run's server, security group and root volume get.
pub fn run_name(run_id: &str) -> String {
    format!("{RUN_NAME_PREFIX}{run_id}")
}

/// The run a resource is named after, if its name is a run's: the prefix
/// and a valid run id (the image builder's name is not a run's).
pub fn run_of_name(name: &str) -> Option<&str> {
    let run = name.strip_prefix(RUN_NAME_PREFIX)?;
    let valid = runner::config::RunId::try_from(run).is_ok();
    (valid && !run.starts_with("builder-")).then_some(run)
}

fn check(
    cfg: &BootstrapConfig,
    kind: &str,
    id: &str,
    project: &str,
    tags: &[String],
    name: &str,
    owner: Owner,
) -> Result<()> {
    let wanted = &cfg.scaleway.project_id;
    if project != wanted {
        bail!(
            "refusing to delete {kind} {id}: it is in project {project}, not the configured {wanted}"
        );
    }
    let tagged = |t: &str| tags.iter().any(|have| have == t);
    match owner {
        Owner::Run(run) if !tagged(&run_tag(run)) && name != run_name(run) => bail!(
            "refusing to delete {kind} {id} ({name:?}): it carries neither the tag {} nor the name {}",
            run_tag(run),
            run_name(run)
        ),
        Owner::Tool if !tagged(TAG) => {
            bail!("refusing to delete {kind} {id} ({name:?}): it does not carry the tag {TAG}")
        }
        _ => Ok(()),
    }
}

pub fn server(cfg: &BootstrapConfig, s: &Server, owner: Owner) -> Result<()> {
    check(cfg, "server", &s.id, &s.project, &s.tags, &s.name, owner)
}

/// `recorded_at_home`: the id is the root volume the create answer named,
/// kept at home (Scaleway may leave a root volume untagged).
pub fn volume(
    cfg: &BootstrapConfig,
    v: &Volume,
    owner: Owner,
    recorded_at_home: bool,
) -> Result<()> {
    if recorded_at_home && v.project_id == cfg.scaleway.project_id {
        return Ok(());
    }
    check(cfg, "volume", &v.id, &v.project_id, &v.tags, &v.name, owner)
}

pub fn security_group(cfg: &BootstrapConfig, g: &SecurityGroup, owner: Owner) -> Result<()> {
    check(
        cfg,
        "security group",
        &g.id,
        &g.project,
        &g.tags,
        &g.name,
        owner,
    )
}

pub fn image(cfg: &BootstrapConfig, i: &Image) -> Result<()> {
    check(
        cfg,
        "image",
        &i.id,
        &i.project,
        &i.tags,
        &i.name,
        Owner::Tool,
    )
}

pub fn snapshot(cfg: &BootstrapConfig, s: &Snapshot) -> Result<()> {
    check(
        cfg,
        "snapshot",
        &s.id,
        &s.project_id,
        &s.tags,
        &s.name,
        Owner::Tool,
    )
}

/// Deletes server `id` and its block volumes once it passes the check;
/// `false` if it was already gone.
pub async fn destroy_server(
    cfg: &BootstrapConfig,
    client: &Client,
    id: &str,
    owner: Owner<'_>,
) -> Result<bool> {
    let zone = &cfg.scaleway.zone;
    let Some(found) = client.get_server(zone, id).await? else {
        return Ok(false);
    };
    server(cfg, &found, owner)?;
    cloud::destroy_server(client, zone, &found).await?;
    Ok(true)
}

/// Deletes volume `id` once it passes the check; `false` if already gone.
pub async fn delete_volume(
    cfg: &BootstrapConfig,
    client: &Client,
    id: &str,
    owner: Owner<'_>,
    recorded_at_home: bool,
) -> Result<bool> {
    let zone = &cfg.scaleway.zone;
    let Some(found) = client.get_volume(zone, id).await? else {
        return Ok(false);
    };
    volume(cfg, &found, owner, recorded_at_home)?;
    cloud::delete_volume(client, zone, id).await?;
    Ok(true)
}

/// Deletes security group `id` once it passes the check; `false` if
/// already gone. A group a server is still in is refused by the API, so
/// callers delete it after the server.
pub async fn delete_security_group(
    cfg: &BootstrapConfig,
    client: &Client,
    id: &str,
    owner: Owner<'_>,
) -> Result<bool> {
    let zone = &cfg.scaleway.zone;
    let Some(found) = client.get_security_group(zone, id).await? else {
        return Ok(false);
    };
    security_group(cfg, &found, owner)?;
    client.delete_security_group(zone, id).await?;
    Ok(true)
}

/// Deletes image `id` (then its snapshot) once both pass the check.
pub async fn delete_image(
    cfg: &BootstrapConfig,
    client: &Client,
    id: &str,
    snapshot_id: Option<&str>,
) -> Result<()> {
    let zone = &cfg.scaleway.zone;
    if let Some(found) = client.get_image(zone, id).await? {
        image(cfg, &found)?;
        client.delete_image(zone, id).await?;
    }
    if let Some(s) = snapshot_id {
        delete_snapshot(cfg, client, s).await?;
    }
    Ok(())
}

/// Deletes snapshot `id` once it passes the check. A snapshot is `in_use`
/// while an image uses it and for a while after the image is deleted:
/// that is waited out (bounded), as Scaleway's CLI does.
pub async fn delete_snapshot(cfg: &BootstrapConfig, client: &Client, id: &str) -> Result<()> {
    let zone = &cfg.scaleway.zone;
    if let Some(found) = client.get_snapshot(zone, id).await? {
        snapshot(cfg, &found)?;
        if found.status != "available" {
            client
                .wait_snapshot_available(zone, id, cloud::STATE_TIMEOUT, cloud::poll_interval())
                .await
                .with_context(|| format!("snapshot {id} stays {}", found.status))?;
        }
        client.delete_snapshot(zone, id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_known_by_its_name_and_nothing_else_is() {
        assert_eq!(
            run_of_name(&run_name("2026-01-01-0300")),
            Some("2026-01-01-0300")
        );
        // A volume not yet renamed is named after its image; the builder,
        // another tool's resource and a stranger's are no run's.
        for other in [
            "plex-burst-1.41.3-0123abcd_sbs_volume_0",
            "plex-burst-builder-0123abcd",
            "plex-burst",
            "debian_bookworm_sbs_volume_0",
        ] {
            assert_eq!(run_of_name(other), None, "{other}");
        }
    }
}
