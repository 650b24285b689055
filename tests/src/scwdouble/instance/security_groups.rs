//! Security groups, zonal. Shapes from recorded real traffic: scaleway-cli
//! `internal/namespaces/instance/v1/testdata/test-security-group-get-get.cassette.yaml`
//! and terraform-provider-scaleway
//! `internal/services/instance/testdata/security-group-tags.cassette.yaml`:
//! create answers 201 `{"security_group": {...}}` with `servers: []`,
//! `enable_default_security: true` unless asked otherwise (the group then
//! lists six non-editable outbound SMTP drops as its rules), delete 204.
//! A server created without a group is put in the project's default group
//! (`project_default: true`, inbound accept), made on first use. Deleting a
//! group a server is in is refused with the message scaleway-cli's
//! `custom_security_group.go` matches ("group is in use. you cannot delete
//! it."); its status is not recorded, 400 `invalid_request_error` is assumed.

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
use crate::scwdouble::ids::{instance_date, uuid_v4};
use crate::scwdouble::query::{self, Params, has_tags, tags};
use crate::scwdouble::state::{Shared, World};

pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub zone: &'static str,
    pub project: String,
    pub tags: Vec<String>,
    pub stateful: bool,
    pub inbound_default_policy: String,
    pub outbound_default_policy: String,
    pub project_default: bool,
    pub enable_default_security: bool,
    pub created: SystemTime,
}

const FIELDS: &[&str] = &[
    "name",
    "description",
    "organization",
    "project",
    "tags",
    "organization_default",
    "project_default",
    "stateful",
    "inbound_default_policy",
    "outbound_default_policy",
    "enable_default_security",
];

/// The SMTP ports the platform blocks outbound on default-secured groups.
const SMTP_PORTS: [u16; 3] = [25, 465, 587];

impl SecurityGroup {
    pub fn json(&self, world: &World, organization: &str) -> Value {
        let servers: Vec<Value> = world
            .servers
            .iter()
            .filter(|s| s.zone == self.zone && s.security_group == self.id)
            .map(|s| json!({"id": s.id, "name": s.name}))
            .collect();
        json!({
            "id": self.id,
            "creation_date": instance_date(self.created),
            "modification_date": instance_date(self.created),
            "name": self.name,
            "description": null,
            "organization": organization,
            "project": self.project,
            "servers": servers,
            "stateful": self.stateful,
            "inbound_default_policy": self.inbound_default_policy,
            "outbound_default_policy": self.outbound_default_policy,
            "organization_default": false,
            "project_default": self.project_default,
            "enable_default_security": self.enable_default_security,
            "state": "available",
            "tags": self.tags,
            "zone": self.zone,
        })
    }

    fn rules_json(&self) -> Vec<Value> {
        if !self.enable_default_security {
            return Vec::new();
        }
        ["0.0.0.0/0", "::/0"]
            .iter()
            .flat_map(|range| SMTP_PORTS.iter().map(move |port| (range, port)))
            .enumerate()
            .map(|(n, (range, port))| {
                json!({
                    "id": format!("11111111-2222-4333-8444-{:012}", n + 1),
                    "protocol": "TCP", "direction": "outbound", "ip_range": range,
                    "dest_ip_range": null, "dest_port_from": port, "dest_port_to": null,
                    "position": n + 1, "editable": false, "action": "drop", "zone": self.zone,
                })
            })
            .collect()
    }
}

/// The project's default group in `zone`, made on first use as the real
/// API does for a project's first server.
pub fn project_default(world: &mut World, zone: &'static str, project: &str) -> String {
    if let Some(g) = world
        .security_groups
        .iter()
        .find(|g| g.zone == zone && g.project == project && g.project_default)
    {
        return g.id.clone();
    }
    let group = SecurityGroup {
        id: uuid_v4(),
        name: "Default security group".into(),
        zone,
        project: project.into(),
        tags: Vec::new(),
        stateful: true,
        inbound_default_policy: "accept".into(),
        outbound_default_policy: "accept".into(),
        project_default: true,
        enable_default_security: true,
        created: SystemTime::now(),
    };
    let id = group.id.clone();
    world.security_groups.push(group);
    id
}

