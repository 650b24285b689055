//! Strict JSON request bodies: an unknown field, a missing required one or
//! a value of the wrong type is a 400 naming the field, so a client that
//! sends what the real API would reject fails here too. `null` counts as
//! absent, as in Scaleway's APIs.

use serde_json::{Map, Value};

use super::errors::ScwError;
use super::ids;

pub struct Body {
    fields: Map<String, Value>,
    /// Prepended to field names in errors, e.g. `volumes.0.`.
    prefix: String,
}

impl Body {
    /// The request body as an object with only `allowed` fields; an empty
    /// body is `{}`.
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Body, ScwError> {
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(bytes)
                .map_err(|e| ScwError::invalid_request(format!("invalid JSON body: {e}")))?
        };
        Body::from_value(value, allowed, "")
    }

    /// A nested object, its errors naming `prefix` + field.
    pub fn from_value(value: Value, allowed: &[&str], prefix: &str) -> Result<Body, ScwError> {
        let Value::Object(fields) = value else {
            let name = prefix.trim_end_matches('.');
            return Err(ScwError::argument(
                if name.is_empty() { "body" } else { name },
                "constraint",
                "must be a JSON object",
            ));
        };
        let body = Body {
            fields,
            prefix: prefix.into(),
        };
        if let Some(unknown) = body.fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ScwError::unknown_field(&body.name(unknown)));
        }
        Ok(body)
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn wrong(&self, field: &str, what: &str) -> ScwError {
        ScwError::argument(&self.name(field), "constraint", format!("must be {what}"))
    }

    /// The value of `field` unless absent or null.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<String>, ScwError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    /// A required, non-empty string.
    pub fn str(&self, field: &str) -> Result<String, ScwError> {
        match self.opt_str(field)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.wrong(field, "a non-empty string")),
            None => Err(ScwError::missing_field(&self.name(field))),
        }
    }

    pub fn opt_uuid(&self, field: &str) -> Result<Option<String>, ScwError> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(s) if ids::is_uuid(&s) => Ok(Some(s.to_ascii_lowercase())),
            Some(_) => Err(self.wrong(field, "a UUID")),
        }
    }

    pub fn uuid(&self, field: &str) -> Result<String, ScwError> {
        self.opt_uuid(field)?
            .ok_or_else(|| ScwError::missing_field(&self.name(field)))
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ScwError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(field, "a boolean")),
        }
    }

    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, ScwError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(field, "a non-negative integer")),
        }
    }

    /// A list of strings, empty when absent.
    pub fn strings(&self, field: &str) -> Result<Vec<String>, ScwError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.wrong(field, "a list of strings"))
                })
                .collect(),
            Some(_) => Err(self.wrong(field, "a list of strings")),
        }
    }

    /// A list of objects (each checked by the caller).
    pub fn objects(&self, field: &str) -> Result<Vec<Value>, ScwError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(self.wrong(field, "a list of objects")),
        }
    }

    pub fn object(&self, field: &str) -> Result<Option<Map<String, Value>>, ScwError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(_) => Err(self.wrong(field, "an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unknown_missing_and_mistyped_fields() {
        let error = Body::parse(br#"{"name":"a","colour":1}"#, &["name"])
            .err()
            .unwrap();
        assert_eq!(error.body["details"][0]["argument_name"], "colour");
        assert_eq!(error.body["details"][0]["reason"], "unknown");
        let body = Body::parse(br#"{"name":null,"n":"x"}"#, &["name", "n"]).unwrap();
        let error = body.str("name").err().unwrap();
        assert_eq!(error.body["details"][0]["reason"], "required");
        assert!(body.opt_u64("n").is_err());
        let nested = Body::from_value(serde_json::json!({"size": 1}), &["x"], "volumes.0.")
            .err()
            .unwrap();
        assert_eq!(nested.body["details"][0]["argument_name"], "volumes.0.size");
    }
}
