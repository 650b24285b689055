//! Instance images, zonal: made from an `available` Block snapshot of the
//! same zone, `available` at once; the snapshot is `in_use` until a while
//! after the image is deleted. Listings include the public marketplace
//! images, as the real API's do.

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
use crate::scwdouble::errors::{ApiResult, ScwError, reply};
use crate::scwdouble::ids::uuid_v4;
use crate::scwdouble::lifecycle;
use crate::scwdouble::query::{self, Params, has_tags};
use crate::scwdouble::state::{Image, Shared};

pub async fn create(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let body = Body::parse(
        &bytes,
        &["name", "root_volume", "arch", "project", "tags", "public"],
    )?;
    let name = body.str("name")?;
    let snapshot_id = body.uuid("root_volume")?;
    let arch = body.str("arch")?;
    let project = body.uuid("project")?;
    let tags = body.strings("tags")?;
    let public = body.opt_bool("public")?.unwrap_or(false);
    if arch != "x86_64" && arch != "arm64" {
        return Err(ScwError::argument(
            "arch",
            "constraint",
            format!("{arch:?} is not one of x86_64, arm64"),
        ));
    }
    let id = {
        let mut world = double.world();
        world.require(&principal, Perm::InstanceWrite, Some(&project))?;
        let snapshot = world
            .snapshots
            .iter()
            .find(|s| s.id == snapshot_id && s.zone == zone)
            .ok_or_else(|| ScwError::not_found("block_snapshot", &snapshot_id))?;
        if snapshot.status != "available" {
            return Err(ScwError::invalid_request(format!(
                "snapshot {snapshot_id} is {}, not available",
                snapshot.status
            )));
        }
        let now = SystemTime::now();
        let image = Image {
            id: uuid_v4(),
            name,
            zone,
            project,
            arch,
            tags,
            public,
            // Available at once, as recorded (terraform-provider-scaleway
            // b2d45ed, internal/services/instance/testdata/image-basic
            // .cassette.yaml: the POST answers `available`).
            state: "available",
            root_snapshot: snapshot_id.clone(),
            size: snapshot.size,
            created: now,
            modified: now,
            marketplace: None,
        };
        let id = image.id.clone();
        world.images.push(image);
        // The snapshot is `in_use` while an image is built on it.
        if let Some(snapshot) = world.snapshot_mut(&snapshot_id) {
            snapshot.status = "in_use";
            snapshot.updated = now;
        }
        id
    };
    let world = double.world();
    let image = world.image(zone, &id).expect("just added");
    Ok(reply(
        StatusCode::CREATED,
        json!({ "image": image.json(&double.config.organization_id) }),
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
    // One tag: `tags` is a single string in both SDKs' ListImagesRequest
    // (scaleway-sdk-go 2c5cd81, api/instance/v1/instance_sdk.go), not the
    // comma-joined list servers take; `a,b` is the one tag "a,b".
    let wanted: Vec<String> = params.get("tags").map(str::to_string).into_iter().collect();
    let public = match params.get("public") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ScwError::argument(
                "public",
                "constraint",
                "must be true or false",
            ));
        }
    };
    let world = double.world();
    world.require(&principal, Perm::InstanceRead, params.get("project"))?;
    let found: Vec<Value> = world
        .images
        .iter()
        .filter(|i| i.zone == zone)
        .filter(|i| i.public || world.allows(&principal, Perm::InstanceRead, Some(&i.project)))
        .filter(|i| query::matches(&params, "project", &i.project))
        .filter(|i| query::contains(&params, "name", &i.name))
        .filter(|i| query::matches(&params, "arch", &i.arch))
        .filter(|i| public.is_none_or(|p| p == i.public))
        .filter(|i| has_tags(&i.tags, &wanted))
        .map(|i| i.json(&double.config.organization_id))
        .collect();
    let (items, total) = crate::scwdouble::render::page(found, page, per_page);
    list_reply("images", items, total)
}

pub async fn show(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let world = double.world();
    let image = world
        .image(zone, &id)
        .ok_or_else(|| ScwError::not_found("instance_image", &id))?;
    if !image.public {
        world.require(&principal, Perm::InstanceRead, Some(&image.project))?;
    }
    Ok(reply(
        StatusCode::OK,
        json!({ "image": image.json(&double.config.organization_id) }),
    ))
}

/// Deletes the image only; its snapshot stays, as on the real API.
pub async fn delete(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let image = world
        .image(zone, &id)
        .ok_or_else(|| ScwError::not_found("instance_image", &id))?;
    if image.marketplace.is_some() {
        return Err(ScwError::permissions_denied("instance_image", "delete"));
    }
    world.require(&principal, Perm::InstanceWrite, Some(&image.project))?;
    let snapshot = image.root_snapshot.clone();
    world.images.retain(|i| i.id != id);
    // Still `in_use` when read right after: released a while later.
    lifecycle::snapshot_released(&double, snapshot);
    Ok(StatusCode::NO_CONTENT.into_response())
}
