//! Recorded real Scaleway traffic as the judge (issue 13, point 13). The
//! recordings (tests/data/scaleway/, each naming the repository, commit and
//! cassette it came from) are Scaleway's own CLI and Terraform provider
//! talking to the real API. For every endpoint plex-burst uses:
//! - the client, answered with the recorded response, parses the values
//!   the recording holds;
//! - the client's request (method, path, query, body) matches the recorded
//!   one; what the real request had and ours lacks is listed, deliberate;
//! - the Scaleway double, sent the recorded request, accepts it and answers
//!   in the recorded shape (`double_*` tests).

use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use plex_burst_tests::recorded::{Recording, Replay, Seen, access_key, shape_diff};
use plex_burst_tests::scwdouble::harness::wait_for;
use runner::scaleway::{
    Client, CreateImage, CreateSecurityGroup, CreateServer, RetryPolicy, RootVolume, ScwError,
    ServerAction, ServerState, VolumeType, Zone,
};
use runner::secret::Secret;
use serde_json::Value;

fn par1() -> Zone {
    Zone::from_str("fr-par-1").unwrap()
}

fn client(url: &str, attempts: u32) -> Client {
    Client::new(url, Secret::new("conformance-secret-key"))
        .unwrap()
        .with_retry(RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        })
}

/// A replay of the interactions `ids` of `name`, and a client for it.
async fn replay(rec: &Recording, ids: &[i64]) -> (Replay, Client) {
    let answers = ids.iter().map(|i| rec.get(*i).response.clone()).collect();
    let replay = Replay::start(answers).await;
    let c = client(&replay.url, 1);
    (replay, c)
}

/// The request the client sent is the recorded one's method and path.
fn same_call(rec: &Recording, id: i64, seen: &Seen) {
    let want = &rec.get(id).request;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        (want.method.as_str(), want.path.as_str()),
        "{}",
        rec.cite(id)
    );
}

/// Compares the client's JSON body with the recorded request's: same
/// types where both have a key; returns (keys only the recording has,
/// keys only ours has), for the test to assert as deliberate.
fn body_keys(rec: &Recording, id: i64, seen: &Seen) -> (Vec<String>, Vec<String>) {
    let want = &rec.get(id).request.body;
    let got = seen.json();
    let diff = shape_diff(want, &got, &["volumes"]);
    let only_recorded: Vec<String> = diff
        .iter()
        .filter_map(|d| {
            d.strip_suffix(")")
                .and_then(|d| d.split_once(": missing ("))
        })
        .map(|(k, _)| k.to_string())
        .collect();
    let only_ours: Vec<String> = diff
        .iter()
        .filter_map(|d| d.split_once(": not in the recorded answer ("))
        .map(|(k, _)| k.to_string())
        .collect();
    let typed: Vec<&String> = diff
        .iter()
        .filter(|d| d.contains(" where the recording has "))
        .collect();
    assert!(typed.is_empty(), "{}: {typed:?}", rec.cite(id));
    (only_recorded, only_ours)
}

fn body_of(rec: &Recording, id: i64) -> &Value {
    &rec.get(id).response.body
}

// ---- Instance: servers, actions -------------------------------------------

