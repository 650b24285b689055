//! The IAM API (global, `/iam/v1alpha1`): applications, their policies
//! (rules of permission sets on projects or the organization) and API keys
//! whose secret is shown once, at creation. Every call needs IAM
//! permissions (IAMManager to write, IAMReadOnly to read).

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use super::auth::{PERMISSION_SETS, Perm, Principal};
use super::body::Body;
use super::errors::{ApiResult, ScwError, reply};
use super::ids::{access_key, parse_rfc3339, uuid_v4};
use super::query::{self, Params};
use super::render::{merge, page};
use super::state::{ApiKey, Application, Policy, Rule, Shared, World};

pub fn router() -> Router<Shared> {
    let at = |path: &str| format!("/iam/v1alpha1{path}");
    Router::new()
        .route(
            &at("/applications"),
            get(list_applications).post(create_application),
        )
        .route(
            &at("/applications/{id}"),
            get(show_application).delete(delete_application),
        )
        .route(&at("/policies"), get(list_policies).post(create_policy))
        .route(
            &at("/policies/{id}"),
            get(show_policy).delete(delete_policy),
        )
        .route(&at("/rules"), get(list_rules))
        .route(&at("/api-keys"), get(list_keys).post(create_key))
        .route(
            &at("/api-keys/{access_key}"),
            get(show_key).delete(delete_key),
        )
}

/// The organization named in a body must be the double's.
fn check_organization(double: &Shared, organization: &str) -> Result<(), ScwError> {
    if organization == double.config.organization_id {
        Ok(())
    } else {
        Err(ScwError::permissions_denied("organization", "write"))
    }
}

fn list_answer(key: &str, found: Vec<Value>, params: &Params) -> ApiResult {
    let (number, size) = query::pagination(params, "page_size")?;
    let (items, total) = page(found, number, size);
    let mut body = json!({ "total_count": total });
    body[key] = Value::Array(items);
    Ok(reply(StatusCode::OK, body))
}

async fn create_application(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    bytes: Bytes,
) -> ApiResult {
    let body = Body::parse(&bytes, &["name", "organization_id", "description", "tags"])?;
    let name = body.str("name")?;
    let organization_id = body.uuid("organization_id")?;
    let description = body.opt_str("description")?.unwrap_or_default();
    let tags = body.strings("tags")?;
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    check_organization(&double, &organization_id)?;
    let now = SystemTime::now();
    let application = Application {
        id: uuid_v4(),
        name,
        description,
        organization_id,
        tags,
        created: now,
        updated: now,
    };
    let answer = application.json(&world);
    world.applications.push(application);
    Ok(reply(StatusCode::OK, answer))
}

async fn list_applications(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    let found = world
        .applications
        .iter()
        .filter(|a| query::contains(&params, "name", &a.name))
        .filter(|a| query::matches(&params, "organization_id", &a.organization_id))
        .map(|a| a.json(&world))
        .collect();
    list_answer("applications", found, &params)
}

async fn show_application(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    let application = world
        .applications
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ScwError::not_found("application", &id))?;
    Ok(reply(StatusCode::OK, application.json(&world)))
}

