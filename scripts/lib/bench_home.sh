# Sourced by scripts/bench: the home side of a `bootstrap fetch` benchmark.
# A run's result published as a finished run would leave it, and the home
# world fetch talks to (the Scaleway double, the Plex double as the home
# server, a bootstrap.toml). Needs scripts/bench's s5 and ENDPOINT.

# publish_result DIR RUN SINCE: the result pushed at runs/RUN/result/ made
# a finished run's (its manifest with DIR/stats.json as the stats after,
# DONE, launch.json with the snapshot time SINCE).
publish_result() {
    local dir=$1 run=$2 since=$3
    s5 cat "s3://bench/runs/$run/result/plex-db.manifest.json" >"$dir/manifest.json"
    python3 - "$dir" "$run" "$since" <<'PY'
import json, sys
d, run, since = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{d}/manifest.json"))
m["stats"] = {"after": json.load(open(f"{d}/stats.json"))}
json.dump(m, open(f"{d}/manifest.json", "w"))
json.dump({"archive_key": f"runs/{run}/result/plex-db.tar.zst",
           "manifest_key": f"runs/{run}/result/plex-db.manifest.json",
           "archive_sha256": m["archive"]["sha256"]}, open(f"{d}/DONE", "w"))
json.dump({"run_id": run, "state": "launched", "zone": "fr-par-1", "project_id": "",
           "commercial_type": "POP2-HC-16C-32G", "hourly_price": 0.4256, "root_volume_gb": 100,
           "image_id": None, "server_id": None, "root_volume_id": None, "api_key": None,
           "launched_at": "2026-01-01T00:00:00Z", "deadline": "2026-01-04T00:00:00Z",
           "snapshot_time": since, "reference_key": None, "plex_version": "1.41.3.9314-a0bfb8370",
           "bootstrap_version": "bench"}, open(f"{d}/launch.json", "w"))
PY
    s5 cp "$dir/manifest.json" "s3://bench/runs/$run/result/plex-db.manifest.json" >/dev/null
    s5 cp "$dir/DONE" "s3://bench/runs/$run/DONE" >/dev/null
    s5 cp "$dir/launch.json" "s3://bench/runs/$run/launch.json" >/dev/null
}

# home_world DIR APP [PLEX_TIMEOUT]: the Scaleway double and the home Plex
# (the Plex double on APP), and DIR/bootstrap.toml pointing at them.
home_world() {
    local dir=$1 app=$2 plex_timeout=${3:-30m} scw_port state
    scw_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    HOME_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    export SCW_SECRET_KEY
    SCW_SECRET_KEY=$(python3 -c 'import uuid; print(uuid.uuid4())')
    SCW_DOUBLE_SECRET_KEY=$SCW_SECRET_KEY "$BIN/scw-double" api --listen "127.0.0.1:$scw_port" >"$dir/scw.log" 2>&1 &
    SCW_PID=$!
    HOME_CTL="$dir/ctl"
    printf "BIN='%s'\nAPP='%s'\nADDR='127.0.0.1:%s'\n" "$BIN/plex-double" "$app" "$HOME_PORT" >"$HOME_CTL/env"
    tests/instance/home-plex.sh start "$HOME_CTL"
    for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$HOME_PORT/identity" && break; sleep 0.1; done
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$scw_port/__double/state" && break; sleep 0.1; done
    state=$(curl -s "http://127.0.0.1:$scw_port/__double/state")
    cat >"$dir/bootstrap.toml" <<TOML
[scaleway]
organization_id = "$(jq -r .organization_id <<<"$state")"
project_id = "$(jq -r .project_id <<<"$state")"
zone = "fr-par-1"
commercial_type = "POP2-HC-16C-32G"
api_url = "http://127.0.0.1:$scw_port"

[s3]
endpoint = "$ENDPOINT"
region = "us-east-1"
bucket = "bench"
path_style = true

[image]
# Fetch builds no image: any well-formed digest.
rclone_sha256 = "$(printf '0%.0s' $(seq 64))"

[home]
layout = "custom"
app_support_dir = "$app"
control = "command"
stop_command = ["$PB_ROOT/tests/instance/home-plex.sh", "stop", "$HOME_CTL"]
start_command = ["$PB_ROOT/tests/instance/home-plex.sh", "start", "$HOME_CTL"]
url = "http://127.0.0.1:$HOME_PORT"
plex_timeout = "$plex_timeout"
# Its records stay with the benchmark, not among real runs'.
state_dir = "$dir/state"

[run]
mode = "delta"

[run.media]
remote = "media"
mount_point = "/mnt/media"
TOML
}

home_world_stop() {
    tests/instance/home-plex.sh stop "$HOME_CTL" || true
    kill "$SCW_PID" 2>/dev/null; wait "$SCW_PID" 2>/dev/null || true
}

