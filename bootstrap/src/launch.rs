//! `bootstrap launch`: one command starts a run. Everything that would
//! waste money is checked before anything is created; then the image
//! (baked if missing), a per-run API key that expires after the run's
//! deadline, the server (stopped), its user data, and only then `poweron`.
//! The server is created in a security group of its own that drops every
//! inbound connection. Each step is recorded in `runs/<run-id>/launch.json`
//! and in the copy kept at home (`records.rs`), so a launch cut short is
//! found and cleaned up by the next one: no orphan is left. What the
//! clean-up deletes is decided by the home copy and checked against each
//! resource (`guard.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use runner::archive::Manifest;
use runner::config::Mode;
use runner::s3::Bucket;
use runner::scaleway::{
    Client, CreateSecurityGroup, CreateServer, RootVolume, ServerAction, ServerState, VolumeType,
};

use crate::canary::{self, CanaryRecord};
use crate::cloud;
use crate::config::{BootstrapConfig, RunParams, RunSecrets};
use crate::estimate::{self, Estimate};
use crate::grants;
use crate::guard::{self, Owner};
use crate::image::{self, Recipe};
use crate::runs::{self, LaunchRecord, LaunchState, TAG, run_tag};
use crate::userdata;

/// The per-run key outlives the run's deadline and the dead-man's grace by
/// this much: the upload budget is inside the deadline, this covers a late
/// terminate (the dead-man's, last of all, needs the key).
const KEY_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// How long the per-run key outlives the run's deadline.
fn key_margin(cfg: &BootstrapConfig) -> Duration {
    cfg.scaleway.dead_man_grace + KEY_MARGIN
}

pub struct LaunchOptions {
    pub dry_run: bool,
    /// A rehearsal (`[canary]`): the cheapest type, a short deadline, a
    /// slice of the work (`canary.rs`).
    pub canary: bool,
    /// Reference archive key; default `<reference_prefix>plex-db.tar.zst`.
    pub reference: Option<String>,
    /// Refuse to bake an image (fail instead when none matches).
    pub no_build: bool,
}

/// What the checks found: everything a launch needs, nothing created yet.
struct Plan {
    run_id: String,
    /// A canary's rehearsal (`LaunchOptions::canary`).
    canary: bool,
    commercial_type: String,
    fingerprint: String,
    reference: Option<Reference>,
    plex_version: String,
    recipe: Recipe,
    image: Option<runner::scaleway::Image>,
    hourly_price: f64,
    estimate: Estimate,
}

struct Reference {
    archive_key: String,
    manifest_key: String,
    manifest: Manifest,
}

