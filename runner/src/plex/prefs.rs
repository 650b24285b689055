//! The prefs of a burst run. Plex rejects unknown pref ids, and ids differ
//! between versions, so the ids are read from the server first and every
//! write is checked and read back (lessons.md 15).

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
const SONIC_BUTLER_TASK: &str = "ButlerTaskMusicAnalysis";
const SONIC_BEHAVIOR: &str = "MusicAnalysisBehavior";

/// The prefs to write for `work`, from the ids this server has.
pub fn wanted(work: Work, settings: &[Setting]) -> Result<Vec<(String, String)>> {
    let has = |id: &str| settings.iter().any(|s| s.id == id);
    let mut out = Vec::new();
    for (id, value) in REQUIRED {
        if !has(id) {
            bail!("this Plex has no pref {id:?}: cannot make the run safe, refusing to scan");
        }
        out.push((id.to_string(), value.to_string()));
    }
    for id in OFF.iter().filter(|id| has(id)) {
        out.push((id.to_string(), "0".into()));
    }
    for s in settings {
        let sonic = work == Work::Sonic;
        if s.id.starts_with("ButlerTask") {
            let on = sonic && s.id == SONIC_BUTLER_TASK;
            out.push((s.id.clone(), if on { "1" } else { "0" }.into()));
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
    fn scan_turns_every_butler_task_and_behavior_off() {
        let settings = [
            setting("autoEmptyTrash", "bool"),
            setting("FSEventLibraryUpdatesEnabled", "bool"),
            setting("ButlerTaskDeepMediaAnalysis", "bool"),
            setting("ButlerTaskMusicAnalysis", "bool"),
            setting("MusicAnalysisBehavior", "text"),
            setting("FriendlyName", "text"),
        ];
        let scan = wanted(Work::Scan, &settings).unwrap();
        assert!(scan.contains(&("autoEmptyTrash".into(), "0".into())));
        assert!(scan.contains(&("ButlerTaskMusicAnalysis".into(), "0".into())));
        assert!(scan.contains(&("MusicAnalysisBehavior".into(), "never".into())));
        assert!(!scan.iter().any(|(id, _)| id == "FriendlyName"));
        let sonic = wanted(Work::Sonic, &settings).unwrap();
        assert!(sonic.contains(&("ButlerTaskMusicAnalysis".into(), "1".into())));
        assert!(sonic.contains(&("ButlerTaskDeepMediaAnalysis".into(), "0".into())));
        assert!(sonic.contains(&("MusicAnalysisBehavior".into(), "asap".into())));
    }

    #[test]
    fn a_server_without_the_trash_pref_is_refused() {
        let err = wanted(Work::Scan, &[setting("FriendlyName", "text")]).unwrap_err();
        assert!(err.to_string().contains("autoEmptyTrash"), "{err}");
    }
}