fn policy(body: &Body, field: &str) -> Result<String, ScwError> {
    let value = body.opt_str(field)?.unwrap_or_else(|| "accept".into());
    if value != "accept" && value != "drop" {
        return Err(ScwError::argument(
            field,
            "constraint",
            format!("{value:?} is not one of accept, drop"),
        ));
    }
    Ok(value)
}

pub async fn create(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(zone): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let body = Body::parse(&bytes, FIELDS)?;
    let name = body.opt_str("name")?.unwrap_or_default();
    let project = body.uuid("project")?;
    let group = SecurityGroup {
        id: uuid_v4(),
        name,
        zone,
        project: project.clone(),
        tags: body.strings("tags")?,
        stateful: body
            .opt_bool("stateful")?
            .ok_or_else(|| ScwError::missing_field("stateful"))?,
        inbound_default_policy: policy(&body, "inbound_default_policy")?,
        outbound_default_policy: policy(&body, "outbound_default_policy")?,
        project_default: body.opt_bool("project_default")?.unwrap_or(false),
        enable_default_security: body.opt_bool("enable_default_security")?.unwrap_or(true),
        created: SystemTime::now(),
    };
    let mut world = double.world();
    world.require(&principal, Perm::InstanceWrite, Some(&project))?;
    let answer = json!({ "security_group": group.json(&world, &double.config.organization_id) });
    world.security_groups.push(group);
    Ok(reply(StatusCode::CREATED, answer))
}

pub async fn show(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let world = double.world();
    let group = find(&world, zone, &id)?;
    world.require(&principal, Perm::InstanceRead, Some(&group.project))?;
    Ok(reply(
        StatusCode::OK,
        json!({ "security_group": group.json(&world, &double.config.organization_id) }),
    ))
}

pub async fn rules(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let params = Params::parse(raw.as_deref());
    let (page, per_page) = query::pagination(&params, "per_page")?;
    let world = double.world();
    let group = find(&world, zone, &id)?;
    world.require(&principal, Perm::InstanceRead, Some(&group.project))?;
    let (items, total) = crate::scwdouble::render::page(group.rules_json(), page, per_page);
    list_reply("rules", items, total)
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
        .security_groups
        .iter()
        .filter(|g| g.zone == zone)
        .filter(|g| world.allows(&principal, Perm::InstanceRead, Some(&g.project)))
        .filter(|g| query::matches(&params, "project", &g.project))
        .filter(|g| query::contains(&params, "name", &g.name))
        .filter(|g| has_tags(&g.tags, &wanted))
        .map(|g| g.json(&world, &double.config.organization_id))
        .collect();
    let (items, total) = crate::scwdouble::render::page(found, page, per_page);
    list_reply("security_groups", items, total)
}

pub async fn delete(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path((zone, id)): Path<(String, String)>,
) -> ApiResult {
    let zone = query::zone(&zone)?;
    let mut world = double.world();
    let group = find(&world, zone, &id)?;
    world.require(&principal, Perm::InstanceWrite, Some(&group.project))?;
    if world
        .servers
        .iter()
        .any(|s| s.zone == zone && s.security_group == id)
    {
        return Err(ScwError::invalid_request(
            "group is in use. you cannot delete it.",
        ));
    }
    world
        .security_groups
        .retain(|g| !(g.zone == zone && g.id == id));
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn find<'w>(world: &'w World, zone: &str, id: &str) -> Result<&'w SecurityGroup, ScwError> {
    world
        .security_groups
        .iter()
        .find(|g| g.zone == zone && g.id == id)
        .ok_or_else(|| ScwError::not_found("instance_security_group", id))
}
