//! `bootstrap sweep`: everything plex-burst created that outlived its
//! purpose, with what it costs per hour; `--yes` deletes it. Found by tag
//! (every resource bootstrap creates carries `plex-burst`), and root
//! volumes, which Scaleway never tags, by the launch records (the home
//! copy where there is one) and by the name launch gives them (their
//! server's). Only what is in the configured project and carries the
//! tool's or its run's tag is listed, and each is checked again before its
//! DELETE (`guard.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use runner::notify::{Event, EventKind};
use runner::scaleway::{Client, Server};

use crate::cloud;
use crate::config::BootstrapConfig;
use crate::estimate::VOLUME_EUR_PER_GB_HOUR;
use crate::grants;
use crate::guard::{self, Owner};
use crate::iam;
use crate::plex_account;
use crate::runs::{self, LaunchRecord, LaunchState, Outcome, TAG};
use crate::status::RunView;

/// A builder older than this is a leftover (the build timeout is shorter).
const BUILDER_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug)]
pub enum Leftover {
    Server(Box<Server>),
    Volume {
        id: String,
        gb: u64,
        /// The run whose record named it, if it is not tagged.
        run: Option<String>,
        /// That record is the copy kept at home.
        at_home: bool,
    },
    /// A run's security group no server of the run is in.
    SecurityGroup {
        id: String,
        run_id: String,
    },
    Image {
        id: String,
        snapshot: Option<String>,
        gb: u64,
    },
    Snapshot {
        id: String,
        gb: u64,
    },
    ApiKey {
        access_key: String,
    },
    /// A run's keys, IAM application and bucket statements (`grants.rs`).
    RunAccess {
        run_id: String,
    },
    /// A run's Plex server still on the plex.tv account (`plex_account.rs`).
    PlexServer {
        device_id: String,
    },
}

#[derive(Debug)]
pub struct Found {
    pub what: Leftover,
    pub name: String,
    pub why: String,
    pub eur_per_hour: f64,
}

pub async fn sweep(cfg: &BootstrapConfig, yes: bool) -> Result<()> {
    let client = cloud::client(cfg)?;
    let found = find(cfg, &client).await?;
    if found.is_empty() {
        println!("nothing left behind");
        return Ok(());
    }
    let total: f64 = found.iter().map(|f| f.eur_per_hour).sum();
    for f in &found {
        println!(
            "{:<9} {:<38} EUR {:>7.4}/h  {} ({})",
            kind(&f.what),
            id(&f.what),
            f.eur_per_hour,
            f.name,
            f.why
        );
    }
    println!("{} resources, EUR {total:.4}/h", found.len());
    crate::notify::tell(
        cfg,
        Event::new(
            EventKind::Leftovers,
            None,
            "leftovers in the cloud",
            format!(
                "{} resources left behind, billed EUR {total:.4}/h{}.",
                found.len(),
                if yes { ": being deleted" } else { "" }
            ),
        )
        .next("bootstrap sweep --yes")
        .details(serde_json::json!({ "resources": found.len(), "eur_per_hour": total })),
    )
    .await;
    if !yes {
        println!("nothing deleted: run `bootstrap sweep --yes` to delete them");
        return Ok(());
    }
    for f in &found {
        let done = match &f.what {
            // Each one checked again, as found now, before its DELETE.
            Leftover::Server(server) => {
                let owner = run_of(server).map_or(Owner::Tool, Owner::Run);
                guard::destroy_server(cfg, &client, &server.id, owner)
                    .await
                    .map(drop)
            }
            Leftover::Volume {
                id, run, at_home, ..
            } => {
                let owner = run.as_deref().map_or(Owner::Tool, Owner::Run);
                guard::delete_volume(cfg, &client, id, owner, *at_home)
                    .await
                    .map(drop)
            }
            Leftover::SecurityGroup { id, run_id } => {
                guard::delete_security_group(cfg, &client, id, Owner::Run(run_id))
                    .await
                    .map(drop)
            }
            Leftover::Image { id, snapshot, .. } => {
                guard::delete_image(cfg, &client, id, snapshot.as_deref()).await
            }
            Leftover::Snapshot { id, .. } => guard::delete_snapshot(cfg, &client, id).await,
            Leftover::ApiKey { access_key } => {
                client.delete_api_key(access_key).await.map_err(Into::into)
            }
            Leftover::RunAccess { run_id } => {
                grants::revoke(cfg, &client, &cloud::bucket(cfg), run_id).await
            }
            Leftover::PlexServer { device_id } => plex_account::delete_device(cfg, device_id).await,
        };
        done.with_context(|| format!("cannot delete {} {}", kind(&f.what), id(&f.what)))?;
        println!("deleted {} {}", kind(&f.what), id(&f.what));
    }
    Ok(())
}

