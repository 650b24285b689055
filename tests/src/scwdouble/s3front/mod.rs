//! The S3 front: Object Storage's access control in front of a real S3
//! server (`rclone serve s3`, which has none). Each request's signing key
//! (SigV4 `Authorization` or a presigned `X-Amz-Credential`) is mapped to
//! its principal through the double's IAM (an API key's application, or
//! the Owner for `--owner-access-key`); the request must be allowed by the
//! principal's Object Storage permission sets on the bucket's project and,
//! when the bucket has a policy, by the policy. Bucket policies live
//! here (`?policy`); anything allowed is forwarded unchanged (the Host
//! header too, so signatures stay valid) and streamed both ways.

mod op;
mod policy;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use op::{Iam, Op};
pub use policy::Policy as BucketPolicy;
use policy::Who;

use super::state::{Shared, World};

/// The Owner's user id (what IAM shows for an `--owner-access-key`).
pub const OWNER_USER_ID: &str = "0b1e5c4a-7d2f-4c1e-9a3b-6f8d2e4c1a03";

#[derive(Clone)]
struct Front {
    double: Shared,
    backend: SocketAddr,
}

/// Serves the front on `listener`, forwarding to `backend`.
pub async fn serve(
    double: Shared,
    listener: tokio::net::TcpListener,
    backend: SocketAddr,
) -> std::io::Result<()> {
    let app = Router::new()
        .fallback(handle)
        .with_state(Front { double, backend });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// An S3 error answer (`<Error><Code>..`), without a body for HEAD.
fn s3_error(
    method: &Method,
    status: StatusCode,
    code: &str,
    message: &str,
    resource: &str,
) -> Response {
    let mut body = String::new();
    if method != Method::HEAD {
        body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>scw-double</RequestId></Error>",
            xml_escape(message),
            xml_escape(resource)
        );
    }
    (status, [("content-type", "application/xml")], body).into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Who signed the request, or the error to answer.
fn principal(
    double: &Shared,
    world: &World,
    headers: &HeaderMap,
    query: &str,
) -> Result<Who, (&'static str, String)> {
    let Some(access) = op::access_key(headers, query) else {
        return Ok(Who::Anonymous);
    };
    if double.config.owner_access_keys.contains(&access) {
        return Ok(Who::User(OWNER_USER_ID.into()));
    }
    match world.api_keys.iter().find(|k| k.access_key == access) {
        Some(key) if key.expired() => {
            Err(("ExpiredToken", format!("the API key {access} has expired")))
        }
        Some(key) => Ok(Who::Application(key.application_id.clone())),
        None => Err(("InvalidAccessKeyId", format!("no API key {access}"))),
    }
}

/// Whether IAM lets `who` do `iam` on the double's project (every bucket
/// belongs to it): the Owner may do everything, an application what the
/// Object Storage permission sets of its policies allow.
fn iam_allows(double: &Shared, world: &World, who: &Who, iam: Iam) -> bool {
    let app = match who {
        Who::User(_) => return true,
        Who::Anonymous => return false,
        Who::Application(app) => app,
    };
    permission_sets(double, world, app).any(|set| grants(set, iam))
}

/// The permission sets IAM gives `app` in the double's project.
fn permission_sets<'a>(
    double: &'a Shared,
    world: &'a World,
    app: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    let project = &double.config.project_id;
    world
        .policies
        .iter()
        .filter(move |p| p.application_id == app)
        .flat_map(|p| &p.rules)
        .filter(move |r| {
            r.project_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(project))
        })
        .flat_map(|r| &r.permission_set_names)
}

/// The Object Storage side of a permission set (Scaleway's equivalence
/// table; `auth.rs` holds the rest of each set's meaning).
fn grants(set: &str, iam: Iam) -> bool {
    use Iam::*;
    match set {
        "AllProductsFullAccess" | "ObjectStorageFullAccess" => true,
        "ObjectStorageReadOnly" => matches!(iam, ObjectsRead | BucketsRead),
        "ObjectStorageObjectsRead" => iam == ObjectsRead,
        "ObjectStorageObjectsWrite" => iam == ObjectsWrite,
        "ObjectStorageObjectsDelete" => iam == ObjectsDelete,
        "ObjectStorageBucketsRead" => iam == BucketsRead,
        "ObjectStorageBucketsWrite" => iam == BucketsWrite,
        "ObjectStorageBucketsDelete" => iam == BucketsDelete,
        _ => false,
    }
}