#[tokio::test]
async fn servers_create_get_action_terminate() {
    let rec = Recording::load("instance_server_lifecycle");
    let (replay, c) = replay(&rec, &[4, 5, 13, 14, 15, 63, 64, 67]).await;
    let want = &rec.get(4).request.body;
    let tags: Vec<String> = serde_json::from_value(want["tags"].clone()).unwrap();
    let req = CreateServer {
        name: want["name"].as_str().unwrap().into(),
        commercial_type: want["commercial_type"].as_str().unwrap().into(),
        image: want["image"].as_str().unwrap().into(),
        project: want["project"].as_str().unwrap().into(),
        tags: tags.clone(),
        root_volume: RootVolume {
            size_bytes: want["volumes"]["0"]["size"].as_u64().unwrap(),
            volume_type: VolumeType::Sbs,
        },
        dynamic_ip_required: false,
        security_group: None,
    };
    let created = c.create_server(&par1(), &req).await.unwrap();
    let answer = &body_of(&rec, 4)["server"];
    assert_eq!(created.id, answer["id"].as_str().unwrap());
    assert_eq!(created.state, ServerState::Stopped);
    assert_eq!(created.tags, tags);
    assert_eq!(created.commercial_type, "DEV1-S");
    assert_eq!(created.image_id.as_deref(), answer["image"]["id"].as_str());
    let root = &created.volumes["0"];
    assert_eq!(root.volume_type, "sbs_volume");
    assert_eq!(root.id, answer["volumes"]["0"]["id"].as_str().unwrap());
    assert_eq!(
        created.security_group.as_ref().map(|g| g.id.as_str()),
        answer["security_group"]["id"].as_str()
    );
    let id = created.id.clone();

    let stopped = c.get_server(&par1(), &id).await.unwrap().unwrap();
    assert_eq!(stopped.state, ServerState::Stopped);
    c.server_action(&par1(), &id, ServerAction::Poweron)
        .await
        .unwrap();
    let starting = c.get_server(&par1(), &id).await.unwrap().unwrap();
    assert_eq!(starting.state, ServerState::Starting);
    let running = c.get_server(&par1(), &id).await.unwrap().unwrap();
    assert_eq!(running.state, ServerState::Running);
    let ips: Vec<&str> = body_of(&rec, 15)["server"]["public_ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .collect();
    assert_eq!(running.public_ips, ips);
    c.server_action(&par1(), &id, ServerAction::Terminate)
        .await
        .unwrap();
    let stopping = c.get_server(&par1(), &id).await.unwrap().unwrap();
    assert_eq!(stopping.state, ServerState::Stopping);
    assert_eq!(c.get_server(&par1(), &id).await.unwrap(), None);

    let seen = replay.seen();
    for (seen, id) in seen.iter().zip([4, 5, 13, 14, 15, 63, 64, 67]) {
        same_call(&rec, id, seen);
    }
    // The real request sends the root volume's `boot: false` (the default).
    assert_eq!(
        body_keys(&rec, 4, &seen[0]),
        (vec!["volumes.0.boot".to_string()], vec![])
    );
    assert_eq!(seen[2].json(), rec.get(13).request.body);
    assert_eq!(seen[5].json(), rec.get(63).request.body);
}

#[tokio::test]
async fn servers_delete() {
    let rec = Recording::load("instance_server_delete");
    let (replay, c) = replay(&rec, &[8]).await;
    let id = rec.get(8).request.path.rsplit('/').next().unwrap();
    c.delete_server(&par1(), id).await.unwrap();
    same_call(&rec, 8, &replay.one());
}

#[tokio::test]
async fn servers_list_by_tags() {
    let rec = Recording::load("instance_servers_list");
    let (replay, c) = replay(&rec, &[51]).await;
    let want = &rec.get(51).request;
    let tags: Vec<&str> = want.param("tags").split(',').collect();
    let servers = c.list_servers(&par1(), &tags).await.unwrap();
    let recorded = body_of(&rec, 51)["servers"].as_array().unwrap();
    assert_eq!(servers.len(), recorded.len());
    assert_eq!(servers[0].id, recorded[0]["id"].as_str().unwrap());
    let seen = replay.one();
    same_call(&rec, 51, &seen);
    // Tags as the real request sends them: one comma-separated value.
    assert_eq!(seen.query_values("tags"), vec![tags.join(",")]);
    assert_eq!(seen.query_keys(), vec!["tags", "per_page", "page"]);
}

#[tokio::test]
async fn products_servers_all_pages() {
    let rec = Recording::load("instance_products_servers");
    let (replay, c) = replay(&rec, &[0, 1, 2]).await;
    let types = c.server_types(&par1()).await.unwrap();
    let total: usize = rec.get(0).response.headers["X-Total-Count"]
        .parse()
        .unwrap();
    assert_eq!(types.len(), total);
    let dev1 = &types["DEV1-S"];
    let recorded = &body_of(&rec, 0)["servers"]["DEV1-S"];
    assert_eq!(dev1.ncpus as u64, recorded["ncpus"].as_u64().unwrap());
    assert_eq!(dev1.ram, recorded["ram"].as_u64().unwrap());
    assert_eq!(
        dev1.hourly_price,
        recorded["hourly_price"].as_f64().unwrap()
    );
    assert!(dev1.has_local_ssd());
    let seen = replay.seen();
    assert_eq!(seen.len(), 3);
    same_call(&rec, 0, &seen[0]);
    assert_eq!(seen[2].query_values("page"), vec!["3"]);
}

// ---- Instance: user data -----------------------------------------------------

#[tokio::test]
async fn user_data_set_get_missing() {
    let rec = Recording::load("instance_user_data");
    let (replay, c) = replay(&rec, &[17, 18]).await;
    let path = &rec.get(17).request.path;
    let server = path.split('/').nth(6).unwrap();
    let text = rec.get(17).request.body.as_str().unwrap();
    c.set_user_data(&par1(), server, "cloud-init", text)
        .await
        .unwrap();
    let got = c.user_data(&par1(), server, "cloud-init").await.unwrap();
    assert_eq!(got.as_deref(), body_of(&rec, 18).as_str());
    let seen = replay.seen();
    same_call(&rec, 17, &seen[0]);
    same_call(&rec, 18, &seen[1]);
    assert_eq!(seen[0].content_type, rec.get(17).request.content_type);
    assert_eq!(String::from_utf8_lossy(&seen[0].body), text);

    let rec = Recording::load("instance_user_data_missing");
    let (replay, c) = self::replay(&rec, &[5]).await;
    let path = &rec.get(5).request.path;
    let server = path.split('/').nth(6).unwrap();
    assert_eq!(c.user_data(&par1(), server, "happy").await.unwrap(), None);
    same_call(&rec, 5, &replay.one());
}

// ---- Instance: images ----------------------------------------------------------

#[tokio::test]
async fn images_create_get_list() {
    let rec = Recording::load("instance_images");
    let (replay, c) = replay(&rec, &[8, 9]).await;
    let want = &rec.get(8).request.body;
    let req = CreateImage {
        name: want["name"].as_str().unwrap().into(),
        root_volume: want["root_volume"].as_str().unwrap().into(),
        arch: want["arch"].as_str().unwrap().into(),
        project: want["project"].as_str().unwrap().into(),
        tags: vec![],
    };
    let image = c.create_image(&par1(), &req).await.unwrap();
    let answer = &body_of(&rec, 8)["image"];
    assert_eq!(image.id, answer["id"].as_str().unwrap());
    assert_eq!(image.state, "available");
    assert_eq!(
        image.root_volume_id.as_deref(),
        Some(req.root_volume.as_str())
    );
    let got = c.get_image(&par1(), &image.id).await.unwrap().unwrap();
    assert_eq!(got.name, req.name);
    let seen = replay.seen();
    same_call(&rec, 8, &seen[0]);
    same_call(&rec, 9, &seen[1]);
    // `tags` is CreateImageRequest's too (scaleway-sdk-go api/instance/v1).
    assert_eq!(
        body_keys(&rec, 8, &seen[0]),
        (vec![], vec!["tags".to_string()])
    );

    // Deleted, gone; its snapshot then read as recorded (here available
    // already; a sweep waits for that, as it may still be in_use).
    let (replay, c) = self::replay(&rec, &[42, 43, 44]).await;
    c.delete_image(&par1(), &image.id).await.unwrap();
    assert_eq!(c.get_image(&par1(), &image.id).await.unwrap(), None);
    let snap = c
        .get_snapshot(&par1(), &req.root_volume)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.status, body_of(&rec, 44)["status"].as_str().unwrap());
    for (seen, id) in replay.seen().iter().zip([42, 43, 44]) {
        same_call(&rec, id, seen);
    }

    let rec = Recording::load("instance_images_list");
    let (replay, c) = self::replay(&rec, &[43]).await;
    let recorded = &body_of(&rec, 43)["images"][0];
    let name = recorded["name"].as_str().unwrap();
    let images = c.list_images(&par1(), Some(name), &[]).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, recorded["id"].as_str().unwrap());
    let seen = replay.one();
    same_call(&rec, 43, &seen);
    assert_eq!(seen.query_values("name"), vec![name]);

    // The images list takes one tag (ListImagesRequest.Tags is one string
    // in scaleway-sdk-go api/instance/v1): the rest are matched locally, so
    // the recorded image, without tags, is not ours.
    let (replay, c) = self::replay(&rec, &[43]).await;
    let images = c
        .list_images(&par1(), Some(name), &["plex-burst", "recipe-1"])
        .await
        .unwrap();
    assert_eq!(images, vec![]);
    assert_eq!(replay.one().query_values("tags"), vec!["plex-burst"]);
}

