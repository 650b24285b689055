//! `/__double/*`, for tests only (no auth, not recorded): the call log,
//! fault injection, a guest powering itself off, the metadata binding and
//! a dump of the whole state without secrets.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::body::Body;
use super::errors::{ApiResult, ScwError, reply};
use super::faults::FaultRule;
use super::ids::rfc3339;
use super::render::merge;
use super::state::{RUNNING, STOPPING, Shared};

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/__double/calls", get(calls))
        .route("/__double/state", get(state))
        .route("/__double/fail", post(fail))
        .route("/__double/servers/{id}/guest-halt", post(guest_halt))
        .route("/__double/metadata/bind", post(bind))
        .route("/__double/s3/cold", post(cold))
}

async fn calls(State(double): State<Shared>) -> ApiResult {
    Ok(reply(
        StatusCode::OK,
        Value::Array(double.world().calls.clone()),
    ))
}

/// `{"method"?, "path_prefix", "status", "times"}`.
async fn fail(State(double): State<Shared>, bytes: Bytes) -> ApiResult {
    let rule: FaultRule = serde_json::from_slice(&bytes)
        .map_err(|e| ScwError::invalid_request(format!("bad fault rule: {e}")))?;
    if !(400..=599).contains(&rule.status) || rule.times == 0 {
        return Err(ScwError::invalid_request(
            "status must be 400..=599 and times positive",
        ));
    }
    double.world().faults.push(rule);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The guest powered itself off. As `scaleway.md` says, that leaves the
/// server allocated and billed: it stays `running` for the API (only
/// `guest_halted` in the state dump tells) until poweroff or terminate.
/// With `{"ends": "stopped in place"}` the hypervisor notices instead and
/// the server goes `stopping` then `stopped in place` (still allocated).
async fn guest_halt(
    State(double): State<Shared>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let in_place = if bytes.is_empty() {
        false
    } else {
        let body = Body::parse(&bytes, &["ends"])?;
        match body.opt_str("ends")?.as_deref() {
            None | Some("running") => false,
            Some("stopped in place") => true,
            Some(other) => {
                return Err(ScwError::invalid_request(format!(
                    "ends must be \"running\" or \"stopped in place\", not {other:?}"
                )));
            }
        }
    };
    let mut world = double.world();
    let server = world
        .servers
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| ScwError::not_found("instance_server", &id))?;
    if server.state != RUNNING {
        return Err(ScwError::invalid_request(format!(
            "only a running server's guest can halt (it is {})",
            server.state
        )));
    }
    server.guest_halted = true;
    if in_place {
        server.state = STOPPING;
        server.state_detail = "stopping in place".into();
        server.generation += 1;
        server.modified = SystemTime::now();
        let (zone, generation) = (server.zone, server.generation);
        drop(world);
        super::lifecycle::poweroff(&double, zone, id, generation, true);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"server_id": ID}` binds the metadata service to a server; `null`
/// goes back to the last powered on. With `"address": IP`, the server is
/// the one that calls from that address (the guest's), and from then on
/// only callers with an address bound get answers; `null` unbinds it.
async fn bind(State(double): State<Shared>, bytes: Bytes) -> ApiResult {
    let body = Body::parse(&bytes, &["server_id", "address"])?;
    let id = body.opt_str("server_id")?;
    let address = match body.opt_str("address")? {
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            ScwError::invalid_request(format!("address: {a:?} is not an IP address"))
        })?),
        None => None,
    };
    let mut world = double.world();
    if let Some(id) = &id
        && !world.servers.iter().any(|s| &s.id == id)
    {
        return Err(ScwError::not_found("instance_server", id));
    }
    match (address, id) {
        (Some(address), Some(id)) => {
            world.metadata_addresses.insert(address, id);
        }
        (Some(address), None) => {
            world.metadata_addresses.remove(&address);
        }
        (None, id) => world.metadata_bound = id,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"bucket": B, "prefix": P}`: the objects under `P` move to the
/// GLACIER storage class (what a lifecycle rule does to media left
/// untouched): the S3 front refuses to read them until "restored".
async fn cold(State(double): State<Shared>, bytes: Bytes) -> ApiResult {
    let body = Body::parse(&bytes, &["bucket", "prefix"])?;
    let bucket = body
        .opt_str("bucket")?
        .ok_or_else(|| ScwError::invalid_request("bucket: required"))?;
    let prefix = body.opt_str("prefix")?.unwrap_or_default();
    double.world().cold_prefixes.push((bucket, prefix));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn state(State(double): State<Shared>) -> ApiResult {
    let world = double.world();
    let organization = &double.config.organization_id;
    let servers: Vec<Value> = world
        .servers
        .iter()
        .map(|s| {
            let mut json = s.json(&world, organization);
            let user_data: serde_json::Map<String, Value> = s
                .user_data
                .iter()
                .map(|(key, data)| {
                    (
                        key.clone(),
                        json!({
                            "size": data.text.len(),
                            "set_at": rfc3339(data.set_at),
                            "set_in_state": data.set_in_state,
                            "set_before_first_poweron": data.set_before_first_poweron,
                        }),
                    )
                })
                .collect();
            merge(
                &mut json,
                json!({
                    "user_data": user_data,
                    "poweron_count": s.poweron_count,
                    "guest_halted": s.guest_halted,
                    "state_reports": s.state_reports,
                }),
            );
            json
        })
        .collect();
    let policies: Vec<Value> = world
        .policies
        .iter()
        .map(|p| {
            let mut json = p.json();
            let rules: Vec<Value> = p.rules.iter().map(|r| r.json(organization)).collect();
            merge(&mut json, json!({ "rules": rules }));
            json
        })
        .collect();
    let keys: Vec<Value> = world
        .api_keys
        .iter()
        .map(|k| {
            let mut json = k.json();
            merge(&mut json, json!({ "expired": k.expired() }));
            json
        })
        .collect();
    Ok(reply(
        StatusCode::OK,
        json!({
            "organization_id": organization,
            "project_id": double.config.project_id,
            "now": rfc3339(SystemTime::now()),
            "servers": servers,
            "volumes": world.volumes.iter().map(|v| v.json()).collect::<Vec<_>>(),
            "local_volumes": world.local_volumes,
            "snapshots": world.snapshots.iter().map(|s| s.json(&world)).collect::<Vec<_>>(),
            "images": world.images.iter().filter(|i| i.marketplace.is_none())
                .map(|i| i.json(organization)).collect::<Vec<_>>(),
            "marketplace": world.images.iter().filter_map(|i| i.local_json()).collect::<Vec<_>>(),
            "applications": world.applications.iter().map(|a| a.json(&world)).collect::<Vec<_>>(),
            "policies": policies,
            "api_keys": keys,
            "faults": world.faults,
            "metadata_server_id": world.default_metadata_server_id(),
            "metadata_addresses": world.metadata_addresses,
            "pending_transitions": double.pending.load(Ordering::SeqCst),
        }),
    ))
}
