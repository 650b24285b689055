//! The Scaleway double through HTTP, as the runner's client meets it: a
//! real process on loopback, strict about bodies, states and permissions.

use std::time::{Duration, SystemTime};

use plex_burst_tests::scwdouble::harness::{
    Reply, ScwDouble, ScwOptions, http, http_from, http_privileged, wait_for,
};
use serde_json::{Value, json};

const ZONE: &str = "fr-par-1";
/// How long an awaited state may take: a hang guard, not a timing test.
const WAIT: Duration = Duration::from_secs(120);
const GB: u64 = 1_000_000_000;

fn start() -> ScwDouble {
    ScwDouble::start(ScwOptions::default())
}

fn instance(path: &str) -> String {
    format!("/instance/v1/zones/{ZONE}{path}")
}

fn block(path: &str) -> String {
    format!("/block/v1/zones/{ZONE}{path}")
}

fn expect(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{}", reply.body);
    if reply.body.is_empty() {
        Value::Null
    } else {
        reply.json()
    }
}

/// The marketplace's Debian Bookworm image for `zone`.
fn debian(double: &ScwDouble, zone: &str) -> String {
    let reply = double.api(
        "GET",
        &format!(
            "/marketplace/v2/local-images?image_label=debian_bookworm&zone={zone}&type=instance_sbs"
        ),
        None,
    );
    let body = expect(&reply, 200);
    assert_eq!(body["total_count"], 1, "{body}");
    body["local_images"][0]["id"].as_str().unwrap().to_string()
}

fn server_body(double: &ScwDouble, name: &str, tags: &[&str]) -> Value {
    json!({
        "name": name,
        "commercial_type": "POP2-HC-16C-32G",
        "image": debian(double, ZONE),
        "project": double.project_id(),
        "tags": tags,
        "dynamic_ip_required": true,
        "boot_type": "local",
        "volumes": {"0": {"size": 20 * GB, "volume_type": "sbs_volume"}},
    })
}

fn create_server(double: &ScwDouble, name: &str, tags: &[&str]) -> Value {
    let reply = double.api(
        "POST",
        &instance("/servers"),
        Some(&server_body(double, name, tags)),
    );
    expect(&reply, 201)["server"].clone()
}

fn server(double: &ScwDouble, id: &str) -> Value {
    expect(
        &double.api("GET", &instance(&format!("/servers/{id}")), None),
        200,
    )["server"]
        .clone()
}

fn action(double: &ScwDouble, id: &str, action: &str) -> Reply {
    double.api(
        "POST",
        &instance(&format!("/servers/{id}/action")),
        Some(&json!({ "action": action })),
    )
}

fn wait_state(double: &ScwDouble, id: &str, state: &str) -> Value {
    wait_for(&format!("server {id} {state}"), WAIT, || {
        let server = server(double, id);
        (server["state"] == state).then_some(server)
    })
}

fn running_server(double: &ScwDouble, name: &str) -> Value {
    let created = create_server(double, name, &["plex-burst"]);
    let id = created["id"].as_str().unwrap();
    expect(&action(double, id, "poweron"), 202);
    wait_state(double, id, "running")
}

fn set_user_data(double: &ScwDouble, id: &str, key: &str, text: &str) -> Reply {
    http(
        "PATCH",
        &double.url(&instance(&format!("/servers/{id}/user_data/{key}"))),
        &[
            ("X-Auth-Token", double.secret_key()),
            ("Content-Type", "text/plain"),
        ],
        Some(text.as_bytes()),
    )
    .unwrap()
}

fn rfc3339_in(delta: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + delta).to_string()
}