// ---- Instance: security groups ---------------------------------------------

#[tokio::test]
async fn security_groups_create_get_rules_delete_list() {
    let rec = Recording::load("instance_security_groups");
    let (replay, c) = replay(&rec, &[0, 3, 4, 36, 37]).await;
    let want = &rec.get(0).request.body;
    let req = CreateSecurityGroup::closed(
        want["name"].as_str().unwrap().into(),
        want["project"].as_str().unwrap().into(),
        vec![],
    );
    let group = c.create_security_group(&par1(), &req).await.unwrap();
    let answer = &body_of(&rec, 0)["security_group"];
    assert_eq!(group.id, answer["id"].as_str().unwrap());
    assert!(group.stateful);
    assert_eq!(group.inbound_default_policy, "drop");
    assert!(!group.project_default);
    let got = c.get_security_group(&par1(), &group.id).await.unwrap();
    assert_eq!(got.unwrap().name, req.name);
    let rules = c.security_group_rules(&par1(), &group.id).await.unwrap();
    let recorded = body_of(&rec, 4)["rules"].as_array().unwrap();
    assert_eq!(rules.len(), recorded.len());
    assert_eq!(rules[0].direction, "outbound");
    assert!(!rules[0].editable);
    c.delete_security_group(&par1(), &group.id).await.unwrap();
    assert_eq!(
        c.get_security_group(&par1(), &group.id).await.unwrap(),
        None
    );
    let seen = replay.seen();
    for (seen, id) in seen.iter().zip([0, 3, 4, 36, 37]) {
        same_call(&rec, id, seen);
    }
    // `enable_default_security` (Scaleway's outbound SMTP block) is left to
    // the API's default; `tags` is CreateSecurityGroupRequest's too.
    assert_eq!(
        body_keys(&rec, 0, &seen[0]),
        (
            vec!["enable_default_security".to_string()],
            vec!["tags".to_string()]
        )
    );

    let rec = Recording::load("instance_security_groups_list");
    let (replay, c) = self::replay(&rec, &[115]).await;
    let want = &rec.get(115).request;
    let project = want.param("project");
    let groups = c.list_security_groups(&par1(), project, &[]).await.unwrap();
    let recorded = body_of(&rec, 115)["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), recorded.len());
    assert_eq!(
        groups.iter().filter(|g| g.project_default).count(),
        recorded
            .iter()
            .filter(|g| g["project_default"] == true)
            .count()
    );
    let seen = replay.one();
    same_call(&rec, 115, &seen);
    assert_eq!(seen.query_values("project"), vec![project]);

    // Tags as ListSecurityGroups sends them: one comma-joined value
    // (scaleway-sdk-go api/instance/v1); the recorded groups carry none.
    let (replay, c) = self::replay(&rec, &[115]).await;
    let tagged = c
        .list_security_groups(&par1(), project, &["plex-burst", "run-1"])
        .await
        .unwrap();
    assert_eq!(tagged, vec![]);
    assert_eq!(replay.one().query_values("tags"), vec!["plex-burst,run-1"]);
}

// ---- Block: volumes, snapshots -----------------------------------------------

#[tokio::test]
async fn block_snapshots_create_get_delete() {
    let rec = Recording::load("block_snapshots");
    let (replay, c) = replay(&rec, &[4, 5, 8, 12, 13, 17, 16]).await;
    let want = &rec.get(4).request.body;
    let snap = c
        .create_snapshot(
            &par1(),
            want["volume_id"].as_str().unwrap(),
            want["name"].as_str().unwrap(),
            want["project_id"].as_str().unwrap(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(snap.status, "creating");
    assert_eq!(snap.parent_volume_id.as_deref(), want["volume_id"].as_str());
    assert_eq!(snap.size, body_of(&rec, 4)["size"].as_u64().unwrap());
    let first = c.get_snapshot(&par1(), &snap.id).await.unwrap().unwrap();
    assert_eq!(first.status, body_of(&rec, 5)["status"].as_str().unwrap());
    let later = c.get_snapshot(&par1(), &snap.id).await.unwrap().unwrap();
    assert_eq!(later.status, "available");
    c.delete_snapshot(&par1(), &snap.id).await.unwrap();
    assert_eq!(c.get_snapshot(&par1(), &snap.id).await.unwrap(), None);
    // Deleting what is already gone (404) is done.
    c.delete_snapshot(&par1(), &snap.id).await.unwrap();
    let volume = want["volume_id"].as_str().unwrap();
    assert_eq!(c.get_volume(&par1(), volume).await.unwrap(), None);
    let seen = replay.seen();
    for (seen, id) in seen.iter().zip([4, 5, 8, 12, 13, 17, 16]) {
        same_call(&rec, id, seen);
    }
    // The real request also sends `public: false`, the default.
    assert_eq!(
        body_keys(&rec, 4, &seen[0]),
        (vec!["public".to_string()], vec![])
    );
}

#[tokio::test]
async fn block_lists_and_volume_after_terminate() {
    let rec = Recording::load("block_snapshots_list");
    let (replay, c) = replay(&rec, &[8]).await;
    let snaps = c.list_snapshots(&par1(), &[], None).await.unwrap();
    let recorded = body_of(&rec, 8)["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), recorded.len());
    assert_eq!(snaps[0].id, recorded[0]["id"].as_str().unwrap());
    let seen = replay.one();
    same_call(&rec, 8, &seen);
    assert_eq!(seen.query_keys(), vec!["page_size", "page"]);

    let rec = Recording::load("block_volumes_list");
    let (replay, c) = self::replay(&rec, &[14]).await;
    let want = &rec.get(14).request;
    let tags: Vec<&str> = want
        .query
        .iter()
        .filter(|(k, _)| k == "tags")
        .map(|(_, v)| v.as_str())
        .collect();
    let project = want
        .query
        .iter()
        .find(|(k, _)| k == "project_id")
        .map(|(_, v)| v.as_str());
    let volumes = c.list_volumes(&par1(), &tags, project).await.unwrap();
    let recorded = body_of(&rec, 14)["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), recorded.len());
    let seen = replay.one();
    same_call(&rec, 14, &seen);
    // Block takes tags as a repeated parameter, as recorded.
    assert_eq!(seen.query_values("tags"), tags);
    assert_eq!(
        seen.query_values("project_id"),
        project.into_iter().collect::<Vec<_>>()
    );

    let rec = Recording::load("instance_server_lifecycle");
    let (replay, c) = self::replay(&rec, &[69, 70]).await;
    let recorded = body_of(&rec, 69);
    let id = recorded["id"].as_str().unwrap();
    let volume = c.get_volume(&par1(), id).await.unwrap().unwrap();
    assert_eq!(volume.status, recorded["status"].as_str().unwrap());
    assert_eq!(volume.size, recorded["size"].as_u64().unwrap());
    assert_eq!(volume.tags, Vec::<String>::new());
    c.delete_volume(&par1(), id).await.unwrap();
    let seen = replay.seen();
    same_call(&rec, 69, &seen[0]);
    same_call(&rec, 70, &seen[1]);
}

// ---- Marketplace ------------------------------------------------------------------

#[tokio::test]
async fn marketplace_local_image() {
    let rec = Recording::load("instance_server_lifecycle");
    let (replay, c) = replay(&rec, &[3]).await;
    let want = &rec.get(3).request;
    let label = &want.param("image_label");
    let id = c.marketplace_image(&par1(), label, "DEV1-S").await.unwrap();
    // The image the recorded server was then created from.
    assert_eq!(id, rec.get(4).request.field("image"));
    let seen = replay.one();
    same_call(&rec, 3, &seen);
    for key in ["image_label", "zone", "type"] {
        let recorded: Vec<&str> = want
            .query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(seen.query_values(key), recorded, "{key}");
    }
}

// ---- IAM ------------------------------------------------------------------------------

#[tokio::test]
async fn iam_application_and_api_key() {
    let rec = Recording::load("iam_api_keys");
    let (replay, c) = replay(&rec, &[0, 2, 3, 9, 10, 11]).await;
    let want = &rec.get(0).request.body;
    let app = c
        .create_application(
            want["name"].as_str().unwrap(),
            want["organization_id"].as_str().unwrap(),
            "",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app.id, body_of(&rec, 0)["id"].as_str().unwrap());
    let expires = UNIX_EPOCH + Duration::from_secs(2_067_411_600); // 2035-07-06T09:00:00Z
    let key = c
        .create_api_key(&app.id, expires, "", "tf_tests_expires")
        .await
        .unwrap();
    assert_eq!(key.access_key, access_key());
    assert!(key.secret_key.as_ref().is_some_and(|s| !s.is_empty()));
    assert_eq!(key.application_id.as_deref(), Some(app.id.as_str()));
    assert_eq!(key.expires_at.as_deref(), Some("2035-07-06T09:00:00Z"));
    let got = c.get_api_key(&key.access_key).await.unwrap().unwrap();
    assert_eq!(got.secret_key, None);
    c.delete_api_key(&key.access_key).await.unwrap();
    c.delete_application(&app.id).await.unwrap();
    assert_eq!(c.get_api_key(&key.access_key).await.unwrap(), None);
    let seen = replay.seen();
    for (seen, id) in seen.iter().zip([0, 2, 3, 9, 10, 11]) {
        same_call(&rec, id, seen);
    }
    assert_eq!(body_keys(&rec, 0, &seen[0]), (vec![], vec![]));
    // `default_project_id` is CreateAPIKeyRequest's too (the run's key
    // must default to the run's project).
    assert_eq!(
        body_keys(&rec, 2, &seen[1]),
        (vec![], vec!["default_project_id".to_string()])
    );

    let rec = Recording::load("iam_api_keys_list");
    let (replay, c) = self::replay(&rec, &[14]).await;
    let want = &rec.get(14).request;
    let app = &want.param("bearer_id");
    let keys = c.list_api_keys(app).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].access_key, access_key());
    let seen = replay.one();
    same_call(&rec, 14, &seen);
    // The application's keys by bearer, as recorded: ListAPIKeysRequest's
    // application_id is deprecated and never a query parameter
    // (scaleway-sdk-go api/iam/v1alpha1).
    for key in ["bearer_id", "bearer_type"] {
        let recorded: Vec<&str> = want
            .query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(seen.query_values(key), recorded, "{key}");
    }
    assert_eq!(seen.query_values("application_id"), Vec::<&str>::new());

    let rec = Recording::load("iam_applications_list");
    let (replay, c) = self::replay(&rec, &[18]).await;
    let want = &rec.get(18).request;
    let apps = c
        .applications_named(want.param("name"), want.param("organization_id"))
        .await
        .unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].name, want.param("name"));
    let seen = replay.one();
    same_call(&rec, 18, &seen);
    assert_eq!(seen.query_values("name"), vec![want.param("name")]);
    assert_eq!(
        seen.query_values("organization_id"),
        vec![want.param("organization_id")]
    );
}

#[tokio::test]
async fn iam_policy() {
    let rec = Recording::load("iam_policies");
    let (replay, c) = replay(&rec, &[2, 21]).await;
    let want = &rec.get(2).request.body;
    let policy = c
        .create_policy(
            want["name"].as_str().unwrap(),
            want["organization_id"].as_str().unwrap(),
            want["application_id"].as_str().unwrap(),
            &["IAMManager"],
            &[want["organization_id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(policy.id, body_of(&rec, 2)["id"].as_str().unwrap());
    assert_eq!(
        policy.application_id.as_deref(),
        want["application_id"].as_str()
    );
    c.delete_policy(&policy.id).await.unwrap();
    let seen = replay.seen();
    same_call(&rec, 2, &seen[0]);
    same_call(&rec, 21, &seen[1]);
    // Ours scopes its rule to projects where the recording's scopes it to
    // the organization; `description`, `tags` and a rule's `condition` are
    // left to the API's defaults.
    let (only_recorded, only_ours) = body_keys(&rec, 2, &seen[0]);
    assert_eq!(
        only_recorded,
        vec![
            "description",
            "rules[0].condition",
            "rules[0].organization_id",
            "tags"
        ]
    );
    assert_eq!(only_ours, vec!["rules[0].project_ids"]);

    // Two pages, as recorded (total_count past the first page).
    let rec = Recording::load("iam_policies_list");
    let (replay, c) = self::replay(&rec, &[18, 19]).await;
    let recorded = body_of(&rec, 18)["policies"].as_array().unwrap();
    let with_app = recorded
        .iter()
        .find(|p| p["application_id"].is_string())
        .expect("a policy of an application");
    let app = with_app["application_id"].as_str().unwrap();
    let org = rec.get(18).request.param("organization_id");
    let found = c.find_policy(app, org).await.unwrap().unwrap();
    assert_eq!(found.id, with_app["id"].as_str().unwrap());
    let seen = replay.seen();
    same_call(&rec, 18, &seen[0]);
    // The real API requires organization_id (issue 13, point 8).
    assert_eq!(seen[0].query_values("organization_id"), vec![org]);
    same_call(&rec, 19, &seen[1]);
    assert_eq!(seen[1].query_values("page"), vec!["2"]);
}

// ---- Error bodies -------------------------------------------------------------------

/// The error the client makes of the recorded answer `id` of `name`,
/// answered to `call`, with how many requests were sent for it.
async fn refused<F, Fut, T>(name: &str, id: i64, attempts: u32, call: F) -> (ScwError, usize)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ScwError>>,
    T: std::fmt::Debug,
{
    let rec = Recording::load(name);
    let answers = vec![rec.get(id).response.clone(); attempts as usize];
    let replay = Replay::start(answers).await;
    let e = call(client(&replay.url, attempts)).await.unwrap_err();
    (e, replay.seen().len())
}

#[tokio::test]
async fn error_invalid_arguments() {
    let (e, sent) = refused("error_invalid_arguments", 6, 3, |c| async move {
        c.server_action(&par1(), "srv", ServerAction::Poweron).await
    })
    .await;
    assert_eq!(sent, 1, "a 400 is not retried");
    assert!(
        !e.is_transient() && !e.is_auth() && !e.is_not_found(),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "Scaleway refused POST /instance/v1/zones/fr-par-1/servers/srv/action \
         (400 invalid_arguments): invalid argument(s) (invalid arguments: \
         placement_group (constraint) (not a valid value))"
    );
}

#[tokio::test]
async fn error_permissions_denied() {
    let (e, sent) = refused("error_permissions_denied", 19, 3, |c| async move {
        c.get_snapshot(&par1(), "snap").await
    })
    .await;
    assert_eq!(sent, 1);
    assert!(e.is_auth(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("Scaleway refused GET /block/v1/zones/fr-par-1/snapshots/snap (403 permissions_denied): insufficient permissions"),
        "{text}"
    );
    // The details name what was denied.
    assert!(text.contains("read") && text.contains("snapshot"), "{text}");
}

#[tokio::test]
async fn error_transient_state() {
    let (e, sent) = refused("error_transient_state", 15, 3, |c| async move {
        c.delete_application("app").await
    })
    .await;
    assert_eq!(
        sent, 1,
        "a 409 is not retried by the client: its caller waits"
    );
    assert!(e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            .contains("(409 transient_state): resource is in a transient state"),
        "{e}"
    );
}

#[tokio::test]
async fn error_rate_limited_429_with_empty_body() {
    let (e, sent) = refused("error_rate_limited", 182, 2, |c| async move {
        c.list_snapshots(&par1(), &[], None).await
    })
    .await;
    assert_eq!(sent, 2, "a 429 is retried");
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "Scaleway refused GET /block/v1/zones/fr-par-1/snapshots (429): (empty body)"
    );

    // Retried, the next answer is used.
    let limited = Recording::load("error_rate_limited")
        .get(182)
        .response
        .clone();
    let list = Recording::load("block_snapshots_list");
    let replay = Replay::start(vec![limited, list.get(8).response.clone()]).await;
    let snaps = client(&replay.url, 2)
        .list_snapshots(&par1(), &[], None)
        .await
        .unwrap();
    assert_eq!(
        snaps.len(),
        body_of(&list, 8)["snapshots"].as_array().unwrap().len()
    );
}

// ---- The double, sent the recorded requests ------------------------------------

mod double {
    use std::time::Duration;

    use plex_burst_tests::recorded::{Recording, shape_diff};
    use plex_burst_tests::scwdouble::harness::{Reply, ScwDouble, ScwOptions, http, wait_for};
    use serde_json::Value;

    /// Paths of the answers that are maps keyed by data.
    const MAPS: &[&str] = &[
        "server.volumes",
        "servers.volumes",
        "image.extra_volumes",
        "images.extra_volumes",
        "servers",
        "servers.*.per_volume_constraint",
    ];

    /// The recorded request `id` of `rec`, each `(recorded, ours)` string
    /// replaced (ids of the recording's world by the double's), sent to the
    /// double with its admin key.
    pub fn send(double: &ScwDouble, rec: &Recording, id: i64, subst: &[(&str, &str)]) -> Reply {
        let req = &rec.get(id).request;
        let swap = |s: &str| {
            subst
                .iter()
                .fold(s.to_string(), |s, (from, to)| s.replace(from, to))
        };
        let mut url = swap(&req.path);
        if !req.query.is_empty() {
            let query: Vec<String> = req
                .query
                .iter()
                .map(|(k, v)| {
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair(k, &swap(v))
                        .finish()
                })
                .collect();
            url = format!("{url}?{}", query.join("&"));
        }
        let body = match &req.body {
            Value::Null => None,
            Value::String(s) => Some(swap(s)),
            json => Some(swap(&json.to_string())),
        };
        let mut headers = vec![("X-Auth-Token", double.secret_key())];
        let content_type = req.content_type.clone().unwrap_or_else(|| {
            if req.body.is_string() {
                "text/plain".into()
            } else {
                "application/json".into()
            }
        });
        if body.is_some() {
            headers.push(("Content-Type", content_type.as_str()));
        }
        http(
            &req.method,
            &double.url(&url),
            &headers,
            body.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{} {url}: {e}", req.method))
    }

    /// The double answered the recorded request `id` with the recorded
    /// status, in the recorded shape; its JSON answer is returned.
    pub fn conforms(rec: &Recording, id: i64, reply: &Reply) -> Value {
        let want = &rec.get(id).response;
        assert_eq!(
            reply.status,
            want.status,
            "{}: {}",
            rec.cite(id),
            reply.body
        );
        if let Value::String(text) = &want.body {
            if text.is_empty() {
                assert_eq!(reply.body, "", "{}", rec.cite(id));
            }
            return Value::Null;
        }
        let got = reply.json();
        let diff = shape_diff(&want.body, &got, MAPS);
        assert!(
            diff.is_empty(),
            "{}: the double's answer differs in shape:\n  {}\n{got}",
            rec.cite(id),
            diff.join("\n  ")
        );
        got
    }

    pub fn start() -> ScwDouble {
        ScwDouble::start(ScwOptions {
            // Long enough to read a server starting and stopping.
            transition_delay: Duration::from_millis(400),
            ..ScwOptions::default()
        })
    }

    pub fn wait_state(double: &ScwDouble, id: &str, state: &str) -> Value {
        wait_for(
            &format!("server {id} {state}"),
            Duration::from_secs(20),
            || {
                let reply = double.api(
                    "GET",
                    &format!("/instance/v1/zones/fr-par-1/servers/{id}"),
                    None,
                );
                let v = reply.json();
                (v["server"]["state"] == state).then_some(reply)
            },
        )
        .json()
    }
}

#[test]
fn double_server_lifecycle_and_user_data() {
    let d = double::start();
    let rec = Recording::load("instance_server_lifecycle");
    let recorded_image = rec.get(4).request.field("image").to_string();
    let recorded_project = rec.get(4).request.field("project").to_string();
    let local = double::send(&d, &rec, 3, &[("ubuntu_focal", "debian_bookworm")]);
    let local = double::conforms(&rec, 3, &local);
    let image = local["local_images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "instance_sbs")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let project = d.project_id().to_string();
    let world = [
        (recorded_image.as_str(), image.as_str()),
        (recorded_project.as_str(), project.as_str()),
    ];
    let created = double::send(&d, &rec, 4, &world);
    let created = double::conforms(&rec, 4, &created);
    let recorded_server = body_of(&rec, 4)["server"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = created["server"]["id"].as_str().unwrap().to_string();
    let root = created["server"]["volumes"]["0"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let recorded_root = body_of(&rec, 69)["id"].as_str().unwrap().to_string();
    let world = [
        (recorded_server.as_str(), server.as_str()),
        (recorded_root.as_str(), root.as_str()),
    ];
    let stopped = double::conforms(&rec, 5, &double::send(&d, &rec, 5, &world));
    let actions = |v: &Value| v["server"]["allowed_actions"].clone();
    assert_eq!(actions(&stopped), actions(body_of(&rec, 5)));
    // The tagged server's root sbs_volume has no tags (point 11).
    let root_volume = double::conforms(&rec, 69, &double::send(&d, &rec, 69, &world));
    assert_eq!(root_volume["tags"], body_of(&rec, 69)["tags"]);
    double::conforms(&rec, 13, &double::send(&d, &rec, 13, &world));
    let starting = double::wait_state(&d, &server, "starting");
    let diff = shape_diff(body_of(&rec, 14), &starting, &["server.volumes"]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(14));
    // allowed_actions while starting and stopping too (point 12).
    assert_eq!(actions(&starting), actions(body_of(&rec, 14)));
    let running = double::wait_state(&d, &server, "running");
    assert_eq!(actions(&running), actions(body_of(&rec, 15)));
    let diff = shape_diff(&body_of(&rec, 15).clone(), &running, &["server.volumes"]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(15));

    // User data, as recorded on another server.
    let ud = Recording::load("instance_user_data");
    let recorded_ud_server = ud
        .get(17)
        .request
        .path
        .split('/')
        .nth(6)
        .unwrap()
        .to_string();
    let uw = [(recorded_ud_server.as_str(), server.as_str())];
    double::conforms(&ud, 14, &double::send(&d, &ud, 14, &uw));
    double::conforms(&ud, 17, &double::send(&d, &ud, 17, &uw));
    let got = double::send(&d, &ud, 18, &uw);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, body_of(&ud, 18).as_str().unwrap());
    assert_eq!(
        got.header("content-type"),
        ud.get(18)
            .response
            .headers
            .get("Content-Type")
            .map(String::as_str)
    );
    double::conforms(&ud, 29, &double::send(&d, &ud, 29, &uw));
    let missing = Recording::load("instance_user_data_missing");
    let recorded_m = missing
        .get(5)
        .request
        .path
        .split('/')
        .nth(6)
        .unwrap()
        .to_string();
    let reply = double::send(&d, &missing, 5, &[(recorded_m.as_str(), server.as_str())]);
    double::conforms(&missing, 5, &reply);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain"),
        "{}",
        missing.cite(5)
    );

    double::conforms(&rec, 63, &double::send(&d, &rec, 63, &world));
    let stopping = double::wait_state(&d, &server, "stopping");
    let diff = shape_diff(body_of(&rec, 64), &stopping, &["server.volumes"]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(64));
    assert_eq!(actions(&stopping), actions(body_of(&rec, 64)));
    let gone = wait_for("the server gone", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 67, &world);
        (reply.status == 404).then_some(reply)
    });
    double::conforms(&rec, 67, &gone);
    let volume = wait_for("the root volume available", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 69, &world);
        (reply.json()["status"] == "available").then_some(reply)
    });
    double::conforms(&rec, 69, &volume);
    double::conforms(&rec, 70, &double::send(&d, &rec, 70, &world));
}

#[test]
fn double_security_groups() {
    let d = double::start();
    let rec = Recording::load("instance_security_groups");
    let recorded_project = rec.get(0).request.field("project").to_string();
    let project = d.project_id().to_string();
    let world = [(recorded_project.as_str(), project.as_str())];
    let created = double::conforms(&rec, 0, &double::send(&d, &rec, 0, &world));
    let recorded_id = body_of(&rec, 0)["security_group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = created["security_group"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let world = [
        (recorded_project.as_str(), project.as_str()),
        (recorded_id.as_str(), id.as_str()),
    ];
    double::conforms(&rec, 3, &double::send(&d, &rec, 3, &world));
    double::conforms(&rec, 4, &double::send(&d, &rec, 4, &world));
    let list = Recording::load("instance_security_groups_list");
    let listed_project = list.get(115).request.query[1].1.clone();
    double::conforms(
        &list,
        115,
        &double::send(
            &d,
            &list,
            115,
            &[(listed_project.as_str(), project.as_str())],
        ),
    );
    double::conforms(&rec, 36, &double::send(&d, &rec, 36, &world));
    double::conforms(&rec, 37, &double::send(&d, &rec, 37, &world));
}

#[test]
fn double_iam() {
    let d = double::start();
    let org = d.organization_id().to_string();
    let rec = Recording::load("iam_api_keys");
    let recorded_org = rec.get(0).request.field("organization_id").to_string();
    let world = [(recorded_org.as_str(), org.as_str())];
    let app = double::conforms(&rec, 0, &double::send(&d, &rec, 0, &world));
    let recorded_app = body_of(&rec, 0)["id"].as_str().unwrap().to_string();
    let app = app["id"].as_str().unwrap().to_string();
    let world = [
        (recorded_org.as_str(), org.as_str()),
        (recorded_app.as_str(), app.as_str()),
    ];
    let key = double::conforms(&rec, 2, &double::send(&d, &rec, 2, &world));
    let key = key["access_key"].as_str().unwrap().to_string();
    let recorded_key = access_key();
    let world = [
        (recorded_org.as_str(), org.as_str()),
        (recorded_app.as_str(), app.as_str()),
        (recorded_key.as_str(), key.as_str()),
    ];
    double::conforms(&rec, 3, &double::send(&d, &rec, 3, &world));

    // Lists, with the query the real clients sent.
    let keys = Recording::load("iam_api_keys_list");
    let keys_org = keys.get(14).request.param("organization_id").to_string();
    let keys_app = keys.get(14).request.param("bearer_id").to_string();
    double::conforms(
        &keys,
        14,
        &double::send(
            &d,
            &keys,
            14,
            &[
                (keys_org.as_str(), org.as_str()),
                (keys_app.as_str(), app.as_str()),
            ],
        ),
    );
    let apps = Recording::load("iam_applications_list");
    let apps_org = apps.get(18).request.param("organization_id").to_string();
    let apps_name = apps.get(18).request.param("name").to_string();
    let app_name = rec.get(0).request.field("name").to_string();
    double::conforms(
        &apps,
        18,
        &double::send(
            &d,
            &apps,
            18,
            &[
                (apps_org.as_str(), org.as_str()),
                (apps_name.as_str(), app_name.as_str()),
            ],
        ),
    );

    let pol = Recording::load("iam_policies");
    let pol_org = pol.get(2).request.field("organization_id").to_string();
    let pol_app = pol.get(2).request.field("application_id").to_string();
    let pw = [
        (pol_org.as_str(), org.as_str()),
        (pol_app.as_str(), app.as_str()),
    ];
    let policy = double::conforms(&pol, 2, &double::send(&d, &pol, 2, &pw));
    let listed = Recording::load("iam_policies_list");
    let listed_org = listed.get(18).request.param("organization_id").to_string();
    double::conforms(
        &listed,
        18,
        &double::send(&d, &listed, 18, &[(listed_org.as_str(), org.as_str())]),
    );
    let recorded_policy = body_of(&pol, 2)["id"].as_str().unwrap().to_string();
    let policy = policy["id"].as_str().unwrap().to_string();
    double::conforms(
        &pol,
        21,
        &double::send(&d, &pol, 21, &[(recorded_policy.as_str(), policy.as_str())]),
    );

    double::conforms(&rec, 9, &double::send(&d, &rec, 9, &world));
    double::conforms(&rec, 10, &double::send(&d, &rec, 10, &world));
    double::conforms(&rec, 11, &double::send(&d, &rec, 11, &world));
}

#[test]
fn double_block_snapshot_image_and_products() {
    let d = double::start();
    let project = d.project_id().to_string();
    // A volume to snapshot: the root volume a terminated server leaves.
    let life = Recording::load("instance_server_lifecycle");
    let local = double::send(&d, &life, 3, &[("ubuntu_focal", "debian_bookworm")]).json();
    let image = local["local_images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "instance_sbs")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let life_image = life.get(4).request.field("image").to_string();
    let life_project = life.get(4).request.field("project").to_string();
    let server = double::send(
        &d,
        &life,
        4,
        &[
            (life_image.as_str(), image.as_str()),
            (life_project.as_str(), project.as_str()),
        ],
    )
    .json();
    let volume = server["server"]["volumes"]["0"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = server["server"]["id"].as_str().unwrap().to_string();
    let reply = d.api(
        "DELETE",
        &format!("/instance/v1/zones/fr-par-1/servers/{server}"),
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);

    let rec = Recording::load("block_snapshots");
    let rec_volume = rec.get(4).request.field("volume_id").to_string();
    let rec_project = rec.get(4).request.field("project_id").to_string();
    let world = [
        (rec_volume.as_str(), volume.as_str()),
        (rec_project.as_str(), project.as_str()),
    ];
    let snap = double::conforms(&rec, 4, &double::send(&d, &rec, 4, &world));
    let rec_snap = body_of(&rec, 4)["id"].as_str().unwrap().to_string();
    let snap = snap["id"].as_str().unwrap().to_string();
    let world = [
        (rec_volume.as_str(), volume.as_str()),
        (rec_project.as_str(), project.as_str()),
        (rec_snap.as_str(), snap.as_str()),
    ];
    double::conforms(&rec, 5, &double::send(&d, &rec, 5, &world));
    wait_for("the snapshot available", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 8, &world);
        (reply.json()["status"] == "available").then_some(reply)
    });
    let listed = Recording::load("block_snapshots_list");
    let listed_name = listed.get(8).request.query[1].1.clone();
    let snap_name = rec.get(4).request.field("name").to_string();
    double::conforms(
        &listed,
        8,
        &double::send(
            &d,
            &listed,
            8,
            &[(listed_name.as_str(), snap_name.as_str())],
        ),
    );
    let volumes = Recording::load("block_volumes_list");
    let volumes_project = volumes.get(14).request.param("project_id").to_string();
    double::conforms(
        &volumes,
        14,
        &double::send(
            &d,
            &volumes,
            14,
            &[(volumes_project.as_str(), project.as_str())],
        ),
    );

    // An image of the snapshot, read back and listed by name.
    let img = Recording::load("instance_images");
    let img_snap = img.get(8).request.field("root_volume").to_string();
    let img_project = img.get(8).request.field("project").to_string();
    let iw = [
        (img_snap.as_str(), snap.as_str()),
        (img_project.as_str(), project.as_str()),
    ];
    let made = double::conforms(&img, 8, &double::send(&d, &img, 8, &iw));
    let rec_image = body_of(&img, 8)["image"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Available at once, as recorded (issue 13, point 12).
    assert_eq!(made["image"]["state"], body_of(&img, 8)["image"]["state"]);
    let made = made["image"]["id"].as_str().unwrap().to_string();
    // The snapshot is in_use while an image uses it (point 10).
    let img_snap_id = body_of(&img, 12)["id"].as_str().unwrap().to_string();
    let used = double::send(&d, &img, 12, &[(img_snap_id.as_str(), snap.as_str())]);
    let used = double::conforms(&img, 12, &used);
    assert_eq!(
        used["status"],
        body_of(&img, 12)["status"],
        "{}",
        img.cite(12)
    );
    double::conforms(
        &img,
        9,
        &double::send(&d, &img, 9, &[(rec_image.as_str(), made.as_str())]),
    );
    let list = Recording::load("instance_images_list");
    let list_name = list.get(43).request.query[0].1.clone();
    let image_name = img.get(8).request.field("name").to_string();
    double::conforms(
        &list,
        43,
        &double::send(&d, &list, 43, &[(list_name.as_str(), image_name.as_str())]),
    );
    let reply = d.api(
        "DELETE",
        &format!("/instance/v1/zones/fr-par-1/images/{made}"),
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);

    let products = Recording::load("instance_products_servers");
    double::conforms(&products, 0, &double::send(&d, &products, 0, &[]));

    // Deleted, then gone: 404s in the recorded shape.
    let deleted = wait_for("the snapshot deletable", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 12, &world);
        (reply.status == 204).then_some(reply)
    });
    double::conforms(&rec, 12, &deleted);
    let gone = wait_for("the snapshot gone", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 13, &world);
        (reply.status == 404).then_some(reply)
    });
    let gone = double::conforms(&rec, 13, &gone);
    // Block's 404s name what is missing (point 12).
    assert_eq!(gone["resource"], body_of(&rec, 13)["resource"]);
    double::conforms(&rec, 17, &double::send(&d, &rec, 17, &world));
    let reply = d.api(
        "DELETE",
        &format!("/block/v1/zones/fr-par-1/volumes/{volume}"),
        None,
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let no_volume = wait_for("the volume gone", Duration::from_secs(20), || {
        let reply = double::send(&d, &rec, 16, &world);
        (reply.status == 404).then_some(reply)
    });
    let no_volume = double::conforms(&rec, 16, &no_volume);
    assert_eq!(no_volume["resource"], body_of(&rec, 16)["resource"]);
}

