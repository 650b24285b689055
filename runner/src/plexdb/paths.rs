//! Path prefixes by whole leading components, as the DB stores paths.
//!
//! Paths are compared as text, byte for byte: Linux paths are case
//! sensitive, and `_` or `%` are ordinary characters (no `LIKE` anywhere).
//! `/Media/TV` covers `/Media/TV` and `/Media/TV/x`, never `/Media/TVShows`.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::PlexDbError;

/// Plex stores an external subtitle as `file://` followed by the raw,
/// unencoded absolute path (`file:///data/Movies/A B/a.srt`), so that is the
/// only URL form mapped: a percent-encoded URL is left as it is.
pub(crate) const FILE_URL_SCHEME: &str = "file://";

/// The home server's path prefix `from` and what it is on the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMapping {
    pub from: String,
    pub to: String,
}

impl PathMapping {
    /// A checked mapping: both sides absolute, without `.`/`..` components
    /// or NUL; a trailing `/` is dropped (`/Media/TV/` means `/Media/TV`).
    pub fn new(from: &str, to: &str) -> Result<PathMapping, PlexDbError> {
        let bad = |reason| PlexDbError::BadMapping {
            from: from.into(),
            to: to.into(),
            reason,
        };
        let from_n = normalise(from)
            .ok_or_else(|| bad("paths must be absolute, without '.', '..' or NUL"))?;
        let to_n =
            normalise(to).ok_or_else(|| bad("paths must be absolute, without '.', '..' or NUL"))?;
        Ok(PathMapping {
            from: display(&from_n),
            to: display(&to_n),
        })
    }
}

/// `FROM=TO`, as on the command line.
impl FromStr for PathMapping {
    type Err = PlexDbError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((from, to)) => PathMapping::new(from, to),
            None => Err(PlexDbError::BadMapping {
                from: s.into(),
                to: String::new(),
                reason: "expected FROM=TO",
            }),
        }
    }
}

/// `path` without trailing slashes; the root becomes "" so that
/// "prefix + '/' + rest" needs no special case. None if unusable.
fn normalise(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let clean = path.starts_with('/')
        && !path.contains('\0')
        && !trimmed
            .split('/')
            .skip(1)
            .any(|c| matches!(c, "" | "." | ".."));
    clean.then(|| trimmed.to_string())
}

fn display(normalised: &str) -> String {
    if normalised.is_empty() {
        "/".into()
    } else {
        normalised.into()
    }
}

/// `path` relative to `prefix` ("" or starting with '/') when `prefix` is
/// a whole-component prefix of it. `prefix` is normalised (see above).
pub(crate) fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// True when `path` is `root` or lies under it, by whole components.
pub(crate) fn is_under(path: &str, root: &str) -> bool {
    normalise(root).is_some_and(|root| strip_prefix(path, &root).is_some())
}

/// Applies a set of mappings: the longest matching `from` wins, and each
/// path is mapped at most once (no chaining `A→B` then `B→C`).
#[derive(Debug, Clone)]
pub(crate) struct Mapper {
    /// (index in the caller's list, normalised from, normalised to),
    /// longest `from` first.
    rules: Vec<(usize, String, String)>,
}

impl Mapper {
    pub(crate) fn new(mappings: &[PathMapping]) -> Result<Mapper, PlexDbError> {
        let mut rules = Vec::with_capacity(mappings.len());
        for (i, m) in mappings.iter().enumerate() {
            let checked = PathMapping::new(&m.from, &m.to)?;
            let from = normalise(&checked.from).unwrap_or_default();
            if rules.iter().any(|(_, f, _)| *f == from) {
                return Err(PlexDbError::BadMapping {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    reason: "the same 'from' appears twice",
                });
            }
            rules.push((i, from, normalise(&checked.to).unwrap_or_default()));
        }
        rules.sort_by_key(|(_, from, _)| std::cmp::Reverse(from.len()));
        Ok(Mapper { rules })
    }

    /// (index of the mapping used, new path) for an absolute path that a
    /// mapping covers; None for anything else (relative paths included).
    pub(crate) fn map_path(&self, path: &str) -> Option<(usize, String)> {
        if !path.starts_with('/') {
            return None;
        }
        self.rules.iter().find_map(|(i, from, to)| {
            let rest = strip_prefix(path, from)?;
            let mapped = if to.is_empty() && rest.is_empty() {
                "/".to_string()
            } else {
                format!("{to}{rest}")
            };
            Some((*i, mapped))
        })
    }

