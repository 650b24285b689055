//! The double as the `plexinc/pms-docker` image: what that image's `/init`
//! does before Plex starts, and its health check. `plex_image` builds an
//! image holding this binary as `/usr/lib/plexmediaserver/Plex Media
//! Server`, with `/init`, `/healthcheck.sh` and `Plex SQLite` as symlinks
//! to it; the name it is started by says which part it plays
//! (`command_line`).
//!
//! Facts from the official image's scripts (plexinc/pms-docker 1cef65e):
//! its `/init` (s6-overlay) runs `root/etc/cont-init.d/40-plex-first-run`
//! as root, then `root/etc/services.d/plex/run` starts Plex as the `plex`
//! user. Both are configured by environment only; so is this.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, lchown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::cli::DEFAULT_VERSION;
use super::pms::prefs::Preferences;

/// Where the image keeps Plex (the Debian package's path).
pub const PMS_BINARY: &str = "/usr/lib/plexmediaserver/Plex Media Server";
/// Plex's sqlite3 shell, beside it.
pub const PLEX_SQLITE: &str = "/usr/lib/plexmediaserver/Plex SQLite";
/// The image's entrypoint and health check command.
pub const INIT: &str = "/init";
pub const HEALTHCHECK: &str = "/healthcheck.sh";
/// 40-plex-first-run's marker, in the container's own root: a new
/// container from the image runs the first-run setup again, a restarted
/// one does not.
pub const FIRST_RUN_MARKER: &str = "/.firstRunComplete";
/// The plex user's home (`useradd -d /config` in the Dockerfile).
const CONFIG: &str = "/config";
const TRANSCODE: &str = "/transcode";
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
/// Plex's port: where the real PMS listens and healthcheck.sh asks.
const PMS_PORT: u16 = 32400;

/// The double's command line for what argv[0] names: `/init` is
/// `plex-double init`, `/healthcheck.sh` is `plex-double healthcheck`,
/// `.../Plex SQLite` is `plex-double sqlite`, `.../Plex Media Server` is
/// the server with the real one's defaults; anything else (`plex-double`,
/// the scanner) is taken as it is.
pub fn command_line(args: Vec<OsString>) -> Vec<OsString> {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = args.iter().skip(1).cloned();
    let lead = |words: &[&str]| -> Vec<OsString> { words.iter().map(OsString::from).collect() };
    match name.as_str() {
        "init" => lead(&["plex-double", "init"])
            .into_iter()
            .chain(rest)
            .collect(),
        "healthcheck.sh" => lead(&["plex-double", "healthcheck"])
            .into_iter()
            .chain(rest)
            .collect(),
        // Everything after is the shell's, `-readonly` included.
        "Plex SQLite" => lead(&["plex-double", "sqlite", "--"])
            .into_iter()
            .chain(rest)
            .collect(),
        "Plex Media Server" => {
            let mut line = lead(&["plex-double", "server"]);
            // The double's own variables, when set, win (tests, the VM).
            if var("PLEX_DOUBLE_APP_SUPPORT").is_none() {
                line.push("--app-support".into());
                line.push(app_support_root().join("Plex Media Server").into());
            }
            if var("PLEX_DOUBLE_LISTEN").is_none() {
                line.push("--listen".into());
                line.push(format!("0.0.0.0:{PMS_PORT}").into());
            }
            line.extend(rest);
            line
        }
        _ => args,
    }
}

