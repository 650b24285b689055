//! What a run will cost, before it starts: price x expected hours. Hours
//! come from the Sonic work left in the reference and what earlier runs
//! teach: the actual (`cost.rs`) of the last fetched run on the same type,
//! else the rate a run's last `status.json` measured, else an assumed
//! rate; the estimate says which.

use std::collections::BTreeMap;
use std::fmt;

use runner::archive::Manifest;
use runner::plexdb::stats::Stats;
use runner::s3::Bucket;
use runner::scaleway::ServerType;

use crate::config::BootstrapConfig;
use crate::cost::Actual;
use crate::runs::{self, LaunchRecord};

/// Sonic tracks per hour when no earlier run measured one: the user's 375k
/// tracks in about three days on a 16-core instance (mission.md).
const ASSUMED_TRACKS_PER_HOUR: f64 = 5_000.0;
/// Pull, mount, scan, package and upload of a delta run.
const OVERHEAD_HOURS: f64 = 1.0;
/// Block storage (sbs, 5K IOPS) list price, EUR per GB per hour (about
/// EUR 0.086 per GB per month). Not in the API's server catalogue.
pub const VOLUME_EUR_PER_GB_HOUR: f64 = 0.086 / 730.0;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub hours: f64,
    pub eur: f64,
    pub basis: String,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "about {:.1} h, EUR {:.2} ({})",
            self.hours, self.eur, self.basis
        )
    }
}

impl Estimate {
    /// A run bounded by `deadline` (a canary's): what it costs at most.
    pub fn at_most(deadline: std::time::Duration, hourly_price: f64, gb: u64) -> Estimate {
        let hours = deadline.as_secs_f64() / 3600.0;
        let per_hour = hourly(hourly_price, gb);
        Estimate {
            hours,
            eur: hours * per_hour,
            basis: format!("at most its deadline; EUR {per_hour:.4}/h"),
        }
    }
}

/// Hourly cost of a server at `hourly_price` with a `gb` root volume.
pub fn hourly(hourly_price: f64, gb: u64) -> f64 {
    hourly_price + gb as f64 * VOLUME_EUR_PER_GB_HOUR
}

pub async fn estimate(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    reference: Option<&Manifest>,
    earlier: &[LaunchRecord],
    types: &BTreeMap<String, ServerType>,
) -> Estimate {
    let hourly_price = types
        .get(&cfg.scaleway.commercial_type)
        .map_or(0.0, |t| t.hourly_price);
    let per_hour = hourly(hourly_price, cfg.scaleway.root_volume_gb);
    let deadline_hours = cfg.run_settings().run_deadline().as_secs_f64() / 3600.0;
    let left = reference
        .and_then(|m| m.stats.clone())
        .and_then(|v| serde_json::from_value::<Stats>(v).ok())
        .map(|s| s.sonic.tracks.saturating_sub(s.sonic.analysed));
    let sonic = cfg.run_settings().phases().sonic;
    let (work_hours, basis) = match (sonic, left) {
        (false, _) => (0.0, "no Sonic phase".to_owned()),
        (true, None) => (
            deadline_hours,
            "Sonic work unknown (reference without stats): up to the deadline".to_owned(),
        ),
        (true, Some(left)) => {
            if let Some((run, actual, rate)) = learned(earlier, &cfg.scaleway.commercial_type) {
                let overhead = actual.overhead_hours();
                let hours = (overhead + left as f64 / rate).min(deadline_hours);
                return Estimate {
                    hours,
                    eur: hours * per_hour,
                    basis: format!(
                        "{left} tracks left at {rate:.0} tracks/h and {overhead:.1} h besides Sonic, \
                         learned from run {run}'s actual ({} tracks in {:.1} h of Sonic); EUR {per_hour:.4}/h",
                        actual.sonic_tracks, actual.sonic_hours
                    ),
                };
            }
            let (rate, source) = match measured_rate(cfg, bucket, earlier, types).await {
                Some(measured) => measured,
                None => (
                    ASSUMED_TRACKS_PER_HOUR,
                    "assumed: no earlier run measured one".into(),
                ),
            };
            (
                left as f64 / rate,
                format!("{left} tracks left at {rate:.0} tracks/h, {source}"),
            )
        }
    };
    let hours = (OVERHEAD_HOURS + work_hours).min(deadline_hours);
    Estimate {
        hours,
        eur: hours * per_hour,
        basis: format!("{basis}; EUR {per_hour:.4}/h"),
    }
}

/// The most recent fetched run on `commercial_type` whose recorded actual
/// teaches a Sonic rate: the whole run's hours, not a window's, so the
/// overhead (pull, scan, package) is learned too.
fn learned(earlier: &[LaunchRecord], commercial_type: &str) -> Option<(String, Actual, f64)> {
    earlier.iter().rev().find_map(|r| {
        let actual = r
            .actual
            .as_ref()
            .filter(|_| r.commercial_type == commercial_type)?;
        Some((r.run_id.clone(), actual.clone(), actual.tracks_per_hour()?))
    })
}

/// How much faster Sonic runs on `target` than on `measured_on`: the
/// ratio of their vCPUs (Sonic is CPU-bound).
pub fn vcpu_scale(
    types: &BTreeMap<String, ServerType>,
    measured_on: &str,
    target: &str,
) -> Option<f64> {
    let cpus = |t: &str| types.get(t).map(|t| f64::from(t.ncpus.max(1)));
    Some(cpus(target)? / cpus(measured_on)?)
}

/// The Sonic rate the most recent run with one reported, on the
/// configured type: a rate measured on another type (a canary's) is
/// scaled by the vCPUs of the two (Sonic is CPU-bound; an assumption,
/// said in the basis).
async fn measured_rate(
    cfg: &BootstrapConfig,
    bucket: &Bucket,
    earlier: &[LaunchRecord],
    types: &BTreeMap<String, ServerType>,
) -> Option<(f64, String)> {
    let target = &cfg.scaleway.commercial_type;
    for record in earlier.iter().rev() {
        if let Ok(Some(status)) = runs::status(cfg, bucket, &record.run_id).await
            && let Some(rate) = status.sonic.map(|s| s.tracks_per_hour).filter(|r| *r > 0.0)
        {
            let run = &record.run_id;
            if record.commercial_type == *target {
                return Some((rate, format!("measured by run {run}")));
            }
            let scale = vcpu_scale(types, &record.commercial_type, target)?;
            return Some((
                rate * scale,
                format!(
                    "measured by run {run} on {} at {rate:.0} tracks/h, scaled by vCPUs x{scale:.1}",
                    record.commercial_type
                ),
            ));
        }
    }
    None
}
