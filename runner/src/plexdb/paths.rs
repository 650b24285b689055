//! Path prefixes by whole leading components, as the DB stores paths.
//!
//! Components are compared byte for byte (Linux paths are case sensitive,
//! and `_` or `%` are ordinary characters: no `LIKE` anywhere), except that
//! a stored component also matches when its Unicode NFC form equals the
//! mapping's: see [`same_component`]. `/Media/TV` covers `/Media/TV` and
//! `/Media/TV/x`, never `/Media/TVShows`. What follows the matched
//! components is kept exactly as stored.
//!
//! `file://` URLs (`media_streams.url`) are matched on their decoded path
//! and keep the form they were stored in: see [`super::file_url`].

use std::borrow::Cow;
use std::str::FromStr;

use icu_normalizer::ComposingNormalizerBorrowed;
use serde::{Deserialize, Serialize};

use super::PlexDbError;
use super::file_url::{FILE_URL_SCHEME, UrlForm};
use super::file_url::{percent_decode, percent_encode};

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
    /// Most components first: of the rules matching a path, the first is
    /// the longest.
    rules: Vec<Rule>,
    /// The form given to the new prefix of a URL that does not show its own.
    neutral_urls: UrlForm,
}

#[derive(Debug, Clone)]
struct Rule {
    /// Index in the caller's list.
    index: usize,
    /// `from`'s components, in NFC.
    from: Vec<String>,
    /// Normalised `to`, as given.
    to: String,
}

impl Mapper {
    pub(crate) fn new(mappings: &[PathMapping]) -> Result<Mapper, PlexDbError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(mappings.len());
        for (index, m) in mappings.iter().enumerate() {
            let checked = PathMapping::new(&m.from, &m.to)?;
            let from = nfc_components(&normalise(&checked.from).unwrap_or_default());
            if rules.iter().any(|r| r.from == from) {
                return Err(PlexDbError::BadMapping {
                    from: m.from.clone(),
                    to: m.to.clone(),
                    reason: "the same 'from' appears twice",
                });
            }
            let to = normalise(&checked.to).unwrap_or_default();
            rules.push(Rule { index, from, to });
        }
        rules.sort_by_key(|r| std::cmp::Reverse(r.from.len()));
        Ok(Mapper {
            rules,
            neutral_urls: UrlForm::Encoded,
        })
    }

    /// The same rules, giving URLs that do not show their form `form`.
    pub(crate) fn with_neutral_urls(self, form: UrlForm) -> Mapper {
        Mapper {
            neutral_urls: form,
            ..self
        }
    }

    /// The rule for absolute `matched`, and what follows its components in
    /// `stored` (`matched` itself, or the URL path `matched` decodes).
    fn split<'s>(&self, matched: &str, stored: &'s str) -> Option<(&Rule, &'s str)> {
        if !matched.starts_with('/') {
            return None;
        }
        let rule = self
            .rules
            .iter()
            .find(|r| starts_with_components(matched, &r.from))?;
        Some((rule, after_components(stored, rule.from.len())))
    }

    /// (index of the mapping used, new path) for an absolute path that a
    /// mapping covers; None for anything else (relative paths included).
    pub(crate) fn map_path(&self, path: &str) -> Option<(usize, String)> {
        let (rule, rest) = self.split(path, path)?;
        Some((rule.index, join(&rule.to, rest)))
    }

    /// Same for a `file://` URL: matched on its decoded path, the new
    /// prefix written in the URL's form, the rest kept as stored.
    pub(crate) fn map_file_url(&self, url: &str) -> Option<(usize, String)> {
        let stored = url.strip_prefix(FILE_URL_SCHEME)?;
        let form = UrlForm::of(stored).unwrap_or(self.neutral_urls);
        let decoded = match form {
            UrlForm::Raw => Cow::Borrowed(stored),
            UrlForm::Encoded => Cow::Owned(percent_decode(stored)?),
        };
        let (rule, rest) = self.split(&decoded, stored)?;
        let prefix = match form {
            UrlForm::Raw => Cow::Borrowed(rule.to.as_str()),
            UrlForm::Encoded => Cow::Owned(percent_encode(&rule.to)),
        };
        Some((
            rule.index,
            format!("{FILE_URL_SCHEME}{}", join(&prefix, rest)),
        ))
    }

    /// The path after mapping (itself when no mapping applies).
    pub(crate) fn apply(&self, path: &str) -> String {
        self.map_path(path)
            .map(|(_, p)| p)
            .unwrap_or_else(|| path.to_string())
    }
}

