//! Server preferences: the settings `/:/prefs` exposes (every pref
//! plex.md names, with Plex's ids, types and defaults) and
//! `Preferences.xml`, where Plex keeps them as attributes of one
//! `<Preferences/>` element beside the server's identity and token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use quick_xml::events::Event;

use super::networks;
use crate::plexdouble::ids;
use crate::plexdouble::render::escape_xml;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Text,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Text => "text",
        }
    }
}

/// What values a pref accepts beyond its type.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    Any,
    /// (value, label) pairs; `/:/prefs` shows them as `value:label|...`.
    Choices(&'static [(&'static str, &'static str)]),
    Range(i64, i64),
    Networks,
}

#[derive(Debug)]
pub struct PrefDef {
    pub id: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    /// In stored form (`1`/`0` for booleans).
    pub default: &'static str,
    pub hidden: bool,
    pub advanced: bool,
    pub group: &'static str,
    pub check: Check,
}

/// Labels as a real server's `enumValues` give them (python-plexapi
/// a8d051f, docs/settingslist.rst).
const BEHAVIOR: &[(&str, &str)] = &[
    ("never", "never"),
    ("scheduled", "as a scheduled task"),
    ("asap", "as a scheduled task and when media is added"),
];

const fn pref(
    id: &'static str,
    label: &'static str,
    kind: Kind,
    default: &'static str,
    group: &'static str,
    check: Check,
) -> PrefDef {
    PrefDef {
        id,
        label,
        kind,
        default,
        hidden: false,
        advanced: false,
        group,
        check,
    }
}

const fn flag(id: &'static str, label: &'static str, default: &'static str) -> PrefDef {
    pref(id, label, Kind::Bool, default, "library", Check::Any)
}

const fn butler_task(id: &'static str, label: &'static str) -> PrefDef {
    pref(id, label, Kind::Bool, "1", "butler", Check::Any)
}

const fn behavior(id: &'static str, label: &'static str) -> PrefDef {
    pref(
        id,
        label,
        Kind::Text,
        "scheduled",
        "library",
        Check::Choices(BEHAVIOR),
    )
}

