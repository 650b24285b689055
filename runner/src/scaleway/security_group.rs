//! Instance security groups (`/instance/v1/zones/{zone}/security_groups`):
//! the cloud firewall in front of a server. A run's server gets a group of
//! its own that drops every inbound connection (nothing on the instance is
//! meant to be reached) and lets the instance reach out.
//!
//! Shapes from recorded real traffic: scaleway-cli
//! `internal/namespaces/instance/v1/testdata/test-security-group-get-get.cassette.yaml`
//! (create 201 `{"security_group": {...}}`, get, delete 204) and
//! terraform-provider-scaleway
//! `internal/services/instance/testdata/security-group-tags.cassette.yaml`
//! (`tags`, `enable_default_security`).

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Client, Paging, instance_tags, seg};
use super::error::ScwError;
use super::zone::Zone;

/// A security group as the Instance API describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub stateful: bool,
    /// `accept` or `drop`.
    #[serde(default)]
    pub inbound_default_policy: String,
    #[serde(default)]
    pub outbound_default_policy: String,
    /// The group a server created without one gets.
    #[serde(default)]
    pub project_default: bool,
    /// The servers in it, as `{"id", "name"}`.
    #[serde(default)]
    pub servers: Vec<ServerRef>,
}

/// `{"id", "name"}`: how a group names its servers and a server its group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerRef {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A rule of a group. Groups with `enable_default_security` carry the
/// platform's non-editable outbound SMTP drops (the cassettes above).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SecurityGroupRule {
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `accept` or `drop`.
    pub action: String,
    #[serde(default)]
    pub editable: bool,
}

/// What `create_security_group` sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateSecurityGroup {
    pub name: String,
    pub project: String,
    pub tags: Vec<String>,
    pub stateful: bool,
    pub inbound_default_policy: String,
    pub outbound_default_policy: String,
}

impl CreateSecurityGroup {
    /// A stateful group that drops every inbound connection it was not
    /// asked for and accepts every outbound one.
    pub fn closed(name: String, project: String, tags: Vec<String>) -> CreateSecurityGroup {
        CreateSecurityGroup {
            name,
            project,
            tags,
            stateful: true,
            inbound_default_policy: "drop".into(),
            outbound_default_policy: "accept".into(),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    security_group: SecurityGroup,
}

fn path(zone: &Zone) -> String {
    format!("/instance/v1/zones/{zone}/security_groups")
}

impl Client {
    pub async fn create_security_group(
        &self,
        zone: &Zone,
        req: &CreateSecurityGroup,
    ) -> Result<SecurityGroup, ScwError> {
        let env: Envelope = self.json_call(Method::POST, &path(zone), req).await?;
        Ok(env.security_group)
    }

    /// One group, or `None` if it does not exist.
    pub async fn get_security_group(
        &self,
        zone: &Zone,
        id: &str,
    ) -> Result<Option<SecurityGroup>, ScwError> {
        let path = format!("{}/{}", path(zone), seg("security group id", id)?);
        Ok(self
            .get_opt::<Envelope>(&path)
            .await?
            .map(|e| e.security_group))
    }

    /// The groups of `project` carrying all of `tags`.
    pub async fn list_security_groups(
        &self,
        zone: &Zone,
        project: &str,
        tags: &[&str],
    ) -> Result<Vec<SecurityGroup>, ScwError> {
        let mut query = vec![("project", project.to_string())];
        query.extend(instance_tags(tags));
        let groups: Vec<SecurityGroup> = self
            .list_all(&path(zone), &query, "security_groups", Paging::Instance)
            .await?;
        Ok(groups
            .into_iter()
            .filter(|g| g.project == project && tags.iter().all(|t| g.tags.iter().any(|h| h == t)))
            .collect())
    }

    /// The rules of a group.
    pub async fn security_group_rules(
        &self,
        zone: &Zone,
        id: &str,
    ) -> Result<Vec<SecurityGroupRule>, ScwError> {
        let path = format!("{}/{}/rules", path(zone), seg("security group id", id)?);
        self.list_all(&path, &[], "rules", Paging::Instance).await
    }

    /// Deletes a group; one still used by a server is refused by the API
    /// ("group is in use. you cannot delete it.").
    pub async fn delete_security_group(&self, zone: &Zone, id: &str) -> Result<(), ScwError> {
        let path = format!("{}/{}", path(zone), seg("security group id", id)?);
        self.delete(&path).await
    }
}
