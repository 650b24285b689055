//! The one masker: what every text that leaves the machine or reaches a
//! terminal passes through (shipped logs, status.json, the report,
//! launch.json, runner.log and the journal, bootstrap's errors).
//!
//! Two kinds of masking, in one pass per line (a match never spans a line,
//! so a log can be masked as it streams):
//! - by value: every [`Secret`](crate::secret::Secret) the process holds
//!   (and, for shipped logs, the values a [`Masker`] is given), also in
//!   their URL-encoded and base64 forms;
//! - by pattern, whatever the value: `token=`/`token:` parameters and
//!   headers (`X-Plex-Token`, `X-Auth-Token`, `X-Amz-Security-Token`,
//!   `authToken`), `secret_key`, `secret_access_key`, SigV4 `Credential=`
//!   and `Signature=` (headers and presigned URLs), `Authorization:` and
//!   `Bearer` values, plex.tv claim tokens (`claim-...`), and access key ids
//!   (Scaleway `SCW` + 17, AWS `AKIA`/`ASIA` + 16).
//!
//! Access key ids are identifiers, not secrets (Scaleway's IAM docs: "not
//! a sensitive piece of information"), so they keep their first 7
//! characters: enough to find the key in a console, not enough to use it.
//!
//! Short secrets: run.toml refuses secrets shorter than [`MIN_SECRET_LEN`]
//! (config/credentials.rs); a shorter one from elsewhere (an API) is masked
//! only where it stands as a whole word, since masking `abc` inside every
//! word would destroy the log while protecting nothing a guess would not
//! find.

use std::sync::RwLock;

/// What replaces a secret.
pub const MASK: &str = "********";

/// The shortest secret run.toml accepts, and the shortest masked inside
/// words.
pub const MIN_SECRET_LEN: usize = 8;

/// Keys whose value is masked when followed by `=` or `:` (matched
/// case-insensitively anywhere in a word: `X-Plex-Token`, `authToken`,
/// `X-Amz-Credential`, `aws_secret_access_key` all end in one).
const KEYS: &[&str] = &[
    "token",
    "secret_key",
    "secret_access_key",
    "secretkey",
    "credential",
    "signature",
];

/// Characters that end a masked value: URL, header, JSON and prose
/// delimiters.
fn ends_value(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'&' | b'"' | b'\'' | b',' | b';' | b'<' | b'>' | b')' | b']' | b'}' | b'\\' | b'`'
        )
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// Masks by value and by pattern.
#[derive(Debug, Default, Clone)]
pub struct Masker {
    /// Secrets and their encoded forms, longest first (a secret containing
    /// another is masked whole).
    values: Vec<String>,
}

impl Masker {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masker {
        let mut m = Masker::default();
        for s in secrets {
            m.add(s.as_ref());
        }
        m
    }

    /// Adds a secret (and its encoded forms); empty ones are ignored.
    pub fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.is_empty() {
            return;
        }
        for form in [secret.to_owned(), url_encoded(secret), base64(secret)] {
            if !self.values.contains(&form) {
                self.values.push(form);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// `text` masked, line by line.
    pub fn mask(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            out.push_str(&self.mask_line(line));
        }
        out
    }

    fn mask_line(&self, line: &str) -> String {
        mask_patterns(&self.mask_values(line))
    }

    fn mask_values(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            text = if value.len() >= MIN_SECRET_LEN {
                text.replace(value.as_str(), MASK)
            } else {
                replace_words(&text, value)
            };
        }
        text
    }
}

/// `line` with `value` masked where it is a whole word.
fn replace_words(line: &str, value: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(at) = line[from..].find(value).map(|i| i + from) {
        let end = at + value.len();
        let before = at == 0 || !is_word(b[at - 1]);
        let after = end == b.len() || !is_word(b[end]);
        if before && after {
            out.push_str(&line[last..at]);
            out.push_str(MASK);
            last = end;
        }
        from = end;
    }
    out.push_str(&line[last..]);
    out
}

/// One pass over `line`: at each position, the first rule that matches
/// masks a value and the scan goes on after it. Every rule looks at a
/// bounded prefix, so the pass is linear.
fn mask_patterns(line: &str) -> String {
    let b = line.as_bytes();
    let lower = line.to_ascii_lowercase();
    let l = lower.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut last = 0; // bytes before `last` are in `out`
    let mut i = 0;
    while i < b.len() {
        let start_of_word = i == 0 || !is_word(b[i - 1]);
        let found = key_value(l, i)
            .or_else(|| authorization(l, i))
            .or_else(|| bearer(l, i, start_of_word))
            .or_else(|| claim(l, i, start_of_word))
            .or_else(|| access_key_id(b, i, start_of_word));
        match found {
            Some((value, end)) if end > value => {
                out.push_str(&line[last..value]);
                out.push_str(MASK);
                last = end;
                i = end;
            }
            Some((_, end)) => i = end.max(i + 1),
            None => i += 1,
        }
    }
    out.push_str(&line[last..]);
    out
}

/// A [`KEYS`] key at `i` then a separator: `(value start, value end)`.
fn key_value(l: &[u8], i: usize) -> Option<(usize, usize)> {
    let key = KEYS.iter().find(|k| l[i..].starts_with(k.as_bytes()))?;
    let value = separator(l, i + key.len())?;
    Some((value, value_end(l, value, ends_value)))
}

