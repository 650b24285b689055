//! Checking the started Plex against the result's counts: live items per
//! library and type from the API (`/library/sections/{id}/all?type=N`,
//! container size 0, `totalSize`) must equal the manifest's "after" stats.

use std::time::{Duration, Instant};

use runner::plex::PlexError;
use runner::plex::api::PlexApi;
use runner::plexdb::Stats;
use runner::plexdb::stats::type_name;
use serde::Serialize;

/// The types `/all?type=N` lists in full in a section. Trailers, clips,
/// playlists and collections live elsewhere in the API, and a photo
/// section's `type=14` lists only its top-level albums (python-plexapi
/// issue 423) while the DB counts nested ones too: none is compared.
const LISTED_TYPES: [i64; 8] = [1, 2, 3, 4, 8, 9, 10, 13];

/// Mismatches quoted in an error.
const QUOTED: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountCheck {
    pub library_id: i64,
    pub library: String,
    pub type_name: String,
    pub expected: u64,
    /// What Plex answered; `None` when the library is not listed.
    pub live: Option<u64>,
}

impl CountCheck {
    pub fn matches(&self) -> bool {
        self.live == Some(self.expected)
    }
}

/// The metadata type code for a [`Stats`] type name, when listable.
pub fn listed_code(name: &str) -> Option<i64> {
    LISTED_TYPES
        .into_iter()
        .find(|code| type_name(*code) == name)
}

/// Asks Plex for every (library, type) of `expected`; a transient error
/// (Plex still warming up) is retried until `patience` runs out.
pub async fn live_counts(
    api: &PlexApi,
    expected: &Stats,
    patience: Duration,
) -> Result<Vec<CountCheck>, PlexError> {
    let deadline = Instant::now() + patience;
    let sections = retry(deadline, || api.sections()).await?;
    let mut checks = Vec::new();
    for library in &expected.libraries {
        let id = library.id.to_string();
        let listed = sections.iter().any(|s| s.key.as_str() == id);
        for (name, count) in &library.items {
            let Some(code) = listed_code(name) else {
                continue;
            };
            let live = if listed {
                Some(retry(deadline, || api.count(&id, code)).await?)
            } else {
                None
            };
            checks.push(CountCheck {
                library_id: library.id,
                library: library.name.clone(),
                type_name: name.clone(),
                expected: count.live,
                live,
            });
        }
    }
    Ok(checks)
}

/// One line naming the first mismatches, or `None` when all match.
pub fn mismatches(checks: &[CountCheck]) -> Option<String> {
    let bad: Vec<&CountCheck> = checks.iter().filter(|c| !c.matches()).collect();
    if bad.is_empty() {
        return None;
    }
    let quoted: Vec<String> = bad
        .iter()
        .take(QUOTED)
        .map(|c| match c.live {
            Some(live) => format!(
                "{} {}: {} expected, Plex has {live}",
                c.library, c.type_name, c.expected
            ),
            None => format!(
                "library {:?} (id {}) is not listed by Plex",
                c.library, c.library_id
            ),
        })
        .collect();
    let more = bad.len().saturating_sub(QUOTED);
    let more = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    Some(format!(
        "Plex's counts differ from the result's: {}{more}",
        quoted.join("; ")
    ))
}

async fn retry<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, PlexError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PlexError>>,
{
    loop {
        match call().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_listed_codes_only() {
        assert_eq!(listed_code("movie"), Some(1));
        assert_eq!(listed_code("track"), Some(10));
        assert_eq!(listed_code("photo"), Some(13));
        assert_eq!(
            listed_code("photoalbum"),
            None,
            "only top-level albums are listed"
        );
        assert_eq!(listed_code("trailer"), None);
        assert_eq!(listed_code("collection"), None);
        assert_eq!(listed_code("type_42"), None);
    }

    #[test]
    fn mismatches_are_quoted_on_one_line() {
        let check = |lib: &str, t: &str, expected, live| CountCheck {
            library_id: 1,
            library: lib.into(),
            type_name: t.into(),
            expected,
            live,
        };
        assert_eq!(mismatches(&[check("Movies", "movie", 3, Some(3))]), None);
        let text = mismatches(&[
            check("Movies", "movie", 3, Some(2)),
            check("Music", "track", 9, None),
            check("A", "movie", 1, Some(0)),
            check("B", "movie", 1, Some(0)),
        ])
        .unwrap();
        assert!(
            text.contains("Movies movie: 3 expected, Plex has 2"),
            "{text}"
        );
        assert!(text.contains("\"Music\" (id 1) is not listed"), "{text}");
        assert!(text.ends_with("(and 1 more)"), "{text}");
    }
}
