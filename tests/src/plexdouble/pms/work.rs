//! One piece of background work (a scan, an analysis, a Butler task): its
//! activity, its scanner process and its stop conditions, bundled so that
//! ending the work in any way removes both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::activity::ActivityHandle;
use super::scanner_process::ScannerProcess;
use super::state::State;

pub struct Work {
    pub activity: ActivityHandle,
    _scanner: Option<ScannerProcess>,
    cancel: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Work {
    /// Starts the activity and, when `scanner_args` is given, the scanner
    /// process.
    pub fn begin(
        state: &State,
        kind: &'static str,
        title: String,
        section: Option<i64>,
        scanner_args: Option<Vec<String>>,
        cancel: Arc<AtomicBool>,
    ) -> Work {
        // The scanner first: whoever sees the activity also finds it.
        let scanner = scanner_args.and_then(|args| match ScannerProcess::spawn(&args) {
            Ok(process) => Some(process),
            Err(error) => {
                state.log.error(format!("{title}: {error:#}"));
                None
            }
        });
        let activity = state
            .activities
            .start(kind, title, section, Arc::clone(&cancel));
        Work {
            activity,
            _scanner: scanner,
            cancel,
            stopping: Arc::clone(&state.stopping),
        }
    }

    /// Cancelled, or the server is stopping.
    pub fn stopped(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst)
    }

    pub fn progress(&self, done: u64, total: u64) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        self.activity.progress(percent as i64);
    }

    /// Sleeps up to `duration`, waking early when stopped; false if stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let slice = Duration::from_millis(50);
        let mut left = duration;
        while !left.is_zero() {
            if self.stopped() {
                return false;
            }
            let step = left.min(slice);
            std::thread::sleep(step);
            left -= step;
        }
        !self.stopped()
    }

    /// The `stuck-activity` fault: the work (`what`) never finishes. Its
    /// activity (progress frozen) and scanner stay, no DB work is done, and
    /// a cancel is ignored as a hung Plex ignores it; only the server's
    /// stop ends it. The log says when the frozen work saw a cancel: what a
    /// test waits on before it checks that nothing moved.
    pub fn freeze(&self, state: &State, what: &str) {
        state
            .log
            .warn(format!("fault stuck-activity: {what} will never finish"));
        let mut cancel_seen = false;
        while !self.stopping.load(Ordering::SeqCst) {
            if !cancel_seen && self.cancel.load(Ordering::SeqCst) {
                state
                    .log
                    .warn(format!("fault stuck-activity: {what} ignores its cancel"));
                cancel_seen = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
