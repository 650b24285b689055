//! The Plex doubles through HTTP, as the runner meets them: real
//! processes on loopback, a fixture app-support folder whose media tree is
//! on local disk at the paths its DB names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plex_burst_tests::fixture::{
    LibraryKind, LibrarySpec, Spec, write_app_support, write_media_tree,
};
use plex_burst_tests::plexdouble::harness::{
    PlexDouble, PlexTvDouble, Reply, free_port, get, request, scanner_processes, wait_for,
    xml_elements,
};
use plex_burst_tests::plexdouble::pms::prefs::{Preferences, processed_machine_identifier};
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

const VERSION: &str = "1.41.3.9314-a0bfb8370";
const ACCOUNT: &str = "account-token-1234";
/// How long an awaited event may take: a hang guard, not a timing test.
const WAIT: Duration = Duration::from_secs(120);

/// Section ids of the fixture below.
const MOVIES: i64 = 1;
const SHOWS: i64 = 2;
const MUSIC: i64 = 3;

/// A home library on local disk: its app-support folder and media tree.
struct World {
    _dir: TempDir,
    root: PathBuf,
    app: PathBuf,
    media: PathBuf,
    /// The home server's `PlexOnlineToken` from the fixture.
    token: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    let mut libraries = vec![
        LibrarySpec::single("Movies", LibraryKind::Movie, 12, 0.0),
        LibrarySpec::single("TV Shows", LibraryKind::Show, 10, 0.0),
        LibrarySpec::single("Music", LibraryKind::Music, 20, 0.25),
        LibrarySpec::single("Photos", LibraryKind::Photo, 10, 0.0),
    ];
    libraries[0].deleted = 2;
    let spec = Spec {
        seed: 11,
        media_root: media.display().to_string(),
        libraries,
    };
    let app = write_app_support(&dir.path().join("home"), &spec)
        .unwrap()
        .dir;
    write_media_tree(&media, &spec).unwrap();
    let token = prefs(&app).online_token().unwrap().to_string();
    World {
        root: dir.path().to_path_buf(),
        _dir: dir,
        app,
        media,
        token,
    }
}

fn prefs(app: &Path) -> Preferences {
    Preferences::load_or_create(&app.join("Preferences.xml"), VERSION).unwrap()
}

/// Removes the home server's claim, as a fresh cloud server has none.
fn unclaim(app: &Path) {
    let mut prefs = prefs(app);
    prefs.remove("PlexOnlineToken");
    prefs.remove("PlexOnlineUsername");
    prefs.save().unwrap();
}

fn call(pms: &PlexDouble, token: &str, method: &str, path: &str) -> Reply {
    request(method, &pms.url(path), &[("X-Plex-Token", token)]).unwrap()
}

fn ok(pms: &PlexDouble, token: &str, method: &str, path: &str) -> Reply {
    let reply = call(pms, token, method, path);
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
    reply
}

