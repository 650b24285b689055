//! run.toml end to end: real files, the public API only.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use runner::config::{
    ConfigError, CredentialSource, LibraryFilter, LibraryType, Mode, PlexRuntime, Problem,
    RunConfig, Termination,
};
use toml::{Table, Value};

const EXAMPLE: &str = include_str!("../run.example.toml");

/// The smallest valid delta config; credentials from the environment.
const MINIMAL: &str = r#"
run_id = "r1"
work_dir = "/srv/burst"
mode = "delta"

[s3]
region = "fr-par"
bucket = "bucket-a"

[reference]
archive_key = "reference/db.tar.zst"

[media]
remote = "media-bucket"
mount_point = "/mnt/media"

[plex]
version = "1.41.3.9314-a0bfb8370"

[termination]
provider = "none"
"#;

const S3_ACCESS: &str = "AKIAEXAMPLEACCESS";
const S3_SECRET: &str = "s3-secret-value-Zq81";
const PLEX_TOKEN: &str = "plex-token-value-Qx27";
const SCW_SECRET: &str = "scw-secret-value-Wy93";

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn full_env() -> impl Fn(&str) -> Option<String> {
    env(&[
        ("AWS_ACCESS_KEY_ID", S3_ACCESS),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("PLEX_TOKEN", PLEX_TOKEN),
        ("SCW_SECRET_KEY", SCW_SECRET),
    ])
}

fn load(text: &str) -> Result<RunConfig, ConfigError> {
    RunConfig::from_toml_str(text, &full_env())
}

/// The error for `text`, checked to be one line that starts with the file.
fn error(text: &str) -> ConfigError {
    let err = load(text).expect_err("the config should be refused");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.starts_with("run.toml: "), "{msg}");
    err
}

/// Asserts that `text` fails on `key` with a message containing `fragment`.
fn assert_refused(text: &str, key: &str, fragment: &str) {
    let err = error(text);
    let msg = err.to_string();
    assert_eq!(err.key(), Some(key), "{msg}");
    assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
}

fn edit(text: &str, change: impl FnOnce(&mut Table)) -> String {
    let mut table: Table = text.parse().expect("test TOML parses");
    change(&mut table);
    toml::to_string(&table).expect("test TOML serializes")
}

fn table<'a>(root: &'a mut Table, path: &str) -> &'a mut Table {
    path.split('.').fold(root, |t, name| {
        t.entry(name)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("a table")
    })
}

fn set(text: &str, path: &str, value: impl Into<Value>) -> String {
    let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
    let value = value.into();
    edit(text, |t| {
        let t = if parent.is_empty() {
            t
        } else {
            table(t, parent)
        };
        t.insert(key.to_string(), value);
    })
}

fn remove(text: &str, path: &str) -> String {
    let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
    edit(text, |t| {
        let t = if parent.is_empty() {
            t
        } else {
            table(t, parent)
        };
        assert!(t.remove(key).is_some(), "{path} is not in the test config");
    })
}

fn scratch() -> String {
    let text = remove(MINIMAL, "reference");
    let text = set(&text, "mode", "scratch");
    format!(
        "{text}\n[[library]]\ntitle = \"Movies\"\ntype = \"movie\"\nlanguage = \"fr-FR\"\nlocations = [\"/mnt/media/movies\"]\n"
    )
}

