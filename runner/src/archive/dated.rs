//! Plex's dated backups: the copies its Butler keeps beside each DB in the
//! `Databases` folder (`com.plexapp.plugins.library.db-2026-11-20`). Only
//! the home server that made them has a use for them, and they are most of
//! a large folder: no pull writes them, no reference archive carries them,
//! and an install leaves home's where they are.

use std::fmt;

use serde::Serialize;

use super::bound::size;

/// True for the name of a Plex dated backup at the top of a `Databases`
/// folder: `<name>.db-YYYY-MM-DD` with a real date, or its `-wal`/`-shm`.
/// The live DBs, their `-wal`/`-shm`, and anything in a subfolder are not.
pub fn is_dated_backup(name: &str) -> bool {
    let name = ["-wal", "-shm"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    let Some((db, date)) = name
        .len()
        .checked_sub("-YYYY-MM-DD".len())
        .and_then(|at| name.split_at_checked(at))
    else {
        return false;
    };
    let stem = db.strip_suffix(".db").unwrap_or("");
    !stem.is_empty() && !stem.contains('/') && is_date(date)
}

/// `-YYYY-MM-DD`, a day that exists.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &b[range];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b.len() != 11 || b[0] != b'-' || b[5] != b'-' || b[8] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (digits(1..5), digits(6..8), digits(9..11)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// How many dated backups, and their bytes: what a pull read past, or what
/// a snapshot or an install left where it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatedBackups {
    pub files: u64,
    pub bytes: u64,
}

impl DatedBackups {
    pub fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

impl fmt::Display for DatedBackups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.files == 1 { "" } else { "s" };
        write!(
            f,
            "{} dated backup{plural} of Plex ({})",
            self.files,
            size(self.bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plex_dated_backups_match() {
        for name in [
            "com.plexapp.plugins.library.db-2026-11-20",
            "com.plexapp.plugins.library.blobs.db-2026-01-31",
            "com.plexapp.plugins.library.db-2024-02-29",
            "com.plexapp.plugins.library.db-2026-11-20-wal",
            "com.plexapp.plugins.library.db-2026-11-20-shm",
            "x.db-2000-02-29",
        ] {
            assert!(is_dated_backup(name), "{name} is a dated backup");
        }
        for name in [
            "com.plexapp.plugins.library.db",
            "com.plexapp.plugins.library.db-wal",
            "com.plexapp.plugins.library.db-shm",
            "com.plexapp.plugins.library.blobs.db",
            "com.plexapp.plugins.library.db-2026-02-29",
            "com.plexapp.plugins.library.db-1900-02-29",
            "com.plexapp.plugins.library.db-2026-04-31",
            "com.plexapp.plugins.library.db-2026-13-01",
            "com.plexapp.plugins.library.db-2026-00-10",
            "com.plexapp.plugins.library.db-2026-11-00",
            "com.plexapp.plugins.library.db-2026-1-20",
            "com.plexapp.plugins.library.db-20261120",
            "com.plexapp.plugins.library.db-2026-11-2x",
            "com.plexapp.plugins.library.db-2026-11-20.tmp",
            "com.plexapp.plugins.library.db-2026-11-20-journal",
            "com.plexapp.plugins.library.db-2026-11-20-wal-wal",
            "com.plexapp.plugins.library-2026-11-20",
            ".db-2026-11-20",
            "Preferences.xml-2026-11-20",
            "backups/com.plexapp.plugins.library.db-2026-11-20",
            "é.db-2026-11-2é",
            "",
        ] {
            assert!(!is_dated_backup(name), "{name} is not a dated backup");
        }
    }

    #[test]
    fn a_tally_reads_as_a_person_would() {
        let mut tally = DatedBackups::default();
        tally.add(3 << 30);
        assert_eq!(tally.to_string(), "1 dated backup of Plex (3.0 GiB)");
        tally.add(1 << 29);
        assert_eq!(
            tally,
            DatedBackups {
                files: 2,
                bytes: 7 << 29
            }
        );
        assert_eq!(tally.to_string(), "2 dated backups of Plex (3.5 GiB)");
    }
}
