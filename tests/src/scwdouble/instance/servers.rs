//! Creating, reading, listing and deleting servers. A new server is
//! `stopped`: nothing boots before `poweron`. Its root is a Block
//! `sbs_volume` (created `in_use`, untagged) or a local `l_ssd`, which
//! only types with local storage offer.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::list_reply;
use crate::scwdouble::auth::{Perm, Principal};
use crate::scwdouble::body::Body;
use crate::scwdouble::catalogue::{GB, product};
use crate::scwdouble::errors::{ApiResult, ScwError, reply};
use crate::scwdouble::ids::uuid_v4;
use crate::scwdouble::lifecycle::remove_server;
use crate::scwdouble::query::{self, Params, has_tags, tags};
use crate::scwdouble::state::{RootVolume, STOPPED, Server, Shared, Volume, World};

const SERVER_FIELDS: &[&str] = &[
    "name",
    "commercial_type",
    "image",
    "project",
    "tags",
    "security_group",
    "dynamic_ip_required",
    "boot_type",
    "volumes",
];

/// Largest Block volume.
const MAX_SBS: u64 = 10_000 * GB;

pub async fn create(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let body = Body::parse(&bytes, SERVER_FIELDS)?;
    let name = body.str("name")?;
    let commercial_type = body.str("commercial_type")?;
    let image_id = body.uuid("image")?;
    let project = body.uuid("project")?;
    let tags = body.strings("tags")?;
    let security_group = body.opt_uuid("security_group")?;
    let dynamic_ip_required = body.opt_bool("dynamic_ip_required")?.unwrap_or(true);
    let boot_type = body.opt_str("boot_type")?.unwrap_or_else(|| "local".into());
    if boot_type != "local" {
        return Err(ScwError::argument(
            "boot_type",
            "constraint",
            "only \"local\" is supported",
        ));
    }
    let product = product(&commercial_type).ok_or_else(|| {
        ScwError::argument(
            "commercial_type",
            "constraint",
            format!("unknown commercial type {commercial_type:?} (see GET /products/servers)"),
        )
    })?;
    let root_spec = root_spec(&body)?;

    let mut world = double.world();
    world.require(&principal, Perm::InstanceWrite, Some(&project))?;
    let image = world
        .image(zone, &image_id)
        .ok_or_else(|| ScwError::not_found("instance_image", &image_id))?;
    if image.state != "available" {
        return Err(ScwError::invalid_request(format!(
            "image {image_id} is {}, not available",
            image.state
        )));
    }
    if let Some(local) = &image.marketplace
        && !local.compatible.contains(&commercial_type)
    {
        return Err(ScwError::argument(
            "commercial_type",
            "constraint",
            format!("{commercial_type} is not compatible with image {image_id}"),
        ));
    }
    let parent_snapshot = image
        .marketplace
        .is_none()
        .then(|| image.root_snapshot.clone());
    let image_size = image.size;
    let image_name = image.name.clone();

    // The seeded images are `instance_sbs`: their root is a Block volume.
    let volume_type = root_spec.0.unwrap_or_else(|| "sbs_volume".into());
    let size = root_spec.1.unwrap_or(image_size);
    if size < image_size {
        return Err(ScwError::argument(
            "volumes.0.size",
            "constraint",
            format!("must be at least the image's {image_size} bytes"),
        ));
    }
    match volume_type.as_str() {
        "l_ssd" if product.local_gb == 0 => {
            return Err(ScwError::argument(
                "volumes.0.volume_type",
                "constraint",
                format!("{commercial_type} has no local storage: the root must be an sbs_volume"),
            ));
        }
        "l_ssd" if size > product.local_gb * GB => {
            return Err(ScwError::argument(
                "volumes.0.size",
                "constraint",
                format!(
                    "{commercial_type} offers at most {} bytes of local storage",
                    product.local_gb * GB
                ),
            ));
        }
        "sbs_volume" if size > MAX_SBS => {
            return Err(ScwError::argument(
                "volumes.0.size",
                "constraint",
                format!("must be at most {MAX_SBS} bytes"),
            ));
        }
        _ => {}
    }
    check_quotas(&double.config, &world, &project, &volume_type, size)?;
    let security_group = match security_group {
        Some(id) => {
            let group = world
                .security_groups
                .iter()
                .find(|g| g.zone == zone && g.id == id)
                .ok_or_else(|| ScwError::not_found("instance_security_group", &id))?;
            if group.project != project {
                return Err(ScwError::argument(
                    "security_group",
                    "constraint",
                    format!("security group {id} is not in project {project}"),
                ));
            }
            id
        }
        None => super::security_groups::project_default(&mut world, zone, &project),
    };

    let now = SystemTime::now();
    let server = Server {
        id: uuid_v4(),
        name,
        zone,
        project: project.clone(),
        commercial_type,
        tags: tags.clone(),
        image_id,
        security_group,
        dynamic_ip_required,
        boot_type,
        state: STOPPED,
        state_detail: String::new(),
        root: RootVolume {
            id: uuid_v4(),
            volume_type: volume_type.clone(),
            size,
            created: now,
        },
        user_data: BTreeMap::new(),
        public_ip: None,
        created: now,
        modified: now,
        poweron_count: 0,
        guest_halted: false,
        state_reports: Vec::new(),
        generation: 0,
    };
    if volume_type == "sbs_volume" {
        world.volumes.push(Volume {
            id: server.root.id.clone(),
            name: format!("{image_name}_sbs_volume_0"),
            zone,
            project,
            size,
            status: "in_use",
            // The server's tags are not copied: a tagged server's root
            // volume has none (scaleway-cli c2d470d, internal/namespaces/
            // instance/v1/testdata/test-create-server-simple-tags
            // .cassette.yaml).
            tags: Vec::new(),
            server: Some(server.id.clone()),
            parent_snapshot_id: parent_snapshot,
            created: now,
            updated: now,
            last_detached: None,
        });
    }
    let answer = json!({ "server": server.json(&world, &double.config.organization_id) });
    world.servers.push(server);
    Ok(reply(StatusCode::CREATED, answer))
}