#[test]
fn the_example_loads_and_means_what_it_says() {
    let cfg = load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.run_id().to_string(), "2025-06-01-delta");
    assert_eq!(
        cfg.run_key("status.json"),
        "runs/2025-06-01-delta/status.json"
    );
    let Mode::Delta { reference } = cfg.mode() else {
        panic!("delta expected")
    };
    assert_eq!(&*reference.archive_key, "reference/plex-db.tar.zst");
    assert_eq!(cfg.s3().connection.access_key.expose(), S3_ACCESS);
    assert_eq!(cfg.s3().connection.secret_key.expose(), S3_SECRET);
    assert_eq!(
        cfg.plex()
            .claim
            .as_ref()
            .and_then(|c| c.account_token.as_ref())
            .map(|t| t.expose()),
        Some(PLEX_TOKEN)
    );
    let Termination::Scaleway(scw) = cfg.termination() else {
        panic!("scaleway expected")
    };
    assert_eq!(scw.secret_key.expose(), SCW_SECRET);
    assert_eq!(scw.zone.as_str(), "fr-par-1");
    assert_eq!(
        cfg.plex().libraries,
        LibraryFilter::Exclude(vec!["Photos".into()])
    );
    assert!(!cfg.plex().libraries.selects("Photos"));
    assert_eq!(cfg.path_mappings().len(), 2);
    assert_eq!(
        cfg.deadlines().scan_for(LibraryType::Photo),
        Duration::from_secs(48 * 3600)
    );
    assert_eq!(cfg.media().mount_point.as_str(), "/mnt/media");
}

#[test]
fn the_example_loads_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, EXAMPLE).unwrap();
    let name = path.display().to_string();
    // The process environment lacks the example's variables: the error
    // names the file and the variable.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let msg = RunConfig::load(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{name}: s3.access_key_env: ")),
            "{msg}"
        );
        assert!(msg.contains("AWS_ACCESS_KEY_ID is not set"), "{msg}");
    }
    let missing = dir.path().join("absent.toml");
    let msg = RunConfig::load(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: cannot read the file", missing.display())),
        "{msg}"
    );
}

#[test]
fn defaults_are_filled_in() {
    let cfg = load(MINIMAL).unwrap();
    assert_eq!(cfg.run_key("DONE"), "runs/r1/DONE");
    assert_eq!(&*cfg.s3().reference_prefix, "reference/");
    assert!(!cfg.s3().connection.path_style);
    assert!(cfg.s3().connection.endpoint.is_none());
    assert_eq!(
        cfg.s3().connection.credential_source,
        CredentialSource::Env {
            vars: vec!["AWS_ACCESS_KEY_ID".into(), "AWS_SECRET_ACCESS_KEY".into()]
        }
    );
    assert!(!cfg.media().own_connection);
    assert_eq!(cfg.media().connection.secret_key.expose(), S3_SECRET);
    assert_eq!(cfg.media().anchor_samples, 8);
    assert!(
        matches!(&cfg.plex().runtime, PlexRuntime::Docker { image, .. } if &**image == "plexinc/pms-docker")
    );
    assert!(cfg.plex().claim.is_none());
    assert_eq!(
        cfg.plex_app_support_dir(),
        Path::new("/srv/burst/plex/Library/Application Support/Plex Media Server")
    );
    assert_eq!(cfg.run_deadline(), Duration::from_secs(72 * 3600));
    let p = cfg.phases();
    assert!(p.scan && !p.deep_scan && !p.analysis && p.sonic);
    assert!(matches!(cfg.termination(), Termination::None));
    assert_eq!(cfg.guard().max_lost_items, 10);
}

#[test]
fn default_phase_deadlines_are_capped_by_the_run_but_explicit_ones_are_checked() {
    let short = set(MINIMAL, "deadlines.run", "6h");
    let cfg = load(&short).unwrap();
    assert_eq!(cfg.deadlines().sonic, Duration::from_secs(6 * 3600));
    assert_eq!(cfg.deadlines().pull, Duration::from_secs(4 * 3600));
    assert_refused(
        &set(&short, "deadlines.sonic", "7h"),
        "deadlines.sonic",
        "exceeds deadlines.run",
    );
}

