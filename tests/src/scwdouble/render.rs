//! Resources as each API shows them: Instance objects with
//! `creation_date`/`modification_date` (`+00:00`), Block and IAM objects
//! with `created_at`/`updated_at` (`Z`).

use serde_json::{Map, Value, json};

use super::ids::{instance_date, rfc3339};
use super::state::{
    ApiKey, Application, Image, MARKETPLACE_PROJECT, Policy, PublicIp, RUNNING, Rule, STOPPED,
    STOPPED_IN_PLACE, Server, Snapshot, Volume, World,
};

fn ip_json(ip: &PublicIp) -> Value {
    json!({
        "id": ip.id,
        "address": ip.address,
        "dynamic": true,
        "family": "inet",
        "provisioning_mode": "dhcp",
        "state": "attached",
        "tags": [],
    })
}

/// As recorded (terraform-provider-scaleway b2d45ed, internal/services/
/// instance/testdata/action-server-on-off.cassette.yaml).
fn allowed_actions(state: &str) -> Vec<&'static str> {
    match state {
        STOPPED => vec!["poweron", "backup"],
        STOPPED_IN_PLACE => vec!["poweron", "poweroff", "terminate", "reboot", "backup"],
        RUNNING => vec!["poweroff", "terminate", "reboot", "stop_in_place", "backup"],
        // starting, stopping
        _ => vec!["stop_in_place", "backup"],
    }
}

impl Server {
    /// The root volume as `server.volumes["0"]` shows it.
    pub fn root_json(&self, organization: &str) -> Value {
        let root = &self.root;
        // An sbs_volume comes without its size (recorded: terraform-provider-
        // scaleway b2d45ed4, server-root-volume-from-image-block cassette).
        let mut volume = json!({
            "id": root.id,
            "volume_type": root.volume_type,
            "state": "available",
            "boot": false,
            "zone": self.zone,
        });
        if root.volume_type == "l_ssd" {
            let extra = json!({
                "size": root.size,
                "name": format!("{}-root", self.name),
                "export_uri": null,
                "organization": organization,
                "project": self.project,
                "server": {"id": self.id, "name": self.name},
                "creation_date": instance_date(root.created),
                "modification_date": instance_date(root.created),
                "tags": [],
            });
            merge(&mut volume, extra);
        }
        volume
    }

    pub fn json(&self, world: &World, organization: &str) -> Value {
        let image = world
            .image(self.zone, &self.image_id)
            .map(|i| i.json(organization));
        let ip = self.public_ip.as_ref().map(ip_json);
        let group_name = world
            .security_groups
            .iter()
            .find(|g| g.id == self.security_group)
            .map(|g| g.name.clone());
        let located = !matches!(self.state, STOPPED);
        json!({
            "id": self.id,
            "name": self.name,
            "hostname": self.name,
            "organization": organization,
            "project": self.project,
            "commercial_type": self.commercial_type,
            "tags": self.tags,
            "image": image,
            "arch": "x86_64",
            "boot_type": self.boot_type,
            "state": self.state,
            "state_detail": self.state_detail,
            "allowed_actions": allowed_actions(self.state),
            "dynamic_ip_required": self.dynamic_ip_required,
            "routed_ip_enabled": true,
            "enable_ipv6": false,
            "public_ip": ip,
            "public_ips": ip.iter().collect::<Vec<_>>(),
            "private_ip": null,
            "ipv6": null,
            "dns": format!("{}.pub.instances.scw.cloud", self.id),
            "extra_networks": [],
            "bootscript": null,
            "mac_address": format!("de:00:00:{}:{}:{}", &self.id[0..2], &self.id[2..4], &self.id[4..6]),
            "security_group": {"id": self.security_group, "name": group_name},
            "placement_group": null,
            "private_nics": [],
            "maintenances": [],
            "filesystems": [],
            "protected": false,
            "end_of_service": false,
            "volumes": {"0": self.root_json(organization)},
            "location": located.then(|| json!({
                "zone_id": self.zone, "platform_id": "14", "cluster_id": "1",
                "hypervisor_id": "1", "node_id": "1",
            })),
            "zone": self.zone,
            "creation_date": instance_date(self.created),
            "modification_date": instance_date(self.modified),
        })
    }

    /// The metadata service's `/conf?format=json`.
    pub fn conf_json(&self, organization: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "hostname": self.name,
            "commercial_type": self.commercial_type,
            "organization": organization,
            "project": self.project,
            "tags": self.tags,
            "state_detail": self.state_detail,
            "zone": self.zone,
            "location": {"zone_id": self.zone, "platform_id": "14", "cluster_id": "1",
                         "hypervisor_id": "1", "node_id": "1"},
            "public_ip": self.public_ip.as_ref().map(ip_json),
            "public_ips_v4": self.public_ip.iter().map(ip_json).collect::<Vec<_>>(),
            "private_ip": null,
            "ipv6": null,
            "extra_networks": [],
            "timezone": "UTC",
            "bootscript": null,
            "volumes": {"0": {
                "id": self.root.id,
                "name": format!("{}-root", self.name),
                "volume_type": self.root.volume_type,
                "size": self.root.size,
                "export_uri": null,
            }},
            "ssh_public_keys": [],
        })
    }
}

