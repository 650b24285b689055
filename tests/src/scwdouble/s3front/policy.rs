//! Bucket policies as Scaleway's Object Storage reads them (docs-content,
//! pages/object-storage/api-cli/bucket-policy.mdx): the grammar, checked
//! strictly (anything else is `MalformedPolicy`), and the evaluation.
//!
//! - `Version` `2023-04-17`: a request is allowed only when a statement
//!   allows it (and IAM does: the caller checks that); `Deny` is useless.
//!   `2012-10-17` (deprecated): allowed unless a statement denies it.
//! - `Principal`: `"*"` or `{"SCW": "user_id:<id>" | "application_id:<id>"}`
//!   (a string or a list).
//! - `Action`: the page's list; `Resource`: the bucket or `bucket/<glob>`.
//! - `Condition`: the page's operators and keys. The double evaluates the
//!   string operators (on `s3:prefix`, `aws:Referer`) and `IpAddress` /
//!   `NotIpAddress` (on `aws:SourceIp`); a date condition never holds here.

use std::net::IpAddr;

use serde_json::{Map, Value};

pub const CURRENT: &str = "2023-04-17";
pub const DEPRECATED: &str = "2012-10-17";

const GLOBAL_ACTIONS: &[&str] = &["*", "s3:*"];
const BUCKET_ACTIONS: &[&str] = &[
    "s3:DeleteBucketWebsite",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketLocation",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketWebsite",
    "s3:GetLifecycleConfiguration",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
    "s3:PutBucketAcl",
    "s3:PutBucketCORS",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutBucketWebsite",
    "s3:PutLifecycleConfiguration",
];
const OBJECT_ACTIONS: &[&str] = &[
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectVersionTagging",
    "s3:GetObject",
    "s3:GetObjectAcl",
    "s3:GetObjectLegalHold",
    "s3:GetObjectRetention",
    "s3:GetObjectTagging",
    "s3:GetObjectVersion",
    "s3:GetObjectVersionTagging",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
    "s3:PutObjectAcl",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:RestoreObject",
];
const OPERATORS: &[&str] = &[
    "IpAddress",
    "NotIpAddress",
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "DateLessThan",
    "DateLessThanEquals",
];
const CONDITION_KEYS: &[&str] = &[
    "aws:SourceIp",
    "aws:Referer",
    "aws:CurrentTime",
    "aws:EpochTime",
    "s3:prefix",
];

/// Who asks: the Owner's user, an application, or nobody (unsigned).
#[derive(Debug, Clone, PartialEq)]
pub enum Who {
    User(String),
    Application(String),
    Anonymous,
}

/// What a statement is matched against.
pub struct Request<'a> {
    pub who: &'a Who,
    pub action: &'a str,
    /// `bucket` or `bucket/key`.
    pub resource: &'a str,
    pub prefix: Option<&'a str>,
    pub referer: Option<&'a str>,
    pub source_ip: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Statement {
    allow: bool,
    principals: Option<Vec<String>>,
    actions: Vec<String>,
    resources: Vec<String>,
    conditions: Vec<(String, String, Vec<String>)>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    pub text: String,
    statements: Vec<Statement>,
}

/// One value or a list of strings.
fn strings(value: &Value, at: &str) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{at}: not a string"))
            })
            .collect(),
        _ => Err(format!(
            "{at}: must be a string or a non-empty list of strings"
        )),
    }
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{at}: unknown field {k:?}")),
        None => Ok(()),
    }
}

/// Parses `text` as the policy of `bucket`; `Err` is the
/// `MalformedPolicy` message.
pub fn parse(bucket: &str, text: &str) -> Result<Policy, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("Policies must be valid JSON: {e}"))?;
    let top = doc.as_object().ok_or("Policies must be a JSON object")?;
    only_keys(top, &["Version", "Id", "Statement"], "policy")?;
    let version = top
        .get("Version")
        .and_then(Value::as_str)
        .ok_or("Version: required")?;
    if version != CURRENT && version != DEPRECATED {
        return Err(format!("Version: {version:?} is not {CURRENT}"));
    }
    if let Some(id) = top.get("Id") {
        let id = id.as_str().ok_or("Id: must be a string")?;
        if id.chars().count() > 280 {
            return Err("Id: longer than 280 characters".into());
        }
    }
    let statements = match top.get("Statement") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err("Statement: must be a list".into()),
    };
    let statements = statements
        .iter()
        .enumerate()
        .map(|(i, s)| statement(bucket, version, s, &format!("Statement[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        version: version.into(),
        text: text.into(),
        statements,
    })
}