pub const PREFS: &[PrefDef] = &[
    pref(
        "FriendlyName",
        "Friendly name",
        Kind::Text,
        "",
        "general",
        Check::Any,
    ),
    flag(
        "autoEmptyTrash",
        "Empty trash automatically after every scan",
        "1",
    ),
    // Off on a fresh real server, as ScheduledLibraryUpdatesEnabled, and
    // GenerateBIFBehavior is `never` (python-plexapi a8d051f,
    // docs/settingslist.rst, listed from a real server's /:/prefs).
    flag(
        "FSEventLibraryUpdatesEnabled",
        "Scan my library automatically",
        "0",
    ),
    flag(
        "FSEventLibraryPartialScanEnabled",
        "Run a partial scan when changes are detected",
        "1",
    ),
    flag(
        "ScheduledLibraryUpdatesEnabled",
        "Scan my library periodically",
        "0",
    ),
    pref(
        "ScheduledLibraryUpdateInterval",
        "Library scan interval (seconds)",
        Kind::Int,
        "3600",
        "library",
        Check::Range(900, 86_400),
    ),
    flag(
        "ScannerLowPriority",
        "Run scanner tasks at a lower priority",
        "0",
    ),
    PrefDef {
        default: "never",
        ..behavior("GenerateBIFBehavior", "Generate video preview thumbnails")
    },
    behavior(
        "GenerateChapterThumbBehavior",
        "Generate chapter thumbnails",
    ),
    behavior(
        "LoudnessAnalysisBehavior",
        "Analyze audio tracks for loudness",
    ),
    behavior(
        "MusicAnalysisBehavior",
        "Analyze audio tracks for sonic features",
    ),
    behavior(
        "GenerateIntroMarkerBehavior",
        "Generate intro video markers",
    ),
    behavior(
        "GenerateCreditsMarkerBehavior",
        "Generate credits video markers",
    ),
    behavior("GenerateAdMarkerBehavior", "Generate ad video markers"),
    behavior("GenerateVADBehavior", "Generate voice activity data"),
    pref(
        "ButlerStartHour",
        "Time at which tasks start to run",
        Kind::Int,
        "2",
        "butler",
        Check::Range(0, 23),
    ),
    pref(
        "ButlerEndHour",
        "Time at which tasks stop running",
        Kind::Int,
        "5",
        "butler",
        Check::Range(0, 23),
    ),
    // The 14 `ButlerTask*` booleans of a real server's `/:/prefs`, in its
    // order, with its labels, defaults and hidden flags
    // (andrey-yantsen/plex-api.rs, commit f7d02c5,
    // crates/plex-api/tests/mocks/server/prefs.json). There is no
    // `ButlerTaskMusicAnalysis`: Sonic is the `MusicAnalysis` task, governed
    // by `MusicAnalysisBehavior`.
    butler_task(
        "ButlerTaskBackupDatabase",
        "Backup database every three days",
    ),
    butler_task("ButlerTaskOptimizeDatabase", "Optimize database every week"),
    butler_task("ButlerTaskCleanOldBundles", "Remove old bundles every week"),
    butler_task(
        "ButlerTaskCleanOldCacheFiles",
        "Remove old cache files every week",
    ),
    butler_task(
        "ButlerTaskRefreshLocalMedia",
        "Refresh local metadata every three days",
    ),
    PrefDef {
        default: "0",
        ..butler_task(
            "ButlerTaskRefreshLibraries",
            "Update all libraries during maintenance",
        )
    },
    butler_task(
        "ButlerTaskUpgradeMediaAnalysis",
        "Upgrade media analysis during maintenance",
    ),
    butler_task(
        "ButlerTaskRefreshPeriodicMetadata",
        "Refresh library metadata periodically",
    ),
    butler_task(
        "ButlerTaskDeepMediaAnalysis",
        "Perform extensive media analysis during maintenance",
    ),
    PrefDef {
        hidden: true,
        ..butler_task(
            "ButlerTaskGarbageCollectBlobs",
            "Perform cleanup on blobs database",
        )
    },
    PrefDef {
        hidden: true,
        ..butler_task(
            "ButlerTaskRefreshEpgGuides",
            "Perform refresh of program guide data.",
        )
    },
    butler_task(
        "ButlerTaskReverseGeocode",
        "Fetch missing location names for items in photo sections",
    ),
    butler_task("ButlerTaskGenerateAutoTags", "Analyze and tag photos"),
    PrefDef {
        default: "0",
        hidden: true,
        group: "",
        ..butler_task("ButlerTaskGenerateMediaIndexFiles", "")
    },
    // What exposes a server beyond its host, on by default as on a fresh
    // real server. Ids and labels from python-plexapi's settingslist.rst
    // (a real server's /:/prefs; it lowers the first letter) and a real
    // Preferences.xml. `RelayEnabled` is in Preferences.xml but not in that
    // /:/prefs listing, so the double does not offer it either.
    pref(
        "PublishServerOnPlexOnlineKey",
        "Publish server on Plex Online",
        Kind::Bool,
        "1",
        "network",
        Check::Any,
    ),
    pref(
        "GdmEnabled",
        "Enable local network discovery (GDM)",
        Kind::Bool,
        "1",
        "network",
        Check::Any,
    ),
    pref(
        "DlnaEnabled",
        "Enable the DLNA server",
        Kind::Bool,
        "1",
        "dlna",
        Check::Any,
    ),
    PrefDef {
        advanced: true,
        ..pref(
            "allowedNetworks",
            "List of IP addresses and networks that are allowed without auth",
            Kind::Text,
            "",
            "network",
            Check::Networks,
        )
    },
    PrefDef {
        advanced: true,
        ..pref(
            "logDebug",
            "Enable Plex Media Server debug logging",
            Kind::Bool,
            "0",
            "general",
            Check::Any,
        )
    },
    PrefDef {
        hidden: true,
        ..pref(
            "LanguageInCloud",
            "Use cloud language",
            Kind::Bool,
            "1",
            "general",
            Check::Any,
        )
    },
];