pub async fn launch(cfg: &BootstrapConfig, opts: &LaunchOptions) -> Result<()> {
    let client = cloud::client(cfg)?;
    let bucket = cloud::bucket(cfg);

    clean_interrupted_launches(cfg, &client, &bucket, opts.dry_run).await?;
    // A canary that fails before its run exists says so as its verdict.
    let said = |step: &'static str| {
        move |e: anyhow::Error| {
            if opts.canary {
                println!("{}", canary::launch_failed(step, &e));
            }
            e
        }
    };
    let plan = check(cfg, &client, &bucket, opts)
        .await
        .map_err(said("checks"))?;
    print_plan(cfg, &plan);
    if !opts.canary {
        println!(
            "{}",
            canary::proof(&canary::home_records(cfg), &plan.fingerprint)
        );
    }
    if opts.dry_run {
        println!("dry run: nothing created");
        return Ok(());
    }
    let image = match plan.image.clone() {
        Some(image) => image,
        None if opts.no_build => bail!(
            "no image for this recipe ({}) and --no-build was given: run `bootstrap image build`",
            &plan.recipe.hash[..12]
        ),
        None => image::ensure(cfg, &plan.recipe)
            .await
            .map_err(said("image"))?,
    };

    let now = SystemTime::now();
    let deadline = now + run_deadline(cfg, plan.canary);
    let mut record = LaunchRecord {
        run_id: plan.run_id.clone(),
        state: LaunchState::Creating,
        zone: cfg.scaleway.zone.to_string(),
        project_id: cfg.scaleway.project_id.clone(),
        commercial_type: plan.commercial_type.clone(),
        hourly_price: Some(plan.hourly_price),
        root_volume_gb: cfg.scaleway.root_volume_gb,
        image_id: Some(image.id.clone()),
        server_id: None,
        root_volume_id: None,
        api_key: None,
        security_group_id: None,
        kept_at_home: true,
        launched_at: runs::rfc3339(now),
        deadline: runs::rfc3339(deadline),
        snapshot_time: plan
            .reference
            .as_ref()
            .and_then(|r| snapshot_time(&r.manifest)),
        reference_key: plan.reference.as_ref().map(|r| r.archive_key.clone()),
        plex_version: plan.plex_version.clone(),
        bootstrap_version: env!("CARGO_PKG_VERSION").into(),
        fingerprint: Some(plan.fingerprint.clone()),
        estimate: Some(plan.estimate.clone()),
        actual: None,
        canary: opts.canary.then(CanaryRecord::default),
    };
    record.save(cfg, &bucket).await?;

    match create(
        cfg,
        &client,
        &bucket,
        &plan,
        &mut record,
        deadline + key_margin(cfg),
    )
    .await
    {
        Ok(()) if opts.canary => {
            println!(
                "canary {} launched: server {} powering on; `bootstrap status {} --watch` follows it, `bootstrap fetch --canary {}` judges it and cleans up",
                plan.run_id,
                record.server_id.as_deref().unwrap_or("?"),
                plan.run_id,
                plan.run_id
            );
            Ok(())
        }
        Ok(()) => {
            println!(
                "run {} launched: server {} powering on; follow it with `bootstrap status {} --watch`",
                plan.run_id,
                record.server_id.as_deref().unwrap_or("?"),
                plan.run_id
            );
            Ok(())
        }
        Err(e) => {
            let e = said("create")(e);
            let cleaned = abandon(cfg, &client, &bucket, &mut record).await;
            match cleaned {
                Ok(()) => Err(e.context(format!(
                    "launch of run {} failed; everything it created was deleted",
                    plan.run_id
                ))),
                Err(c) => Err(e.context(format!(
                    "launch of run {} failed, and its cleanup failed too ({c:#}): `bootstrap sweep` lists what is left",
                    plan.run_id
                ))),
            }
        }
    }
}