fn db(pms: &PlexDouble) -> Connection {
    Connection::open_with_flags(pms.library_db(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn count(pms: &PlexDouble, sql: &str) -> i64 {
    db(pms).query_row(sql, [], |row| row.get(0)).unwrap()
}

fn total_size(pms: &PlexDouble, token: &str, section: i64, metadata_type: i64) -> i64 {
    let reply = request(
        "GET",
        &pms.url(&format!(
            "/library/sections/{section}/all?type={metadata_type}"
        )),
        &[
            ("X-Plex-Token", token),
            ("X-Plex-Container-Start", "0"),
            ("X-Plex-Container-Size", "0"),
        ],
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let container = &xml_elements(&reply.body, "MediaContainer")[0];
    assert_eq!(container["size"], "0", "size 0 returns no items");
    container["totalSize"].parse().unwrap()
}

/// No section refreshing and no activity.
fn wait_idle(pms: &PlexDouble, token: &str) {
    wait_for("the server to be idle", WAIT, || {
        let sections = ok(pms, token, "GET", "/library/sections").body;
        let activities = ok(pms, token, "GET", "/activities").body;
        let refreshing = xml_elements(&sections, "Directory")
            .iter()
            .any(|d| d["refreshing"] != "0");
        (!refreshing && xml_elements(&activities, "Activity").is_empty()).then_some(())
    });
}

fn scan(pms: &PlexDouble, token: &str, section: i64) {
    ok(
        pms,
        token,
        "GET",
        &format!("/library/sections/{section}/refresh"),
    );
    wait_idle(pms, token);
}

fn activities(pms: &PlexDouble, token: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    xml_elements(&ok(pms, token, "GET", "/activities").body, "Activity")
}

/// A claimed server whose token the plex.tv double issued.
fn claimed(world: &World, plextv: &PlexTvDouble, args: &[&str]) -> (PlexDouble, String) {
    unclaim(&world.app);
    let mut all = vec![
        "--allowed-networks",
        "127.0.0.0/8",
        "--plextv-url",
        &plextv.url,
        "--claim-delay",
        "0s",
    ];
    all.extend_from_slice(args);
    let pms = PlexDouble::start(&world.app, &all, &[]);
    let claim = plextv.claim_token();
    ok(
        &pms,
        ACCOUNT,
        "POST",
        &format!("/myplex/claim?token={claim}"),
    );
    let token = wait_for("the claim to land", WAIT, || {
        prefs(&world.app).online_token().map(str::to_string)
    });
    (pms, token)
}

/// A live media file of a section, with its metadata item id.
fn live_file(pms: &PlexDouble, section: i64) -> (PathBuf, i64) {
    db(pms)
        .query_row(
            "SELECT mp.file, mi.metadata_item_id FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id
             WHERE mi.library_section_id = ?1 AND mp.deleted_at IS NULL ORDER BY mp.id LIMIT 1",
            [section],
            |row| Ok((PathBuf::from(row.get::<_, String>(0)?), row.get(1)?)),
        )
        .unwrap()
}

fn deleted_at(pms: &PlexDouble, item: i64) -> Option<Option<i64>> {
    use rusqlite::OptionalExtension;
    db(pms)
        .query_row(
            "SELECT deleted_at FROM metadata_items WHERE id = ?1",
            [item],
            |row| row.get(0),
        )
        .optional()
        .unwrap()
}

fn set_prefs(pms: &PlexDouble, token: &str, query: &str) {
    ok(pms, token, "PUT", &format!("/:/prefs?{query}"));
}

#[test]
fn identity_and_both_formats() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &["--version", "1.2.3.4-abc"], &[]);
    let machine = prefs(&world.app).machine_identifier().to_string();

    let xml = get(&pms.url("/identity"), &[]).unwrap();
    assert_eq!(xml.status, 200);
    assert!(xml.header("content-type").unwrap().contains("xml"));
    let identity = &xml_elements(&xml.body, "MediaContainer")[0];
    assert_eq!(
        identity["machineIdentifier"], machine,
        "keeps the existing identity"
    );
    assert_eq!(
        Some(machine.as_str()),
        prefs(&world.app).get("ProcessedMachineIdentifier"),
        "machineIdentifier is the ProcessedMachineIdentifier"
    );
    assert_eq!(identity["version"], "1.2.3.4-abc");
    assert_eq!(
        identity["claimed"], "1",
        "the fixture's home server is claimed"
    );

    let json = get(&pms.url("/identity"), &[("Accept", "application/json")]).unwrap();
    assert!(json.header("content-type").unwrap().contains("json"));
    let json = json.json();
    assert_eq!(json["MediaContainer"]["machineIdentifier"], machine);
    assert_eq!(json["MediaContainer"]["claimed"], true);

    // Sections: XML attributes, and JSON with string keys and typed values.
    let sections = ok(&pms, &world.token, "GET", "/library/sections").body;
    let dirs = xml_elements(&sections, "Directory");
    assert_eq!(dirs.len(), 4);
    assert_eq!(dirs[0]["key"], "1");
    assert_eq!(dirs[0]["type"], "movie");
    assert_eq!(dirs[0]["refreshing"], "0");
    assert_eq!(dirs[2]["type"], "artist");
    let locations = xml_elements(&sections, "Location");
    assert_eq!(
        locations[0]["path"],
        world.media.join("Movies").display().to_string()
    );
    let json = request(
        "GET",
        &pms.url("/library/sections"),
        &[
            ("X-Plex-Token", &world.token),
            ("Accept", "application/json"),
        ],
    )
    .unwrap()
    .json();
    let first = &json["MediaContainer"]["Directory"][0];
    assert_eq!(first["key"], "1", "a section key is a string");
    assert_eq!(first["title"], "Movies");
    assert_eq!(first["refreshing"], false);
    assert_eq!(first["Location"][0]["id"], 1, "ids are numbers");
    assert_eq!(json["MediaContainer"]["size"], 4);

    // /all in JSON: items under Metadata, ratingKey a string.
    let all = request(
        "GET",
        &pms.url(&format!(
            "/library/sections/{MOVIES}/all?type=1&X-Plex-Container-Start=0&X-Plex-Container-Size=2"
        )),
        &[
            ("X-Plex-Token", &world.token),
            ("Accept", "application/json"),
        ],
    )
    .unwrap()
    .json();
    assert_eq!(
        all["MediaContainer"]["totalSize"], 12,
        "deleted items do not count"
    );
    assert_eq!(all["MediaContainer"]["size"], 2);
    assert!(all["MediaContainer"]["Metadata"][0]["ratingKey"].is_string());
    assert_eq!(all["MediaContainer"]["Metadata"][0]["type"], "movie");

    // Plex's strictness on methods and paths.
    assert_eq!(
        request("POST", &pms.url("/identity"), &[]).unwrap().status,
        405
    );
    assert_eq!(
        call(&pms, &world.token, "GET", "/no/such/thing").status,
        404
    );
    assert_eq!(call(&pms, &world.token, "POST", "/:/prefs").status, 405);
}

#[test]
fn auth_needs_the_server_token_once_claimed_and_an_allowed_network_before() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    assert_eq!(
        get(&pms.url("/identity"), &[]).unwrap().status,
        200,
        "identity is open"
    );
    assert_eq!(get(&pms.url("/library/sections"), &[]).unwrap().status, 401);
    assert_eq!(
        call(&pms, "wrong-token", "GET", "/library/sections").status,
        401
    );
    assert_eq!(
        call(&pms, &world.token, "GET", "/library/sections").status,
        200
    );
    let by_query = get(
        &pms.url(&format!("/:/prefs?X-Plex-Token={}", world.token)),
        &[],
    )
    .unwrap();
    assert_eq!(by_query.status, 200, "the token may ride in the query");
    // As Plex does, the log shows the request URL with its token: what
    // ships Plex's logs must mask them (runner/src/mask.rs).
    assert!(
        pms.log()
            .contains(&format!("/:/prefs?X-Plex-Token={}", world.token)),
        "{}",
        pms.log()
    );
    drop(pms);

    // Unclaimed: only clients inside allowedNetworks, token or not.
    unclaim(&world.app);
    let outside = PlexDouble::start(&world.app, &["--allowed-networks", "127.0.0.2/32"], &[]);
    assert_eq!(
        get(&outside.url("/library/sections"), &[]).unwrap().status,
        401
    );
    assert_eq!(
        call(&outside, &world.token, "GET", "/library/sections").status,
        401
    );
    drop(outside);
    let inside = PlexDouble::start(
        &world.app,
        &["--allowed-networks", "10.0.0.0/8,127.0.0.0/8"],
        &[],
    );
    assert_eq!(
        get(&inside.url("/library/sections"), &[]).unwrap().status,
        200
    );
    let setting = xml_elements(&ok(&inside, "", "GET", "/:/prefs").body, "Setting")
        .into_iter()
        .find(|s| s["id"] == "allowedNetworks")
        .unwrap();
    assert_eq!(
        setting["value"], "10.0.0.0/8,127.0.0.0/8",
        "the flag sets the pref"
    );
}

#[test]
fn prefs_reject_unknown_ids_and_bad_values_and_apply_nothing() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    let settings = xml_elements(&ok(&pms, token, "GET", "/:/prefs").body, "Setting");
    let setting = |id: &str| {
        settings
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no pref {id}"))
            .clone()
    };
    for id in [
        "autoEmptyTrash",
        "FSEventLibraryUpdatesEnabled",
        "FSEventLibraryPartialScanEnabled",
        "ScheduledLibraryUpdatesEnabled",
        "ButlerStartHour",
        "ButlerEndHour",
        "ButlerTaskDeepMediaAnalysis",
        "ButlerTaskRefreshPeriodicMetadata",
        "ButlerTaskOptimizeDatabase",
        "GenerateBIFBehavior",
        "GenerateChapterThumbBehavior",
        "LoudnessAnalysisBehavior",
        "MusicAnalysisBehavior",
        "GenerateIntroMarkerBehavior",
        "GenerateCreditsMarkerBehavior",
        "GenerateAdMarkerBehavior",
        "GenerateVADBehavior",
        "ScannerLowPriority",
        "allowedNetworks",
    ] {
        let s = setting(id);
        for attr in ["label", "type", "default", "value", "hidden", "advanced"] {
            assert!(s.contains_key(attr), "{id} lacks {attr}");
        }
    }
    assert_eq!(setting("autoEmptyTrash")["type"], "bool");
    assert_eq!(setting("autoEmptyTrash")["default"], "1");
    assert_eq!(setting("ButlerStartHour")["type"], "int");
    assert_eq!(
        setting("MusicAnalysisBehavior")["enumValues"],
        "never:never|scheduled:as a scheduled task|asap:as a scheduled task and when media is added"
    );

    for bad in [
        "NoSuchPref=1",
        "autoEmptyTrash=0&NoSuchPref=1",
        "autoEmptyTrash=perhaps",
        "ButlerStartHour=noon",
        "ButlerEndHour=25",
        "MusicAnalysisBehavior=sometimes",
        "allowedNetworks=everywhere",
    ] {
        let reply = call(&pms, token, "PUT", &format!("/:/prefs?{bad}"));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    assert_eq!(
        prefs(&world.app).get("autoEmptyTrash"),
        Some("1"),
        "nothing applied"
    );
    assert!(prefs(&world.app).get("NoSuchPref").is_none());

    set_prefs(
        &pms,
        token,
        "autoEmptyTrash=false&ButlerStartHour=7&MusicAnalysisBehavior=never",
    );
    let file = prefs(&world.app);
    assert_eq!(file.get("autoEmptyTrash"), Some("0"));
    assert_eq!(file.get("ButlerStartHour"), Some("7"));
    let json = request(
        "GET",
        &pms.url("/:/prefs"),
        &[("X-Plex-Token", token), ("Accept", "application/json")],
    )
    .unwrap()
    .json();
    let find = |id: &str| {
        json["MediaContainer"]["Setting"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(find("autoEmptyTrash")["value"], false);
    assert_eq!(find("ButlerStartHour")["value"], 7);
    let butler = xml_elements(&ok(&pms, token, "GET", "/butler").body, "ButlerTask");
    let music = butler
        .iter()
        .find(|t| t["name"] == "MusicAnalysis")
        .unwrap();
    assert_eq!(
        music["enabled"], "0",
        "MusicAnalysisBehavior=never disables it"
    );
}

/// The `ButlerTask*` booleans of a recorded real server's `/:/prefs`
/// (andrey-yantsen/plex-api.rs, commit f7d02c5,
/// crates/plex-api/tests/mocks/server/prefs.json).
const REAL_BUTLER_TASK_PREFS: &[&str] = &[
    "ButlerTaskBackupDatabase",
    "ButlerTaskOptimizeDatabase",
    "ButlerTaskCleanOldBundles",
    "ButlerTaskCleanOldCacheFiles",
    "ButlerTaskRefreshLocalMedia",
    "ButlerTaskRefreshLibraries",
    "ButlerTaskUpgradeMediaAnalysis",
    "ButlerTaskRefreshPeriodicMetadata",
    "ButlerTaskDeepMediaAnalysis",
    "ButlerTaskGarbageCollectBlobs",
    "ButlerTaskRefreshEpgGuides",
    "ButlerTaskReverseGeocode",
    "ButlerTaskGenerateAutoTags",
    "ButlerTaskGenerateMediaIndexFiles",
];

#[test]
fn butler_task_prefs_are_a_real_servers_and_there_is_no_music_analysis_pref() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    let settings = xml_elements(&ok(&pms, token, "GET", "/:/prefs").body, "Setting");
    let butler: Vec<&str> = settings
        .iter()
        .map(|s| s["id"].as_str())
        .filter(|id| id.starts_with("ButlerTask"))
        .collect();
    assert_eq!(butler, REAL_BUTLER_TASK_PREFS);
    let reply = call(&pms, token, "PUT", "/:/prefs?ButlerTaskMusicAnalysis=1");
    assert_eq!(reply.status, 400, "{}", reply.body);
    // Sonic is the MusicAnalysis task, on or off by MusicAnalysisBehavior.
    set_prefs(&pms, token, "MusicAnalysisBehavior=asap");
    let tasks = xml_elements(&ok(&pms, token, "GET", "/butler").body, "ButlerTask");
    let music = tasks.iter().find(|t| t["name"] == "MusicAnalysis").unwrap();
    assert_eq!(music["enabled"], "1");
}

/// Live items of `section` whose metadata was refreshed at or after `since`.
fn refreshed_since(pms: &PlexDouble, section: i64, since: i64) -> i64 {
    count(
        pms,
        &format!(
            "SELECT count(*) FROM metadata_items WHERE library_section_id = {section} AND deleted_at IS NULL AND refreshed_at >= {since}"
        ),
    )
}

#[test]
fn force_is_a_metadata_refresh_of_every_item_and_path_scans_one_folder() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &["--metadata-rate", "40"], &[]);
    let token = &world.token;
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let items = count(
        &pms,
        &format!(
            "SELECT count(*) FROM metadata_items WHERE library_section_id = {MUSIC} AND deleted_at IS NULL"
        ),
    );
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(refreshed_since(&pms, MUSIC, since), 0);

    // A scan leaves the metadata of what it finds unchanged.
    scan(&pms, token, MUSIC);
    assert_eq!(refreshed_since(&pms, MUSIC, since), 0);

    // force=1 downloads every item's metadata again, as its own activity.
    ok(
        &pms,
        token,
        "GET",
        &format!("/library/sections/{MUSIC}/refresh?force=1"),
    );
    let refresh = wait_for("the metadata refresh's activity", WAIT, || {
        activities(&pms, token)
            .into_iter()
            .find(|a| a["type"] == "library.refresh.items")
    });
    assert!(refresh["title"].contains("metadata"), "{refresh:?}");
    wait_idle(&pms, token);
    assert_eq!(refreshed_since(&pms, MUSIC, since), items);
    assert!(
        pms.log()
            .contains(&format!("refreshing all metadata of section {MUSIC}")),
        "{}",
        pms.log()
    );

    // path= scans that folder and nothing else.
    let (track, _) = live_file(&pms, MUSIC);
    let bytes = std::fs::read(&track).unwrap();
    let music = world.media.join("Music");
    for artist in ["Artiste Un", "Artiste Deux"] {
        let album = music.join(artist).join("Album (2020)");
        std::fs::create_dir_all(&album).unwrap();
        std::fs::write(album.join("01 - Titre.flac"), &bytes).unwrap();
    }
    let tracks = || {
        count(
            &pms,
            &format!(
                "SELECT count(*) FROM metadata_items WHERE library_section_id = {MUSIC} AND metadata_type = 10 AND deleted_at IS NULL"
            ),
        )
    };
    let before = tracks();
    let folder = music.join("Artiste Un").display().to_string();
    let query: String = form_urlencoded::byte_serialize(folder.as_bytes()).collect();
    ok(
        &pms,
        token,
        "GET",
        &format!("/library/sections/{MUSIC}/refresh?path={query}"),
    );
    wait_idle(&pms, token);
    assert_eq!(tracks(), before + 1, "only the folder asked for is scanned");
    assert!(
        pms.log().contains(&format!("path={folder})")),
        "{}",
        pms.log()
    );
}

