//! The double's state: configuration, and the world (servers, volumes,
//! snapshots, images, IAM objects, the call log) behind one mutex; no
//! handler awaits while holding it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::catalogue::{GB, PRODUCTS, ZONES};
use super::faults::FaultRule;
use super::ids::uuid_v4;

/// What the command line fixed.
pub struct Config {
    pub organization_id: String,
    pub project_id: String,
    pub admin_keys: Vec<String>,
    pub delay: Duration,
    pub quota_servers: Option<u64>,
    pub quota_volumes_gb: Option<u64>,
    pub on_poweron: Option<String>,
    pub api_url: String,
    pub metadata_url: Option<String>,
    pub work_dir: PathBuf,
    /// The Owner's Object Storage access keys (`--owner-access-key`).
    pub owner_access_keys: Vec<String>,
}

pub struct Double {
    pub config: Config,
    world: Mutex<World>,
    /// State changes scheduled and not yet applied (`lifecycle::later`):
    /// zero means nothing will change on its own, which a test waits on
    /// rather than sleeping.
    pub pending: AtomicUsize,
}

pub type Shared = Arc<Double>;

impl Double {
    pub fn new(config: Config) -> Double {
        Double {
            config,
            world: Mutex::new(World::seeded()),
            pending: AtomicUsize::new(0),
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Server states as the Instance API spells them.
pub const STOPPED: &str = "stopped";
pub const STOPPED_IN_PLACE: &str = "stopped in place";
pub const STARTING: &str = "starting";
pub const RUNNING: &str = "running";
pub const STOPPING: &str = "stopping";

pub struct Server {
    pub id: String,
    pub name: String,
    pub zone: &'static str,
    pub project: String,
    pub commercial_type: String,
    pub tags: Vec<String>,
    pub image_id: String,
    pub security_group: String,
    pub dynamic_ip_required: bool,
    pub boot_type: String,
    pub state: &'static str,
    pub state_detail: String,
    pub root: RootVolume,
    pub user_data: BTreeMap<String, UserData>,
    pub public_ip: Option<PublicIp>,
    pub created: SystemTime,
    pub modified: SystemTime,
    pub poweron_count: u32,
    /// The guest powered itself off: the server stays `running` (allocated
    /// and billed) until the API stops it.
    pub guest_halted: bool,
    /// What the guest reported with `PATCH /state`, in order.
    pub state_reports: Vec<String>,
    /// Bumped by every action so a stale timer changes nothing.
    pub generation: u64,
}

pub struct RootVolume {
    pub id: String,
    /// `sbs_volume` (also a Block volume) or `l_ssd` (lives with the server).
    pub volume_type: String,
    pub size: u64,
    pub created: SystemTime,
}

pub struct UserData {
    pub text: Vec<u8>,
    pub set_at: SystemTime,
    pub set_in_state: &'static str,
    pub set_before_first_poweron: bool,
}

#[derive(Clone)]
pub struct PublicIp {
    pub id: String,
    pub address: String,
}

pub struct Volume {
    pub id: String,
    pub name: String,
    pub zone: &'static str,
    pub project: String,
    pub size: u64,
    /// `creating`, `available`, `in_use`, `deleting`.
    pub status: &'static str,
    pub tags: Vec<String>,
    pub server: Option<String>,
    pub parent_snapshot_id: Option<String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub last_detached: Option<SystemTime>,
}

pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub zone: &'static str,
    pub project: String,
    pub size: u64,
    /// `creating`, `available`, `deleting`.
    pub status: &'static str,
    pub tags: Vec<String>,
    pub volume_id: String,
    pub volume_name: String,
    pub created: SystemTime,
    pub updated: SystemTime,
}

pub struct Image {
    pub id: String,
    pub name: String,
    pub zone: &'static str,
    pub project: String,
    pub arch: String,
    pub tags: Vec<String>,
    pub public: bool,
    /// `creating`, `available`.
    pub state: &'static str,
    /// The Block snapshot behind it (a made-up id for marketplace images).
    pub root_snapshot: String,
    pub size: u64,
    pub created: SystemTime,
    pub modified: SystemTime,
    /// Set for the seeded marketplace images.
    pub marketplace: Option<LocalImage>,
}

#[derive(Clone)]
pub struct LocalImage {
    pub label: String,
    pub kind: String,
    pub compatible: Vec<String>,
}

pub struct Application {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organization_id: String,
    pub tags: Vec<String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organization_id: String,
    pub application_id: String,
    pub tags: Vec<String>,
    pub rules: Vec<Rule>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

pub struct Rule {
    pub id: String,
    pub permission_set_names: Vec<String>,
    /// `None` when the rule is scoped to the organization.
    pub project_ids: Option<Vec<String>>,
}

pub struct ApiKey {
    pub access_key: String,
    pub secret_key: String,
    pub application_id: String,
    pub description: String,
    pub default_project_id: String,
    pub expires_at: Option<SystemTime>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl ApiKey {
    pub fn expired(&self) -> bool {
        self.expires_at.is_some_and(|t| t <= SystemTime::now())
    }
}

/// The project that owns the marketplace images.
pub const MARKETPLACE_PROJECT: &str = "7a5e3c1d-0f2b-4e6a-8c9d-1b2a3c4d5e6f";

#[derive(Default)]
pub struct World {
    pub servers: Vec<Server>,
    pub volumes: Vec<Volume>,
    /// `l_ssd` volumes left behind by `DELETE /servers/{id}` (JSON as
    /// they were shown in the server).
    pub local_volumes: Vec<Value>,
    pub snapshots: Vec<Snapshot>,
    pub images: Vec<Image>,
    pub security_groups: Vec<super::instance::security_groups::SecurityGroup>,
    pub applications: Vec<Application>,
    pub policies: Vec<Policy>,
    pub api_keys: Vec<ApiKey>,
    pub calls: Vec<Value>,
    pub faults: Vec<FaultRule>,
    pub metadata_bound: Option<String>,
    pub last_powered_on: Option<String>,
    /// Guest address → server, once guests have addresses of their own (the
    /// VM test): the metadata service then knows each caller by its source
    /// address, as Scaleway's does, and answers no other.
    pub metadata_addresses: std::collections::HashMap<IpAddr, String>,
    /// Keys `POST /api-keys` hands out before generating any.
    pub key_pool: std::collections::VecDeque<(String, String)>,
    /// Server id → process group of its running `--on-poweron` guest.
    pub guests: std::collections::HashMap<String, i32>,
    /// Bucket → its policy, kept by the S3 front.
    pub bucket_policies: BTreeMap<String, super::s3front::BucketPolicy>,
    /// `(bucket, key prefix)` of objects in the GLACIER storage class
    /// (`POST /__double/s3/cold`): listed and HEADed, never read.
    pub cold_prefixes: Vec<(String, String)>,
}

impl World {
    /// One `debian_bookworm` marketplace image per zone, usable by every
    /// type of the catalogue.
    fn seeded() -> World {
        let now = SystemTime::now();
        let compatible: Vec<String> = PRODUCTS.iter().map(|p| p.name.to_string()).collect();
        let images = ZONES
            .iter()
            .map(|zone| Image {
                id: uuid_v4(),
                name: "Debian Bookworm".into(),
                zone,
                project: MARKETPLACE_PROJECT.into(),
                arch: "x86_64".into(),
                tags: Vec::new(),
                public: true,
                state: "available",
                root_snapshot: uuid_v4(),
                size: 10 * GB,
                created: now,
                modified: now,
                marketplace: Some(LocalImage {
                    label: "debian_bookworm".into(),
                    kind: "instance_sbs".into(),
                    compatible: compatible.clone(),
                }),
            })
            .collect();
        World {
            images,
            ..World::default()
        }
    }

    pub fn server(&self, zone: &str, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.zone == zone && s.id == id)
    }

    pub fn server_mut(&mut self, zone: &str, id: &str) -> Option<&mut Server> {
        self.servers
            .iter_mut()
            .find(|s| s.zone == zone && s.id == id)
    }

    pub fn volume_mut(&mut self, id: &str) -> Option<&mut Volume> {
        self.volumes.iter_mut().find(|v| v.id == id)
    }

    pub fn snapshot_mut(&mut self, id: &str) -> Option<&mut Snapshot> {
        self.snapshots.iter_mut().find(|s| s.id == id)
    }

    pub fn image(&self, zone: &str, id: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.zone == zone && i.id == id)
    }

    /// The server the metadata service answers for: the bound one, else
    /// the last powered on.
    /// The server the metadata service answers `caller` for: by address
    /// when guests have theirs, else the bound server, else the last
    /// powered on.
    pub fn metadata_server_id(&self, caller: IpAddr) -> Option<String> {
        if !self.metadata_addresses.is_empty() {
            return self.metadata_addresses.get(&caller).cloned();
        }
        self.default_metadata_server_id()
    }

    pub fn default_metadata_server_id(&self) -> Option<String> {
        self.metadata_bound
            .clone()
            .or_else(|| self.last_powered_on.clone())
    }

    /// Images built on a snapshot.
    pub fn images_of_snapshot(&self, snapshot: &str) -> Vec<&Image> {
        self.images
            .iter()
            .filter(|i| i.root_snapshot == snapshot)
            .collect()
    }
}
