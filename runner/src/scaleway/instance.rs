//! Instance API v1 (`/instance/v1/zones/{zone}`): servers, their user data
//! and actions, commercial types, images. Answers about one object come in
//! an envelope (`{"server": {...}}`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::client::{Client, Paging, Payload, instance_tags, poll_gone, poll_until, seg};
use super::error::ScwError;
use super::zone::Zone;

/// A server as the Instance API describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Server {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub state: ServerState,
    #[serde(default)]
    pub commercial_type: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub zone: String,
    /// The image it was created from: `image.id`, or `image` when a bare id.
    #[serde(rename = "image", default, deserialize_with = "image_ref")]
    pub image_id: Option<String>,
    /// By slot: `"0"` is the root volume.
    #[serde(default, deserialize_with = "null_default")]
    pub volumes: BTreeMap<String, ServerVolume>,
    #[serde(default)]
    pub creation_date: Option<String>,
    /// The `address` of each `public_ips[]` entry.
    #[serde(default, deserialize_with = "ip_addresses")]
    pub public_ips: Vec<String>,
    /// `{"id", "name"}` of the group it is in (the project's default group
    /// when it was created without one).
    #[serde(default)]
    pub security_group: Option<super::security_group::ServerRef>,
}

/// A volume attached to a server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerVolume {
    pub id: String,
    /// `sbs_volume`, `l_ssd`, `scratch`.
    #[serde(default)]
    pub volume_type: String,
    /// Bytes; the Instance API may leave it out for an `sbs_volume`.
    #[serde(default)]
    pub size: Option<u64>,
}

/// A server's `state`; unknown values are kept in `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    Running,
    Stopped,
    StoppedInPlace,
    Starting,
    Stopping,
    Locked,
    Other(String),
}

impl ServerState {
    /// The API's spelling (`stopped in place`...).
    pub fn as_str(&self) -> &str {
        match self {
            ServerState::Running => "running",
            ServerState::Stopped => "stopped",
            ServerState::StoppedInPlace => "stopped in place",
            ServerState::Starting => "starting",
            ServerState::Stopping => "stopping",
            ServerState::Locked => "locked",
            ServerState::Other(s) => s,
        }
    }

    fn parse(s: &str) -> ServerState {
        match s {
            "running" => ServerState::Running,
            "stopped" => ServerState::Stopped,
            "stopped in place" => ServerState::StoppedInPlace,
            "starting" => ServerState::Starting,
            "stopping" => ServerState::Stopping,
            "locked" => ServerState::Locked,
            other => ServerState::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ServerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ServerState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ServerState::parse(&String::deserialize(d)?))
    }
}

/// The root volume's kind: POP2/PRO2 only take `sbs_volume`, GP1/DEV1 have
/// local SSD (`l_ssd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    Sbs,
    LocalSsd,
}

impl VolumeType {
    /// The API's `volume_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeType::Sbs => "sbs_volume",
            VolumeType::LocalSsd => "l_ssd",
        }
    }
}

impl Serialize for VolumeType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootVolume {
    pub size_bytes: u64,
    pub volume_type: VolumeType,
}

/// What `create_server` sends. Serialises as scaleway.md's `POST /servers`
/// body: `boot_type: "local"`, the root volume in slot `"0"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateServer {
    pub name: String,
    pub commercial_type: String,
    /// Image UUID (from [`Client::marketplace_image`] or a baked image).
    pub image: String,
    pub project: String,
    pub tags: Vec<String>,
    pub root_volume: RootVolume,
    pub dynamic_ip_required: bool,
    /// The security group's id; `None` puts the server in the project's
    /// default group (accept-all inbound).
    pub security_group: Option<String>,
}

impl Serialize for CreateServer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut body = json!({
            "name": self.name,
            "commercial_type": self.commercial_type,
            "image": self.image,
            "project": self.project,
            "tags": self.tags,
            "dynamic_ip_required": self.dynamic_ip_required,
            "boot_type": "local",
            "volumes": {
                "0": {
                    "size": self.root_volume.size_bytes,
                    "volume_type": self.root_volume.volume_type,
                }
            },
        });
        if let Some(group) = &self.security_group {
            body["security_group"] = json!(group);
        }
        body.serialize(s)
    }
}