#[test]
fn claim_flow_writes_the_token_after_the_delay_and_expired_tokens_fail() {
    let world = world();
    unclaim(&world.app);
    let plextv = PlexTvDouble::start(ACCOUNT, &[]);
    let pms = PlexDouble::start(
        &world.app,
        &[
            "--allowed-networks",
            "127.0.0.0/8",
            "--plextv-url",
            &plextv.url,
            "--claim-delay",
            "1500ms",
        ],
        &[],
    );
    let account = xml_elements(&ok(&pms, "", "GET", "/myplex/account").body, "MyPlex");
    assert_eq!(account[0]["signInState"], "none");
    assert_eq!(
        call(&pms, "", "POST", "/myplex/claim?token=not-a-claim").status,
        400
    );
    assert_eq!(
        request("GET", &plextv.url("/api/claim/token.json"), &[])
            .unwrap()
            .status,
        401,
        "plex.tv needs the account token"
    );

    let claim = plextv.claim_token();
    assert!(claim.starts_with("claim-"));
    // As python-plexapi claims: with the account's token. Without it, or
    // with a token plex.tv does not know, Plex refuses and the claim token
    // is not used up.
    let path = format!("/myplex/claim?token={claim}");
    for token in ["", "not-an-account-token"] {
        let reply = call(&pms, token, "POST", &path);
        assert_eq!(reply.status, 401, "token {token:?}: {}", reply.body);
    }
    let asked = Instant::now();
    let answer = xml_elements(&ok(&pms, ACCOUNT, "POST", &path).body, "MyPlex");
    assert_eq!(answer[0]["signInState"], "ok", "{answer:?}");
    assert_eq!(answer[0]["username"], "burst-user@example.invalid");
    assert_eq!(answer[0]["subscriptionActive"], "1");
    assert!(!answer[0]["authToken"].is_empty());
    assert!(
        prefs(&world.app).online_token().is_none(),
        "not at once (lessons.md rule 9)"
    );
    assert_eq!(
        xml_elements(
            &get(&pms.url("/identity"), &[]).unwrap().body,
            "MediaContainer"
        )[0]["claimed"],
        "0"
    );
    let token = wait_for("PlexOnlineToken in Preferences.xml", WAIT, || {
        prefs(&world.app).online_token().map(str::to_string)
    });
    assert!(
        asked.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        prefs(&world.app).get("PlexOnlineUsername"),
        Some("burst-user")
    );
    assert_eq!(
        xml_elements(
            &get(&pms.url("/identity"), &[]).unwrap().body,
            "MediaContainer"
        )[0]["claimed"],
        "1"
    );

    // Claimed: the allowed network no longer lets anyone in.
    assert_eq!(get(&pms.url("/library/sections"), &[]).unwrap().status, 401);
    let account = xml_elements(&ok(&pms, &token, "GET", "/myplex/account").body, "MyPlex");
    assert_eq!(account[0]["signInState"], "ok");
    assert_eq!(account[0]["subscriptionActive"], "1");
    assert_eq!(account[0]["username"], "burst-user@example.invalid");
    assert_eq!(account[0]["authToken"], token);
    assert_eq!(
        call(
            &pms,
            &token,
            "POST",
            &format!("/myplex/claim?token={}", plextv.claim_token())
        )
        .status,
        400,
        "already claimed"
    );

    // plex.tv: the server is a device of the account; the calls are recorded
    // without token values.
    let devices = get(&plextv.url("/devices.xml"), &[("X-Plex-Token", ACCOUNT)]).unwrap();
    let device = xml_elements(&devices.body, "Device").remove(0);
    assert_eq!(
        Some(device["clientIdentifier"].as_str()),
        prefs(&world.app).get("ProcessedMachineIdentifier"),
        "registered under its ProcessedMachineIdentifier"
    );
    assert_eq!(device["provides"], "server");
    let calls = plextv.calls();
    let exchange = calls
        .iter()
        .find(|c| c["path"] == "/api/claim/exchange")
        .unwrap();
    assert_eq!(exchange["method"], "POST");
    assert_eq!(exchange["status"], 200);
    assert_eq!(exchange["query"], "token=REDACTED");
    assert!(!serde_json::to_string(&calls).unwrap().contains(&claim));
    let id = &device["id"];
    assert_eq!(
        request(
            "DELETE",
            &plextv.url("/devices/999.xml"),
            &[("X-Plex-Token", ACCOUNT)]
        )
        .unwrap()
        .status,
        404
    );
    assert_eq!(
        request(
            "DELETE",
            &plextv.url(&format!("/devices/{id}.xml")),
            &[("X-Plex-Token", ACCOUNT)]
        )
        .unwrap()
        .status,
        200
    );

    // Unclaim removes the token and answers the signed-out MyPlex.
    let answer = xml_elements(
        &ok(&pms, &token, "DELETE", "/myplex/account").body,
        "MyPlex",
    );
    assert_eq!(answer[0]["signInState"], "none", "{answer:?}");
    assert!(prefs(&world.app).online_token().is_none());
    drop(pms);

    // A token used after its lifetime is refused with the reason.
    let other = world_with_fresh_server(&world);
    let short = PlexTvDouble::start(ACCOUNT, &["--claim-ttl", "300ms"]);
    let pms = PlexDouble::start(
        &other,
        &[
            "--allowed-networks",
            "127.0.0.0/8",
            "--plextv-url",
            &short.url,
        ],
        &[],
    );
    let claim = short.claim_token();
    // Outliving the token is the condition under test: waited for in
    // plex.tv's own view of the token, not slept out.
    wait_for("plex.tv to count the claim token expired", WAIT, || {
        (short.claim(&claim)["expired"] == true).then_some(())
    });
    let reply = call(
        &pms,
        ACCOUNT,
        "POST",
        &format!("/myplex/claim?token={claim}"),
    );
    assert!((400..500).contains(&reply.status), "{reply:?}");
    assert!(reply.body.contains("expired"), "{}", reply.body);
    assert!(prefs(&other).online_token().is_none());
    // And a used one too.
    let claim = short.claim_token();
    ok(
        &pms,
        ACCOUNT,
        "POST",
        &format!("/myplex/claim?token={claim}"),
    );
    let reuse = request(
        "POST",
        &short.url(&format!("/api/claim/exchange?token={claim}")),
        &[("X-Plex-Client-Identifier", "another-server")],
    )
    .unwrap();
    assert!(
        reuse.status >= 400 && reuse.body.contains("used"),
        "{reuse:?}"
    );
}

