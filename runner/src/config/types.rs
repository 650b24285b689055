//! Newtypes that cannot hold an invalid value: built only through
//! `TryFrom<String>`, whose error says what is wrong with the value (the
//! caller adds which key held it).

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::path::{Component, Path, PathBuf};

/// A validated string. `$check` returns the normalised value or the problem.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                let check: fn(String) -> Result<String, String> = $check;
                check(value).map($name)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = String;
            fn try_from(value: &str) -> Result<Self, String> {
                Self::try_from(value.to_string())
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// Names a run in S3 keys and file names: 1-64 of `[a-z0-9-]`, no
    /// leading or trailing `-`.
    RunId,
    |v| {
        let ok = (1..=64).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if ok {
            Ok(v)
        } else {
            Err(format!(
                "{v:?} is not a valid run id (1-64 lowercase letters, digits and hyphens, not starting or ending with a hyphen)"
            ))
        }
    }
);

string_newtype!(
    /// An S3 bucket name under the S3 naming rules.
    BucketName,
    |v| match bucket_name_problem(&v) {
        None => Ok(v),
        Some(why) => Err(format!("{v:?} is not a valid bucket name ({why})")),
    }
);

fn bucket_name_problem(v: &str) -> Option<&'static str> {
    let charset = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !(3..=63).contains(&v.len()) || !charset {
        return Some("lowercase letters, digits, dots and hyphens, 3-63 chars");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(v.as_bytes()[0]) || !alnum(v.as_bytes()[v.len() - 1]) {
        return Some("it must start and end with a letter or a digit");
    }
    if v.contains("..") || v.contains(".-") || v.contains("-.") {
        return Some("a dot may not be next to another dot or a hyphen");
    }
    if v.parse::<Ipv4Addr>().is_ok() {
        return Some("it may not look like an IP address");
    }
    if v.starts_with("xn--")
        || v.starts_with("sthree-")
        || v.ends_with("-s3alias")
        || v.ends_with("--ol-s3")
    {
        return Some(
            "the prefixes xn-- and sthree- and the suffixes -s3alias and --ol-s3 are reserved",
        );
    }
    None
}

impl BucketName {
    /// Virtual-hosted addressing puts the bucket in the TLS host name, where
    /// a dot breaks certificate matching.
    pub fn needs_path_style(&self) -> bool {
        self.0.contains('.')
    }
}

string_newtype!(
    /// An S3 signing region (`fr-par`, `us-east-1`).
    Region,
    |v| {
        let ok = (1..=64).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(v)
        } else {
            Err(format!("{v:?} is not a valid region (lowercase letters, digits, '-' and '_', e.g. \"fr-par\")"))
        }
    }
);

string_newtype!(
    /// The full key of one S3 object: not empty, no leading or trailing
    /// `/`, no empty or `..` segment, no control character, at most 1024 bytes.
    ObjectKey,
    |v| {
        if v.is_empty() || v.len() > 1024 {
            return Err(format!("{v:?} is not a valid object key (1-1024 bytes)"));
        }
        if v.ends_with('/') {
            return Err(format!("{v:?} is not a valid object key (it names a folder: it ends with '/')"));
        }
        match key_problem(&v) {
            Some(why) => Err(format!("{v:?} is not a valid object key ({why})")),
            None => Ok(v),
        }
    }
);

string_newtype!(
    /// A key prefix that ends with `/` (added when missing), or is empty
    /// for the bucket's root.
    KeyPrefix,
    |v| {
        let v = if v.is_empty() || v.ends_with('/') { v } else { format!("{v}/") };
        match key_problem(v.strip_suffix('/').unwrap_or(&v)) {
            Some(why) if !v.is_empty() => Err(format!("{v:?} is not a valid key prefix ({why})")),
            _ => Ok(v),
        }
    }
);

fn key_problem(v: &str) -> Option<&'static str> {
    if v.starts_with('/') {
        return Some("it may not start with '/'");
    }
    if v.chars().any(char::is_control) {
        return Some("it may not hold control characters");
    }
    if v.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Some("empty, '.' and '..' segments are not allowed");
    }
    None
}

