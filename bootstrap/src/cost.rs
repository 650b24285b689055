//! What a run cost, once it is over: the server's hours (launch to the
//! runner's last status, just before it terminated), the root volume's
//! (launch to its deletion at fetch), each at its list price, and the
//! Sonic work those hours bought. Recorded by `fetch` in the launch record
//! beside the estimate made at launch; the next estimate learns from it.

use std::time::SystemTime;

use runner::run::status::Status;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::estimate::{Estimate, VOLUME_EUR_PER_GB_HOUR};
use crate::runs::LaunchRecord;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actual {
    pub server_hours: f64,
    pub volume_hours: f64,
    pub eur: f64,
    /// Tracks the run's Sonic phase analysed, and in how many hours.
    pub sonic_tracks: u64,
    pub sonic_hours: f64,
}

impl Actual {
    /// `record`'s run, its last `status` (the server's end) and the
    /// result's manifest `stats`, with the root volume deleted at
    /// `volume_gone`.
    pub fn of(
        record: &LaunchRecord,
        status: Option<&Status>,
        stats: Option<&Value>,
        volume_gone: SystemTime,
    ) -> Actual {
        let server_gone = status
            .and_then(|s| humantime::parse_rfc3339(&s.updated_at).ok())
            .unwrap_or(volume_gone);
        let server_hours = record.hours_until(server_gone);
        let volume_hours = record.hours_until(volume_gone);
        let eur = server_hours * record.hourly_price.unwrap_or(0.0)
            + volume_hours * record.root_volume_gb as f64 * VOLUME_EUR_PER_GB_HOUR;
        // The manifest's `Stats`, read by path: only Sonic's count matters.
        let analysed = |side: &str| {
            stats
                .and_then(|s| s[side]["sonic"]["analysed"].as_u64())
                .unwrap_or(0)
        };
        let sonic_seconds = stats
            .and_then(|s| s["sonic"]["seconds"].as_f64())
            .unwrap_or(0.0);
        Actual {
            server_hours,
            volume_hours,
            eur,
            sonic_tracks: analysed("after").saturating_sub(analysed("before")),
            sonic_hours: sonic_seconds / 3600.0,
        }
    }

    /// Sonic tracks per hour, when the run analysed enough to say.
    pub fn tracks_per_hour(&self) -> Option<f64> {
        (self.sonic_tracks > 0 && self.sonic_hours > 0.0)
            .then(|| self.sonic_tracks as f64 / self.sonic_hours)
    }

    /// The server's hours that were not Sonic's: pull, scan, package...
    pub fn overhead_hours(&self) -> f64 {
        (self.server_hours - self.sonic_hours).max(0.0)
    }
}

/// One line: what the run cost against what was expected at launch.
pub fn compared(actual: &Actual, estimate: Option<&Estimate>) -> String {
    let spent = format!(
        "cost: EUR {:.2} (server {:.1} h, root volume {:.1} h)",
        actual.eur, actual.server_hours, actual.volume_hours
    );
    match estimate {
        Some(e) if e.eur > 0.0 => format!(
            "{spent}; estimated at launch EUR {:.2}, {:+.0}%",
            e.eur,
            100.0 * (actual.eur - e.eur) / e.eur
        ),
        Some(e) => format!("{spent}; estimated at launch EUR {:.2}", e.eur),
        None => format!("{spent}; no estimate was recorded at launch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> LaunchRecord {
        serde_json::from_value(json!({
            "run_id": "r1", "state": "fetched", "zone": "fr-par-1", "project_id": "p",
            "commercial_type": "POP2-HC-16C-32G", "hourly_price": 0.5, "root_volume_gb": 730,
            "image_id": null, "server_id": null, "root_volume_id": null, "api_key": null,
            "launched_at": "2026-12-01T00:00:00Z", "deadline": "2026-12-04T00:00:00Z",
            "snapshot_time": null, "reference_key": null, "plex_version": "1.41.3.9314",
            "bootstrap_version": "0.1.0"
        }))
        .unwrap()
    }

    #[test]
    fn server_until_its_last_status_volume_until_fetch_each_at_its_price() {
        let mut status = Status::new("r1");
        status.updated_at = "2026-12-02T00:00:00Z".into();
        let stats = json!({
            "before": { "sonic": { "tracks": 1000, "analysed": 100 } },
            "after": { "sonic": { "tracks": 1000, "analysed": 1000 } },
            "sonic": { "seconds": 18.0 * 3600.0 },
        });
        let fetched = humantime::parse_rfc3339("2026-12-02T12:00:00Z").unwrap();
        let actual = Actual::of(&record(), Some(&status), Some(&stats), fetched);
        assert_eq!(actual.server_hours, 24.0);
        assert_eq!(actual.volume_hours, 36.0);
        // 24 h x 0.5 + 36 h x 730 GB x 0.086/730 per GB-hour.
        assert!(
            (actual.eur - (12.0 + 36.0 * 0.086)).abs() < 1e-9,
            "{actual:?}"
        );
        assert_eq!(actual.sonic_tracks, 900);
        assert_eq!(actual.tracks_per_hour(), Some(50.0));
        assert_eq!(actual.overhead_hours(), 6.0);
    }

    #[test]
    fn a_run_without_sonic_work_teaches_no_rate() {
        let actual = Actual::of(&record(), None, None, SystemTime::now());
        assert_eq!(actual.tracks_per_hour(), None);
    }
}