#[test]
fn the_metadata_refresh_is_its_own_phase_option_with_its_own_budget() {
    let cfg = load(MINIMAL).unwrap();
    assert!(!cfg.phases().refresh_metadata && !cfg.phases().deep_scan);
    assert_eq!(
        cfg.deadlines().refresh_metadata,
        Duration::from_secs(24 * 3600)
    );
    let on = set(MINIMAL, "phases.refresh_metadata", true);
    let on = set(&on, "deadlines.refresh_metadata", "5h");
    let cfg = load(&on).unwrap();
    assert!(cfg.phases().refresh_metadata && !cfg.phases().deep_scan);
    assert_eq!(
        cfg.deadlines().refresh_metadata,
        Duration::from_secs(5 * 3600)
    );
    assert_refused(
        &set(&on, "phases.scan", false),
        "phases.refresh_metadata",
        "scan = true",
    );
    assert_refused(
        &set(
            &set(MINIMAL, "deadlines.run", "6h"),
            "deadlines.refresh_metadata",
            "7h",
        ),
        "deadlines.refresh_metadata",
        "exceeds deadlines.run",
    );
    // The Sonic-only refresh it replaces is gone.
    let err = error(&set(MINIMAL, "phases.sonic_refresh_metadata", true));
    assert!(err.to_string().contains("sonic_refresh_metadata"), "{err}");
}

#[test]
fn a_dotted_bucket_gets_path_style_and_refuses_virtual_hosting() {
    let dotted = set(MINIMAL, "s3.bucket", "my.bucket");
    assert!(load(&dotted).unwrap().s3().connection.path_style);
    assert_refused(
        &set(&dotted, "s3.path_style", false),
        "s3.path_style",
        "has dots",
    );
    assert_refused(
        &set(MINIMAL, "media.remote", "media.bucket/x"),
        "media.remote",
        "path_style",
    );
}

