//! How far an archive may expand: a pull stops at the bound instead of
//! filling the disk with a decompression bomb (a few hundred KB of zstd can
//! claim terabytes of zeros).
//!
//! The bound is counted on the decompressed tar stream (headers and skipped
//! entries included), before a byte of it reaches the extracting side.

use std::fmt;
use std::path::Path;

use super::error::ArchiveError;
use super::manifest::Manifest;

/// Below this many expanded bytes the ratio is not checked: small archives
/// (tar headers, empty pages) can compress far beyond any sane ratio.
pub const RATIO_FLOOR: u64 = 64 << 20;
/// Plex DBs compress about 5-10:1 (performance.md); a hundred leaves room
/// for DBs full of free pages and still stops a bomb at its first 64 MiB.
pub const DEFAULT_MAX_RATIO: u64 = 100;
/// Room the default cap leaves on the destination's filesystem (the run's
/// WAL, snapshots and logs live there, or a running Plex at home).
const MIN_MARGIN: u64 = 2 << 30;

/// How far decoding may run ahead of extraction (the pipe's chunks and the
/// one being filled). With a manifest the bound allows this much beyond its
/// files, so that a listed file's wrong size or an unlisted file is named
/// as such by the extracting side, which sees its header first.
const IN_FLIGHT: u64 = (super::unpack::PIPE_CHUNKS as u64 + 1) * super::decode::CHUNK as u64;

/// What the caller allows when there is no manifest to go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most expanded bytes; `None`: the destination's free space minus a
    /// margin ([`default_cap`]).
    pub max_expanded: Option<u64>,
    /// Most expanded bytes per compressed byte, once past [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expanded: None,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }
}

/// Where a bound came from: the error names it, so the user knows what to
/// change (or that the archive is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    /// The manifest's files, plus the tar headers around them.
    Manifest { files: usize },
    /// `[pull] max_expanded_size`.
    Configured,
    /// The destination's free space minus the margin.
    FreeSpace { free: u64, margin: u64 },
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Manifest { files } => {
                let plural = if *files == 1 { "" } else { "s" };
                write!(
                    f,
                    "what its manifest lists ({files} file{plural} and their tar headers)"
                )
            }
            Self::Configured => f.write_str("the cap ([pull] max_expanded_size)"),
            Self::FreeSpace { free, margin } => write!(
                f,
                "the destination's free space ({}) less a margin of {} (set [pull] max_expanded_size to choose)",
                size(*free),
                size(*margin)
            ),
        }
    }
}

/// The bound one unpack runs under.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    max: u64,
    cap: Cap,
    /// `None` with a manifest: its sizes already bound every byte.
    max_ratio: Option<u64>,
}

impl Bound {
    /// With a manifest, exactly its files (the ratio does not apply: the
    /// result of a run may be a DB of any shape); without, the limits, the
    /// default cap measured on `staging`'s filesystem.
    pub fn new(
        manifest: Option<&Manifest>,
        limits: &Limits,
        staging: &Path,
    ) -> Result<Self, ArchiveError> {
        if let Some(manifest) = manifest {
            return Ok(Self {
                max: manifest.total_size() + tar_overhead(manifest) + IN_FLIGHT,
                cap: Cap::Manifest {
                    files: manifest.files.len(),
                },
                max_ratio: None,
            });
        }
        let (max, cap) = match limits.max_expanded {
            Some(max) => (max, Cap::Configured),
            None => {
                let free = free_space(staging)?;
                let margin = margin(free);
                (free - margin, Cap::FreeSpace { free, margin })
            }
        };
        Ok(Self {
            max,
            cap,
            max_ratio: Some(limits.max_ratio),
        })
    }

    /// Refuses `expanded` bytes decoded from `compressed` bytes read.
    pub fn check(&self, expanded: u64, compressed: u64) -> Result<(), ArchiveError> {
        if expanded > self.max {
            return Err(ArchiveError::ExpandsBeyond {
                limit: size(self.max),
                cap: self.cap.clone(),
            });
        }
        if let Some(ratio) = self.max_ratio
            && expanded > RATIO_FLOOR
            && expanded / compressed.max(1) > ratio
        {
            return Err(ArchiveError::ExpansionRatio {
                expanded: size(expanded),
                compressed: size(compressed),
                ratio,
            });
        }
        Ok(())
    }
}

/// The default margin: a tenth of the free space or 2 GiB, whichever is
/// larger, but never more than half of it (a small disk still takes an
/// archive that fits comfortably).
pub fn margin(free: u64) -> u64 {
    (free / 10).max(MIN_MARGIN).min(free / 2)
}

/// The space an unprivileged writer may still use on `path`'s filesystem.
pub(crate) fn free_space(path: &Path) -> Result<u64, ArchiveError> {
    let stats = nix::sys::statvfs::statvfs(path)
        .map_err(|e| ArchiveError::io("measure free space in", path, e.into()))?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

/// Per file: its header, a GNU long-name or PAX header and its name, and
/// padding; then the end-of-archive blocks padded to a 10 KiB record.
fn tar_overhead(manifest: &Manifest) -> u64 {
    const BLOCK: u64 = 512;
    let per_file: u64 = manifest
        .files
        .iter()
        .map(|f| 4 * BLOCK + f.path.len() as u64 + 64)
        .sum();
    per_file + 20 * BLOCK + 10 * 1024
}

/// Bytes as a person reads them: `18.2 GiB`, `640.0 KiB`, `12 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Parses a size as a person writes it: `20 GiB`, `500MiB`, `1.5 TiB`,
/// `4096` (bytes). Units are binary (KiB, MiB, GiB, TiB; K, M, G, T and
/// KB, MB, GB, TB read the same, as df and du print them).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?} is not a size (e.g. \"20 GiB\", \"500 MiB\")"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. \"20 GiB\", \"500 MiB\")"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_tenth_or_2_gib_but_at_most_half() {
        assert_eq!(margin(100 << 30), 10 << 30);
        assert_eq!(margin(10 << 30), 2 << 30);
        assert_eq!(margin(1 << 30), 512 << 20);
        assert_eq!(margin(0), 0);
    }

    #[test]
    fn the_ratio_counts_only_past_the_floor() {
        let bound = Bound {
            max: u64::MAX,
            cap: Cap::Configured,
            max_ratio: Some(100),
        };
        assert!(bound.check(RATIO_FLOOR, 1).is_ok());
        assert!(
            bound
                .check(RATIO_FLOOR + 1, (RATIO_FLOOR + 1) / 100)
                .is_ok()
        );
        let error = bound.check(RATIO_FLOOR + 1, RATIO_FLOOR / 200).unwrap_err();
        assert!(
            error.to_string().contains("[pull] max_expansion_ratio"),
            "{error}"
        );
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("20 GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "GiB", "20 parsecs", "-1 GiB", "1e30 TiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(12), "12 bytes");
        assert_eq!(size(655_360), "640.0 KiB");
        assert_eq!(size(18_200 << 20), "17.8 GiB");
    }
}