/// An empty app-support folder beside the world's: the double creates the
/// layout (Preferences.xml, log, a DB with the full schema).
fn world_with_fresh_server(world: &World) -> PathBuf {
    world.root.join(format!("fresh-{}", free_port()))
}

#[test]
fn a_fresh_folder_gets_the_plex_layout_and_a_clean_stop_checkpoints() {
    let world = world();
    let app = world_with_fresh_server(&world);
    let mut pms = PlexDouble::start(&app, &["--allowed-networks", "127.0.0.1/32"], &[]);
    // Plex reports and registers the ProcessedMachineIdentifier, the
    // official image's hash of the MachineIdentifier.
    let machine = prefs(&app).machine_identifier().to_string();
    let uuid = prefs(&app).get("MachineIdentifier").unwrap().to_string();
    assert_eq!(uuid.len(), 36);
    assert_eq!(machine, processed_machine_identifier(&uuid));
    let identity = xml_elements(
        &get(&pms.url("/identity"), &[]).unwrap().body,
        "MediaContainer",
    );
    assert_eq!(identity[0]["machineIdentifier"], machine);
    assert!(pms.log().contains("Listening on"));
    assert_eq!(count(&pms, "SELECT count(*) FROM library_sections"), 0);
    assert!(
        count(
            &pms,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'fts4_metadata_titles%_icu'"
        ) > 0,
        "the full Plex schema, triggers included"
    );
    // A section created through the API, then a title write: Plex's own
    // triggers stay in place but do not break the double's writes.
    let movies = world.media.join("Movies");
    ok(
        &pms,
        "",
        "POST",
        &format!(
            "/library/sections?name=Films%20%26%20Co&type=movie&agent=tv.plex.agents.movie&scanner=Plex%20Movie&language=en&location={}",
            movies.display()
        ),
    );
    set_prefs(&pms, "", "ButlerTaskDeepMediaAnalysis=0");
    scan(&pms, "", 1);
    assert_eq!(
        total_size(&pms, "", 1, 1),
        12,
        "every movie file on disk was added"
    );
    let sections = ok(&pms, "", "GET", "/library/sections").body;
    assert!(sections.contains("title=\"Films &amp; Co\""), "{sections}");
    let status = pms.terminate();
    assert!(status.success(), "{status:?}");
    assert!(pms.log().contains("checkpointed"));
    let wal = pms.library_db().with_extension("db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "WAL truncated"
    );
    drop(pms);
    let again = PlexDouble::start(&app, &[], &[]);
    assert_eq!(
        prefs(&app).machine_identifier(),
        machine,
        "identity kept across restarts"
    );
    assert_eq!(
        count(&again, "SELECT count(*) FROM library_sections"),
        1,
        "the DB is used as is"
    );
}

#[test]
fn section_creation_and_requests_are_strict() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    let dir = world.media.join("Movies").display().to_string();
    let create = |query: &str| call(&pms, token, "POST", &format!("/library/sections?{query}"));
    let good = format!(
        "name=New&type=movie&agent=tv.plex.agents.movie&scanner=Plex%20Movie&language=en&location={dir}"
    );
    for bad in [
        good.replace("type=movie", "type=film"),
        good.replace("agent=tv.plex.agents.movie", "agent=tv.plex.agents.series"),
        good.replace("scanner=Plex%20Movie", "scanner=Plex%20Music"),
        good.replace(&format!("&location={dir}"), ""),
        good.replace(&dir, "/no/such/folder"),
        good.replace("name=New", "name=Movies"),
        good.replace("&language=en", ""),
    ] {
        let reply = create(&bad);
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    let created = create(&format!(
        "{good}&location={}",
        world.media.join("Photos").display()
    ));
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        xml_elements(&created.body, "Location").len(),
        2,
        "location is repeatable"
    );
    assert_eq!(
        xml_elements(
            &ok(&pms, token, "GET", "/library/sections").body,
            "Directory"
        )
        .len(),
        5
    );

    assert_eq!(
        call(&pms, token, "GET", "/library/sections/99/refresh").status,
        404
    );
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/abc/refresh").status,
        404
    );
    assert_eq!(
        call(&pms, token, "PUT", "/library/sections/1/refresh").status,
        405
    );
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/1/refresh?force=2").status,
        400
    );
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/1/refresh?path=/etc").status,
        400
    );
    let outside = format!(
        "/library/sections/1/refresh?path={}/../TV%20Shows",
        world.media.join("Movies").display()
    );
    assert_eq!(call(&pms, token, "GET", &outside).status, 400);
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/99/all?type=1").status,
        404
    );
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/1/all?type=abc").status,
        400
    );
    assert_eq!(
        call(
            &pms,
            token,
            "GET",
            "/library/sections/1/all?type=1&X-Plex-Container-Size=-1"
        )
        .status,
        400
    );
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/1/emptyTrash").status,
        405
    );
    assert_eq!(
        call(&pms, token, "PUT", "/library/sections/99/analyze").status,
        404
    );
    assert_eq!(call(&pms, token, "POST", "/butler/NoSuchTask").status, 404);
    assert_eq!(
        call(&pms, token, "DELETE", "/butler/NoSuchTask").status,
        404
    );
}