#[test]
fn malformed_toml_names_line_and_column() {
    let text = format!("{MINIMAL}\n[guard]\nmax_lost_items = = 3\n");
    let err = error(&text);
    let line = text
        .lines()
        .position(|l| l.starts_with("max_lost_items"))
        .unwrap()
        + 1;
    match err.problem() {
        Problem::Syntax {
            line: l, column, ..
        } => {
            assert_eq!(*l, line);
            assert_eq!(*column, "max_lost_items = ".len() + 1);
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("line {line}, column")),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    let scratch_with_mapping = format!(
        "{}\n[[path_mapping]]\nfrom = \"/a\"\nto = \"/mnt/media/a\"\n",
        scratch()
    );
    let tables = [
        "",
        "s3",
        "reference",
        "media",
        "media.s3",
        "plex",
        "phases",
        "deadlines",
        "deadlines.scan_per_type",
        "guard",
        "termination",
    ];
    for t in tables {
        let key = if t.is_empty() {
            "bogus_key".to_string()
        } else {
            format!("{t}.bogus_key")
        };
        let text = if t == "media.s3" {
            let text = set(MINIMAL, "media.s3.region", "fr-par");
            set(&text, &key, 1)
        } else {
            set(MINIMAL, &key, 1)
        };
        let err = error(&text);
        assert!(
            matches!(err.problem(), Problem::UnknownKey { .. }),
            "{t}: {err}"
        );
        assert_eq!(err.key(), Some(key.as_str()), "{err}");
    }
    for (array, field) in [("library", "title"), ("path_mapping", "from")] {
        let text = scratch_with_mapping.replacen(
            &format!("{field} = "),
            &format!("bogus_key = 1\n{field} = "),
            1,
        );
        let err = error(&text);
        assert_eq!(
            err.key(),
            Some(format!("{array}[0].bogus_key").as_str()),
            "{err}"
        );
    }
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let text = set(MINIMAL, "s3.endpont", "https://s3.fr-par.scw.cloud");
    assert_eq!(
        error(&text).to_string(),
        "run.toml: unknown key \"s3.endpont\" (did you mean \"endpoint\"?)"
    );
}

#[test]
fn missing_required_keys_are_named() {
    for key in [
        "run_id",
        "work_dir",
        "mode",
        "s3.region",
        "s3.bucket",
        "reference.archive_key",
        "media.remote",
        "media.mount_point",
        "plex.version",
        "termination.provider",
        "s3",
        "media",
        "plex",
        "termination",
    ] {
        let err = error(&remove(MINIMAL, key));
        assert!(
            matches!(err.problem(), Problem::Missing { .. }),
            "{key}: {err}"
        );
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(
            err.to_string().ends_with("required key is missing"),
            "{err}"
        );
    }
    let scw = set(MINIMAL, "termination.provider", "scaleway");
    assert_refused(&scw, "termination.zone", "required key is missing");
    let lib = scratch().replace("language = \"fr-FR\"\n", "");
    assert_refused(&lib, "library[0].language", "required key is missing");
}

#[test]
fn invalid_values_name_key_and_problem() {
    let cases: [(&str, Value, &str); 24] = [
        ("run_id", "Run_1".into(), "not a valid run id"),
        ("work_dir", "relative/dir".into(), "must be absolute"),
        (
            "mode",
            "incremental".into(),
            "\"incremental\" is not one of \"delta\", \"scratch\"",
        ),
        (
            "s3.endpoint",
            "s3.fr-par.scw.cloud".into(),
            "not a valid base URL",
        ),
        ("s3.region", "FR PAR".into(), "not a valid region"),
        ("s3.runs_prefix", "/runs".into(), "not a valid key prefix"),
        (
            "reference.archive_key",
            "reference/".into(),
            "names a folder",
        ),
        (
            "reference.manifest_key",
            "a//b".into(),
            "not a valid object key",
        ),
        (
            "media.mount_point",
            "/mnt/../media".into(),
            "'..' is not allowed",
        ),
        (
            "media.profile",
            "huge".into(),
            "is not one of \"small\", \"balanced\", \"large\"",
        ),
        ("media.anchor_samples", 0.into(), "not in 1..=1000"),
        ("plex.version", "1.41.3".into(), "not a Plex version"),
        ("plex.runtime", "podman".into(), "is not one of"),
        (
            "plex.image",
            "plexinc/pms-docker:latest".into(),
            "without a tag",
        ),
        ("plex.app_support_dir", "Plex".into(), "must be absolute"),
        ("deadlines.run", "0s".into(), "too short"),
        ("deadlines.run", "90days".into(), "longer than the limit"),
        ("deadlines.pull", "soon".into(), "deadlines.pull"),
        ("deadlines.stall_interval", "1s".into(), "at least 10s"),
        ("deadlines.stall_checks", 0.into(), "not in 1..=1000"),
        ("deadlines.watchdog", "20s".into(), "at least 30s"),
        (
            "cost.eur_per_hour",
            (-0.5).into(),
            "-0.5 is not an amount in EUR",
        ),
        ("guard.max_lost_fraction", 1.5.into(), "not a fraction"),
        ("guard.max_lost_items", "ten".into(), "invalid type"),
    ];
    for (key, value, fragment) in cases {
        assert_refused(&set(MINIMAL, key, value), key, fragment);
    }
    assert_refused(
        &set(MINIMAL, "s3.bucket", "My_Bucket"),
        "s3.bucket",
        "\"My_Bucket\" is not a valid bucket name (lowercase letters, digits, dots and hyphens, 3-63 chars)",
    );
    // The watchdog must hear several polls within its interval.
    assert_refused(
        &set(
            &set(MINIMAL, "deadlines.poll_interval", "1m"),
            "deadlines.watchdog",
            "2m",
        ),
        "deadlines.watchdog",
        "3 x deadlines.poll_interval (1m)",
    );
    assert_refused(
        &set(MINIMAL, "media.remote", "media//x"),
        "media.remote",
        "bucket[/path]",
    );
    let scw = set(MINIMAL, "termination.provider", "scaleway");
    assert_refused(
        &set(&scw, "termination.zone", "mars-1"),
        "termination.zone",
        "unknown Scaleway zone \"mars-1\"",
    );
    let scw = set(&scw, "termination.zone", "fr-par-1");
    assert_refused(
        &set(&scw, "termination.api_url", "ftp://x"),
        "termination.api_url",
        "http or https",
    );
    assert_refused(
        &set(MINIMAL, "termination.zone", "fr-par-1"),
        "termination.zone",
        "provider = \"scaleway\"",
    );
    let double = set(MINIMAL, "plex.runtime", "double");
    for (key, named) in [
        ("plex.image", "plex.image"),
        ("plex.container_env.LANG", "plex.container_env"),
    ] {
        assert_refused(&set(&double, key, "x"), named, "runtime = \"docker\"");
    }
    assert_refused(
        &set(MINIMAL, "media.mount_point", "/media"),
        "media.mount_point",
        "parent folder other than",
    );
    // Plex's Debian package was never installed by the image recipe.
    assert_refused(
        &set(MINIMAL, "plex.runtime", "native"),
        "plex.runtime",
        "native",
    );
    for (key, why) in [
        ("plex.container_env.PLEX_UID", "set by the runner"),
        ("plex.container_env.ALLOWED_NETWORKS", "set by the runner"),
        ("plex.container_env.1X", "not an environment variable name"),
    ] {
        assert_refused(&set(MINIMAL, key, "0"), key, why);
    }
    assert_refused(
        &set(MINIMAL, "plex.container_env.LANG", "a\nb"),
        "plex.container_env.LANG",
        "one line",
    );
    let cfg = load(&set(
        MINIMAL,
        "plex.container_env.PLEX_MEDIA_SERVER_MAX_PLUGIN_PROCS",
        "4",
    ))
    .unwrap();
    let PlexRuntime::Docker { env, .. } = &cfg.plex().runtime else {
        panic!("docker expected")
    };
    assert_eq!(env["PLEX_MEDIA_SERVER_MAX_PLUGIN_PROCS"], "4");
    assert_refused(
        &set(MINIMAL, "phases.scan", false).replace("[phases]", "[phases]\ndeep_scan = true"),
        "phases.deep_scan",
        "scan = true",
    );
}

#[test]
fn scratch_libraries_are_checked() {
    let cfg = load(&scratch()).unwrap();
    let Mode::Scratch { libraries } = cfg.mode() else {
        panic!("scratch expected")
    };
    assert_eq!(&*libraries[0].agent, "tv.plex.agents.movie");
    assert_eq!(&*libraries[0].scanner, "Plex Movie");
    assert_refused(
        &scratch().replace("\"movie\"", "\"film\""),
        "library[0].type",
        "is not one of",
    );
    assert_refused(
        &scratch().replace("[\"/mnt/media/movies\"]", "[]"),
        "library[0].locations",
        "at least one",
    );
    assert_refused(
        &scratch().replace("/mnt/media/movies", "/srv/movies"),
        "library[0].locations[0]",
        "not under media.mount_point",
    );
    assert_refused(
        &scratch().replace("\"Movies\"", "\" Movies\""),
        "library[0].title",
        "not a valid library title",
    );
    let twice = format!(
        "{}\n[[library]]\ntitle = \"movies\"\ntype = \"show\"\nlanguage = \"en\"\nlocations = [\"/mnt/media/tv\"]\n",
        scratch()
    );
    assert_refused(&twice, "library[1].title", "declared twice");
    assert_refused(
        &set(&scratch(), "plex.include_libraries", vec!["Music"]),
        "plex.include_libraries[0]",
        "not the title of any [[library]]",
    );
    let included = load(&set(&scratch(), "plex.include_libraries", vec!["Movies"])).unwrap();
    assert!(included.plex().libraries.selects("Movies"));
}

#[test]
fn the_mode_decides_which_tables_are_allowed() {
    assert_refused(
        &remove(MINIMAL, "reference"),
        "reference",
        "mode = \"delta\" needs a [reference] table",
    );
    let no_libraries = set(&remove(MINIMAL, "reference"), "mode", "scratch");
    assert_refused(&no_libraries, "library", "needs at least one [[library]]");
    let scratch_with_reference = set(&scratch(), "reference.archive_key", "a.tar.zst");
    assert_refused(&scratch_with_reference, "reference", "for mode = \"delta\"");
    let delta_with_library = scratch().replace("mode = \"scratch\"", "mode = \"delta\"")
        + "[reference]\narchive_key = \"a.tgz\"\n";
    assert_refused(&delta_with_library, "library", "for mode = \"scratch\"");
}

#[test]
fn include_and_exclude_together_are_refused() {
    let both = set(MINIMAL, "plex.include_libraries", vec!["Music"]);
    let both = set(&both, "plex.exclude_libraries", vec!["Photos"]);
    assert_refused(&both, "plex.exclude_libraries", "not both");
    assert_refused(
        &set(MINIMAL, "plex.include_libraries", Vec::<String>::new()),
        "plex.include_libraries",
        "empty",
    );
}

#[test]
fn overlapping_path_mappings_are_refused() {
    let mappings = |pairs: &[(&str, &str)]| {
        let mut text = MINIMAL.to_string();
        for (from, to) in pairs {
            text.push_str(&format!(
                "\n[[path_mapping]]\nfrom = \"{from}\"\nto = \"{to}\"\n"
            ));
        }
        text
    };
    let cfg = load(&mappings(&[
        ("/data/music/", "/mnt/media/music"),
        ("/data/musicals", "/mnt/media/m"),
    ]))
    .unwrap();
    assert_eq!(cfg.path_mappings()[0].from.as_str(), "/data/music");
    assert_refused(
        &mappings(&[("/data", "/mnt/media"), ("/data/music", "/mnt/media/music")]),
        "path_mapping[1].from",
        "/data/music overlaps path_mapping[0].from /data",
    );
    assert_refused(
        &mappings(&[("/a/b", "/x"), ("/a/b/", "/y")]),
        "path_mapping[1].from",
        "overlaps",
    );
    assert_refused(
        &mappings(&[("data", "/x")]),
        "path_mapping[0].from",
        "must be absolute",
    );
    assert_refused(
        &mappings(&[("/data", "/mnt/../x")]),
        "path_mapping[0].to",
        "'..'",
    );
}

#[test]
fn environment_credentials_must_be_set_and_not_empty() {
    let only_access = env(&[("AWS_ACCESS_KEY_ID", S3_ACCESS)]);
    let msg = RunConfig::from_toml_str(MINIMAL, &only_access)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "run.toml: s3.secret_key_env: environment variable AWS_SECRET_ACCESS_KEY is not set (or give secret_key or credentials_file)"
    );
    let named = set(MINIMAL, "s3.access_key_env", "MY_KEY");
    let named = set(&named, "s3.secret_key_env", "MY_SECRET");
    let custom = env(&[("MY_KEY", "k"), ("MY_SECRET", "")]);
    let err = RunConfig::from_toml_str(&named, &custom).unwrap_err();
    assert_eq!(err.key(), Some("s3.secret_key_env"));
    assert!(err.to_string().contains("MY_SECRET is empty"), "{err}");
    assert_refused(
        &set(MINIMAL, "s3.access_key_env", "MY-KEY"),
        "s3.access_key_env",
        "not an environment variable name",
    );
    let claim = set(MINIMAL, "plex.claim", true);
    let err = RunConfig::from_toml_str(
        &claim,
        &env(&[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ]),
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("plex.account_token_env"), "{err}");
    assert!(err.to_string().contains("PLEX_TOKEN is not set"), "{err}");
    assert_refused(
        &set(MINIMAL, "plex.account_token", "x"),
        "plex.account_token",
        "claim = true",
    );
}

