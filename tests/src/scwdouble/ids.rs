//! Identifiers and timestamps in Scaleway's shapes.

use std::time::{Duration, SystemTime};

pub use crate::plexdouble::ids::uuid_v4;

/// Lower- or upper-case 8-4-4-4-12 hex.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An API key's access key: `SCW` and 17 of `[A-Z0-9]`, made at run time
/// (no literal of that shape may sit in a source file).
pub fn access_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut key = String::from("SC");
    key.push('W');
    key.extend((0..17).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char));
    key
}

/// Whether `text` has the shape of an access key.
pub fn is_access_key(text: &str) -> bool {
    text.len() == 20
        && text.starts_with("SC")
        && text[2..].starts_with('W')
        && text[3..]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// RFC 3339 in UTC with a `Z`, as Block and IAM write dates.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// RFC 3339 with `+00:00`, as the Instance API writes dates.
pub fn instance_date(time: SystemTime) -> String {
    let text = rfc3339(time);
    format!("{}+00:00", text.trim_end_matches('Z'))
}

/// Parses RFC 3339 with `Z` or a numeric offset (clients write both).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    if let Ok(time) = humantime::parse_rfc3339(text) {
        return Some(time);
    }
    // `...+02:00` / `...-05:30`: parse the local part, then undo the offset.
    if text.len() < 25 || !text.is_char_boundary(text.len() - 6) {
        return None;
    }
    let (local, offset) = text.split_at(text.len() - 6);
    let bytes = offset.as_bytes();
    if !matches!(bytes[0], b'+' | b'-') || bytes[3] != b':' {
        return None;
    }
    let hours: u64 = offset[1..3].parse().ok()?;
    let minutes: u64 = offset[4..6].parse().ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let time = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    if bytes[0] == b'+' {
        time.checked_sub(shift)
    } else {
        time.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_offsets() {
        assert!(is_uuid(&uuid_v4()));
        assert!(!is_uuid("not-a-uuid"));
        let key = access_key();
        assert!(is_access_key(&key), "{key}");
        let z = parse_rfc3339("2030-01-01T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2030-01-01T14:00:00+02:00"), Some(z));
        assert_eq!(parse_rfc3339("2030-01-01T07:00:00.000-05:00"), Some(z));
        assert_eq!(parse_rfc3339("2030-01-01"), None);
        assert!(instance_date(z).ends_with("+00:00"));
    }
}