/// Deletes the application with its API keys and policies.
async fn delete_application(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    if !world.applications.iter().any(|a| a.id == id) {
        return Err(ScwError::not_found("application", &id));
    }
    world.applications.retain(|a| a.id != id);
    world.api_keys.retain(|k| k.application_id != id);
    world.policies.retain(|p| p.application_id != id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One rule: permission sets known to the double, scoped to projects or
/// to the organization (IAM sets only to the organization).
fn parse_rule(value: Value, index: usize, organization: &str) -> Result<Rule, ScwError> {
    let prefix = format!("rules.{index}.");
    let rule = Body::from_value(
        value,
        &[
            "permission_set_names",
            "project_ids",
            "organization_id",
            "condition",
        ],
        &prefix,
    )?;
    // Terraform sends `condition: ""` (policy-basic cassette,
    // terraform-provider-scaleway b2d45ed4); the double models none.
    if rule.opt_str("condition")?.is_some_and(|c| !c.is_empty()) {
        return Err(ScwError::argument(
            &format!("{prefix}condition"),
            "constraint",
            "the double models no rule conditions",
        ));
    }
    let sets = rule.strings("permission_set_names")?;
    if sets.is_empty() {
        return Err(ScwError::missing_field(&format!(
            "{prefix}permission_set_names"
        )));
    }
    if let Some(unknown) = sets.iter().find(|s| !PERMISSION_SETS.contains(&s.as_str())) {
        return Err(ScwError::argument(
            &format!("{prefix}permission_set_names"),
            "constraint",
            format!("unknown permission set {unknown:?}"),
        ));
    }
    let projects = rule
        .get("project_ids")
        .is_some()
        .then(|| rule.strings("project_ids"));
    let org = rule.opt_uuid("organization_id")?;
    let project_ids = match (projects, org) {
        (Some(projects), None) => {
            let projects = projects?;
            if projects.is_empty() || !projects.iter().all(|p| super::ids::is_uuid(p)) {
                return Err(ScwError::argument(
                    &format!("{prefix}project_ids"),
                    "constraint",
                    "must be a non-empty list of project UUIDs",
                ));
            }
            if let Some(set) = sets.iter().find(|s| s.starts_with("IAM")) {
                return Err(ScwError::argument(
                    &format!("{prefix}project_ids"),
                    "constraint",
                    format!("{set} applies to the organization, not to projects"),
                ));
            }
            Some(projects)
        }
        (None, Some(org)) if org == organization => None,
        (None, Some(_)) => return Err(ScwError::permissions_denied("organization", "write")),
        _ => {
            return Err(ScwError::argument(
                &format!("{prefix}project_ids"),
                "constraint",
                "give exactly one of project_ids and organization_id",
            ));
        }
    };
    Ok(Rule {
        id: uuid_v4(),
        permission_set_names: sets,
        project_ids,
    })
}

async fn create_policy(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    bytes: Bytes,
) -> ApiResult {
    let body = Body::parse(
        &bytes,
        &[
            "name",
            "description",
            "organization_id",
            "application_id",
            "tags",
            "rules",
        ],
    )?;
    let name = body.str("name")?;
    let description = body.opt_str("description")?.unwrap_or_default();
    let organization_id = body.uuid("organization_id")?;
    let application_id = body.uuid("application_id")?;
    let tags = body.strings("tags")?;
    let rules = body
        .objects("rules")?
        .into_iter()
        .enumerate()
        .map(|(i, rule)| parse_rule(rule, i, &double.config.organization_id))
        .collect::<Result<Vec<_>, _>>()?;
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    check_organization(&double, &organization_id)?;
    if !world.applications.iter().any(|a| a.id == application_id) {
        return Err(ScwError::not_found("application", &application_id));
    }
    let now = SystemTime::now();
    let policy = Policy {
        id: uuid_v4(),
        name,
        description,
        organization_id,
        application_id,
        tags,
        rules,
        created: now,
        updated: now,
    };
    let answer = policy.json();
    world.policies.push(policy);
    Ok(reply(StatusCode::OK, answer))
}

async fn list_policies(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    // Required, as both SDKs' ListPoliciesRequest says (scaleway-sdk-go
    // 2c5cd81, api/iam/v1alpha1/iam_sdk.go: always sent; the Python SDK
    // refuses to send the call without it).
    let organization = params
        .get("organization_id")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| ScwError::missing_field("organization_id"))?;
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    // The SDK's filters: lists (`application_ids`, `policy_ids`,
    // `user_ids`, `group_ids`) repeated or comma-separated, a policy
    // matching any of the list; the double's policies all belong to
    // applications, so a user or group filter matches none.
    let any_of = |name: &str, value: &str| {
        let wanted: Vec<&str> = params
            .all(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .collect();
        wanted.is_empty() || wanted.contains(&value)
    };
    let by_principal = params.get("user_ids").is_none()
        && params.get("group_ids").is_none()
        && params.get("no_principal") != Some("true");
    let found = world
        .policies
        .iter()
        .filter(|p| p.organization_id == organization)
        .filter(|p| by_principal && any_of("application_ids", &p.application_id))
        .filter(|p| any_of("policy_ids", &p.id))
        .filter(|p| query::matches(&params, "policy_name", &p.name))
        .filter(|p| {
            params
                .get("tag")
                .is_none_or(|t| p.tags.iter().any(|have| have.contains(t)))
        })
        .map(Policy::json)
        .collect();
    list_answer("policies", found, &params)
}

fn policy<'a>(world: &'a World, id: &str) -> Result<&'a Policy, ScwError> {
    world
        .policies
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ScwError::not_found("policy", id))
}

