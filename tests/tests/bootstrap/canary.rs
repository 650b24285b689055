//! `launch --canary` and `fetch --canary` end to end: a canary that passes
//! proves the launch that follows; each failure a user's first real run
//! meets (a refused key, a failed bake, a media folder in a cold storage
//! class, a library root outside the mount, an account without Plex Pass)
//! gets a verdict line naming the step and what to change.

use std::process::Output;

use super::*;

impl World {
    /// `bootstrap ARGS` with the Scaleway secret replaced by `secret`.
    fn bootstrap_with_secret(&self, secret: &str, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .env("TEST_SCW_SECRET", secret)
            .output()
            .unwrap()
    }

    /// Launches a canary; its run id.
    fn launch_canary(&self) -> String {
        let out = self.ok(&["launch", "--canary"]);
        out.lines()
            .find_map(|l| l.strip_prefix("canary run "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no canary run id in {out}"))
            .to_owned()
    }

    /// `fetch --canary --wait RUN` of a canary that must fail: its stdout.
    fn judge_failed(&self, run_id: &str) -> String {
        let args = ["fetch", "--canary", "--wait", run_id];
        let out = self.bootstrap(&args);
        let stdout = text(&out.stdout);
        assert!(
            !out.status.success(),
            "canary {run_id} should fail:\n{stdout}\n{}",
            self.instance_logs()
        );
        stdout + &text(&out.stderr)
    }

    fn launch_json(&self, run_id: &str) -> Value {
        self.json(&format!("runs/{run_id}/launch.json"))
    }
}

/// The verdict line of `step` and the fix under it.
fn failed_step<'a>(verdict: &'a str, step: &str) -> (&'a str, &'a str) {
    let mut lines = verdict.lines();
    let line = lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("FAILED") && l.contains(step))
        .unwrap_or_else(|| panic!("no FAILED {step} line in:\n{verdict}"));
    let fix = lines.next().unwrap_or_default();
    assert!(fix.trim_start().starts_with("fix: "), "{verdict}");
    (line, fix)
}

