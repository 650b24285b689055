//! `GET /` (the server root) and `GET /library`, in the shape real Plex
//! answers them: the root's attributes are those python-plexapi's
//! `PlexServer._loadData` reads (pkkid/python-plexapi a8d051f,
//! plexapi/server.py; a real 1.25 server's answer is quoted on
//! plexopedia.com's "Get Server Capabilities" page), its children the
//! `Directory` entries of the server's endpoints; `/library` carries the
//! `identifier` and `title1` its `Library` object reads.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::HeaderMap;

use super::Shared;
use crate::plexdouble::ids;
use crate::plexdouble::render::{Element, Format};
use crate::plexdouble::web::ApiResult;

/// What the root lists, as real Plex does (a subset: the endpoints the
/// double has, and the usual neighbours clients probe).
const ROOT_DIRECTORIES: &[&str] = &[
    "activities",
    "butler",
    "identity",
    "library",
    "myplex",
    "playlists",
    "search",
    "servers",
    "system",
    "transcode",
    "updater",
];

/// The server's `updatedAt`: when this process first answered.
fn updated_at() -> i64 {
    static STARTED: OnceLock<i64> = OnceLock::new();
    *STARTED.get_or_init(ids::now)
}

/// The kernel release, as Plex reports `platformVersion` on Linux.
fn platform_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn root(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let (friendly_name, username, signed_in) = {
        let prefs = state.prefs();
        let username = prefs
            .get("PlexOnlineMail")
            .or(prefs.get("PlexOnlineUsername"))
            .unwrap_or_default()
            .to_string();
        (
            prefs.get("FriendlyName").unwrap_or_default().to_string(),
            username,
            prefs.online_token().is_some(),
        )
    };
    let directories = ROOT_DIRECTORIES.iter().map(|key| {
        Element::new("Directory")
            .attr("count", 1_i64)
            .attr("key", *key)
            .attr("title", *key)
    });
    let container = Element::container(directories.collect())
        .attr("allowCameraUpload", false)
        .attr("allowChannelAccess", true)
        .attr("allowMediaDeletion", true)
        .attr("allowSharing", true)
        .attr("allowSync", false)
        .attr("backgroundProcessing", true)
        .attr("certificate", false)
        .attr("companionProxy", true)
        .attr("diagnostics", "logs,databases,streaminglogs")
        .attr("eventStream", true)
        .attr("friendlyName", friendly_name)
        .attr("hubSearch", true)
        .attr("machineIdentifier", state.machine_identifier())
        .attr("multiuser", true)
        .attr("myPlex", signed_in)
        // Remote access is never mapped on a run's server.
        .attr("myPlexMappingState", "unknown")
        .attr("myPlexSigninState", if signed_in { "ok" } else { "none" })
        // Real Plex caches the account's subscription; the double does not
        // ask plex.tv to answer `/`, so it claims none here.
        .attr("myPlexSubscription", false)
        .attr("myPlexUsername", username)
        .attr("ownerFeatures", "")
        .attr("photoAutoTag", false)
        .attr("platform", "Linux")
        .attr("platformVersion", platform_version())
        .attr("pluginHost", true)
        .attr("readOnlyLibraries", false)
        .attr("requestParametersInCookie", true)
        .attr("streamingBrainVersion", 2_i64)
        .attr("sync", true)
        .attr("transcoderActiveVideoSessions", 0_i64)
        .attr("transcoderAudio", true)
        .attr("transcoderLyrics", true)
        .attr("transcoderPhoto", true)
        .attr("transcoderSubtitles", true)
        .attr("transcoderVideo", true)
        .attr(
            "transcoderVideoBitrates",
            "64,96,208,320,720,1500,2000,3000,4000,8000,10000,12000,20000",
        )
        .attr("transcoderVideoQualities", "0,1,2,3,4,5,6,7,8,9,10,11,12")
        .attr(
            "transcoderVideoResolutions",
            "128,128,160,240,320,480,768,720,720,1080,1080,1080,1080",
        )
        .attr("updatedAt", updated_at())
        .attr("updater", true)
        .attr("version", state.config.version.as_str())
        .attr("voiceSearch", true);
    Ok(Format::of(&headers).reply(&container))
}

pub async fn library(headers: HeaderMap) -> ApiResult {
    let directories = [
        ("sections", "Library Sections"),
        ("recentlyAdded", "Recently Added Content"),
        ("onDeck", "On Deck Content"),
    ]
    .into_iter()
    .map(|(key, title)| {
        Element::new("Directory")
            .attr("key", key)
            .attr("title", title)
    });
    let container = Element::container(directories.collect())
        .attr("allowSync", false)
        .attr("art", "/:/resources/library-art.png")
        .attr("content", "")
        .attr("identifier", "com.plexapp.plugins.library")
        .attr("mediaTagPrefix", "/system/bundle/media/flags/")
        .attr("mediaTagVersion", updated_at())
        .attr("title1", "Plex Library")
        .attr("title2", "");
    Ok(Format::of(&headers).reply(&container))
}
