//! `file://` URLs as Plex stores them in `media_streams.url`: the path
//! percent-encoded (recent versions) or raw (old ones), and how to tell.

/// The only URL scheme mapped (lower case, as Plex writes it).
pub(crate) const FILE_URL_SCHEME: &str = "file://";

/// How the path of a `file://` URL is written. Recent Plex percent-encodes
/// it (`file:///data/tvshows/Season%201/x.srt`), old Plex stored the raw
/// path (`file:///data/tvshows/Season 1/x.srt`).
///
/// A stored URL tells its form ([`UrlForm::of`]): it is raw when it holds a
/// byte no URI path may hold (space, `"`, `#`, `?`, non-ASCII...) or a `%`
/// not followed by two hex digits; encoded when it holds a `%XX` and
/// nothing raw. A raw path with a literal `%20` and nothing else telling is
/// read as encoded (as current Plex would have written it): its remaining
/// components are kept as stored anyway, so this only matters when a
/// mapping's `from` itself spells such a component. A URL with neither
/// (`file:///data/a.srt`) reads the same both ways: its new prefix takes
/// the form of the DB's other URLs ([`UrlForm::of_db`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlForm {
    Encoded,
    Raw,
}

impl UrlForm {
    /// What the path of a stored URL (after `file://`) shows of its form.
    pub(crate) fn of(path: &str) -> Option<UrlForm> {
        let bytes = path.as_bytes();
        let mut escaped = false;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && hex_pair(&bytes[i + 1..]).is_some() {
                escaped = true;
                i += 3;
            } else if is_uri_path_byte(bytes[i]) {
                i += 1;
            } else {
                return Some(UrlForm::Raw);
            }
        }
        escaped.then_some(UrlForm::Encoded)
    }

    /// The form a DB writes its URLs in, from what its stored ones show:
    /// encoded when any is (whatever Plex runs on it now encodes), raw when
    /// only raw ones tell, encoded when none tells (as current Plex writes).
    pub(crate) fn of_db(shown: impl IntoIterator<Item = Option<UrlForm>>) -> UrlForm {
        let mut raw = false;
        for form in shown {
            match form {
                Some(UrlForm::Encoded) => return UrlForm::Encoded,
                Some(UrlForm::Raw) => raw = true,
                None => {}
            }
        }
        if raw { UrlForm::Raw } else { UrlForm::Encoded }
    }
}

/// Bytes RFC 3986 allows unescaped in a path: unreserved, sub-delims,
/// `:`, `@` and `/`. Anything else can only be in a raw URL.
fn is_uri_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// Bytes written as they are when encoding a path: RFC 3986's unreserved
/// and `/`, plus `(`, `)`, `,` and `'`, which real Plex DBs show unescaped
/// (1.32.5: `Minions%20The%20Rise%20of%20Gru%20(2022)`, `To%20Me,%20the`,
/// `Queen%20of%20Spain's%20Beard`). The data is silent on the other
/// sub-delims (`&`, `+`, `;`, `=`, `!`, `$`, `*`), `:` and `@`: they are
/// escaped, which any decoder reads back the same.
fn is_kept_unescaped(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/(),'".contains(&b)
}

/// The byte a leading `XX` (two hex digits) stands for.
fn hex_pair(bytes: &[u8]) -> Option<u8> {
    let digits = std::str::from_utf8(bytes.get(..2)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

/// The path an encoded URL path stands for. None when it does not decode to
/// UTF-8, or decodes to a `/` inside a component or a NUL (no Linux name
/// holds either): such a URL is left alone.
pub(super) fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let b = hex_pair(&bytes[i + 1..])?;
            if b == b'/' || b == 0 {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `path` as an encoded URL path (see [`is_kept_unescaped`]).
pub(super) fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if is_kept_unescaped(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        use UrlForm::{Encoded, Raw};
        // As real Plex 1.32.5 wrote them: space escaped, `(),'` not.
        assert_eq!(UrlForm::of("/d/A%20(2022),%20Spain's.srt"), Some(Encoded));
        assert_eq!(UrlForm::of("/d/Season 1/x.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/\u{e9}.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/a#1.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/a?.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/\"q\".srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/100%.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/%zz.srt"), Some(Raw));
        assert_eq!(UrlForm::of("/d/a%2.srt"), Some(Raw));
        // A raw literal "%20" with nothing else telling reads as encoded.
        assert_eq!(UrlForm::of("/d/100%20off.srt"), Some(Encoded));
        assert_eq!(UrlForm::of("/d/a&b+c=d;e@f:g!h$i*j~k.srt"), None);
        assert_eq!(UrlForm::of("/d/a.srt"), None);

        assert_eq!(UrlForm::of_db([None, Some(Raw), Some(Encoded)]), Encoded);
        assert_eq!(UrlForm::of_db([None, Some(Raw), None]), Raw);
        assert_eq!(UrlForm::of_db([None, None]), Encoded);
        assert_eq!(UrlForm::of_db([]), Encoded);
    }
}