#[test]
fn a_scan_adds_new_files_with_their_hierarchy() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let movies_before = total_size(&pms, token, MOVIES, 1);
    let episodes_before = total_size(&pms, token, SHOWS, 4);
    let (existing, _) = live_file(&pms, MOVIES);
    let bytes = std::fs::read(&existing).unwrap();
    for name in ["Brand New (2024)", "Other New (2023)"] {
        let folder = world.media.join("Movies").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{name}.mkv")), &bytes).unwrap();
    }
    std::fs::write(
        world
            .media
            .join("Movies/Brand New (2024)/Brand New (2024).en.srt"),
        "1\n",
    )
    .unwrap();
    let season = world.media.join("TV Shows/Fresh Show (2022)/Season 01");
    std::fs::create_dir_all(&season).unwrap();
    for episode in 1..=2 {
        std::fs::write(
            season.join(format!(
                "Fresh Show (2022) - s01e0{episode} - Part {episode}.mkv"
            )),
            &bytes,
        )
        .unwrap();
    }

    scan(&pms, token, MOVIES);
    assert_eq!(
        total_size(&pms, token, MOVIES, 1),
        movies_before + 2,
        "subtitles are not items"
    );
    let path = world
        .media
        .join("Movies/Brand New (2024)/Brand New (2024).mkv");
    let (title, year, size): (String, i64, i64) = db(&pms)
        .query_row(
            "SELECT m.title, m.year, mp.size FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id
             JOIN metadata_items m ON m.id = mi.metadata_item_id WHERE mp.file = ?1",
            [path.display().to_string()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (title.as_str(), year, size),
        ("Brand New", 2024, bytes.len() as i64)
    );
    assert_eq!(
        count(
            &pms,
            &format!(
                "SELECT count(*) FROM metadata_items WHERE library_section_id = {MOVIES} AND metadata_type = 1 AND deleted_at IS NULL"
            )
        ),
        movies_before + 2,
        "the API and the DB agree"
    );

    scan(&pms, token, SHOWS);
    assert_eq!(total_size(&pms, token, SHOWS, 4), episodes_before + 2);
    assert_eq!(
        count(
            &pms,
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 2 AND title = 'Fresh Show'"
        ),
        1,
        "one show for both episodes"
    );
    assert_eq!(
        count(&pms, "SELECT count(*) FROM metadata_items e JOIN metadata_items s ON s.id = e.parent_id
                     WHERE e.metadata_type = 4 AND s.metadata_type = 3 AND s.\"index\" = 1 AND e.title LIKE 'Part %'"),
        2,
        "episodes hang under season 1"
    );
    let scanned = xml_elements(
        &ok(&pms, token, "GET", "/library/sections").body,
        "Directory",
    );
    assert!(scanned[1].contains_key("scannedAt"));
    assert!(pms.log().contains("Scanner: section 2 'TV Shows' done"));
}

#[test]
fn a_missing_file_is_purged_with_auto_empty_trash_and_marked_without_then_restored() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let before = total_size(&pms, token, MOVIES, 1);
    let trashed_before = count(
        &pms,
        &format!(
            "SELECT count(*) FROM metadata_items WHERE library_section_id = {MOVIES} AND deleted_at IS NOT NULL"
        ),
    );
    assert_eq!(trashed_before, 2, "the fixture's deleted movies");

    // autoEmptyTrash on (the fixture's setting): the item is gone, and the
    // whole trash with it.
    let (file, item) = live_file(&pms, MOVIES);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    scan(&pms, token, MOVIES);
    assert_eq!(deleted_at(&pms, item), None, "rows deleted");
    assert_eq!(
        count(
            &pms,
            &format!(
                "SELECT count(*) FROM media_parts WHERE file = '{}'",
                file.display()
            )
        ),
        0
    );
    assert_eq!(
        count(
            &pms,
            &format!(
                "SELECT count(*) FROM metadata_items WHERE library_section_id = {MOVIES} AND deleted_at IS NOT NULL"
            )
        ),
        0
    );
    assert_eq!(total_size(&pms, token, MOVIES, 1), before - 1);
    std::fs::write(&file, &bytes).unwrap();
    scan(&pms, token, MOVIES);
    assert_eq!(
        total_size(&pms, token, MOVIES, 1),
        before,
        "comes back as a new item"
    );

    // autoEmptyTrash off: marked unavailable, then restored.
    set_prefs(&pms, token, "autoEmptyTrash=0");
    let (file, item) = live_file(&pms, MOVIES);
    let moved = file.with_extension("moved");
    std::fs::rename(&file, &moved).unwrap();
    scan(&pms, token, MOVIES);
    assert!(
        matches!(deleted_at(&pms, item), Some(Some(_))),
        "metadata item in the trash"
    );
    let parts_marked = count(
        &pms,
        &format!(
            "SELECT count(*) FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id
         WHERE mp.file = '{}' AND mp.deleted_at IS NOT NULL AND mi.deleted_at IS NOT NULL",
            file.display()
        ),
    );
    assert_eq!(parts_marked, 1, "media item and part marked too");
    assert_eq!(total_size(&pms, token, MOVIES, 1), before - 1);
    std::fs::rename(&moved, &file).unwrap();
    scan(&pms, token, MOVIES);
    assert_eq!(deleted_at(&pms, item), Some(None), "restored");
    assert_eq!(total_size(&pms, token, MOVIES, 1), before);

    // Marked, then emptyTrash deletes it.
    std::fs::rename(&file, &moved).unwrap();
    scan(&pms, token, MOVIES);
    ok(
        &pms,
        token,
        "PUT",
        &format!("/library/sections/{MOVIES}/emptyTrash"),
    );
    assert_eq!(deleted_at(&pms, item), None);
}

#[test]
fn a_hung_read_is_unreadable_and_never_hangs_the_server() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &["--header-timeout", "700ms"], &[]);
    let token = &world.token;
    set_prefs(
        &pms,
        token,
        "ButlerTaskDeepMediaAnalysis=0&autoEmptyTrash=0",
    );
    let before = total_size(&pms, token, MOVIES, 1);
    // A FIFO blocks on open until a writer comes: a read that hangs.
    let (file, item) = live_file(&pms, MOVIES);
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let new_folder = world.media.join("Movies/Hung (2020)");
    std::fs::create_dir_all(&new_folder).unwrap();
    nix::unistd::mkfifo(
        &new_folder.join("Hung (2020).mkv"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();

    ok(
        &pms,
        token,
        "GET",
        &format!("/library/sections/{MOVIES}/refresh"),
    );
    // The scan's reader is in the FIFO once a writer can open it without
    // blocking (fifo(7): ENXIO while no reader). Held open and silent,
    // the writer keeps that read hung until this test lets it go.
    let writer = wait_for("the scan's read of the FIFO", WAIT, || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&file)
            .ok()
    });
    // The scan gives up on the read (its log says so) while it still
    // hangs, the server answers, and the scan ends: nothing waited for it.
    let gave_up = format!("cannot read {}: no data within 700ms", file.display());
    wait_for("the scan to give up on the hung read", WAIT, || {
        pms.log().contains(&gave_up).then_some(())
    });
    ok(&pms, token, "GET", "/library/sections");
    ok(&pms, token, "GET", "/activities");
    wait_idle(&pms, token);
    assert!(
        matches!(deleted_at(&pms, item), Some(Some(_))),
        "the hung file counts as unreadable"
    );
    assert_eq!(
        total_size(&pms, token, MOVIES, 1),
        before - 1,
        "the new FIFO was not added"
    );
    // Let the hung reader end.
    drop(writer);
}