/// The checks that cost nothing, in the order a user would fix them.
async fn check(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    opts: &LaunchOptions,
) -> Result<Plan> {
    let zone = &cfg.scaleway.zone;
    // Credentials (and the project) first: every later call needs them.
    client
        .list_servers(zone, &[TAG])
        .await
        .context("the Scaleway credentials do not work")?;
    let types = client
        .server_types(zone)
        .await
        .context("cannot read the server catalogue")?;
    let (commercial_type, key) = match opts.canary {
        true => (&cfg.canary.commercial_type, "canary.commercial_type"),
        false => (&cfg.scaleway.commercial_type, "scaleway.commercial_type"),
    };
    let hourly_price = match types.get(commercial_type) {
        Some(t) => t.hourly_price,
        None => bail!(
            "{key}: {commercial_type:?} is not offered in {zone} (offered: {})",
            types.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };

    let reference = match cfg.run_settings().mode() {
        Mode::Delta { .. } => Some(reference(cfg, bucket, opts.reference.as_deref()).await?),
        Mode::Scratch { .. } => None,
    };
    let plex_version = plex_version(cfg, reference.as_ref())?;
    media_readable(cfg).await?;

    let recipe = Recipe::new(cfg, &plex_version)?;
    let image = image::find(client, cfg, &recipe).await?;
    let run_id = runs::new_run_id(cfg, bucket).await?;
    let estimate = match opts.canary {
        true => Estimate::at_most(
            cfg.canary.deadline,
            hourly_price,
            cfg.scaleway.root_volume_gb,
        ),
        false => {
            let earlier = runs::all(cfg, bucket).await.unwrap_or_default();
            estimate::estimate(
                cfg,
                bucket,
                reference.as_ref().map(|r| &r.manifest),
                &earlier,
                &types,
            )
            .await
        }
    };
    let fingerprint = canary::fingerprint(
        cfg,
        &recipe.hash,
        reference
            .as_ref()
            .map(|r| (r.archive_key.as_str(), &r.manifest)),
    );
    Ok(Plan {
        run_id,
        canary: opts.canary,
        commercial_type: commercial_type.clone(),
        fingerprint,
        reference,
        plex_version,
        recipe,
        image,
        hourly_price,
        estimate,
    })
}

async fn reference(cfg: &BootstrapConfig, bucket: &Bucket, key: Option<&str>) -> Result<Reference> {
    let archive_key = key.map_or_else(
        || {
            format!(
                "{}{}",
                cfg.reference_prefix(),
                crate::snapshot::ARCHIVE_NAME
            )
        },
        str::to_owned,
    );
    if bucket.head(&archive_key).await?.is_none() {
        bail!(
            "no reference archive at s3://{}/{archive_key}: run `bootstrap snapshot` first",
            bucket.name()
        );
    }
    let manifest_key = runner::transfer::manifest_key_for(&archive_key);
    let manifest = runner::transfer::fetch_manifest(bucket, &manifest_key)
        .await
        .context("the reference has no usable manifest: run `bootstrap snapshot` again")?;
    Ok(Reference {
        archive_key,
        manifest_key,
        manifest,
    })
}

/// The run's Plex version: the home version recorded with the reference
/// (lessons.md 24); a version set in `[run.plex]` must agree with it.
fn plex_version(cfg: &BootstrapConfig, reference: Option<&Reference>) -> Result<String> {
    let configured = cfg.run_settings().plex_version().to_string();
    let configured = (configured != crate::config::PROBE_PLEX_VERSION).then_some(configured);
    let home = reference.and_then(|r| r.manifest.plex_version.clone());
    match (configured, home) {
        (Some(c), Some(h)) if c != h => bail!(
            "run.plex.version is {c} but the reference was made by Plex {h}: the cloud must run the home version (remove run.plex.version)"
        ),
        (_, Some(h)) => Ok(h),
        (Some(c), None) => Ok(c),
        (None, None) => bail!(
            "run.plex.version: required in scratch mode (the home Plex version; the DB must not migrate past it)"
        ),
    }
}

/// The media bucket answers a listing with the home credentials.
async fn media_readable(cfg: &BootstrapConfig) -> Result<()> {
    let media = &cfg.run_settings().media();
    let bucket = Bucket::new(
        &media.connection.to_engine(),
        media.remote.bucket.to_string(),
        runner::s3::Tuning::default(),
    );
    let prefix = match media.remote.path.trim_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    match bucket.first(&prefix).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => bail!(
            "run.media.remote: s3://{}/{prefix} is empty: nothing to scan",
            media.remote.bucket
        ),
        Err(e) => {
            Err(anyhow::anyhow!(e).context("run.media.remote: the media bucket is not readable"))
        }
    }
}

fn print_plan(cfg: &BootstrapConfig, plan: &Plan) {
    match plan.canary {
        true => println!(
            "canary run {} (each library's first folder scanned, Sonic on {} tracks)",
            plan.run_id, cfg.canary.sonic_tracks
        ),
        false => println!("run {}", plan.run_id),
    }
    println!(
        "  server     {} in {} at EUR {:.4}/h, root volume {} GB",
        plan.commercial_type, cfg.scaleway.zone, plan.hourly_price, cfg.scaleway.root_volume_gb
    );
    match &plan.reference {
        Some(r) => println!(
            "  reference  s3://{}/{} (Plex {}, {} files)",
            cfg.bucket(),
            r.archive_key,
            plan.plex_version,
            r.manifest.files.len()
        ),
        None => println!("  mode       scratch (Plex {})", plan.plex_version),
    }
    match &plan.image {
        Some(i) => println!("  image      {} ({})", i.name, i.id),
        None => println!(
            "  image      none for recipe {}: baked first (about 15 minutes)",
            &plan.recipe.hash[..12]
        ),
    }
    println!(
        "  deadline   {} (the dead-man ends the instance {} later; per-run key expires {} later)",
        humantime::format_duration(run_deadline(cfg, plan.canary)),
        humantime::format_duration(cfg.scaleway.dead_man_grace),
        humantime::format_duration(key_margin(cfg))
    );
    println!("  estimate   {}", plan.estimate);
}

