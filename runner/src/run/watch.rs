//! Watching Plex work: polled every `poll_interval`; idle after
//! `idle_checks` idle polls in a row; stalled when busy with nothing
//! changing for `stall_checks` x `stall_interval` (lessons.md 16); out of
//! time past its budget.

use std::time::{Duration, Instant};

use super::RunContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Working,
    Idle,
    /// Busy with no visible progress for this long.
    Stalled(Duration),
    OutOfTime,
}

pub struct Watch {
    poll: Duration,
    idle_needed: u32,
    stall_after: Duration,
    started: Instant,
    budget: Duration,
    idle_streak: u32,
    last_signature: Option<String>,
    last_change: Instant,
}

impl Watch {
    pub fn new(ctx: &RunContext, started: Instant, budget: Duration) -> Watch {
        let d = ctx.cfg.deadlines();
        Watch::with(
            d.poll_interval,
            d.idle_checks,
            d.stall_interval * d.stall_checks,
            started,
            budget,
        )
    }

    fn with(
        poll: Duration,
        idle_needed: u32,
        stall_after: Duration,
        started: Instant,
        budget: Duration,
    ) -> Watch {
        Watch {
            poll,
            idle_needed,
            stall_after,
            started,
            budget,
            idle_streak: 0,
            last_signature: None,
            last_change: Instant::now(),
        }
    }

    pub async fn sleep(&self) {
        tokio::time::sleep(self.poll).await;
    }

    /// One poll: whether Plex looked idle, and a text that changes whenever
    /// its work moves on (row counts, activity progress). A poll answered
    /// is the run alive, for systemd's watchdog: a stall is the watch's to
    /// judge, a hung poll the watchdog's.
    pub fn observe(&mut self, idle: bool, signature: String) -> Progress {
        crate::systemd::beat();
        self.observe_at(Instant::now(), idle, signature)
    }

    fn observe_at(&mut self, now: Instant, idle: bool, signature: String) -> Progress {
        if self.last_signature.as_ref() != Some(&signature) {
            self.last_signature = Some(signature);
            self.last_change = now;
        }
        if idle {
            self.idle_streak += 1;
            if self.idle_streak >= self.idle_needed {
                return Progress::Idle;
            }
        } else {
            self.idle_streak = 0;
        }
        if now.duration_since(self.started) >= self.budget {
            return Progress::OutOfTime;
        }
        let unchanged = now.duration_since(self.last_change);
        if !idle && unchanged >= self.stall_after {
            return Progress::Stalled(unchanged);
        }
        Progress::Working
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_only_after_enough_idle_polls_in_a_row() {
        let t0 = Instant::now();
        let mut w = Watch::with(S, 3, 100 * S, t0, 1000 * S);
        assert_eq!(w.observe_at(t0 + S, true, "a".into()), Progress::Working);
        assert_eq!(
            w.observe_at(t0 + 2 * S, true, "a".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 3 * S, false, "a".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 4 * S, true, "a".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 5 * S, true, "a".into()),
            Progress::Working
        );
        assert_eq!(w.observe_at(t0 + 6 * S, true, "a".into()), Progress::Idle);
    }

    #[test]
    fn busy_without_change_stalls_and_change_resets_it() {
        let t0 = Instant::now();
        let mut w = Watch::with(S, 3, 10 * S, t0, 1000 * S);
        assert_eq!(w.observe_at(t0, false, "1".into()), Progress::Working);
        assert_eq!(
            w.observe_at(t0 + 9 * S, false, "1".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 9 * S, false, "2".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 18 * S, false, "2".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 19 * S, false, "2".into()),
            Progress::Stalled(10 * S)
        );
    }

    #[test]
    fn the_budget_ends_even_steady_progress() {
        let t0 = Instant::now();
        let mut w = Watch::with(S, 3, 10 * S, t0, 5 * S);
        assert_eq!(
            w.observe_at(t0 + 4 * S, false, "1".into()),
            Progress::Working
        );
        assert_eq!(
            w.observe_at(t0 + 5 * S, false, "2".into()),
            Progress::OutOfTime
        );
    }
}