#[test]
fn known_files_listed_keeps_a_listed_file_unread_and_still_loses_a_missing_one() {
    let world = world();
    let pms = PlexDouble::start(
        &world.app,
        &["--header-timeout", "700ms", "--known-files", "listed"],
        &[],
    );
    let token = &world.token;
    set_prefs(
        &pms,
        token,
        "ButlerTaskDeepMediaAnalysis=0&autoEmptyTrash=0",
    );
    let before = total_size(&pms, token, MOVIES, 1);
    // A known file that would hang a read (a FIFO) but is listed: kept,
    // never opened (a reader would block in it until the timeout).
    let (hung, hung_item) = live_file(&pms, MOVIES);
    std::fs::remove_file(&hung).unwrap();
    nix::unistd::mkfifo(&hung, nix::sys::stat::Mode::S_IRWXU).unwrap();
    scan(&pms, token, MOVIES);
    assert_eq!(deleted_at(&pms, hung_item), Some(None), "kept unread");
    assert!(
        !pms.log()
            .contains(&format!("cannot read {}", hung.display())),
        "the listed file was read"
    );
    assert_eq!(total_size(&pms, token, MOVIES, 1), before);
    // A known file that is no longer listed is still gone, and a new one
    // is still read and added.
    std::fs::remove_file(&hung).unwrap();
    let new_folder = world.media.join("Movies/Listed (2021)");
    std::fs::create_dir_all(&new_folder).unwrap();
    std::fs::write(
        new_folder.join("Listed (2021).mkv"),
        b"\x1aE\xdf\xa3 a film",
    )
    .unwrap();
    scan(&pms, token, MOVIES);
    assert!(
        matches!(deleted_at(&pms, hung_item), Some(Some(_))),
        "the missing file counts as gone"
    );
    assert_eq!(
        total_size(&pms, token, MOVIES, 1),
        before,
        "one gone, one added"
    );
}

#[test]
fn sonic_runs_at_the_configured_rate_with_plex_pass_only() {
    let world = world();
    let plextv = PlexTvDouble::start(ACCOUNT, &[]);
    let (pms, token) = claimed(&world, &plextv, &["--sonic-rate", "10"]);
    // Library tracks: theme songs (section -2) are never analysed.
    let live = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND library_section_id > 0";
    let analysed = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND extra_data LIKE '%musicAnalysisVersion%'";
    let total = count(&pms, live);
    let start = count(&pms, analysed);
    assert_eq!((total, start), (20, 5));
    let account = xml_elements(&ok(&pms, &token, "GET", "/myplex/account").body, "MyPlex");
    assert_eq!(account[0]["subscriptionActive"], "1");

    let began = Instant::now();
    ok(&pms, &token, "POST", "/butler/MusicAnalysis");
    let again = call(&pms, &token, "POST", "/butler/MusicAnalysis");
    assert_eq!(again.status, 202, "already running");
    let sonic = wait_for("the Sonic activity", WAIT, || {
        activities(&pms, &token)
            .into_iter()
            .find(|a| a["type"] == "media.analyze.sonic")
    });
    assert_eq!(sonic["cancellable"], "1");
    let scanners = wait_for(
        "a Plex Media Scanner process while Sonic runs",
        WAIT,
        || {
            let found = scanner_processes(pms.pid());
            (!found.is_empty()).then_some(found)
        },
    );
    assert_eq!(scanners.len(), 1, "one scanner process");
    // The scanner names itself just after it starts.
    wait_for("the scanner's process name", WAIT, || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", scanners[0])).ok()?;
        (comm.trim() == "Plex Media Scan").then_some(())
    });
    let mid = wait_for("Sonic progress in the DB", WAIT, || {
        let n = count(&pms, analysed);
        (n > start).then_some(n)
    });
    assert!(mid < total, "progress is gradual: {mid} of {total} at once");
    wait_for("Sonic to finish", WAIT, || {
        (count(&pms, analysed) == total).then_some(())
    });
    let elapsed = began.elapsed();
    // 15 tracks at 10 per second.
    assert!(
        elapsed >= Duration::from_millis(1200),
        "too fast for the rate: {elapsed:?}"
    );
    wait_for("the Sonic activity and scanner to end", WAIT, || {
        (activities(&pms, &token).is_empty() && scanner_processes(pms.pid()).is_empty())
            .then_some(())
    });
    let conn = db(&pms);
    let mut statement = conn
        .prepare("SELECT extra_data FROM metadata_items WHERE metadata_type = 10 AND library_section_id > 0 AND extra_data LIKE '{%'")
        .unwrap();
    for extra in statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
    {
        let json: serde_json::Value =
            serde_json::from_str(&extra.unwrap()).expect("JSON form kept valid");
        assert_eq!(json["ms:musicAnalysisVersion"], "1");
    }
    drop(pms);

    // Without Plex Pass nothing moves.
    let world = self::world();
    let plextv = PlexTvDouble::start(ACCOUNT, &["--plex-pass", "false"]);
    let (pms, token) = claimed(&world, &plextv, &["--sonic-rate", "50"]);
    let account = xml_elements(&ok(&pms, &token, "GET", "/myplex/account").body, "MyPlex");
    assert_eq!(account[0]["subscriptionActive"], "0");
    ok(&pms, &token, "POST", "/butler/MusicAnalysis");
    wait_for("the Plex Pass refusal in the log", WAIT, || {
        pms.log().contains("needs Plex Pass").then_some(())
    });
    wait_idle(&pms, &token);
    assert_eq!(
        count(&pms, analysed),
        5,
        "no Sonic progress without Plex Pass"
    );
}

/// The double's DB write stats, as `GET /__double/db-writes` answers them
/// to anyone (no token).
fn db_writes(pms: &PlexDouble, method: &str) -> serde_json::Value {
    let reply = request(method, &pms.url("/__double/db-writes"), &[]).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

#[test]
fn sonic_writes_wait_out_a_locked_db_and_the_wait_is_measured() {
    let world = world();
    let plextv = PlexTvDouble::start(ACCOUNT, &[]);
    // 15 tracks at 2 per second.
    let (mut pms, token) = claimed(&world, &plextv, &["--sonic-rate", "2"]);
    let analysed = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND extra_data LIKE '%musicAnalysisVersion%'";
    let live = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL AND library_section_id > 0";
    let (total, start) = (count(&pms, live), count(&pms, analysed));
    db_writes(&pms, "DELETE");
    assert_eq!(
        db_writes(&pms, "GET"),
        serde_json::json!({"writes": 0, "max_write_ms": 0.0, "busy_retries": 0})
    );
    ok(&pms, &token, "POST", "/butler/MusicAnalysis");
    wait_for("Sonic progress in the DB", WAIT, || {
        (count(&pms, analysed) > start).then_some(())
    });
    // Another connection holds the write lock for a second: the double's
    // next write waits for it rather than failing.
    let other = Connection::open(pms.library_db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    other.execute_batch("COMMIT").unwrap();
    wait_for("Sonic to finish", WAIT, || {
        (count(&pms, analysed) == total).then_some(())
    });
    let stats = db_writes(&pms, "GET");
    assert!(stats["writes"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["busy_retries"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["max_write_ms"].as_f64().unwrap() >= 500.0,
        "the wait for the lock is part of the write: {stats}"
    );
    assert!(!pms.log().contains("MusicAnalysis failed"), "{}", pms.log());
    assert!(pms.terminate().success());
    assert!(pms.log().contains("DB writes: "), "{}", pms.log());
}

#[test]
fn deep_media_analysis_follows_a_scan_when_its_butler_pref_is_on() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &["--deep-analysis-duration", "3s"], &[]);
    let token = &world.token;
    ok(
        &pms,
        token,
        "GET",
        &format!("/library/sections/{MUSIC}/refresh"),
    );
    let deep = wait_for("DeepMediaAnalysis after the scan", WAIT, || {
        activities(&pms, token)
            .into_iter()
            .find(|a| a["type"] == "media.analyze.deep")
    });
    assert!(deep["progress"].parse::<i64>().unwrap() < 100);
    assert!(
        !scanner_processes(pms.pid()).is_empty(),
        "deep analysis keeps a scanner process"
    );
    assert_eq!(
        call(&pms, token, "POST", "/butler/DeepMediaAnalysis").status,
        202
    );
    wait_idle(&pms, token);
    wait_for("the scanner process to end", WAIT, || {
        scanner_processes(pms.pid()).is_empty().then_some(())
    });

    // With the pref off a scan is followed by nothing.
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let butler = xml_elements(&ok(&pms, token, "GET", "/butler").body, "ButlerTask");
    assert_eq!(
        butler
            .iter()
            .find(|t| t["name"] == "DeepMediaAnalysis")
            .unwrap()["enabled"],
        "0"
    );
    let starts = pms
        .log()
        .matches("Butler: starting DeepMediaAnalysis")
        .count();
    scan(&pms, token, MUSIC);
    assert_eq!(
        pms.log()
            .matches("Butler: starting DeepMediaAnalysis")
            .count(),
        starts
    );

    // A manual start, and a stop.
    ok(&pms, token, "POST", "/butler/DeepMediaAnalysis");
    wait_for("the deep activity", WAIT, || {
        activities(&pms, token)
            .iter()
            .any(|a| a["type"] == "media.analyze.deep")
            .then_some(())
    });
    ok(&pms, token, "DELETE", "/butler/DeepMediaAnalysis");
    wait_idle(&pms, token);
}

#[test]
fn section_analysis_is_an_activity_with_a_scanner_process() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &[], &[]);
    let token = &world.token;
    ok(
        &pms,
        token,
        "PUT",
        &format!("/library/sections/{MUSIC}/analyze"),
    );
    let analysis = wait_for("the analysis activity", WAIT, || {
        activities(&pms, token)
            .into_iter()
            .find(|a| a["type"] == "library.analyze.section")
    });
    let json = request(
        "GET",
        &pms.url("/activities"),
        &[("X-Plex-Token", token), ("Accept", "application/json")],
    )
    .unwrap()
    .json();
    if let Some(activity) = json["MediaContainer"]["Activity"].get(0) {
        assert_eq!(activity["Context"]["librarySectionID"], MUSIC.to_string());
        assert!(activity["progress"].is_i64());
    }
    assert!(analysis.contains_key("uuid") && analysis.contains_key("subtitle"));
    wait_idle(&pms, token);
    assert_eq!(
        count(
            &pms,
            &format!(
                "SELECT count(*) FROM media_items WHERE library_section_id = {MUSIC} AND deleted_at IS NULL AND media_analysis_version = 1"
            )
        ),
        20
    );
}

