//! The Marketplace API (global, public): the seeded `debian_bookworm`
//! local images, one per zone, whose ids `POST /servers` accepts.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::errors::{ApiResult, ScwError, reply};
use super::query::{self, Params};
use super::render::page;
use super::state::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/marketplace/v2/local-images", get(list))
        .route("/marketplace/v2/local-images/{id}", get(show))
}

async fn list(State(double): State<Shared>, RawQuery(raw): RawQuery) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let (number, size) = query::pagination(&params, "page_size")?;
    if let Some(zone) = params.get("zone") {
        query::zone(zone)?;
    }
    let zone = params.get("zone").and_then(super::catalogue::zone);
    let world = double.world();
    let found: Vec<Value> = world
        .images
        .iter()
        .filter_map(|i| i.local_json())
        .filter(|i| zone.is_none_or(|z| i["zone"] == z))
        .filter(|i| params.get("image_label").is_none_or(|l| i["label"] == l))
        .filter(|i| params.get("type").is_none_or(|t| i["type"] == t))
        .filter(|i| params.get("image_id").is_none_or(|t| i["id"] == t))
        .collect();
    let (items, total) = page(found, number, size);
    Ok(reply(
        StatusCode::OK,
        json!({"local_images": items, "total_count": total}),
    ))
}

async fn show(State(double): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let world = double.world();
    world
        .images
        .iter()
        .filter(|i| i.id == id)
        .find_map(|i| i.local_json())
        .map(|image| reply(StatusCode::OK, image))
        .ok_or_else(|| ScwError::not_found("local_image", &id))
}
