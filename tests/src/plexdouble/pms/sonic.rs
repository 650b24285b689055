//! Sonic analysis (the Butler's MusicAnalysis): only on a claimed server
//! whose account has an active Plex Pass (asked of plex.tv, lessons.md
//! rule 13); it marks live tracks of music sections that lack
//! `musicAnalysisVersion`, at `--sonic-rate` tracks per second, in small
//! transactions, so the DB count moves as it goes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Result;
use rusqlite::Connection;
use serde_json::Value as Json;

use super::activity;
use super::state::State;
use super::work::Work;

/// Under the `stuck-sonic` fault, tracks analysed before progress stops.
const STUCK_AFTER: usize = 3;
/// Ticks between two "no progress" lines while stuck: the double's own
/// count of the time it spent stuck, which a test waits on.
const STUCK_REPORT: u32 = 10;
const TICK: Duration = Duration::from_millis(100);

/// Live tracks of music libraries: the join leaves out theme songs (tracks
/// of the hidden section -2, which has no `library_sections` row), which
/// Plex never analyses.
const LIVE_TRACKS: &str =
    "FROM metadata_items m JOIN library_sections s ON s.id = m.library_section_id
    WHERE s.section_type = 8 AND m.metadata_type = 10 AND m.deleted_at IS NULL";

pub fn run(state: &State, cancel: Arc<AtomicBool>) {
    let Some(token) = state.online_token() else {
        state.log.warn(
            "Butler: MusicAnalysis needs a server signed in to plex.tv: not claimed, nothing done",
        );
        return;
    };
    state.log.info(
        state
            .plextv
            .requesting("GET", "/api/v2/user", "X-Plex-Token", &token),
    );
    match state.runtime.block_on(state.plextv.account(&token)) {
        Ok(account) if account.subscription_active => {}
        Ok(account) => {
            state.log.warn(format!(
                "Butler: MusicAnalysis needs Plex Pass: account {} has none ({}), nothing done",
                account.username, account.subscription_status
            ));
            return;
        }
        Err(error) => {
            state.log.warn(format!(
                "Butler: MusicAnalysis cannot check Plex Pass ({error:#}), nothing done"
            ));
            return;
        }
    }
    if let Err(error) = analyse(state, cancel) {
        state
            .log
            .error(format!("Butler: MusicAnalysis failed: {error:#}"));
    }
}