#[test]
fn an_unknown_fault_is_a_startup_error_naming_it() {
    let world = world();
    let mut pms = PlexDouble::spawn(&world.app, &["--fault", "crash-on-scan,melt-down"], &[]);
    let status = pms.wait_exit(WAIT).expect("exits");
    assert!(!status.success());
    assert!(pms.stderr().contains("melt-down"), "{}", pms.stderr());
    // The environment works like the flag.
    let mut pms = PlexDouble::spawn(&world.app, &[], &[("PLEX_DOUBLE_FAULT", "slow-start")]);
    assert!(!pms.wait_exit(WAIT).expect("exits").success());
    assert!(pms.stderr().contains("slow-start"), "{}", pms.stderr());
}

#[test]
fn fault_slow_start_and_burst_of_503() {
    let world = world();
    let started = Instant::now();
    let pms = PlexDouble::spawn(&world.app, &["--fault", "slow-start=3s"], &[]);
    // Up and in its slow start (this process's log line says so), not
    // merely not started yet: from then on it refuses connections until
    // it listens. Three seconds outlast a busy machine's pause between
    // seeing the line and connecting.
    let slow = format!("[{}] WARN - fault slow-start: not listening", pms.pid());
    wait_for("the slow start in the log", WAIT, || {
        pms.log().contains(&slow).then_some(())
    });
    let mut refused = 0;
    wait_for(
        "the double to listen",
        WAIT,
        || match std::net::TcpStream::connect(pms.addr) {
            Ok(_) => Some(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused += 1;
                None
            }
            Err(e) => panic!("connecting to the double: {e}"),
        },
    );
    assert!(
        refused > 0,
        "a connection was accepted during the slow start"
    );
    pms.wait_ready(WAIT).unwrap();
    // A lower bound: a busy machine only makes it longer.
    assert!(started.elapsed() >= Duration::from_millis(2900));
    drop(pms);

    let pms = PlexDouble::start(
        &world.app,
        &["--fault", "burst-5xx=3"],
        &[("PLEX_DOUBLE_VERSION", VERSION)],
    );
    let statuses: Vec<u16> = (0..5)
        .map(|_| call(&pms, &world.token, "GET", "/library/sections").status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 503, 200, 200]);
    drop(pms);

    // Timed from the start: no start-up window before it.
    let pms = PlexDouble::start(
        &world.app,
        &["--fault", "burst-5xx=2@2s", "--startup-window", "0s"],
        &[],
    );
    assert_eq!(
        call(&pms, &world.token, "GET", "/activities").status,
        200,
        "not yet"
    );
    wait_for("the delayed burst", WAIT, || {
        (call(&pms, &world.token, "GET", "/activities").status == 503).then_some(())
    });
    assert_eq!(
        get(&pms.url("/identity"), &[]).unwrap().status,
        200,
        "identity is spared"
    );
}

#[test]
fn fault_crashes() {
    let world = world();
    let mut pms = PlexDouble::start(&world.app, &["--fault", "crash-after=2s"], &[]);
    let status = pms.wait_exit(WAIT).expect("crashes");
    assert!(!status.success(), "{status:?}");
    assert!(pms.log().contains("fault crash-after"));

    let mut pms = PlexDouble::start(&world.app, &["--fault", "crash-on-scan"], &[]);
    assert_eq!(call(&pms, &world.token, "GET", "/activities").status, 200);
    // The reply may or may not make it out before the abort.
    let _ = request(
        "GET",
        &pms.url(&format!("/library/sections/{MOVIES}/refresh")),
        &[("X-Plex-Token", &world.token)],
    );
    let status = pms.wait_exit(WAIT).expect("crashes on the scan");
    assert!(!status.success(), "{status:?}");
}

#[test]
fn fault_stuck_activity_never_finishes_and_does_no_db_work() {
    let world = world();
    let mut pms = PlexDouble::start(&world.app, &["--fault", "stuck-activity"], &[]);
    let token = &world.token;
    let before = total_size(&pms, token, MOVIES, 1);
    let folder = world.media.join("Movies/Never Added (2021)");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("Never Added (2021).mkv"),
        b"\x1a\x45\xdf\xa3 header",
    )
    .unwrap();
    ok(
        &pms,
        token,
        "GET",
        &format!("/library/sections/{MOVIES}/refresh"),
    );
    let first = wait_for("the scan activity", WAIT, || {
        activities(&pms, token)
            .into_iter()
            .find(|a| a["type"] == "library.update.section")
    });
    ok(
        &pms,
        token,
        "DELETE",
        &format!("/library/sections/{MOVIES}/refresh"),
    );
    // The frozen scan saw the cancel and kept still (its log says so):
    // what is checked below is the fault's doing, not a look taken before
    // the double had run.
    let ignored = format!("fault stuck-activity: the scan of section {MOVIES} ignores its cancel");
    wait_for("the frozen scan to see its cancel", WAIT, || {
        pms.log().contains(&ignored).then_some(())
    });
    let later = activities(&pms, token);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0]["uuid"], first["uuid"]);
    assert_eq!(later[0]["progress"], first["progress"], "frozen progress");
    let dirs = xml_elements(
        &ok(&pms, token, "GET", "/library/sections").body,
        "Directory",
    );
    assert_eq!(dirs[0]["refreshing"], "1");
    assert_eq!(scanner_processes(pms.pid()).len(), 1);
    assert_eq!(total_size(&pms, token, MOVIES, 1), before, "no DB work");
    let status = pms.terminate();
    assert!(
        status.success(),
        "a stuck server still stops cleanly: {status:?}"
    );
}