/// The run's deadline: a canary's own, short one.
fn run_deadline(cfg: &BootstrapConfig, canary: bool) -> Duration {
    match canary {
        true => cfg.canary.deadline,
        false => cfg.run_settings().run_deadline(),
    }
}

/// Key, server, user data, poweron; each recorded as soon as it exists.
async fn create(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    plan: &Plan,
    record: &mut LaunchRecord,
    key_expires: SystemTime,
) -> Result<()> {
    let zone = &cfg.scaleway.zone;
    let keys = grants::grant(cfg, client, bucket, &plan.run_id, key_expires).await?;
    let key = keys.run;
    record.api_key = Some(key.access_key.clone());
    record.save(cfg, bucket).await?;

    let params = RunParams {
        run_id: plan.run_id.clone(),
        plex_version: plan.plex_version.clone(),
        reference: plan
            .reference
            .as_ref()
            .map(|r| (r.archive_key.clone(), r.manifest_key.clone())),
        zone: zone.clone(),
        api_url: cfg.scaleway.api_url.clone(),
        metadata_url: cfg.scaleway.metadata_url.clone(),
        keep_on_failure: cfg.scaleway.keep_on_failure,
        dead_man_grace: cfg.scaleway.dead_man_grace,
        canary: plan.canary.then(|| cfg.canary.clone()),
        cost: Some(runner::config::Cost {
            eur_per_hour: estimate::hourly(plan.hourly_price, cfg.scaleway.root_volume_gb),
            estimate_eur: Some(plan.estimate.eur),
            estimate_basis: Some(plan.estimate.basis.clone()),
        }),
    };
    let run_toml = cfg.render_run_toml(&params).map_err(anyhow::Error::msg)?;
    let secrets = RunSecrets {
        access_key: key.access_key.clone(),
        secret_key: key
            .secret_key
            .clone()
            .context("Scaleway returned the new API key without its secret")?,
        media_access_key: keys.media.access_key.clone(),
        media_secret_key: keys
            .media
            .secret_key
            .clone()
            .context("Scaleway returned the new media key without its secret")?,
        plex_token: cfg.plex_token().cloned(),
        notify: cfg.notify_secrets().to_vec(),
    };
    let values: BTreeMap<&str, String> = [
        ("run_id", plan.run_id.clone()),
        ("run_toml", run_toml),
        ("secrets_env", secrets.env_file()),
        ("plextv_env", secrets.plextv_file()),
    ]
    .into_iter()
    .collect();
    let user_data = userdata::render(userdata::RUN_TEMPLATE, &values)?;

    // Its own group, inbound drop: nothing on the instance is to be reached.
    let group = client
        .create_security_group(
            zone,
            &CreateSecurityGroup::closed(
                guard::run_name(&plan.run_id),
                cfg.scaleway.project_id.clone(),
                vec![TAG.into(), run_tag(&plan.run_id)],
            ),
        )
        .await
        .context("cannot create the run's security group")?;
    record.security_group_id = Some(group.id);
    record.save(cfg, bucket).await?;

    let server = client
        .create_server(
            zone,
            &CreateServer {
                name: guard::run_name(&plan.run_id),
                commercial_type: plan.commercial_type.clone(),
                image: record.image_id.clone().unwrap_or_default(),
                project: cfg.scaleway.project_id.clone(),
                tags: vec![TAG.into(), run_tag(&plan.run_id)],
                root_volume: RootVolume {
                    size_bytes: cfg.scaleway.root_volume_gb * 1_000_000_000,
                    volume_type: VolumeType::Sbs,
                },
                dynamic_ip_required: true,
                security_group: record.security_group_id.clone(),
            },
        )
        .await
        .context("cannot create the run's server")?;
    record.server_id = Some(server.id.clone());
    record.root_volume_id = server.volumes.get("0").map(|v| v.id.clone());
    record.save(cfg, bucket).await?;
    // Scaleway names the root volume after the image and gives it none of
    // the server's tags: named after its server, sweep still knows whose
    // it is once the server is gone and the records are not enough.
    if let Some(volume) = &record.root_volume_id {
        client
            .rename_volume(zone, volume, &server.name)
            .await
            .context("cannot name the run's root volume")?;
    }

    // User data before poweron: a running server reads it only after a reboot.
    client
        .set_user_data(zone, &server.id, "cloud-init", &user_data)
        .await
        .context("cannot set the run's user data")?;
    client
        .server_action(zone, &server.id, ServerAction::Poweron)
        .await
        .context("cannot power on the run's server")?;
    record.state = LaunchState::Launched;
    record.save(cfg, bucket).await
}

