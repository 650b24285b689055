//! "Refresh All Metadata" (`refresh?force=1`): after its ordinary scan,
//! Plex downloads fresh metadata for every item of the section from the
//! internet, which takes hours on a big library (python-plexapi
//! `LibrarySection.refresh`, commit a8d051f, plexapi/library.py: "Forces a
//! download of fresh media information from the internet. This can take a
//! long time"). It is not a deeper walk: the scan before it is the same as
//! without `force`. The double shows one `library.refresh.items` activity
//! and rewrites every live item's `refreshed_at` and `updated_at`, one item
//! per `1 / --metadata-rate` seconds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use rusqlite::params;

use super::activity;
use super::state::State;
use super::work::Work;
use crate::plexdouble::ids;

pub fn all_metadata(state: &State, section: i64, cancel: Arc<AtomicBool>) -> Result<()> {
    let items: Vec<i64> = state.db.read(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id FROM metadata_items WHERE library_section_id = ?1 AND deleted_at IS NULL ORDER BY id",
        )?;
        let ids = stmt
            .query_map([section], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    })?;
    let work = Work::begin(
        state,
        activity::REFRESH_ITEMS,
        format!("Refreshing metadata of section {section}"),
        Some(section),
        None,
        cancel,
    );
    work.activity.progress(0);
    state.log.info(format!(
        "Metadata: refreshing all metadata of section {section} (force=1): {} items to download again",
        items.len()
    ));
    let pause = Duration::from_secs_f64(1.0 / state.config.metadata_rate);
    for (done, id) in items.iter().enumerate() {
        if !work.sleep(pause) {
            state.log.info(format!(
                "Metadata: refresh of section {section} cancelled after {done} items"
            ));
            return Ok(());
        }
        state.db.write(|conn| {
            conn.execute(
                "UPDATE metadata_items SET refreshed_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, ids::now()],
            )?;
            Ok(())
        })?;
        work.progress(done as u64 + 1, items.len() as u64);
    }
    state.log.info(format!(
        "Metadata: refresh of section {section} done: {} items refreshed",
        items.len()
    ));
    Ok(())
}