/// A variable as the scripts test it: unset and empty are alike (`-z`).
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `PLEX_MEDIA_SERVER_APPLICATION_SUPPORT_DIR`, by default
/// `~plex/Library/Application Support` (40-plex-first-run and
/// services.d/plex/run alike); Plex keeps its folder inside it.
fn app_support_root() -> PathBuf {
    var("PLEX_MEDIA_SERVER_APPLICATION_SUPPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(CONFIG).join("Library/Application Support"))
}

/// `/init`: the first-run setup (once per container), then Plex as the
/// plex user, in place of this process, so that Plex is what `docker
/// stop`'s SIGTERM reaches. Returns only on failure.
pub fn init() -> Result<()> {
    // The script stops at the marker before anything else, ids included.
    if Path::new(FIRST_RUN_MARKER).exists() {
        println!("First run setup already done in this container: skipped");
        let (uid, gid) = plex_account(None, None)?;
        return start_plex(uid, gid);
    }
    let (uid, gid) = plex_account(
        var("PLEX_UID")
            .map(|v| parse_id("PLEX_UID", &v))
            .transpose()?,
        var("PLEX_GID")
            .map(|v| parse_id("PLEX_GID", &v))
            .transpose()?,
    )?;
    first_run(uid, gid)?;
    start_plex(uid, gid)
}

fn parse_id(name: &str, value: &str) -> Result<u32> {
    value
        .parse()
        .with_context(|| format!("{name}={value:?} is not a numeric id"))
}

/// The plex account's ids, after giving it `uid`/`gid` when given, as
/// 40-plex-first-run does with PLEX_UID/PLEX_GID (`usermod -o -u`,
/// `groupmod -o -g`: duplicates allowed), in `/etc/passwd` and
/// `/etc/group`.
fn plex_account(uid: Option<u32>, gid: Option<u32>) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string(PASSWD).context("cannot read /etc/passwd")?;
    let group = std::fs::read_to_string(GROUP).context("cannot read /etc/group")?;
    let current = |text: &str, field: usize| -> Result<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix("plex:"))
            .and_then(|rest| rest.split(':').nth(field))
            .and_then(|id| id.parse().ok())
            .context("the image has no plex account")
    };
    let (old_uid, old_gid) = (current(&passwd, 1)?, current(&group, 1)?);
    let (uid, gid) = (uid.unwrap_or(old_uid), gid.unwrap_or(old_gid));
    if (uid, gid) != (old_uid, old_gid) {
        // passwd: plex:x:UID:GID:...; group: plex:x:GID:...
        let passwd = set_fields(&passwd, &[(2, uid), (3, gid)]);
        let group = set_fields(&group, &[(2, gid)]);
        std::fs::write(PASSWD, passwd).context("cannot write /etc/passwd")?;
        std::fs::write(GROUP, group).context("cannot write /etc/group")?;
    }
    Ok((uid, gid))
}