fn statement(bucket: &str, version: &str, value: &Value, at: &str) -> Result<Statement, String> {
    let s = value
        .as_object()
        .ok_or(format!("{at}: must be an object"))?;
    only_keys(
        s,
        &[
            "Sid",
            "Effect",
            "Principal",
            "Action",
            "Resource",
            "Condition",
        ],
        at,
    )?;
    if s.get("Sid").is_some_and(|v| !v.is_string()) {
        return Err(format!("{at}.Sid: must be a string"));
    }
    let allow = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        _ => return Err(format!("{at}.Effect: must be Allow or Deny")),
    };
    let principals = match s.get("Principal") {
        Some(Value::String(star)) if star == "*" => None,
        Some(Value::Object(p)) => {
            only_keys(p, &["SCW"], &format!("{at}.Principal"))?;
            let list = strings(
                p.get("SCW").unwrap_or(&Value::Null),
                &format!("{at}.Principal.SCW"),
            )?;
            let kinds: &[&str] = if version == CURRENT {
                &["user_id:", "application_id:"]
            } else {
                &[
                    "user_id:",
                    "application_id:",
                    "project_id:",
                    "organization_id:",
                ]
            };
            if let Some(bad) = list.iter().find(|p| {
                !kinds
                    .iter()
                    .any(|k| p.strip_prefix(k).is_some_and(|id| !id.is_empty()))
            }) {
                return Err(format!("{at}.Principal: invalid principal {bad:?}"));
            }
            Some(list)
        }
        _ => {
            return Err(format!(
                "{at}.Principal: required, \"*\" or {{\"SCW\": ...}}"
            ));
        }
    };
    let actions = strings(
        s.get("Action").unwrap_or(&Value::Null),
        &format!("{at}.Action"),
    )?;
    if let Some(bad) = actions.iter().find(|a| {
        ![GLOBAL_ACTIONS, BUCKET_ACTIONS, OBJECT_ACTIONS]
            .iter()
            .any(|list| list.contains(&a.as_str()))
    }) {
        return Err(format!("Policy has invalid action: {bad}"));
    }
    let resources = strings(
        s.get("Resource").unwrap_or(&Value::Null),
        &format!("{at}.Resource"),
    )?;
    if let Some(bad) = resources
        .iter()
        .find(|r| *r != bucket && !r.starts_with(&format!("{bucket}/")))
    {
        return Err(format!("Policy has invalid resource: {bad}"));
    }
    let mut conditions = Vec::new();
    if let Some(c) = s.get("Condition") {
        let c = c
            .as_object()
            .ok_or(format!("{at}.Condition: must be an object"))?;
        for (operator, tests) in c {
            if !OPERATORS.contains(&operator.as_str()) {
                return Err(format!("{at}.Condition: unknown operator {operator:?}"));
            }
            let tests = tests
                .as_object()
                .ok_or(format!("{at}.Condition.{operator}: must be an object"))?;
            for (key, values) in tests {
                if !CONDITION_KEYS.contains(&key.as_str()) {
                    return Err(format!("{at}.Condition.{operator}: unknown key {key:?}"));
                }
                let values = strings(values, &format!("{at}.Condition.{operator}.{key}"))?;
                conditions.push((operator.clone(), key.clone(), values));
            }
        }
    }
    Ok(Statement {
        allow,
        principals,
        actions,
        resources,
        conditions,
    })
}

/// `*` matches any run of characters, `?` one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Statement {
    fn matches(&self, r: &Request) -> bool {
        let who = match r.who {
            Who::User(id) => Some(format!("user_id:{id}")),
            Who::Application(id) => Some(format!("application_id:{id}")),
            Who::Anonymous => None,
        };
        let principal = match &self.principals {
            None => true,
            Some(list) => who.is_some_and(|w| list.contains(&w)),
        };
        let action = self
            .actions
            .iter()
            .any(|a| GLOBAL_ACTIONS.contains(&a.as_str()) || a.eq_ignore_ascii_case(r.action));
        let resource = self.resources.iter().any(|p| glob(p, r.resource));
        principal && action && resource && self.conditions.iter().all(|c| holds(c, r))
    }
}

fn holds((operator, key, values): &(String, String, Vec<String>), r: &Request) -> bool {
    let value = match key.as_str() {
        "s3:prefix" => r.prefix.map(str::to_string),
        "aws:Referer" => r.referer.map(str::to_string),
        "aws:SourceIp" => Some(r.source_ip.to_string()),
        _ => None,
    };
    let Some(value) = value else {
        return false;
    };
    let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
    match operator.as_str() {
        "StringEquals" => any(&|v| v == value),
        "StringNotEquals" => !any(&|v| v == value),
        "StringEqualsIgnoreCase" => any(&|v| v.eq_ignore_ascii_case(&value)),
        "StringNotEqualsIgnoreCase" => !any(&|v| v.eq_ignore_ascii_case(&value)),
        "StringLike" => any(&|v| glob(v, &value)),
        "StringNotLike" => !any(&|v| glob(v, &value)),
        "IpAddress" | "NotIpAddress" => {
            let inside = any(&|v| in_range(v, r.source_ip));
            inside == (operator == "IpAddress")
        }
        _ => false,
    }
}

fn in_range(range: &str, ip: IpAddr) -> bool {
    match range.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => range.parse::<IpAddr>().is_ok_and(|one| one == ip),
    }
}