enum Verdict {
    Forward,
    Policy(Op, Who),
    Refuse(StatusCode, &'static str, String),
}

fn decide(
    front: &Front,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    query: &str,
    ip: std::net::IpAddr,
) -> Verdict {
    let op = match op::classify(method, path, query, headers) {
        Ok(op) => op,
        Err(why) => return Verdict::Refuse(StatusCode::NOT_IMPLEMENTED, "NotImplemented", why),
    };
    let world = front.double.world();
    let who = match principal(&front.double, &world, headers, query) {
        Ok(who) => who,
        Err((code, why)) => return Verdict::Refuse(StatusCode::FORBIDDEN, code, why),
    };
    if op.iam == Iam::Policy {
        return Verdict::Policy(op, who);
    }
    let denied = |why: String| Verdict::Refuse(StatusCode::FORBIDDEN, "AccessDenied", why);
    if !iam_allows(&front.double, &world, &who, op.iam) {
        return denied(format!(
            "{} needs an IAM permission set the caller lacks",
            op.name
        ));
    }
    let bucket = op.bucket.clone().unwrap_or_default();
    if let Some(refused) = cold_read(&world, method, &op) {
        return refused;
    }
    let Some(policy) = world.bucket_policies.get(&bucket) else {
        return Verdict::Forward;
    };
    let referer = headers.get("referer").and_then(|v| v.to_str().ok());
    let resource = match &op.key {
        Some(key) => format!("{bucket}/{key}"),
        None => bucket.clone(),
    };
    let allowed = |action: &str, resource: &str, prefix: Option<&str>| {
        policy.allows(&policy::Request {
            who: &who,
            action,
            resource,
            prefix,
            referer,
            source_ip: ip,
        })
    };
    let Some(action) = op.action else {
        return denied(format!(
            "{} cannot be granted by bucket {bucket}'s policy",
            op.name
        ));
    };
    if !allowed(action, &resource, op.prefix.as_deref()) {
        return denied(format!(
            "bucket {bucket}'s policy does not allow {action} on {resource}"
        ));
    }
    if let Some(source) = &op.copy_source {
        let source_bucket = source.split('/').next().unwrap_or_default();
        let readable = match world.bucket_policies.get(source_bucket) {
            None => iam_allows(&front.double, &world, &who, Iam::ObjectsRead),
            Some(p) => p.allows(&policy::Request {
                who: &who,
                action: "s3:GetObject",
                resource: source,
                prefix: None,
                referer,
                source_ip: ip,
            }),
        };
        if !readable {
            return denied(format!("the copy source {source} is not readable"));
        }
    }
    Verdict::Forward
}

/// A GET of an object in the GLACIER class, as AWS documents it and
/// Scaleway follows: 403 `InvalidObjectState` until the object is
/// restored (a HEAD still answers).
fn cold_read(world: &World, method: &Method, op: &Op) -> Option<Verdict> {
    let (bucket, key) = (op.bucket.as_deref()?, op.key.as_deref()?);
    let cold = world
        .cold_prefixes
        .iter()
        .any(|(b, p)| b == bucket && key.starts_with(p.as_str()));
    (cold && op.name == "GetObject" && method == Method::GET).then(|| {
        Verdict::Refuse(
            StatusCode::FORBIDDEN,
            "InvalidObjectState",
            "The operation is not valid for the object's storage class".into(),
        )
    })
}

async fn handle(
    State(front): State<Front>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    match decide(
        &front,
        &parts.method,
        &parts.headers,
        &path,
        &query,
        peer.ip(),
    ) {
        Verdict::Refuse(status, code, why) => s3_error(&parts.method, status, code, &why, &path),
        Verdict::Policy(op, who) => {
            bucket_policy(&front, &parts.method, op, who, body, peer.ip()).await
        }
        Verdict::Forward => forward(front.backend, Request::from_parts(parts, body))
            .await
            .unwrap_or_else(|e| {
                s3_error(
                    &Method::GET,
                    StatusCode::BAD_GATEWAY,
                    "InternalError",
                    &format!("the S3 backend: {e}"),
                    &path,
                )
            }),
    }
}

/// Get, put or delete a bucket's policy. The Owner always may (Scaleway:
/// the Owner keeps inherent rights to edit bucket policies); anyone else
/// needs ObjectStorageFullAccess and, once there is a policy, a statement
/// giving them every action on the bucket (a guess: no documented action
/// names these calls).
async fn bucket_policy(
    front: &Front,
    method: &Method,
    op: Op,
    who: Who,
    body: Body,
    ip: std::net::IpAddr,
) -> Response {
    let bucket = op.bucket.clone().unwrap_or_default();
    let resource = format!("/{bucket}?policy");
    let text = if *method == Method::PUT {
        match axum::body::to_bytes(body, 20 * 1024).await {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(_) => {
                return s3_error(
                    method,
                    StatusCode::BAD_REQUEST,
                    "PolicyTooLarge",
                    "Policies are limited to 20 KB",
                    &resource,
                );
            }
        }
    } else {
        None
    };
    let mut world = front.double.world();
    let may = match &who {
        Who::User(_) => true,
        Who::Anonymous => false,
        Who::Application(_) => {
            iam_full(&front.double, &world, &who)
                && world
                    .bucket_policies
                    .get(&bucket)
                    .is_none_or(|p| p.grants_everything(&who, &bucket, ip))
        }
    };
    if !may {
        return s3_error(
            method,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &format!("{} is not allowed to the caller", op.name),
            &resource,
        );
    }
    match (method.clone(), text) {
        (Method::GET, _) => match world.bucket_policies.get(&bucket) {
            Some(p) => (
                StatusCode::OK,
                [("content-type", "application/json")],
                p.text.clone(),
            )
                .into_response(),
            None => s3_error(
                method,
                StatusCode::NOT_FOUND,
                "NoSuchBucketPolicy",
                "The bucket policy does not exist",
                &resource,
            ),
        },
        (Method::PUT, Some(text)) => match policy::parse(&bucket, &text) {
            Ok(p) => {
                world.bucket_policies.insert(bucket, p);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(why) => s3_error(
                method,
                StatusCode::BAD_REQUEST,
                "MalformedPolicy",
                &why,
                &resource,
            ),
        },
        _ => {
            world.bucket_policies.remove(&bucket);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

fn iam_full(double: &Shared, world: &World, who: &Who) -> bool {
    let Who::Application(app) = who else {
        return matches!(who, Who::User(_));
    };
    permission_sets(double, world, app)
        .any(|s| s == "ObjectStorageFullAccess" || s == "AllProductsFullAccess")
}

/// The request, as received, to the backend on a connection of its own;
/// the answer streamed back.
async fn forward(backend: SocketAddr, request: Request) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect(backend)
        .await
        .map_err(|e| format!("cannot connect to {backend}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.map(Body::new))
}
