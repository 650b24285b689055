//! Finds secrets in texts that left a run (shipped logs, status.json,
//! launch.json, bootstrap's output): every known secret value, and every
//! value of a secret-shaped pattern that is not masked. Written apart from
//! runner/src/mask.rs, so a gap in the masker is not also a gap here.

/// What replaces a secret.
const MASK: &str = "********";

/// Keys whose value must be masked (or empty), matched case-insensitively.
const KEYS: &[&str] = &[
    "x-plex-token=",
    "x-plex-token: ",
    "token=",
    "x-auth-token: ",
    "scw_secret_key=",
    "secret_key=",
    "secret_key\": \"",
    "aws_secret_access_key=",
    "x-amz-signature=",
    "x-amz-credential=",
    "x-amz-security-token=",
    "signature=",
    "credential=",
    "bearer ",
];

/// `(where, what)` of every leak in `texts` (`(name, text)` pairs):
/// `secrets` by value, and [`KEYS`], claim tokens and access key ids by
/// shape. `ids_allowed` names the texts that may hold access key ids (a
/// launch record, which is for them).
pub fn find(texts: &[(String, String)], secrets: &[String], ids_allowed: &[&str]) -> Vec<String> {
    let mut leaks = Vec::new();
    for (name, text) in texts {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{name}: a secret value ({} chars)", secret.len()));
            }
        }
        for (n, line) in text.lines().enumerate() {
            let at = |what: &str| format!("{name}:{}: {what} in {line:?}", n + 1);
            let lower = line.to_ascii_lowercase();
            for key in KEYS {
                for (i, _) in lower.match_indices(key) {
                    let value = &line[i + key.len()..];
                    let unmasked = !value.is_empty()
                        && !value.starts_with(MASK)
                        && !value.starts_with(['&', '"', ' ', ',', '\'']);
                    if unmasked {
                        leaks.push(at(key));
                    }
                }
            }
            for (i, _) in line.match_indices("claim-") {
                let value = &line[i + 6..];
                let shaped = value
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .count()
                    >= 8;
                if shaped && !value.starts_with(MASK) {
                    leaks.push(at("a claim token"));
                }
            }
            if !ids_allowed.contains(&name.as_str()) && has_access_key_id(line) {
                leaks.push(at("an access key id"));
            }
        }
    }
    leaks
}

/// `SCW` + 17 or `AKIA`/`ASIA` + 16 of `[A-Z0-9]`, as a whole word.
fn has_access_key_id(line: &str) -> bool {
    let b = line.as_bytes();
    let key_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    (0..b.len()).any(|i| {
        let start = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let prefixed = [&b"SCW"[..], b"AKIA", b"ASIA"]
            .iter()
            .any(|p| b[i..].starts_with(p));
        start
            && prefixed
            && b.len() >= i + 20
            && b[i..i + 20].iter().all(|&c| key_char(c))
            && b.get(i + 20).is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaks(text: &str) -> Vec<String> {
        find(&[("t".into(), text.into())], &["s3cr3t-value".into()], &[])
    }

    #[test]
    fn finds_what_is_not_masked() {
        assert_eq!(leaks("GET /x?X-Plex-Token=abc").len(), 2, "key and token=");
        assert_eq!(leaks("claimed claim-abcdefgh12").len(), 1);
        // Built, so that the tree holds no key-shaped text.
        let key = concat!("SCW", "AB12CD34EF56GH78J");
        assert_eq!(leaks(&format!("key {key}")).len(), 1);
        assert_eq!(leaks("v=s3cr3t-value").len(), 1);
    }

    #[test]
    fn masked_values_pass() {
        assert!(leaks("GET /x?X-Plex-Token=********&token=&b").is_empty());
        assert!(leaks("claim-******** SCWAB12******** v=********").is_empty());
        assert!(leaks("Bearer ******** tokens: 3").is_empty());
    }
}
