//! Scaleway availability zones (`fr-par-1`...), checked once when parsed so
//! a typo fails before any API call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ScwError;

/// Every zone plex-burst accepts (scaleway.md "API basics").
pub const ZONES: &[&str] = &[
    "fr-par-1", "fr-par-2", "fr-par-3", "nl-ams-1", "nl-ams-2", "nl-ams-3", "pl-waw-1", "pl-waw-2",
    "pl-waw-3", "it-mil-1",
];

/// A validated zone such as `fr-par-1`; Instance and Block calls are zonal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(&'static str);

impl Zone {
    /// The zone's name, e.g. `fr-par-1`.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The region: the first two parts of the name (`fr-par`).
    pub fn region(&self) -> &'static str {
        // Every accepted name is `xx-yyy-N`: cut at the last dash.
        self.0.rsplit_once('-').map(|(r, _)| r).unwrap_or(self.0)
    }
}

impl FromStr for Zone {
    type Err = ScwError;

    /// Accepts the names in [`ZONES`] (any case, surrounding blanks ignored)
    /// and the legacy `par1` / `ams1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let wanted = match wanted.as_str() {
            "par1" => "fr-par-1",
            "ams1" => "nl-ams-1",
            other => other,
        };
        ZONES
            .iter()
            .find(|z| **z == wanted)
            .map(|z| Zone(z))
            .ok_or_else(|| {
                ScwError::Invalid(format!(
                    "unknown Scaleway zone {s:?} (known: {})",
                    ZONES.join(", ")
                ))
            })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_zone_and_region() {
        for name in ZONES {
            let z: Zone = name.parse().unwrap();
            assert_eq!(z.as_str(), *name);
            assert_eq!(z.to_string(), *name);
        }
        let z: Zone = "pl-waw-3".parse().unwrap();
        assert_eq!(z.region(), "pl-waw");
        assert_eq!("it-mil-1".parse::<Zone>().unwrap().region(), "it-mil");
    }

    #[test]
    fn legacy_names_and_case() {
        assert_eq!("par1".parse::<Zone>().unwrap().as_str(), "fr-par-1");
        assert_eq!("ams1".parse::<Zone>().unwrap().as_str(), "nl-ams-1");
        assert_eq!(" FR-PAR-2 ".parse::<Zone>().unwrap().as_str(), "fr-par-2");
    }

    #[test]
    fn rejects_unknown_zones() {
        for bad in ["fr-par-4", "fr-par", "it-mil-2", "", "waw1", "fr-par-1x"] {
            let err = bad.parse::<Zone>().unwrap_err().to_string();
            assert!(err.contains("unknown Scaleway zone"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_as_string() {
        let z: Zone = serde_json::from_str("\"nl-ams-2\"").unwrap();
        assert_eq!(serde_json::to_string(&z).unwrap(), "\"nl-ams-2\"");
        assert!(serde_json::from_str::<Zone>("\"mars-1\"").is_err());
    }
}
