//! `POST /servers/{id}/action`: each action allowed only from the state
//! the real API allows it in, answered 202 with a pending task while the
//! change completes after the transition delay.

use std::time::SystemTime;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use crate::scwdouble::auth::{Perm, Principal};
use crate::scwdouble::body::Body;
use crate::scwdouble::errors::{ApiResult, ScwError, reply};
use crate::scwdouble::ids::{instance_date, uuid_v4};
use crate::scwdouble::lifecycle;
use crate::scwdouble::query;
use crate::scwdouble::state::{RUNNING, STARTING, STOPPED, STOPPED_IN_PLACE, STOPPING, Shared};

pub async fn action(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let body = Body::parse(&bytes, &["action", "name", "volumes"])?;
    let action = body.str("action")?;
    let generation = {
        let mut world = double.world();
        let project = world
            .server(zone, &id)
            .ok_or_else(|| ScwError::not_found("instance_server", &id))?
            .project
            .clone();
        world.require(&principal, Perm::InstanceWrite, Some(&project))?;
        let server = world.server_mut(zone, &id).expect("found above");
        let (from, to): (&[&str], &'static str) = match action.as_str() {
            "poweron" => (&[STOPPED, STOPPED_IN_PLACE], STARTING),
            // A server stopped in place may also be powered off or
            // terminated (its allowed_actions, as recorded).
            "poweroff" | "terminate" => (&[RUNNING, STOPPED_IN_PLACE], STOPPING),
            "stop_in_place" => (&[RUNNING], STOPPING),
            "reboot" => (&[RUNNING], RUNNING),
            "backup" | "enable_routed_ip" => {
                return Err(ScwError::argument(
                    "action",
                    "constraint",
                    format!("{action:?} is not modelled by the double"),
                ));
            }
            _ => {
                return Err(ScwError::argument(
                    "action",
                    "constraint",
                    format!(
                        "{action:?} is not one of poweron, poweroff, reboot, terminate, stop_in_place, backup"
                    ),
                ));
            }
        };
        if !from.contains(&server.state) {
            let wanted = if from.contains(&RUNNING) {
                "running"
            } else {
                "stopped"
            };
            return Err(ScwError::invalid_request(format!(
                "server should be {wanted} to {action} (it is {})",
                server.state
            )));
        }
        server.state = to;
        server.state_detail = match action.as_str() {
            "poweron" => "provisioning node".into(),
            "reboot" => "rebooting".into(),
            _ => "stopping".into(),
        };
        server.generation += 1;
        server.modified = SystemTime::now();
        server.generation
    };
    match action.as_str() {
        "poweron" => lifecycle::poweron(&double, zone, id.clone(), generation),
        "poweroff" => lifecycle::poweroff(&double, zone, id.clone(), generation, false),
        "stop_in_place" => lifecycle::poweroff(&double, zone, id.clone(), generation, true),
        "reboot" => lifecycle::reboot(&double, zone, id.clone(), generation),
        _ => lifecycle::terminate(&double, zone, id.clone(), generation),
    }
    Ok(reply(
        StatusCode::ACCEPTED,
        json!({"task": {
            "id": uuid_v4(),
            "description": format!("server_{action}"),
            "status": "pending",
            "progress": 0,
            "href_from": format!("/servers/{id}/action"),
            "href_result": format!("/servers/{id}"),
            "started_at": instance_date(SystemTime::now()),
            "terminated_at": null,
            "zone": zone,
        }}),
    ))
}