#[test]
fn a_canary_proves_the_launch_and_each_failure_names_its_step_and_its_fix() {
    let w = World::new(WorldOptions {
        launches: 3,
        // Slow enough for the canary to stop Sonic after its 50 tracks.
        sonic_rate: 20,
        ..WorldOptions::default()
    });
    w.ok(&["snapshot"]);

    // A refused key: nothing is created, the verdict says which key.
    let wrong = w.bootstrap_with_secret(
        "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f",
        &["launch", "--canary"],
    );
    assert!(!wrong.status.success());
    let (line, fix) = failed_step(std::str::from_utf8(&wrong.stdout).unwrap(), "checks");
    assert!(line.contains("credentials do not work"), "{line}");
    assert!(fix.contains("SCW_SECRET_KEY"), "{fix}");

    // A failed bake: the builder's step is named.
    std::fs::write(w.dir.path().join("instances/fail-build"), "plex").unwrap();
    let out = w.bootstrap(&["launch", "--canary"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    let (line, fix) = failed_step(&stdout, "image");
    assert!(
        line.contains("provisioning failed at step \"plex\""),
        "{line}"
    );
    assert!(fix.contains("bootstrap image build"), "{fix}");
    std::fs::remove_file(w.dir.path().join("instances/fail-build")).unwrap();
    assert!(
        w.state()["servers"].as_array().unwrap().is_empty(),
        "nothing left"
    );

    // Before any canary, a real launch warns (and would go on).
    let plan = w.ok(&["launch", "--dry-run"]);
    assert!(
        plan.contains("WARNING: no canary has proved this image recipe"),
        "{plan}"
    );

    // The canary that passes: the cheap type, every phase on a slice.
    let home_db = std::fs::read(w.home_db()).unwrap();
    let run_id = w.launch_canary();
    let launch = w.launch_json(&run_id);
    assert_eq!(launch["commercial_type"], "DEV1-S");
    assert!(launch["canary"].is_object(), "{launch}");
    let out = w.ok(&["fetch", "--canary", "--wait", &run_id]);
    assert!(out.contains(&format!("canary {run_id}: PASSED")), "{out}");
    for step in [
        "boot", "pull", "verify", "remap", "scan", "sonic", "package", "upload", "ended", "logs",
        "home",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(step)),
            "no ok line for {step}:\n{out}"
        );
    }
    // One folder per library, and Sonic on the canary's few tracks.
    assert!(out.contains("2 folder(s) scanned"), "{out}");
    assert!(out.contains(" tracks analysed at "), "{out}");
    assert!(
        out.contains("estimate the real run's Sonic on DEV1-S: 210 tracks"),
        "{out}"
    );
    assert!(out.contains("the home Plex untouched"), "{out}");
    assert_eq!(
        std::fs::read(w.home_db()).unwrap(),
        home_db,
        "the home DB is never written by a canary"
    );
    // Stopped once the 50 tracks were seen (the double may run past them
    // by a poll), far from the 210 left.
    let status = w.json(&format!("runs/{run_id}/status.json"));
    let analysed = status["sonic"]["analysed"].as_u64().unwrap();
    assert!((90 + 50..300).contains(&analysed), "{status}");
    let launch = w.launch_json(&run_id);
    assert_eq!(launch["state"], "fetched");
    assert_eq!(launch["canary"]["verdict"]["passed"], true, "{launch}");
    assert!(
        !w.state()["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == format!("plex-burst-{run_id}")),
        "the canary's server is gone"
    );
    // Its result is never installed, and its verdict stays readable.
    let refused = w.fails(&["fetch", &run_id]);
    assert!(refused.contains("is a canary"), "{refused}");
    let status = w.ok(&["status", &run_id]);
    assert!(
        status.contains(&format!("canary {run_id}: PASSED")),
        "{status}"
    );

    // The real launch now knows it is proved.
    let plan = w.ok(&["launch", "--dry-run"]);
    assert!(
        plan.contains(&format!("canary     run {run_id} passed at")),
        "{plan}"
    );

    // Media in a cold storage class: the scan's read check names the file.
    let music = w.s3.data_dir().join(MEDIA).join("Music");
    let mut artists: Vec<String> = std::fs::read_dir(&music)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    artists.sort();
    let cold = w.scw.api(
        "POST",
        "/__double/s3/cold",
        Some(&json!({"bucket": MEDIA, "prefix": format!("Music/{}/", artists[0])})),
    );
    assert_eq!(cold.status, 204, "{}", cold.body);
    let cold_run = w.launch_canary();
    let verdict = w.judge_failed(&cold_run);
    let (line, fix) = failed_step(&verdict, "scan");
    assert!(line.contains(&format!("Music/{}", artists[0])), "{line}");
    assert!(fix.contains("cold storage class"), "{fix}");
    assert!(
        verdict.contains("-       package  : not reached"),
        "{verdict}"
    );
    // A canary is over at its first failure: the instance ended itself.
    assert!(
        verdict.contains("ok      ended    : the instance ended itself"),
        "{verdict}"
    );
    assert_eq!(
        w.launch_json(&cold_run)["canary"]["verdict"]["passed"],
        false
    );

    // A library root outside the mount: the path mapping is the fix.
    let config = std::fs::read_to_string(w.config_path()).unwrap();
    let unmapped = config.replace(
        "[[run.path_mapping]]\nfrom = \"/data/media\"",
        "[[run.path_mapping]]\nfrom = \"/data/elsewhere\"",
    );
    assert_ne!(config, unmapped);
    std::fs::write(w.config_path(), unmapped).unwrap();
    let out = w.bootstrap(&["launch", "--canary"]);
    let stdout = text(&out.stdout);
    let verdict = match out.status.success() {
        // Found on the instance.
        true => w.judge_failed(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("canary run "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap(),
        ),
        // Found at home, before anything was created.
        false => stdout,
    };
    let (line, fix) = failed_step(&verdict, "");
    assert!(line.contains("outside the mount"), "{line}");
    assert!(fix.contains("[[run.path_mapping]]"), "{fix}");
}

#[test]
fn a_canary_without_plex_pass_fails_at_sonic_and_says_so() {
    let w = World::new(WorldOptions {
        plextv_args: &["--plex-pass", "false"],
        ..WorldOptions::default()
    });
    w.ok(&["snapshot"]);
    let run_id = w.launch_canary();
    let verdict = w.judge_failed(&run_id);
    let (line, fix) = failed_step(&verdict, "sonic");
    assert!(line.contains("no active Plex Pass"), "{line}");
    assert!(fix.contains("phases.sonic = false"), "{fix}");
    // Every step before it passed, and the instance ended itself.
    for step in ["pull", "scan", "ended", "logs"] {
        assert!(
            verdict
                .lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(step)),
            "no ok line for {step}:\n{verdict}"
        );
    }
}