/// `POST /servers/{id}/action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAction {
    Poweron,
    Poweroff,
    Reboot,
    /// Deletes the server and its local volumes; an `sbs_volume` is only
    /// detached and stays billed. Needs a running server.
    Terminate,
    StopInPlace,
}

impl ServerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerAction::Poweron => "poweron",
            ServerAction::Poweroff => "poweroff",
            ServerAction::Reboot => "reboot",
            ServerAction::Terminate => "terminate",
            ServerAction::StopInPlace => "stop_in_place",
        }
    }
}

/// A commercial type from `GET /products/servers`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerType {
    #[serde(default)]
    pub ncpus: u32,
    /// Bytes.
    #[serde(default)]
    pub ram: u64,
    /// Euros per hour.
    #[serde(default)]
    pub hourly_price: f64,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub gpu: Option<u64>,
    #[serde(default)]
    pub volumes_constraint: Option<SizeConstraint>,
    /// Per volume type (`l_ssd`...): size bounds.
    #[serde(default, deserialize_with = "null_default")]
    pub per_volume_constraint: BTreeMap<String, SizeConstraint>,
    #[serde(default)]
    pub end_of_service: bool,
}

impl ServerType {
    /// Whether the type can have a local SSD root volume (`l_ssd`).
    pub fn has_local_ssd(&self) -> bool {
        self.per_volume_constraint
            .get("l_ssd")
            .is_some_and(|c| c.max_size > 0)
    }
}

/// Size bounds in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SizeConstraint {
    #[serde(default)]
    pub min_size: u64,
    #[serde(default)]
    pub max_size: u64,
}

/// An Instance image.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// `creating`, `available`, `error`...
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub creation_date: Option<String>,
    /// `root_volume.id`: for an SBS image, the snapshot it was made from.
    #[serde(rename = "root_volume", default, deserialize_with = "image_ref")]
    pub root_volume_id: Option<String>,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub project: String,
}

/// What `create_image` sends (`public` is always false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateImage {
    pub name: String,
    /// The snapshot id of the root volume.
    pub root_volume: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    pub project: String,
    pub tags: Vec<String>,
}

impl Serialize for CreateImage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({
            "name": self.name,
            "root_volume": self.root_volume,
            "arch": self.arch,
            "project": self.project,
            "tags": self.tags,
            "public": false,
        })
        .serialize(s)
    }
}

#[derive(Deserialize)]
struct ServerEnvelope {
    server: Server,
}

#[derive(Deserialize)]
struct ImageEnvelope {
    image: Image,
}

/// `{"id": ...}`, a bare id string, or null.
fn image_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(String),
        Obj {
            #[serde(default)]
            id: Option<String>,
        },
    }
    Ok(match Option::<Ref>::deserialize(d)? {
        Some(Ref::Id(id)) => Some(id),
        Some(Ref::Obj { id }) => id,
        None => None,
    })
    .map(|id| id.filter(|s| !s.is_empty()))
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn ip_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct Ip {
        #[serde(default)]
        address: Option<String>,
    }
    let ips: Option<Vec<Ip>> = Option::deserialize(d)?;
    Ok(ips
        .unwrap_or_default()
        .into_iter()
        .filter_map(|ip| ip.address)
        .collect())
}

fn has_tags(have: &[String], want: &[&str]) -> bool {
    want.iter().all(|t| have.iter().any(|h| h == t))
}

fn base(zone: &Zone) -> String {
    format!("/instance/v1/zones/{zone}")
}

impl Client {
    /// Creates a server (it answers `stopped`: nothing boots until poweron).
    pub async fn create_server(&self, zone: &Zone, req: &CreateServer) -> Result<Server, ScwError> {
        let path = format!("{}/servers", base(zone));
        let env: ServerEnvelope = self.json_call(Method::POST, &path, req).await?;
        Ok(env.server)
    }

    /// One server, or `None` if it does not exist.
    pub async fn get_server(&self, zone: &Zone, id: &str) -> Result<Option<Server>, ScwError> {
        let path = format!("{}/servers/{}", base(zone), seg("server id", id)?);
        Ok(self
            .get_opt::<ServerEnvelope>(&path)
            .await?
            .map(|e| e.server))
    }

