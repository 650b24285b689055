//! `[[notify]]` tables, the same in `bootstrap.toml` and `run.toml`:
//!
//! ```toml
//! [[notify]]
//! kind = "ntfy"                        # webhook, ntfy, discord, slack, gotify, email
//! url = "https://ntfy.sh/my-topic"     # or url_env = "VAR" (Discord and Slack: always)
//! token_env = "NTFY_TOKEN"             # optional; Gotify and email need one
//! events = ["done", "failed"]          # optional: every event by default
//! ```
//!
//! Email adds `from`, `to = [...]`, `project_id` and `region` (default
//! `fr-par`); its `url` defaults to Scaleway's API. Secrets are only ever
//! named (`*_env`), never written here: `bootstrap launch` carries their
//! values to the instance in its secrets file ([`for_run`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::event::EventKind;
use super::target::{EmailSettings, Kind, SCALEWAY_API, Target};
use crate::secret::Secret;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Checks every table; errors name the table (`notify[1].url: ...`).
pub fn targets(
    raw: &[RawTarget],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Target>, String> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| target(t, env).map_err(|e| format!("notify[{i}].{e}")))
        .collect()
}

fn target(raw: &RawTarget, env: &dyn Fn(&str) -> Option<String>) -> Result<Target, String> {
    let kind = Kind::parse(&raw.kind).ok_or_else(|| {
        format!(
            "kind: {:?} is not one of {}",
            raw.kind,
            Kind::ALL.map(Kind::name).join(", ")
        )
    })?;
    let from_env = |key: &str, var: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| format!("{key}: the environment variable {var} is not set"))
    };
    let url = match (&raw.url, &raw.url_env) {
        (Some(_), Some(_)) => return Err("url: give url or url_env, not both".into()),
        (Some(_), None) if matches!(kind, Kind::Discord | Kind::Slack) => {
            return Err(format!(
                "url: a {} webhook URL is its credential: name the variable that holds it with url_env",
                kind.name()
            ));
        }
        (Some(url), None) => Secret::new(url.clone()),
        (None, Some(var)) => from_env("url_env", var)?,
        (None, None) if kind == Kind::Email => Secret::new(SCALEWAY_API),
        (None, None) => return Err("url: missing (or url_env)".into()),
    };
    check_url(url.expose()).map_err(|e| format!("url: {e}"))?;
    let token = raw
        .token_env
        .as_deref()
        .map(|var| from_env("token_env", var))
        .transpose()?;
    if token.is_none() && matches!(kind, Kind::Gotify | Kind::Email) {
        return Err(format!(
            "token_env: a {} target needs a token (Gotify: the application's token; email: a Scaleway secret key allowed to send)",
            kind.name()
        ));
    }
    let events = match &raw.events {
        None => None,
        Some(names) => {
            let mut set = BTreeSet::new();
            for name in names {
                let Some(kind) = EventKind::parse(name) else {
                    return Err(format!(
                        "events: {name:?} is not one of {}",
                        EventKind::ALL.map(EventKind::name).join(", ")
                    ));
                };
                set.insert(kind.name().to_string());
            }
            Some(set)
        }
    };
    let email_keys =
        raw.from.is_some() || raw.to.is_some() || raw.project_id.is_some() || raw.region.is_some();
    let email = match kind {
        Kind::Email => Some(email_settings(raw)?),
        _ if email_keys => {
            return Err("from: from, to, project_id and region are for kind = \"email\"".into());
        }
        _ => None,
    };
    Ok(Target {
        kind,
        url,
        url_is_secret: raw.url_env.is_some(),
        token,
        events,
        email,
    })
}

fn email_settings(raw: &RawTarget) -> Result<EmailSettings, String> {
    let address = |key: &str, a: &str| {
        let ok = a.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !a.chars().any(char::is_whitespace)
        });
        if ok {
            Ok(a.to_string())
        } else {
            Err(format!("{key}: {a:?} is not an email address"))
        }
    };
    let from = address(
        "from",
        raw.from
            .as_deref()
            .ok_or("from: missing (the sender, on a domain checked in Transactional Email)")?,
    )?;
    let to = raw.to.as_deref().unwrap_or_default();
    if to.is_empty() {
        return Err("to: at least one recipient".into());
    }
    let to = to
        .iter()
        .map(|a| address("to", a))
        .collect::<Result<Vec<_>, _>>()?;
    let project_id = raw
        .project_id
        .clone()
        .ok_or("project_id: missing (the Scaleway project of the domain)")?;
    let region = raw.region.clone().unwrap_or_else(|| "fr-par".into());
    if !region.chars().all(|c| c.is_ascii_lowercase() || c == '-') || region.is_empty() {
        return Err(format!(
            "region: {region:?} is not a Scaleway region (e.g. fr-par)"
        ));
    }
    Ok(EmailSettings {
        from,
        to,
        region,
        project_id,
    })
}

fn check_url(url: &str) -> Result<(), String> {
    // The value may be a secret: errors never repeat it.
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("not an http(s) URL with a host".into());
    }
    Ok(())
}