#[test]
fn a_section_uses_exactly_one_credential_source() {
    let inline = set(MINIMAL, "s3.access_key", S3_ACCESS);
    assert_refused(&inline, "s3.secret_key", "access_key is given inline");
    let both = set(
        &set(&inline, "s3.secret_key", S3_SECRET),
        "s3.secret_key_env",
        "X",
    );
    assert_refused(&both, "s3.access_key", "choose one credential source");
    let with_file = set(
        &set(&inline, "s3.secret_key", S3_SECRET),
        "s3.credentials_file",
        "/x",
    );
    assert_refused(&with_file, "s3.access_key", "choose one credential source");
    let cfg =
        RunConfig::from_toml_str(&set(&inline, "s3.secret_key", S3_SECRET), &env(&[])).unwrap();
    assert_eq!(
        cfg.s3().connection.credential_source,
        CredentialSource::Inline
    );
    assert_eq!(cfg.s3().connection.secret_key.expose(), S3_SECRET);
}

#[test]
fn credentials_files_are_read_and_their_faults_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3.env");
    std::fs::write(
        &file,
        format!(
            "# S3\nexport AWS_ACCESS_KEY_ID={S3_ACCESS}\nAWS_SECRET_ACCESS_KEY=\"{S3_SECRET}\"\n"
        ),
    )
    .unwrap();
    let text = set(MINIMAL, "s3.credentials_file", file.display().to_string());
    let cfg = RunConfig::from_toml_str(&text, &env(&[])).unwrap();
    assert_eq!(cfg.s3().connection.access_key.expose(), S3_ACCESS);
    assert_eq!(cfg.s3().connection.secret_key.expose(), S3_SECRET);
    assert!(matches!(
        &cfg.s3().connection.credential_source,
        CredentialSource::File { .. }
    ));

    let absent = dir.path().join("absent.env");
    let text = set(MINIMAL, "s3.credentials_file", absent.display().to_string());
    let msg = RunConfig::from_toml_str(&text, &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "run.toml: s3.credentials_file: cannot read {}: ",
            absent.display()
        )),
        "{msg}"
    );

    let text = set(
        MINIMAL,
        "s3.credentials_file",
        dir.path().display().to_string(),
    );
    let err = RunConfig::from_toml_str(&text, &env(&[])).unwrap_err();
    assert_eq!(err.key(), Some("s3.credentials_file"), "{err}");

    std::fs::write(
        &file,
        format!("AWS_ACCESS_KEY_ID={S3_ACCESS}\n{S3_SECRET}\n"),
    )
    .unwrap();
    let text = set(MINIMAL, "s3.credentials_file", file.display().to_string());
    let msg = RunConfig::from_toml_str(&text, &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("line 2: expected KEY=VALUE"), "{msg}");
    assert!(
        !msg.contains(S3_SECRET) && !msg.contains(S3_ACCESS),
        "{msg}"
    );

    std::fs::write(&file, format!("AWS_ACCESS_KEY_ID={S3_ACCESS}\n")).unwrap();
    let msg = RunConfig::from_toml_str(&text, &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("does not set AWS_SECRET_ACCESS_KEY"), "{msg}");

    let relative = set(MINIMAL, "s3.credentials_file", "s3.env");
    assert_refused(&relative, "s3.credentials_file", "must be absolute");
}