/// `=` or `:` after a key, allowing the key's closing quote and spaces
/// (`k=v`, `k: v`, `"k": "v"`, `k = "v"`): where the value starts.
fn separator(l: &[u8], mut j: usize) -> Option<usize> {
    if matches!(l.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    while l.get(j) == Some(&b' ') {
        j += 1;
    }
    if !matches!(l.get(j), Some(b'=' | b':')) {
        return None;
    }
    j += 1;
    while l.get(j) == Some(&b' ') {
        j += 1;
    }
    if matches!(l.get(j), Some(b'"' | b'\'')) {
        j += 1;
    }
    Some(j)
}

fn value_end(l: &[u8], from: usize, ends: fn(u8) -> bool) -> usize {
    l[from..]
        .iter()
        .position(|&c| ends(c))
        .map_or(l.len(), |p| from + p)
}

/// `Authorization: <scheme> <credentials>`: the scheme stays, everything
/// after it up to the end of the header (a quote or the line's end) goes.
fn authorization(l: &[u8], i: usize) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"authorization";
    if !l[i..].starts_with(KEY) {
        return None;
    }
    let mut value = separator(l, i + KEY.len())?;
    let scheme_end = value_end(l, value, ends_value);
    if l.get(scheme_end) == Some(&b' ') {
        value = scheme_end + 1;
    }
    let end = value_end(l, value, |c| {
        matches!(c, b'"' | b'\'' | b'\\' | b'\r' | b'\n')
    });
    Some((value, end))
}

/// `Bearer <token>` anywhere (a header printed without its name).
fn bearer(l: &[u8], i: usize, start_of_word: bool) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"bearer ";
    if !start_of_word || !l[i..].starts_with(KEY) {
        return None;
    }
    let value = i + KEY.len();
    Some((value, value_end(l, value, ends_value)))
}

/// A plex.tv claim token, `claim-` then `[A-Za-z0-9_-]+`: the prefix stays.
fn claim(l: &[u8], i: usize, start_of_word: bool) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"claim-";
    if !start_of_word || !l[i..].starts_with(KEY) {
        return None;
    }
    let value = i + KEY.len();
    let end = value_end(l, value, |c| {
        !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    });
    Some((value, end))
}

/// An access key id as a whole word: Scaleway's `SCW` + 17 of `[A-Z0-9]`
/// (scaleway-sdk-go's validation: `^SCW[A-Z0-9]{17}$`), AWS's `AKIA` or
/// `ASIA` + 16. Its first 7 characters stay.
fn access_key_id(b: &[u8], i: usize, start_of_word: bool) -> Option<(usize, usize)> {
    if !start_of_word {
        return None;
    }
    let rest = &b[i..];
    // Both are 20 characters long.
    let len = 20;
    if ![&b"SCW"[..], b"AKIA", b"ASIA"]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        return None;
    }
    let key = rest.get(..len)?;
    let shaped = key
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let whole = rest.get(len).is_none_or(|&c| !is_word(c));
    if !shaped || !whole {
        return None;
    }
    Some((i + 7, i + len))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Standard base64 without padding (a prefix of the padded form, so both
/// match).
fn base64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (k, &c)| n | (c as u32) << (16 - 8 * k));
        for k in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
        }
    }
    out
}

/// The process's masker: the value of every [`Secret`](crate::secret::Secret)
/// alive, with how many copies hold it.
static GLOBAL: RwLock<Registry> = RwLock::new(Registry {
    held: Vec::new(),
    masker: None,
});

struct Registry {
    held: Vec<(String, usize)>,
    /// Built from `held` when first needed after a change.
    masker: Option<Masker>,
}

/// A secret now exists: [`text`] masks it until [`release`]d as often.
pub fn hold(secret: &str) {
    let mut g = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    match g.held.iter_mut().find(|(s, _)| s == secret) {
        Some((_, n)) => *n += 1,
        None => {
            g.held.push((secret.to_owned(), 1));
            g.masker = None;
        }
    }
}

/// A copy of a secret is gone.
pub fn release(secret: &str) {
    let mut g = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = g.held.iter().position(|(s, _)| s == secret) {
        g.held[at].1 -= 1;
        if g.held[at].1 == 0 {
            g.held.swap_remove(at);
            g.masker = None;
        }
    }
}

/// `text` masked with every secret the process holds and every pattern.
pub fn text(text: &str) -> String {
    {
        let g = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
        if let Some(masker) = &g.masker {
            return masker.mask(text);
        }
    }
    let mut g = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    let masker = Masker::new(g.held.iter().map(|(s, _)| s.as_str()));
    let out = masker.mask(text);
    g.masker = Some(masker);
    out
}

/// `record` (JSON our own code built from typed fields: ids, times, states)
/// with every secret the process holds masked, and no pattern: its
/// identifiers (a per-run key's access key id) are what the record is for.
pub fn values_in_record(record: &[u8]) -> Vec<u8> {
    let g = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let masker = Masker::new(g.held.iter().map(|(s, _)| s.as_str()));
    masker
        .mask_values(&String::from_utf8_lossy(record))
        .into_bytes()
}

/// A masker for every secret the process holds and `more` (values it
/// learned as strings: a token read back from Plex's prefs).
pub fn held_and<S: AsRef<str>>(more: impl IntoIterator<Item = S>) -> Masker {
    let g = GLOBAL.read().unwrap_or_else(|e| e.into_inner());
    let mut masker = Masker::new(g.held.iter().map(|(s, _)| s.as_str()));
    for s in more {
        masker.add(s.as_ref());
    }
    masker
}

/// [`text`] on bytes that should be UTF-8 (a serialized record).
pub fn bytes(bytes: &[u8]) -> Vec<u8> {
    text(&String::from_utf8_lossy(bytes)).into_bytes()
}

#[cfg(test)]
mod tests;
