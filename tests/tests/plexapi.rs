//! A real Plex client as the judge of the Plex double: python-plexapi (the
//! version scripts/lib/setup.sh pins, in the tools venv) runs
//! tests/plexapi/test_plexapi.py against the double serving a fixture
//! library, with the plex.tv double behind it. It fails, never skips,
//! when the venv or plexapi is missing, and cannot reach the internet:
//! every proxy points at a closed loopback port and only loopback is
//! exempt.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::plexdouble::harness::{
    PlexDouble, PlexTvDouble, request, wait_for, xml_elements,
};
use plex_burst_tests::plexdouble::pms::prefs::Preferences;
use plex_burst_tests::plexdouble::pms::startup;

const USERNAME: &str = "plexapi-user";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `PLEX_BURST_PYTHON`, else the tools venv's python.
fn python() -> PathBuf {
    let python = std::env::var_os("PLEX_BURST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".local/tools/bin/python3"));
    assert!(
        python.is_file(),
        "{} is missing: run ./scripts/test (scripts/lib/setup.sh installs python-plexapi into the tools venv) or set PLEX_BURST_PYTHON",
        python.display()
    );
    python
}

/// The PlexAPI version setup.sh pins (one home for the pin).
fn pinned_plexapi() -> String {
    let setup = std::fs::read_to_string(repo().join("scripts/lib/setup.sh")).unwrap();
    setup
        .lines()
        .find_map(|line| line.strip_prefix("PLEXAPI_VERSION="))
        .expect("scripts/lib/setup.sh pins PLEXAPI_VERSION")
        .trim()
        .to_string()
}

/// A home library with every library type: its folder, app support,
/// Preferences.xml and the server's token.
struct World {
    dir: TempDir,
    app: PathBuf,
    preferences: PathBuf,
    token: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let mut libraries = vec![
        LibrarySpec::single("Movies", LibraryKind::Movie, 8, 0.0),
        LibrarySpec::single("TV Shows", LibraryKind::Show, 10, 0.0),
        LibrarySpec::single("Music", LibraryKind::Music, 24, 0.25),
        LibrarySpec::single("Photos", LibraryKind::Photo, 12, 0.0),
    ];
    // Deleted items are in the DB and must not be served.
    libraries[0].deleted = 2;
    let spec = Spec {
        seed: 13,
        media_root: media.display().to_string(),
        libraries,
    };
    let app = write_app_support(&dir.path().join("home"), &spec)
        .unwrap()
        .dir;
    write_media_tree(&media, &spec).unwrap();
    let preferences = app.join("Preferences.xml");
    let token = Preferences::load_or_create(&preferences, "unused")
        .unwrap()
        .online_token()
        .expect("the fixture's server is claimed")
        .to_string();
    World {
        dir,
        app,
        preferences,
        token,
    }
}

/// The PMS double on the world, past its start-up window.
fn start(world: &World, args: &[&str]) -> PlexDouble {
    let pms = PlexDouble::start(&world.app, args, &[]);
    // A client's first library write waits out Plex's start-up window.
    let finished = startup::finished_line(pms.pid());
    wait_for(
        "the start-up window to close",
        Duration::from_secs(30),
        || pms.log().contains(&finished).then_some(()),
    );
    pms
}

#[test]
fn python_plexapi_drives_the_double_as_its_users_do() {
    let python = python();
    let world = world();
    let token = &world.token;
    // plex.tv knows the server's token as the account's.
    let plextv = PlexTvDouble::start(token, &["--username", USERNAME]);
    let pms = start(&world, &["--plextv-url", &plextv.url]);

    let output = Command::new(python)
        .arg(repo().join("tests/plexapi/test_plexapi.py"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PLEX_URL", &pms.url)
        .env("PLEX_TOKEN", token)
        .env("PLEX_LIBRARY_DB", pms.library_db())
        .env("PLEX_PREFERENCES", &world.preferences)
        .env("PLEXTV_USERNAME", USERNAME)
        .env("PLEXAPI_PIN", pinned_plexapi())
        // No user config, and nothing but loopback reachable.
        .env(
            "PLEXAPI_CONFIG_PATH",
            world.dir.path().join("no-plexapi-config.ini"),
        )
        .env("HOME", world.dir.path())
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("python starts");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "python-plexapi found the double wrong:\n{report}\nPMS log tail:\n{}",
        plex_burst_tests::plexdouble::harness::tail(&pms.log(), 40)
    );
    assert!(
        report.contains("\nOK") && !report.contains("Ran 0 tests"),
        "{report}"
    );
}

fn json(pms: &PlexDouble, token: &str, path: &str) -> serde_json::Value {
    let reply = request(
        "GET",
        &pms.url(path),
        &[("X-Plex-Token", token), ("Accept", "application/json")],
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.json()
}

fn one(pms: &PlexDouble, sql: &str) -> i64 {
    Connection::open_with_flags(pms.library_db(), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row(sql, [], |row| row.get(0))
        .unwrap()
}

/// What the runner reads (JSON) of the same answers: the root, `/library`,
/// an analysed track by rating key, photo albums, real Plex's pref
/// defaults, and 404 for stopping an idle Butler task.
#[test]
fn the_root_items_and_albums_in_json_prefs_defaults_and_idle_butler_stop() {
    let world = world();
    let token = world.token.as_str();
    let pms = start(&world, &[]);
    let prefs = Preferences::load_or_create(&world.preferences, "unused").unwrap();

    let root = json(&pms, token, "/");
    let root = &root["MediaContainer"];
    assert_eq!(root["machineIdentifier"], prefs.machine_identifier());
    assert_eq!(root["myPlex"], true);
    assert_eq!(root["myPlexSigninState"], "ok");
    assert!(
        root["Directory"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "library")
    );
    assert_eq!(
        json(&pms, token, "/library")["MediaContainer"]["identifier"],
        "com.plexapp.plugins.library"
    );

    let analysed = one(
        &pms,
        "SELECT min(id) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
         AND extra_data LIKE '%musicAnalysisVersion%'",
    );
    let track = json(&pms, token, &format!("/library/metadata/{analysed}"));
    let track = &track["MediaContainer"]["Metadata"][0];
    assert_eq!(track["type"], "track");
    assert_eq!(track["ratingKey"], analysed.to_string());
    assert_eq!(track["musicAnalysisVersion"], 1);
    assert!(track["Media"][0]["Part"][0]["file"].is_string(), "{track}");
    let plain = one(
        &pms,
        "SELECT min(id) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL
         AND extra_data NOT LIKE '%musicAnalysisVersion%'",
    );
    let plain = json(&pms, token, &format!("/library/metadata/{plain}"));
    assert!(
        plain["MediaContainer"]["Metadata"][0]
            .get("musicAnalysisVersion")
            .is_none()
    );
    let gone = one(
        &pms,
        "SELECT min(id) FROM metadata_items WHERE deleted_at IS NOT NULL",
    );
    let reply = request(
        "GET",
        &pms.url(&format!("/library/metadata/{gone}")),
        &[("X-Plex-Token", token)],
    )
    .unwrap();
    assert_eq!(reply.status, 404, "a deleted item is gone: {}", reply.body);

    let photos = one(
        &pms,
        "SELECT id FROM library_sections WHERE section_type = 13",
    );
    let albums = json(
        &pms,
        token,
        &format!("/library/sections/{photos}/all?type=14"),
    );
    let albums = albums["MediaContainer"]["Metadata"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        albums.len() as i64,
        one(
            &pms,
            &format!(
                "SELECT count(*) FROM metadata_items WHERE library_section_id = {photos}
                 AND metadata_type = 14 AND parent_id IS NULL AND deleted_at IS NULL"
            )
        )
    );
    for album in &albums {
        assert_eq!(album["type"], "photo", "{album}");
        assert!(album["key"].as_str().unwrap().ends_with("/children"));
    }
    let xml = request(
        "GET",
        &pms.url(&format!("/library/sections/{photos}/all?type=14")),
        &[("X-Plex-Token", token)],
    )
    .unwrap()
    .body;
    assert_eq!(xml_elements(&xml, "Directory").len(), albums.len(), "{xml}");

    let settings = json(&pms, token, "/:/prefs");
    let settings = settings["MediaContainer"]["Setting"]
        .as_array()
        .unwrap()
        .clone();
    let default = |id: &str| {
        settings
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no pref {id}"))["default"]
            .clone()
    };
    assert_eq!(default("FSEventLibraryUpdatesEnabled"), false);
    assert_eq!(default("ScheduledLibraryUpdatesEnabled"), false);
    assert_eq!(default("GenerateBIFBehavior"), "never");

    let stop = request(
        "DELETE",
        &pms.url("/butler/BackupDatabase"),
        &[("X-Plex-Token", token)],
    )
    .unwrap();
    assert_eq!(
        stop.status, 404,
        "BackupDatabase is not running: {}",
        stop.body
    );
}
