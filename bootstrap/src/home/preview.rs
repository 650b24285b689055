//! What an install would do, writing nothing (`--dry-run`), and the checks
//! made before anything is touched: both DBs present, the same filesystem
//! (the swap is a rename), enough free space.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use runner::plexdb::watchstate::{self, WatchStateReport};
use runner::plexdb::{RemapReport, remap, stats};
use serde::Serialize;

use super::install::{InstallError, InstallPlan, Step};

/// Room for SQLite journals and the WAL while the copies are made.
const JOURNALS: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct Space {
    /// A backup of the `Databases` folder (less Plex's dated backups, which
    /// are not copied), plus a copy of the new DB when paths are remapped,
    /// plus room for journals, plus the margin.
    pub needed: u64,
    /// Of `needed`: what stays free on the disk Plex lives on, for Plex
    /// and whatever else uses that disk (`[home] free_space_margin`).
    pub margin: u64,
    pub available: u64,
    pub filesystem: String,
}

impl Space {
    pub fn ensure_enough(self) -> Result<Space, String> {
        if self.available >= self.needed {
            return Ok(self);
        }
        Err(format!(
            "not enough free space on {}: need {}, have {} (a backup of the Databases folder is taken first, and {} stay free: [home] free_space_margin)",
            self.filesystem,
            mib(self.needed),
            mib(self.available),
            mib(self.margin)
        ))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// A library and type whose live count changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountChange {
    pub library: String,
    pub type_name: String,
    pub now: u64,
    pub after: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstallPreview {
    pub watch_state: WatchStateReport,
    pub remap: Option<RemapReport>,
    /// Every (library, type) present now or after, by library name.
    pub counts: Vec<CountChange>,
    pub space: Space,
}

/// What [`super::install`] would do; reads both DBs, writes nothing.
pub fn plan_install(plan: &InstallPlan) -> Result<InstallPreview, InstallError> {
    let fail = |step, cause: String| InstallError::NothingChanged {
        step,
        cause: super::install::one_line(&cause),
        plex_restarted: false,
    };
    let space = preflight(plan).map_err(|e| fail(Step::Preflight, e))?;
    let watch_state = watchstate::preview(&plan.home_db(), &plan.incoming_db(), plan.snapshot_time)
        .map_err(|e| fail(Step::MergeWatchState, e.to_string()))?;
    let remap = if plan.mappings.is_empty() {
        None
    } else {
        Some(
            remap::dry_run(&plan.incoming_db(), &plan.mappings)
                .map_err(|e| fail(Step::Remap, e.to_string()))?,
        )
    };
    let now = stats::collect(&plan.home_db()).map_err(|e| fail(Step::Preflight, e.to_string()))?;
    let mut table: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for (stats, after) in [(&now, false), (&plan.expected, true)] {
        for library in &stats.libraries {
            for (type_name, count) in &library.items {
                let entry = table
                    .entry((library.name.clone(), type_name.clone()))
                    .or_default();
                if after {
                    entry.1 = count.live
                } else {
                    entry.0 = count.live
                }
            }
        }
    }
    let counts = table
        .into_iter()
        .map(|((library, type_name), (now, after))| CountChange {
            library,
            type_name,
            now,
            after,
        })
        .collect();
    Ok(InstallPreview {
        watch_state,
        remap,
        counts,
        space,
    })
}

/// Checks made before touching anything; returns the space situation.
pub(crate) fn preflight(plan: &InstallPlan) -> Result<Space, String> {
    for db in [plan.home_db(), plan.incoming_db()] {
        if !db.is_file() {
            return Err(format!("no Plex library DB at {}", db.display()));
        }
    }
    let home = std::fs::canonicalize(&plan.databases_dir).map_err(|e| e.to_string())?;
    let incoming = std::fs::canonicalize(&plan.incoming_dir).map_err(|e| e.to_string())?;
    if home == incoming {
        return Err("the result folder is the home Databases folder itself".into());
    }
    let parent = home.parent().unwrap_or(Path::new("/"));
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    if dev(parent)? != dev(&incoming)? {
        return Err(format!(
            "{} is not on the same filesystem as {}: extract the result beside it",
            incoming.display(),
            home.display()
        ));
    }
    let fs =
        nix::sys::statvfs::statvfs(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let available = fs.blocks_available() as u64 * fs.fragment_size() as u64;
    let margin = plan
        .free_space_margin
        .unwrap_or_else(|| runner::archive::margin(available));
    let dated = super::dated::list(&home).map_err(|e| e.to_string())?;
    let backed_up = folder_size(&home)?.saturating_sub(super::dated::tally(&dated).bytes);
    let mut needed = backed_up + JOURNALS + margin;
    if !plan.mappings.is_empty() {
        needed += std::fs::metadata(plan.incoming_db())
            .map(|m| m.len())
            .unwrap_or(0);
    }
    Ok(Space {
        needed,
        margin,
        available,
        filesystem: parent.display().to_string(),
    })
}

fn folder_size(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        total += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