/// `text` with the given fields of the plex line replaced.
fn set_fields(text: &str, fields: &[(usize, u32)]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("plex:") {
            let mut parts: Vec<String> = line.split(':').map(str::to_string).collect();
            for (index, value) in fields {
                if let Some(part) = parts.get_mut(*index) {
                    *part = value.to_string();
                }
            }
            out.push_str(&parts.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// 40-plex-first-run, step by step.
fn first_run(uid: u32, gid: u32) -> Result<()> {
    let prefs_dir = app_support_root().join("Plex Media Server");
    let prefs_file = prefs_dir.join("Preferences.xml");
    // CHANGE_CONFIG_DIR_OWNERSHIP (the image sets "true"): everything under
    // /config not already plex:plex is given to plex, unless the prefs file
    // already is plex's; /transcode is given to plex whatever it holds.
    if var("CHANGE_CONFIG_DIR_OWNERSHIP").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        let owned = std::fs::metadata(&prefs_file).is_ok_and(|m| m.uid() == uid);
        if !owned {
            give_tree(Path::new(CONFIG), uid, gid, true)?;
        }
        give_tree(Path::new(TRANSCODE), uid, gid, false)?;
    }
    if !prefs_file.exists() {
        println!("Creating pref shell");
        std::fs::create_dir_all(&prefs_dir)
            .with_context(|| format!("cannot create {}", prefs_dir.display()))?;
        std::fs::write(
            &prefs_file,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences/>\n",
        )
        .with_context(|| format!("cannot write {}", prefs_file.display()))?;
        give_tree(&prefs_dir, uid, gid, false)?;
    }
    // A missing MachineIdentifier is a new random UUID (uuidgen), a
    // missing ProcessedMachineIdentifier the sha1 of it followed by
    // "- Plex Media Server": what load_or_create does to an existing file.
    let mut prefs = Preferences::load_or_create(&prefs_file, DEFAULT_VERSION)?;
    claim(&mut prefs);
    if let Some(ip) = var("ADVERTISE_IP") {
        prefs.set("customConnections", ip);
    }
    if let Some(networks) = var("ALLOWED_NETWORKS") {
        prefs.set("allowedNetworks", networks);
    }
    if prefs
        .get("TranscoderTempDirectory")
        .is_none_or(str::is_empty)
    {
        prefs.set("TranscoderTempDirectory", TRANSCODE.into());
    }
    prefs.save()?;
    // xmlstarlet edits the file in place, so it stays plex's; the double's
    // save replaces it with a file of root's.
    lchown(&prefs_file, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", prefs_file.display()))?;
    std::fs::write(FIRST_RUN_MARKER, "").context("cannot write the first-run marker")?;
    println!("Plex Media Server first run setup complete");
    Ok(())
}

/// Gives `root` and everything below it (symlinks themselves, never
/// followed) to uid:gid; with `skip_owned`, entries already uid:gid are
/// left alone (40-plex-first-run's `find /config \! \( -uid -gid \)`).
fn give_tree(root: &Path, uid: u32, gid: u32, skip_owned: bool) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return Ok(());
    };
    if !(skip_owned && meta.uid() == uid && meta.gid() == gid) {
        lchown(root, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", root.display()))?;
    }
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?;
        for entry in entries {
            give_tree(&entry?.path(), uid, gid, skip_owned)?;
        }
    }
    Ok(())
}

/// PLEX_CLAIM (or the file PLEX_CLAIM_FILE names) exchanged for the
/// server's token when the prefs have none. As in the script, a failed
/// exchange is reported and Plex starts unclaimed.
fn claim(prefs: &mut Preferences) {
    if prefs.online_token().is_some() {
        return;
    }
    let claim = var("PLEX_CLAIM").or_else(|| {
        let file = var("PLEX_CLAIM_FILE")?;
        let text = std::fs::read_to_string(file).ok()?;
        Some(text.trim_end_matches('\n').to_string()).filter(|t| !t.is_empty())
    });
    let Some(claim) = claim else {
        return;
    };
    println!("Attempting to obtain server token from claim token");
    let plextv = var("PLEX_DOUBLE_PLEXTV_URL").unwrap_or_else(|| "https://plex.tv".into());
    match exchange(&plextv, &claim, prefs.machine_identifier()) {
        Ok(token) => {
            println!("Token obtained successfully");
            prefs.set("PlexOnlineToken", token);
        }
        Err(error) => println!("No server token from the claim token: {error:#}"),
    }
}

/// `POST /api/claim/exchange?token=CLAIM` with 40-plex-first-run's
/// headers, the client identifier being the ProcessedMachineIdentifier;
/// the token is the answer's `<authentication-token>` element.
fn exchange(plextv: &str, claim: &str, client_id: &str) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?
            .post(format!(
                "{}/api/claim/exchange",
                plextv.trim_end_matches('/')
            ))
            .query(&[("token", claim)])
            .header("X-Plex-Client-Identifier", client_id)
            .header("X-Plex-Product", "Plex Media Server")
            .header("X-Plex-Version", "1.1")
            .header("X-Plex-Provides", "server")
            .header("X-Plex-Platform", "Linux")
            .header("X-Plex-Platform-Version", "1.0")
            .header("X-Plex-Device-Name", "PlexMediaServer")
            .header("X-Plex-Device", "Linux")
            .send()
            .await?;
        response.text().await
    });
    // The URL carries the claim token: keep it out of the message.
    let body = body.map_err(reqwest::Error::without_url)?;
    let token = body
        .split_once("<authentication-token>")
        .and_then(|(_, rest)| rest.split_once("</authentication-token>"))
        .map(|(token, _)| token.to_string())
        .filter(|t| !t.is_empty());
    match token {
        Some(token) => Ok(token),
        None => bail!("plex.tv's answer has no authentication-token"),
    }
}