    /// Every server of the zone carrying all of `tags` (all servers if empty).
    pub async fn list_servers(&self, zone: &Zone, tags: &[&str]) -> Result<Vec<Server>, ScwError> {
        let path = format!("{}/servers", base(zone));
        let query: Vec<_> = instance_tags(tags).into_iter().collect();
        let servers: Vec<Server> = self
            .list_all(&path, &query, "servers", Paging::Instance)
            .await?;
        Ok(servers
            .into_iter()
            .filter(|s| has_tags(&s.tags, tags))
            .collect())
    }

    /// Sets the user data `key` (e.g. `cloud-init`) of a server, as plain text.
    pub async fn set_user_data(
        &self,
        zone: &Zone,
        id: &str,
        key: &str,
        text: &str,
    ) -> Result<(), ScwError> {
        let path = format!(
            "{}/servers/{}/user_data/{}",
            base(zone),
            seg("server id", id)?,
            seg("user data key", key)?
        );
        self.send(Method::PATCH, &path, &[], Payload::Text(text.to_string()))
            .await
            .map(drop)
    }

    /// The user data `key` of a server, or `None` if it has none.
    pub async fn user_data(
        &self,
        zone: &Zone,
        id: &str,
        key: &str,
    ) -> Result<Option<String>, ScwError> {
        let path = format!(
            "{}/servers/{}/user_data/{}",
            base(zone),
            seg("server id", id)?,
            seg("user data key", key)?
        );
        match self.send(Method::GET, &path, &[], Payload::Empty).await {
            Ok(answer) => String::from_utf8(answer.body).map(Some).map_err(|_| {
                ScwError::decode(&format!("GET {path}"), "the user data is not UTF-8")
            }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks for a power action (poweron, poweroff, terminate...).
    pub async fn server_action(
        &self,
        zone: &Zone,
        id: &str,
        action: ServerAction,
    ) -> Result<(), ScwError> {
        let path = format!("{}/servers/{}/action", base(zone), seg("server id", id)?);
        self.json_call_unit(Method::POST, &path, &json!({ "action": action }))
            .await
    }

    /// Deletes a stopped server (not its volumes); already gone is success.
    pub async fn delete_server(&self, zone: &Zone, id: &str) -> Result<(), ScwError> {
        let path = format!("{}/servers/{}", base(zone), seg("server id", id)?);
        self.delete(&path).await
    }

    /// Polls a server every `poll` until `want(state)`; a server that
    /// disappears is an error, running out of time names the last state.
    pub async fn wait_server(
        &self,
        zone: &Zone,
        id: &str,
        want: impl Fn(&ServerState) -> bool,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Server, ScwError> {
        poll_until(
            &format!("server {id} in {zone}"),
            timeout,
            poll,
            || self.get_server(zone, id),
            |s: &Server| Ok(want(&s.state)),
            |s: &Server| s.state.to_string(),
        )
        .await
    }

    /// Polls until the server no longer exists (after terminate or delete).
    pub async fn wait_server_gone(
        &self,
        zone: &Zone,
        id: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(), ScwError> {
        poll_gone(
            &format!("server {id} in {zone}"),
            timeout,
            poll,
            || self.get_server(zone, id),
            |s: &Server| s.state.to_string(),
        )
        .await
    }

    /// The zone's commercial types by name, with CPUs, RAM and price.
    pub async fn server_types(
        &self,
        zone: &Zone,
    ) -> Result<BTreeMap<String, ServerType>, ScwError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            servers: BTreeMap<String, ServerType>,
        }
        let path = format!("{}/products/servers", base(zone));
        let mut all = BTreeMap::new();
        for page in 1..=50u32 {
            let query = [("per_page", "100".to_string()), ("page", page.to_string())];
            let answer = self
                .send(Method::GET, &path, &query, Payload::Empty)
                .await?;
            let p: Page = super::client::decode(&format!("GET {path}"), &answer.body)?;
            let total = answer
                .headers
                .get("x-total-count")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.trim().parse::<usize>().ok());
            let n = p.servers.len();
            all.extend(p.servers);
            let done = match total {
                Some(t) => all.len() >= t || n == 0,
                None => n < 100,
            };
            if done {
                break;
            }
        }
        Ok(all)
    }

    /// Creates a private image from a root volume snapshot.
    pub async fn create_image(&self, zone: &Zone, req: &CreateImage) -> Result<Image, ScwError> {
        let path = format!("{}/images", base(zone));
        let env: ImageEnvelope = self.json_call(Method::POST, &path, req).await?;
        Ok(env.image)
    }

    /// Images of the zone named exactly `name` (if given) carrying all
    /// `tags`. The API's `tags` filter takes one tag (a string in both
    /// SDKs' ListImagesRequest; a comma list is one tag nothing carries):
    /// the first is sent, all are checked here.
    pub async fn list_images(
        &self,
        zone: &Zone,
        name: Option<&str>,
        tags: &[&str],
    ) -> Result<Vec<Image>, ScwError> {
        let path = format!("{}/images", base(zone));
        let mut query = Vec::new();
        if let Some(n) = name {
            query.push(("name", n.to_string()));
        }
        if let Some(first) = tags.first() {
            query.push(("tags", first.to_string()));
        }
        let images: Vec<Image> = self
            .list_all(&path, &query, "images", Paging::Instance)
            .await?;
        Ok(images
            .into_iter()
            .filter(|i| name.is_none_or(|n| i.name == n) && has_tags(&i.tags, tags))
            .collect())
    }

    /// One image, or `None` if it does not exist.
    pub async fn get_image(&self, zone: &Zone, id: &str) -> Result<Option<Image>, ScwError> {
        let path = format!("{}/images/{}", base(zone), seg("image id", id)?);
        Ok(self.get_opt::<ImageEnvelope>(&path).await?.map(|e| e.image))
    }

    /// Polls an image until `available`; `error` fails at once.
    pub async fn wait_image_available(
        &self,
        zone: &Zone,
        id: &str,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Image, ScwError> {
        let what = format!("image {id} in {zone}");
        poll_until(
            &what,
            timeout,
            poll,
            || self.get_image(zone, id),
            |i: &Image| match i.state.as_str() {
                "available" => Ok(true),
                "error" => Err(ScwError::Failed {
                    what: what.clone(),
                    state: i.state.clone(),
                }),
                _ => Ok(false),
            },
            |i: &Image| i.state.clone(),
        )
        .await
    }

    /// Deletes an image (not its snapshot); already gone is success.
    pub async fn delete_image(&self, zone: &Zone, id: &str) -> Result<(), ScwError> {
        let path = format!("{}/images/{}", base(zone), seg("image id", id)?);
        self.delete(&path).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::RetryPolicy;
    use super::super::mock::{Mock, Reply};
    use super::*;
    use crate::secret::Secret;

    const SERVER: &str = r#"{"server":{"id":"srv-1","name":"plex-burst-run","state":"stopped in place",
        "commercial_type":"POP2-HC-16C-32G","tags":["plex-burst","run-7"],"project":"proj",
        "organization":"org","zone":"fr-par-1","image":{"id":"img-1","name":"debian"},
        "volumes":{"0":{"id":"vol-1","volume_type":"sbs_volume","zone":"fr-par-1"}},
        "creation_date":"2025-09-01T10:00:00.000000+00:00",
        "public_ips":[{"id":"ip","address":"51.15.1.2"}]}}"#;

    fn client(mock: &Mock) -> Client {
        Client::new(&mock.url, Secret::new("SCW-TOKEN-XYZ"))
            .unwrap()
            .with_retry(RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(2),
            })
    }

    fn par1() -> Zone {
        "fr-par-1".parse().unwrap()
    }

    fn request() -> CreateServer {
        CreateServer {
            name: "plex-burst-run".into(),
            commercial_type: "POP2-HC-16C-32G".into(),
            image: "img-1".into(),
            project: "proj".into(),
            tags: vec!["plex-burst".into(), "run-7".into()],
            root_volume: RootVolume {
                size_bytes: 20_000_000_000,
                volume_type: VolumeType::Sbs,
            },
            dynamic_ip_required: true,
            security_group: None,
        }
    }

    #[tokio::test]
    async fn create_server_body_and_envelope() {
        let mock = Mock::start(vec![Reply::json(201, SERVER)]).await;
        let s = client(&mock)
            .create_server(&par1(), &request())
            .await
            .unwrap();
        assert_eq!(s.id, "srv-1");
        assert_eq!(s.state, ServerState::StoppedInPlace);
        assert_eq!(s.image_id.as_deref(), Some("img-1"));
        assert_eq!(s.volumes["0"].volume_type, "sbs_volume");
        assert_eq!(s.volumes["0"].size, None);
        assert_eq!(s.public_ips, vec!["51.15.1.2"]);
        let seen = &mock.seen()[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/instance/v1/zones/fr-par-1/servers");
        assert_eq!(seen.header("content-type"), "application/json");
        assert_eq!(
            seen.json(),
            serde_json::json!({
                "name": "plex-burst-run",
                "commercial_type": "POP2-HC-16C-32G",
                "image": "img-1",
                "project": "proj",
                "tags": ["plex-burst", "run-7"],
                "dynamic_ip_required": true,
                "boot_type": "local",
                "volumes": {"0": {"size": 20_000_000_000u64, "volume_type": "sbs_volume"}}
            })
        );
        let mut local = request();
        local.root_volume.volume_type = VolumeType::LocalSsd;
        let v = serde_json::to_value(&local).unwrap();
        assert_eq!(v["volumes"]["0"]["volume_type"], "l_ssd");
    }

    #[tokio::test]
    async fn get_server_404_is_none_and_image_forms() {
        let mock = Mock::start(vec![
            Reply::json(
                404,
                r#"{"type":"not_found","message":"resource is not found"}"#,
            ),
            Reply::json(
                200,
                r#"{"server":{"id":"a","state":"running","image":"img-2","volumes":null}}"#,
            ),
            Reply::json(200, r#"{"server":{"id":"b","state":"weird","image":null}}"#),
        ])
        .await;
        let c = client(&mock);
        assert_eq!(c.get_server(&par1(), "gone").await.unwrap(), None);
        let a = c.get_server(&par1(), "a").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.image_id.as_deref()),
            (ServerState::Running, Some("img-2"))
        );
        let b = c.get_server(&par1(), "b").await.unwrap().unwrap();
        assert_eq!(
            (b.state, b.image_id),
            (ServerState::Other("weird".into()), None)
        );
        // A 404 is not retried.
        assert_eq!(mock.seen().len(), 3);
        assert_eq!(
            mock.seen()[0].path,
            "/instance/v1/zones/fr-par-1/servers/gone"
        );
    }

    #[tokio::test]
    async fn list_servers_tags_and_pages() {
        let page1: Vec<serde_json::Value> = (0..100)
            .map(|i| serde_json::json!({"id": format!("s{i}"), "state": "running", "tags": ["a", "b"]}))
            .collect();
        let page2 = serde_json::json!({"servers": [
            {"id": "s100", "state": "running", "tags": ["a", "b", "c"]},
            {"id": "stray", "state": "running", "tags": ["a"]}
        ]});
        let mock = Mock::start(vec![
            Reply::json(200, &serde_json::json!({ "servers": page1 }).to_string()),
            Reply::json(200, &page2.to_string()),
        ])
        .await;
        let all = client(&mock)
            .list_servers(&par1(), &["a", "b"])
            .await
            .unwrap();
        assert_eq!(all.len(), 101);
        assert!(all.iter().all(|s| s.id != "stray"));
        let seen = mock.seen();
        assert_eq!(seen[0].query, "tags=a%2Cb&per_page=100&page=1");
        assert_eq!(seen[1].query, "tags=a%2Cb&per_page=100&page=2");
    }

    #[tokio::test]
    async fn user_data_patch_text_and_get() {
        let mock = Mock::start(vec![
            Reply::text(204, ""),
            Reply::text(200, "#cloud-config\nruncmd: []\n"),
            Reply::json(404, r#"{"type":"not_found","message":"not found"}"#),
        ])
        .await;
        let c = client(&mock);
        c.set_user_data(&par1(), "srv-1", "cloud-init", "#cloud-config\n")
            .await
            .unwrap();
        assert_eq!(
            c.user_data(&par1(), "srv-1", "cloud-init")
                .await
                .unwrap()
                .as_deref(),
            Some("#cloud-config\nruncmd: []\n")
        );
        assert_eq!(c.user_data(&par1(), "srv-1", "other").await.unwrap(), None);
        let seen = &mock.seen()[0];
        assert_eq!(seen.method, "PATCH");
        assert_eq!(
            seen.path,
            "/instance/v1/zones/fr-par-1/servers/srv-1/user_data/cloud-init"
        );
        assert_eq!(seen.header("content-type"), "text/plain");
        assert_eq!(&seen.body[..], b"#cloud-config\n");
    }

    #[tokio::test]
    async fn actions_and_delete() {
        let mock = Mock::start(vec![
            Reply::json(202, r#"{"task":{"id":"t","status":"pending"}}"#),
            Reply::json(202, r#"{"task":{}}"#),
            Reply::text(204, ""),
            Reply::json(404, r#"{"type":"not_found","message":"gone"}"#),
        ])
        .await;
        let c = client(&mock);
        c.server_action(&par1(), "srv-1", ServerAction::Poweron)
            .await
            .unwrap();
        c.server_action(&par1(), "srv-1", ServerAction::StopInPlace)
            .await
            .unwrap();
        c.delete_server(&par1(), "srv-1").await.unwrap();
        c.delete_server(&par1(), "srv-1").await.unwrap();
        let seen = mock.seen();
        assert_eq!(
            seen[0].path,
            "/instance/v1/zones/fr-par-1/servers/srv-1/action"
        );
        assert_eq!(seen[0].json(), serde_json::json!({"action": "poweron"}));
        assert_eq!(
            seen[1].json(),
            serde_json::json!({"action": "stop_in_place"})
        );
        assert_eq!(
            (seen[2].method.as_str(), seen[2].path.as_str()),
            ("DELETE", "/instance/v1/zones/fr-par-1/servers/srv-1")
        );
        assert!(c.delete_server(&par1(), "").await.is_err());
    }

    #[tokio::test]
    async fn wait_server_states_timeout_and_gone() {
        let st = |s: &str| Reply::json(200, &format!(r#"{{"server":{{"id":"x","state":"{s}"}}}}"#));
        let mock = Mock::start(vec![st("starting"), st("starting"), st("running")]).await;
        let c = client(&mock);
        let ms = Duration::from_millis;
        let s = c
            .wait_server(
                &par1(),
                "x",
                |s| *s == ServerState::Running,
                Duration::from_secs(5),
                ms(1),
            )
            .await
            .unwrap();
        assert_eq!(s.state, ServerState::Running);

        let mock = Mock::start(vec![st("stopping"); 50]).await;
        let e = client(&mock)
            .wait_server(&par1(), "x", |s| *s == ServerState::Stopped, ms(30), ms(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ScwError::Timeout { .. }));
        assert!(
            e.to_string()
                .contains("server x in fr-par-1 (last state: stopping)"),
            "{e}"
        );

        let mock = Mock::start(vec![
            st("stopping"),
            Reply::json(404, r#"{"type":"not_found","message":"x"}"#),
        ])
        .await;
        let c = client(&mock);
        let e = c
            .wait_server(&par1(), "x", |s| *s == ServerState::Stopped, ms(500), ms(1))
            .await
            .unwrap_err();
        assert!(matches!(e, ScwError::Gone { .. }), "{e:?}");

        let mock = Mock::start(vec![
            st("stopping"),
            Reply::json(404, r#"{"type":"not_found","message":"x"}"#),
        ])
        .await;
        client(&mock)
            .wait_server_gone(&par1(), "x", ms(500), ms(1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn server_types_decode() {
        let body = r#"{"servers":{
            "POP2-HC-16C-32G":{"ncpus":16,"ram":34359738368,"hourly_price":0.4256,"arch":"x86_64",
              "volumes_constraint":{"min_size":0,"max_size":0},"per_volume_constraint":{"l_ssd":{"min_size":0,"max_size":0}}},
            "GP1-S":{"ncpus":8,"ram":34359738368,"hourly_price":0.2042,"arch":"x86_64",
              "per_volume_constraint":{"l_ssd":{"min_size":1000000000,"max_size":800000000000}}}
        }}"#;
        let mock = Mock::start(vec![Reply::json(200, body).header("X-Total-Count", "2")]).await;
        let types = client(&mock).server_types(&par1()).await.unwrap();
        assert_eq!(types.len(), 2);
        let pop = &types["POP2-HC-16C-32G"];
        assert_eq!((pop.ncpus, pop.hourly_price), (16, 0.4256));
        assert!(!pop.has_local_ssd());
        assert!(types["GP1-S"].has_local_ssd());
        assert_eq!(
            mock.seen()[0].path,
            "/instance/v1/zones/fr-par-1/products/servers"
        );
        assert_eq!(mock.seen().len(), 1);
    }

    #[tokio::test]
    async fn images_create_list_wait() {
        let img = |state: &str| {
            format!(
                r#"{{"image":{{"id":"img-9","name":"plex-burst-2025","state":"{state}","tags":["plex-burst"],
                "creation_date":"2025-09-01","root_volume":{{"id":"snap-1","volume_type":"sbs_snapshot"}},"arch":"x86_64"}}}}"#
            )
        };
        let mock = Mock::start(vec![
            Reply::json(201, &img("creating")),
            Reply::json(200, &img("creating")),
            Reply::json(200, &img("available")),
            Reply::json(
                200,
                r#"{"images":[{"id":"a","name":"plex-burst-2025","tags":["plex-burst"]},
                              {"id":"b","name":"plex-burst-2025-old","tags":["plex-burst"]}]}"#,
            ),
            Reply::json(200, &img("error")),
        ])
        .await;
        let c = client(&mock);
        let created = c
            .create_image(
                &par1(),
                &CreateImage {
                    name: "plex-burst-2025".into(),
                    root_volume: "snap-1".into(),
                    arch: "x86_64".into(),
                    project: "proj".into(),
                    tags: vec!["plex-burst".into()],
                },
            )
            .await
            .unwrap();
        assert_eq!(created.root_volume_id.as_deref(), Some("snap-1"));
        let ready = c
            .wait_image_available(
                &par1(),
                "img-9",
                Duration::from_secs(5),
                Duration::from_millis(1),
            )
            .await
            .unwrap();
        assert_eq!(ready.state, "available");
        let found = c
            .list_images(&par1(), Some("plex-burst-2025"), &["plex-burst"])
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        let e = c
            .wait_image_available(
                &par1(),
                "img-9",
                Duration::from_secs(5),
                Duration::from_millis(1),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ScwError::Failed { .. }), "{e:?}");
        let seen = mock.seen();
        assert_eq!(
            seen[0].json(),
            serde_json::json!({"name":"plex-burst-2025","root_volume":"snap-1","arch":"x86_64",
                "project":"proj","tags":["plex-burst"],"public":false})
        );
        assert_eq!(
            seen[3].query,
            "name=plex-burst-2025&tags=plex-burst&per_page=100&page=1"
        );
    }

    #[tokio::test]
    async fn images_are_listed_by_their_first_tag_and_checked_for_all() {
        let mock = Mock::start(vec![Reply::json(
            200,
            r#"{"images":[{"id":"a","name":"n","tags":["plex-burst","recipe=1"]},
                          {"id":"b","name":"n","tags":["plex-burst","recipe=2"]}]}"#,
        )])
        .await;
        let c = client(&mock);
        let found = c
            .list_images(&par1(), None, &["plex-burst", "recipe=1"])
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(mock.seen()[0].query, "tags=plex-burst&per_page=100&page=1");
    }

    #[test]
    fn server_state_round_trip() {
        for s in [
            "running",
            "stopped",
            "stopped in place",
            "starting",
            "stopping",
            "locked",
            "x",
        ] {
            let st: ServerState = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(ServerAction::Terminate.as_str(), "terminate");
        assert_eq!(
            serde_json::to_value(ServerAction::Poweroff).unwrap(),
            "poweroff"
        );
    }
}
