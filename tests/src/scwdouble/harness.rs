//! Starting the Scaleway double from tests: its own process on free
//! loopback ports (API and, when asked, metadata), waited for until it
//! answers, killed on drop. Also a small blocking HTTP client that can
//! send bodies and, for the metadata service's user data, connect from a
//! privileged source port (tests run as root).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ids::uuid_v4;
use crate::bins::workspace_bin;
pub use crate::http::{Reply, http, http_from, http_privileged};
pub use crate::plexdouble::harness::{free_port, wait_for};

/// How to start the double.
#[derive(Debug, Clone)]
pub struct ScwOptions {
    pub transition_delay: Duration,
    pub quota_servers: Option<u64>,
    pub quota_volumes_gb: Option<u64>,
    /// A shell command run each time a server becomes running.
    pub on_poweron: Option<String>,
    /// Whether to start the metadata service too.
    pub metadata: bool,
    /// Where it listens (default: a free port of `listen_host()`); the VM
    /// test gives Scaleway's own, 169.254.42.42:80.
    pub metadata_listen: Option<String>,
    /// More command-line arguments.
    pub args: Vec<String>,
    /// `(access key, secret key)` pairs handed out, in order, by
    /// `POST /api-keys` (a test world's S3 server accepts them too).
    pub api_key_pool: Vec<(String, String)>,
    /// An S3 front before this S3 server (`host:port`), with the Owner's
    /// access key: requests through `s3_front_url()` are refused what
    /// Scaleway's IAM and bucket policies would refuse.
    pub s3_front: Option<(String, String)>,
}

impl Default for ScwOptions {
    fn default() -> ScwOptions {
        ScwOptions {
            transition_delay: Duration::from_millis(200),
            quota_servers: None,
            quota_volumes_gb: None,
            on_poweron: None,
            metadata: false,
            metadata_listen: None,
            args: Vec::new(),
            api_key_pool: Vec::new(),
            s3_front: None,
        }
    }
}

pub struct ScwDouble {
    child: Child,
    stderr: tempfile::NamedTempFile,
    api_url: String,
    metadata_url: Option<String>,
    secret_key: String,
    organization_id: String,
    project_id: String,
    s3_front_url: Option<String>,
}