#[test]
fn secrets_never_reach_the_effective_config_or_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let scw_file = dir.path().join("scw.env");
    std::fs::write(&scw_file, format!("SCW_SECRET_KEY={SCW_SECRET}\n")).unwrap();
    let text = set(MINIMAL, "s3.access_key", S3_ACCESS);
    let text = set(&text, "s3.secret_key", S3_SECRET);
    let text = set(&text, "plex.claim", true);
    let text = set(&text, "termination.provider", "scaleway");
    let text = set(&text, "termination.zone", "nl-ams-1");
    let text = set(
        &text,
        "termination.credentials_file",
        scw_file.display().to_string(),
    );
    let cfg = RunConfig::from_toml_str(&text, &env(&[("PLEX_TOKEN", PLEX_TOKEN)])).unwrap();
    let effective = cfg.effective_toml();
    let debug = format!("{cfg:?} {cfg:#?}");
    for secret in [S3_ACCESS, S3_SECRET, PLEX_TOKEN, SCW_SECRET] {
        assert!(
            !effective.contains(secret),
            "effective_toml shows a secret:\n{effective}"
        );
        assert!(!debug.contains(secret), "Debug shows a secret");
    }
    let parsed: Table = effective.parse().unwrap();
    assert_eq!(parsed["s3"]["secret_key"].as_str(), Some("********"));
    assert_eq!(
        parsed["plex"]["account_token_env"].as_str(),
        Some("PLEX_TOKEN")
    );
    assert_eq!(
        parsed["termination"]["credentials_file"].as_str(),
        Some(scw_file.to_str().unwrap())
    );
}

