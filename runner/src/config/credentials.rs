//! Where a section's secrets come from, resolved once at load time.
//!
//! Each secret `<name>` of a section has three possible sources, and a
//! section uses exactly one for all its secrets:
//! - inline: `<name> = "..."` in run.toml;
//! - a file: `credentials_file = "/abs/path"`, a `KEY=VALUE` file (the
//!   format of systemd's `EnvironmentFile=` and docker's `--env-file`:
//!   `#` comments, blank lines, optional `export ` and quotes), read for
//!   the same variable names as the environment source;
//! - the environment (the default): the variable `<name>_env` names, or the
//!   section's standard variable (`AWS_ACCESS_KEY_ID`, `SCW_SECRET_KEY`...).
//!
//! Errors name the key and the source, never a value. A secret shorter than
//! [`MIN_SECRET_LEN`] is refused: it could only be masked as a whole word
//! ([`crate::mask`]), and it is weak anyway. Access keys are identifiers
//! and may be short.

use std::collections::HashMap;

use super::error::{Problem, invalid};
use super::types::AbsPath;
use crate::mask::MIN_SECRET_LEN;
use crate::secret::Secret;

/// One secret of a section, as written.
pub(super) struct SecretKeys<'a> {
    /// The inline key, e.g. `access_key`; the env key is `<name>_env`.
    pub name: &'static str,
    pub inline: Option<&'a str>,
    pub env: Option<&'a str>,
    pub default_env: &'static str,
}

/// Where a section's secrets were found; printed in the effective config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Inline,
    /// Environment variables, in the order of the section's secrets.
    Env {
        vars: Vec<String>,
    },
    /// A `KEY=VALUE` file and the variable names read from it.
    File {
        path: AbsPath,
        vars: Vec<String>,
    },
}

/// Resolves all secrets of `section` from one source.
pub(super) fn resolve(
    section: &str,
    keys: &[SecretKeys<'_>],
    file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(CredentialSource, Vec<Secret>), Problem> {
    let key = |k: &str| format!("{section}.{k}");
    let inline: Vec<&SecretKeys> = keys.iter().filter(|k| k.inline.is_some()).collect();
    if let Some(first) = inline.first() {
        if let Some(other) = keys.iter().find(|k| k.env.is_some()) {
            return Err(invalid(
                key(first.name),
                format!(
                    "choose one credential source: {} is also set",
                    key(&format!("{}_env", other.name))
                ),
            ));
        }
        if file.is_some() {
            return Err(invalid(
                key(first.name),
                format!(
                    "choose one credential source: {} is also set",
                    key("credentials_file")
                ),
            ));
        }
        if let Some(absent) = keys.iter().find(|k| k.inline.is_none()) {
            return Err(invalid(
                key(absent.name),
                format!(
                    "missing: {} is given inline, so {} must be too",
                    key(first.name),
                    key(absent.name)
                ),
            ));
        }
        let secrets = keys
            .iter()
            .map(|k| {
                nonempty(
                    k.name,
                    k.inline.unwrap_or_default(),
                    || key(k.name),
                    "is empty",
                )
            })
            .collect::<Result<_, _>>()?;
        return Ok((CredentialSource::Inline, secrets));
    }

    let vars: Vec<String> = keys
        .iter()
        .map(|k| {
            var_name(
                &key(&format!("{}_env", k.name)),
                k.env.unwrap_or(k.default_env),
            )
        })
        .collect::<Result<_, _>>()?;

    match file {
        Some(path) => {
            let file_key = key("credentials_file");
            let path = AbsPath::try_from(path).map_err(|e| invalid(&file_key, e))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(&file_key, format!("cannot read {path}: {e}")))?;
            let values =
                parse_env_file(&text).map_err(|e| invalid(&file_key, format!("{path}: {e}")))?;
            let secrets = keys
                .iter()
                .zip(&vars)
                .map(|(k, var)| match values.get(var) {
                    Some(v) => nonempty(
                        k.name,
                        v,
                        || file_key.clone(),
                        &format!("{var} is empty in {path}"),
                    ),
                    None => Err(invalid(&file_key, format!("{path} does not set {var}"))),
                })
                .collect::<Result<_, _>>()?;
            Ok((CredentialSource::File { path, vars }, secrets))
        }
        None => {
            let secrets = keys
                .iter()
                .zip(&vars)
                .map(|(k, var)| {
                    let env_key = key(&format!("{}_env", k.name));
                    match env(var) {
                        Some(v) => nonempty(k.name, &v, || env_key.clone(), &format!("environment variable {var} is empty")),
                        None => Err(invalid(
                            env_key,
                            format!("environment variable {var} is not set (or give {} or credentials_file)", k.name),
                        )),
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok((CredentialSource::Env { vars }, secrets))
        }
    }
}

fn nonempty(
    name: &str,
    value: &str,
    key: impl Fn() -> String,
    problem: &str,
) -> Result<Secret, Problem> {
    let len = value.trim().chars().count();
    if len == 0 {
        Err(invalid(key(), problem))
    } else if len < MIN_SECRET_LEN && name != "access_key" {
        Err(invalid(
            key(),
            format!(
                "the {name} is {len} characters long: a secret must have at least {MIN_SECRET_LEN} (a shorter one could not be masked in logs)"
            ),
        ))
    } else {
        Ok(Secret::new(value))
    }
}

fn var_name(key: &str, name: &str) -> Result<String, Problem> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(name.to_string())
    } else {
        Err(invalid(
            key,
            format!("{name:?} is not an environment variable name"),
        ))
    }
}

/// Parses `KEY=VALUE` lines. Errors give the line number only: the line
/// may hold a secret.
pub fn parse_env_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut values = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        values.insert(name.trim().to_string(), unquoted.to_string());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_format() {
        let text = "# comment\n\nexport A=1\nB = \"two words\"\nC='x=y'\n";
        let v = parse_env_file(text).unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two words");
        assert_eq!(v["C"], "x=y");
        let err = parse_env_file("A=1\nSECRETVALUE\n").unwrap_err();
        assert_eq!(err, "line 2: expected KEY=VALUE");
    }

    #[test]
    fn a_short_secret_is_refused_and_a_short_access_key_is_not() {
        let keys = |secret| {
            [
                SecretKeys {
                    name: "access_key",
                    inline: Some("ak"),
                    env: None,
                    default_env: "A",
                },
                SecretKeys {
                    name: "secret_key",
                    inline: Some(secret),
                    env: None,
                    default_env: "B",
                },
            ]
        };
        let err = resolve("s3", &keys("1234567"), None, &|_| None).unwrap_err();
        let text = format!("{err}");
        assert!(text.contains("s3.secret_key"), "{text}");
        assert!(text.contains("at least 8"), "{text}");
        assert!(!text.contains("1234567"), "{text}");
        let (_, secrets) = resolve("s3", &keys("12345678"), None, &|_| None).unwrap();
        assert_eq!(secrets[0].expose(), "ak");
    }
}