impl Policy {
    /// Whether the policy lets `r` through (IAM is checked besides).
    pub fn allows(&self, r: &Request) -> bool {
        let matching = |allow: bool| {
            self.statements
                .iter()
                .any(|s| s.allow == allow && s.matches(r))
        };
        if self.version == CURRENT {
            matching(true)
        } else {
            !matching(false)
        }
    }

    /// Whether some statement gives `who` every action on the bucket:
    /// what managing the policy takes for anyone but the Owner (a guess:
    /// no listed action names the policy calls).
    pub fn grants_everything(&self, who: &Who, bucket: &str, source_ip: IpAddr) -> bool {
        let r = Request {
            who,
            action: "s3:*",
            resource: bucket,
            prefix: None,
            referer: None,
            source_ip,
        };
        self.statements.iter().any(|s| {
            s.allow
                && s.actions
                    .iter()
                    .any(|a| GLOBAL_ACTIONS.contains(&a.as_str()))
                && s.matches(&r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn policy(statements: Value) -> Result<Policy, String> {
        parse(
            "b",
            &json!({"Version": CURRENT, "Statement": statements}).to_string(),
        )
    }

    fn ask<'a>(
        who: &'a Who,
        action: &'a str,
        resource: &'a str,
        prefix: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            who,
            action,
            resource,
            prefix,
            referer: None,
            source_ip: LOOPBACK,
        }
    }

    #[test]
    fn malformed_policies_are_refused() {
        let ok = json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "b/*"});
        assert!(policy(json!([ok])).is_ok());
        let bad = [
            json!({"Effect": "Allow", "Principal": "*", "Action": "s3:HeadObject", "Resource": "b/*"}),
            json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "other/*"}),
            json!({"Effect": "Allow", "Principal": {"SCW": "api_key:SCWX"}, "Action": "s3:GetObject", "Resource": "b/*"}),
            json!({"Effect": "Allow", "Principal": {"AWS": "x"}, "Action": "s3:GetObject", "Resource": "b/*"}),
            json!({"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": "b/*"}),
            json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "b/*", "NotAction": "x"}),
            json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "b/*",
                   "Condition": {"StringLike": {"s3:delimiter": "/"}}}),
            json!({"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "b/*",
                   "Condition": {"ArnLike": {"s3:prefix": "/"}}}),
        ];
        for s in bad {
            assert!(policy(json!([s])).is_err(), "{s}");
        }
        assert!(parse("b", r#"{"Version":"2024-01-01","Statement":[]}"#).is_err());
        assert!(parse("b", r#"{"Version":"2023-04-17","Statement":[],"Extra":1}"#).is_err());
    }

    #[test]
    fn only_what_a_statement_allows_is_allowed() {
        let app = Who::Application("a1".into());
        let other = Who::Application("a2".into());
        let p = policy(json!([
            {"Effect": "Allow", "Principal": {"SCW": "application_id:a1"},
             "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "b/runs/r1/*"},
            {"Effect": "Allow", "Principal": {"SCW": ["application_id:a1"]},
             "Action": "s3:ListBucket", "Resource": "b",
             "Condition": {"StringLike": {"s3:prefix": "runs/r1/*"}}},
        ]))
        .unwrap();
        assert!(p.allows(&ask(&app, "s3:PutObject", "b/runs/r1/x", None)));
        assert!(!p.allows(&ask(&app, "s3:PutObject", "b/runs/r2/x", None)));
        assert!(!p.allows(&ask(&app, "s3:DeleteObject", "b/runs/r1/x", None)));
        assert!(!p.allows(&ask(&other, "s3:GetObject", "b/runs/r1/x", None)));
        assert!(!p.allows(&ask(&Who::Anonymous, "s3:GetObject", "b/runs/r1/x", None)));
        assert!(p.allows(&ask(&app, "s3:ListBucket", "b", Some("runs/r1/"))));
        assert!(!p.allows(&ask(&app, "s3:ListBucket", "b", Some("runs/"))));
        assert!(!p.allows(&ask(&app, "s3:ListBucket", "b", None)));
        assert!(!p.grants_everything(&app, "b", LOOPBACK));
    }

    #[test]
    fn the_deprecated_version_allows_unless_denied() {
        let p = parse(
            "b",
            &json!({"Version": DEPRECATED, "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "b/*"}]})
            .to_string(),
        )
        .unwrap();
        let who = Who::User("u".into());
        assert!(p.allows(&ask(&who, "s3:GetObject", "b/k", None)));
        assert!(!p.allows(&ask(&who, "s3:DeleteObject", "b/k", None)));
    }

    #[test]
    fn globs() {
        assert!(glob("runs/r1/*", "runs/r1/"));
        assert!(glob("b/*", "b/a/b/c"));
        assert!(!glob("runs/r1/*", "runs/r10"));
        assert!(glob("a?c", "abc"));
    }
}