#[test]
fn fault_stuck_sonic_stops_progress_but_keeps_the_activity() {
    let world = world();
    let plextv = PlexTvDouble::start(ACCOUNT, &[]);
    let (pms, token) = claimed(
        &world,
        &plextv,
        &["--sonic-rate", "50", "--fault", "stuck-sonic"],
    );
    let analysed = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND extra_data LIKE '%musicAnalysisVersion%'";
    ok(&pms, &token, "POST", "/butler/MusicAnalysis");
    wait_for("a few tracks", WAIT, || {
        (count(&pms, analysed) == 8).then_some(())
    });
    // Ten turns of the double's Sonic loop without progress (its log
    // counts them): the double ran while nothing moved.
    wait_for("ten stuck turns of Sonic", WAIT, || {
        pms.log()
            .contains("fault stuck-sonic: no progress for 10 ticks")
            .then_some(())
    });
    assert_eq!(count(&pms, analysed), 8, "5 before, 3 more, then nothing");
    let sonic = activities(&pms, &token);
    assert!(
        sonic.iter().any(|a| a["type"] == "media.analyze.sonic"),
        "{sonic:?}"
    );
    assert_eq!(scanner_processes(pms.pid()).len(), 1);
    ok(&pms, &token, "DELETE", "/butler/MusicAnalysis");
    wait_idle(&pms, &token);
}

/// A GDM search to `port` on loopback: the answer, if any within 2 s.
fn gdm_search(port: u16) -> Option<String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // As python-plexapi's gdm.py sends it.
    socket
        .send_to(b"M-SEARCH * HTTP/1.0", ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn gdm_answers_discovery_while_on_and_the_run_prefs_exist_and_start_exposed() {
    let world = world();
    let gdm = free_port();
    let pms = PlexDouble::start(&world.app, &["--gdm-port", &gdm.to_string()], &[]);
    let token = &world.token;
    let settings = xml_elements(&ok(&pms, token, "GET", "/:/prefs").body, "Setting");
    for id in ["PublishServerOnPlexOnlineKey", "GdmEnabled", "DlnaEnabled"] {
        let setting = settings
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no pref {id}"));
        assert_eq!(setting["type"], "bool", "{setting:?}");
        assert_eq!(
            setting["value"], "1",
            "on by default, as on a fresh Plex: {setting:?}"
        );
    }
    // Not offered by /:/prefs (python-plexapi's listing of a real one).
    assert_eq!(
        call(&pms, token, "PUT", "/:/prefs?RelayEnabled=0").status,
        400
    );

    let answer = gdm_search(gdm).expect("GDM on: the double answers");
    let lines: Vec<&str> = answer.split("\r\n").collect();
    assert_eq!(lines[0], "HTTP/1.0 200 OK", "{answer}");
    let machine = prefs(&world.app).machine_identifier().to_string();
    for header in [
        "Content-Type: plex/media-server".to_string(),
        format!("Resource-Identifier: {machine}"),
        format!(
            "Port: {}",
            pms.url("")
                .rsplit(':')
                .next()
                .unwrap()
                .trim_end_matches('/')
        ),
        format!("Version: {VERSION}"),
    ] {
        assert!(
            lines.contains(&header.as_str()),
            "{header} missing: {answer}"
        );
    }
    // Not a search: no answer.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(b"HELLO", ("127.0.0.1", gdm)).unwrap();
    assert!(socket.recv_from(&mut [0u8; 64]).is_err());

    set_prefs(
        &pms,
        token,
        "GdmEnabled=0&PublishServerOnPlexOnlineKey=0&DlnaEnabled=0",
    );
    assert_eq!(gdm_search(gdm), None, "GDM off: silent");
    set_prefs(&pms, token, "GdmEnabled=1");
    assert!(gdm_search(gdm).is_some(), "GDM on again: answers");
}

#[test]
fn library_writes_are_refused_while_the_server_starts_up() {
    let world = world();
    let mut pms = PlexDouble::spawn(&world.app, &["--startup-window", "10s"], &[]);
    pms.wait_ready(WAIT).unwrap();
    let token = &world.token;
    // Already answering: identity, reads and prefs.
    assert_eq!(get(&pms.url("/identity"), &[]).unwrap().status, 200);
    ok(&pms, token, "GET", "/library/sections");
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let location = world.media.join("Movies");
    let writes = [
        (
            "POST",
            format!(
                "/library/sections?name=Films&type=movie&agent=tv.plex.agents.movie&scanner=Plex%20Movie&language=en-US&location={}",
                location.display()
            ),
        ),
        ("GET", format!("/library/sections/{MOVIES}/refresh")),
        ("GET", "/library/sections/all/refresh".to_string()),
        ("PUT", format!("/library/sections/{MOVIES}/analyze")),
        ("POST", "/butler/MusicAnalysis".to_string()),
    ];
    for (method, path) in &writes {
        let reply = call(&pms, token, method, path);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (400, "the server is still starting up. Please retry later"),
            "{method} {path}"
        );
    }
    assert!(activities(&pms, token).is_empty(), "nothing was started");
    pms.wait_started(WAIT);
    let (method, path) = &writes[0];
    ok(&pms, token, method, path);
    scan(&pms, token, MOVIES);
}

#[test]
fn the_timeline_reports_the_update_queue_that_drains_after_the_scan() {
    let world = world();
    let pms = PlexDouble::start(&world.app, &["--metadata-rate", "1"], &[]);
    let token = &world.token;
    set_prefs(&pms, token, "ButlerTaskDeepMediaAnalysis=0");
    let timeline = |section: i64| {
        let path = format!("/library/sections/{section}/timeline");
        xml_elements(&ok(&pms, token, "GET", &path).body, "MediaContainer").remove(0)
    };
    // Every attribute python-plexapi's LibraryTimeline reads, with the
    // values its tests saw on a real server.
    let before = timeline(MOVIES);
    for (key, value) in [
        ("updateQueueSize", "0"),
        ("allowSync", "0"),
        ("art", "/:/resources/movie-fanart.jpg"),
        ("thumb", "/:/resources/movie.png"),
        ("content", "secondary"),
        ("identifier", "com.plexapp.plugins.library"),
        ("mediaTagPrefix", "/system/bundle/media/flags/"),
        ("title1", "Movies"),
        ("viewGroup", "secondary"),
    ] {
        assert_eq!(before[key], value, "{key}: {before:?}");
    }
    assert!(before["mediaTagVersion"].parse::<i64>().unwrap() > 1);
    assert!(before["latestEntryTime"].parse::<i64>().unwrap() > 0);
    assert!(before["size"].parse::<i64>().unwrap() > 0);
    assert!(!before.contains_key("viewMode"));
    assert_eq!(timeline(MUSIC)["art"], "/:/resources/artist-fanart.jpg");
    assert_eq!(
        call(&pms, token, "GET", "/library/sections/99/timeline").status,
        404
    );

    let (existing, _) = live_file(&pms, MOVIES);
    for name in [
        "Queued One (2021)",
        "Queued Two (2022)",
        "Queued Three (2023)",
    ] {
        let folder = world.media.join("Movies").join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(&existing, folder.join(format!("{name}.mkv"))).unwrap();
    }
    let unprocessed = format!(
        "SELECT count(*) FROM metadata_items WHERE library_section_id = {MOVIES} AND metadata_type = 1
         AND (refreshed_at IS NULL OR guid NOT LIKE 'plex://movie/%')"
    );
    // The scan's activity ends with its items still queued: unmatched.
    scan(&pms, token, MOVIES);
    let queued: i64 = timeline(MOVIES)["updateQueueSize"].parse().unwrap();
    assert!(queued > 0, "the queue outlives the scan's activity");
    assert!(count(&pms, &unprocessed) > 0);
    wait_for("the update queue to drain", WAIT, || {
        (timeline(MOVIES)["updateQueueSize"] == "0").then_some(())
    });
    assert_eq!(count(&pms, &unprocessed), 0, "every new movie matched");
    assert!(
        pms.log()
            .contains("Metadata: update queue of section 1 drained")
    );
    let json = request(
        "GET",
        &pms.url(&format!("/library/sections/{MOVIES}/timeline")),
        &[("X-Plex-Token", token), ("Accept", "application/json")],
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(json["MediaContainer"]["updateQueueSize"], 0, "{json}");
}