/// Deletes what a failed or interrupted launch created.
async fn abandon(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    record: &mut LaunchRecord,
) -> Result<()> {
    let zone = &cfg.scaleway.zone;
    let owner = Owner::Run(&record.run_id);
    let mut servers: Vec<String> = client
        .list_servers(zone, &[TAG, &run_tag(&record.run_id)])
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    servers.extend(record.server_id.clone().filter(|s| !servers.contains(s)));
    for server in &servers {
        guard::destroy_server(cfg, client, server, owner).await?;
    }
    if let Some(volume) = &record.root_volume_id {
        guard::delete_volume(cfg, client, volume, owner, record.kept_at_home).await?;
    }
    if let Some(group) = &record.security_group_id {
        guard::delete_security_group(cfg, client, group, owner).await?;
    }
    grants::revoke(cfg, client, bucket, &record.run_id).await?;
    record.state = LaunchState::Abandoned;
    record.save(cfg, bucket).await
}

/// Launches that stopped half way (state `creating`) are cleaned up before
/// a new one starts (a dry run only says so).
async fn clean_interrupted_launches(
    cfg: &BootstrapConfig,
    client: &Client,
    bucket: &Bucket,
    dry_run: bool,
) -> Result<()> {
    for mut record in runs::all_for_deleting(cfg, bucket).await? {
        if record.state != LaunchState::Creating {
            continue;
        }
        if !record.kept_at_home {
            // Another machine's launch, perhaps still under way.
            println!(
                "launch of run {} is recorded as interrupted in the bucket only (launched from another machine?): left alone; `bootstrap sweep` lists what it left",
                record.run_id
            );
            continue;
        }
        // Cut short after poweron, before its record said so: the run is
        // under way and is the runner's now.
        let server = match &record.server_id {
            Some(id) => client.get_server(&cfg.scaleway.zone, id).await?,
            None => None,
        };
        if server.is_some_and(|s| s.state != ServerState::Stopped) {
            println!(
                "launch of run {} was interrupted after its server started: recorded as launched",
                record.run_id
            );
            if !dry_run {
                record.state = LaunchState::Launched;
                record.save(cfg, bucket).await?;
            }
            continue;
        }
        if dry_run {
            println!(
                "launch of run {} was interrupted at {}: a launch deletes what it created",
                record.run_id, record.launched_at
            );
            continue;
        }
        println!(
            "launch of run {} was interrupted at {}: deleting what it created",
            record.run_id, record.launched_at
        );
        abandon(cfg, client, bucket, &mut record)
            .await
            .with_context(|| {
                format!(
                    "cannot clean up the interrupted launch of run {}",
                    record.run_id
                )
            })?;
    }
    Ok(())
}

/// The snapshot time `bootstrap snapshot` recorded.
pub fn snapshot_time(manifest: &Manifest) -> Option<i64> {
    manifest.source.get("snapshot_time")?.parse().ok()
}
