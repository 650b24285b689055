//! What a phase cost the runner itself: CPU time and peak memory, kept in
//! the checkpoint beside the phase's wall time (the scale benchmark reads
//! them; Plex and rclone are other processes and are not counted).

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// User + system CPU of the runner's process during the phase.
    pub cpu_seconds: f64,
    /// The runner's largest resident set during the phase (MB).
    pub peak_rss_mb: f64,
}

/// Started at a phase's start: CPU so far, and the peak RSS counter reset
/// so that the phase's own peak shows.
pub struct Meter {
    cpu_at_start: Duration,
}

impl Meter {
    pub fn start() -> Meter {
        // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux
        // 4.0+); where refused, the peak is the process's so far.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Meter {
            cpu_at_start: cpu_time(),
        }
    }

    pub fn stop(&self) -> Usage {
        let cpu = cpu_time().saturating_sub(self.cpu_at_start);
        Usage {
            cpu_seconds: (cpu.as_secs_f64() * 100.0).round() / 100.0,
            peak_rss_mb: (peak_rss_kib() as f64 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// Hands the memory the last phase freed back to the system: glibc keeps
/// freed heap (a pull's 16 MiB parts) for reuse, and the next phase's own
/// working set came on top of it (the remap at the user's size peaked at
/// 277 MB after a pull, 208 MB alone).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn cpu_time() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(
                    tv.tv_sec().max(0) as u64,
                    (tv.tv_usec().max(0) * 1000) as u32,
                )
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// `VmHWM` of /proc/self/status, in KiB (0 when unreadable).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_that_works_and_allocates_shows_its_cpu_and_peak() {
        let meter = Meter::start();
        let before = peak_rss_kib();
        // 64 MiB touched, and a busy loop until it has used 0.3 s of CPU
        // (counted in CPU, not wall time: a loaded machine gives less).
        let block = vec![1u8; 64 << 20];
        let mut x = 0u64;
        let cpu_at_start = cpu_time();
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while cpu_time().saturating_sub(cpu_at_start) < Duration::from_millis(300)
            && std::time::Instant::now() < give_up
        {
            for _ in 0..10_000 {
                x = x.wrapping_add(block[x as usize % block.len()] as u64);
            }
        }
        std::hint::black_box((x, &block));
        let usage = meter.stop();
        assert!(usage.cpu_seconds >= 0.2, "{usage:?}");
        assert!(
            usage.peak_rss_mb * 1024.0 >= (before + (64 << 10)) as f64 * 0.9,
            "{usage:?}, peak before {before} KiB"
        );
    }
}
