//! The asynchronous half of every state change: after `--transition-delay`
//! a server that is `starting` becomes `running` (and the `--on-poweron`
//! command starts), `stopping` becomes `stopped` or is gone (terminate),
//! snapshots become `available` (and again once their image is gone),
//! deleted volumes disappear.
//! A server's timer carries its generation so a later action wins. The
//! changes still to come are counted (`pending_transitions` in the state
//! dump).

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use nix::sys::signal::Signal;

use super::ids::uuid_v4;
use super::state::{
    PublicIp, RUNNING, STARTING, STOPPED, STOPPED_IN_PLACE, STOPPING, Server, Shared, World,
};

/// Runs `change` on the world after the transition delay, counted in
/// `pending` until it has run.
fn later(double: &Shared, change: impl FnOnce(&Shared) + Send + 'static) {
    let double = double.clone();
    double.pending.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        tokio::time::sleep(double.config.delay).await;
        change(&double);
        double.pending.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Whether the timer of `generation` still applies to the server.
fn current<'a>(
    world: &'a mut World,
    zone: &str,
    id: &str,
    generation: u64,
) -> Option<&'a mut Server> {
    world
        .server_mut(zone, id)
        .filter(|s| s.generation == generation)
}

pub fn poweron(double: &Shared, zone: &'static str, id: String, generation: u64) {
    later(double, move |double| {
        {
            let mut world = double.world();
            let Some(server) = current(&mut world, zone, &id, generation) else {
                return;
            };
            if server.state != STARTING {
                return;
            }
            server.state = RUNNING;
            server.state_detail = "booting kernel".into();
            server.modified = SystemTime::now();
            server.poweron_count += 1;
            if server.dynamic_ip_required {
                server.public_ip = Some(PublicIp {
                    id: uuid_v4(),
                    address: format!(
                        "51.15.{}.{}",
                        rand::random_range(0..=255u8),
                        rand::random_range(1..=254u8)
                    ),
                });
            }
            world.last_powered_on = Some(id.clone());
        }
        run_hook(double, zone, &id);
    });
}

/// `stopping` → `stopped` (or `stopped in place`).
pub fn poweroff(double: &Shared, zone: &'static str, id: String, generation: u64, in_place: bool) {
    later(double, move |double| {
        let mut world = double.world();
        let Some(server) = current(&mut world, zone, &id, generation) else {
            return;
        };
        if server.state != STOPPING {
            return;
        }
        server.state = if in_place { STOPPED_IN_PLACE } else { STOPPED };
        server.state_detail = String::new();
        server.public_ip = None;
        server.guest_halted = false;
        server.modified = SystemTime::now();
        stop_guest(&mut world, &id);
    });
}

/// A reboot stops the guest and boots it again.
pub fn reboot(double: &Shared, zone: &'static str, id: String, generation: u64) {
    later(double, move |double| {
        {
            let mut world = double.world();
            let Some(server) = current(&mut world, zone, &id, generation) else {
                return;
            };
            server.state_detail = "booting kernel".into();
            server.guest_halted = false;
            server.modified = SystemTime::now();
            stop_guest(&mut world, &id);
        }
        run_hook(double, zone, &id);
    });
}

/// `stopping` → gone: the server and its local volumes are deleted, an
/// `sbs_volume` root is only detached (and stays billed).
pub fn terminate(double: &Shared, zone: &'static str, id: String, generation: u64) {
    later(double, move |double| {
        let mut world = double.world();
        if current(&mut world, zone, &id, generation).is_none() {
            return;
        }
        remove_server(&mut world, zone, &id);
    });
}

/// Removes a server, detaching its Block root; returns it.
pub fn remove_server(world: &mut World, zone: &str, id: &str) -> Option<Server> {
    let index = world
        .servers
        .iter()
        .position(|s| s.zone == zone && s.id == id)?;
    let server = world.servers.remove(index);
    stop_guest(world, id);
    if server.root.volume_type == "sbs_volume"
        && let Some(volume) = world.volume_mut(&server.root.id)
    {
        let now = SystemTime::now();
        volume.status = "available";
        volume.server = None;
        volume.updated = now;
        volume.last_detached = Some(now);
    }
    if world.metadata_bound.as_deref() == Some(id) {
        world.metadata_bound = None;
    }
    if world.last_powered_on.as_deref() == Some(id) {
        world.last_powered_on = None;
    }
    Some(server)
}

