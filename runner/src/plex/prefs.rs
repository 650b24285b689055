//! The prefs of a burst run. Plex rejects unknown pref ids, and ids differ
//! between versions, so the ids are read from the server first and every
//! write is checked and read back (lessons.md 15). Besides the work Plex may
//! do, a run's Plex faces nothing outside the instance: no remote access,
//! no discovery, no relay, and no client without a token but loopback's.

use anyhow::{Result, bail};

use super::api::{PlexApi, Setting};

/// What Plex may do on its own during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Scans only: no trash emptying, no scheduled or FS-event scans, no
    /// Butler task, no background analysis (lessons.md 1, 11).
    Scan,
    /// As `Scan`, plus Sonic analysis (lessons.md 12).
    Sonic,
}

/// Prefs a run cannot do without: Plex must never empty its trash during a
/// run, whatever the mount does (lessons.md 1).
const REQUIRED: &[(&str, &str)] = &[("autoEmptyTrash", "0")];
const OFF: &[&str] = &[
    "FSEventLibraryUpdatesEnabled",
    "FSEventLibraryPartialScanEnabled",
    "ScheduledLibraryUpdatesEnabled",
];
/// What exposes a server beyond the instance, off wherever this Plex has
/// it. Ids as Plex spells them in `/:/prefs` and Preferences.xml:
/// python-plexapi's docs/settingslist.rst lists them from a real server
/// (first letter lowered: `publishServerOnPlexOnlineKey`, `gdmEnabled`,
/// `dlnaEnabled`) and its tests/test_gdm.py reads `GdmEnabled`; a real
/// Preferences.xml carries `PublishServerOnPlexOnlineKey`, `DlnaEnabled`,
/// `GdmEnabled`, `RelayEnabled`. Remote access off also ends Plex's UPnP /
/// NAT-PMP port mapping, which only runs for it.
const EXPOSURE_OFF: &[&str] = &[
    // Remote access: published on plex.tv, port mapped on the router.
    "PublishServerOnPlexOnlineKey",
    // Local discovery (UDP 32410-32414) and the DLNA server (1900, 32469).
    "GdmEnabled",
    "DlnaEnabled",
    // Plex's relay: clients reach the server through plex.tv's relays.
    "RelayEnabled",
];
const ALLOWED_NETWORKS: &str = "allowedNetworks";
/// Sonic: the `MusicAnalysis` Butler task runs on its own when this is not
/// `never`; a real server has no `ButlerTask*` pref for it (its 14 are
/// maintenance tasks: andrey-yantsen/plex-api.rs, commit f7d02c5,
/// crates/plex-api/tests/mocks/server/prefs.json).
const SONIC_BEHAVIOR: &str = "MusicAnalysisBehavior";

/// The prefs to write for `work`, from the ids this server has;
/// `allowed_networks`: who may talk to it without a token.
pub fn wanted(
    work: Work,
    settings: &[Setting],
    allowed_networks: &str,
) -> Result<Vec<(String, String)>> {
    let has = |id: &str| settings.iter().any(|s| s.id == id);
    let mut out = Vec::new();
    for (id, value) in REQUIRED {
        if !has(id) {
            bail!("this Plex has no pref {id:?}: cannot make the run safe, refusing to scan");
        }
        out.push((id.to_string(), value.to_string()));
    }
    for id in OFF.iter().chain(EXPOSURE_OFF).filter(|id| has(id)) {
        out.push((id.to_string(), "0".into()));
    }
    if has(ALLOWED_NETWORKS) {
        out.push((ALLOWED_NETWORKS.to_string(), allowed_networks.to_string()));
    }
    for s in settings {
        let sonic = work == Work::Sonic;
        // Every scheduled Butler task off, in every phase. Only the
        // booleans: some servers have text `ButlerTask*` prefs too
        // (`ButlerTaskUpdateServer`, askme/always) that "0" would not fit.
        if s.id.starts_with("ButlerTask") && s.kind == "bool" {
            out.push((s.id.clone(), "0".into()));
        } else if s.id.ends_with("Behavior") && s.kind == "text" {
            let value = if sonic && s.id == SONIC_BEHAVIOR {
                "asap"
            } else {
                "never"
            };
            out.push((s.id.clone(), value.into()));
        }
    }
    Ok(out)
}

