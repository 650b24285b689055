use super::*;

const EXAMPLE: &str = include_str!("../../bootstrap.example.toml");

fn env(var: &str) -> Option<String> {
    match var {
        "SCW_SECRET_KEY" => Some("33333333-3333-3333-3333-333333333333".into()),
        "AWS_ACCESS_KEY_ID" => Some("home-access".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("home-secret".into()),
        "PLEX_TOKEN" => Some("plex-account-token".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<BootstrapConfig, String> {
    BootstrapConfig::parse(text, &env)
}

fn params(cfg: &BootstrapConfig) -> RunParams {
    RunParams {
        run_id: "2026-11-24-0100".into(),
        plex_version: "1.41.3.9314-a0bfb8370".into(),
        reference: Some((
            "reference/plex-db.tar.zst".into(),
            "reference/plex-db.manifest.json".into(),
        )),
        zone: cfg.scaleway.zone.clone(),
        api_url: cfg.scaleway.api_url.clone(),
        metadata_url: None,
        keep_on_failure: false,
        dead_man_grace: cfg.scaleway.dead_man_grace,
        canary: None,
        cost: None,
    }
}

/// The runner's view of the run.toml `cfg` renders.
fn rendered(cfg: &BootstrapConfig) -> RunConfig {
    let text = cfg.render_run_toml(&params(cfg)).unwrap();
    RunConfig::from_toml_str(&text, &|var| {
        compose::run_secret_var(var).then(|| "x-placeholder".to_owned())
    })
    .unwrap()
}

fn dead_man_grace(run: &RunConfig) -> Duration {
    match run.termination() {
        runner::config::Termination::Scaleway(s) => s.dead_man_grace,
        runner::config::Termination::None => panic!("a run always terminates through Scaleway"),
    }
}

#[test]
fn the_example_is_valid_and_renders_a_run_config_the_runner_accepts() {
    let cfg = parse(EXAMPLE).unwrap();
    assert_eq!(cfg.scaleway.zone.as_str(), "fr-par-1");
    assert_eq!(cfg.bucket(), "plex-burst");
    assert_eq!(cfg.s3_connection().access_key, "home-access");
    assert_eq!(cfg.home.keep_backups, 3);
    assert!(cfg.plex_token().is_some());

    let text = cfg.render_run_toml(&params(&cfg)).unwrap();
    let run = RunConfig::from_toml_str(&text, &|var| {
        compose::run_secret_var(var).then(|| "x-placeholder".to_owned())
    })
    .unwrap();
    assert_eq!(run.run_id().to_string(), "2026-11-24-0100");
    assert_eq!(run.plex_version().to_string(), "1.41.3.9314-a0bfb8370");
    assert_eq!(run.work_dir(), Path::new(INSTANCE_WORK_DIR));
    // No secret of home reaches the run's config.
    for secret in ["home-access", "home-secret", "plex-account-token", "3333"] {
        assert!(!text.contains(secret), "{secret} leaked into run.toml");
    }
    // The only credential names: the media bucket's, the run's read-only
    // media key.
    let doc: toml::Table = toml::from_str(&text).unwrap();
    assert!(!doc["s3"].as_table().unwrap().contains_key("access_key_env"));
    assert_eq!(
        doc["media"]["s3"]["access_key_env"].as_str(),
        Some("MEDIA_AWS_ACCESS_KEY_ID"),
        "{text}"
    );
    assert_eq!(text.matches("access_key_env").count(), 1, "{text}");
}

#[test]
fn an_unknown_key_is_named_with_its_section() {
    let text = EXAMPLE.replace("keep_backups = 3", "keep_backup = 3");
    let err = parse(&text).unwrap_err();
    assert!(err.contains("home") && err.contains("keep_backup"), "{err}");
}

#[test]
fn run_keys_are_checked_by_the_runner_schema_and_named_under_run() {
    let text = EXAMPLE.replace("profile = \"large\"", "profile = \"huge\"");
    let err = parse(&text).unwrap_err();
    assert!(err.starts_with("run.media.profile"), "{err}");

    let text = EXAMPLE.replace("scan = true", "scna = true");
    let err = parse(&text).unwrap_err();
    assert!(err.contains("run.phases.scna"), "{err}");
}

#[test]
fn run_may_not_carry_credentials_or_what_bootstrap_sets() {
    let text = EXAMPLE.replace(
        "claim = true\nexclude",
        "claim = true\naccount_token = \"t\"\nexclude",
    );
    let err = parse(&text).unwrap_err();
    assert!(err.starts_with("run.plex.account_token"), "{err}");

    let text = EXAMPLE.replace("mode = \"delta\"", "mode = \"delta\"\nrun_id = \"x\"");
    let err = parse(&text).unwrap_err();
    assert!(err.starts_with("run.run_id: bootstrap sets this"), "{err}");
}

#[test]
fn missing_secrets_say_which_variable() {
    let err = BootstrapConfig::parse(EXAMPLE, &|v| {
        (v != "SCW_SECRET_KEY").then(|| env(v)).flatten()
    })
    .unwrap_err();
    assert_eq!(
        err,
        "scaleway.secret_key: not set (the environment variable SCW_SECRET_KEY is missing)"
    );

    let err = BootstrapConfig::parse(EXAMPLE, &|v| (v != "PLEX_TOKEN").then(|| env(v)).flatten())
        .unwrap_err();
    assert!(err.contains("PLEX_TOKEN"), "{err}");
}

#[test]
fn bad_values_are_one_line_naming_the_key() {
    for (from, to, key) in [
        ("zone = \"fr-par-1\"", "zone = \"mars-1\"", "scaleway.zone"),
        (
            "project_id = \"22222222-2222-2222-2222-222222222222\"",
            "project_id = \"default\"",
            "scaleway.project_id",
        ),
        (
            "root_volume_gb = 100",
            "root_volume_gb = 5",
            "scaleway.root_volume_gb",
        ),
        ("keep_backups = 3", "keep_backups = 0", "home.keep_backups"),
        ("control = \"docker\"", "control = \"ssh\"", "home.control"),
        (
            "bucket = \"plex-burst\"",
            "bucket = \"No_Bucket\"",
            "s3.bucket",
        ),
    ] {
        let err = parse(&EXAMPLE.replace(from, to)).unwrap_err();
        assert!(err.starts_with(key), "{to}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn a_command_control_needs_both_commands() {
    let text = EXAMPLE.replace(
        "control = \"docker\"",
        "control = \"command\"\nstop_command = [\"plexctl\", \"stop\"]",
    );
    let err = parse(&text).unwrap_err();
    assert!(err.starts_with("home.start_command"), "{err}");
}

#[test]
fn the_dead_man_grace_reaches_the_runs_termination() {
    let cfg = parse(EXAMPLE).unwrap();
    assert_eq!(cfg.scaleway.dead_man_grace, Duration::from_secs(3600));
    assert_eq!(dead_man_grace(&rendered(&cfg)), Duration::from_secs(3600));

    let text = EXAMPLE.replace("# dead_man_grace = \"1h\"", "dead_man_grace = \"90m\"");
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.scaleway.dead_man_grace, Duration::from_secs(90 * 60));
    let run_toml = cfg.render_run_toml(&params(&cfg)).unwrap();
    assert!(
        run_toml.contains("dead_man_grace = \"1h 30m\""),
        "{run_toml}"
    );
    assert_eq!(
        dead_man_grace(&rendered(&cfg)),
        Duration::from_secs(90 * 60)
    );

    // Checked by the runner's schema, named where the user wrote it.
    for bad in ["0s", "31days"] {
        let text = EXAMPLE.replace(
            "# dead_man_grace = \"1h\"",
            &format!("dead_man_grace = \"{bad}\""),
        );
        let err = parse(&text).unwrap_err();
        assert!(err.starts_with("scaleway.dead_man_grace: "), "{bad}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    let text = EXAMPLE.replace("# dead_man_grace = \"1h\"", "dead_man_grace = \"soon\"");
    let err = parse(&text).unwrap_err();
    assert!(err.starts_with("scaleway.dead_man_grace"), "{err}");
}

#[test]
fn rclone_sha256_is_required_and_the_url_and_plex_digest_are_checked() {
    let placeholder = format!("rclone_sha256 = \"{}\"\n", "0".repeat(64));
    let cfg = parse(EXAMPLE).unwrap();
    assert_eq!(cfg.image.rclone_url, None);
    assert_eq!(cfg.image.rclone_sha256, "0".repeat(64));
    assert_eq!(cfg.image.plex_image_digest, None);

    let err = parse(&EXAMPLE.replace(&placeholder, "")).unwrap_err();
    assert!(err.starts_with("image.rclone_sha256: required"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let text = EXAMPLE
        .replace(
            "# rclone_url = \"https://mirror.example.net/rclone-v1.68.2-linux-amd64.zip\"",
            "rclone_url = \"http://127.0.0.1:9000/artifacts/rclone-v1.68.2-linux-amd64.zip\"",
        )
        .replace(
            &placeholder,
            &format!("rclone_sha256 = \"{}\"\n", "AB".repeat(32)),
        )
        .replace("# plex_image_digest = ", "plex_image_digest = ");
    let cfg = parse(&text).unwrap();
    assert_eq!(
        cfg.image.rclone_url.as_deref(),
        Some("http://127.0.0.1:9000/artifacts/rclone-v1.68.2-linux-amd64.zip")
    );
    assert_eq!(cfg.image.rclone_sha256, "ab".repeat(32));
    assert_eq!(
        cfg.image.plex_image_digest,
        Some(format!("sha256:{}", "0".repeat(64)))
    );

    for (line, key) in [
        (
            "rclone_url = \"ftp://mirror/rclone.zip\"",
            "image.rclone_url",
        ),
        ("rclone_url = \"rclone.zip\"", "image.rclone_url"),
        ("rclone_url = \"https://m/it's.zip\"", "image.rclone_url"),
        ("rclone_sha256 = \"abc\"", "image.rclone_sha256"),
        (
            &format!("rclone_sha256 = \"{}\"", "g".repeat(64)),
            "image.rclone_sha256",
        ),
        (
            &format!("plex_image_digest = \"{}\"", "a".repeat(64)),
            "image.plex_image_digest",
        ),
        (
            &format!("plex_image_digest = \"sha256:{}\"", "a".repeat(63)),
            "image.plex_image_digest",
        ),
        (
            "plex_image_archive = \"pms.tar\"",
            "image.plex_image_archive",
        ),
        (
            &format!(
                "plex_image_archive = \"/srv/pms.tar\"\nplex_image_digest = \"sha256:{}\"",
                "a".repeat(64)
            ),
            "image.plex_image_archive",
        ),
    ] {
        let text = EXAMPLE.replace(&placeholder, "").replace(
            "[image]\n",
            &format!(
                "[image]\n{line}\n{}",
                if line.starts_with("rclone_sha256") {
                    String::new()
                } else {
                    placeholder.clone()
                }
            ),
        );
        let err = parse(&text).unwrap_err();
        assert!(err.starts_with(key), "{line}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn a_canary_renders_a_slice_the_runner_accepts_with_its_own_deadline() {
    let text = EXAMPLE.replace(
        "[run.phases]\nscan = true",
        "[run.phases]\ndeep_scan = true\nrefresh_metadata = true\nscan = true",
    );
    let text = format!(
        "{}\n[run.deadlines.scan_per_type]\nartist = \"30h\"\nphoto = \"20m\"\n",
        text.replace(
            "# folders = [\"/media/music/Miles Davis\"]",
            "folders = [\"/media/music/Miles Davis\"]"
        )
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.canary.commercial_type, "DEV1-S");
    assert_eq!(cfg.canary.deadline, Duration::from_secs(45 * 60));
    let mut p = params(&cfg);
    p.canary = Some(cfg.canary.clone());
    let toml = cfg.render_run_toml(&p).unwrap();
    let run = RunConfig::from_toml_str(&toml, &|var| {
        compose::run_secret_var(var).then(|| "x-placeholder".to_owned())
    })
    .unwrap();
    let canary = run.canary().expect("a canary table");
    assert_eq!(canary.sonic_tracks, 50);
    // Named as home paths, mapped to where Plex sees them.
    assert_eq!(canary.folders[0].as_str(), "/mnt/media/music/Miles Davis");
    assert_eq!(run.run_deadline(), Duration::from_secs(45 * 60));
    assert!(!run.phases().deep_scan && !run.phases().refresh_metadata);
    assert!(run.phases().scan && run.phases().sonic);
    // The 30 h budget is gone (the runner caps its default), 20 m stays.
    assert!(!toml.contains("30h"), "{toml}");
    assert!(toml.contains("photo = \"20m\""), "{toml}");
    // A real launch's config has no canary table.
    assert!(rendered(&cfg).canary().is_none());

    let bad = parse(&text.replace("sonic_tracks = 50", "sonic_tracks = 0")).unwrap_err();
    assert!(bad.contains("canary.sonic_tracks"), "{bad}");
    let bad = parse(&text.replace("deadline = \"45m\"", "deadline = \"3d\"")).unwrap_err();
    assert!(bad.contains("canary.deadline"), "{bad}");
}

#[test]
fn notify_targets_reach_the_run_by_variable_names_and_their_values_only_the_secrets_file() {
    let hook = "https://hooks.example/services/T00/B00/notify-secret-part";
    let text = format!(
        "{EXAMPLE}\n[[notify]]\nkind = \"slack\"\nurl_env = \"MY_SLACK\"\n\n[[notify]]\nkind = \"ntfy\"\nurl = \"https://ntfy.example/plex\"\nevents = [\"done\"]\n"
    );
    let with_hook = |var: &str| match var {
        "MY_SLACK" => Some(hook.to_string()),
        other => env(other),
    };
    let cfg = BootstrapConfig::parse(&text, &with_hook).unwrap();
    assert_eq!(cfg.notify().len(), 2);
    let run_toml = cfg.render_run_toml(&params(&cfg)).unwrap();
    assert!(
        run_toml.contains("url_env = \"PLEX_BURST_NOTIFY_0_URL\""),
        "{run_toml}"
    );
    assert!(
        run_toml.contains("url = \"https://ntfy.example/plex\""),
        "{run_toml}"
    );
    assert!(!run_toml.contains("notify-secret-part"), "{run_toml}");
    assert_eq!(
        cfg.notify_secrets()
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect::<Vec<_>>(),
        vec![("PLEX_BURST_NOTIFY_0_URL", hook)]
    );

    // The variable unset: named, and nothing starts.
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err,
        "notify[0].url_env: the environment variable MY_SLACK is not set"
    );
    // [[notify]] is bootstrap.toml's own, never [run]'s.
    let err =
        parse(&EXAMPLE.replace("mode = \"delta\"", "mode = \"delta\"\nnotify = []")).unwrap_err();
    assert!(err.starts_with("run.notify: bootstrap sets this"), "{err}");
}
