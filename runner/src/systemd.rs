//! What the runner tells systemd (`Type=notify`): how the run is going, and
//! that it is alive for the unit's watchdog (`WatchdogSec=`).
//!
//! A beat is sent only where the run's work is seen to move on: a phase
//! starting or ending, a poll of Plex answered, bytes of a transfer moving,
//! a readiness probe answered. Never from a timer of its own: a runner
//! frozen anywhere (a deadlock, a hung syscall on a dead FUSE mount, a
//! stuck HTTP call, SIGSTOP) stops beating, and systemd kills it and starts
//! it again; the run resumes from its checkpoint.
//!
//! Everything here is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The runner's unit on the image (`image/systemd/`).
pub const RUNNER_UNIT: &str = "plex-burst-runner.service";

/// Beats closer than this are one: a byte counter calls [`beat`] per chunk.
const MIN_GAP: Duration = Duration::from_secs(1);

static ARMED: AtomicBool = AtomicBool::new(false);
/// Milliseconds since [`epoch`] at the last beat sent.
static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Sends `state` (e.g. `READY=1`, `STATUS=…`).
pub fn notify(state: &str) {
    if under_systemd() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Custom(state)]);
    }
}

/// Sets the watchdog to `interval` (the run's `deadlines.watchdog`: it
/// overrides the unit's `WatchdogSec=`) and starts beating.
pub fn arm_watchdog(interval: Duration) {
    if !under_systemd() {
        return;
    }
    notify(&format!("WATCHDOG_USEC={}", interval.as_micros()));
    ARMED.store(true, Ordering::SeqCst);
    LAST_BEAT_MS.store(0, Ordering::SeqCst);
    beat();
}

/// The run moved on: tells the watchdog (at most once per [`MIN_GAP`]).
/// Cheap, callable from any thread.
pub fn beat() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    // +1: a beat at the epoch itself must not read as "never".
    let now = epoch().elapsed().as_millis() as u64 + 1;
    let last = LAST_BEAT_MS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < MIN_GAP.as_millis() as u64 {
        return;
    }
    if LAST_BEAT_MS
        .compare_exchange(last, now, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        notify("WATCHDOG=1");
    }
}

/// Whether systemd gave up restarting `unit` (its `StartLimitBurst` hit):
/// nothing will start it again. False outside systemd or when unsure.
pub fn gave_up_on(unit: &str) -> bool {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    std::process::Command::new("systemctl")
        .args([
            "show",
            unit,
            "--property=ActiveState",
            "--property=SubState",
        ])
        .output()
        .is_ok_and(|out| {
            out.status.success() && failed_for_good(&String::from_utf8_lossy(&out.stdout))
        })
}

/// `systemctl show -p ActiveState -p SubState`'s answer for a unit failed
/// with no restart to come. Not `Result=start-limit-hit`: systemd 252
/// keeps the last run's result (`exit-code`) when the limit stops it (seen
/// in the VM test). A failure with a restart to come is
/// `activating`/`auto-restart` (since systemd 254 briefly
/// `failed-before-auto-restart` first).
fn failed_for_good(show: &str) -> bool {
    let value = |key: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    };
    value("ActiveState") == Some("failed") && value("SubState") == Some("failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_unit_failed_with_no_restart_to_come_is_given_up() {
        assert!(failed_for_good("ActiveState=failed\nSubState=failed\n"));
        assert!(failed_for_good("SubState=failed\nActiveState=failed\n"));
        // Failed, to be restarted (systemd 252; 254+); running; done.
        assert!(!failed_for_good(
            "ActiveState=activating\nSubState=auto-restart\n"
        ));
        assert!(!failed_for_good(
            "ActiveState=failed\nSubState=failed-before-auto-restart\n"
        ));
        assert!(!failed_for_good("ActiveState=active\nSubState=running\n"));
        assert!(!failed_for_good("ActiveState=inactive\nSubState=dead\n"));
        assert!(!failed_for_good(""));
    }
}
