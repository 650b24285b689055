//! A real browser for pages the product writes (the run's report page):
//! Debian's headless Chromium, driven through chromedriver's W3C WebDriver
//! HTTP API on loopback, emulating a phone's screen. Missing, it fails the
//! test saying how to install it, unless [`OPT_OUT`] is set.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Set, a missing Chromium skips the browser checks (loudly) instead.
pub const OPT_OUT: &str = "PLEX_BURST_NO_BROWSER";
/// CSS pixels: an iPhone 12 to 15's screen width.
pub const PHONE_WIDTH: u64 = 390;
const PHONE_HEIGHT: u64 = 844;

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    /// Chromium at a phone's size, or `None` when it is missing and
    /// [`OPT_OUT`] is set.
    pub fn phone() -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).is_file())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{} missing: the report page is rendered in headless Chromium \
                 (apt-get install --no-install-recommends chromium chromium-driver; \
                 scripts/lib/setup.sh's pb_setup installs them)",
                missing.join(" and ")
            );
            assert!(
                std::env::var_os(OPT_OUT).is_some(),
                "{why}, or set {OPT_OUT}=1 to skip the browser checks"
            );
            eprintln!("\x1b[1;31mSKIPPED the browser checks ({OPT_OUT} is set): {why}\x1b[0m");
            return None;
        }
        let port = crate::plexdouble::harness::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: reqwest::Client::new(),
            rt,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while browser.call("GET", "/status", None)["ready"] != true {
            assert!(Instant::now() < until, "chromedriver not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--disable-background-networking",
                    format!("--window-size={PHONE_WIDTH},{PHONE_HEIGHT}"),
                ],
                // A phone's viewport: the page's own viewport tag decides
                // its layout width, as on a phone.
                "mobileEmulation": { "deviceMetrics": {
                    "width": PHONE_WIDTH, "height": PHONE_HEIGHT, "pixelRatio": 3.0, "touch": true,
                } },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(browser)
    }

    /// Loads a file and waits for it (WebDriver's navigation waits for
    /// the load event).
    pub fn open(&self, file: &Path) {
        let url = format!("file://{}", file.canonicalize().unwrap().display());
        self.session_call("POST", "url", json!({ "url": url }));
    }

    /// What `script` (a function body) returns.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// The console's messages since the last call, as `LEVEL message`.
    pub fn console(&self) -> Vec<String> {
        let logs = self.session_call("POST", "se/log", json!({ "type": "browser" }));
        logs.as_array()
            .unwrap_or_else(|| panic!("no browser log: {logs}"))
            .iter()
            .map(|e| format!("{} {}", e["level"].as_str().unwrap_or("?"), e["message"]))
            .collect()
    }

    fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}/{path}", self.session);
        let out = self.call(method, &path, Some(body));
        if out.get("error").is_some() {
            panic!("WebDriver {path}: {out}");
        }
        out
    }

    /// A WebDriver command: its `value` (`Null` while the driver is not
    /// listening yet).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        self.rt.block_on(async {
            let Ok(response) = request.timeout(Duration::from_secs(60)).send().await else {
                return Value::Null;
            };
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["value"].clone()
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
