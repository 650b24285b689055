//! The bucket policies plex-burst keeps: per-run statements that let a
//! run's application read the reference and write its own `runs/<id>/`,
//! and nothing else, merged into whatever policy the bucket already has.
//!
//! Facts, from Scaleway's "Bucket policies overview" and "Amazon S3 and
//! IAM permissions equivalence" pages (scaleway/docs-content,
//! pages/object-storage/api-cli/bucket-policy.mdx and
//! reference-content/s3-iam-permissions-equivalence.mdx):
//! - Version `2023-04-17`: only what a statement allows is allowed, and
//!   only if IAM allows it too; a principal no statement names is denied
//!   (Deny statements are useless). `2012-10-17` is deprecated and allows
//!   what IAM allows unless denied: a policy of that version would make
//!   these statements moot, so it is refused.
//! - Principals: `{"SCW": "user_id:<id>"}` / `"application_id:<id>"` (a
//!   string or a list), or `"*"`; there is no per-API-key principal, so a
//!   run that must be told apart from other runs has an application of
//!   its own.
//! - Resources: `<bucket>` (bucket actions such as `s3:ListBucket`),
//!   `<bucket>/*`, `<bucket>/<prefix>*`. Condition key `s3:prefix` with
//!   `StringLike` narrows a listing.
//! - HeadObject is authorised as `s3:GetObject`, multipart parts as
//!   `s3:PutObject`, ListParts as `s3:ListMultipartUploadParts`.
//! - The Organization's Owner may always edit a bucket policy; another
//!   principal locks itself out if no statement names it, so the policy
//!   always keeps a statement giving bootstrap's own principal everything.

use anyhow::{Result, bail};
use serde_json::{Value, json};

pub const VERSION: &str = "2023-04-17";
const HOME_SID: &str = "plex-burst home";
const RUN_SID: &str = "plex-burst run ";

