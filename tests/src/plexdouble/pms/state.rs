//! Everything the PMS double's handlers and workers share.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::activity::Activities;
use super::butler::Butler;
use super::db::Db;
use super::layout::Layout;
use super::log::ServerLog;
use super::metadata::UpdateQueue;
use super::plextv_client::PlexTv;
use super::prefs::Preferences;
use super::scan::Queue;
use super::startup::Startup;
use crate::plexdouble::cli::KnownFiles;
use crate::plexdouble::faults::Faults;

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub version: String,
    pub sonic_rate: f64,
    pub header_timeout: Duration,
    pub known_files: KnownFiles,
    pub claim_delay: Duration,
    pub deep_analysis_duration: Duration,
    pub metadata_rate: f64,
}

pub struct State {
    pub config: Config,
    pub layout: Layout,
    pub prefs: Mutex<Preferences>,
    pub log: ServerLog,
    pub db: Db,
    pub activities: Arc<Activities>,
    pub queue: Queue,
    pub metadata: UpdateQueue,
    pub startup: Startup,
    pub butler: Butler,
    pub faults: Faults,
    /// Set once on SIGTERM/SIGINT: every worker winds down.
    pub stopping: Arc<AtomicBool>,
    pub plextv: PlexTv,
    /// A claim was accepted and its token is about to be written.
    pub claim_pending: AtomicBool,
    pub runtime: tokio::runtime::Handle,
}

impl State {
    pub fn prefs(&self) -> MutexGuard<'_, Preferences> {
        self.prefs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn machine_identifier(&self) -> String {
        self.prefs().machine_identifier().to_string()
    }

    /// The server's plex.tv token, once claimed.
    pub fn online_token(&self) -> Option<String> {
        self.prefs().online_token().map(str::to_string)
    }

    pub fn flag(&self, id: &str) -> bool {
        self.prefs().flag(id)
    }
}
