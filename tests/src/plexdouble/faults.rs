//! Faults the PMS double can inject (`--fault SPEC`), for tests of the
//! runner's supervision: a slow start, a burst of 503s, a crash, scans and
//! analyses that never finish, a stalled Sonic analysis.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The port accepts no connection for this long after start.
    SlowStart(Duration),
    /// `count` requests other than `/identity` get 503, starting `after`
    /// the start.
    Burst5xx { count: u32, after: Duration },
    /// The process aborts this long after start, mid-work.
    CrashAfter(Duration),
    /// The process aborts when the first scan starts.
    CrashOnScan,
    /// Scans and analyses never finish: frozen activity, no DB work.
    StuckActivity,
    /// Sonic analysis stops progressing after a few tracks.
    StuckSonic,
}

impl Fault {
    /// Parses one spec, e.g. `burst-5xx=3@2s`; the error names the spec.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let spec = spec.trim();
        let (name, value) = match spec.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (spec, None),
        };
        let duration = |text: Option<&str>| -> Result<Duration, String> {
            let text =
                text.ok_or_else(|| format!("fault {spec:?} needs a duration (e.g. {name}=5s)"))?;
            humantime::parse_duration(text)
                .map_err(|e| format!("fault {spec:?}: bad duration {text:?}: {e}"))
        };
        let bare = |fault: Fault| -> Result<Fault, String> {
            match value {
                None => Ok(fault),
                Some(_) => Err(format!("fault {spec:?} takes no value")),
            }
        };
        match name {
            "slow-start" => Ok(Fault::SlowStart(duration(value)?)),
            "crash-after" => Ok(Fault::CrashAfter(duration(value)?)),
            "burst-5xx" => {
                let value = value.ok_or_else(|| {
                    format!("fault {spec:?} needs a count (burst-5xx=N or N@DUR)")
                })?;
                let (count, after) = match value.split_once('@') {
                    Some((count, after)) => (count, duration(Some(after))?),
                    None => (value, Duration::ZERO),
                };
                let count = count
                    .parse()
                    .map_err(|_| format!("fault {spec:?}: {count:?} is not a count"))?;
                Ok(Fault::Burst5xx { count, after })
            }
            "crash-on-scan" => bare(Fault::CrashOnScan),
            "stuck-activity" => bare(Fault::StuckActivity),
            "stuck-sonic" => bare(Fault::StuckSonic),
            _ => Err(format!(
                "unknown fault spec {spec:?} (known: slow-start=DUR, burst-5xx=N[@DUR], crash-after=DUR, crash-on-scan, stuck-activity, stuck-sonic)"
            )),
        }
    }
}

/// The faults in force for one server process.
#[derive(Debug)]
pub struct Faults {
    pub slow_start: Option<Duration>,
    pub crash_after: Option<Duration>,
    pub crash_on_scan: bool,
    pub stuck_activity: bool,
    pub stuck_sonic: bool,
    burst: Option<(Duration, AtomicU32)>,
    started: Instant,
}

impl Faults {
    pub fn new(faults: &[Fault]) -> Faults {
        let mut out = Faults {
            slow_start: None,
            crash_after: None,
            crash_on_scan: false,
            stuck_activity: false,
            stuck_sonic: false,
            burst: None,
            started: Instant::now(),
        };
        for fault in faults {
            match fault {
                Fault::SlowStart(d) => out.slow_start = Some(*d),
                Fault::CrashAfter(d) => out.crash_after = Some(*d),
                Fault::CrashOnScan => out.crash_on_scan = true,
                Fault::StuckActivity => out.stuck_activity = true,
                Fault::StuckSonic => out.stuck_sonic = true,
                Fault::Burst5xx { count, after } => {
                    out.burst = Some((*after, AtomicU32::new(*count)));
                }
            }
        }
        out
    }

    /// Whether this request (not `/identity`) is one of the burst's 503s.
    pub fn take_503(&self, path: &str) -> bool {
        let Some((after, remaining)) = &self.burst else {
            return false;
        };
        if path == "/identity" || self.started.elapsed() < *after {
            return false;
        }
        remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spec_and_names_unknown_ones() {
        assert_eq!(
            Fault::parse("slow-start=2s"),
            Ok(Fault::SlowStart(Duration::from_secs(2)))
        );
        assert_eq!(
            Fault::parse("burst-5xx=3@500ms"),
            Ok(Fault::Burst5xx {
                count: 3,
                after: Duration::from_millis(500)
            })
        );
        assert_eq!(
            Fault::parse("burst-5xx=4"),
            Ok(Fault::Burst5xx {
                count: 4,
                after: Duration::ZERO
            })
        );
        assert_eq!(Fault::parse("crash-on-scan"), Ok(Fault::CrashOnScan));
        assert!(Fault::parse("crash-on-scan=1").is_err());
        assert!(Fault::parse("slow-start").is_err());
        let error = Fault::parse("melt-down").unwrap_err();
        assert!(error.contains("\"melt-down\""), "{error}");
    }

    #[test]
    fn burst_counts_down_and_spares_identity() {
        let faults = Faults::new(&[Fault::Burst5xx {
            count: 2,
            after: Duration::ZERO,
        }]);
        assert!(!faults.take_503("/identity"));
        assert!(faults.take_503("/library/sections"));
        assert!(faults.take_503("/activities"));
        assert!(!faults.take_503("/activities"));
    }
}