impl Image {
    pub fn json(&self, organization: &str) -> Value {
        let organization = if self.project == MARKETPLACE_PROJECT {
            MARKETPLACE_PROJECT
        } else {
            organization
        };
        json!({
            "id": self.id,
            "name": self.name,
            "arch": self.arch,
            "organization": organization,
            "project": self.project,
            "public": self.public,
            "state": self.state,
            "tags": self.tags,
            "zone": self.zone,
            "from_server": "",
            "default_bootscript": null,
            "extra_volumes": {},
            "root_volume": {
                "id": self.root_snapshot,
                "name": self.name,
                "size": self.size,
                "volume_type": "sbs_snapshot",
            },
            "creation_date": instance_date(self.created),
            "modification_date": instance_date(self.modified),
        })
    }

    /// The marketplace `local_images[]` entry, for seeded images.
    pub fn local_json(&self) -> Option<Value> {
        let local = self.marketplace.as_ref()?;
        Some(json!({
            "id": self.id,
            "compatible_commercial_types": local.compatible,
            "arch": self.arch,
            "zone": self.zone,
            "label": local.label,
            "type": local.kind,
        }))
    }
}

impl Volume {
    pub fn json(&self) -> Value {
        let references: Vec<Value> = self
            .server
            .iter()
            .map(|server| {
                json!({
                    "id": format!("{}-ref", &self.id[..8]),
                    "product_resource_type": "instance_server",
                    "product_resource_id": server,
                    "created_at": rfc3339(self.updated),
                    "type": "exclusive",
                    "status": "attached",
                })
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "type": "sbs_5k",
            "size": self.size,
            "project_id": self.project,
            "status": self.status,
            "tags": self.tags,
            "references": references,
            "parent_snapshot_id": self.parent_snapshot_id,
            "specs": {"perf_iops": 5000, "class": "sbs"},
            "last_detached_at": self.last_detached.map(rfc3339),
            // As recorded: a kms_key_id, no region (terraform-provider-
            // scaleway b2d45ed4, server-root-volume-from-image-block).
            "kms_key_id": null,
            "zone": self.zone,
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
        })
    }
}

impl Snapshot {
    pub fn json(&self, world: &World) -> Value {
        let references: Vec<Value> = world
            .images_of_snapshot(&self.id)
            .iter()
            .map(|image| {
                json!({
                    "id": format!("{}-ref", &image.id[..8]),
                    "product_resource_type": "instance_image",
                    "product_resource_id": image.id,
                    "created_at": rfc3339(image.created),
                    "type": "link",
                    "status": "attached",
                })
            })
            .collect();
        let volume_status = world
            .volumes
            .iter()
            .find(|v| v.id == self.volume_id)
            .map(|v| v.status);
        json!({
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "project_id": self.project,
            "status": self.status,
            "tags": self.tags,
            "references": references,
            "parent_volume": {"id": self.volume_id, "name": self.volume_name,
                              "type": "sbs_5k", "status": volume_status},
            "class": "sbs",
            "public": false,
            "zone": self.zone,
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
        })
    }
}

impl Application {
    pub fn json(&self, world: &World) -> Value {
        let keys = world
            .api_keys
            .iter()
            .filter(|k| k.application_id == self.id)
            .count();
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "organization_id": self.organization_id,
            "editable": true,
            "deletable": true,
            "managed": false,
            "nb_api_keys": keys,
            "tags": self.tags,
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
        })
    }
}

impl Rule {
    pub fn json(&self, organization: &str) -> Value {
        let (scope, org) = match &self.project_ids {
            Some(_) => ("projects", None),
            None => ("organization", Some(organization)),
        };
        json!({
            "id": self.id,
            "permission_set_names": self.permission_set_names,
            "permission_sets_scope_type": scope,
            "project_ids": self.project_ids,
            "organization_id": org,
        })
    }
}

impl Policy {
    pub fn json(&self) -> Value {
        let sets: usize = self
            .rules
            .iter()
            .map(|r| r.permission_set_names.len())
            .sum();
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "organization_id": self.organization_id,
            "application_id": self.application_id,
            "editable": true,
            "deletable": true,
            "managed": false,
            "nb_rules": self.rules.len(),
            "nb_scopes": self.rules.len(),
            "nb_permission_sets": sets,
            "tags": self.tags,
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
        })
    }
}

impl ApiKey {
    /// The key without its secret: every answer but its creation's.
    pub fn json(&self) -> Value {
        json!({
            "access_key": self.access_key,
            // null but present, as recorded (api-key-expires cassette).
            "secret_key": null,
            "application_id": self.application_id,
            "description": self.description,
            "default_project_id": self.default_project_id,
            "editable": true,
            "deletable": true,
            "managed": false,
            "creation_ip": "127.0.0.1",
            "expires_at": self.expires_at.map(rfc3339),
            "created_at": rfc3339(self.created),
            "updated_at": rfc3339(self.updated),
        })
    }
}

/// Adds `extra`'s fields to `base` (both objects).
pub fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(base), Value::Object(extra)) = (base, extra) {
        base.extend(extra);
    }
}

/// A page of `items` (1-based page) and the total before paging.
pub fn page<T>(items: Vec<T>, page: usize, per_page: usize) -> (Vec<T>, usize) {
    let total = items.len();
    let items = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    (items, total)
}

/// An object with one key.
pub fn wrap(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.into(), value);
    Value::Object(map)
}
