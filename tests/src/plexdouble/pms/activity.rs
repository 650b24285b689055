//! What `/activities` lists: one entry per running scan or analysis, with
//! the progress its worker reports; an entry disappears when its handle is
//! dropped, so a worker that ends in any way takes its activity with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::plexdouble::ids;

/// Activity types. Scans use Plex's own `library.update.section`; the
/// names for analyses are the double's choice (Plex's are UNCONFIRMED in
/// plex.md).
pub const SCAN: &str = "library.update.section";
/// "Refresh All Metadata" (`force=1`), Plex's own type (plex.md).
pub const REFRESH_ITEMS: &str = "library.refresh.items";
pub const SECTION_ANALYSIS: &str = "library.analyze.section";
pub const SONIC: &str = "media.analyze.sonic";
pub const DEEP_ANALYSIS: &str = "media.analyze.deep";
pub const BUTLER_TASK: &str = "butler.task";

#[derive(Debug, Clone)]
pub struct Activity {
    pub uuid: String,
    pub kind: &'static str,
    pub title: String,
    pub subtitle: String,
    /// 0-100, or -1 while unknown.
    pub progress: i64,
    pub cancellable: bool,
    pub section: Option<i64>,
    cancel: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
pub struct Activities {
    list: Mutex<Vec<Activity>>,
}

impl Activities {
    pub fn start(
        self: &Arc<Self>,
        kind: &'static str,
        title: String,
        section: Option<i64>,
        cancel: Arc<AtomicBool>,
    ) -> ActivityHandle {
        let uuid = ids::uuid_v4();
        self.lock().push(Activity {
            uuid: uuid.clone(),
            kind,
            title,
            subtitle: String::new(),
            progress: -1,
            cancellable: true,
            section,
            cancel,
        });
        ActivityHandle {
            activities: Arc::clone(self),
            uuid,
        }
    }

    pub fn snapshot(&self) -> Vec<Activity> {
        self.lock().clone()
    }

    /// Asks the activity's worker to stop; false for an unknown uuid.
    pub fn cancel(&self, uuid: &str) -> bool {
        match self.lock().iter().find(|a| a.uuid == uuid) {
            Some(activity) => {
                activity.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Activity>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, uuid: &str, change: impl FnOnce(&mut Activity)) {
        if let Some(activity) = self.lock().iter_mut().find(|a| a.uuid == uuid) {
            change(activity);
        }
    }
}

pub struct ActivityHandle {
    activities: Arc<Activities>,
    uuid: String,
}

impl ActivityHandle {
    pub fn progress(&self, percent: i64) {
        self.activities
            .update(&self.uuid, |a| a.progress = percent.clamp(-1, 100));
    }

    pub fn subtitle(&self, text: String) {
        self.activities.update(&self.uuid, |a| a.subtitle = text);
    }
}

impl Drop for ActivityHandle {
    fn drop(&mut self) {
        self.activities.lock().retain(|a| a.uuid != self.uuid);
    }
}