pub fn snapshot_ready(double: &Shared, id: String) {
    later(double, move |double| {
        let mut world = double.world();
        if let Some(snapshot) = world.snapshot_mut(&id)
            && snapshot.status == "creating"
        {
            snapshot.status = "available";
            snapshot.updated = SystemTime::now();
        }
    });
}

/// An image's snapshot is `available` again a while after the image is
/// deleted (scaleway-cli waits for it before deleting the snapshot:
/// internal/namespaces/instance/v1/custom_image.go).
pub fn snapshot_released(double: &Shared, id: String) {
    later(double, move |double| {
        let mut world = double.world();
        let used = !world.images_of_snapshot(&id).is_empty();
        if let Some(snapshot) = world.snapshot_mut(&id)
            && snapshot.status == "in_use"
            && !used
        {
            snapshot.status = "available";
            snapshot.updated = SystemTime::now();
        }
    });
}

pub fn volume_gone(double: &Shared, id: String) {
    later(double, move |double| {
        double.world().volumes.retain(|v| v.id != id);
    });
}

pub fn snapshot_gone(double: &Shared, id: String) {
    later(double, move |double| {
        double.world().snapshots.retain(|s| s.id != id);
    });
}

/// The hypervisor stops a server's guest: SIGTERM to the process group of
/// its `--on-poweron` command (a guest that already ended is no error).
fn stop_guest(world: &mut World, id: &str) {
    if let Some(group) = world.guests.remove(id) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), Signal::SIGTERM);
    }
}

/// Starts `--on-poweron` for a server now running, in a process group of
/// its own (what a poweroff, reboot or terminate stops), its output on the
/// double's stderr; a failure to start is reported there, not fatal.
fn run_hook(double: &Shared, zone: &str, id: &str) {
    let Some(command) = &double.config.on_poweron else {
        return;
    };
    let user_data_path = double.config.work_dir.join(format!("user-data-{id}"));
    let cloud_init = double
        .world()
        .servers
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| s.user_data.get("cloud-init").map(|u| u.text.clone()));
    // The file exists only when the server has cloud-init user data.
    let written = match &cloud_init {
        Some(text) => std::fs::write(&user_data_path, text),
        None => match std::fs::remove_file(&user_data_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    if let Err(error) = written {
        eprintln!(
            "scw-double: cannot write {}: {error}",
            user_data_path.display()
        );
    }
    let mut child = tokio::process::Command::new("sh");
    // The guest must not inherit the double's own settings: one of them
    // is the admin key.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SCW_DOUBLE_") {
            child.env_remove(key);
        }
    }
    child
        .arg("-c")
        .arg(command)
        .env("SCW_DOUBLE_SERVER_ID", id)
        .env("SCW_DOUBLE_ZONE", zone)
        .env("SCW_DOUBLE_API_URL", &double.config.api_url)
        .env("SCW_DOUBLE_USER_DATA", &user_data_path)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(std::io::stderr())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(url) = &double.config.metadata_url {
        child.env("SCW_DOUBLE_METADATA_URL", url);
    }
    match child.spawn() {
        // Reaped in the background; nobody waits for the guest.
        Ok(mut child) => {
            let Some(pid) = child.id().map(|p| p as i32) else {
                return;
            };
            double.world().guests.insert(id.to_string(), pid);
            let (double, id) = (double.clone(), id.to_string());
            tokio::spawn(async move {
                let _ = child.wait().await;
                // Forgotten once ended, unless a newer boot took its place.
                let mut world = double.world();
                if world.guests.get(&id) == Some(&pid) {
                    world.guests.remove(&id);
                }
            });
        }
        Err(error) => eprintln!("scw-double: cannot start the --on-poweron command: {error}"),
    }
}
