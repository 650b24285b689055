#!/usr/bin/env python3
"""Stands in for Scaleway's hypervisor in the VM test (scripts/vm-e2e).

The Scaleway double runs it when a server powers on (`--on-poweron`) and
stops it (SIGTERM to its process group) when the server is powered off,
rebooted or terminated. It boots the server's root volume in QEMU, on the
tap device of the test's network namespace, identified as Scaleway
(SMBIOS manufacturer) so that cloud-init reads the Scaleway datasource
from the metadata double at 169.254.42.42. When the guest powers itself
off, it tells the double (`guest-halt`), as the real hypervisor does. Each
guest gets its own tap device, plugged into the namespace's bridge.

Disks are files, PB_VM_DISKS/<volume id>.raw. A new volume starts as a
copy of its image: the marketplace image is the base image
(PB_VM_BASE/disk.raw); an image made from a snapshot (`bootstrap image
build`) is the disk of the snapshot's volume, the builder's.

Each server's guest has an address of its own for the server's life: a
file in dnsmasq's --dhcp-hostsdir (PB_VM_NET/hosts) leases it to the
guest's MAC, and the metadata double is told it, so that it answers that
address, and only it, for the server, as Scaleway's metadata service
does. A guest still shutting down after its server is gone gets nothing.

Environment: SCW_DOUBLE_SERVER_ID, SCW_DOUBLE_API_URL (from the double);
PB_VM_BASE (disk.raw, vmlinuz, initrd.img), PB_VM_DISKS, PB_VM_NET (the
test network's state: hosts/), PB_VM_ACCEL (kvm or tcg), PB_VM_BRIDGE,
PB_VM_MEMORY_MB; PB_VM_INJECT, optional: a folder
whose tree is written into a run's new disk before its first boot (the
test's settings of the Plex double and its faults: the image has none).

Per server, PB_VM_DISKS/<server id>/ holds qemu.pid, monitor.sock (QEMU's
monitor: a stop presses the ACPI power button; the guest shuts down, else
loses the plug after POWERDOWN_GRACE), console.log (the serial
console of every boot) and, when the test asks for a hard reset, `reset`:
the test kills QEMU and the same disk boots again.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ENV = os.environ
# How long a guest may take to shut down after the power button.
POWERDOWN_GRACE = 30


def api(path, method="GET", body=None):
    """A call to the double; `body` goes as JSON (a POST without one is empty)."""
    data, headers = None, {}
    if body is not None:
        data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    elif method == "POST":
        data = b""
    request = urllib.request.Request(
        ENV["SCW_DOUBLE_API_URL"] + path, data=data, method=method, headers=headers
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if body else None


def log(message):
    print(f"hypervisor: {message}", file=sys.stderr, flush=True)


def source_disk(state, server):
    """The disk a new root volume of `server` is a copy of."""
    image_id = server["image"]["id"]
    for image in state["images"]:
        if image["id"] == image_id:
            snapshot_id = image["root_volume"]["id"]
            snapshot = next(s for s in state["snapshots"] if s["id"] == snapshot_id)
            volume_id = snapshot["parent_volume"]["id"]
            return os.path.join(ENV["PB_VM_DISKS"], f"{volume_id}.raw")
    return os.path.join(ENV["PB_VM_BASE"], "disk.raw")


def inject(disk, tree):
    """Writes the files under `tree` into the ext4 filesystem `disk`."""
    commands = []
    for folder, subfolders, files in os.walk(tree):
        relative = os.path.relpath(folder, tree)
        inside = "/" if relative == "." else "/" + relative
        for name in subfolders:
            commands.append(f'mkdir "{os.path.join(inside, name)}"')
        for name in files:
            source = os.path.join(folder, name)
            target = os.path.join(inside, name)
            if os.path.islink(source):
                commands.append(f'symlink "{target}" "{os.readlink(source)}"')
                continue
            commands.append(f'write "{source}" "{target}"')
            mode = os.stat(source).st_mode & 0o7777
            commands.append(f'sif "{target}" mode 0{0o100000 | mode:o}')
    script = "\n".join(commands) + "\n"
    result = subprocess.run(
        ["debugfs", "-w", "-f", "-", disk], input=script, capture_output=True, text=True
    )
    # debugfs says so when a folder exists already; anything else is wrong.
    errors = [
        line
        for line in result.stderr.splitlines()
        if line and "already exists" not in line and not line.startswith("debugfs ")
    ]
    if result.returncode != 0 or errors:
        sys.exit(f"hypervisor: cannot write the test's files into {disk}: {errors}")


def root_disk(server):
    volume_id = server["volumes"]["0"]["id"]
    disk = os.path.join(ENV["PB_VM_DISKS"], f"{volume_id}.raw")
    if not os.path.exists(disk):
        source = source_disk(api("/__double/state"), server)
        log(f"new root volume {volume_id} from {os.path.basename(source)}")
        subprocess.run(["cp", "--sparse=always", source, disk + ".tmp"], check=True)
        # Never into a builder's disk: it becomes the image.
        from_image = source != os.path.join(ENV["PB_VM_BASE"], "disk.raw")
        if from_image and ENV.get("PB_VM_INJECT"):
            # Replays the journal of a guest that was not shut down cleanly:
            # debugfs reads only a clean filesystem.
            subprocess.run(["e2fsck", "-p", disk + ".tmp"], check=False, capture_output=True)
            inject(disk + ".tmp", ENV["PB_VM_INJECT"])
        os.rename(disk + ".tmp", disk)
    return disk


def plug(server_id):
    """A tap device for the guest, on the test network's bridge."""
    tap = "pbt" + server_id.replace("-", "")[:8]
    subprocess.run(["ip", "link", "del", tap], capture_output=True)
    for command in (
        ["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
        ["ip", "link", "set", tap, "master", ENV["PB_VM_BRIDGE"]],
        ["ip", "link", "set", tap, "up"],
    ):
        subprocess.run(command, check=True)
    return tap


def mac_of(server_id):
    """The guest's MAC, the same at each boot of the server."""
    return "52:54:00:" + ":".join(server_id[i : i + 2] for i in (0, 2, 4))


def address(server_id):
    """The guest's address (10.77.0.100 and up), fixed for the server's life:
    leased by dnsmasq to its MAC, and answered by the metadata double as
    this server only."""
    hosts = os.path.join(ENV["PB_VM_NET"], "hosts")
    # Guests boot concurrently: one allocation at a time.
    with open(os.path.join(hosts, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = {}
        for name in os.listdir(hosts):
            if not name.startswith("."):
                with open(os.path.join(hosts, name)) as f:
                    taken[name] = f.read().strip().split(",")[1]
        ip = taken.get(server_id)
        if ip is None:
            used = set(taken.values())
            ip = next(a for a in (f"10.77.0.{n}" for n in range(100, 255)) if a not in used)
            # dnsmasq skips dot-files, and reads the file once it is renamed.
            temporary = os.path.join(hosts, f".{server_id}")
            with open(temporary, "w") as f:
                f.write(f"{mac_of(server_id)},{ip}\n")
            os.rename(temporary, os.path.join(hosts, server_id))
    api("/__double/metadata/bind", "POST", {"server_id": server_id, "address": ip})
    return ip


def qemu(server, disk, console, monitor, tap):
    base = ENV["PB_VM_BASE"]
    accel = ENV.get("PB_VM_ACCEL", "tcg")
    mac = mac_of(server["id"])
    return [
        "qemu-system-x86_64",
        *(["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]),
        "-smp", "2",
        "-m", ENV.get("PB_VM_MEMORY_MB", "2048"),
        "-kernel", os.path.join(base, "vmlinuz"),
        "-initrd", os.path.join(base, "initrd.img"),
        "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
        "-drive", f"file={disk},format=raw,if=virtio",
        "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-smbios", f"type=1,manufacturer=Scaleway,product={server['commercial_type']},serial={server['id']}",
        # Appended: the console keeps every boot, after the boot's header.
        "-chardev", f"file,id=console,path={console},append=on",
        "-serial", "chardev:console",
        "-display", "none",
        "-monitor", f"unix:{monitor},server=on,wait=off",
        "-no-reboot",
    ]


def powerdown(monitor):
    """The ACPI power button, through QEMU's monitor. The monitor drops a
    command whose connection closes before it has answered: wait for its
    greeting's prompt, then for the prompt after the command."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(monitor)
            seen = b""
            for prompts, command in ((1, b"system_powerdown\n"), (2, None)):
                while seen.count(b"(qemu) ") < prompts:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise OSError("the monitor closed the connection")
                    seen += chunk
                if command:
                    sock.sendall(command)
    except OSError as e:
        log(f"cannot press the power button: {e}")


def run_guest(command, monitor, stop_requested, pid_file):
    """Runs QEMU (in a session of its own: the double's SIGTERM is for us)
    until it ends; returns its exit status. A stop request powers the guest
    down: the power button, then the plug after POWERDOWN_GRACE."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(pid_file, "w") as f:
        f.write(str(child.pid))
    pressed = None
    while True:
        try:
            return child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        if stop_requested and pressed is None:
            powerdown(monitor)
            pressed = time.monotonic()
        elif pressed is not None and time.monotonic() - pressed > POWERDOWN_GRACE:
            log("the guest ignored the power button: pulling the plug")
            child.kill()


def main():
    server_id = ENV["SCW_DOUBLE_SERVER_ID"]
    server = next(s for s in api("/__double/state")["servers"] if s["id"] == server_id)
    folder = os.path.join(ENV["PB_VM_DISKS"], server_id)
    os.makedirs(folder, exist_ok=True)
    disk = root_disk(server)
    log(f"{server_id} has the address {address(server_id)}")
    tap = plug(server_id)
    try:
        boot(server, disk, folder, tap)
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)


def boot(server, disk, folder, tap):
    """Boots the guest until it powers off or the API stops it."""
    server_id = server["id"]
    console = os.path.join(folder, "console.log")
    monitor = os.path.join(folder, "monitor.sock")
    reset = os.path.join(folder, "reset")
    # The double stops a server's guest with SIGTERM: shut it down as a
    # powered-off server is, cleanly, and no guest-halt.
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    while True:
        what = f"boot of {server['name']} ({server_id}) with {ENV.get('PB_VM_ACCEL', 'tcg')}"
        log(what)
        with open(console, "a") as out:
            out.write(f"\n===== hypervisor: {what}\n")
        command = qemu(server, disk, console, monitor, tap)
        status = run_guest(command, monitor, stop_requested, os.path.join(folder, "qemu.pid"))
        if stop_requested:
            log(f"{server_id} stopped by the API (QEMU ended with {status})")
            return
        if os.path.exists(reset):
            os.remove(reset)
            log(f"hard reset of {server_id} (QEMU ended with {status}): booting the same disk")
            continue
        break
    if status != 0:
        log(f"QEMU FAILED for {server_id} (status {status}): see above")
    log(f"the guest of {server_id} powered off (QEMU ended with {status})")
    try:
        api(f"/__double/servers/{server_id}/guest-halt", method="POST")
    except Exception as e:  # the server may be gone already
        log(f"guest-halt: {e}")


if __name__ == "__main__":
    main()
