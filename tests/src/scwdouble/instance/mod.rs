//! The Instance API (`/instance/v1/zones/{zone}`): servers, their actions
//! and user data, the product catalogue, images, security groups. Answers wrap the
//! resource (`{"server": {...}}`), lists carry `X-Total-Count`.

mod actions;
mod images;
pub mod security_groups;
mod servers;
pub mod user_data;

use axum::Router;
use axum::routing::{get, post};

use super::catalogue::PRODUCTS;
use super::errors::{ApiResult, reply};
use super::query;
use super::state::Shared;

pub fn router() -> Router<Shared> {
    let zoned = |path: &str| format!("/instance/v1/zones/{{zone}}{path}");
    Router::new()
        .route(&zoned("/servers"), get(servers::list).post(servers::create))
        .route(
            &zoned("/servers/{id}"),
            get(servers::show).delete(servers::delete),
        )
        .route(&zoned("/servers/{id}/action"), post(actions::action))
        .route(&zoned("/servers/{id}/user_data"), get(user_data::list))
        .route(
            &zoned("/servers/{id}/user_data/{key}"),
            get(user_data::show)
                .patch(user_data::set)
                .delete(user_data::delete),
        )
        .route(
            &zoned("/security_groups"),
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            &zoned("/security_groups/{id}"),
            get(security_groups::show).delete(security_groups::delete),
        )
        .route(
            &zoned("/security_groups/{id}/rules"),
            get(security_groups::rules),
        )
        .route(&zoned("/products/servers"), get(products))
        .route(&zoned("/images"), get(images::list).post(images::create))
        .route(
            &zoned("/images/{id}"),
            get(images::show).delete(images::delete),
        )
}

/// The catalogue, the same in every zone; public as on the real API.
async fn products(axum::extract::Path(zone): axum::extract::Path<String>) -> ApiResult {
    query::zone(&zone)?;
    let servers: serde_json::Map<String, serde_json::Value> = PRODUCTS
        .iter()
        .map(|p| (p.name.to_string(), p.json()))
        .collect();
    let mut response = reply(
        axum::http::StatusCode::OK,
        serde_json::json!({ "servers": servers }),
    );
    response
        .headers_mut()
        .insert("X-Total-Count", PRODUCTS.len().into());
    Ok(response)
}

/// A list answer with its `X-Total-Count`.
fn list_reply(key: &str, items: Vec<serde_json::Value>, total: usize) -> ApiResult {
    let mut response = reply(
        axum::http::StatusCode::OK,
        super::render::wrap(key, serde_json::Value::Array(items)),
    );
    response.headers_mut().insert("X-Total-Count", total.into());
    Ok(response)
}
