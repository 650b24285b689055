//! The Block Storage API (`/block/v1/zones/{zone}`): volumes (made by
//! server creation here) and snapshots. Answers are the bare resource,
//! lists `{"volumes": [...], "total_count": N}`; errors name `volume` or
//! `snapshot` as their resource, as recorded (terraform-provider-scaleway
//! b2d45ed, internal/services/instance/testdata/image-basic.cassette.yaml).

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use super::auth::{Perm, Principal};
use super::body::Body;
use super::errors::{ApiResult, ScwError, reply};
use super::ids::uuid_v4;
use super::lifecycle;
use super::query::{self, Params, has_tags, tags};
use super::render::page;
use super::state::{Shared, Snapshot, World};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/block/v1/zones/{zone}/volumes", get(list_volumes))
        .route(
            "/block/v1/zones/{zone}/volumes/{id}",
            get(show_volume).patch(update_volume).delete(delete_volume),
        )
        .route(
            "/block/v1/zones/{zone}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route(
            "/block/v1/zones/{zone}/snapshots/{id}",
            get(show_snapshot).delete(delete_snapshot),
        )
}

fn volume_index(
    world: &World,
    principal: &Principal,
    perm: Perm,
    zone: &str,
    id: &str,
) -> Result<usize, ScwError> {
    let index = world
        .volumes
        .iter()
        .position(|v| v.zone == zone && v.id == id)
        .ok_or_else(|| ScwError::not_found("volume", id))?;
    world.require(principal, perm, Some(&world.volumes[index].project))?;
    Ok(index)
}

fn snapshot_index(
    world: &World,
    principal: &Principal,
    perm: Perm,
    zone: &str,
    id: &str,
) -> Result<usize, ScwError> {
    let index = world
        .snapshots
        .iter()
        .position(|s| s.zone == zone && s.id == id)
        .ok_or_else(|| ScwError::not_found("snapshot", id))?;
    world.require(principal, perm, Some(&world.snapshots[index].project))?;
    Ok(index)
}

async fn list_volumes(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let params = Params::parse(raw.as_deref());
    let (number, size) = query::pagination(&params, "page_size")?;
    let wanted = tags(&params);
    let world = double.world();
    world.require(&principal, Perm::BlockRead, params.get("project_id"))?;
    let found: Vec<Value> = world
        .volumes
        .iter()
        .filter(|v| v.zone == zone)
        .filter(|v| world.allows(&principal, Perm::BlockRead, Some(&v.project)))
        .filter(|v| query::matches(&params, "project_id", &v.project))
        .filter(|v| query::contains(&params, "name", &v.name))
        .filter(|v| {
            params
                .get("product_resource_id")
                .is_none_or(|id| v.server.as_deref() == Some(id))
        })
        .filter(|v| has_tags(&v.tags, &wanted))
        .map(|v| v.json())
        .collect();
    let (items, total) = page(found, number, size);
    Ok(reply(
        StatusCode::OK,
        json!({"volumes": items, "total_count": total}),
    ))
}

async fn show_volume(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let world = double.world();
    let index = volume_index(&world, &principal, Perm::BlockRead, zone, &id)?;
    Ok(reply(StatusCode::OK, world.volumes[index].json()))
}

/// Renames or retags a volume (size and IOPS changes are not modelled).
async fn update_volume(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let body = Body::parse(&bytes, &["name", "tags"])?;
    let name = body.opt_str("name")?;
    let new_tags = body.get("tags").is_some().then(|| body.strings("tags"));
    let mut world = double.world();
    let index = volume_index(&world, &principal, Perm::BlockWrite, zone, &id)?;
    let volume = &mut world.volumes[index];
    if let Some(name) = name {
        volume.name = name;
    }
    if let Some(tags) = new_tags {
        volume.tags = tags?;
    }
    volume.updated = SystemTime::now();
    Ok(reply(StatusCode::OK, volume.json()))
}

