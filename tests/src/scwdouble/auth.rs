//! Who calls (`X-Auth-Token`: an admin secret key or the secret of an API
//! key made through IAM) and what they may do: the union of the permission
//! sets of the policies of the key's application, each for the projects
//! its rule names (or the whole organization).

use axum::http::HeaderMap;

use super::errors::ScwError;
use super::state::{Config, World};

#[derive(Debug, Clone)]
pub enum Principal {
    /// A `--secret-key`: every permission on every project.
    Admin,
    Key {
        access_key: String,
        application_id: String,
    },
}

impl Principal {
    /// How the call log names the caller (never the secret).
    pub fn label(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Key { access_key, .. } => access_key.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perm {
    InstanceRead,
    InstanceWrite,
    BlockRead,
    BlockWrite,
    IamRead,
    IamWrite,
}

impl Perm {
    /// `(resource, action)` for a `permissions_denied` answer.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Perm::InstanceRead => ("instance", "read"),
            Perm::InstanceWrite => ("instance", "write"),
            Perm::BlockRead => ("block_storage", "read"),
            Perm::BlockWrite => ("block_storage", "write"),
            Perm::IamRead => ("iam", "read"),
            Perm::IamWrite => ("iam", "write"),
        }
    }

    /// Whether IAM only grants it at organization level.
    fn organization_level(self) -> bool {
        matches!(self, Perm::IamRead | Perm::IamWrite)
    }
}

/// The permission sets the double knows; Object Storage ones are accepted
/// in policies but grant nothing here (S3 is another double).
pub const PERMISSION_SETS: &[&str] = &[
    "AllProductsFullAccess",
    "InstancesFullAccess",
    "InstancesReadOnly",
    "BlockStorageFullAccess",
    "BlockStorageReadOnly",
    "IAMManager",
    "IAMReadOnly",
    "ObjectStorageFullAccess",
    "ObjectStorageReadOnly",
    "ObjectStorageObjectsRead",
    "ObjectStorageObjectsWrite",
    "ObjectStorageObjectsDelete",
    "ObjectStorageBucketsRead",
    "ObjectStorageBucketsWrite",
    "ObjectStorageBucketsDelete",
];

fn grants(set: &str, perm: Perm) -> bool {
    use Perm::*;
    match set {
        "AllProductsFullAccess" => !perm.organization_level(),
        "InstancesFullAccess" => matches!(perm, InstanceRead | InstanceWrite),
        "InstancesReadOnly" => perm == InstanceRead,
        "BlockStorageFullAccess" => matches!(perm, BlockRead | BlockWrite),
        "BlockStorageReadOnly" => perm == BlockRead,
        "IAMManager" => matches!(perm, IamRead | IamWrite),
        "IAMReadOnly" => perm == IamRead,
        _ => false,
    }
}

/// The caller of a request; `Err` is the 401 to answer.
pub fn authenticate(
    config: &Config,
    world: &World,
    headers: &HeaderMap,
) -> Result<Principal, ScwError> {
    let token = headers
        .get("X-Auth-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ScwError::denied_authentication("invalid_argument"))?;
    if config
        .admin_keys
        .iter()
        .any(|k| k.eq_ignore_ascii_case(token))
    {
        return Ok(Principal::Admin);
    }
    let key = world
        .api_keys
        .iter()
        .find(|k| k.secret_key.eq_ignore_ascii_case(token))
        .ok_or_else(|| ScwError::denied_authentication("not_found"))?;
    if key.expired() {
        return Err(ScwError::denied_authentication("expired"));
    }
    Ok(Principal::Key {
        access_key: key.access_key.clone(),
        application_id: key.application_id.clone(),
    })
}

impl World {
    /// Whether `principal` holds `perm` on `project`, or on some project
    /// when `project` is `None` (listing, filtered afterwards).
    pub fn allows(&self, principal: &Principal, perm: Perm, project: Option<&str>) -> bool {
        let Principal::Key { application_id, .. } = principal else {
            return true;
        };
        self.policies
            .iter()
            .filter(|p| &p.application_id == application_id)
            .flat_map(|p| &p.rules)
            .filter(|rule| rule.permission_set_names.iter().any(|s| grants(s, perm)))
            .any(|rule| match (&rule.project_ids, project) {
                (None, _) => true,
                (Some(_), _) if perm.organization_level() => false,
                (Some(ids), Some(project)) => ids.iter().any(|id| id == project),
                (Some(ids), None) => !ids.is_empty(),
            })
    }

    /// `allows` or the 403 to answer.
    pub fn require(
        &self,
        principal: &Principal,
        perm: Perm,
        project: Option<&str>,
    ) -> Result<(), ScwError> {
        if self.allows(principal, perm, project) {
            Ok(())
        } else {
            let (resource, action) = perm.describe();
            Err(ScwError::permissions_denied(resource, action))
        }
    }
}
