//! `bootstrap image build`: bakes the image runs boot from, the way Packer
//! does (scaleway.md), with cloud-init doing the provisioning: a builder
//! server from the marketplace OS, the recipe run by its user data, then
//! poweroff, snapshot of the root volume, image, and the builder deleted.
//! An image whose recipe hash matches is reused, never rebuilt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use runner::config::PlexRuntime;
use runner::s3::Bucket;
use runner::scaleway::{
    Client, CreateImage, CreateSecurityGroup, CreateServer, Image, RootVolume, Server,
    ServerAction, ServerState, VolumeType, Zone,
};

use crate::cloud::{self, STATE_TIMEOUT};
use crate::config::BootstrapConfig;
use crate::runs::TAG;
use crate::userdata;

const PROVISION_SH: &str = include_str!("../../image/provision.sh");
const RUNNER_UNIT: &str = include_str!("../../image/systemd/plex-burst-runner.service");
const DEADMAN_UNIT: &str = include_str!("../../image/systemd/plex-burst-deadman.service");
const FIREWALL_UNIT: &str = include_str!("../../image/systemd/plex-burst-firewall.service");
const NFTABLES: &str = include_str!("../../image/plex-burst.nft");
/// Where build artifacts (the runner binary, reports, logs) go in the bucket.
const IMAGES_PREFIX: &str = "images/";
/// The builder's root volume: the OS, rclone, Plex's image.
const BUILDER_VOLUME_GB: u64 = 20;

/// Everything that goes into an image, and its hash.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub hash: String,
    pub plex_version: String,
    plex: PlexInstall,
    /// Binaries the builder fetches from the bucket: the runner, and the
    /// Plex double when the run uses it.
    artifacts: Vec<Artifact>,
    rclone_url: String,
    /// The zip's sha256 (provision.sh checks it).
    rclone_sha256: String,
}

/// How the image gets Plex.
#[derive(Debug, Clone)]
enum PlexInstall {
    /// The official image, pulled at bake time (lessons.md 8), by
    /// `name:tag@digest` when a digest is configured.
    Docker { image: String },
    /// The Plex double (the local VM test): one recipe, a switch.
    Double,
}

/// A binary baked into the image, fetched through a presigned URL.
#[derive(Debug, Clone)]
struct Artifact {
    /// Its name in the bucket and the prefix of its build.env variables.
    name: &'static str,
    env: &'static str,
    path: PathBuf,
    sha256: String,
}

impl Artifact {
    fn new(name: &'static str, env: &'static str, path: &Path, key: &str) -> Result<Artifact> {
        let sha256 = file_sha256(path)
            .with_context(|| format!("cannot read {} (set {key})", path.display()))?;
        Ok(Artifact {
            name,
            env,
            path: path.to_path_buf(),
            sha256,
        })
    }
}