/// Who a statement is for: `user_id:<id>` or `application_id:<id>`.
pub fn principal(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// The statements that give the run's application (`run_app`) its share of
/// bucket `bucket`: read `reference_prefix`, read and write `runs_prefix<run>/`.
pub fn run_statements(
    bucket: &str,
    reference_prefix: &str,
    runs_prefix: &str,
    run_id: &str,
    run_app: &str,
) -> Vec<Value> {
    let who = json!({ "SCW": principal("application_id", run_app) });
    let own = format!("{runs_prefix}{run_id}/");
    vec![
        json!({
            "Sid": format!("{RUN_SID}{run_id} reference"),
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:GetObject"],
            "Resource": [format!("{bucket}/{reference_prefix}*")],
        }),
        json!({
            "Sid": format!("{RUN_SID}{run_id} results"),
            "Effect": "Allow",
            "Principal": who,
            "Action": [
                "s3:GetObject",
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": [format!("{bucket}/{own}*")],
        }),
        json!({
            "Sid": format!("{RUN_SID}{run_id} listing"),
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:ListBucket"],
            "Resource": [bucket],
            "Condition": { "StringLike": { "s3:prefix": format!("{own}*") } },
        }),
        // Resuming an upload lists the bucket's unfinished ones; parts of
        // another run's upload still need s3:PutObject there.
        json!({
            "Sid": format!("{RUN_SID}{run_id} uploads"),
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:ListBucketMultipartUploads"],
            "Resource": [bucket],
        }),
    ]
}

/// The media bucket's statement for the media-read application: list and
/// read, nothing else (IAM gives that application no write either).
pub fn media_statement(bucket: &str, media_app: &str) -> Value {
    json!({
        "Sid": format!("{RUN_SID}media read"),
        "Effect": "Allow",
        "Principal": { "SCW": principal("application_id", media_app) },
        "Action": ["s3:ListBucket", "s3:GetObject"],
        "Resource": [bucket, format!("{bucket}/*")],
    })
}

/// Bootstrap's own statement: everything, so it never locks itself out.
fn home_statement(bucket: &str, home: &str) -> Value {
    json!({
        "Sid": HOME_SID,
        "Effect": "Allow",
        "Principal": { "SCW": home },
        "Action": ["s3:*"],
        "Resource": [bucket, format!("{bucket}/*")],
    })
}

/// The run a statement was made for, from its `Sid`.
pub fn statement_run(statement: &Value) -> Option<&str> {
    let sid = statement.get("Sid")?.as_str()?;
    let rest = sid.strip_prefix(RUN_SID)?;
    let (run, _) = rest.rsplit_once(' ')?;
    (run != "media").then_some(run)
}

/// The statements of `text` (a bucket policy), or none for no policy.
fn parse(bucket: &str, text: Option<&str>) -> Result<(Value, Vec<Value>)> {
    let Some(text) = text else {
        return Ok((json!("plex-burst"), Vec::new()));
    };
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("the policy of bucket {bucket} is not JSON: {e}"))?;
    let version = doc.get("Version").and_then(Value::as_str).unwrap_or("");
    if version != VERSION {
        bail!(
            "bucket {bucket} has a policy of version {version:?}: under it a bucket policy cannot narrow what IAM allows; rewrite it as version {VERSION}"
        );
    }
    let statements = match doc.get("Statement") {
        None => Vec::new(),
        Some(Value::Array(s)) => s.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        Some(_) => {
            bail!("the policy of bucket {bucket}: Statement is neither a list nor an object")
        }
    };
    let id = doc.get("Id").cloned().unwrap_or(json!("plex-burst"));
    Ok((id, statements))
}

fn render(id: Value, statements: Vec<Value>) -> String {
    json!({ "Version": VERSION, "Id": id, "Statement": statements }).to_string()
}

/// `current` with bootstrap's statement (for principal `home`) and
/// `added` in place of earlier versions of theirs; others' statements kept.
pub fn merge(bucket: &str, current: Option<&str>, home: &str, added: &[Value]) -> Result<String> {
    let (id, statements) = parse(bucket, current)?;
    let sid = |s: &Value| s.get("Sid").cloned();
    let replaced: Vec<Option<Value>> = added.iter().map(sid).collect();
    let mut kept: Vec<Value> = statements
        .into_iter()
        .filter(|s| sid(s) != Some(json!(HOME_SID)) && !replaced.contains(&sid(s)))
        .collect();
    kept.insert(0, home_statement(bucket, home));
    kept.extend(added.iter().cloned());
    Ok(render(id, kept))
}

/// `current` without the statements of `run_id`; `None` when it had none
/// (nothing to write).
pub fn without_run(bucket: &str, current: Option<&str>, run_id: &str) -> Result<Option<String>> {
    let (id, statements) = parse(bucket, current)?;
    let before = statements.len();
    let kept: Vec<Value> = statements
        .into_iter()
        .filter(|s| statement_run(s) != Some(run_id))
        .collect();
    Ok((kept.len() != before).then(|| render(id, kept)))
}

/// The runs that have statements in `current`.
pub fn runs_in(bucket: &str, current: Option<&str>) -> Result<Vec<String>> {
    let (_, statements) = parse(bucket, current)?;
    let mut runs: Vec<String> = statements
        .iter()
        .filter_map(|s| statement_run(s).map(str::to_string))
        .collect();
    runs.dedup();
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKET: &str = "plex-burst";
    const HOME: &str = "user_id:11111111-1111-4111-8111-111111111111";

    /// The grammar of Scaleway's bucket-policy page: only its keys, its
    /// supported actions and condition operators, resources in the bucket.
    fn check_grammar(text: &str) {
        const ACTIONS: &[&str] = &[
            "*",
            "s3:*",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
            "s3:GetObject",
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
            "s3:DeleteObject",
        ];
        let doc: Value = serde_json::from_str(text).unwrap();
        let top = doc.as_object().unwrap();
        assert!(
            top.keys()
                .all(|k| ["Version", "Id", "Statement"].contains(&k.as_str()))
        );
        assert_eq!(doc["Version"], VERSION);
        for s in doc["Statement"].as_array().unwrap() {
            let s = s.as_object().unwrap();
            for key in s.keys() {
                assert!(
                    [
                        "Sid",
                        "Effect",
                        "Principal",
                        "Action",
                        "Resource",
                        "Condition"
                    ]
                    .contains(&key.as_str()),
                    "{key}"
                );
            }
            assert_eq!(s["Effect"], "Allow");
            let who = s["Principal"]["SCW"].as_str().unwrap();
            assert!(who.starts_with("user_id:") || who.starts_with("application_id:"));
            for action in s["Action"].as_array().unwrap() {
                assert!(ACTIONS.contains(&action.as_str().unwrap()), "{action}");
            }
            for resource in s["Resource"].as_array().unwrap() {
                let r = resource.as_str().unwrap();
                assert!(r == BUCKET || r.starts_with(&format!("{BUCKET}/")), "{r}");
            }
            if let Some(c) = s.get("Condition") {
                assert_eq!(
                    c.as_object().unwrap().keys().collect::<Vec<_>>(),
                    ["StringLike"]
                );
                assert!(c["StringLike"]["s3:prefix"].is_string());
            }
        }
    }

    #[test]
    fn a_new_policy_has_home_and_the_run_and_follows_the_grammar() {
        let added = run_statements(BUCKET, "reference/", "runs/", "r1", "app-1");
        let text = merge(BUCKET, None, HOME, &added).unwrap();
        check_grammar(&text);
        let doc: Value = serde_json::from_str(&text).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements[0]["Principal"]["SCW"], HOME);
        assert_eq!(statements[0]["Action"], json!(["s3:*"]));
        assert_eq!(statements[1]["Resource"], json!(["plex-burst/reference/*"]));
        assert_eq!(statements[2]["Resource"], json!(["plex-burst/runs/r1/*"]));
        assert!(!statements[2]["Action"].to_string().contains("Delete"));
        assert_eq!(
            statements[3]["Condition"]["StringLike"]["s3:prefix"],
            "runs/r1/*"
        );
        assert_eq!(runs_in(BUCKET, Some(&text)).unwrap(), ["r1"]);
    }

    #[test]
    fn merging_keeps_others_and_replaces_our_own() {
        let user = json!({"Sid": "mine", "Effect": "Allow",
            "Principal": {"SCW": "user_id:u2"}, "Action": "s3:GetObject",
            "Resource": "plex-burst/*"});
        let start = json!({"Version": VERSION, "Id": "theirs", "Statement": [user]}).to_string();
        let one = merge(
            BUCKET,
            Some(&start),
            HOME,
            &run_statements(BUCKET, "reference/", "runs/", "r1", "a1"),
        )
        .unwrap();
        let two = merge(
            BUCKET,
            Some(&one),
            HOME,
            &run_statements(BUCKET, "reference/", "runs/", "r2", "a2"),
        )
        .unwrap();
        let again = merge(
            BUCKET,
            Some(&two),
            HOME,
            &run_statements(BUCKET, "reference/", "runs/", "r2", "a2"),
        )
        .unwrap();
        assert_eq!(two, again, "merging twice changes nothing");
        let doc: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(doc["Id"], "theirs");
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1 + 1 + 4 + 4);
        assert!(statements.contains(&user));
        assert_eq!(runs_in(BUCKET, Some(&two)).unwrap(), ["r1", "r2"]);

        let without = without_run(BUCKET, Some(&two), "r1").unwrap().unwrap();
        assert_eq!(runs_in(BUCKET, Some(&without)).unwrap(), ["r2"]);
        assert!(without.contains("\"mine\""));
        assert!(without_run(BUCKET, Some(&without), "r1").unwrap().is_none());
    }

    #[test]
    fn a_policy_of_the_old_version_is_refused() {
        let old = json!({"Version": "2012-10-17", "Statement": []}).to_string();
        let err = merge(BUCKET, Some(&old), HOME, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2012-10-17") && err.contains(VERSION), "{err}");
    }

    #[test]
    fn run_ids_with_dashes_and_the_media_statement() {
        let s = &run_statements(BUCKET, "reference/", "runs/", "20250101-1200-ab", "a")[0];
        assert_eq!(statement_run(s), Some("20250101-1200-ab"));
        assert_eq!(statement_run(&media_statement("media", "m")), None);
    }
}
