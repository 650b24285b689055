//! Plex runs one scanner job at a time: requested scans and analyses wait
//! in a queue and a single worker takes them in order. A section counts
//! as refreshing from the request until its scan ends, so that a poller
//! never sees "idle" between the request and the start.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Scan {
        section: i64,
        force: bool,
        path: Option<PathBuf>,
    },
    Analyze {
        section: i64,
    },
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Job>,
    running: Option<(Job, Arc<AtomicBool>)>,
}

#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    wake: Condvar,
}

fn is_scan_of(job: &Job, section: Option<i64>) -> bool {
    matches!(job, Job::Scan { section: s, .. } if section.is_none_or(|wanted| wanted == *s))
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job` unless the same job is already waiting.
    pub fn push(&self, job: Job) {
        let mut inner = self.lock();
        if !inner.pending.contains(&job) {
            inner.pending.push_back(job);
        }
        self.wake.notify_all();
    }

    /// Drops waiting scans of `section` (all sections for `None`) and asks
    /// a running one to stop.
    pub fn cancel_scans(&self, section: Option<i64>) {
        let mut inner = self.lock();
        inner.pending.retain(|job| !is_scan_of(job, section));
        if let Some((job, cancel)) = &inner.running
            && is_scan_of(job, section)
        {
            cancel.store(true, Ordering::SeqCst);
        }
    }

    pub fn refreshing(&self, section: i64) -> bool {
        let inner = self.lock();
        inner.pending.iter().any(|j| is_scan_of(j, Some(section)))
            || inner
                .running
                .as_ref()
                .is_some_and(|(j, _)| is_scan_of(j, Some(section)))
    }

    /// The next job and its cancel flag; `None` once `stopping` is set.
    pub fn next(&self, stopping: &AtomicBool) -> Option<(Job, Arc<AtomicBool>)> {
        let mut inner = self.lock();
        loop {
            if stopping.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(job) = inner.pending.pop_front() {
                let cancel = Arc::new(AtomicBool::new(false));
                inner.running = Some((job.clone(), Arc::clone(&cancel)));
                return Some((job, cancel));
            }
            // Bounded waits: `stopping` is not signalled through the condvar.
            inner = self
                .wake
                .wait_timeout(inner, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn finish(&self) {
        self.lock().running = None;
    }
}