/// The variables the instance gets target `i`'s secrets in.
pub fn run_var(i: usize, what: &str) -> String {
    format!("PLEX_BURST_NOTIFY_{i}_{what}")
}

/// A run's `[[notify]]`: its tables, and its secrets file's
/// `(variable, value)` lines.
pub type ForRun = (Vec<RawTarget>, Vec<(String, Secret)>);

/// The tables for a run's `run.toml` (each `*_env` renamed to
/// [`run_var`]) and the secrets file's lines, from home's tables and
/// environment.
pub fn for_run(raw: &[RawTarget], env: &dyn Fn(&str) -> Option<String>) -> Result<ForRun, String> {
    targets(raw, env)?;
    let mut tables = Vec::new();
    let mut secrets = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let mut t = t.clone();
        for (field, what) in [(&mut t.url_env, "URL"), (&mut t.token_env, "TOKEN")] {
            if let Some(var) = field.as_mut() {
                let value = env(var).expect("checked by targets()");
                let run = run_var(i, what);
                secrets.push((run.clone(), Secret::new(value)));
                *var = run;
            }
        }
        tables.push(t);
    }
    Ok((tables, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str) -> RawTarget {
        RawTarget {
            kind: kind.into(),
            ..RawTarget::default()
        }
    }

    fn env(var: &str) -> Option<String> {
        match var {
            "HOOK" => Some("https://hooks.example/services/T0/B0/secretpart".into()),
            "TOKEN" => Some("tk_secret".into()),
            _ => None,
        }
    }

    #[test]
    fn every_mistake_is_named_and_no_secret_is_repeated() {
        let cases: Vec<(RawTarget, &str)> = vec![
            (
                raw("pager"),
                "notify[0].kind: \"pager\" is not one of webhook, ntfy, discord, slack, gotify, email",
            ),
            (raw("ntfy"), "notify[0].url: missing (or url_env)"),
            (
                RawTarget {
                    url: Some("https://hooks.example/x".into()),
                    ..raw("slack")
                },
                "notify[0].url: a slack webhook URL is its credential",
            ),
            (
                RawTarget {
                    url_env: Some("NOPE".into()),
                    ..raw("discord")
                },
                "notify[0].url_env: the environment variable NOPE is not set",
            ),
            (
                RawTarget {
                    url: Some("ftp://x.example/t".into()),
                    ..raw("ntfy")
                },
                "notify[0].url: not an http(s) URL with a host",
            ),
            (
                RawTarget {
                    url: Some("https://g.example".into()),
                    ..raw("gotify")
                },
                "notify[0].token_env: a gotify target needs a token",
            ),
            (
                RawTarget {
                    url: Some("https://n.example/t".into()),
                    events: Some(vec!["finished".into()]),
                    ..raw("ntfy")
                },
                "notify[0].events: \"finished\" is not one of started,",
            ),
            (
                RawTarget {
                    url: Some("https://n.example/t".into()),
                    to: Some(vec!["a@b.example".into()]),
                    ..raw("ntfy")
                },
                "are for kind = \"email\"",
            ),
            (
                RawTarget {
                    token_env: Some("TOKEN".into()),
                    from: Some("runs".into()),
                    ..raw("email")
                },
                "notify[0].from: \"runs\" is not an email address",
            ),
            (
                RawTarget {
                    token_env: Some("TOKEN".into()),
                    from: Some("r@x.example".into()),
                    ..raw("email")
                },
                "notify[0].to: at least one recipient",
            ),
        ];
        for (table, expected) in cases {
            let error = targets(&[table], &env).unwrap_err();
            assert!(
                error.starts_with(expected) || error.contains(expected),
                "{error}"
            );
            assert!(
                !error.contains("secretpart") && !error.contains("tk_secret"),
                "{error}"
            );
        }
    }

    #[test]
    fn for_run_renames_the_variables_and_carries_their_values() {
        let tables = vec![
            RawTarget {
                url_env: Some("HOOK".into()),
                ..raw("slack")
            },
            RawTarget {
                url: Some("https://ntfy.example/t".into()),
                token_env: Some("TOKEN".into()),
                ..raw("ntfy")
            },
        ];
        let (run, secrets) = for_run(&tables, &env).unwrap();
        assert_eq!(run[0].url_env.as_deref(), Some("PLEX_BURST_NOTIFY_0_URL"));
        assert_eq!(run[1].url.as_deref(), Some("https://ntfy.example/t"));
        assert_eq!(
            run[1].token_env.as_deref(),
            Some("PLEX_BURST_NOTIFY_1_TOKEN")
        );
        let values: Vec<(&str, &str)> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(
            values,
            vec![
                (
                    "PLEX_BURST_NOTIFY_0_URL",
                    "https://hooks.example/services/T0/B0/secretpart"
                ),
                ("PLEX_BURST_NOTIFY_1_TOKEN", "tk_secret"),
            ]
        );
        // The run's tables load on the instance from those variables.
        let on_instance = |var: &str| {
            secrets
                .iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v.expose().to_string())
        };
        assert_eq!(targets(&run, &on_instance).unwrap().len(), 2);
    }
}
