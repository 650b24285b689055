//! `Logs/Plex Media Server.log`: timestamped lines in Plex's layout for
//! start, every request, scans, claims and faults. The runner ships this
//! file with its own logs, so it must say what happened.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

pub struct ServerLog {
    file: Mutex<File>,
}

impl ServerLog {
    pub fn open(path: &Path) -> Result<ServerLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(ServerLog {
            file: Mutex::new(file),
        })
    }

    pub fn info(&self, message: impl AsRef<str>) {
        self.line("INFO", message.as_ref());
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        self.line("WARN", message.as_ref());
    }

    pub fn error(&self, message: impl AsRef<str>) {
        self.line("ERROR", message.as_ref());
    }

    fn line(&self, level: &str, message: &str) {
        let line = format!(
            "{} [{}] {level} - {message}\n",
            timestamp(SystemTime::now()),
            std::process::id()
        );
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A log write failure must not take the server down.
        let _ = file.write_all(line.as_bytes());
    }
}

/// `Nov 20, 2026 02:00:01.123` in UTC, as Plex writes its log lines.
pub fn timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {day:02}, {year} {:02}:{:02}:{:02}.{:03}",
        MONTHS[month as usize - 1],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, by the
/// proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_plex() {
        let time = UNIX_EPOCH + Duration::from_millis(1_795_140_001_123);
        assert_eq!(timestamp(time), "Nov 20, 2026 02:00:01.123");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