/// True when the stored component `stored` names `wanted` (in NFC). NFC and
/// NFD spellings of one name look the same and come from the same folder
/// seen through different systems (macOS writes NFD), so a mapping typed in
/// either form matches both. Two siblings differing only in normalisation
/// would both match: they cannot be told apart on screen either.
fn same_component(stored: &str, wanted: &str) -> bool {
    const NFC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfc();
    stored == wanted || (!stored.is_ascii() && NFC.normalize(stored) == wanted)
}

/// The components of a normalised path, in NFC ("" is the root: none).
fn nfc_components(normalised: &str) -> Vec<String> {
    const NFC: ComposingNormalizerBorrowed<'static> = ComposingNormalizerBorrowed::new_nfc();
    normalised
        .split('/')
        .skip(1)
        .map(|c| NFC.normalize(c).into_owned())
        .collect()
}

/// True when absolute `path` starts with all of `from`'s components.
fn starts_with_components(path: &str, from: &[String]) -> bool {
    let mut stored = path.split('/').skip(1);
    from.iter()
        .all(|wanted| stored.next().is_some_and(|c| same_component(c, wanted)))
}

/// What follows the first `n` components of absolute `path` ("" or from a
/// `/` on).
fn after_components(path: &str, n: usize) -> &str {
    path.match_indices('/')
        .nth(n)
        .map_or("", |(i, _)| &path[i..])
}