#[test]
fn the_effective_config_is_a_run_toml_that_loads_to_itself() {
    for text in [EXAMPLE.to_string(), MINIMAL.to_string(), scratch()] {
        let first = load(&text).unwrap().effective_toml();
        let second = load(&first)
            .unwrap_or_else(|e| panic!("{e}\n{first}"))
            .effective_toml();
        assert_eq!(first, second);
    }
    let effective: Table = load(MINIMAL).unwrap().effective_toml().parse().unwrap();
    assert_eq!(effective["deadlines"]["run"].as_str(), Some("3days"));
    assert_eq!(effective["s3"]["runs_prefix"].as_str(), Some("runs/"));
    assert_eq!(effective["media"]["profile"].as_str(), Some("balanced"));
    assert_eq!(
        effective["guard"]["max_lost_fraction"].as_float(),
        Some(0.05)
    );
}

#[test]
fn a_token_forgotten_after_the_claim_is_read_from_its_file_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plextv.env");
    let text = set(MINIMAL, "plex.claim", true);
    let text = set(&text, "plex.forget_token_after_claim", true);
    let err = error(&text).to_string();
    assert!(
        err.contains("plex.forget_token_after_claim") && err.contains("credentials_file"),
        "{err}"
    );

    let text = set(
        &text,
        "plex.credentials_file",
        file.to_string_lossy().as_ref(),
    );
    std::fs::write(&file, format!("PLEX_TOKEN={PLEX_TOKEN}\n")).unwrap();
    let cfg = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let claim = cfg.plex().claim.as_ref().expect("claiming");
    assert!(claim.forget_after_claim);
    assert_eq!(
        claim.account_token.as_ref().map(|t| t.expose()),
        Some(PLEX_TOKEN)
    );

    // Deleted by the claim: the server keeps its own token, and the run
    // still claims (Sonic needs it) without the account's.
    std::fs::remove_file(&file).unwrap();
    let cfg = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let claim = cfg.plex().claim.as_ref().expect("still claiming");
    assert!(claim.account_token.is_none());
}

