//! The deletion guard (lessons.md, rule 1): a run never publishes a DB that
//! lost items beyond the configured limits, whatever the reason (a degraded
//! mount once made Plex purge 221 of 224 movies).

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::GuardLimits;
use crate::plexdb::stats::Stats;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// Every (library, type) that lost live items, within limits or not.
    pub losses: Vec<Loss>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    pub library: String,
    pub item_type: String,
    pub before: u64,
    pub after: u64,
    pub over_limit: bool,
}

impl Loss {
    fn lost(&self) -> u64 {
        self.before - self.after
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "library {:?} lost {} of {} {}s ({} left)",
            self.library,
            self.lost(),
            self.before,
            self.item_type,
            self.after
        )
    }
}

/// Compares live items per library and per type. A loss is over the limit
/// when it exceeds either `max_lost_items` or `max_lost_fraction` of what the
/// library held: a small library losing most of its items is as alarming as
/// a big one losing many. A library that vanished loses everything it had.
pub fn compare(before: &Stats, after: &Stats, limits: &GuardLimits) -> Verdict {
    let mut losses = Vec::new();
    for lib in &before.libraries {
        let now = after
            .libraries
            .iter()
            .find(|l| l.id == lib.id && l.name == lib.name);
        for (item_type, count) in &lib.items {
            let left = now
                .and_then(|l| l.items.get(item_type))
                .map_or(0, |c| c.live);
            if left >= count.live {
                continue;
            }
            let lost = count.live - left;
            let over_limit = lost > limits.max_lost_items
                || lost as f64 > limits.max_lost_fraction * count.live as f64;
            losses.push(Loss {
                library: lib.name.clone(),
                item_type: item_type.clone(),
                before: count.live,
                after: left,
                over_limit,
            });
        }
    }
    Verdict {
        passed: losses.iter().all(|l| !l.over_limit),
        losses,
    }
}

impl Verdict {
    pub fn ensure_passed(&self) -> Result<()> {
        let over: Vec<String> = self
            .losses
            .iter()
            .filter(|l| l.over_limit)
            .map(Loss::to_string)
            .collect();
        if !over.is_empty() {
            bail!("deletion guard: refusing to publish: {}", over.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plexdb::stats::{ItemCount, LibraryStats};

    fn stats(libs: &[(&str, &[(&str, u64)])]) -> Stats {
        Stats {
            libraries: libs
                .iter()
                .enumerate()
                .map(|(i, (name, items))| LibraryStats {
                    id: i as i64 + 1,
                    name: name.to_string(),
                    items: items
                        .iter()
                        .map(|(t, n)| {
                            (
                                t.to_string(),
                                ItemCount {
                                    live: *n,
                                    deleted: 0,
                                },
                            )
                        })
                        .collect::<BTreeMap<_, _>>(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    const LIMITS: GuardLimits = GuardLimits {
        max_lost_items: 10,
        max_lost_fraction: 0.02,
    };

    #[test]
    fn the_221_of_224_movies_catastrophe_is_refused() {
        let before = stats(&[
            ("Movies", &[("movie", 224)]),
            ("Music", &[("track", 456_534)]),
        ]);
        let after = stats(&[
            ("Movies", &[("movie", 3)]),
            ("Music", &[("track", 456_534)]),
        ]);
        let v = compare(&before, &after, &LIMITS);
        assert!(!v.passed);
        let err = v.ensure_passed().unwrap_err().to_string();
        assert!(err.contains("\"Movies\" lost 221 of 224 movies"), "{err}");
    }

    #[test]
    fn gains_and_small_losses_pass_and_are_reported() {
        let before = stats(&[("Music", &[("track", 456_534), ("album", 40_000)])]);
        let after = stats(&[("Music", &[("track", 456_530), ("album", 40_100)])]);
        let v = compare(&before, &after, &LIMITS);
        assert!(v.passed);
        assert_eq!(v.losses.len(), 1);
        assert_eq!(v.losses[0].before - v.losses[0].after, 4);
    }

    #[test]
    fn a_small_library_losing_most_items_is_refused() {
        let before = stats(&[("Kids - Movies", &[("movie", 5)])]);
        let after = stats(&[("Kids - Movies", &[("movie", 2)])]);
        assert!(!compare(&before, &after, &LIMITS).passed);
    }

    #[test]
    fn a_vanished_library_loses_everything() {
        let before = stats(&[("Photos", &[("photo", 28_338)])]);
        let v = compare(&before, &stats(&[]), &LIMITS);
        assert!(!v.passed);
        assert_eq!(v.losses[0].after, 0);
    }
}
