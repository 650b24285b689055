#!/usr/bin/env python3
"""Stands in for a Scaleway instance booting plex-burst's image, on this
machine: the demo and the bootstrap tests run it; the local VM test (see
docs/architecture.md) boots the real image instead.

The Scaleway double runs it when a server powers on (`--on-poweron`), with
the server's id and user data in the environment. Like cloud-init, it
applies the user data's `write_files` (under this instance's own root
folder), then does what the baked image would do:

- a builder's user data (it writes build.env): the recipe's contract with
  bootstrap, without installing anything on this machine: fetch the runner
  through its presigned URL, check its sha256, upload a provision log and
  the report to their presigned URLs, then halt the guest;
- a run's user data (run.toml + secrets.env + plextv.env): keep copies of
  it where cloud-init does (var/lib/cloud, var/log/cloud-init.log: the
  runner must scrub them), start the runner as the image's unit does
  (secrets.env as its environment), with the image's absolute paths (work
  dir, /etc/plex-burst, cloud-init's) moved under the instance's root. The
  runner then terminates its own server through the API, as on Scaleway.

Environment: SCW_DOUBLE_SERVER_ID, SCW_DOUBLE_USER_DATA, SCW_DOUBLE_API_URL
(from the double); PB_INSTANCE_ROOT (where instances live), PB_RUNNER (the
runner binary). A file PB_INSTANCE_ROOT/fail-build holding a step name
makes the provisioning fail at that step.
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

import yaml

IMAGE_WORK_DIR = "/var/lib/plex-burst"


def write_files(user_data, root):
    """cloud-init's write_files, rooted at `root`."""
    written = {}
    for entry in user_data.get("write_files", []):
        path = os.path.join(root, entry["path"].lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(entry.get("content", ""))
        os.chmod(path, int(str(entry.get("permissions", "0644")), 8))
        written[entry["path"]] = path
    return written


def env_file(path):
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            values[key] = value.strip("'\"")
    return values


def put(url, data, content_type):
    request = urllib.request.Request(url, data=data, method="PUT")
    request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def guest_halt(server_id):
    """The guest powers itself off; a `halt-ends` file in the instance root
    says how the server ends (`stopped in place`; else it stays running)."""
    url = f"{os.environ['SCW_DOUBLE_API_URL']}/__double/servers/{server_id}/guest-halt"
    ends_file = os.path.join(os.environ["PB_INSTANCE_ROOT"], "halt-ends")
    body = b""
    if os.path.exists(ends_file):
        body = json.dumps({"ends": open(ends_file).read().strip()}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=30).read()


def build(server_id, root, build_env):
    env = env_file(build_env)
    fail_file = os.path.join(os.environ["PB_INSTANCE_ROOT"], "fail-build")
    fail = open(fail_file).read().strip() if os.path.exists(fail_file) else ""
    log = []
    step = "start"
    ok, message = True, "image baked"
    try:
        for step in ["packages", "rclone", "runner", "plex", "units", "clean"]:
            log.append(f"== {step}")
            if step == fail:
                raise RuntimeError(f"simulated failure in step {step}")
            if step == "runner":
                with urllib.request.urlopen(env["RUNNER_URL"], timeout=60) as answer:
                    binary = answer.read()
                digest = hashlib.sha256(binary).hexdigest()
                if digest != env["RUNNER_SHA256"]:
                    raise RuntimeError(f"runner sha256 {digest} is not {env['RUNNER_SHA256']}")
                log.append(f"runner: {len(binary)} bytes, sha256 ok")
            else:
                log.append(f"{step}: not installed on this stand-in")
        step = "done"
    except Exception as e:  # the report says what broke, as provision.sh does
        ok, message = False, str(e)
        log.append(f"error: {e}")
    put(env["LOG_URL"], "\n".join(log).encode() + b"\n", "text/plain")
    report = {"ok": ok, "step": step, "message": message, "recipe": env["RECIPE"]}
    put(env["REPORT_URL"], json.dumps(report).encode(), "application/json")
    guest_halt(server_id)


def keep_user_data_copies(root, server_id, text):
    """Where cloud-init keeps the user data it ran, and a log naming it."""
    inst = os.path.join(root, "var/lib/cloud/instances", server_id)
    os.makedirs(inst, exist_ok=True)
    for name in ["user-data.txt", "cloud-config.txt"]:
        with open(os.path.join(inst, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "var/log"), exist_ok=True)
    with open(os.path.join(root, "var/log/cloud-init.log"), "w") as f:
        f.write("util.py: Writing to /etc/plex-burst/secrets.env - wb: [600]\n")


def run(root, run_toml, secrets_env):
    work = os.path.join(root, "work")
    with open(run_toml) as f:
        text = f.read()
    text = text.replace(f'work_dir = "{IMAGE_WORK_DIR}"', f'work_dir = "{work}"')
    # The instance's absolute paths, under this stand-in's root.
    for path in ["/etc/plex-burst/", "/var/lib/cloud", "/var/log/cloud-init"]:
        text = text.replace(f'"{path}', f'"{root}{path}')
    with open(run_toml, "w") as f:
        f.write(text)
    env = dict(os.environ)
    env.update(env_file(secrets_env))
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    runner = os.environ.get("PB_RUNNER", "runner")
    with open(os.path.join(root, "runner.log"), "ab") as log:
        subprocess.Popen(
            [runner, "run", "--config", run_toml],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def main():
    server_id = os.environ["SCW_DOUBLE_SERVER_ID"]
    root = os.path.join(os.environ["PB_INSTANCE_ROOT"], server_id)
    os.makedirs(root, exist_ok=True)
    with open(os.environ["SCW_DOUBLE_USER_DATA"]) as f:
        text = f.read()
    if not text.startswith("#cloud-config"):
        sys.exit("user data is not a #cloud-config document")
    written = write_files(yaml.safe_load(text), root)
    keep_user_data_copies(root, server_id, text)
    if "/etc/plex-burst/build.env" in written:
        build(server_id, root, written["/etc/plex-burst/build.env"])
    elif "/etc/plex-burst/run.toml" in written:
        run(root, written["/etc/plex-burst/run.toml"], written["/etc/plex-burst/secrets.env"])
    else:
        sys.exit("user data has neither a build nor a run")


if __name__ == "__main__":
    main()
