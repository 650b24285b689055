//! Plex's `Preferences.xml`: the server's identity and its plex.tv token.
//! Read only: Plex owns the file, and the cloud server's file never leaves
//! the instance (lessons.md 23).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::xml;
use crate::secret::Secret;

pub struct Preferences {
    attrs: BTreeMap<String, String>,
}

impl Preferences {
    pub fn path(app_support: &Path) -> PathBuf {
        app_support.join("Preferences.xml")
    }

    /// `None` when the file does not exist yet (Plex writes it at first start).
    pub fn read(app_support: &Path) -> Result<Option<Preferences>> {
        let path = Self::path(app_support);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let attrs = xml::elements(&text, "Preferences")
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot parse {}", path.display()))?
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(Some(Preferences { attrs }))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The id Plex reports as `machineIdentifier` and registers on plex.tv
    /// under (a device's `clientIdentifier`): `ProcessedMachineIdentifier`,
    /// a hash of `MachineIdentifier` (plex.md, "Claiming").
    pub fn processed_machine_identifier(&self) -> Option<&str> {
        self.get("ProcessedMachineIdentifier")
    }

    /// The token Plex got from plex.tv when it was claimed.
    pub fn online_token(&self) -> Option<Secret> {
        self.get("PlexOnlineToken").map(Secret::new)
    }
}
