//! The `scw-double` command line. Every flag can also be given as
//! `SCW_DOUBLE_<FLAG_IN_UPPER_SNAKE>` (tests and the demo configure it
//! through the environment, as they do the Plex double).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The organization and default project when none is given: fixed so a
/// hand-started double and its callers agree without talking.
pub const DEFAULT_ORGANIZATION: &str = "0b1e5c4a-7d2f-4c1e-9a3b-6f8d2e4c1a01";
pub const DEFAULT_PROJECT: &str = "0b1e5c4a-7d2f-4c1e-9a3b-6f8d2e4c1a02";

#[derive(Debug, Parser)]
#[command(
    name = "scw-double",
    about = "A Scaleway API double (Instance, Block, Marketplace, IAM) and metadata service for tests"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The API double, and the metadata service when asked for.
    Api(ApiArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Address of the API, e.g. 127.0.0.1:8090.
    #[arg(long, env = "SCW_DOUBLE_LISTEN")]
    pub listen: SocketAddr,
    /// Address of the metadata service (what 169.254.42.42:80 is to a
    /// real instance); none when not given.
    #[arg(long, env = "SCW_DOUBLE_METADATA_LISTEN")]
    pub metadata_listen: Option<SocketAddr>,
    /// Admin secret keys, holding every permission (repeatable and/or
    /// comma-separated).
    // Checked in `run`, not by clap, whose errors would print the value.
    #[arg(
        long = "secret-key",
        env = "SCW_DOUBLE_SECRET_KEY",
        value_delimiter = ',',
        required = true,
        hide_env_values = true
    )]
    pub secret_keys: Vec<String>,
    #[arg(long, env = "SCW_DOUBLE_ORGANIZATION_ID", default_value = DEFAULT_ORGANIZATION, value_parser = uuid_arg)]
    pub organization_id: String,
    /// The default project (of the admin keys and of new API keys).
    #[arg(long, env = "SCW_DOUBLE_PROJECT_ID", default_value = DEFAULT_PROJECT, value_parser = uuid_arg)]
    pub project_id: String,
    /// How long each asynchronous state lasts (starting, stopping,
    /// creating, deleting).
    #[arg(long, env = "SCW_DOUBLE_TRANSITION_DELAY", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub transition_delay: Duration,
    /// Most servers a project may hold.
    #[arg(long, env = "SCW_DOUBLE_QUOTA_SERVERS")]
    pub quota_servers: Option<u64>,
    /// Most GB of Block volumes a project may hold.
    #[arg(long, env = "SCW_DOUBLE_QUOTA_VOLUMES_GB")]
    pub quota_volumes_gb: Option<u64>,
    /// A shell command started (not waited on) each time a server becomes
    /// running, with SCW_DOUBLE_SERVER_ID, SCW_DOUBLE_ZONE,
    /// SCW_DOUBLE_API_URL, SCW_DOUBLE_METADATA_URL and SCW_DOUBLE_USER_DATA
    /// (a file holding the `cloud-init` user data, absent when unset).
    #[arg(long, env = "SCW_DOUBLE_ON_POWERON")]
    pub on_poweron: Option<String>,
    /// Where user-data files for --on-poweron go (a temporary folder when
    /// not given).
    #[arg(long, env = "SCW_DOUBLE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// `ACCESS:SECRET` pairs that `POST /api-keys` hands out in order
    /// before generating keys: on Scaleway an API key is also an Object
    /// Storage key, so a test world starts its S3 server with these.
    #[arg(
        long = "api-key-pool",
        env = "SCW_DOUBLE_API_KEY_POOL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_key_pool: Vec<String>,
    /// The Owner's own Object Storage access keys (bootstrap's S3 key in
    /// a test world): IAM shows them as the Owner's user keys; the S3
    /// front lets them do what bucket policies allow the Owner.
    #[arg(
        long = "owner-access-key",
        env = "SCW_DOUBLE_OWNER_ACCESS_KEY",
        value_delimiter = ','
    )]
    pub owner_access_keys: Vec<String>,
    /// Address of the S3 front (Object Storage's access control before a
    /// real S3 server); none when not given. Needs --s3-backend.
    #[arg(long, env = "SCW_DOUBLE_S3_FRONT", requires = "s3_backend")]
    pub s3_front: Option<SocketAddr>,
    /// The S3 server the front forwards to (`host:port`).
    #[arg(long, env = "SCW_DOUBLE_S3_BACKEND")]
    pub s3_backend: Option<SocketAddr>,
}

fn uuid_arg(text: &str) -> Result<String, String> {
    if super::ids::is_uuid(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err("not a UUID".into())
    }
}