/// An application with one policy (`sets` on `projects`, or on the
/// organization when `None`) and a key; returns (access key, secret).
fn make_key(
    double: &ScwDouble,
    sets: &[&str],
    projects: Option<&[&str]>,
    expires_in: Duration,
) -> (String, String) {
    let app = expect(
        &double.api(
            "POST",
            "/iam/v1alpha1/applications",
            Some(
                &json!({"name": "plex-burst-run", "organization_id": double.organization_id(),
                         "description": "test", "tags": ["plex-burst"]}),
            ),
        ),
        200,
    );
    let rule = match projects {
        Some(projects) => json!({"permission_set_names": sets, "project_ids": projects}),
        None => json!({"permission_set_names": sets, "organization_id": double.organization_id()}),
    };
    expect(
        &double.api(
            "POST",
            "/iam/v1alpha1/policies",
            Some(
                &json!({"name": "plex-burst-run", "organization_id": double.organization_id(),
                         "application_id": app["id"], "rules": [rule]}),
            ),
        ),
        200,
    );
    let key = expect(
        &double.api(
            "POST",
            "/iam/v1alpha1/api-keys",
            Some(
                &json!({"application_id": app["id"], "expires_at": rfc3339_in(expires_in),
                         "default_project_id": double.project_id(), "description": "run"}),
            ),
        ),
        200,
    );
    (
        key["access_key"].as_str().unwrap().to_string(),
        key["secret_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn unauthenticated_calls_get_401_and_unpermitted_ones_403() {
    let double = start();
    let servers = instance("/servers");
    let none = http("GET", &double.url(&servers), &[], None).unwrap();
    assert_eq!(expect(&none, 401)["type"], "denied_authentication");
    let unknown = double.api_as(
        &plex_burst_tests::scwdouble::ids::uuid_v4(),
        "GET",
        &servers,
        None,
    );
    assert_eq!(expect(&unknown, 401)["type"], "denied_authentication");

    let project = double.project_id().to_string();
    let (_, reader) = make_key(
        &double,
        &["InstancesReadOnly"],
        Some(&[&project]),
        Duration::from_secs(3600),
    );
    expect(&double.api_as(&reader, "GET", &servers, None), 200);
    let body = server_body(&double, "nope", &[]);
    let denied = expect(&double.api_as(&reader, "POST", &servers, Some(&body)), 403);
    assert_eq!(denied["type"], "permissions_denied");
    assert!(
        denied["details"].as_array().is_some_and(|d| !d.is_empty()),
        "{denied}"
    );
    // No Block permission at all.
    expect(
        &double.api_as(&reader, "GET", &block("/volumes"), None),
        403,
    );

    // A key for another project sees none of this project's servers.
    let other = plex_burst_tests::scwdouble::ids::uuid_v4();
    let (_, outsider) = make_key(
        &double,
        &["InstancesFullAccess"],
        Some(&[&other]),
        Duration::from_secs(3600),
    );
    let created = create_server(&double, "mine", &[]);
    let id = created["id"].as_str().unwrap();
    expect(
        &double.api_as(&outsider, "GET", &instance(&format!("/servers/{id}")), None),
        403,
    );
    let listed = expect(&double.api_as(&outsider, "GET", &servers, None), 200);
    assert_eq!(listed["servers"], json!([]));
}

#[test]
fn bodies_are_strict_and_errors_name_the_field() {
    let double = start();
    let servers = instance("/servers");
    let argument = |reply: &Reply| -> (String, String) {
        let body = expect(reply, 400);
        assert_eq!(body["type"], "invalid_arguments", "{body}");
        (
            body["details"][0]["argument_name"]
                .as_str()
                .unwrap()
                .to_string(),
            body["details"][0]["reason"].as_str().unwrap().to_string(),
        )
    };

    let mut body = server_body(&double, "s", &[]);
    body["colour"] = json!("blue");
    assert_eq!(
        argument(&double.api("POST", &servers, Some(&body))),
        ("colour".into(), "unknown".into())
    );

    let mut body = server_body(&double, "s", &[]);
    body.as_object_mut().unwrap().remove("commercial_type");
    assert_eq!(
        argument(&double.api("POST", &servers, Some(&body))),
        ("commercial_type".into(), "required".into())
    );

    let mut body = server_body(&double, "s", &[]);
    body["volumes"]["0"]["volume_type"] = json!("l_ssd");
    assert_eq!(
        argument(&double.api("POST", &servers, Some(&body))).0,
        "volumes.0.volume_type"
    );

    let mut body = server_body(&double, "s", &[]);
    body["volumes"]["0"]["iops"] = json!(5000);
    assert_eq!(
        argument(&double.api("POST", &servers, Some(&body))),
        ("volumes.0.iops".into(), "unknown".into())
    );

    let mut body = server_body(&double, "s", &[]);
    body["commercial_type"] = json!("POP9-HUGE");
    assert_eq!(
        argument(&double.api("POST", &servers, Some(&body))).0,
        "commercial_type"
    );

    // A local SSD is fine where the type has one.
    let mut body = server_body(&double, "s", &[]);
    body["commercial_type"] = json!("GP1-S");
    body["volumes"]["0"]["volume_type"] = json!("l_ssd");
    let created = expect(&double.api("POST", &servers, Some(&body)), 201);
    assert_eq!(created["server"]["volumes"]["0"]["volume_type"], "l_ssd");

    let unknown_zone = double.api("GET", "/instance/v1/zones/xx-yyy-9/servers", None);
    assert_eq!(argument(&unknown_zone).0, "zone");

    let snapshot = double.api(
        "POST",
        &block("/snapshots"),
        Some(&json!({"volume_id": created["server"]["id"], "name": "x"})),
    );
    assert_eq!(
        argument(&snapshot),
        ("project_id".into(), "required".into())
    );

    // User data is text/plain only.
    let id = created["server"]["id"].as_str().unwrap();
    let json_user_data = double.api(
        "PATCH",
        &instance(&format!("/servers/{id}/user_data/cloud-init")),
        Some(&json!("x")),
    );
    expect(&json_user_data, 400);
}

#[test]
fn a_server_lives_stopped_running_stopped_then_is_deleted() {
    let double = start();
    let created = create_server(&double, "builder", &["plex-burst", "run-1"]);
    assert_eq!(created["state"], "stopped");
    assert_eq!(created["public_ips"], json!([]));
    let id = created["id"].as_str().unwrap().to_string();
    let root = created["volumes"]["0"].clone();
    assert_eq!(root["volume_type"], "sbs_volume");
    // Without its size, as the real API shows an sbs_volume (scw_conformance).
    assert_eq!(root.get("size"), None);
    let volume_path = block(&format!("/volumes/{}", root["id"].as_str().unwrap()));
    let volume = expect(&double.api("GET", &volume_path, None), 200);
    assert_eq!(volume["status"], "in_use");
    // The server's tags are not copied onto its root volume.
    assert_eq!(volume["tags"], json!([]));

    expect(
        &set_user_data(&double, &id, "cloud-init", "#cloud-config\n"),
        204,
    );
    let keys = expect(
        &double.api("GET", &instance(&format!("/servers/{id}/user_data")), None),
        200,
    );
    assert_eq!(keys, json!({"user_data": ["cloud-init"]}));
    let text = double.api(
        "GET",
        &instance(&format!("/servers/{id}/user_data/cloud-init")),
        None,
    );
    assert_eq!((text.status, text.body.as_str()), (200, "#cloud-config\n"));
    // A missing key: a bare 404, empty text/plain body.
    let missing = double.api(
        "GET",
        &instance(&format!("/servers/{id}/user_data/other")),
        None,
    );
    assert_eq!((missing.status, missing.body.as_str()), (404, ""));
    assert!(
        missing
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        missing.header("Content-Type")
    );

    let task = expect(&action(&double, &id, "poweron"), 202);
    assert_eq!(task["task"]["status"], "pending");
    let starting = server(&double, &id);
    assert_eq!(starting["state"], "starting");
    assert_eq!(
        starting["allowed_actions"],
        json!(["stop_in_place", "backup"])
    );
    expect(&action(&double, &id, "poweroff"), 400);
    let running = wait_state(&double, &id, "running");
    assert_eq!(running["public_ips"].as_array().map(Vec::len), Some(1));
    let again = expect(&action(&double, &id, "poweron"), 400);
    assert!(
        again["message"]
            .as_str()
            .unwrap()
            .contains("should be stopped"),
        "{again}"
    );
    let refused = expect(
        &double.api("DELETE", &instance(&format!("/servers/{id}")), None),
        400,
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("should be stopped"),
        "{refused}"
    );

    expect(&action(&double, &id, "poweroff"), 202);
    let stopping = server(&double, &id);
    assert_eq!(stopping["state"], "stopping");
    assert_eq!(
        stopping["allowed_actions"],
        json!(["stop_in_place", "backup"])
    );
    let stopped = wait_state(&double, &id, "stopped");
    assert_eq!(stopped["public_ips"], json!([]));

    let state = double.state();
    let recorded = &state["servers"][0];
    assert_eq!(recorded["poweron_count"], 1);
    assert_eq!(
        recorded["user_data"]["cloud-init"]["set_before_first_poweron"],
        true
    );
    assert_eq!(
        recorded["user_data"]["cloud-init"]["set_in_state"],
        "stopped"
    );

    expect(
        &double.api("DELETE", &instance(&format!("/servers/{id}")), None),
        204,
    );
    let gone = expect(
        &double.api("GET", &instance(&format!("/servers/{id}")), None),
        404,
    );
    assert_eq!(
        (gone["type"].as_str(), gone["resource"].as_str()),
        (Some("not_found"), Some("instance_server"))
    );
    // DELETE deletes no volume.
    assert_eq!(
        expect(&double.api("GET", &volume_path, None), 200)["status"],
        "available"
    );
}

#[test]
fn terminate_needs_running_and_leaves_the_sbs_root_detached() {
    let double = start();
    let created = create_server(&double, "t", &[]);
    let id = created["id"].as_str().unwrap();
    let volume_id = created["volumes"]["0"]["id"].as_str().unwrap();
    let message = expect(&action(&double, id, "terminate"), 400)["message"].clone();
    assert!(
        message.as_str().unwrap().contains("should be running"),
        "{message}"
    );
    expect(&action(&double, id, "poweron"), 202);
    wait_state(&double, id, "running");
    // A volume in use cannot be deleted.
    let in_use = expect(
        &double.api("DELETE", &block(&format!("/volumes/{volume_id}")), None),
        412,
    );
    assert_eq!(in_use["precondition"], "resource_still_in_use");

    expect(&action(&double, id, "terminate"), 202);
    wait_for("the server to be gone", WAIT, || {
        (double
            .api("GET", &instance(&format!("/servers/{id}")), None)
            .status
            == 404)
            .then_some(())
    });
    let volume = expect(
        &double.api("GET", &block(&format!("/volumes/{volume_id}")), None),
        200,
    );
    assert_eq!(volume["status"], "available");
    assert_eq!(volume["references"], json!([]));

    expect(
        &double.api("DELETE", &block(&format!("/volumes/{volume_id}")), None),
        204,
    );
    let deleting = double.api("GET", &block(&format!("/volumes/{volume_id}")), None);
    assert_eq!(expect(&deleting, 200)["status"], "deleting");
    wait_for("the volume to be gone", WAIT, || {
        (double
            .api("GET", &block(&format!("/volumes/{volume_id}")), None)
            .status
            == 404)
            .then_some(())
    });
}

#[test]
fn servers_list_by_all_tags_with_a_total() {
    let double = start();
    create_server(&double, "a", &["plex-burst", "run-1"]);
    create_server(&double, "b", &["plex-burst", "run-2"]);
    create_server(&double, "c", &["run-1"]);
    let reply = double.api("GET", &instance("/servers?tags=plex-burst,run-1"), None);
    let names: Vec<Value> = expect(&reply, 200)["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("a")]);
    assert_eq!(reply.header("X-Total-Count"), Some("1"));
    let reply = double.api(
        "GET",
        &instance("/servers?tags=run-1&per_page=1&page=2"),
        None,
    );
    assert_eq!(expect(&reply, 200)["servers"][0]["name"], "c");
    assert_eq!(reply.header("X-Total-Count"), Some("2"));
    // Root volumes carry none of their server's tags.
    let volumes = expect(&double.api("GET", &block("/volumes?tags=run-2"), None), 200);
    assert_eq!(volumes["total_count"], 0);
}

#[test]
fn a_project_past_its_server_quota_gets_403() {
    let double = ScwDouble::start(ScwOptions {
        quota_servers: Some(1),
        ..ScwOptions::default()
    });
    create_server(&double, "one", &[]);
    let body = server_body(&double, "two", &[]);
    let refused = expect(&double.api("POST", &instance("/servers"), Some(&body)), 403);
    assert_eq!(refused["type"], "quotas_exceeded");
    assert_eq!(refused["details"][0]["quota"], 1);
    assert_eq!(refused["details"][0]["current"], 1);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("Quotas exceeded")
    );
}

#[test]
fn block_volumes_past_the_size_quota_get_403() {
    let double = ScwDouble::start(ScwOptions {
        quota_volumes_gb: Some(30),
        ..ScwOptions::default()
    });
    create_server(&double, "one", &[]);
    let body = server_body(&double, "two", &[]);
    let refused = expect(&double.api("POST", &instance("/servers"), Some(&body)), 403);
    assert_eq!(refused["type"], "quotas_exceeded");
    assert_eq!(refused["details"][0]["quota"], 30);
    assert_eq!(refused["details"][0]["current"], 20);
}

#[test]
fn injected_failures_answer_then_stop() {
    let double = start();
    double.fail("POST", &instance("/servers"), 503, 2);
    double.fail("*", "/block/", 429, 1);
    let body = server_body(&double, "flaky", &[]);
    for _ in 0..2 {
        let reply = double.api("POST", &instance("/servers"), Some(&body));
        assert!(expect(&reply, 503)["message"].is_string());
    }
    expect(&double.api("POST", &instance("/servers"), Some(&body)), 201);
    let limited = double.api("GET", &block("/volumes"), None);
    assert_eq!(limited.status, 429);
    // The gateway's 429 as recorded: empty, no Retry-After (scw_conformance).
    assert_eq!(limited.body, "");
    assert_eq!(limited.header("X-Envoy-Ratelimited"), Some("true"));
    assert_eq!(limited.header("Retry-After"), None);
    expect(&double.api("GET", &block("/volumes"), None), 200);

    let calls = double.calls();
    let statuses: Vec<(u64, bool)> = calls
        .iter()
        .filter(|c| c["method"] == "POST")
        .map(|c| {
            (
                c["status"].as_u64().unwrap(),
                c["injected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, vec![(503, true), (503, true), (201, false)]);
    assert_eq!(calls.last().unwrap()["key"], "admin");
    assert_eq!(
        calls.iter().find(|c| c["method"] == "POST").unwrap()["body"]["name"],
        "flaky"
    );
}

#[test]
fn snapshots_and_images_become_available_and_boot_servers() {
    let double = start();
    let created = create_server(&double, "builder", &[]);
    let volume_id = created["volumes"]["0"]["id"].clone();
    let snapshot = expect(
        &double.api(
            "POST",
            &block("/snapshots"),
            Some(&json!({"volume_id": volume_id, "name": "base",
            "project_id": double.project_id(), "tags": ["plex-burst"]})),
        ),
        200,
    );
    assert_eq!(snapshot["status"], "creating");
    assert_eq!(snapshot["size"], 20 * GB);
    let snapshot_id = snapshot["id"].as_str().unwrap().to_string();
    let image_body = json!({"name": "plex-burst-base", "root_volume": snapshot_id, "arch": "x86_64",
                            "project": double.project_id(), "tags": ["plex-burst"], "public": false});
    expect(
        &double.api("POST", &instance("/images"), Some(&image_body)),
        400,
    );
    wait_for("the snapshot", WAIT, || {
        let s = expect(
            &double.api("GET", &block(&format!("/snapshots/{snapshot_id}")), None),
            200,
        );
        (s["status"] == "available").then_some(())
    });
    let listed = expect(
        &double.api("GET", &block("/snapshots?tags=plex-burst"), None),
        200,
    );
    assert_eq!(listed["total_count"], 1);

    let image = expect(
        &double.api("POST", &instance("/images"), Some(&image_body)),
        201,
    )["image"]
        .clone();
    // Available at once; its snapshot is in use.
    assert_eq!(image["state"], "available");
    let image_id = image["id"].as_str().unwrap().to_string();
    let snapshot_path = block(&format!("/snapshots/{snapshot_id}"));
    let status = |double: &ScwDouble| {
        expect(&double.api("GET", &snapshot_path, None), 200)["status"].clone()
    };
    assert_eq!(status(&double), "in_use");
    let found = expect(
        &double.api(
            "GET",
            &instance("/images?name=plex-burst-base&tags=plex-burst"),
            None,
        ),
        200,
    );
    assert_eq!(found["images"].as_array().map(Vec::len), Some(1));
    // The images list takes one tag: a comma list is one tag nothing has.
    let found = expect(
        &double.api("GET", &instance("/images?tags=plex-burst,plex-burst"), None),
        200,
    );
    assert_eq!(found["images"], json!([]));

    let mut body = server_body(&double, "from-image", &[]);
    body["image"] = json!(image_id);
    let booted = expect(&double.api("POST", &instance("/servers"), Some(&body)), 201);
    let root = booted["server"]["volumes"]["0"]["id"].as_str().unwrap();
    let volume = expect(
        &double.api("GET", &block(&format!("/volumes/{root}")), None),
        200,
    );
    assert_eq!(volume["parent_snapshot_id"], json!(snapshot_id));

    let in_use = expect(&double.api("DELETE", &snapshot_path, None), 412);
    assert_eq!(in_use["type"], "precondition_failed");
    expect(
        &double.api("DELETE", &instance(&format!("/images/{image_id}")), None),
        204,
    );
    // Still in use right after its image is deleted, released later.
    assert_eq!(status(&double), "in_use");
    let refused = expect(&double.api("DELETE", &snapshot_path, None), 412);
    assert_eq!(refused["precondition"], "resource_still_in_use");
    wait_for("the snapshot's release", WAIT, || {
        (status(&double) == "available").then_some(())
    });
    expect(&double.api("DELETE", &snapshot_path, None), 204);
    wait_for("the snapshot to go", WAIT, || {
        let gone = double.api("GET", &snapshot_path, None);
        (gone.status == 404).then(|| gone.json())
    });
    let gone = expect(&double.api("GET", &snapshot_path, None), 404);
    assert_eq!(gone["resource"], "snapshot");
}

#[test]
fn marketplace_images_are_per_zone_and_products_have_prices() {
    let double = start();
    let paris = debian(&double, "fr-par-1");
    let amsterdam = debian(&double, "nl-ams-1");
    assert_ne!(paris, amsterdam);
    let all = expect(
        &double.api(
            "GET",
            "/marketplace/v2/local-images?image_label=debian_bookworm&zone=fr-par-1",
            None,
        ),
        200,
    );
    let image = &all["local_images"][0];
    assert_eq!(image["type"], "instance_sbs");
    assert!(
        image["compatible_commercial_types"]
            .as_array()
            .unwrap()
            .contains(&json!("POP2-HC-16C-32G"))
    );

    // Images are zonal.
    let mut body = server_body(&double, "wrong-zone", &[]);
    body["image"] = json!(amsterdam);
    let missing = expect(&double.api("POST", &instance("/servers"), Some(&body)), 404);
    assert_eq!(missing["resource"], "instance_image");

    let products = expect(
        &double.api("GET", &instance("/products/servers"), None),
        200,
    );
    assert_eq!(
        products["servers"]["POP2-HC-16C-32G"]["hourly_price"],
        0.4256
    );
    assert_eq!(products["servers"]["POP2-HC-8C-16G"]["ncpus"], 8);
    assert_eq!(
        products["servers"]["POP2-HC-32C-64G"]["hourly_price"],
        0.8512
    );
    assert_eq!(products["servers"]["GP1-S"]["hourly_price"], 0.2042);
    assert!(
        products["servers"]["DEV1-S"]["volumes_constraint"]["max_size"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn iam_keys_authenticate_within_their_scope_until_deleted() {
    let double = start();
    let project = double.project_id().to_string();
    let (access, secret) = make_key(
        &double,
        &[
            "InstancesFullAccess",
            "BlockStorageFullAccess",
            "ObjectStorageObjectsWrite",
        ],
        Some(&[&project]),
        Duration::from_secs(3600),
    );
    assert!(access.starts_with("SCW") && access.len() == 20, "{access}");

    let body = server_body(&double, "by-key", &[]);
    expect(
        &double.api_as(&secret, "POST", &instance("/servers"), Some(&body)),
        201,
    );
    expect(
        &double.api_as(&secret, "GET", &block("/volumes"), None),
        200,
    );
    let mut elsewhere = body.clone();
    elsewhere["project"] = json!(plex_burst_tests::scwdouble::ids::uuid_v4());
    expect(
        &double.api_as(&secret, "POST", &instance("/servers"), Some(&elsewhere)),
        403,
    );
    let iam = expect(
        &double.api_as(&secret, "GET", "/iam/v1alpha1/api-keys", None),
        403,
    );
    assert_eq!(iam["type"], "permissions_denied");

    // The secret shows only at creation.
    let listed = double.api("GET", "/iam/v1alpha1/api-keys", None);
    assert!(!listed.body.contains(&secret), "{}", listed.body);
    assert!(!double.state().to_string().contains(&secret));
    let shown = expect(
        &double.api("GET", &format!("/iam/v1alpha1/api-keys/{access}"), None),
        200,
    );
    // Present but null, as the real API shows a key read back (scw_conformance).
    assert_eq!(shown.get("secret_key"), Some(&Value::Null), "{shown}");
    assert!(
        !double
            .calls()
            .iter()
            .any(|c| c.to_string().contains(&secret))
    );
    assert!(double.calls().iter().any(|c| c["key"] == json!(access)));

    expect(
        &double.api("DELETE", &format!("/iam/v1alpha1/api-keys/{access}"), None),
        204,
    );
    let denied = expect(
        &double.api_as(&secret, "GET", &instance("/servers"), None),
        401,
    );
    assert_eq!(denied["type"], "denied_authentication");

    // An IAMManager key can manage IAM.
    let (_, manager) = make_key(&double, &["IAMManager"], None, Duration::from_secs(3600));
    expect(
        &double.api_as(&manager, "GET", "/iam/v1alpha1/applications", None),
        200,
    );
    expect(
        &double.api_as(&manager, "GET", &instance("/servers"), None),
        403,
    );
}

#[test]
fn expired_keys_fail_and_past_expiries_are_refused() {
    let double = start();
    let project = double.project_id().to_string();
    let (access, secret) = make_key(
        &double,
        &["InstancesFullAccess"],
        Some(&[&project]),
        Duration::from_secs(2),
    );
    expect(
        &double.api_as(&secret, "GET", &instance("/servers"), None),
        200,
    );
    // Past its expiry by the double's own clock (its state dump says so),
    // not by a sleep of this test's.
    wait_for("the key to expire", WAIT, || {
        let state = double.state();
        let keys = state["api_keys"].as_array().unwrap();
        keys.iter()
            .any(|k| k["access_key"] == access.as_str() && k["expired"] == true)
            .then_some(())
    });
    let expired = expect(
        &double.api_as(&secret, "GET", &instance("/servers"), None),
        401,
    );
    assert_eq!(expired["reason"], "expired");

    let app = &double.state()["applications"][0]["id"];
    let past = json!({"application_id": app, "expires_at": "2020-01-01T00:00:00Z"});
    let refused = expect(
        &double.api("POST", "/iam/v1alpha1/api-keys", Some(&past)),
        400,
    );
    assert_eq!(refused["details"][0]["argument_name"], "expires_at");
}

#[test]
fn the_metadata_service_serves_conf_and_guards_user_data() {
    let double = ScwDouble::start(ScwOptions {
        metadata: true,
        ..ScwOptions::default()
    });
    let metadata = double.metadata_url().unwrap().to_string();
    let created = create_server(&double, "guest", &["plex-burst"]);
    let id = created["id"].as_str().unwrap().to_string();
    expect(
        &set_user_data(&double, &id, "cloud-init", "#cloud-config\nruncmd: []\n"),
        204,
    );
    expect(&action(&double, &id, "poweron"), 202);
    wait_state(&double, &id, "running");

    let conf = expect(
        &http("GET", &format!("{metadata}/conf?format=json"), &[], None).unwrap(),
        200,
    );
    assert_eq!(conf["id"], json!(id));
    assert_eq!(conf["commercial_type"], "POP2-HC-16C-32G");
    assert_eq!(conf["tags"], json!(["plex-burst"]));
    assert_eq!(conf["location"]["zone_id"], ZONE);
    assert!(conf["volumes"]["0"]["id"].is_string());

    let unprivileged = http(
        "GET",
        &format!("{metadata}/user_data/cloud-init"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(unprivileged.status, 403, "{}", unprivileged.body);

    let (keys, port) = http_privileged(
        "GET",
        &format!("{metadata}/user_data?format=json"),
        &[],
        None,
    )
    .unwrap();
    assert!(port < 1024);
    assert_eq!(expect(&keys, 200), json!({"user_data": ["cloud-init"]}));
    let (text, _) = http_privileged(
        "GET",
        &format!("{metadata}/user_data/cloud-init"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(
        (text.status, text.body.as_str()),
        (200, "#cloud-config\nruncmd: []\n")
    );
    let (deleted, _) = http_privileged(
        "DELETE",
        &format!("{metadata}/user_data/cloud-init"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(deleted.status, 204);
    let (missing, _) = http_privileged(
        "GET",
        &format!("{metadata}/user_data/cloud-init"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(missing.status, 404);
    let api_keys = expect(
        &double.api("GET", &instance(&format!("/servers/{id}/user_data")), None),
        200,
    );
    assert_eq!(api_keys, json!({"user_data": []}));

    let booted = http(
        "PATCH",
        &format!("{metadata}/state"),
        &[("Content-Type", "application/json")],
        Some(br#"{"state_detail":"booted"}"#),
    )
    .unwrap();
    assert_eq!(booted.status, 204, "{}", booted.body);
    assert_eq!(server(&double, &id)["state_detail"], "booted");

    let calls = double.calls();
    let metadata_calls: Vec<&Value> = calls
        .iter()
        .filter(|c| c["service"] == "metadata")
        .collect();
    assert!(
        metadata_calls
            .iter()
            .any(|c| c["status"] == 403 && c["source_port"].as_u64().unwrap() >= 1024)
    );
    assert!(metadata_calls.iter().any(|c| c["status"] == 204
        && c["method"] == "DELETE"
        && c["source_port"].as_u64().unwrap() < 1024));

    // Binding picks another server.
    let other = create_server(&double, "other", &[]);
    double.bind_metadata(other["id"].as_str().unwrap());
    let conf = expect(
        &http("GET", &format!("{metadata}/conf?format=json"), &[], None).unwrap(),
        200,
    );
    assert_eq!(conf["id"], other["id"]);
}

/// Once guests have addresses of their own, each caller is answered for
/// its own server only, as on Scaleway: a guest lingering after its server
/// is gone, or a caller with no server, learns nothing.
#[test]
fn the_metadata_service_tells_guests_by_their_address() {
    let double = ScwDouble::start(ScwOptions {
        metadata: true,
        ..ScwOptions::default()
    });
    let metadata = double.metadata_url().unwrap().to_string();
    let url = format!("{metadata}/conf?format=json");
    let first = create_server(&double, "first", &[]);
    let second = create_server(&double, "second", &[]);
    let (first, second) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    double.bind_metadata_address(first, "127.0.0.2");
    double.bind_metadata_address(second, "127.0.0.3");
    let from = |source: [u8; 4]| http_from(source.into(), "GET", &url, &[], None).unwrap();
    assert_eq!(expect(&from([127, 0, 0, 2]), 200)["id"], first);
    assert_eq!(expect(&from([127, 0, 0, 3]), 200)["id"], second);
    let stranger = expect(&from([127, 0, 0, 1]), 404);
    assert_eq!(stranger["message"], "no server has the address 127.0.0.1");
    // Powered on last, the second server is still no answer to a stranger.
    expect(&action(&double, second, "poweron"), 202);
    wait_state(&double, second, "running");
    expect(&from([127, 0, 0, 1]), 404);

    expect(
        &double.api("DELETE", &instance(&format!("/servers/{first}")), None),
        204,
    );
    let gone = expect(&from([127, 0, 0, 2]), 404);
    assert_eq!(gone["resource_id"], first, "{gone}");
    let calls = double.calls();
    let last = calls.last().unwrap();
    assert_eq!(last["source_address"], "127.0.0.2");
    assert_eq!(last["server_id"], first);

    let bad = json!({ "server_id": second, "address": "10.77.0" });
    let refused = double.api("POST", "/__double/metadata/bind", Some(&bad));
    assert_eq!(refused.status, 400, "{}", refused.body);
}

/// Like a hypervisor, the double stops a server's guest (the poweron
/// command's process group) on poweroff, reboot (then boots it again) and
/// terminate.
#[test]
fn poweroff_reboot_and_terminate_stop_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    // Each boot appends to `boots`; `sleep` stands for the running guest.
    let double = ScwDouble::start(ScwOptions {
        on_poweron: Some(format!(
            "echo $$ >> {out}/$SCW_DOUBLE_SERVER_ID.boots; exec sleep 300"
        )),
        ..ScwOptions::default()
    });
    let boots = |id: &str| -> Vec<i32> {
        std::fs::read_to_string(dir.path().join(format!("{id}.boots")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    let id = create_server(&double, "guest", &[])["id"]
        .as_str()
        .unwrap()
        .to_string();

    expect(&action(&double, &id, "poweron"), 202);
    let first = wait_for("the first boot", WAIT, || boots(&id).first().copied());
    assert!(alive(first));
    expect(&action(&double, &id, "reboot"), 202);
    let second = wait_for("the second boot", WAIT, || boots(&id).get(1).copied());
    wait_for("the first guest to stop", WAIT, || {
        (!alive(first)).then_some(())
    });
    assert!(alive(second));
    expect(&action(&double, &id, "poweroff"), 202);
    wait_state(&double, &id, "stopped");
    wait_for("the guest to stop", WAIT, || (!alive(second)).then_some(()));

    expect(&action(&double, &id, "poweron"), 202);
    let third = wait_for("the third boot", WAIT, || boots(&id).get(2).copied());
    expect(&action(&double, &id, "terminate"), 202);
    wait_for("the terminated guest to stop", WAIT, || {
        (!alive(third)).then_some(())
    });
}

#[test]
fn the_poweron_command_runs_with_the_servers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let double = ScwDouble::start(ScwOptions {
        on_poweron: Some(format!(
            "env | grep '^SCW_DOUBLE_' | sort > {out}/$SCW_DOUBLE_SERVER_ID.env.tmp && \
             cp \"$SCW_DOUBLE_USER_DATA\" {out}/$SCW_DOUBLE_SERVER_ID.user-data && \
             mv {out}/$SCW_DOUBLE_SERVER_ID.env.tmp {out}/$SCW_DOUBLE_SERVER_ID.env"
        )),
        ..ScwOptions::default()
    });
    let created = create_server(&double, "guest", &[]);
    let id = created["id"].as_str().unwrap().to_string();
    expect(
        &set_user_data(
            &double,
            &id,
            "cloud-init",
            "#cloud-config\nhostname: guest\n",
        ),
        204,
    );
    expect(&action(&double, &id, "poweron"), 202);
    let env = wait_for("the poweron command", WAIT, || {
        std::fs::read_to_string(dir.path().join(format!("{id}.env"))).ok()
    });
    assert!(
        env.contains(&format!("SCW_DOUBLE_SERVER_ID={id}\n")),
        "{env}"
    );
    assert!(env.contains(&format!("SCW_DOUBLE_ZONE={ZONE}\n")), "{env}");
    assert!(
        env.contains(&format!("SCW_DOUBLE_API_URL={}\n", double.api_url())),
        "{env}"
    );
    assert!(env.contains("SCW_DOUBLE_USER_DATA="), "{env}");
    assert!(
        !env.contains(double.secret_key()),
        "the admin key leaked to the guest: {env}"
    );
    let user_data = std::fs::read_to_string(dir.path().join(format!("{id}.user-data"))).unwrap();
    assert_eq!(user_data, "#cloud-config\nhostname: guest\n");
}

#[test]
fn a_guest_halt_leaves_the_server_running_until_the_api_stops_it() {
    let double = start();
    let running = running_server(&double, "halting");
    let id = running["id"].as_str().unwrap();
    double.guest_halt(id);
    // Once no state change is left to come (the double counts them),
    // "still running" is the halt's outcome, not a look taken too soon.
    let state = wait_for("no transition left pending", WAIT, || {
        let state = double.state();
        (state["pending_transitions"] == 0).then_some(state)
    });
    assert_eq!(state["servers"][0]["state"], "running");
    assert_eq!(state["servers"][0]["guest_halted"], true);
    assert_eq!(server(&double, id)["state"], "running");
    expect(&action(&double, id, "poweroff"), 202);
    wait_state(&double, id, "stopped");
    assert_eq!(double.state()["servers"][0]["guest_halted"], false);
}

#[test]
fn a_guest_halt_may_end_stopped_in_place_which_poweroff_releases() {
    let double = start();
    let running = running_server(&double, "halting");
    let id = running["id"].as_str().unwrap();
    double.guest_halt_in_place(id);
    let halted = wait_state(&double, id, "stopped in place");
    assert_eq!(
        halted["allowed_actions"],
        json!(["poweron", "poweroff", "terminate", "reboot", "backup"])
    );
    expect(&action(&double, id, "poweroff"), 202);
    wait_state(&double, id, "stopped");
}

/// Shapes from the recorded real traffic cited in
/// `tests/src/scwdouble/instance/security_groups.rs`.
#[test]
fn security_groups_are_strict_and_a_server_without_one_gets_the_projects_default() {
    let double = start();
    let groups = instance("/security_groups");
    let body = json!({
        "name": "plex-burst-run", "project": double.project_id(),
        "tags": ["plex-burst", "plex-burst-run=r1"], "stateful": true,
        "inbound_default_policy": "drop", "outbound_default_policy": "accept",
    });
    let mut bad = body.clone();
    bad["colour"] = json!("blue");
    let refused = expect(&double.api("POST", &groups, Some(&bad)), 400);
    assert_eq!(refused["type"], "invalid_arguments", "{refused}");
    assert_eq!(
        refused["details"][0]["argument_name"], "colour",
        "{refused}"
    );
    let mut bad = body.clone();
    bad["inbound_default_policy"] = json!("reject");
    expect(&double.api("POST", &groups, Some(&bad)), 400);

    let group = expect(&double.api("POST", &groups, Some(&body)), 201)["security_group"].clone();
    let id = group["id"].as_str().unwrap().to_owned();
    assert_eq!(group["inbound_default_policy"], "drop");
    assert_eq!(group["project_default"], false);
    assert_eq!(group["enable_default_security"], true);
    assert_eq!(group["servers"], json!([]));
    // Default security: the platform's outbound SMTP drops, nothing inbound.
    let rules = expect(
        &double.api(
            "GET",
            &instance(&format!("/security_groups/{id}/rules")),
            None,
        ),
        200,
    );
    let rules = rules["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 6, "{rules:?}");
    assert!(
        rules
            .iter()
            .all(|r| r["direction"] == "outbound" && r["editable"] == false)
    );

    // A server in it names it as {"id", "name"}; one without any is put in
    // the project's default group, which accepts every inbound connection.
    let mut in_group = server_body(&double, "closed", &[]);
    in_group["security_group"] = json!(id);
    let closed = expect(
        &double.api("POST", &instance("/servers"), Some(&in_group)),
        201,
    )["server"]
        .clone();
    assert_eq!(
        closed["security_group"],
        json!({"id": id, "name": "plex-burst-run"})
    );
    let open = create_server(&double, "open", &[]);
    let default_id = open["security_group"]["id"].as_str().unwrap();
    assert_ne!(default_id, id);
    let default = expect(
        &double.api(
            "GET",
            &instance(&format!("/security_groups/{default_id}")),
            None,
        ),
        200,
    );
    assert_eq!(
        default["security_group"]["project_default"], true,
        "{default}"
    );
    assert_eq!(
        default["security_group"]["inbound_default_policy"],
        "accept"
    );
    let mut missing = server_body(&double, "nowhere", &[]);
    missing["security_group"] = json!("00000000-0000-4000-8000-000000000000");
    expect(
        &double.api("POST", &instance("/servers"), Some(&missing)),
        404,
    );

    // Listed by tag; in use it cannot be deleted, once its server is gone it can.
    let listed = expect(
        &double.api("GET", &format!("{groups}?tags=plex-burst-run=r1"), None),
        200,
    );
    assert_eq!(
        listed["security_groups"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    let shown = expect(
        &double.api("GET", &instance(&format!("/security_groups/{id}")), None),
        200,
    );
    assert_eq!(
        shown["security_group"]["servers"][0]["id"], closed["id"],
        "{shown}"
    );
    let path = instance(&format!("/security_groups/{id}"));
    let in_use = expect(&double.api("DELETE", &path, None), 400);
    assert_eq!(
        in_use["message"], "group is in use. you cannot delete it.",
        "{in_use}"
    );
    let server_id = closed["id"].as_str().unwrap();
    expect(
        &double.api("DELETE", &instance(&format!("/servers/{server_id}")), None),
        204,
    );
    expect(&double.api("DELETE", &path, None), 204);
    expect(&double.api("GET", &path, None), 404);
}

/// `GET /policies` as both SDKs' ListPoliciesRequest has it
/// (scaleway-sdk-go 2c5cd81, api/iam/v1alpha1/iam_sdk.go): the
/// organization is required, `application_ids` filters.
#[test]
fn policies_are_listed_by_organization_and_application() {
    let double = start();
    make_key(
        &double,
        &["InstancesFullAccess"],
        Some(&[double.project_id()]),
        Duration::from_secs(3600),
    );
    make_key(
        &double,
        &["InstancesReadOnly"],
        Some(&[double.project_id()]),
        Duration::from_secs(3600),
    );
    let all = expect(&double.api("GET", "/iam/v1alpha1/applications", None), 200);
    let first = all["applications"][0]["id"].as_str().unwrap().to_owned();

    let refused = expect(
        &double.api(
            "GET",
            &format!("/iam/v1alpha1/policies?application_ids={first}"),
            None,
        ),
        400,
    );
    assert_eq!(refused["type"], "invalid_arguments");
    assert_eq!(refused["details"][0]["argument_name"], "organization_id");
    assert_eq!(refused["details"][0]["reason"], "required");

    let org = double.organization_id().to_owned();
    let listed = expect(
        &double.api(
            "GET",
            &format!("/iam/v1alpha1/policies?organization_id={org}"),
            None,
        ),
        200,
    );
    assert_eq!(listed["total_count"], 2);
    let mine = expect(
        &double.api(
            "GET",
            &format!("/iam/v1alpha1/policies?application_ids={first}&organization_id={org}"),
            None,
        ),
        200,
    );
    assert_eq!(mine["total_count"], 1);
    assert_eq!(mine["policies"][0]["application_id"], json!(first));
}