/// Only a volume no server uses; it is `deleting`, then gone.
async fn delete_volume(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    {
        let mut world = double.world();
        let index = volume_index(&world, &principal, Perm::BlockWrite, zone, &id)?;
        let volume = &mut world.volumes[index];
        match volume.status {
            "in_use" => {
                return Err(ScwError::precondition(
                    "resource_still_in_use",
                    format!(
                        "volume {id} is in use by server {}: detach it first",
                        volume.server.as_deref().unwrap_or("?")
                    ),
                ));
            }
            "available" => {}
            other => return Err(ScwError::transient_state("volume", &id, other)),
        }
        volume.status = "deleting";
        volume.updated = SystemTime::now();
    }
    lifecycle::volume_gone(&double, id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_snapshot(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    // `public` is what Terraform sends (block snapshot-basic cassette,
    // terraform-provider-scaleway b2d45ed4); the double shares nothing.
    let body = Body::parse(
        &bytes,
        &["volume_id", "name", "project_id", "tags", "public"],
    )?;
    if body.opt_bool("public")? == Some(true) {
        return Err(ScwError::argument(
            "public",
            "constraint",
            "the double models no public snapshots",
        ));
    }
    let volume_id = body.uuid("volume_id")?;
    let name = body.str("name")?;
    let project = body.uuid("project_id")?;
    let tags = body.strings("tags")?;
    let id = {
        let mut world = double.world();
        world.require(&principal, Perm::BlockWrite, Some(&project))?;
        let index = volume_index(&world, &principal, Perm::BlockRead, zone, &volume_id)?;
        let volume = &world.volumes[index];
        if !matches!(volume.status, "available" | "in_use") {
            return Err(ScwError::transient_state(
                "volume",
                &volume_id,
                volume.status,
            ));
        }
        let now = SystemTime::now();
        let snapshot = Snapshot {
            id: uuid_v4(),
            name,
            zone,
            project,
            size: volume.size,
            status: "creating",
            tags,
            volume_id,
            volume_name: volume.name.clone(),
            created: now,
            updated: now,
        };
        let id = snapshot.id.clone();
        world.snapshots.push(snapshot);
        id
    };
    lifecycle::snapshot_ready(&double, id.clone());
    let world = double.world();
    let snapshot = world.snapshots.iter().find(|s| s.id == id).expect("added");
    Ok(reply(StatusCode::OK, snapshot.json(&world)))
}

async fn list_snapshots(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let params = Params::parse(raw.as_deref());
    let (number, size) = query::pagination(&params, "page_size")?;
    let wanted = tags(&params);
    let world = double.world();
    world.require(&principal, Perm::BlockRead, params.get("project_id"))?;
    let found: Vec<Value> = world
        .snapshots
        .iter()
        .filter(|s| s.zone == zone)
        .filter(|s| world.allows(&principal, Perm::BlockRead, Some(&s.project)))
        .filter(|s| query::matches(&params, "project_id", &s.project))
        .filter(|s| query::matches(&params, "volume_id", &s.volume_id))
        .filter(|s| query::contains(&params, "name", &s.name))
        .filter(|s| has_tags(&s.tags, &wanted))
        .map(|s| s.json(&world))
        .collect();
    let (items, total) = page(found, number, size);
    Ok(reply(
        StatusCode::OK,
        json!({"snapshots": items, "total_count": total}),
    ))
}

async fn show_snapshot(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let world = double.world();
    let index = snapshot_index(&world, &principal, Perm::BlockRead, zone, &id)?;
    Ok(reply(StatusCode::OK, world.snapshots[index].json(&world)))
}

/// Not while `in_use` (an image is built on it, or was until a moment
/// ago); `deleting`, then gone.
async fn delete_snapshot(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    {
        let mut world = double.world();
        let index = snapshot_index(&world, &principal, Perm::BlockWrite, zone, &id)?;
        let snapshot = &mut world.snapshots[index];
        // No recording shows this refusal; the shape is the Block API's
        // precondition_failed (`precondition`, `help_message`).
        if snapshot.status == "in_use" {
            return Err(ScwError::precondition(
                "resource_still_in_use",
                format!("snapshot {id} is in use: delete its image first"),
            ));
        }
        if snapshot.status != "available" {
            return Err(ScwError::transient_state("snapshot", &id, snapshot.status));
        }
        snapshot.status = "deleting";
        snapshot.updated = SystemTime::now();
    }
    lifecycle::snapshot_gone(&double, id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