/// Writes `wanted` and reads every value back.
pub async fn apply(api: &PlexApi, wanted: &[(String, String)]) -> Result<()> {
    api.set_prefs(wanted).await?;
    let now = api.prefs().await?;
    for (id, value) in wanted {
        let Some(setting) = now.iter().find(|s| &s.id == id) else {
            bail!("pref {id:?} disappeared after it was set");
        };
        if !same(&setting.value_text(), value) {
            bail!(
                "Plex accepted {id}={value} but now reports {id}={}",
                setting.value_text()
            );
        }
    }
    tracing::info!(count = wanted.len(), "Plex prefs set and read back");
    Ok(())
}

fn same(actual: &str, wanted: &str) -> bool {
    let norm = |v: &str| match v {
        "true" => "1".to_string(),
        "false" => "0".to_string(),
        other => other.to_string(),
    };
    norm(actual) == norm(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(id: &str, kind: &str) -> Setting {
        Setting {
            id: id.into(),
            kind: kind.into(),
            value: serde_json::Value::Null,
        }
    }

    #[test]
    fn every_butler_task_is_off_and_sonic_is_only_its_behavior() {
        // A real server's Butler prefs: booleans, plus a text one on some.
        let settings = [
            setting("autoEmptyTrash", "bool"),
            setting("FSEventLibraryUpdatesEnabled", "bool"),
            setting("ButlerTaskDeepMediaAnalysis", "bool"),
            setting("ButlerTaskRefreshLibraries", "bool"),
            setting("ButlerTaskUpdateServer", "text"),
            setting("MusicAnalysisBehavior", "text"),
            setting("FriendlyName", "text"),
        ];
        let scan = wanted(Work::Scan, &settings, "127.0.0.1/32").unwrap();
        let sonic = wanted(Work::Sonic, &settings, "127.0.0.1/32").unwrap();
        for out in [&scan, &sonic] {
            assert!(out.contains(&("autoEmptyTrash".into(), "0".into())));
            assert!(out.contains(&("ButlerTaskDeepMediaAnalysis".into(), "0".into())));
            assert!(out.contains(&("ButlerTaskRefreshLibraries".into(), "0".into())));
            assert!(
                !out.iter()
                    .any(|(id, _)| id == "FriendlyName" || id == "ButlerTaskUpdateServer"),
                "{out:?}"
            );
        }
        // The scan keeps Sonic from running by its behavior; Sonic turns it on.
        assert!(scan.contains(&("MusicAnalysisBehavior".into(), "never".into())));
        assert!(sonic.contains(&("MusicAnalysisBehavior".into(), "asap".into())));
    }

    #[test]
    fn a_server_without_the_trash_pref_is_refused() {
        let err = wanted(Work::Scan, &[setting("FriendlyName", "text")], "").unwrap_err();
        assert!(err.to_string().contains("autoEmptyTrash"), "{err}");
    }

    #[test]
    fn remote_access_discovery_and_relay_are_off_and_only_loopback_is_trusted() {
        let settings = [
            setting("autoEmptyTrash", "bool"),
            setting("PublishServerOnPlexOnlineKey", "bool"),
            setting("GdmEnabled", "bool"),
            setting("DlnaEnabled", "bool"),
            setting("RelayEnabled", "bool"),
            setting("allowedNetworks", "text"),
        ];
        for work in [Work::Scan, Work::Sonic] {
            let out = wanted(work, &settings, "127.0.0.1/32,172.17.0.1/32").unwrap();
            for id in [
                "PublishServerOnPlexOnlineKey",
                "GdmEnabled",
                "DlnaEnabled",
                "RelayEnabled",
            ] {
                assert!(out.contains(&(id.into(), "0".into())), "{id}: {out:?}");
            }
            assert!(out.contains(&(
                "allowedNetworks".into(),
                "127.0.0.1/32,172.17.0.1/32".into()
            )));
        }
        // A Plex without one of them is not asked to set it (it would 400).
        let out = wanted(Work::Scan, &settings[..2], "127.0.0.1/32").unwrap();
        assert!(
            !out.iter()
                .any(|(id, _)| id == "GdmEnabled" || id == "allowedNetworks")
        );
    }
}