impl Recipe {
    /// Hashes the templates, the versions and the binaries.
    pub fn new(cfg: &BootstrapConfig, plex_version: &str) -> Result<Recipe> {
        let mut artifacts = vec![Artifact::new(
            "runner",
            "RUNNER",
            &cfg.image.runner_binary,
            "image.runner_binary",
        )?];
        let plex = match &cfg.run_settings().plex().runtime {
            PlexRuntime::Docker { image, .. } => {
                if let Some(archive) = &cfg.image.plex_image_archive {
                    artifacts.push(Artifact::new(
                        "plex-image.tar",
                        "PLEX_IMAGE_ARCHIVE",
                        archive,
                        "image.plex_image_archive",
                    )?);
                }
                PlexInstall::Docker {
                    image: match &cfg.image.plex_image_digest {
                        Some(digest) => format!("{image}:{plex_version}@{digest}"),
                        None => format!("{image}:{plex_version}"),
                    },
                }
            }
            PlexRuntime::Double { binary: Some(path) } => {
                artifacts.push(Artifact::new(
                    "plex-double",
                    "PLEX_DOUBLE",
                    path.as_ref(),
                    "run.plex.double_binary",
                )?);
                PlexInstall::Double
            }
            PlexRuntime::Double { binary: None } => {
                bail!("run.plex.double_binary: required to bake the Plex double into an image")
            }
        };
        if cfg.image.plex_image_archive.is_some() && !matches!(plex, PlexInstall::Docker { .. }) {
            bail!("image.plex_image_archive: only used with run.plex.runtime = \"docker\"");
        }
        let rclone_url = cfg.image.rclone_url.clone().unwrap_or_else(|| {
            format!(
                "https://downloads.rclone.org/v{v}/rclone-v{v}-linux-amd64.zip",
                v = cfg.image.rclone_version
            )
        });
        let rclone_sha256 = cfg.image.rclone_sha256.clone();
        let plex_part = match &plex {
            PlexInstall::Docker { image } => format!("docker {image}"),
            PlexInstall::Double => format!("double {plex_version}"),
        };
        let mut h = Sha256::new();
        let fixed = [
            userdata::BUILD_TEMPLATE,
            PROVISION_SH,
            RUNNER_UNIT,
            DEADMAN_UNIT,
            FIREWALL_UNIT,
            NFTABLES,
            &cfg.image.base_image,
            &rclone_url,
            &rclone_sha256,
            &plex_part,
        ];
        for part in fixed
            .into_iter()
            .chain(artifacts.iter().map(|a| a.sha256.as_str()))
        {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        Ok(Recipe {
            hash: hex::encode(h.finalize()),
            plex_version: plex_version.to_owned(),
            plex,
            artifacts,
            rclone_url,
            rclone_sha256,
        })
    }

    fn short(&self) -> &str {
        &self.hash[..12]
    }

    fn tag(&self) -> String {
        format!("plex-burst-recipe={}", self.hash)
    }

    fn image_name(&self) -> String {
        format!("plex-burst-{}-{}", self.plex_version, self.short())
    }

    fn tags(&self) -> Vec<String> {
        vec![
            TAG.to_owned(),
            self.tag(),
            format!("plex={}", self.plex_version),
            format!("runner={}", env!("CARGO_PKG_VERSION")),
        ]
    }

    fn key(&self, name: &str) -> String {
        format!("{IMAGES_PREFIX}{}/{name}", self.hash)
    }
}

/// What the builder reports at the end of provisioning.
#[derive(Debug, Deserialize)]
struct BuildReport {
    ok: bool,
    step: String,
    message: String,
    /// The Plex image's repo digests as the builder pulled them, or
    /// `loaded <image id>` (docker).
    #[serde(default)]
    plex_digest: String,
    /// The image is labelled a stand-in of Plex (the VM test's).
    #[serde(default)]
    plex_stand_in: bool,
}

/// `bootstrap image build`: the image for the reference's Plex version
/// (or `plex_version`), baked unless it exists.
pub async fn build_command(cfg: &BootstrapConfig, plex_version: Option<&str>) -> Result<()> {
    let version = match plex_version {
        Some(v) => v.to_owned(),
        None => {
            let bucket = cloud::bucket(cfg);
            let key = runner::transfer::manifest_key_for(&format!(
                "{}{}",
                cfg.reference_prefix(),
                crate::snapshot::ARCHIVE_NAME
            ));
            let manifest = runner::transfer::fetch_manifest(&bucket, &key)
                .await
                .context("no reference to read the home Plex version from: run `bootstrap snapshot` or pass --plex-version")?;
            manifest.plex_version.context(
                "the reference does not record the home Plex version: pass --plex-version",
            )?
        }
    };
    let recipe = Recipe::new(cfg, &version)?;
    ensure(cfg, &recipe).await?;
    Ok(())
}

/// The image of `recipe` in the configured zone, when one is available.
pub async fn find(
    client: &Client,
    cfg: &BootstrapConfig,
    recipe: &Recipe,
) -> Result<Option<Image>> {
    let images = client
        .list_images(&cfg.scaleway.zone, None, &[TAG, &recipe.tag()])
        .await
        .context("cannot list images")?;
    Ok(images.into_iter().find(|i| i.state == "available"))
}

/// The image for `recipe`: the existing one, or a new one baked now.
pub async fn ensure(cfg: &BootstrapConfig, recipe: &Recipe) -> Result<Image> {
    let client = cloud::client(cfg)?;
    if let Some(image) = find(&client, cfg, recipe).await? {
        println!(
            "image {} ({}) already baked for this recipe: reused",
            image.name, image.id
        );
        return Ok(image);
    }
    build(&client, cfg, recipe).await
}

async fn build(client: &Client, cfg: &BootstrapConfig, recipe: &Recipe) -> Result<Image> {
    let zone = &cfg.scaleway.zone;
    let bucket = cloud::bucket(cfg);
    let started = Instant::now();
    println!(
        "baking image {} (recipe {})",
        recipe.image_name(),
        recipe.short()
    );

    let build_id = crate::runs::rfc3339(std::time::SystemTime::now()).replace([':', '-'], "");
    let report_key = recipe.key(&format!("builds/{build_id}/report.json"));
    let log_key = recipe.key(&format!("builds/{build_id}/provision.log"));
    let user_data = user_data(cfg, recipe, &bucket, &report_key, &log_key).await?;

    let base = client
        .marketplace_image(
            zone,
            &cfg.image.base_image,
            &cfg.image.builder_commercial_type,
        )
        .await
        .context("cannot find the base image")?;
    // The builder answers nothing from outside either: a group of its own,
    // inbound dropped (the project's default group accepts everything).
    let name = format!("plex-burst-builder-{}", recipe.short());
    let tags = vec![TAG.into(), "plex-burst-builder".into(), recipe.tag()];
    let group = client
        .create_security_group(
            zone,
            &CreateSecurityGroup::closed(name.clone(), cfg.scaleway.project_id.clone(), tags),
        )
        .await
        .context("cannot create the builder's security group")?;
    let server = client
        .create_server(
            zone,
            &CreateServer {
                name,
                commercial_type: cfg.image.builder_commercial_type.clone(),
                image: base,
                project: cfg.scaleway.project_id.clone(),
                tags: vec![TAG.into(), "plex-burst-builder".into(), recipe.tag()],
                root_volume: RootVolume {
                    size_bytes: BUILDER_VOLUME_GB * 1_000_000_000,
                    volume_type: VolumeType::Sbs,
                },
                dynamic_ip_required: true,
                security_group: Some(group.id.clone()),
            },
        )
        .await
        .context("cannot create the builder server");
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            let _ = client.delete_security_group(zone, &group.id).await;
            return Err(e);
        }
    };
    println!("builder {} created", server.id);

    // From here on, the builder is deleted whatever happens.
    let baked = bake(
        client,
        cfg,
        recipe,
        &server,
        &user_data,
        &bucket,
        &report_key,
        &log_key,
    )
    .await;
    let mut cleanup = cloud::destroy_server(client, zone, &server).await;
    // Only once the builder is gone: a group in use cannot be deleted.
    if cleanup.is_ok() {
        cleanup = client
            .delete_security_group(zone, &group.id)
            .await
            .with_context(|| format!("cannot delete the builder's security group {}", group.id));
    }
    match (baked, cleanup) {
        (Ok(image), Ok(())) => {
            println!(
                "image {} ({}) available after {}",
                image.name,
                image.id,
                crate::runs::short_duration(started.elapsed())
            );
            Ok(image)
        }
        (Ok(_), Err(e)) => Err(e.context(format!(
            "the image is baked but the builder {} could not be deleted: `bootstrap sweep` lists it",
            server.id
        ))),
        (Err(e), Ok(())) => Err(e.context("image build failed (the builder was deleted)")),
        (Err(e), Err(c)) => Err(e.context(format!(
            "image build failed, and deleting the builder {} failed too ({c:#}): `bootstrap sweep` lists it",
            server.id
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn bake(
    client: &Client,
    cfg: &BootstrapConfig,
    recipe: &Recipe,
    server: &Server,
    user_data: &str,
    bucket: &Bucket,
    report_key: &str,
    log_key: &str,
) -> Result<Image> {
    let zone = &cfg.scaleway.zone;
    let poll = cloud::poll_interval();
    client
        .set_user_data(zone, &server.id, "cloud-init", user_data)
        .await
        .context("cannot set the builder's user data")?;
    client
        .server_action(zone, &server.id, ServerAction::Poweron)
        .await
        .context("cannot power on the builder")?;
    client
        .wait_server(
            zone,
            &server.id,
            |s| *s == ServerState::Running,
            STATE_TIMEOUT,
            poll,
        )
        .await
        .context("the builder did not start")?;
    println!(
        "builder running; provisioning (up to {})",
        humantime::format_duration(cfg.image.build_timeout)
    );

    let report = wait_report(bucket, report_key, cfg.image.build_timeout, poll).await?;
    if !report.ok {
        let log = bucket
            .get_bytes(log_key)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        // The log goes to stderr, above the one-line error.
        match log {
            Ok(log) => {
                // Long enough for the failed step's output and the
                // guest's cloud-init status and journal after it.
                eprintln!("the builder's provision log (last lines):");
                for line in tail(&log, 250).lines() {
                    eprintln!("  | {line}");
                }
            }
            Err(e) => eprintln!("the builder left no provision log: {e}"),
        }
        bail!(
            "provisioning failed at step {:?}: {}",
            report.step,
            report.message
        );
    }
    if !report.plex_digest.is_empty() {
        println!("the builder's Plex image: {}", report.plex_digest);
    }
    if report.plex_stand_in {
        println!("warning: this image holds a stand-in of Plex (a test image), not Plex itself");
    }

    let current = stop_halted(client, zone, &server.id, poll).await?;

    let root = current
        .volumes
        .get("0")
        .context("the builder has no root volume")?
        .id
        .clone();
    let tags = recipe.tags();
    let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    let snapshot = client
        .create_snapshot(
            zone,
            &root,
            &recipe.image_name(),
            &cfg.scaleway.project_id,
            &tag_refs,
        )
        .await
        .context("cannot snapshot the builder's root volume")?;
    client
        .wait_snapshot_available(zone, &snapshot.id, STATE_TIMEOUT, poll)
        .await
        .context("the snapshot did not become available")?;
    let image = client
        .create_image(
            zone,
            &CreateImage {
                name: recipe.image_name(),
                root_volume: snapshot.id.clone(),
                arch: "x86_64".into(),
                project: cfg.scaleway.project_id.clone(),
                tags: tags.clone(),
            },
        )
        .await
        .context("cannot create the image")?;
    client
        .wait_image_available(zone, &image.id, STATE_TIMEOUT, poll)
        .await
        .context("the image did not become available")
}

/// The guest halted itself; the API must still power the server off (a
/// halted guest stays allocated and billed). Whatever state that left it
/// in: `running` (the API did not notice), `stopping`, `stopped in place`
/// (still on its hypervisor) or `stopped`, it ends `stopped`.
async fn stop_halted(client: &Client, zone: &Zone, id: &str, poll: Duration) -> Result<Server> {
    let settled = |s: &ServerState| !matches!(s, ServerState::Starting | ServerState::Stopping);
    let mut current = client
        .get_server(zone, id)
        .await?
        .context("the builder vanished")?;
    loop {
        match current.state {
            ServerState::Stopped => return Ok(current),
            ServerState::Running | ServerState::StoppedInPlace => {
                client
                    .server_action(zone, id, ServerAction::Poweroff)
                    .await
                    .context("cannot power off the builder")?;
                return client
                    .wait_server(
                        zone,
                        id,
                        |s| *s == ServerState::Stopped,
                        STATE_TIMEOUT,
                        poll,
                    )
                    .await
                    .context("the builder did not stop");
            }
            ServerState::Starting | ServerState::Stopping => {
                current = client
                    .wait_server(zone, id, settled, STATE_TIMEOUT, poll)
                    .await
                    .context("the builder did not stop")?;
            }
            ref other => bail!("the builder is {other:?}, not stopped"),
        }
    }
}

/// The builder's user data: presigned URLs for the runner binary (uploaded
/// first) and for the report and log, valid as long as the build may take.
async fn user_data(
    cfg: &BootstrapConfig,
    recipe: &Recipe,
    bucket: &Bucket,
    report_key: &str,
    log_key: &str,
) -> Result<String> {
    let valid = cfg.image.build_timeout + Duration::from_secs(3600);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for artifact in &recipe.artifacts {
        let key = recipe.key(artifact.name);
        if bucket.head(&key).await?.is_none() {
            let file = std::fs::File::open(&artifact.path)
                .with_context(|| format!("cannot open {}", artifact.path.display()))?;
            let size = file.metadata()?.len();
            bucket
                .upload(&key, file, Some(size), "application/octet-stream")
                .await
                .with_context(|| format!("cannot upload {}", artifact.path.display()))?;
        }
        env.insert(
            format!("{}_URL", artifact.env),
            bucket.presign_get(&key, valid).await?,
        );
        env.insert(format!("{}_SHA256", artifact.env), artifact.sha256.clone());
    }
    env.insert("RECIPE".into(), recipe.hash.clone());
    env.insert(
        "REPORT_URL".into(),
        bucket.presign_put(report_key, valid).await?,
    );
    env.insert("LOG_URL".into(), bucket.presign_put(log_key, valid).await?);
    env.insert("RCLONE_URL".into(), recipe.rclone_url.clone());
    env.insert("RCLONE_SHA256".into(), recipe.rclone_sha256.clone());
    match &recipe.plex {
        PlexInstall::Docker { image } => {
            env.insert("PLEX_RUNTIME".into(), "docker".into());
            env.insert("PLEX_IMAGE".into(), image.clone());
        }
        PlexInstall::Double => {
            env.insert("PLEX_RUNTIME".into(), "double".into());
        }
    }
    let build_env = env
        .iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect::<Vec<_>>()
        .join("\n");
    let values: BTreeMap<&str, String> = [
        ("recipe", recipe.hash.clone()),
        ("build_env", build_env),
        ("provision_sh", PROVISION_SH.to_owned()),
        ("runner_unit", RUNNER_UNIT.to_owned()),
        ("deadman_unit", DEADMAN_UNIT.to_owned()),
        ("firewall_unit", FIREWALL_UNIT.to_owned()),
        ("nftables", NFTABLES.to_owned()),
    ]
    .into_iter()
    .collect();
    userdata::render(userdata::BUILD_TEMPLATE, &values)
}

/// Waits for the builder's report in S3.
async fn wait_report(
    bucket: &Bucket,
    key: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<BuildReport> {
    let deadline = Instant::now() + timeout;
    loop {
        if bucket.head(key).await?.is_some() {
            let bytes = bucket.get_bytes(key).await?;
            return serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the build report s3://{}/{key} is unreadable",
                    bucket.name()
                )
            });
        }
        if Instant::now() >= deadline {
            bail!(
                "the builder reported nothing within {} (image.build_timeout)",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(poll).await;
    }
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../bootstrap.example.toml");

    /// `config` with the example's placeholder sha256 replaced by `lines`.
    fn config_with(runner: &Path, lines: &str) -> BootstrapConfig {
        let placeholder = format!("rclone_sha256 = \"{}\"\n", "0".repeat(64));
        let text = EXAMPLE.replace(&placeholder, "").replace(
            "[image]\n",
            &format!("[image]\nrunner_binary = \"{}\"\n{lines}", runner.display()),
        );
        BootstrapConfig::parse(&text, &|_| Some("secret-value".into())).unwrap()
    }

    const VERSION: &str = "1.41.3.9314-a0bfb8370";

    #[test]
    fn rclone_url_sha256_and_the_plex_digest_shape_the_download_and_the_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("runner");
        std::fs::write(&runner, b"runner").unwrap();
        let sha = |c: &str| format!("rclone_sha256 = \"{}\"\n", c.repeat(64));

        let default = Recipe::new(&config_with(&runner, &sha("b")), VERSION).unwrap();
        assert_eq!(
            default.rclone_url,
            "https://downloads.rclone.org/v1.68.2/rclone-v1.68.2-linux-amd64.zip"
        );
        assert_eq!(default.rclone_sha256, "b".repeat(64));
        let PlexInstall::Docker { image } = &default.plex else {
            panic!("the example runs docker")
        };
        assert_eq!(image, &format!("plexinc/pms-docker:{VERSION}"));

        let url = "http://127.0.0.1:9000/rclone-v1.68.2-linux-amd64.zip";
        let local = Recipe::new(
            &config_with(&runner, &format!("rclone_url = \"{url}\"\n{}", sha("b"))),
            VERSION,
        )
        .unwrap();
        assert_eq!(local.rclone_url, url);
        assert_ne!(local.hash, default.hash);

        let other = Recipe::new(&config_with(&runner, &sha("a")), VERSION).unwrap();
        assert_ne!(other.hash, default.hash);

        let digest = format!("sha256:{}", "c".repeat(64));
        let pinned = Recipe::new(
            &config_with(
                &runner,
                &format!("{}plex_image_digest = \"{digest}\"\n", sha("b")),
            ),
            VERSION,
        )
        .unwrap();
        let PlexInstall::Docker { image } = &pinned.plex else {
            panic!("the example runs docker")
        };
        assert_eq!(image, &format!("plexinc/pms-docker:{VERSION}@{digest}"));
        assert_ne!(pinned.hash, default.hash);
    }

    #[test]
    fn the_build_template_writes_the_units_and_the_firewall() {
        let values: BTreeMap<&str, String> = [
            ("recipe", "r".to_owned()),
            ("build_env", "RCLONE_URL='u'".to_owned()),
            ("provision_sh", PROVISION_SH.to_owned()),
            ("runner_unit", RUNNER_UNIT.to_owned()),
            ("deadman_unit", DEADMAN_UNIT.to_owned()),
            ("firewall_unit", FIREWALL_UNIT.to_owned()),
            ("nftables", NFTABLES.to_owned()),
        ]
        .into_iter()
        .collect();
        let out = userdata::render(userdata::BUILD_TEMPLATE, &values).unwrap();
        assert!(out.contains("path: /etc/systemd/system/plex-burst-runner.service"));
        assert!(out.contains("path: /etc/systemd/system/plex-burst-deadman.service"));
        assert!(out.contains("path: /etc/systemd/system/plex-burst-firewall.service"));
        assert!(out.contains("path: /usr/local/lib/plex-burst/plex-burst.nft"));
        assert!(out.contains("      ExecStart=/usr/local/bin/runner dead-man --config"));
        assert!(
            out.contains(
                "      ExecStart=/usr/sbin/nft -f /usr/local/lib/plex-burst/plex-burst.nft"
            )
        );
        assert!(out.contains("type filter hook input priority filter; policy drop;"));
        assert!(PROVISION_SH.contains("plex-burst-deadman.service"));
        assert!(PROVISION_SH.contains("plex-burst-firewall.service"));
    }
}
