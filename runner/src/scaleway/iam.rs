//! IAM (global, `/iam/v1alpha1`): the application, policy and per-run API
//! keys that give a run's instance just what it needs.

use std::time::SystemTime;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::{Client, Paging, seg};
use super::error::ScwError;
use crate::secret::Secret;

const BASE: &str = "/iam/v1alpha1";

/// An IAM application (a non-human principal that owns API keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Application {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub organization_id: String,
}

/// An IAM policy attached to an application.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub application_id: Option<String>,
    #[serde(default)]
    pub organization_id: String,
}

/// An API key. `secret_key` is only returned by `create_api_key`, once;
/// `Debug` masks it (it is a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiKey {
    pub access_key: String,
    #[serde(default)]
    pub secret_key: Option<Secret>,
    #[serde(default)]
    pub application_id: Option<String>,
    /// Set instead of `application_id` for a user's own key.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl Client {
    /// The organization's application named exactly `name`, if any.
    pub async fn find_application(
        &self,
        name: &str,
        organization_id: &str,
    ) -> Result<Option<Application>, ScwError> {
        let apps = self.applications_named(name, organization_id).await?;
        Ok(apps.into_iter().find(|a| a.name == name))
    }

    /// The applications of the organization whose name starts with
    /// `prefix`.
    pub async fn applications_named(
        &self,
        prefix: &str,
        organization_id: &str,
    ) -> Result<Vec<Application>, ScwError> {
        let query = [
            ("name", prefix.to_string()),
            ("organization_id", organization_id.to_string()),
        ];
        let apps: Vec<Application> = self
            .list_all(
                &format!("{BASE}/applications"),
                &query,
                "applications",
                Paging::Standard,
            )
            .await?;
        Ok(apps
            .into_iter()
            .filter(|a| a.name.starts_with(prefix))
            .collect())
    }

    /// Deletes an application; already gone is success.
    pub async fn delete_application(&self, id: &str) -> Result<(), ScwError> {
        let path = format!("{BASE}/applications/{}", seg("application id", id)?);
        self.delete(&path).await
    }

    /// Creates an application.
    pub async fn create_application(
        &self,
        name: &str,
        organization_id: &str,
        description: &str,
        tags: &[&str],
    ) -> Result<Application, ScwError> {
        let body = json!({
            "name": name,
            "organization_id": organization_id,
            "description": description,
            "tags": tags,
        });
        self.json_call(Method::POST, &format!("{BASE}/applications"), &body)
            .await
    }

    /// The first policy attached to `application_id`, if any. The API
    /// requires `organization_id` (both SDKs always send it).
    pub async fn find_policy(
        &self,
        application_id: &str,
        organization_id: &str,
    ) -> Result<Option<Policy>, ScwError> {
        let query = [
            ("organization_id", organization_id.to_string()),
            ("application_ids", application_id.to_string()),
        ];
        let policies: Vec<Policy> = self
            .list_all(
                &format!("{BASE}/policies"),
                &query,
                "policies",
                Paging::Standard,
            )
            .await?;
        Ok(policies
            .into_iter()
            .find(|p| p.application_id.as_deref() == Some(application_id)))
    }

    /// Creates a policy giving `application_id` the permission sets on the
    /// projects, in one rule.
    pub async fn create_policy(
        &self,
        name: &str,
        organization_id: &str,
        application_id: &str,
        permission_sets: &[&str],
        project_ids: &[&str],
    ) -> Result<Policy, ScwError> {
        let body = json!({
            "name": name,
            "organization_id": organization_id,
            "application_id": application_id,
            "rules": [{
                "permission_set_names": permission_sets,
                "project_ids": project_ids,
            }],
        });
        self.json_call(Method::POST, &format!("{BASE}/policies"), &body)
            .await
    }

    /// Deletes a policy; already gone is success.
    pub async fn delete_policy(&self, id: &str) -> Result<(), ScwError> {
        let path = format!("{BASE}/policies/{}", seg("policy id", id)?);
        self.delete(&path).await
    }

    /// Creates an API key for the application, expiring at `expires_at`
    /// (sent as RFC 3339 UTC); its `secret_key` is only given now.
    pub async fn create_api_key(
        &self,
        application_id: &str,
        expires_at: SystemTime,
        default_project_id: &str,
        description: &str,
    ) -> Result<ApiKey, ScwError> {
        let body = json!({
            "application_id": application_id,
            "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
            "default_project_id": default_project_id,
            "description": description,
        });
        self.json_call(Method::POST, &format!("{BASE}/api-keys"), &body)
            .await
    }

    /// The application's API keys (without their secrets). Asked by
    /// bearer as the SDKs do (ListAPIKeysRequest's `application_id` is
    /// deprecated and no query parameter), and checked here too: a key of
    /// another bearer (a user's) is never among them.
    pub async fn list_api_keys(&self, application_id: &str) -> Result<Vec<ApiKey>, ScwError> {
        let query = [
            ("bearer_id", application_id.to_string()),
            ("bearer_type", "application".to_string()),
        ];
        let keys: Vec<ApiKey> = self
            .list_all(
                &format!("{BASE}/api-keys"),
                &query,
                "api_keys",
                Paging::Standard,
            )
            .await?;
        Ok(keys
            .into_iter()
            .filter(|k| k.application_id.as_deref() == Some(application_id))
            .collect())
    }

    /// The API key `access_key` (without its secret): whose it is
    /// (`application_id` or `user_id`), `None` when unknown.
    pub async fn get_api_key(&self, access_key: &str) -> Result<Option<ApiKey>, ScwError> {
        let path = format!("{BASE}/api-keys/{}", seg("access key", access_key)?);
        self.get_opt(&path).await
    }

    /// Deletes an API key; already gone is success.
    pub async fn delete_api_key(&self, access_key: &str) -> Result<(), ScwError> {
        let path = format!("{BASE}/api-keys/{}", seg("access key", access_key)?);
        self.delete(&path).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::mock::{Mock, Reply};
    use super::*;

    #[tokio::test]
    async fn application_policy_and_key_shapes() {
        let mock = Mock::start(vec![
            Reply::json(
                200,
                r#"{"applications":[{"id":"a0","name":"plex-burst-runs-old"},{"id":"a1","name":"plex-burst-runs"}],"total_count":2}"#,
            ),
            Reply::json(200, r#"{"id":"a2","name":"n","organization_id":"org"}"#),
            Reply::json(200, r#"{"policies":[{"id":"p1","name":"x","application_id":"a1"}],"total_count":1}"#),
            Reply::json(200, r#"{"id":"p2","name":"pol","application_id":"a1"}"#),
            Reply::json(
                200,
                r#"{"access_key":"SCWACCESS","secret_key":"11111111-SECRET","application_id":"a1",
                    "expires_at":"2025-09-01T12:00:00Z","description":"run 7"}"#,
            ),
            Reply::json(404, r#"{"type":"not_found","message":"no such key"}"#),
        ])
        .await;
        let c = Client::new(&mock.url, Secret::new("k")).unwrap();
        let app = c
            .find_application("plex-burst-runs", "org")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(app.id, "a1");
        c.create_application("n", "org", "runs", &["plex-burst"])
            .await
            .unwrap();
        assert_eq!(c.find_policy("a1", "org").await.unwrap().unwrap().id, "p1");
        c.create_policy(
            "pol",
            "org",
            "a1",
            &["InstancesFullAccess", "BlockStorageFullAccess"],
            &["proj"],
        )
        .await
        .unwrap();
        let expires = UNIX_EPOCH + Duration::from_secs(1_756_728_000);
        let key = c
            .create_api_key("a1", expires, "proj", "run 7")
            .await
            .unwrap();
        assert_eq!(key.secret_key.as_ref().unwrap().expose(), "11111111-SECRET");
        assert!(!format!("{key:?}").contains("11111111-SECRET"));
        c.delete_api_key("SCWACCESS").await.unwrap();

        let seen = mock.seen();
        assert_eq!(seen[0].path, "/iam/v1alpha1/applications");
        assert_eq!(
            seen[0].query,
            "name=plex-burst-runs&organization_id=org&page_size=100&page=1"
        );
        assert_eq!(
            seen[1].json(),
            serde_json::json!({"name":"n","organization_id":"org","description":"runs","tags":["plex-burst"]})
        );
        assert_eq!(
            seen[2].query,
            "organization_id=org&application_ids=a1&page_size=100&page=1"
        );
        assert_eq!(
            seen[3].json(),
            serde_json::json!({"name":"pol","organization_id":"org","application_id":"a1",
                "rules":[{"permission_set_names":["InstancesFullAccess","BlockStorageFullAccess"],
                          "project_ids":["proj"]}]})
        );
        assert_eq!(
            seen[4].json(),
            serde_json::json!({"application_id":"a1","expires_at":"2025-09-01T12:00:00Z",
                "default_project_id":"proj","description":"run 7"})
        );
        assert_eq!(
            (seen[5].method.as_str(), seen[5].path.as_str()),
            ("DELETE", "/iam/v1alpha1/api-keys/SCWACCESS")
        );
    }

    #[tokio::test]
    async fn list_keys_filters_by_application() {
        let mock = Mock::start(vec![Reply::json(
            200,
            r#"{"api_keys":[{"access_key":"K1","application_id":"a1"},{"access_key":"K2","application_id":"zz"},{"access_key":"K3","user_id":"u1"}],"total_count":3}"#,
        )])
        .await;
        let c = Client::new(&mock.url, Secret::new("k")).unwrap();
        let keys = c.list_api_keys("a1").await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].access_key, "K1");
        assert!(keys[0].secret_key.is_none());
        assert_eq!(
            mock.seen()[0].query,
            "bearer_id=a1&bearer_type=application&page_size=100&page=1"
        );
    }
}
