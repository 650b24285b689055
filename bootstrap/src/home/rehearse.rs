//! A canary's home side (`fetch --canary`): the install's checks on the
//! downloaded result, a scratch copy, with the home Plex left running and
//! its DB only read (read-only connections): the watch state merged in,
//! paths remapped, the integrity check, the counts against what the run
//! recorded.

use runner::plexdb::{stats, watchstate};

use super::install::{InstallPlan, check_incoming, remap_incoming};
use super::preview::preflight;

/// One line of what was checked, or what failed.
pub fn rehearse(plan: &InstallPlan) -> Result<String, String> {
    preflight(plan)?;
    let merged = watchstate::merge(&plan.home_db(), &plan.incoming_db(), plan.snapshot_time)
        .map_err(|e| format!("merging the watch state into a copy: {e}"))?;
    if !plan.mappings.is_empty() {
        remap_incoming(plan).map_err(|e| format!("remapping the copy's paths: {e}"))?;
    }
    let integrity = check_incoming(plan, plan.plex_sqlite.as_ref())
        .map_err(|e| format!("the copy's integrity check: {e}"))?;
    let counts = stats::collect(&plan.incoming_db()).map_err(|e| e.to_string())?;
    let mut checked = 0;
    for library in &plan.expected.libraries {
        for (type_name, expected) in &library.items {
            let got = counts
                .library(&library.name)
                .and_then(|l| l.items.get(type_name))
                .map_or(0, |c| c.live);
            if got != expected.live {
                return Err(format!(
                    "library {:?} has {got} {type_name} items in the result, the run recorded {}",
                    library.name, expected.live
                ));
            }
            checked += 1;
        }
    }
    Ok(format!(
        "the result merged into a scratch copy ({} watch-state rows), integrity {integrity}, {checked} library counts as the run recorded; the home Plex untouched",
        merged.settings_updated + merged.settings_inserted,
    ))
}