impl ScwDouble {
    /// Starts `scw-double api` with a fresh admin key, organization and
    /// project, and waits until it answers.
    pub fn start(opts: ScwOptions) -> ScwDouble {
        let host = crate::listen_host();
        let api = format!("{host}:{}", free_port());
        let metadata = opts.metadata.then(|| {
            opts.metadata_listen
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", free_port()))
        });
        let (secret_key, organization_id, project_id) = (uuid_v4(), uuid_v4(), uuid_v4());
        let mut args = vec![
            "api".to_string(),
            "--listen".into(),
            api.clone(),
            "--organization-id".into(),
            organization_id.clone(),
            "--project-id".into(),
            project_id.clone(),
            "--transition-delay".into(),
            format!("{}ms", opts.transition_delay.as_millis()),
        ];
        if let Some(addr) = &metadata {
            args.extend(["--metadata-listen".into(), addr.clone()]);
        }
        if let Some(n) = opts.quota_servers {
            args.extend(["--quota-servers".into(), n.to_string()]);
        }
        if let Some(n) = opts.quota_volumes_gb {
            args.extend(["--quota-volumes-gb".into(), n.to_string()]);
        }
        if let Some(command) = &opts.on_poweron {
            args.extend(["--on-poweron".into(), command.clone()]);
        }
        let front = opts.s3_front.as_ref().map(|(backend, owner)| {
            let front = format!("{host}:{}", free_port());
            args.extend([
                "--s3-front".into(),
                front.clone(),
                "--s3-backend".into(),
                backend.clone(),
                "--owner-access-key".into(),
                owner.clone(),
            ]);
            format!("http://{front}")
        });
        args.extend(opts.args.iter().cloned());

        let stderr = tempfile::NamedTempFile::new().expect("a temporary file");
        let mut command = Command::new(workspace_bin("scw-double"));
        // Only what the test sets: nothing inherited configures the double.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SCW_DOUBLE_") {
                command.env_remove(key);
            }
        }
        // The key goes through the environment, not argv (ps shows argv).
        command
            .args(&args)
            .env("SCW_DOUBLE_SECRET_KEY", &secret_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("the stderr file"));
        if !opts.api_key_pool.is_empty() {
            let pool: Vec<String> = opts
                .api_key_pool
                .iter()
                .map(|(a, s)| format!("{a}:{s}"))
                .collect();
            command.env("SCW_DOUBLE_API_KEY_POOL", pool.join(","));
        }
        let child = command.spawn().expect("scw-double starts");
        let double = ScwDouble {
            child,
            stderr,
            api_url: format!("http://{api}"),
            metadata_url: metadata.map(|m| format!("http://{m}")),
            secret_key,
            organization_id,
            project_id,
            s3_front_url: front,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let api_up = http("GET", &double.url("/__double/state"), &[], None)
                .is_ok_and(|r| r.status == 200);
            let metadata_up = double
                .metadata_url
                .as_ref()
                .is_none_or(|url| http("GET", &format!("{url}/conf"), &[], None).is_ok());
            if api_up && metadata_up {
                return double;
            }
            assert!(
                Instant::now() < deadline,
                "scw-double did not answer; stderr:\n{}",
                double.stderr()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The S3 front's endpoint, when started with one.
    pub fn s3_front_url(&self) -> Option<&str> {
        self.s3_front_url.as_deref()
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The metadata service's base URL, when started with `metadata`.
    pub fn metadata_url(&self) -> Option<&str> {
        self.metadata_url.as_deref()
    }

    /// The admin secret key (every permission).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn organization_id(&self) -> &str {
        &self.organization_id
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.api_url)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// An API call with the admin key; `body` is sent as JSON.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        self.api_as(&self.secret_key, method, path, body)
    }

    /// An API call with `secret` as `X-Auth-Token`.
    pub fn api_as(&self, secret: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let text = body.map(Value::to_string);
        let mut headers = vec![("X-Auth-Token", secret)];
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http(
            method,
            &self.url(path),
            &headers,
            text.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}; stderr:\n{}", self.stderr()))
    }

    /// Every call recorded so far, in order.
    pub fn calls(&self) -> Vec<Value> {
        let reply = self.api("GET", "/__double/calls", None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).expect("a JSON array")
    }

    /// The whole state, without secrets.
    pub fn state(&self) -> Value {
        let reply = self.api("GET", "/__double/state", None);
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// The next `times` calls matching get `status` (`method` "*" = any).
    pub fn fail(&self, method: &str, path_prefix: &str, status: u16, times: u32) {
        let method = (method != "*").then_some(method);
        let rule =
            json!({"method": method, "path_prefix": path_prefix, "status": status, "times": times});
        let reply = self.api("POST", "/__double/fail", Some(&rule));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The guest powers itself off (the server stays running and billed).
    pub fn guest_halt(&self, server_id: &str) {
        let reply = self.api(
            "POST",
            &format!("/__double/servers/{server_id}/guest-halt"),
            None,
        );
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The guest powers itself off and the server ends `stopped in place`.
    pub fn guest_halt_in_place(&self, server_id: &str) {
        let reply = self.api(
            "POST",
            &format!("/__double/servers/{server_id}/guest-halt"),
            Some(&serde_json::json!({"ends": "stopped in place"})),
        );
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The metadata service answers for this server from now on.
    pub fn bind_metadata(&self, server_id: &str) {
        let body = json!({ "server_id": server_id });
        let reply = self.api("POST", "/__double/metadata/bind", Some(&body));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// The metadata service answers calls from `address` for this server,
    /// and from now on no caller without an address bound.
    pub fn bind_metadata_address(&self, server_id: &str, address: &str) {
        let body = json!({ "server_id": server_id, "address": address });
        let reply = self.api("POST", "/__double/metadata/bind", Some(&body));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
}

impl Drop for ScwDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