#[test]
fn wipe_paths_must_be_absolute() {
    let text = format!("{MINIMAL}\n[wipe]\nfiles = [\"secrets.env\"]\n");
    let err = error(&text).to_string();
    assert!(err.contains("wipe.files"), "{err}");
    let text = format!(
        "{MINIMAL}\n[wipe]\nfiles = [\"/etc/plex-burst/secrets.env\"]\nuser_data_copies = [\"/var/lib/cloud\"]\n"
    );
    let cfg = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.wipe().files.len(), 1);
    assert_eq!(cfg.wipe().user_data_copies.len(), 1);
}

#[test]
fn a_priced_run_costs_its_hours_at_its_hourly_price() {
    let text = set(
        &set(MINIMAL, "cost.eur_per_hour", 0.45),
        "cost.estimate_eur",
        20.0,
    );
    let cfg = load(&text).unwrap();
    let so_far = runner::run::cost::SoFar::of(&cfg, 1_000, 1_000 + 2 * 3600).unwrap();
    assert!((so_far.eur - 0.9).abs() < 1e-9, "{so_far:?}");
    assert_eq!(so_far.estimate_eur, Some(20.0));
    let unpriced = load(MINIMAL).unwrap();
    assert_eq!(runner::run::cost::SoFar::of(&unpriced, 0, 3600), None);
}
