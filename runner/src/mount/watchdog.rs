//! Runs a call that may block forever (anything on a FUSE mount) on a
//! dedicated thread, and stops waiting for it after a timeout.
//!
//! Not tokio's blocking pool: a hung call would hold one of its threads
//! for good, and the pool is shared with everything else. An abandoned
//! thread ends when the call finally returns (a killed rclone makes every
//! pending call fail at once). The number of such threads still running is
//! counted, and past a cap no new one is started: a hung mount cannot make
//! the probe pile up threads without end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How a bounded call ended.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    Done(T),
    /// No answer within the timeout; the thread is left to finish alone.
    TimedOut,
    /// Not started: this many earlier calls are still blocked.
    Refused(usize),
    /// The thread could not be created, or the call panicked.
    Failed(String),
}

/// Counts calls in flight, for one mount.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    in_flight: Arc<AtomicUsize>,
    cap: usize,
}

/// Decrements the counter when the thread ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Watchdog {
    pub(crate) fn new(cap: usize) -> Watchdog {
        Watchdog {
            in_flight: Arc::new(AtomicUsize::new(0)),
            cap,
        }
    }

    /// Calls still running, abandoned ones included.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Runs `call` on a new thread named `name`; waits at most `timeout`.
    pub(crate) async fn run<T, F>(&self, name: &str, timeout: Duration, call: F) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let previous = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        if previous >= self.cap {
            return Outcome::Refused(previous);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _guard = guard;
                let _ = tx.send(call());
            });
        if let Err(e) = spawned {
            return Outcome::Failed(format!("cannot start a thread: {e}"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(value)) => Outcome::Done(value),
            Ok(Err(_)) => Outcome::Failed("the call panicked".into()),
            Err(_) => Outcome::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A hang guard, not a timing test: far beyond a busy machine's delays.
    const HANG_GUARD: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn a_hung_call_is_abandoned_and_counted_until_it_returns() {
        let dog = Watchdog::new(1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let returned = Arc::new(AtomicBool::new(false));
        let flag = returned.clone();
        // The call cannot return before `release`: run must give up on it.
        let hung = tokio::time::timeout(
            HANG_GUARD,
            dog.run("hung", Duration::from_millis(50), move || {
                let ok = hold.recv().is_ok();
                flag.store(true, Ordering::SeqCst);
                ok
            }),
        )
        .await
        .expect("hang guard: run waited for its hung call");
        assert!(matches!(hung, Outcome::TimedOut));
        assert!(!returned.load(Ordering::SeqCst), "the call is still hung");
        assert_eq!(dog.in_flight(), 1);
        // At the cap: nothing new starts.
        let refused = dog.run("x", Duration::from_secs(1), || 1).await;
        assert!(matches!(refused, Outcome::Refused(1)));
        release.send(()).unwrap();
        // The abandoned thread ends once its call returns, and is no
        // longer counted.
        tokio::time::timeout(HANG_GUARD, async {
            while dog.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("hang guard: the released call is still counted");
        assert!(returned.load(Ordering::SeqCst));
        assert!(matches!(
            dog.run("ok", Duration::from_secs(1), || 7).await,
            Outcome::Done(7)
        ));
    }
}
