//! What the run has cost so far, from `[cost]` (bootstrap writes it at
//! launch): the hours since the runner's first start at the run's hourly
//! price, beside what launch estimated. For the report page and the last
//! notification; the bill's own figure is home's (`bootstrap fetch`
//! records it once the volume is gone too).

use crate::config::RunConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct SoFar {
    pub hours: f64,
    pub eur: f64,
    pub estimate_eur: Option<f64>,
    /// How the estimate was made, in a line.
    pub basis: Option<String>,
}

impl SoFar {
    /// `None` when the run was not priced (no `[cost]`).
    pub fn of(cfg: &RunConfig, started_unix: u64, now_unix: u64) -> Option<SoFar> {
        let cost = cfg.cost()?;
        let hours = now_unix.saturating_sub(started_unix) as f64 / 3600.0;
        Some(SoFar {
            hours,
            eur: hours * cost.eur_per_hour,
            estimate_eur: cost.estimate_eur,
            basis: cost.estimate_basis.clone(),
        })
    }

    /// "EUR 11.40 over 28.5 h; estimated at launch: EUR 11.00".
    pub fn line(&self) -> String {
        let estimate = self
            .estimate_eur
            .map_or("not recorded".to_owned(), |e| format!("EUR {e:.2}"));
        format!(
            "EUR {:.2} over {:.1} h; estimated at launch: {estimate}",
            self.eur, self.hours
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_since_the_first_start_at_the_hourly_price() {
        let so_far = SoFar {
            hours: 28.5,
            eur: 28.5 * 0.4,
            estimate_eur: Some(11.0),
            basis: None,
        };
        assert_eq!(
            so_far.line(),
            "EUR 11.40 over 28.5 h; estimated at launch: EUR 11.00"
        );
    }
}