/// `prefix` + `rest`, the root being "/".
fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() && rest.is_empty() {
        "/".into()
    } else {
        format!("{prefix}{rest}")
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

    /// `url` mapped, or None.
    fn url(m: &Mapper, url: &str) -> Option<String> {
        m.map_file_url(url).map(|(_, u)| u)
    }

    #[test]
    fn file_urls() {
        let m = mapper(&[("/Media/Movies", "/mnt/m")]);
        assert_eq!(
            m.map_file_url("file:///Media/Movies/A/a.srt"),
            Some((0, "file:///mnt/m/A/a.srt".into()))
        );
        assert_eq!(url(&m, "file:///Media/MoviesX/a.srt"), None);
        assert_eq!(url(&m, "http://host/Media/Movies/a.srt"), None);
        assert_eq!(url(&m, "FILE:///Media/Movies/a.srt"), None);
        assert_eq!(url(&m, "/Media/Movies/a.srt"), None);
        assert_eq!(url(&m, "file://host/Media/Movies/a.srt"), None);
    }

    #[test]
    fn encoded_urls_match_decoded_and_stay_encoded() {
        let m = mapper(&[("/data/My TV", "/mnt/media with space/tv")]);
        // Only the prefix is rewritten: the rest keeps Plex's own bytes.
        assert_eq!(
            url(&m, "file:///data/My%20TV/Season%201/It's%20(1),%20a.srt"),
            Some("file:///mnt/media%20with%20space/tv/Season%201/It's%20(1),%20a.srt".into())
        );
        assert_eq!(
            url(&m, "file:///data/My%20tv/a.srt"),
            None,
            "case matters in names"
        );
        assert_eq!(
            url(&m, "file:///data/My%2fTV/a.srt"),
            None,
            "an escaped '/' is not a separator"
        );
        assert_eq!(url(&m, "file:///data/My%20TVShows/a.srt"), None);
        assert_eq!(url(&m, "file:///data/My%20TV%20Shows/a.srt"), None);
        // Not UTF-8 once decoded, or a NUL: left alone.
        assert_eq!(url(&m, "file:///data/My%20TV/%FF.srt"), None);
        assert_eq!(url(&m, "file:///data/My%20TV/a%00.srt"), None);
    }

    #[test]
    fn special_characters_in_from_and_to() {
        let from = "/data/100% \"q\" #1 & a+b, (x) \u{e9}?";
        let to = "/mnt/to 100% #\u{fc}'&";
        let m = mapper(&[(from, to)]);
        let encoded_from = "/data/100%25%20%22q%22%20%231%20%26%20a%2Bb,%20(x)%20%C3%A9%3F";
        let encoded_to = "/mnt/to%20100%25%20%23%C3%BC'%26";
        assert_eq!(percent_encode(from), encoded_from);
        assert_eq!(percent_decode(encoded_from).as_deref(), Some(from));
        assert_eq!(
            url(&m, &format!("file://{encoded_from}/s%20e.srt")),
            Some(format!("file://{encoded_to}/s%20e.srt"))
        );
        assert_eq!(
            url(&m, &format!("file://{from}/s e.srt")),
            Some(format!("file://{to}/s e.srt")),
            "a raw URL stays raw"
        );
        assert_eq!(
            m.map_path(&format!("{from}/s e.mkv")),
            Some((0, format!("{to}/s e.mkv")))
        );
        // Lower-case hex is decoded too; the rest stays as stored.
        assert_eq!(
            url(
                &m,
                "file:///data/100%25%20%22q%22%20%231%20%26%20a%2bb,%20(x)%20%c3%a9%3f/x"
            ),
            Some(format!("file://{encoded_to}/x"))
        );
    }

    #[test]
    fn raw_urls_stay_raw() {
        let m = mapper(&[("/data/My TV", "/mnt/tv 2")]);
        assert_eq!(
            url(&m, "file:///data/My TV/Season 1/a.srt"),
            Some("file:///mnt/tv 2/Season 1/a.srt".into())
        );
        // A raw path with a '%' that cannot be an escape.
        assert_eq!(
            url(&m, "file:///data/My TV/100%/a.srt"),
            Some("file:///mnt/tv 2/100%/a.srt".into())
        );
        assert_eq!(
            url(&m, "file:///data/My%20TV/a b.srt"),
            None,
            "raw: %20 is literal"
        );
    }

    #[test]
    fn an_ambiguous_literal_percent_reads_as_encoded() {
        // "/data/100%20off" could be a raw name: it reads as "100 off".
        let m = mapper(&[("/data", "/mnt/d x")]);
        assert_eq!(
            url(&m, "file:///data/100%20off/a.srt"),
            Some("file:///mnt/d%20x/100%20off/a.srt".into())
        );
        let by_literal = mapper(&[("/data/100%20off", "/x")]);
        assert_eq!(url(&by_literal, "file:///data/100%20off/a.srt"), None);
        let by_decoded = mapper(&[("/data/100 off", "/x")]);
        assert_eq!(
            url(&by_decoded, "file:///data/100%20off/a.srt"),
            Some("file:///x/a.srt".into())
        );
        // As a path it is what it says.
        assert_eq!(
            by_literal.map_path("/data/100%20off/a.mkv"),
            Some((0, "/x/a.mkv".into()))
        );
    }

    #[test]
    fn urls_without_a_form_take_the_dbs() {
        let m = mapper(&[("/data", "/mnt/a b")]);
        assert_eq!(
            url(&m, "file:///data/a.srt"),
            Some("file:///mnt/a%20b/a.srt".into())
        );
        let m = m.with_neutral_urls(UrlForm::Raw);
        assert_eq!(
            url(&m, "file:///data/a.srt"),
            Some("file:///mnt/a b/a.srt".into())
        );
        // A URL showing its form keeps it whatever the DB's.
        assert_eq!(
            url(&m, "file:///data/a%20b.srt"),
            Some("file:///mnt/a%20b/a%20b.srt".into())
        );
    }

    #[test]
    fn nfc_and_nfd_name_the_same_folder() {
        let (nfc, nfd) = ("Caf\u{e9}", "Cafe\u{301}");
        for (given, other) in [(nfc, nfd), (nfd, nfc)] {
            let m = mapper(&[(&format!("/M/{given}"), "/mnt/c")]);
            for stored in [given, other] {
                // The rest keeps its stored form.
                let path = format!("/M/{stored}/{stored}.mkv");
                assert_eq!(m.map_path(&path), Some((0, format!("/mnt/c/{stored}.mkv"))));
                let url_path = percent_encode(&path);
                assert_eq!(
                    url(&m, &format!("file://{url_path}")),
                    Some(format!(
                        "file:///mnt/c/{}",
                        percent_encode(&format!("{stored}.mkv"))
                    ))
                );
                assert_eq!(
                    url(&m, &format!("file://{path}")),
                    Some(format!("file:///mnt/c/{stored}.mkv"))
                );
            }
            assert_eq!(m.map_path(&format!("/M/{other}s/a")), None);
            assert_eq!(m.map_path("/M/Cafe/a"), None);
        }
        // Both forms of one 'from' are one mapping twice.
        let twice = [
            PathMapping {
                from: format!("/M/{nfc}"),
                to: "/a".into(),
            },
            PathMapping {
                from: format!("/M/{nfd}"),
                to: "/b".into(),
            },
        ];
        assert!(Mapper::new(&twice).is_err());
        // The longest wins by components, not bytes (NFD is longer).
        let m = mapper(&[
            (&format!("/{nfd}{nfd}{nfd}"), "/short"),
            (&format!("/{nfc}{nfc}{nfc}/x"), "/long"),
        ]);
        assert_eq!(
            m.map_path(&format!("/{nfc}{nfc}{nfc}/x/y")),
            Some((1, "/long/y".into()))
        );
    }

    #[test]
    fn siblings_are_never_touched() {
        let m = mapper(&[("/Media/TV", "/mnt/tv x")]);
        for url_ in [
            "file:///Media/TVShows/a.srt",
            "file:///Media/TV%20Shows/a.srt",
            "file:///Media/TV Shows/a.srt",
            "file:///Media/TV%2FShows/a.srt",
            "file:///Media/T/V/a.srt",
            "file:///Media/tv/a.srt",
        ] {
            assert_eq!(url(&m, url_), None, "{url_}");
        }
        assert_eq!(
            url(&m, "file:///Media/TV"),
            Some("file:///mnt/tv%20x".into())
        );
        assert_eq!(
            url(&m, "file:///Media/TV/"),
            Some("file:///mnt/tv%20x/".into())
        );
    }

    #[test]
    fn root_mappings_of_urls() {
        let m = mapper(&[("/", "/mnt/h d")]);
        assert_eq!(
            url(&m, "file:///a%20b/c.srt"),
            Some("file:///mnt/h%20d/a%20b/c.srt".into())
        );
        assert_eq!(
            url(&m, "file:///a b/c.srt"),
            Some("file:///mnt/h d/a b/c.srt".into())
        );
        let m = mapper(&[("/mnt/h d", "/")]);
        assert_eq!(
            url(&m, "file:///mnt/h%20d/a%20b/c.srt"),
            Some("file:///a%20b/c.srt".into())
        );
        assert_eq!(url(&m, "file:///mnt/h%20d"), Some("file:///".into()));
    }

    #[test]
    fn a_round_trip_gives_back_the_stored_bytes() {
        let there = mapper(&[
            ("/data/My Movies", "/mnt/media with space/m"),
            ("/data/TV", "/mnt/\u{e9} #%"),
        ]);
        let back = mapper(&[
            ("/mnt/media with space/m", "/data/My Movies"),
            ("/mnt/\u{e9} #%", "/data/TV"),
        ]);
        for stored in [
            "file:///data/My%20Movies/A%20(2022)/a,%20b's.srt",
            "file:///data/My Movies/A (2022)/a, b's.srt",
            "file:///data/TV/Show/S%C3%A9rie%201.srt",
            "file:///data/TV/Show/S\u{e9}rie 1.srt",
            "file:///data/TV/Show/plain.srt",
        ] {
            let mapped = url(&there, stored).expect(stored);
            assert_eq!(url(&back, &mapped).as_deref(), Some(stored), "via {mapped}");
        }
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
