//! A string that must never reach a log, a status file or an archive.
//! While a `Secret` exists, the process's masker ([`crate::mask`]) masks
//! its value in every text that leaves: a value cannot be logged by
//! mistake through `expose()` either.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Holds a credential. `Debug`, `Display` and `Serialize` all print a mask;
/// the value is only reachable through [`Secret::expose`].
#[derive(PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const MASK: &'static str = crate::mask::MASK;

    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::mask::hold(&value);
        Secret(value)
    }

    /// The clear value, for the one place that must send it (a signed request).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret::new(self.0.clone())
    }
}

/// The last copy gone, the masker forgets the value: a secret the run let go
/// of (the plex.tv token after the claim) is not kept in memory by it.
impl Drop for Secret {
    fn drop(&mut self) {
        crate::mask::release(&self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("SCWSECRETVALUE");
        assert!(!format!("{s} {s:?}").contains("SCWSECRETVALUE"));
        assert!(
            !serde_json::to_string(&s)
                .unwrap()
                .contains("SCWSECRETVALUE")
        );
        assert_eq!(s.expose(), "SCWSECRETVALUE");
    }

    #[test]
    fn the_masker_masks_a_secret_while_a_copy_exists() {
        let text = "sent held-secret-0123456";
        let s = Secret::new("held-secret-0123456");
        let copy = s.clone();
        drop(s);
        assert_eq!(crate::mask::text(text), "sent ********");
        drop(copy);
        assert_eq!(crate::mask::text(text), text);
    }
}
