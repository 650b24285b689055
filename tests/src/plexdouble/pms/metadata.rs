//! The metadata update queue. Real Plex keeps processing the items a scan
//! added (matching, agents) after the scan's activity has ended; clients
//! wait for `GET /library/sections/{id}/timeline` to report
//! `updateQueueSize="0"` (python-plexapi's tests/test__prepare.py, commit
//! a8d051f). The double queues every item a scan inserts (unmatched: a
//! `local://` guid, `refreshed_at` NULL) and one worker processes them at
//! `--metadata-rate` items a second: refreshed, and matched to a `plex://`
//! guid unless a photo (photos stay `local://`). No activity is shown for
//! it, as on real Plex.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::library::metadata_type_name;
use super::state::State;
use crate::plexdouble::ids;

#[derive(Default)]
pub struct UpdateQueue {
    /// Item ids waiting, by section.
    waiting: Mutex<BTreeMap<i64, VecDeque<i64>>>,
}

impl UpdateQueue {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, VecDeque<i64>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn enqueue(&self, section: i64, items: &[i64]) {
        if !items.is_empty() {
            self.lock().entry(section).or_default().extend(items);
        }
    }

    /// Items of `section` not processed yet (the one in hand included).
    pub fn size(&self, section: i64) -> usize {
        self.lock().get(&section).map_or(0, VecDeque::len)
    }

    fn front(&self) -> Option<(i64, i64)> {
        self.lock()
            .iter()
            .find_map(|(section, items)| items.front().map(|id| (*section, *id)))
    }

    fn pop(&self, section: i64) {
        if let Some(items) = self.lock().get_mut(&section) {
            items.pop_front();
        }
    }
}

/// The queue's worker, for the life of the server. An item is counted
/// until its update is written.
pub fn spawn_worker(state: Arc<State>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let pause = Duration::from_secs_f64(1.0 / state.config.metadata_rate);
    std::thread::Builder::new()
        .name("metadata-queue".into())
        .spawn(move || {
            while !state.stopping.load(Ordering::SeqCst) {
                let Some((section, id)) = state.metadata.front() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                std::thread::sleep(pause);
                if let Err(error) = process(&state, id) {
                    state
                        .log
                        .error(format!("Metadata: cannot update item {id}: {error:#}"));
                }
                state.metadata.pop(section);
                if state.metadata.size(section) == 0 {
                    state.log.info(format!(
                        "Metadata: update queue of section {section} drained"
                    ));
                }
            }
        })
}

fn process(state: &State, id: i64) -> Result<()> {
    state.db.write(|conn| {
        let kind: Option<i64> = conn
            .query_row(
                "SELECT metadata_type FROM metadata_items WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        // Deleted since it was queued: nothing to update.
        let Some(kind) = kind else { return Ok(()) };
        let guid = if matches!(kind, 13 | 14) {
            format!("local://{id}")
        } else {
            let name = metadata_type_name(kind).unwrap_or("item");
            format!("plex://{name}/{}", ids::hex(24))
        };
        conn.execute(
            "UPDATE metadata_items SET guid = ?2, refreshed_at = ?3, updated_at = ?3 WHERE id = ?1",
            params![id, guid, ids::now()],
        )?;
        Ok(())
    })
}
