//! Every way `run.toml` can be wrong, each rendered as one line that names
//! the file, the key and the problem (never a secret's value).

use std::fmt;

/// `run.toml` could not be used. Display: `<file>: <problem>`, one line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ConfigError {
    file: String,
    problem: Problem,
}

impl ConfigError {
    pub(super) fn new(file: impl Into<String>, problem: Problem) -> Self {
        ConfigError {
            file: file.into(),
            problem,
        }
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The dotted key at fault (`s3.bucket`, `path_mapping[1].from`), when
    /// the problem is about one key.
    pub fn key(&self) -> Option<&str> {
        match &self.problem {
            Problem::UnknownKey { key, .. }
            | Problem::Missing { key }
            | Problem::Invalid { key, .. } => Some(key),
            Problem::Read(_) | Problem::Syntax { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unknown key {key:?}{}", Suggestion(suggestion.as_deref()))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error("{key}: required key is missing")]
    Missing { key: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

struct Suggestion<'a>(Option<&'a str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (did you mean {s:?}?)"),
            None => Ok(()),
        }
    }
}

/// A problem with the value of `key`.
pub(super) fn invalid(key: impl Into<String>, message: impl fmt::Display) -> Problem {
    Problem::Invalid {
        key: key.into(),
        message: one_line(&message.to_string()),
    }
}

pub(super) fn missing(key: impl Into<String>) -> Problem {
    Problem::Missing { key: key.into() }
}

/// toml's syntax error, with its byte offset turned into line and column.
pub(super) fn syntax(text: &str, err: &toml::de::Error) -> Problem {
    let offset = err.span().map_or(0, |s| s.start).min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Problem::Syntax {
        line,
        column,
        message: one_line(err.message()),
    }
}

/// serde's schema errors (unknown or missing keys, wrong types, unknown
/// enum values) with the dotted path to the key at fault.
pub(super) fn schema(err: serde_path_to_error::Error<toml::de::Error>) -> Problem {
    let path = match err.path().to_string() {
        p if p == "." => String::new(),
        p => p,
    };
    let message = err.inner().message();
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.clone()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some((name, rest)) = backticked(message, "unknown field `") {
        let suggestion = closest(name, &backticked_list(rest));
        return Problem::UnknownKey {
            key: join(name),
            suggestion,
        };
    }
    if let Some((name, _)) = backticked(message, "missing field `") {
        return missing(join(name));
    }
    if let Some((value, rest)) = backticked(message, "unknown variant `") {
        let allowed: Vec<String> = backticked_list(rest)
            .iter()
            .map(|v| format!("{v:?}"))
            .collect();
        return invalid(
            display_key(&path),
            format!("{value:?} is not one of {}", allowed.join(", ")),
        );
    }
    invalid(display_key(&path), message)
}

fn display_key(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.to_string()
    }
}

/// `prefix<name>` followed by a backtick: the name and the text after it.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Every name between backticks in serde's "expected one of `a`, `b`".
fn backticked_list(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The known name closest to a misspelt one, if it is close enough to be
/// what the user meant.
fn closest(name: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}

/// Multi-line messages (toml renders some with a source excerpt) become one.
pub(super) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
