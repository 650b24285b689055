//! Lenient shapes for values Plex writes in more than one way across
//! versions: section ids as strings or numbers, flags as `true`, `1` or
//! `"1"`.

use serde::{Deserialize, Deserializer};

/// A boolean written as a bool, a number or a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let on = match &v {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
            serde_json::Value::String(s) => matches!(s.as_str(), "1" | "true"),
            serde_json::Value::Null => false,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a flag, got {other}"
                )));
            }
        };
        Ok(Flag(on))
    }
}

/// An id written as a string or a number; kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Id(s)),
            serde_json::Value::Number(n) => Ok(Id(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected an id, got {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_ids_in_every_spelling() {
        for (text, want) in [
            ("true", true),
            ("1", true),
            ("\"1\"", true),
            ("0", false),
            ("false", false),
            ("\"0\"", false),
        ] {
            assert_eq!(
                serde_json::from_str::<Flag>(text).unwrap(),
                Flag(want),
                "{text}"
            );
        }
        assert!(serde_json::from_str::<Flag>("[]").is_err());
        assert_eq!(serde_json::from_str::<Id>("\"3\"").unwrap().as_str(), "3");
        assert_eq!(serde_json::from_str::<Id>("3").unwrap().as_str(), "3");
    }
}