#[test]
fn double_error_bodies() {
    use plex_burst_tests::scwdouble::errors::ScwError as DoubleError;

    // invalid_arguments, over HTTP: a field the API does not know.
    let d = double::start();
    let rec = Recording::load("error_invalid_arguments");
    let reply = d.api(
        "POST",
        "/instance/v1/zones/fr-par-1/servers",
        Some(&serde_json::json!({"placement_group": "1111111"})),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let diff = shape_diff(&body_of(&rec, 6).clone(), &reply.json(), &[]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(6));

    // permissions_denied and transient_state as the double builds them.
    let rec = Recording::load("error_permissions_denied");
    let denied = DoubleError::permissions_denied("snapshot", "read");
    assert_eq!(denied.status.as_u16(), rec.get(19).response.status);
    let diff = shape_diff(body_of(&rec, 19), &denied.body, &[]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(19));
    let rec = Recording::load("error_transient_state");
    let busy = DoubleError::transient_state("group", "id", "updating");
    assert_eq!(busy.status.as_u16(), rec.get(15).response.status);
    let diff = shape_diff(body_of(&rec, 15), &busy.body, &[]);
    assert!(diff.is_empty(), "{}: {diff:#?}", rec.cite(15));

    // The gateway's 429: an empty body, X-Envoy-Ratelimited, no Retry-After.
    let rec = Recording::load("error_rate_limited");
    let recorded = &rec.get(182).response;
    d.fail("GET", "/block/", 429, 1);
    let limited = double::send(&d, &rec, 182, &[]);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body, recorded.wire_body(), "{}", rec.cite(182));
    assert_eq!(
        limited.header("x-envoy-ratelimited"),
        recorded
            .headers
            .get("X-Envoy-Ratelimited")
            .map(String::as_str)
    );
    assert_eq!(limited.header("retry-after"), None);
}

/// The client against the double: an application's keys are its own,
/// filtered by the API (bearer_id), not only locally.
#[tokio::test]
async fn api_keys_listed_by_bearer() {
    let d = double::start();
    let c = Client::new(d.api_url(), Secret::new(d.secret_key()))
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        });
    let org = d.organization_id();
    let project = d.project_id();
    let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
    let mut apps = Vec::new();
    for name in ["run-a", "run-b"] {
        let app = c.create_application(name, org, "", &[]).await.unwrap();
        c.create_api_key(&app.id, expires, project, name)
            .await
            .unwrap();
        apps.push(app.id);
    }
    let keys = c.list_api_keys(&apps[0]).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].application_id.as_deref(), Some(apps[0].as_str()));
    let listed: Vec<String> = d
        .calls()
        .iter()
        .filter(|call| call["path"] == "/iam/v1alpha1/api-keys" && call["method"] == "GET")
        .map(|call| call["query"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].contains(&format!("bearer_id={}", apps[0])),
        "{listed:?}"
    );
}
