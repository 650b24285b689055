//! Random identifiers and the clock, in the shapes Plex uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// A random version-4 UUID, lower-case hex with dashes.
pub fn uuid_v4() -> String {
    let mut bytes = rand::random::<u128>().to_be_bytes();
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `len` random lower-case hex digits.
pub fn hex(len: usize) -> String {
    let mut out = String::with_capacity(len + 32);
    while out.len() < len {
        out.push_str(&hex::encode(rand::random::<u128>().to_be_bytes()));
    }
    out.truncate(len);
    out
}

/// `len` random characters of `[A-Za-z0-9]`: the shape of Plex tokens.
pub fn token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Unix seconds: Plex stores timestamps as integers.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let uuid = uuid_v4();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_eq!(hex(40).len(), 40);
        let token = token(20);
        assert!(token.len() == 20 && token.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