/// services.d/plex/run: Plex's environment, its folder, and Plex as the
/// plex user (`s6-setuidgid plex`: group, then user, no supplementary
/// groups kept from root). Everything else of the container's environment
/// (TZ among it) reaches Plex unchanged, as with-contenv passes it.
fn start_plex(uid: u32, gid: u32) -> Result<()> {
    println!("Starting Plex Media Server.");
    let app_support = app_support_root();
    if !app_support.is_dir() {
        std::fs::create_dir_all(&app_support)
            .with_context(|| format!("cannot create {}", app_support.display()))?;
        lchown(&app_support, Some(uid), Some(gid))?;
    }
    let uname = nix::sys::utsname::uname()?;
    let error = std::process::Command::new(PMS_BINARY)
        .env("PLEX_MEDIA_SERVER_APPLICATION_SUPPORT_DIR", &app_support)
        .env("PLEX_MEDIA_SERVER_HOME", "/usr/lib/plexmediaserver")
        .env("PLEX_MEDIA_SERVER_MAX_PLUGIN_PROCS", "6")
        .env("PLEX_MEDIA_SERVER_INFO_VENDOR", "Docker")
        .env("PLEX_MEDIA_SERVER_INFO_DEVICE", "Docker Container")
        .env("PLEX_MEDIA_SERVER_INFO_MODEL", uname.machine())
        .env("PLEX_MEDIA_SERVER_INFO_PLATFORM_VERSION", uname.release())
        .gid(gid)
        .uid(uid)
        .exec();
    Err(error).with_context(|| format!("cannot start {PMS_BINARY}"))
}

/// `/healthcheck.sh`: `GET /identity` on Plex's port on this host (the
/// script's `curl --fail http://localhost:32400/identity`); 0 when it
/// answers 2xx, else 1 with the reason on one line.
pub fn healthcheck() -> ExitCode {
    let listen = var("PLEX_DOUBLE_LISTEN").and_then(|l| l.parse::<std::net::SocketAddr>().ok());
    let port = listen.map_or(PMS_PORT, |a| a.port());
    // localhost, unless the server was told to listen on one address only.
    let ip = listen
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let url = format!("http://{}/identity", std::net::SocketAddr::new(ip, port));
    match crate::http::get(&url, &[]) {
        Ok(reply) if (200..300).contains(&reply.status) => ExitCode::SUCCESS,
        Ok(reply) => {
            eprintln!("healthcheck: {url} answered {}", reply.status);
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("healthcheck: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_name_started_by_chooses_the_part() {
        assert_eq!(
            command_line(line(&["/init"])),
            line(&["plex-double", "init"])
        );
        assert_eq!(
            command_line(line(&["/healthcheck.sh"])),
            line(&["plex-double", "healthcheck"])
        );
        let server = command_line(line(&[PMS_BINARY]));
        assert_eq!(&server[..2], &line(&["plex-double", "server"])[..]);
        assert_eq!(
            command_line(line(&[PLEX_SQLITE, "-readonly", "db", "SELECT 1"])),
            line(&["plex-double", "sqlite", "--", "-readonly", "db", "SELECT 1"])
        );
        let scanner = line(&["Plex Media Scanner", "scanner-child", "--scan"]);
        assert_eq!(command_line(scanner.clone()), scanner);
        let double = line(&["target/debug/plex-double", "plextv"]);
        assert_eq!(command_line(double.clone()), double);
    }

    #[test]
    fn only_the_plex_account_changes_ids() {
        let passwd = "root:x:0:0:root:/root:/bin/false\nplex:x:1000:1000::/config:/bin/false\n";
        assert_eq!(
            set_fields(passwd, &[(2, 990), (3, 991)]),
            "root:x:0:0:root:/root:/bin/false\nplex:x:990:991::/config:/bin/false\n"
        );
        assert_eq!(
            set_fields("users:x:100:plex\nplex:x:1000:\n", &[(2, 991)]),
            "users:x:100:plex\nplex:x:991:\n"
        );
    }
}
