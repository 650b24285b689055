//! What an S3 request does: its operation, the bucket-policy action it
//! needs, and the resource it touches. Path-style requests only
//! (`/bucket/key`), as every test client sends them.
//!
//! The action each operation needs is Scaleway's table "Amazon S3 and IAM
//! permissions equivalence" (docs-content,
//! reference-content/s3-iam-permissions-equivalence.mdx): HeadBucket is
//! s3:ListBucket, HeadObject s3:GetObject, every multipart step but abort
//! and ListParts s3:PutObject.

use axum::http::{HeaderMap, Method};

/// One request, as the policy engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub name: &'static str,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// What a bucket policy must allow; `None` for what no statement can
    /// grant (ListBuckets, CreateBucket, DeleteBucket).
    pub action: Option<&'static str>,
    /// The IAM side: which Object Storage permission sets allow it.
    pub iam: Iam,
    /// `s3:prefix` of a listing.
    pub prefix: Option<String>,
    /// A copy's source (`bucket/key`): it must be readable too.
    pub copy_source: Option<String>,
}

/// Groups of the permission-set tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Iam {
    ObjectsRead,
    ObjectsWrite,
    ObjectsDelete,
    BucketsRead,
    BucketsWrite,
    BucketsDelete,
    /// The bucket policy itself (answered by the front).
    Policy,
}

/// Query keys of a listing (ListObjects, ListObjectsV2).
const LIST_KEYS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "continuation-token",
    "max-keys",
    "start-after",
    "marker",
    "encoding-type",
    "fetch-owner",
];

/// Presigning and checksum parameters, which name no sub-resource.
fn neutral(key: &str) -> bool {
    key.starts_with("X-Amz-") || key.starts_with("x-amz-") || key == "x-id"
}

/// The operation of `method path?query`, or the reason it is not one the
/// front knows (answered 501 NotImplemented).
pub fn classify(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Op, String> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !neutral(k))
        .collect();
    let has = |k: &str| params.iter().any(|(p, _)| p == k);
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let decoded = percent_decode(path.trim_start_matches('/'));
    let (bucket, key) = match decoded.split_once('/') {
        Some((b, k)) if !k.is_empty() => (b.to_string(), Some(k.to_string())),
        Some((b, _)) => (b.to_string(), None),
        None => (decoded.clone(), None),
    };
    let op = |name, action, iam| Op {
        name,
        bucket: (!bucket.is_empty()).then(|| bucket.clone()),
        key: key.clone(),
        action,
        iam,
        prefix: None,
        copy_source: None,
    };
    if bucket.is_empty() {
        return match *method {
            Method::GET => Ok(op("ListBuckets", None, Iam::BucketsRead)),
            _ => Err(format!("{method} / is not an S3 operation")),
        };
    }
    let Some(_) = key else {
        if has("policy") {
            return match *method {
                Method::GET => Ok(op("GetBucketPolicy", None, Iam::Policy)),
                Method::PUT => Ok(op("PutBucketPolicy", None, Iam::Policy)),
                Method::DELETE => Ok(op("DeleteBucketPolicy", None, Iam::Policy)),
                _ => Err(format!("{method} ?policy is not an S3 operation")),
            };
        }
        return match (method.clone(), params.as_slice()) {
            (Method::GET, _) if has("uploads") => Ok(Op {
                prefix: Some(get("prefix").unwrap_or_default()),
                ..op(
                    "ListMultipartUploads",
                    Some("s3:ListBucketMultipartUploads"),
                    Iam::ObjectsRead,
                )
            }),
            (Method::GET, _) if has("location") && params.len() == 1 => Ok(op(
                "GetBucketLocation",
                Some("s3:GetBucketLocation"),
                Iam::BucketsRead,
            )),
            (Method::GET, _) if params.iter().all(|(k, _)| LIST_KEYS.contains(&k.as_str())) => {
                Ok(Op {
                    prefix: Some(get("prefix").unwrap_or_default()),
                    ..op("ListObjects", Some("s3:ListBucket"), Iam::ObjectsRead)
                })
            }
            (Method::HEAD, []) => Ok(op("HeadBucket", Some("s3:ListBucket"), Iam::BucketsRead)),
            (Method::PUT, []) => Ok(op("CreateBucket", None, Iam::BucketsWrite)),
            (Method::DELETE, []) => Ok(op("DeleteBucket", None, Iam::BucketsDelete)),
            // The keys are in the body: every object of the bucket counts.
            (Method::POST, _) if has("delete") && params.len() == 1 => Ok(Op {
                key: Some("*".into()),
                ..op("DeleteObjects", Some("s3:DeleteObject"), Iam::ObjectsDelete)
            }),
            _ => Err(format!(
                "{method} on bucket {bucket} with ?{query} is not an operation the S3 front knows"
            )),
        };
    };
    let upload = has("uploadId");
    let known = |allowed: &[&str]| params.iter().all(|(k, _)| allowed.contains(&k.as_str()));
    let found = match *method {
        Method::GET | Method::HEAD
            if upload && known(&["uploadId", "max-parts", "part-number-marker"]) =>
        {
            op(
                "ListParts",
                Some("s3:ListMultipartUploadParts"),
                Iam::ObjectsRead,
            )
        }
        Method::GET | Method::HEAD
            if known(&[
                "partNumber",
                "versionId",
                "response-content-type",
                "response-content-disposition",
            ]) =>
        {
            op("GetObject", Some("s3:GetObject"), Iam::ObjectsRead)
        }
        Method::PUT if upload && known(&["uploadId", "partNumber"]) => {
            op("UploadPart", Some("s3:PutObject"), Iam::ObjectsWrite)
        }
        Method::PUT if params.is_empty() => {
            op("PutObject", Some("s3:PutObject"), Iam::ObjectsWrite)
        }
        Method::POST if has("uploads") && params.len() == 1 => op(
            "CreateMultipartUpload",
            Some("s3:PutObject"),
            Iam::ObjectsWrite,
        ),
        Method::POST if upload && params.len() == 1 => op(
            "CompleteMultipartUpload",
            Some("s3:PutObject"),
            Iam::ObjectsWrite,
        ),
        Method::DELETE if upload && params.len() == 1 => op(
            "AbortMultipartUpload",
            Some("s3:AbortMultipartUpload"),
            Iam::ObjectsDelete,
        ),
        Method::DELETE if params.is_empty() => {
            op("DeleteObject", Some("s3:DeleteObject"), Iam::ObjectsDelete)
        }
        _ => {
            return Err(format!(
                "{method} on s3://{bucket}/{} with ?{query} is not an operation the S3 front knows",
                key.unwrap_or_default()
            ));
        }
    };
    let copy_source = headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(|v| percent_decode(v.trim_start_matches('/')));
    Ok(Op {
        copy_source,
        ..found
    })
}