string_newtype!(
    /// A pinned Plex Media Server version, `1.41.3.9314-a0bfb8370`: four
    /// dotted numbers, a hyphen, a lowercase hex build hash.
    PlexVersion,
    |v| {
        let ok = v.split_once('-').is_some_and(|(numbers, hash)| {
            let parts: Vec<&str> = numbers.split('.').collect();
            parts.len() == 4
                && parts.iter().all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                && (7..=40).contains(&hash.len())
                && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(v)
        } else {
            Err(format!(
                "{v:?} is not a Plex version (expected four numbers and a build hash, e.g. \"1.41.3.9314-a0bfb8370\")"
            ))
        }
    }
);

string_newtype!(
    /// A docker image repository without tag or digest (the tag is the Plex
    /// version): `plexinc/pms-docker`, `registry.local:5000/pms`.
    DockerImage,
    |v| {
        let name = v.rsplit('/').next().unwrap_or("");
        let ok = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b))
            && !name.is_empty()
            && !name.contains(':')
            && v.split('/').all(|s| !s.is_empty());
        if ok {
            Ok(v)
        } else {
            Err(format!(
                "{v:?} is not a docker image name without a tag (e.g. \"plexinc/pms-docker\"; the tag is plex.version)"
            ))
        }
    }
);

impl DockerImage {
    /// The image reference pinned to `version`.
    pub fn with_tag(&self, version: &PlexVersion) -> String {
        format!("{}:{version}", self.0)
    }
}

string_newtype!(
    /// An `http(s)://host[:port]` base URL: no credentials, query or
    /// fragment; stored without a trailing slash.
    BaseUrl,
    |v| {
        let bad = |why: &str| Err(format!("{v:?} is not a valid base URL ({why})"));
        let url = match url::Url::parse(&v) {
            Ok(u) => u,
            Err(e) => return bad(&e.to_string()),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return bad("the scheme must be http or https");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return bad("it has no host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad("credentials do not belong in the URL");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return bad("no query or fragment");
        }
        Ok(url.as_str().trim_end_matches('/').to_string())
    }
);

string_newtype!(
    /// A library title as Plex shows it: 1-255 characters, no control
    /// character, no leading or trailing space.
    LibraryTitle,
    |v| {
        let ok = !v.is_empty() && v.chars().count() <= 255 && !v.chars().any(char::is_control) && v.trim() == v;
        if ok {
            Ok(v)
        } else {
            Err(format!(
                "{v:?} is not a valid library title (1-255 characters, no control characters or surrounding spaces)"
            ))
        }
    }
);

string_newtype!(
    /// A Plex agent or scanner identifier (`tv.plex.agents.movie`,
    /// `Plex Movie`): printable, not empty.
    PlexIdentifier,
    |v| {
        if !v.is_empty() && v.len() <= 255 && !v.chars().any(char::is_control) && v.trim() == v {
            Ok(v)
        } else {
            Err(format!("{v:?} is not a valid agent or scanner name"))
        }
    }
);

string_newtype!(
    /// A Plex library language: `en-US`, `fr-FR`, `de`, `xn` (none).
    Language,
    |v| {
        let ok = (2..=10).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-');
        if ok {
            Ok(v)
        } else {
            Err(format!("{v:?} is not a language code (e.g. \"en-US\", \"fr-FR\")"))
        }
    }
);

/// An absolute, lexically normal path: starts at `/`, no `.` or `..`
/// component, no repeated or trailing `/`, valid UTF-8 (Plex stores paths as
/// text). `..` is refused rather than resolved: what it points at depends on
/// symlinks this machine may not share with the one that wrote the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AbsPath(PathBuf);

impl TryFrom<String> for AbsPath {
    type Error = String;

    fn try_from(v: String) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{v:?} is not a usable path ({why})"));
        if !v.starts_with('/') {
            return bad("it must be absolute");
        }
        if v.contains('\0') {
            return bad("it holds a NUL byte");
        }
        let mut normal = PathBuf::from("/");
        for component in Path::new(&v).components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(c) => normal.push(c),
                Component::ParentDir => return bad("'..' is not allowed"),
                Component::Prefix(_) => return bad("it must be a Unix path"),
            }
        }
        Ok(AbsPath(normal))
    }
}

