//! The `plex-double` command line. Every flag can also be given as
//! `PLEX_DOUBLE_<FLAG_IN_UPPER_SNAKE>` (the runner starts the double and
//! tests configure it through the environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use super::faults::Fault;

/// The PMS version the double reports unless told otherwise: the version
/// the runner pins.
pub const DEFAULT_VERSION: &str = "1.41.3.9314-a0bfb8370";

#[derive(Debug, Parser)]
#[command(
    name = "plex-double",
    about = "A Plex Media Server double and a plex.tv double for tests"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Plex Media Server double.
    Server(ServerArgs),
    /// The plex.tv double (claim tokens, devices, the account).
    Plextv(PlexTvArgs),
    /// The stand-in `Plex Media Scanner` process (started by the server).
    #[command(hide = true)]
    ScannerChild(ScannerChildArgs),
    /// The stand-in Plex image's `/init`: pms-docker's first-run setup,
    /// then the server as the plex user. Configured by the image's
    /// variables (PLEX_UID, PLEX_GID, PLEX_CLAIM, ADVERTISE_IP,
    /// ALLOWED_NETWORKS, ...); what `/init` runs (see `container`).
    Init,
    /// The stand-in Plex image's `/healthcheck.sh`: exit 0 when
    /// `/identity` answers on Plex's port.
    Healthcheck,
    /// The stand-in Plex image's `Plex SQLite`: `[-readonly] DB SQL...`
    /// with Plex's collations.
    Sqlite(SqliteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The `Plex Media Server` app-support folder (created if missing).
    #[arg(long, env = "PLEX_DOUBLE_APP_SUPPORT")]
    pub app_support: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:32400.
    #[arg(long, env = "PLEX_DOUBLE_LISTEN")]
    pub listen: SocketAddr,
    /// The UDP port GDM discovery answers on, on the listen address, while
    /// the `GdmEnabled` pref is on (real Plex: 32414).
    #[arg(long, env = "PLEX_DOUBLE_GDM_PORT", default_value = "32414")]
    pub gdm_port: u16,
    /// The PMS version reported by /identity.
    #[arg(long = "version", env = "PLEX_DOUBLE_VERSION", default_value = DEFAULT_VERSION)]
    pub pms_version: String,
    /// Base URL of plex.tv (or of the plex.tv double).
    #[arg(
        long,
        env = "PLEX_DOUBLE_PLEXTV_URL",
        default_value = "https://plex.tv"
    )]
    pub plextv_url: String,
    /// Comma-separated CIDRs allowed without a token while unclaimed (like
    /// the docker image's ALLOWED_NETWORKS); written to the
    /// `allowedNetworks` pref at start when given.
    #[arg(long, env = "PLEX_DOUBLE_ALLOWED_NETWORKS", default_value = "")]
    pub allowed_networks: String,
    /// Sonic analysis speed, tracks per second.
    #[arg(long, env = "PLEX_DOUBLE_SONIC_RATE", default_value = "50", value_parser = positive_rate)]
    pub sonic_rate: f64,
    /// How long after it starts listening library writes and Butler starts
    /// are answered 400 "the server is still starting up" (0s: never).
    #[arg(long, env = "PLEX_DOUBLE_STARTUP_WINDOW", default_value = "2s", value_parser = humantime::parse_duration)]
    pub startup_window: Duration,
    /// Items a second the metadata update queue processes after a scan.
    #[arg(long, env = "PLEX_DOUBLE_METADATA_RATE", default_value = "200", value_parser = positive_rate)]
    pub metadata_rate: f64,
    /// How long a scan waits for a file's first bytes before calling it
    /// unreadable.
    #[arg(long, env = "PLEX_DOUBLE_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Which known files a scan reads: `read` gives every one a header
    /// read (lessons.md rule 1: a listed file that cannot be read counts
    /// as gone); `listed` keeps a known file the listing shows without
    /// reading it (what the scale benchmark uses: 456k reads through FUSE
    /// would measure the double, not the runner).
    #[arg(long, env = "PLEX_DOUBLE_KNOWN_FILES", default_value = "read")]
    pub known_files: KnownFiles,
    /// How long after a successful claim the token lands in Preferences.xml.
    #[arg(long, env = "PLEX_DOUBLE_CLAIM_DELAY", default_value = "3s", value_parser = humantime::parse_duration)]
    pub claim_delay: Duration,
    /// How long the Butler's DeepMediaAnalysis runs.
    #[arg(long, env = "PLEX_DOUBLE_DEEP_ANALYSIS_DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub deep_analysis_duration: Duration,
    /// Faults to inject (repeatable and/or comma-separated): slow-start=DUR,
    /// burst-5xx=N[@DUR], crash-after=DUR, crash-on-scan, stuck-activity,
    /// stuck-sonic.
    #[arg(long = "fault", env = "PLEX_DOUBLE_FAULT", value_delimiter = ',', value_parser = Fault::parse)]
    pub faults: Vec<Fault>,
}

#[derive(Debug, Clone, Args)]
pub struct PlexTvArgs {
    /// Address to listen on.
    #[arg(long, env = "PLEX_DOUBLE_LISTEN")]
    pub listen: SocketAddr,
    /// The account's token (X-Plex-Token) that the double accepts.
    #[arg(long, env = "PLEX_DOUBLE_ACCOUNT_TOKEN")]
    pub account_token: String,
    /// Whether the account has an active Plex Pass.
    #[arg(long, env = "PLEX_DOUBLE_PLEX_PASS", default_value = "true", action = ArgAction::Set)]
    pub plex_pass: bool,
    #[arg(long, env = "PLEX_DOUBLE_USERNAME", default_value = "burst-user")]
    pub username: String,
    /// Lifetime of a claim token.
    #[arg(long, env = "PLEX_DOUBLE_CLAIM_TTL", default_value = "240s", value_parser = humantime::parse_duration)]
    pub claim_ttl: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ScannerChildArgs {
    /// What the real scanner would be doing (shown in its argv only).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub what: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SqliteArgs {
    /// The sqlite3 shell's arguments, `-readonly` among them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KnownFiles {
    Read,
    Listed,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}