/// `%XX` sequences decoded (an object key as S3 sees it).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(b)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The access key a request is signed with: SigV4's `Authorization`
/// header or a presigned URL's `X-Amz-Credential` (`AKID/date/region/...`).
pub fn access_key(headers: &HeaderMap, query: &str) -> Option<String> {
    let credential = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(auth) => auth
            .split_once("Credential=")
            .map(|(_, rest)| rest.to_string())?,
        None => form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "X-Amz-Credential")
            .map(|(_, v)| v.into_owned())?,
    };
    let access = credential.split('/').next()?.trim();
    (!access.is_empty()).then(|| access.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: &str) -> Op {
        classify(&method, path, query, &HeaderMap::new()).unwrap()
    }

    #[test]
    fn operations_and_their_actions() {
        let cases = [
            (Method::GET, "/b/k", "", "GetObject", Some("s3:GetObject")),
            (Method::HEAD, "/b/k", "", "GetObject", Some("s3:GetObject")),
            (Method::PUT, "/b/k", "", "PutObject", Some("s3:PutObject")),
            (
                Method::POST,
                "/b/k",
                "uploads",
                "CreateMultipartUpload",
                Some("s3:PutObject"),
            ),
            (
                Method::PUT,
                "/b/k",
                "partNumber=1&uploadId=u",
                "UploadPart",
                Some("s3:PutObject"),
            ),
            (
                Method::POST,
                "/b/k",
                "uploadId=u",
                "CompleteMultipartUpload",
                Some("s3:PutObject"),
            ),
            (
                Method::DELETE,
                "/b/k",
                "uploadId=u",
                "AbortMultipartUpload",
                Some("s3:AbortMultipartUpload"),
            ),
            (
                Method::GET,
                "/b/k",
                "uploadId=u",
                "ListParts",
                Some("s3:ListMultipartUploadParts"),
            ),
            (
                Method::DELETE,
                "/b/k",
                "",
                "DeleteObject",
                Some("s3:DeleteObject"),
            ),
            (
                Method::GET,
                "/b",
                "list-type=2&prefix=runs%2F",
                "ListObjects",
                Some("s3:ListBucket"),
            ),
            (
                Method::GET,
                "/b",
                "uploads&prefix=x",
                "ListMultipartUploads",
                Some("s3:ListBucketMultipartUploads"),
            ),
            (Method::HEAD, "/b", "", "HeadBucket", Some("s3:ListBucket")),
            (Method::PUT, "/b", "policy", "PutBucketPolicy", None),
        ];
        for (method, path, query, name, action) in cases {
            let op = of(method.clone(), path, query);
            assert_eq!(
                (op.name, op.action),
                (name, action),
                "{method} {path}?{query}"
            );
        }
        assert_eq!(
            of(Method::GET, "/b", "list-type=2&prefix=runs%2Fr1%2F")
                .prefix
                .as_deref(),
            Some("runs/r1/")
        );
        assert_eq!(
            of(Method::GET, "/b/a%20b/c", "").key.as_deref(),
            Some("a b/c")
        );
        assert!(classify(&Method::PUT, "/b/k", "tagging", &HeaderMap::new()).is_err());
    }

    #[test]
    fn the_access_key_of_a_signed_or_presigned_request() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=SCWKEY/20250101/fr-par/s3/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key(&headers, "").as_deref(), Some("SCWKEY"));
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SCWP%2F20250101%2Ffr-par%2Fs3%2Faws4_request";
        assert_eq!(access_key(&HeaderMap::new(), q).as_deref(), Some("SCWP"));
        assert_eq!(access_key(&HeaderMap::new(), ""), None);
        // Presigned parameters name no sub-resource.
        assert_eq!(
            classify(&Method::GET, "/b/k", q, &HeaderMap::new())
                .unwrap()
                .name,
            "GetObject"
        );
    }
}