async fn show_policy(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    Ok(reply(StatusCode::OK, policy(&world, &id)?.json()))
}

async fn delete_policy(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    policy(&world, &id)?;
    world.policies.retain(|p| p.id != id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_rules(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    let id = params
        .require("policy_id")
        .map_err(|_| ScwError::missing_field("policy_id"))?;
    let organization = &double.config.organization_id;
    let found = policy(&world, id)?
        .rules
        .iter()
        .map(|r| r.json(organization))
        .collect();
    list_answer("rules", found, &params)
}

async fn create_key(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    bytes: Bytes,
) -> ApiResult {
    let body = Body::parse(
        &bytes,
        &[
            "application_id",
            "expires_at",
            "default_project_id",
            "description",
        ],
    )?;
    let application_id = body.uuid("application_id")?;
    let expires_at = match body.opt_str("expires_at")? {
        None => None,
        Some(text) => {
            let time = parse_rfc3339(&text).ok_or_else(|| {
                ScwError::argument("expires_at", "constraint", "must be an RFC 3339 date")
            })?;
            if time <= SystemTime::now() {
                return Err(ScwError::argument(
                    "expires_at",
                    "constraint",
                    "must be in the future",
                ));
            }
            Some(time)
        }
    };
    let default_project_id = body
        .opt_uuid("default_project_id")?
        .unwrap_or_else(|| double.config.project_id.clone());
    let description = body.opt_str("description")?.unwrap_or_default();
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    if !world.applications.iter().any(|a| a.id == application_id) {
        return Err(ScwError::not_found("application", &application_id));
    }
    let now = SystemTime::now();
    let (access, secret) = world
        .key_pool
        .pop_front()
        .unwrap_or_else(|| (access_key(), uuid_v4()));
    let key = ApiKey {
        access_key: access,
        secret_key: secret,
        application_id,
        description,
        default_project_id,
        expires_at,
        created: now,
        updated: now,
    };
    let mut answer = key.json();
    merge(&mut answer, json!({ "secret_key": key.secret_key }));
    world.api_keys.push(key);
    Ok(reply(StatusCode::OK, answer))
}

async fn list_keys(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let params = Params::parse(raw.as_deref());
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    let found = world
        .api_keys
        .iter()
        // By bearer, as the SDKs ask (bearer_id + bearer_type); the
        // deprecated application_id is no query parameter, so ignored
        // (scaleway-sdk-go api/iam/v1alpha1; list-iamapi-keys-basic
        // cassette, terraform-provider-scaleway b2d45ed4).
        .filter(|k| query::matches(&params, "bearer_id", &k.application_id))
        .filter(|_| query::matches(&params, "bearer_type", "application"))
        .filter(|k| query::contains(&params, "description", &k.description))
        .map(ApiKey::json)
        .collect();
    list_answer("api_keys", found, &params)
}

fn key<'a>(world: &'a World, access_key: &str) -> Result<&'a ApiKey, ScwError> {
    world
        .api_keys
        .iter()
        .find(|k| k.access_key == access_key)
        .ok_or_else(|| ScwError::not_found("api_key", access_key))
}

async fn show_key(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(access_key): Path<String>,
) -> ApiResult {
    let world = double.world();
    world.require(&principal, Perm::IamRead, None)?;
    // The Owner's own keys belong to a user, not an application.
    if double.config.owner_access_keys.contains(&access_key) {
        return Ok(reply(
            StatusCode::OK,
            json!({
                "access_key": access_key,
                "user_id": super::s3front::OWNER_USER_ID,
                "application_id": null,
                "description": "",
                "default_project_id": double.config.project_id,
                "editable": true,
                "deletable": true,
                "managed": false,
            }),
        ));
    }
    Ok(reply(StatusCode::OK, key(&world, &access_key)?.json()))
}

async fn delete_key(
    State(double): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(access_key): Path<String>,
) -> ApiResult {
    let mut world = double.world();
    world.require(&principal, Perm::IamWrite, None)?;
    key(&world, &access_key)?;
    world.api_keys.retain(|k| k.access_key != access_key);
    Ok(StatusCode::NO_CONTENT.into_response())
}