pub fn find(id: &str) -> Option<&'static PrefDef> {
    PREFS.iter().find(|p| p.id == id)
}

/// The stored form of `raw` for `def`, or why it is not a valid value.
pub fn normalise(def: &PrefDef, raw: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{raw:?} is not a valid {} value for {}",
            def.kind.name(),
            def.id
        )
    };
    let stored = match def.kind {
        Kind::Bool => match raw {
            "1" | "true" => "1".to_string(),
            "0" | "false" => "0".to_string(),
            _ => return Err(bad()),
        },
        Kind::Int => raw.parse::<i64>().map_err(|_| bad())?.to_string(),
        Kind::Text => raw.to_string(),
    };
    match def.check {
        Check::Any => {}
        Check::Choices(choices) => {
            if !choices.iter().any(|(value, _)| *value == stored) {
                let values: Vec<&str> = choices.iter().map(|(value, _)| *value).collect();
                return Err(format!(
                    "{raw:?} is not one of {} for {}",
                    values.join("/"),
                    def.id
                ));
            }
        }
        Check::Range(low, high) => {
            let n: i64 = stored.parse().map_err(|_| bad())?;
            if !(low..=high).contains(&n) {
                return Err(format!("{n} is outside {low}..={high} for {}", def.id));
            }
        }
        Check::Networks => {
            networks::parse(&stored)?;
        }
    }
    Ok(stored)
}

pub fn is_true(stored: &str) -> bool {
    matches!(stored, "1" | "true")
}

/// The `ProcessedMachineIdentifier` Plex derives from `MachineIdentifier`:
/// sha1 of the id followed by `- Plex Media Server`, in hex (the official
/// image computes it so, plexinc/pms-docker 1cef65e,
/// root/etc/cont-init.d/40-plex-first-run; python-plexapi's
/// tests/test_server.py expects a 40-character `machineIdentifier`).
pub fn processed_machine_identifier(machine_identifier: &str) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(format!(
        "{machine_identifier}- Plex Media Server"
    )))
}

/// `Preferences.xml`: its attributes in file order.
#[derive(Debug, Clone)]
pub struct Preferences {
    path: PathBuf,
    attrs: Vec<(String, String)>,
}