fn kind(l: &Leftover) -> &'static str {
    match l {
        Leftover::Server(_) => "server",
        Leftover::Volume { .. } => "volume",
        Leftover::SecurityGroup { .. } => "sec-group",
        Leftover::Image { .. } => "image",
        Leftover::Snapshot { .. } => "snapshot",
        Leftover::ApiKey { .. } => "api-key",
        Leftover::RunAccess { .. } => "run-access",
        Leftover::PlexServer { .. } => "plex.tv",
    }
}

fn id(l: &Leftover) -> &str {
    match l {
        Leftover::Server(s) => &s.id,
        Leftover::Volume { id, .. }
        | Leftover::SecurityGroup { id, .. }
        | Leftover::Image { id, .. }
        | Leftover::Snapshot { id, .. } => id,
        Leftover::ApiKey { access_key } => access_key,
        Leftover::RunAccess { run_id } => run_id,
        Leftover::PlexServer { device_id } => device_id,
    }
}

/// Every resource that outlived its run or build.
pub async fn find(cfg: &BootstrapConfig, client: &Client) -> Result<Vec<Found>> {
    let zone = &cfg.scaleway.zone;
    let bucket = cloud::bucket(cfg);
    let records: BTreeMap<String, LaunchRecord> = runs::all_for_deleting(cfg, &bucket)
        .await?
        .into_iter()
        .map(|r| (r.run_id.clone(), r))
        .collect();
    let prices = client.server_types(zone).await?;
    let mut found = Vec::new();

    // Servers: a run's, once its run is over; a builder, once too old.
    let servers = client.list_servers(zone, &[TAG]).await?;
    let mut live_servers = BTreeSet::new();
    for server in servers {
        // Tagged alike in another project, or untagged for its run: not ours.
        let owner = run_of(&server).map_or(Owner::Tool, Owner::Run);
        if guard::server(cfg, &server, owner).is_err() {
            continue;
        }
        let price = prices
            .get(&server.commercial_type)
            .map_or(0.0, |t| t.hourly_price);
        let why = match run_of(&server) {
            Some(run_id) => match records.get(run_id) {
                None => Some("no launch record".to_owned()),
                Some(record) => {
                    let view = RunView::load(cfg, client, &bucket, record.clone()).await?;
                    over(&view)
                }
            },
            None if server.tags.iter().any(|t| t == "plex-burst-builder") => older_than(
                server.creation_date.as_deref().unwrap_or(""),
                BUILDER_MAX_AGE,
            )
            .then(|| "an image builder left behind".into()),
            None => Some("tagged plex-burst but belongs to no run".into()),
        };
        match why {
            Some(why) => found.push(Found {
                name: server.name.clone(),
                eur_per_hour: price,
                why,
                what: Leftover::Server(Box::new(server)),
            }),
            None => {
                live_servers.insert(server.id.clone());
            }
        }
    }
    let server_volumes: BTreeSet<String> = found
        .iter()
        .filter_map(|f| match &f.what {
            Leftover::Server(s) => {
                Some(s.volumes.values().map(|v| v.id.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();

    // Volumes nothing uses: tagged ones, and the root volumes runs recorded
    // (Scaleway may leave those untagged: one only a bucket copy names must
    // carry its run's tag).
    let mut volumes: BTreeMap<String, (Option<String>, bool)> = client
        .list_volumes(zone, &[TAG], Some(&cfg.scaleway.project_id))
        .await?
        .into_iter()
        .map(|v| (v.id, (None, false)))
        .collect();
    for r in records.values() {
        if let Some(vid) = &r.root_volume_id {
            volumes
                .entry(vid.clone())
                .or_insert((Some(r.run_id.clone()), r.kept_at_home));
        }
    }
    // And by name: launch names a run's root volume after its server.
    for volume in client
        .list_volumes_named(zone, guard::RUN_NAME_PREFIX, &cfg.scaleway.project_id)
        .await?
    {
        if let Some(run) = guard::run_of_name(&volume.name) {
            volumes
                .entry(volume.id)
                .or_insert((Some(run.to_owned()), false));
        }
    }
    for (vid, (run, at_home)) in volumes {
        if server_volumes.contains(&vid) {
            continue; // deleted with its server
        }
        let owner = run.as_deref().map_or(Owner::Tool, Owner::Run);
        if let Some(volume) = client.get_volume(zone, &vid).await?
            && volume.status == "available"
            && guard::volume(cfg, &volume, owner, at_home).is_ok()
        {
            let gb = volume.size / 1_000_000_000;
            found.push(Found {
                name: volume.name.clone(),
                why: "detached volume (billed)".into(),
                eur_per_hour: gb as f64 * VOLUME_EUR_PER_GB_HOUR,
                what: Leftover::Volume {
                    id: vid,
                    gb,
                    run,
                    at_home,
                },
            });
        }
    }

    // Security groups of runs no live server is in (after their servers).
    for group in client
        .list_security_groups(zone, &cfg.scaleway.project_id, &[TAG])
        .await?
    {
        let Some(run_id) = group
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("plex-burst-run="))
        else {
            continue;
        };
        if group.servers.iter().any(|s| live_servers.contains(&s.id))
            || guard::security_group(cfg, &group, Owner::Run(run_id)).is_err()
        {
            continue;
        }
        found.push(Found {
            name: group.name.clone(),
            why: format!("security group of run {run_id} (no server of it alive)"),
            eur_per_hour: 0.0,
            what: Leftover::SecurityGroup {
                id: group.id.clone(),
                run_id: run_id.to_owned(),
            },
        });
    }

    // Images: the newest is kept; older ones are superseded.
    let mut images = client.list_images(zone, None, &[TAG]).await?;
    images.retain(|i| guard::image(cfg, i).is_ok());
    images.sort_by(|a, b| b.creation_date.cmp(&a.creation_date));
    let mut image_snapshots = BTreeSet::new();
    for (n, image) in images.iter().enumerate() {
        image_snapshots.extend(image.root_volume_id.clone());
        let in_use = records.values().any(|r| {
            r.image_id.as_deref() == Some(image.id.as_str())
                && r.server_id
                    .as_ref()
                    .is_some_and(|s| live_servers.contains(s))
        });
        if n > 0 && !in_use {
            found.push(Found {
                name: image.name.clone(),
                why: "superseded by a newer image".into(),
                eur_per_hour: 0.0,
                what: Leftover::Image {
                    id: image.id.clone(),
                    snapshot: image.root_volume_id.clone(),
                    gb: 0,
                },
            });
        }
    }
    for snapshot in client
        .list_snapshots(zone, &[TAG], Some(&cfg.scaleway.project_id))
        .await?
    {
        if !image_snapshots.contains(&snapshot.id) && guard::snapshot(cfg, &snapshot).is_ok() {
            let gb = snapshot.size / 1_000_000_000;
            found.push(Found {
                name: snapshot.name.clone(),
                why: "snapshot of no image".into(),
                eur_per_hour: gb as f64 * VOLUME_EUR_PER_GB_HOUR,
                what: Leftover::Snapshot {
                    id: snapshot.id,
                    gb,
                },
            });
        }
    }

    // Keys, applications and bucket statements of runs that are over (keys
    // also expire on their own; statements do not).
    let mut revoked = BTreeSet::new();
    for key in iam::run_keys(cfg, client).await? {
        let Some(run_id) = iam::key_run_id(&key).filter(|r| records.contains_key(*r)) else {
            found.push(Found {
                name: key.description.clone(),
                why: "API key of no known run".to_owned(),
                eur_per_hour: 0.0,
                what: Leftover::ApiKey {
                    access_key: key.access_key.clone(),
                },
            });
            continue;
        };
        if !revoked.contains(run_id)
            && let Some(why) = run_over(cfg, &bucket, &records[run_id], &live_servers).await?
        {
            revoked.insert(run_id.to_owned());
            found.push(run_access(run_id, why));
        }
    }
    for run_id in grants::runs_with_statements(&bucket).await? {
        let why = match records.get(&run_id) {
            None => Some(format!("bucket statements of no known run {run_id}")),
            Some(r) => run_over(cfg, &bucket, r, &live_servers).await?,
        };
        if let Some(why) = why.filter(|_| !revoked.contains(&run_id)) {
            revoked.insert(run_id.clone());
            found.push(run_access(&run_id, why));
        }
    }
    // Servers of runs that are over, still on the plex.tv account (a run
    // never fetched; fetch removes its own).
    if let Some(devices) = plex_account::devices(cfg).await? {
        let home = plex_account::home_server(cfg);
        for r in records.values() {
            if run_over(cfg, &bucket, r, &live_servers).await?.is_none() {
                continue;
            }
            let Some(status) = runs::status(cfg, &bucket, &r.run_id).await? else {
                continue;
            };
            for d in plex_account::run_servers(&devices, r, &status, home.as_deref()) {
                found.push(Found {
                    name: d.name.clone(),
                    why: format!("run {}'s Plex server on your plex.tv account", r.run_id),
                    eur_per_hour: 0.0,
                    what: Leftover::PlexServer {
                        device_id: d.id.clone(),
                    },
                });
            }
        }
    }
    Ok(found)
}

/// Why a run's access (keys, application, bucket statements) is no longer
/// needed, if it is not.
async fn run_over(
    cfg: &BootstrapConfig,
    bucket: &runner::s3::Bucket,
    r: &LaunchRecord,
    live_servers: &BTreeSet<String>,
) -> Result<Option<String>> {
    if matches!(r.state, LaunchState::Fetched | LaunchState::Abandoned) {
        return Ok(Some(format!("access of run {} (over)", r.run_id)));
    }
    if r.server_id
        .as_ref()
        .is_some_and(|s| live_servers.contains(s))
    {
        return Ok(None);
    }
    let outcome = runs::outcome(cfg, bucket, &r.run_id).await?;
    Ok(
        (outcome != Outcome::Pending || r.deadline_time().is_some_and(|d| SystemTime::now() > d))
            .then(|| format!("access of run {} (over)", r.run_id)),
    )
}

fn run_access(run_id: &str, why: String) -> Found {
    Found {
        name: format!("plex-burst run {run_id}"),
        why,
        eur_per_hour: 0.0,
        what: Leftover::RunAccess {
            run_id: run_id.to_owned(),
        },
    }
}

/// The run a server was launched for (its `plex-burst-run=` tag).
fn run_of(server: &Server) -> Option<&str> {
    server
        .tags
        .iter()
        .find_map(|t| t.strip_prefix("plex-burst-run="))
}

/// Why a run's server is no longer needed, if it is not.
fn over(view: &RunView) -> Option<String> {
    let past = view
        .record
        .deadline_time()
        .is_some_and(|d| SystemTime::now() > d);
    match view.record.state {
        LaunchState::Fetched => Some("run fetched".into()),
        LaunchState::Abandoned => Some("launch abandoned".into()),
        LaunchState::Creating => Some("launch interrupted".into()),
        LaunchState::Launched if past => Some("run past its deadline".into()),
        LaunchState::Launched if view.finished() => Some("run finished".into()),
        LaunchState::Launched => None,
    }
}

fn older_than(rfc3339: &str, age: Duration) -> bool {
    // `2025-09-01T10:00:00.000000+00:00`: the API's dates are UTC.
    humantime::parse_rfc3339_weak(rfc3339.get(..19).unwrap_or(""))
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|d| d > age)
}
