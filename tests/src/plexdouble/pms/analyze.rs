//! `PUT /library/sections/{id}/analyze`: media analysis of a section's
//! items, which takes time in proportion to their number and records
//! `media_analysis_version` as it goes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;

use super::activity;
use super::library;
use super::state::State;
use super::work::Work;

/// Analysis time per media item, and the least a section takes.
const PER_ITEM: Duration = Duration::from_millis(10);
const AT_LEAST: Duration = Duration::from_secs(1);
const BATCH: usize = 50;

pub fn section(state: &State, section_id: i64, cancel: Arc<AtomicBool>) -> Result<()> {
    let Some(section) = state.db.read(|conn| library::load(conn, section_id))? else {
        return Ok(());
    };
    let work = Work::begin(
        state,
        activity::SECTION_ANALYSIS,
        format!("Analyzing {}", section.name),
        Some(section_id),
        Some(vec![
            "--analyze".into(),
            "--section".into(),
            section_id.to_string(),
        ]),
        cancel,
    );
    work.activity.progress(0);
    state.log.info(format!(
        "Analysis: analyzing section {section_id} '{}'",
        section.name
    ));
    if state.faults.stuck_activity {
        work.freeze(state, &format!("the analysis of section {section_id}"));
        return Ok(());
    }
    let items: Vec<i64> = state.db.read(|conn| {
        let mut statement = conn.prepare(
            "SELECT id FROM media_items WHERE library_section_id = ?1 AND deleted_at IS NULL ORDER BY id",
        )?;
        let ids = statement.query_map([section_id], |row| row.get(0))?;
        Ok(ids.collect::<rusqlite::Result<_>>()?)
    })?;
    let total_time = (PER_ITEM * items.len() as u32).max(AT_LEAST);
    if items.is_empty() && !work.sleep(total_time) {
        return Ok(());
    }
    let mut done = 0;
    for batch in items.chunks(BATCH) {
        let share = total_time.mul_f64(batch.len() as f64 / items.len() as f64);
        if !work.sleep(share) {
            state.log.info(format!(
                "Analysis: section {section_id} stopped after {done} items"
            ));
            return Ok(());
        }
        state.db.write(|conn| {
            let tx = conn.transaction()?;
            {
                let mut update =
                    tx.prepare("UPDATE media_items SET media_analysis_version = 1 WHERE id = ?1")?;
                for id in batch {
                    update.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        done += batch.len();
        work.progress(done as u64, items.len() as u64);
    }
    state
        .log
        .info(format!("Analysis: section {section_id} done: {done} items"));
    Ok(())
}
