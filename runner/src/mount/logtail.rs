//! The end of rclone's log, as one line for an error message.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the end of the log: enough for a few lines.
const TAIL_BYTES: u64 = 8 * 1024;
/// Lines kept.
const TAIL_LINES: usize = 4;

/// The last few non-empty lines of `log`, joined by ` | `; a placeholder
/// when the log is missing or empty.
pub(crate) fn tail(log: &Path) -> String {
    let text = read_end(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return format!("(nothing in {})", log.display());
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ")
}

fn read_end(log: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(log)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // A cut first line is only noise.
    Ok(match (start > 0, text.split_once('\n')) {
        (true, Some((_, rest))) => rest.to_string(),
        _ => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rclone.log");
        assert!(tail(&log).starts_with("(nothing in "));
        std::fs::write(&log, "a\nb\n\nc\nd\ne\n").unwrap();
        assert_eq!(tail(&log), "b | c | d | e");
    }
}