    /// Same for a `file://` URL (see [`FILE_URL_SCHEME`]).
    pub(crate) fn map_file_url(&self, url: &str) -> Option<(usize, String)> {
        let path = url.strip_prefix(FILE_URL_SCHEME)?;
        self.map_path(path)
            .map(|(i, p)| (i, format!("{FILE_URL_SCHEME}{p}")))
    }

    /// The path after mapping (itself when no mapping applies).
    pub(crate) fn apply(&self, path: &str) -> String {
        self.map_path(path)
            .map(|(_, p)| p)
            .unwrap_or_else(|| path.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(pairs: &[(&str, &str)]) -> Mapper {
        let list: Vec<_> = pairs
            .iter()
            .map(|(f, t)| PathMapping {
                from: f.to_string(),
                to: t.to_string(),
            })
            .collect();
        Mapper::new(&list).expect("valid mappings")
    }

    #[test]
    fn maps_whole_components_only() {
        let m = mapper(&[("/Media/TV", "/mnt/tv")]);
        assert_eq!(m.map_path("/Media/TV"), Some((0, "/mnt/tv".into())));
        assert_eq!(
            m.map_path("/Media/TV/a/b.mkv"),
            Some((0, "/mnt/tv/a/b.mkv".into()))
        );
        assert_eq!(m.map_path("/Media/TV/"), Some((0, "/mnt/tv/".into())));
        assert_eq!(m.map_path("/Media/TVShows/a.mkv"), None);
        assert_eq!(m.map_path("/media/tv/a.mkv"), None);
        assert_eq!(m.map_path("/x/Media/TV/a.mkv"), None);
        assert_eq!(m.map_path("Media/TV/a.mkv"), None);
    }

    #[test]
    fn trailing_slashes_in_mappings_are_ignored() {
        let m = mapper(&[("/Media/TV/", "/mnt/tv/")]);
        assert_eq!(m.map_path("/Media/TV/a"), Some((0, "/mnt/tv/a".into())));
        assert_eq!(m.map_path("/Media/TVa"), None);
    }

    #[test]
    fn longest_prefix_wins_and_nothing_chains() {
        let m = mapper(&[("/a", "/b"), ("/b", "/c"), ("/a/deep", "/d")]);
        assert_eq!(m.map_path("/a/x"), Some((0, "/b/x".into())));
        assert_eq!(m.map_path("/b/x"), Some((1, "/c/x".into())));
        assert_eq!(m.map_path("/a/deep/x"), Some((2, "/d/x".into())));
    }

    #[test]
    fn root_mappings() {
        let m = mapper(&[("/", "/mnt")]);
        assert_eq!(m.map_path("/a/b"), Some((0, "/mnt/a/b".into())));
        let m = mapper(&[("/a", "/")]);
        assert_eq!(m.map_path("/a"), Some((0, "/".into())));
        assert_eq!(m.map_path("/a/b"), Some((0, "/b".into())));
    }

    #[test]
    fn file_urls() {
        let m = mapper(&[("/Media/Movies", "/mnt/m")]);
        assert_eq!(
            m.map_file_url("file:///Media/Movies/A/a.srt"),
            Some((0, "file:///mnt/m/A/a.srt".into()))
        );
        assert_eq!(m.map_file_url("file:///Media/MoviesX/a.srt"), None);
        assert_eq!(m.map_file_url("http://host/Media/Movies/a.srt"), None);
        assert_eq!(m.map_file_url("/Media/Movies/a.srt"), None);
    }

    #[test]
    fn rejects_bad_mappings() {
        for (from, to) in [
            ("relative", "/x"),
            ("/x", ""),
            ("/a/../b", "/x"),
            ("/a//b", "/x"),
            ("/a\0", "/x"),
        ] {
            assert!(
                PathMapping::new(from, to).is_err(),
                "{from:?} -> {to:?} accepted"
            );
        }
        let twice = [
            PathMapping {
                from: "/a/".into(),
                to: "/x".into(),
            },
            PathMapping {
                from: "/a".into(),
                to: "/y".into(),
            },
        ];
        assert!(Mapper::new(&twice).is_err());
        assert!("/a".parse::<PathMapping>().is_err());
        assert_eq!(
            "/a/=/b".parse::<PathMapping>().ok(),
            Some(PathMapping {
                from: "/a".into(),
                to: "/b".into()
            })
        );
    }

    #[test]
    fn under() {
        assert!(is_under("/mnt/media/x", "/mnt/media"));
        assert!(is_under("/mnt/media", "/mnt/media/"));
        assert!(!is_under("/mnt/media2/x", "/mnt/media"));
        assert!(is_under("/anything", "/"));
    }
}