/// `volumes["0"]`'s type and size, when given. Only the root volume is
/// modelled.
fn root_spec(body: &Body) -> Result<(Option<String>, Option<u64>), ScwError> {
    let Some(volumes) = body.object("volumes")? else {
        return Ok((None, None));
    };
    if let Some(other) = volumes.keys().find(|k| k.as_str() != "0") {
        return Err(ScwError::argument(
            &format!("volumes.{other}"),
            "constraint",
            "the double models the root volume (\"0\") only",
        ));
    }
    let Some(root) = volumes.get("0").cloned() else {
        return Ok((None, None));
    };
    // `boot` is what Terraform sends (server-root-volume-from-image-block
    // cassette, terraform-provider-scaleway b2d45ed4): accepted, typed.
    let root = Body::from_value(root, &["size", "volume_type", "boot"], "volumes.0.")?;
    root.opt_bool("boot")?;
    let volume_type = root.opt_str("volume_type")?;
    if let Some(kind) = &volume_type
        && kind != "sbs_volume"
        && kind != "l_ssd"
    {
        return Err(ScwError::argument(
            "volumes.0.volume_type",
            "constraint",
            format!("{kind:?} is not one of sbs_volume, l_ssd"),
        ));
    }
    let size = root.opt_u64("size")?;
    if size == Some(0) {
        return Err(ScwError::argument(
            "volumes.0.size",
            "constraint",
            "must be positive",
        ));
    }
    Ok((volume_type, size))
}

fn check_quotas(
    config: &crate::scwdouble::state::Config,
    world: &World,
    project: &str,
    volume_type: &str,
    size: u64,
) -> Result<(), ScwError> {
    if let Some(quota) = config.quota_servers {
        let current = world
            .servers
            .iter()
            .filter(|s| s.project == project)
            .count() as u64;
        if current + 1 > quota {
            return Err(ScwError::quotas_exceeded("servers", quota, current));
        }
    }
    if let (Some(quota), "sbs_volume") = (config.quota_volumes_gb, volume_type) {
        let used: u64 = world
            .volumes
            .iter()
            .filter(|v| v.project == project)
            .map(|v| v.size)
            .sum();
        let current = used.div_ceil(GB);
        if (used + size).div_ceil(GB) > quota {
            return Err(ScwError::quotas_exceeded(
                "sbs_volumes_size_gb",
                quota,
                current,
            ));
        }
    }
    Ok(())
}

pub async fn show(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let world = double.world();
    let server = world
        .server(zone, &id)
        .ok_or_else(|| ScwError::not_found("instance_server", &id))?;
    world.require(&principal, Perm::InstanceRead, Some(&server.project))?;
    Ok(reply(
        StatusCode::OK,
        json!({ "server": server.json(&world, &double.config.organization_id) }),
    ))
}

pub async fn list(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let params = Params::parse(raw.as_deref());
    let (page, per_page) = query::pagination(&params, "per_page")?;
    let wanted = tags(&params);
    let world = double.world();
    world.require(&principal, Perm::InstanceRead, params.get("project"))?;
    let found: Vec<Value> = world
        .servers
        .iter()
        .filter(|s| s.zone == zone)
        .filter(|s| world.allows(&principal, Perm::InstanceRead, Some(&s.project)))
        .filter(|s| query::matches(&params, "project", &s.project))
        .filter(|_| query::matches(&params, "organization", &double.config.organization_id))
        .filter(|s| query::contains(&params, "name", &s.name))
        .filter(|s| query::matches(&params, "state", s.state))
        .filter(|s| query::matches(&params, "commercial_type", &s.commercial_type))
        .filter(|s| has_tags(&s.tags, &wanted))
        .map(|s| s.json(&world, &double.config.organization_id))
        .collect();
    let (items, total) = crate::scwdouble::render::page(found, page, per_page);
    list_reply("servers", items, total)
}

/// Needs a stopped server; volumes stay (a Block root is detached, a
/// local one is kept aside, as the real API keeps it).
pub async fn delete(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let server = world
        .server(zone, &id)
        .ok_or_else(|| ScwError::not_found("instance_server", &id))?;
    world.require(&principal, Perm::InstanceWrite, Some(&server.project))?;
    if server.state != STOPPED {
        return Err(ScwError::invalid_request(format!(
            "server should be stopped (it is {})",
            server.state
        )));
    }
    let local = (server.root.volume_type == "l_ssd")
        .then(|| server.root_json(&double.config.organization_id));
    remove_server(&mut world, zone, &id);
    if let Some(mut volume) = local {
        volume["server"] = Value::Null;
        world.local_volumes.push(volume);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