impl TryFrom<&str> for AbsPath {
    type Error = String;
    fn try_from(value: &str) -> Result<Self, String> {
        Self::try_from(value.to_string())
    }
}

impl AbsPath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The path as text (always UTF-8: it was built from a string).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// True when `self` is `other` or lies under it, by whole components
    /// (`/media/music` is under `/media`, `/media2` is not).
    pub fn is_within(&self, other: &AbsPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl Deref for AbsPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for AbsPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids() {
        for ok in ["a", "2025-01-02-delta", &"x".repeat(64)] {
            assert!(RunId::try_from(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", "a/b", &"x".repeat(65)] {
            let err = RunId::try_from(bad).unwrap_err();
            assert!(err.contains("not a valid run id"), "{bad}: {err}");
        }
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "plex-burst", "my.bucket.1", &"b".repeat(63)] {
            assert!(BucketName::try_from(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("ab", "3-63"),
            ("My_Bucket", "3-63"),
            ("-abc", "start and end"),
            ("abc.", "start and end"),
            ("a..b", "next to"),
            ("a.-b", "next to"),
            ("192.168.1.1", "IP address"),
            ("xn--abc", "reserved"),
            ("abc-s3alias", "reserved"),
        ];
        for (bad, why) in cases {
            let err = BucketName::try_from(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(BucketName::try_from("a.b.c").unwrap().needs_path_style());
        assert!(!BucketName::try_from("a-b-c").unwrap().needs_path_style());
    }

    #[test]
    fn object_keys_and_prefixes() {
        assert_eq!(
            &*ObjectKey::try_from("reference/plex.tar.zst").unwrap(),
            "reference/plex.tar.zst"
        );
        for bad in ["", "/a", "a/", "a//b", "a/../b", "a\nb"] {
            assert!(ObjectKey::try_from(bad).is_err(), "{bad:?}");
        }
        assert_eq!(&*KeyPrefix::try_from("runs").unwrap(), "runs/");
        assert_eq!(&*KeyPrefix::try_from("a/b/").unwrap(), "a/b/");
        assert_eq!(&*KeyPrefix::try_from("").unwrap(), "");
        for bad in ["/runs/", "a//", "../x", "a/./b"] {
            assert!(KeyPrefix::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plex_versions_and_images() {
        let v = PlexVersion::try_from("1.41.3.9314-a0bfb8370").unwrap();
        for bad in [
            "1.41.3.9314",
            "1.41.3-a0bfb8370",
            "1.41.3.9314-A0BFB8370",
            "1.41.3.x-a0bfb8370",
            "latest",
        ] {
            assert!(PlexVersion::try_from(bad).is_err(), "{bad}");
        }
        let image = DockerImage::try_from("registry.local:5000/plex/pms").unwrap();
        assert_eq!(
            image.with_tag(&v),
            "registry.local:5000/plex/pms:1.41.3.9314-a0bfb8370"
        );
        for bad in [
            "",
            "plexinc/pms-docker:latest",
            "pms@sha256:abc",
            "a//b",
            "a b",
        ] {
            assert!(DockerImage::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zones_urls_languages() {
        assert_eq!(
            &*BaseUrl::try_from("http://127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        for bad in [
            "s3.fr-par.scw.cloud",
            "ftp://host",
            "https://user:pw@host",
            "https://host/?a=1",
        ] {
            assert!(BaseUrl::try_from(bad).is_err(), "{bad}");
        }
        assert!(Language::try_from("fr-FR").is_ok());
        assert!(Language::try_from("f").is_err());
    }

    #[test]
    fn absolute_paths_are_normalised() {
        let p = AbsPath::try_from("/mnt//media/./music/").unwrap();
        assert_eq!(p.as_str(), "/mnt/media/music");
        assert_eq!(AbsPath::try_from("/").unwrap().as_str(), "/");
        for bad in ["relative/path", "/a/../b", ""] {
            assert!(AbsPath::try_from(bad).is_err(), "{bad:?}");
        }
        let media = AbsPath::try_from("/media").unwrap();
        assert!(AbsPath::try_from("/media/music").unwrap().is_within(&media));
        assert!(!AbsPath::try_from("/media2").unwrap().is_within(&media));
    }
}