impl Preferences {
    /// Reads the file, or makes a fresh one; a missing
    /// `MachineIdentifier`/`ProcessedMachineIdentifier` is generated and
    /// saved, existing ones are kept.
    pub fn load_or_create(path: &Path, version: &str) -> Result<Preferences> {
        let mut prefs = if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Preferences {
                path: path.to_path_buf(),
                attrs: parse(&text).with_context(|| format!("in {}", path.display()))?,
            }
        } else {
            Preferences {
                path: path.to_path_buf(),
                attrs: vec![
                    ("OldestPreviousVersion".into(), version.into()),
                    ("AcceptedEULA".into(), "1".into()),
                ],
            }
        };
        let mut changed = !path.exists();
        if prefs.get("MachineIdentifier").is_none_or(str::is_empty) {
            prefs.set("MachineIdentifier", ids::uuid_v4());
            changed = true;
        }
        if prefs
            .get("ProcessedMachineIdentifier")
            .is_none_or(str::is_empty)
        {
            let processed =
                processed_machine_identifier(prefs.get("MachineIdentifier").unwrap_or_default());
            prefs.set("ProcessedMachineIdentifier", processed);
            changed = true;
        }
        if changed {
            prefs.save()?;
        }
        Ok(prefs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: String) {
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((key.to_string(), value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.attrs.retain(|(k, _)| k != key);
    }

    /// The stored value of a pref, or its default.
    pub fn value(&self, def: &PrefDef) -> String {
        self.get(def.id).unwrap_or(def.default).to_string()
    }

    /// A boolean pref by id (false for an unknown id).
    pub fn flag(&self, id: &str) -> bool {
        find(id).is_some_and(|def| is_true(&self.value(def)))
    }

    /// The server's plex.tv token: set once claimed.
    pub fn online_token(&self) -> Option<&str> {
        self.get("PlexOnlineToken").filter(|t| !t.is_empty())
    }

    /// What Plex reports as `machineIdentifier` (`/identity`, GDM) and
    /// registers on plex.tv under as the client identifier: the
    /// `ProcessedMachineIdentifier`, not `MachineIdentifier`.
    pub fn machine_identifier(&self) -> &str {
        self.get("ProcessedMachineIdentifier").unwrap_or_default()
    }

    /// Writes the file atomically (temporary file, rename).
    pub fn save(&self) -> Result<()> {
        let mut text = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences");
        for (key, value) in &self.attrs {
            text.push_str(&format!(" {key}=\"{}\"", escape_xml(value)));
        }
        text.push_str("/>\n");
        let partial = self.path.with_extension("xml.partial");
        std::fs::write(&partial, text)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))
    }
}

/// The attributes of the `<Preferences>` element.
fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event()? {
            Event::Start(element) | Event::Empty(element)
                if element.name().as_ref() == b"Preferences" =>
            {
                let mut attrs = Vec::new();
                for attr in element.attributes() {
                    let attr = attr?;
                    let key = String::from_utf8(attr.key.as_ref().to_vec())?;
                    attrs.push((key, attr.unescape_value()?.into_owned()));
                }
                return Ok(attrs);
            }
            Event::Eof => bail!("no <Preferences> element"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_by_type_and_choice() {
        let trash = find("autoEmptyTrash").unwrap();
        assert_eq!(normalise(trash, "false"), Ok("0".into()));
        assert!(normalise(trash, "maybe").is_err());
        let hour = find("ButlerStartHour").unwrap();
        assert_eq!(normalise(hour, "7"), Ok("7".into()));
        assert!(normalise(hour, "24").is_err());
        assert!(normalise(hour, "x").is_err());
        let sonic = find("MusicAnalysisBehavior").unwrap();
        assert!(normalise(sonic, "asap").is_ok());
        assert!(normalise(sonic, "sometimes").is_err());
        assert!(normalise(find("allowedNetworks").unwrap(), "10.0.0.0/8").is_ok());
        assert!(normalise(find("allowedNetworks").unwrap(), "ten").is_err());
        assert!(find("NoSuchPref").is_none());
    }

    #[test]
    fn processed_machine_identifier_is_the_official_images_hash() {
        // `echo -n "${serial}- Plex Media Server" | sha1sum`, as
        // 40-plex-first-run computes it.
        assert_eq!(
            processed_machine_identifier("0b5a1c2e-3d4f-4a6b-8c7d-9e0f1a2b3c4d"),
            "e419735888429aad1c8e241ac998dcdc17454b2c"
        );
    }

    #[test]
    fn file_round_trips_and_keeps_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Preferences.xml");
        let mut prefs = Preferences::load_or_create(&path, "1.2.3").unwrap();
        let machine = prefs.machine_identifier().to_string();
        let uuid = prefs.get("MachineIdentifier").unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(machine, processed_machine_identifier(uuid));
        assert_eq!(machine.len(), 40);
        prefs.set("FriendlyName", "a \"b\" & <c>".into());
        prefs.save().unwrap();
        let again = Preferences::load_or_create(&path, "1.2.3").unwrap();
        assert_eq!(again.machine_identifier(), machine);
        assert_eq!(again.get("FriendlyName"), Some("a \"b\" & <c>"));
    }
}