fn analyse(state: &State, cancel: Arc<AtomicBool>) -> Result<()> {
    let (total, todo) = state.db.read(pending)?;
    let already = total - todo.len() as u64;
    let work = Work::begin(
        state,
        activity::SONIC,
        "Sonic analysis".into(),
        None,
        Some(vec![
            "--analyze".into(),
            "--server-action".into(),
            "sonic".into(),
        ]),
        cancel,
    );
    state.log.info(format!(
        "Butler: MusicAnalysis: {} of {total} tracks to analyse at {} tracks/s",
        todo.len(),
        state.config.sonic_rate
    ));
    let mut done = 0;
    let mut budget = 0.0;
    let mut last = Instant::now();
    let mut stuck_ticks = 0;
    work.progress(already, total);
    work.activity
        .subtitle(format!("{already} of {total} tracks"));
    while done < todo.len() {
        if !work.sleep(TICK) {
            state
                .log
                .info(format!("Butler: MusicAnalysis stopped after {done} tracks"));
            return Ok(());
        }
        let mut allowed = todo.len() - done;
        if state.faults.stuck_sonic {
            allowed = allowed.min(STUCK_AFTER.saturating_sub(done));
            if allowed == 0 {
                stuck_ticks += 1;
                if stuck_ticks == 1 {
                    state
                        .log
                        .warn("fault stuck-sonic: Sonic analysis stops making progress");
                } else if stuck_ticks % STUCK_REPORT == 0 {
                    state.log.warn(format!(
                        "fault stuck-sonic: no progress for {stuck_ticks} ticks"
                    ));
                }
                continue;
            }
        }
        budget += state.config.sonic_rate * last.elapsed().as_secs_f64();
        last = Instant::now();
        let n = (budget.floor() as usize).min(allowed);
        if n == 0 {
            continue;
        }
        budget -= n as f64;
        let batch = &todo[done..done + n];
        state.db.write(|conn| {
            let tx = conn.transaction()?;
            {
                let mut update = tx.prepare(
                    "UPDATE metadata_items SET extra_data = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                )?;
                for (id, extra) in batch {
                    update.execute((id, with_marker(extra.as_deref())))?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        done += n;
        let analysed = already + done as u64;
        work.progress(analysed, total);
        work.activity
            .subtitle(format!("{analysed} of {total} tracks"));
    }
    state.log.info(format!(
        "Butler: MusicAnalysis done: {done} tracks analysed"
    ));
    Ok(())
}

/// Live tracks of music sections, and those without a Sonic marker with
/// their `extra_data`.
#[allow(clippy::type_complexity)]
fn pending(conn: &Connection) -> Result<(u64, Vec<(i64, Option<String>)>)> {
    let total: i64 = conn.query_row(&format!("SELECT count(*) {LIVE_TRACKS}"), [], |row| {
        row.get(0)
    })?;
    let mut statement = conn.prepare(&format!(
        "SELECT m.id, m.extra_data {LIVE_TRACKS}
           AND (m.extra_data IS NULL OR m.extra_data NOT LIKE '%musicAnalysisVersion%') ORDER BY m.id"
    ))?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((total as u64, rows.collect::<rusqlite::Result<_>>()?))
}

/// Sonic's marker in `extra_data`: a track carries it once analysed.
const MARKER_KEY: &str = "ms:musicAnalysisVersion";
const MARKER_URL: &str = "ms%3AmusicAnalysisVersion=1";

/// `extra_data` with the Sonic marker added in the form already used: the
/// JSON form (key `ms:musicAnalysisVersion` plus its `url` mirror) or the
/// older URL-encoded form.
pub fn with_marker(extra: Option<&str>) -> String {
    let extra = extra.map(str::trim).unwrap_or_default();
    if extra.is_empty() {
        return format!(r#"{{"ms:musicAnalysisVersion":"1","url":"{MARKER_URL}"}}"#);
    }
    if extra.starts_with('{')
        && let Ok(Json::Object(mut map)) = serde_json::from_str::<Json>(extra)
    {
        map.insert(MARKER_KEY.into(), Json::String("1".into()));
        let url = match map.get("url").and_then(Json::as_str) {
            Some(url) if !url.is_empty() => format!("{url}&{MARKER_URL}"),
            _ => MARKER_URL.to_string(),
        };
        map.insert("url".into(), Json::String(url));
        return Json::Object(map).to_string();
    }
    format!("{extra}&{MARKER_URL}")
}

/// The version in Sonic's marker, as `with_marker` writes it and Plex's
/// DBs hold it: JSON (1.40 on) or the older URL-encoded form.
pub fn music_analysis_version(extra_data: Option<&str>) -> Option<i64> {
    let extra = extra_data?.trim();
    let value = if extra.starts_with('{') {
        match serde_json::from_str::<Json>(extra).ok()?.get(MARKER_KEY)? {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }
    } else {
        form_urlencoded::parse(extra.as_bytes())
            .find(|(k, _)| k == MARKER_KEY)?
            .1
            .into_owned()
    };
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonic_marker_is_read_in_both_forms() {
        assert_eq!(
            music_analysis_version(Some(
                r#"{"ms:musicAnalysisVersion":"1","url":"ms%3AmusicAnalysisVersion=1"}"#
            )),
            Some(1)
        );
        assert_eq!(
            music_analysis_version(Some(
                "ms%3AloudnessAnalysisVersion=2&ms%3AmusicAnalysisVersion=1"
            )),
            Some(1)
        );
        assert_eq!(
            music_analysis_version(Some(r#"{"ms:loudnessAnalysisVersion":"2"}"#)),
            None
        );
        assert_eq!(music_analysis_version(None), None);
    }

    #[test]
    fn marker_keeps_the_existing_form() {
        assert_eq!(
            with_marker(None),
            r#"{"ms:musicAnalysisVersion":"1","url":"ms%3AmusicAnalysisVersion=1"}"#
        );
        let json = with_marker(Some(
            r#"{"ms:loudnessAnalysisVersion":"2","url":"ms%3AloudnessAnalysisVersion=2"}"#,
        ));
        let parsed: Json = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["ms:musicAnalysisVersion"], "1");
        assert_eq!(parsed["ms:loudnessAnalysisVersion"], "2");
        assert_eq!(
            parsed["url"],
            "ms%3AloudnessAnalysisVersion=2&ms%3AmusicAnalysisVersion=1"
        );
        assert_eq!(
            with_marker(Some("ms%3AloudnessAnalysisVersion=2")),
            "ms%3AloudnessAnalysisVersion=2&ms%3AmusicAnalysisVersion=1"
        );
    }
}
