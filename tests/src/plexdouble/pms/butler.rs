//! The Butler: Plex's maintenance tasks, startable by `POST /butler/{task}`.
//! MusicAnalysis (Sonic) and DeepMediaAnalysis do real, observable work;
//! RefreshLibraries queues a scan of every section; the others just run
//! briefly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::activity;
use super::library;
use super::prefs::Preferences;
use super::scan::Job;
use super::sonic;
use super::state::State;
use super::work::Work;

#[derive(Debug)]
pub struct TaskDef {
    pub name: &'static str,
    pub title: &'static str,
    pub interval_days: i64,
    /// The pref that enables it: a `ButlerTask*` boolean, or a `*Behavior`
    /// pref (enabled unless `never`).
    pub pref: &'static str,
}

const fn task(
    name: &'static str,
    title: &'static str,
    interval_days: i64,
    pref: &'static str,
) -> TaskDef {
    TaskDef {
        name,
        title,
        interval_days,
        pref,
    }
}

pub const TASKS: &[TaskDef] = &[
    task(
        "BackupDatabase",
        "Backup Database",
        3,
        "ButlerTaskBackupDatabase",
    ),
    task(
        "CleanOldBundles",
        "Clean Old Bundles",
        7,
        "ButlerTaskCleanOldBundles",
    ),
    task(
        "CleanOldCacheFiles",
        "Clean Old Cache Files",
        7,
        "ButlerTaskCleanOldCacheFiles",
    ),
    task(
        "DeepMediaAnalysis",
        "Perform extensive media analysis",
        1,
        "ButlerTaskDeepMediaAnalysis",
    ),
    task(
        "GenerateChapterThumbs",
        "Generate Chapter Thumbnails",
        1,
        "GenerateChapterThumbBehavior",
    ),
    task(
        "GenerateMediaIndexFiles",
        "Generate Media Index Files",
        1,
        "GenerateBIFBehavior",
    ),
    task(
        "LoudnessAnalysis",
        "Perform loudness analysis",
        1,
        "LoudnessAnalysisBehavior",
    ),
    task(
        "MusicAnalysis",
        "Perform Sonic analysis",
        1,
        "MusicAnalysisBehavior",
    ),
    task(
        "OptimizeDatabase",
        "Optimize Database",
        7,
        "ButlerTaskOptimizeDatabase",
    ),
    task(
        "RefreshLibraries",
        "Refresh Libraries",
        1,
        "ButlerTaskRefreshLibraries",
    ),
    task(
        "RefreshLocalMedia",
        "Refresh Local Metadata",
        3,
        "ButlerTaskRefreshLocalMedia",
    ),
    task(
        "RefreshPeriodicMetadata",
        "Refresh Periodic Metadata",
        1,
        "ButlerTaskRefreshPeriodicMetadata",
    ),
    task(
        "UpgradeMediaAnalysis",
        "Upgrade Media Analysis",
        1,
        "ButlerTaskUpgradeMediaAnalysis",
    ),
];

pub fn find(name: &str) -> Option<&'static TaskDef> {
    TASKS.iter().find(|t| t.name == name)
}

pub fn enabled(task: &TaskDef, prefs: &Preferences) -> bool {
    if task.pref.ends_with("Behavior") {
        super::prefs::find(task.pref).is_some_and(|def| prefs.value(def) != "never")
    } else {
        prefs.flag(task.pref)
    }
}

/// Running tasks and their stop flags.
#[derive(Default)]
pub struct Butler {
    running: Mutex<HashMap<&'static str, Arc<AtomicBool>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Started,
    AlreadyRunning,
    Unknown,
}

impl Butler {
    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, Arc<AtomicBool>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    pub fn running_count(&self) -> usize {
        self.lock().len()
    }

    /// Asks a running task to stop; false for a task that is not running
    /// (Plex answers 404 to stopping an idle task, as to an unknown one).
    pub fn stop(&self, name: &str) -> bool {
        match self.lock().get(name) {
            Some(cancel) => {
                cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    pub fn stop_all(&self) {
        for cancel in self.lock().values() {
            cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// Starts a task on its own thread (a manual start ignores whether the
/// task is enabled, as in Plex).
pub fn start(state: &Arc<State>, name: &str) -> Start {
    let Some(task) = find(name) else {
        return Start::Unknown;
    };
    let cancel = {
        let mut running = state.butler.lock();
        if running.contains_key(task.name) {
            return Start::AlreadyRunning;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        running.insert(task.name, Arc::clone(&cancel));
        cancel
    };
    state.log.info(format!("Butler: starting {}", task.name));
    let thread_state = Arc::clone(state);
    let spawned = std::thread::Builder::new()
        .name(format!("butler-{}", task.name))
        .spawn(move || {
            run(&thread_state, task, cancel);
            thread_state.butler.lock().remove(task.name);
            thread_state
                .log
                .info(format!("Butler: {} finished", task.name));
        });
    if let Err(error) = spawned {
        state.butler.lock().remove(task.name);
        state
            .log
            .error(format!("Butler: cannot start {}: {error}", task.name));
    }
    Start::Started
}

fn run(state: &Arc<State>, task: &'static TaskDef, cancel: Arc<AtomicBool>) {
    match task.name {
        "MusicAnalysis" => sonic::run(state, cancel),
        "DeepMediaAnalysis" => deep_analysis(state, cancel),
        "RefreshLibraries" => match state.db.read(library::list) {
            Ok(sections) => {
                for section in sections {
                    state.queue.push(Job::Scan {
                        section: section.id,
                        force: false,
                        path: None,
                    });
                }
            }
            Err(error) => state
                .log
                .error(format!("Butler: RefreshLibraries: {error:#}")),
        },
        _ => {
            let work = Work::begin(
                state,
                activity::BUTLER_TASK,
                task.title.to_string(),
                None,
                None,
                cancel,
            );
            work.activity.progress(-1);
            work.sleep(Duration::from_secs(1));
        }
    }
}

/// `--analyze-deeply` over the whole library: an activity and the scanner
/// process for `--deep-analysis-duration`.
fn deep_analysis(state: &State, cancel: Arc<AtomicBool>) {
    let work = Work::begin(
        state,
        activity::DEEP_ANALYSIS,
        "Deep media analysis".into(),
        None,
        Some(vec!["--analyze-deeply".into()]),
        cancel,
    );
    work.activity.progress(0);
    if state.faults.stuck_activity {
        work.freeze(state, "DeepMediaAnalysis");
        return;
    }
    let total = state.config.deep_analysis_duration;
    let started = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= total {
            return;
        }
        work.progress(elapsed.as_millis() as u64, total.as_millis() as u64);
        if !work.sleep((total - elapsed).min(Duration::from_millis(200))) {
            state.log.info("Butler: DeepMediaAnalysis stopped");
            return;
        }
    }
}
