//! Sonic's progress over time: one sample per poll, kept in the work
//! folder (`sonic.jsonl`, a JSON line each) so that a restarted runner
//! keeps the curve the report page draws. Bounded: past [`MAX_SAMPLES`]
//! every other older sample goes, so a 3-day run polled every 10 s keeps
//! a few hundred points spread over the whole run.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{unix_now, write_atomically};

/// Past this many samples the curve is thinned to half.
pub const MAX_SAMPLES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    pub analysed: u64,
    pub tracks: u64,
}

/// The samples, in memory and on disk.
pub struct Curve {
    path: PathBuf,
    samples: Vec<Sample>,
}

impl Curve {
    /// The file beside the checkpoint.
    pub fn path_in(work_dir: &Path) -> PathBuf {
        work_dir.join("sonic.jsonl")
    }

    /// The samples at `path` (none if there is no file; unreadable lines,
    /// e.g. the half-written last one of a crash, are skipped).
    pub fn read(path: &Path) -> Vec<Sample> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn open(path: PathBuf) -> Curve {
        let samples = Curve::read(&path);
        // A line torn by a crash would swallow the next one appended.
        let torn = std::fs::read(&path).is_ok_and(|b| b.last().is_some_and(|c| *c != b'\n'));
        if torn && let Err(e) = write_atomically(&path, &lines(&samples)) {
            tracing::warn!("cannot rewrite {}: {e}", path.display());
        }
        Curve { path, samples }
    }

    /// Records a sample now. A failure to write is logged: the curve is
    /// for the page, never a reason to stop Sonic.
    pub fn add(&mut self, analysed: u64, tracks: u64) {
        let sample = Sample {
            at: unix_now(),
            analysed,
            tracks,
        };
        self.samples.push(sample);
        let written = if self.samples.len() > MAX_SAMPLES {
            self.samples = thinned(&self.samples);
            write_atomically(&self.path, &lines(&self.samples))
        } else {
            append(&self.path, &lines(&[sample]))
        };
        if let Err(e) = written {
            tracing::warn!(
                "cannot record Sonic's progress in {}: {e}",
                self.path.display()
            );
        }
    }
}

fn lines(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in samples {
        out.extend(serde_json::to_vec(s).expect("a sample serializes"));
        out.push(b'\n');
    }
    out
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(bytes)
}

/// Every other sample, the first and the last always kept: the curve's
/// shape over the whole run, at half the points.
fn thinned(samples: &[Sample]) -> Vec<Sample> {
    let last = samples.len().saturating_sub(1);
    samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 || *i == last)
        .map(|(_, s)| *s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_survive_a_restart_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = Curve::path_in(dir.path());
        let mut curve = Curve::open(path.clone());
        for i in 0..3 {
            curve.add(i, 10);
        }
        // A crash mid-line: the line is skipped, the rest read back.
        append(&path, b"{\"at\": 1, \"anal").unwrap();
        let mut curve = Curve::open(path.clone());
        assert_eq!(curve.samples.len(), 3);

        // Three days polled every 10 s.
        for i in 3..25_920 {
            curve.add(i, 25_920);
        }
        let kept = Curve::read(&path);
        assert!(
            kept.len() <= MAX_SAMPLES && kept.len() > MAX_SAMPLES / 2,
            "{}",
            kept.len()
        );
        assert_eq!(kept.first().unwrap().analysed, 0, "the start stays");
        assert_eq!(kept.last().unwrap().analysed, 25_919, "the latest stays");
        assert!(kept.windows(2).all(|w| w[0].analysed < w[1].analysed));
    }
}
