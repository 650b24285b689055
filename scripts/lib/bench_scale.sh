# Sourced by scripts/bench (BENCH_SCALE="0.25 0.5 1"): the user's size, end
# to end, at fractions of it so that the growth shows. Each scale is the
# user's library (plex-fixture --preset user) with every count times the
# fraction and a Databases folder of 15 GB times it (live DBs and three
# dated backups each, docs/performance.md says why). Measured with the
# real parts: the local S3 server, the runner and bootstrap binaries, the
# Plex double as the home server (and writing Sonic results while
# `bootstrap snapshot` copies its DB). Each scale's folder is removed
# once measured unless BENCH_KEEP_FIXTURES is set (15 GB at 100%). Needs
# the helpers of scripts/bench (say, measure, ratio, start_s3, s5) and
# of bench_home.sh.

SCALE_GB=${BENCH_SCALE_GB:-15}
# The home machine's memory, for `bootstrap fetch` (a ZimaBoard has 2-8 GB).
FETCH_MEMORY=${BENCH_FETCH_MEMORY:-2G}
SCALE_TABLE="$WORK/scale-table.txt"
# What is measured at each scale (BENCH_SCALE_PARTS="run": the delta run only).
SCALE_PARTS=${BENCH_SCALE_PARTS:-"data snapshot fetch run"}
part() { [[ " $SCALE_PARTS " == *" $1 "* ]]; }

# scale_fixture F DIR: the user's app-support folder at scale F (cached).
scale_fixture() {
    local f=$1 dir=$2 stamp="$2/.done-v1-$SCALE_GB"
    [ -e "$stamp" ] && return
    rm -rf "$dir"; mkdir -p "$dir"
    pb_log "generating the user's library at ${f}x with a $(python3 -c "print($SCALE_GB*$f)") GB Databases folder in $dir"
    "$BIN/plex-fixture" app-support --preset user --scale "$f" \
        --databases-gb "$(python3 -c "print($SCALE_GB*$f)")" "$dir/root" >"$dir/summary.json"
    touch "$stamp"
}

# memory_limit: sets MEMORY_LIMIT to a command prefix that runs what
# follows in a memory cgroup of $FETCH_MEMORY (cgroup v1 or v2), or to
# nothing, said loudly, when the machine has none we can use.
memory_limit() {
    local v1=/sys/fs/cgroup/memory v2=/sys/fs/cgroup group=plex-burst-bench-$$
    if [ -w "$v1" ]; then
        mkdir -p "$v1/$group"
        echo "$FETCH_MEMORY" >"$v1/$group/memory.limit_in_bytes"
        MEMORY_LIMIT=(bash -c 'echo $$ > "$0"; exec "$@"' "$v1/$group/tasks")
    elif [ -w "$v2/cgroup.procs" ] && grep -qw memory "$v2/cgroup.controllers"; then
        mkdir -p "$v2/$group"
        echo "$FETCH_MEMORY" >"$v2/$group/memory.max"
        MEMORY_LIMIT=(bash -c 'echo $$ > "$0"; exec "$@"' "$v2/$group/cgroup.procs")
    else
        say "WARNING: no writable memory cgroup here: fetch runs without the $FETCH_MEMORY limit"
        MEMORY_LIMIT=()
    fi
}

# best A B: the shorter of two times; best_rss A B: the larger of two peaks.
best() { python3 -c "print(min($1, $2))"; }
best_rss() { python3 -c "print(max($1, $2))"; }

# row NAME F VALUE: one cell of the scaling table.
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SCALE_TABLE"; }

# bench_scale_one F: every measured step at scale F.
bench_scale_one() {
    local f=$1 fixture="$WORK/scale-$1"
    scale_fixture "$f" "$fixture"
    local app="$fixture/root/Library/Application Support/Plex Media Server"
    local dbs="$app/Plug-in Support/Databases"
    local folder_gb
    folder_gb=$(du -sb "$dbs" | awk '{printf "%.2f", $1/1e9}')
    say ""
    say "== scale ${f}: $(jq -r '.summary.tracks' "$fixture/summary.json") tracks, Databases folder ${folder_gb} GB =="
    ls -l "$dbs" | tee -a "$RESULTS"
    start_s3
    part data && bench_scale_data "$f" "$dbs"
    part snapshot && bench_scale_snapshot "$f" "$app"
    part fetch && bench_scale_fetch "$f" "$app" week
    part fetch && bench_scale_fetch "$f" "$app" history
    part run && bench_scale_run "$f" "$app"
    # Tens of GB at the user's size: kept only when asked.
    [ -n "${BENCH_KEEP_FIXTURES:-}" ] || rm -rf "$fixture"
}

# bench_scale_data F DBS: push, pull, check, remap and package of the
# Databases folder DBS, each against what a user would run by hand.
bench_scale_data() {
    local f=$1 dbs=$2
    local out="$WORK/scale-out" tarball="$WORK/scale-pipe.tar.zst"

    # Push: the whole folder, as the user's reference would be made by hand.
    measure "push: runner archive push" "$BIN/runner" archive push --config "$WORK/bench.toml" "$dbs" reference/pb.tar.zst
    local pb=$WALL; row "push (s)" "$f" "$WALL"; row "push rss (MB)" "$f" "$RSS_MB"
    measure "push: tar -c | zstd -T0 | s5cmd pipe" bash -c "tar -C '$dbs' -c . | zstd -T0 -q | s5cmd --endpoint-url $ENDPOINT pipe s3://bench/reference/pipe.tar.zst"
    say "  push: $(ratio "$pb" "$WALL") of the pipeline (target <= 1.1x)"
    row "push / pipeline" "$f" "$(ratio "$pb" "$WALL")"

    # Pull: the runner leaves Plex's dated backups out (the cloud Plex
    # cannot use them); the pipeline is told to do the same, and its
    # extract-everything time is shown beside it.
    rm -rf "$out"; mkdir -p "$out"
    measure "pull: runner archive pull (dated backups skipped)" "$BIN/runner" archive pull --config "$WORK/bench.toml" reference/pb.tar.zst "$out/Databases"
    pb=$WALL; row "pull (s)" "$f" "$WALL"; row "pull rss (MB)" "$f" "$RSS_MB"
    local pulled_gb
    pulled_gb=$(du -sb "$out/Databases" | awk '{printf "%.2f", $1/1e9}')
    mkdir -p "$out/pipe"
    measure "pull: s5cmd cat | zstd -d | tar -x --exclude dated, sync" bash -c "s5cmd --endpoint-url $ENDPOINT cat s3://bench/reference/pb.tar.zst | zstd -d -q | tar -C '$out/pipe' -x --wildcards --exclude='*.db-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' && sync"
    say "  pull: ${pulled_gb} GB written; $(ratio "$pb" "$WALL") of the pipeline (target <= 1.1x)"
    row "pull / pipeline" "$f" "$(ratio "$pb" "$WALL")"
    rm -rf "$out/pipe"; mkdir -p "$out/pipe"
    measure "  for scale: the pipeline extracting everything" bash -c "s5cmd --endpoint-url $ENDPOINT cat s3://bench/reference/pb.tar.zst | zstd -d -q | tar -C '$out/pipe' -x && sync"
    rm -rf "$out/pipe"

    # Verify: the integrity check on every core, and serial, in one run:
    # each twice, in turn, the best of each kept (this machine's reads
    # vary by 2x from one run to the next, and the first one after the
    # pulls above pays for their writeback).
    local db="$out/Databases/com.plexapp.plugins.library.db" parallel=1e9 serial=1e9 rss=0
    for _ in 1 2; do
        measure "verify: runner db check (every core)" "$BIN/runner" db check "$db"
        parallel=$(best "$parallel" "$WALL"); rss=$(best_rss "$rss" "$RSS_MB")
        measure "verify: runner db check --jobs 1 (serial)" "$BIN/runner" db check --jobs 1 "$db"
        serial=$(best "$serial" "$WALL")
    done
    row "check (s)" "$f" "$parallel"; row "check rss (MB)" "$f" "$rss"
    say "  check: best $parallel s on $(nproc) cores, best $serial s serial: $(ratio "$parallel" "$serial") (target <= 0.6x)"
    row "check / serial" "$f" "$(ratio "$parallel" "$serial")"

    measure "remap: runner db remap (backup first, one transaction)" "$BIN/runner" db remap "$db" --map /data/media=/mnt/media --map /data/photos2=/mnt/media/photos2 --backup-dir "$out/remap-backup"
    row "remap (s)" "$f" "$WALL"; row "remap rss (MB)" "$f" "$RSS_MB"
    rm -rf "$out/remap-backup"

    # Package and upload: the run's result (live DBs only).
    measure "package + upload: runner archive push" "$BIN/runner" archive push --config "$WORK/bench.toml" "$out/Databases" result/pb.tar.zst
    row "package+upload (s)" "$f" "$WALL"; row "package rss (MB)" "$f" "$RSS_MB"
    rm -rf "$out"
}

# bench_scale_snapshot F APP: `bootstrap snapshot` of a copy of the home
# folder APP while the home Plex (the double) writes Sonic results, and the
# longest of those writes. The runner's snapshots during Sonic copy the
# same way (one backup step of a WAL DB).
bench_scale_snapshot() {
    local f=$1 src=$2 dir="$WORK/scale-snapshot"
    rm -rf "$dir"; mkdir -p "$dir/ctl" "$dir/home"
    local app="$dir/home/Plex Media Server" db token plextv_port
    # Only the library DB is written: the rest is linked, not copied.
    cp -al "$src" "$app"
    db="$app/Plug-in Support/Databases/com.plexapp.plugins.library.db"
    rm -f "$db" "$db-wal" "$db-shm"
    cp "$src/Plug-in Support/Databases/com.plexapp.plugins.library.db" "$db"
    token=$(grep -o 'PlexOnlineToken="[^"]*"' "$app/Preferences.xml" | cut -d'"' -f2)
    plextv_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$BIN/plex-double" plextv --listen "127.0.0.1:$plextv_port" --account-token "$token" >"$dir/plextv.log" 2>&1 &
    local plextv_pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$plextv_port/" && break; sleep 0.1; done
    # Sonic at 200 tracks a second: a write every 100 ms tick.
    PLEX_DOUBLE_PLEXTV_URL="http://127.0.0.1:$plextv_port" PLEX_DOUBLE_SONIC_RATE=200 home_world "$dir" "$app"
    local plex="http://127.0.0.1:${HOME_PORT}"
    for _ in $(seq 100); do
        curl -sf -X POST -H "X-Plex-Token: $token" "$plex/butler/MusicAnalysis" >/dev/null && break
        sleep 0.2
    done
    for _ in $(seq 300); do
        [ "$(curl -s "$plex/__double/db-writes" | jq .writes)" -gt 5 ] && break
        sleep 0.1
    done
    curl -s -X DELETE "$plex/__double/db-writes" >/dev/null
    measure "bootstrap snapshot while home Plex writes Sonic" "$BIN/bootstrap" -c "$dir/bootstrap.toml" snapshot
    row "snapshot (s)" "$f" "$WALL"; row "snapshot rss (MB)" "$f" "$RSS_MB"
    local writes
    writes=$(curl -s "$plex/__double/db-writes")
    say "  Plex's writes during the snapshot: $(jq -r '"\(.writes) writes, longest \(.max_write_ms) ms, \(.busy_retries) busy retries"' <<<"$writes") (target < 1000 ms)"
    row "longest write during snapshot (ms)" "$f" "$(jq -r .max_write_ms <<<"$writes")"
    home_world_stop
    kill "$plextv_pid" 2>/dev/null; wait "$plextv_pid" 2>/dev/null || true
    rm -rf "$dir"
}

# bench_scale_fetch F APP week|history: `bootstrap fetch` of a result into
# a copy of the home folder APP after a week of home viewing (or merging
# its whole history), under the home machine's memory limit.
bench_scale_fetch() {
    local f=$1 src=$2 what=$3 dir="$WORK/scale-fetch" run="scale-$1-$3-$(date +%s)"
    rm -rf "$dir" "$WORK/s3/bench/runs/$run"; mkdir -p "$dir/ctl" "$dir/home"
    local app="$dir/home/Plex Media Server" dbs
    cp -a "$src" "$app"
    dbs="$app/Plug-in Support/Databases"
    # The result is the home DB as the cloud left it, pushed before home
    # watched anything new: the live DBs, as a run packs them.
    mkdir -p "$dir/result"
    ln "$dbs"/*.db "$dir/result/"
    "$BIN/runner" archive push --config "$WORK/bench.toml" "$dir/result" "runs/$run/result/plex-db.tar.zst" >/dev/null 2>&1
    "$BIN/runner" db stats "$dbs/com.plexapp.plugins.library.db" >"$dir/stats.json"
    local since
    if [ "$what" = week ]; then
        since=$(( $(date +%s) - 7 * 86400 ))
        # A household's week: 3% of the watch state touched, each with a play.
        sqlite3 "$dbs/com.plexapp.plugins.library.db" "
          CREATE TEMP TABLE touched AS SELECT id FROM metadata_item_settings WHERE abs(random()) % 100 < 3;
          UPDATE metadata_item_settings SET view_count = coalesce(view_count, 0) + 1,
            last_viewed_at = $since + abs(random()) % 604800, updated_at = $since + 604800
            WHERE id IN (SELECT id FROM touched);
          INSERT INTO metadata_item_views(account_id, guid, metadata_type, library_section_id, title, viewed_at)
            SELECT s.account_id, s.guid, m.metadata_type, m.library_section_id, m.title, s.last_viewed_at
            FROM metadata_item_settings s JOIN metadata_items m ON m.guid = s.guid WHERE s.id IN (SELECT id FROM touched);
          SELECT 'home watched ' || count(*) || ' items this week' FROM touched;" | tee -a "$RESULTS"
    else
        since=0
    fi
    publish_result "$dir" "$run" "$since"
    home_world "$dir" "$app"
    memory_limit
    # The local S3 server has no bucket policies: the cloud cleanup after
    # the install fails there, and is not what is measured.
    MEASURE_ACCEPT="is installed, but cleaning the cloud failed" measure "fetch ($what) under a $FETCH_MEMORY memory limit" "${MEMORY_LIMIT[@]}" "$BIN/bootstrap" -c "$dir/bootstrap.toml" fetch "$run" --trust-bucket-record
    row "fetch $what (s)" "$f" "$WALL"; row "fetch $what rss (MB)" "$f" "$RSS_MB"
    rm -rf "$WORK/s3/bench/runs/$run"
    grep -iE "merge|watch" "$WORK/cmd.log" | head -3 | sed 's/^/    /' | tee -a "$RESULTS" || true
    local kept
    kept=$(find "$dbs" -maxdepth 1 -name '*.db-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' | wc -l)
    say "  home's dated backups after the fetch: $kept"
    home_world_stop
    rm -rf "$dir"
}

# bench_scale_run F APP: a whole delta run of the runner (`runner run`,
# Plex double as the cloud Plex, rclone mount of a media bucket holding a
# file for every item, a few new albums and films), phase by phase from
# its checkpoint: wall, the runner's own CPU and peak RSS, and the
# runner's own time (every phase's wall but Plex's scans and Sonic).
# Sonic runs at a rate that takes it about BENCH_RUN_SONIC_S at every
# scale, with a snapshot every BENCH_RUN_SNAPSHOT_S while Plex writes.
bench_scale_run() {
    local f=$1 src=$2 dir="$WORK/scale-run" run="scale-run-${1//./-}-$(date +%s)"
    local sonic_s=${BENCH_RUN_SONIC_S:-240} snapshot_s=${BENCH_RUN_SNAPSHOT_S:-60}
    local media="$WORK/s3/media" mount="$dir/mnt" work="$dir/work" token plextv_port rate
    rm -rf "$dir" "$media"; mkdir -p "$dir" "$media" "$mount"
    # The media bucket: a file at every path the DB knows (the second
    # photo location is outside the media root, as at the user's).
    "$BIN/plex-fixture" media --preset user --scale "$f" "$media" >/dev/null
    "$BIN/plex-fixture" media --preset user --scale "$f" --media-root /data --library Photos "$dir/photos" >/dev/null
    mv "$dir/photos/photos2" "$media/photos2"; rm -rf "$dir/photos"
    # New since the reference: three albums of ten tracks and two films.
    local track film
    track=$(find "$media/Music" -name '*.flac' -print -quit)
    film=$(find "$media/Movies" -name '*.mkv' -print -quit)
    for a in 1 2 3; do
        mkdir -p "$media/Music/Bench Artist/Album $a (2026)"
        for t in $(seq -w 1 10); do cp "$track" "$media/Music/Bench Artist/Album $a (2026)/$t - Track $t.flac"; done
    done
    for m in 1 2; do mkdir -p "$media/Movies/Bench Film $m (2026)"; cp "$film" "$media/Movies/Bench Film $m (2026)/Bench Film $m (2026).mkv"; done
    say "  media bucket: $(find "$media" -type f | wc -l) files, 30 new tracks and 2 new films"
    "$BIN/runner" archive push --config "$WORK/bench.toml" "$src/Plug-in Support/Databases" "runs/$run/reference.tar.zst" >/dev/null 2>&1
    token=$(grep -o 'PlexOnlineToken="[^"]*"' "$src/Preferences.xml" | cut -d'"' -f2)
    plextv_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$BIN/plex-double" plextv --listen "127.0.0.1:$plextv_port" --account-token "$token" >"$dir/plextv.log" 2>&1 &
    local plextv_pid=$!
    local tracks to_analyse
    tracks=$(sqlite3 "$src/Plug-in Support/Databases/com.plexapp.plugins.library.db" "SELECT count(*) FROM metadata_items WHERE metadata_type = 10")
    to_analyse=$(python3 -c "print(int($tracks * 0.83))")
    rate=$(python3 -c "print(max(50, round($to_analyse / $sonic_s)))")
    cat >"$dir/run.toml" <<TOML
run_id = "$run"
work_dir = "$work"
mode = "delta"

[s3]
endpoint = "$ENDPOINT"
region = "us-east-1"
bucket = "bench"
path_style = true
access_key_env = "AWS_ACCESS_KEY_ID"
secret_key_env = "AWS_SECRET_ACCESS_KEY"

[reference]
archive_key = "runs/$run/reference.tar.zst"

[media]
remote = "media"
mount_point = "$mount"

[plex]
version = "1.41.3.9314-a0bfb8370"
runtime = "double"
double_binary = "$BIN/plex-double"
port = $(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
plextv_url = "http://127.0.0.1:$plextv_port"
claim = true
account_token_env = "BENCH_PLEX_TOKEN"

[[path_mapping]]
from = "/data/media"
to = "$mount"

[[path_mapping]]
from = "/data/photos2"
to = "$mount/photos2"

[deadlines]
poll_interval = "1s"
idle_checks = 2
snapshot_interval = "${snapshot_s}s"

[termination]
provider = "none"
TOML
    # The double keeps listed files unread (456k header reads through FUSE
    # would time the double, not the runner).
    BENCH_PLEX_TOKEN=$token PLEX_DOUBLE_KNOWN_FILES=listed PLEX_DOUBLE_SONIC_RATE=$rate \
        measure "delta run: runner run (Sonic at $rate tracks/s)" "$BIN/runner" run --config "$dir/run.toml"
    row "run (s)" "$f" "$WALL"; row "run rss (MB)" "$f" "$RSS_MB"
    python3 - "$work/checkpoint.json" "$f" "$SCALE_TABLE" <<'PY' | tee -a "$RESULTS"
import json, sys
ckpt, f, table = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
rows, own, plex = [], 0.0, 0.0
print(f"  {'phase':<10} {'wall s':>8} {'cpu s':>8} {'rss MB':>8}  Plex working")
for r in ckpt["done"]:
    u, out = r.get("usage") or {}, r.get("output") or {}
    waiting = 0.0
    if r["phase"] == "scan":
        waiting = sum(l["seconds"] + (l.get("metadata_refresh_seconds") or 0) for l in out.get("libraries", []))
    elif r["phase"] in ("analysis", "sonic"):
        waiting = r["seconds"]
    plex += waiting
    own += r["seconds"] - waiting
    print(f"  {r['phase']:<10} {r['seconds']:>8.1f} {u.get('cpu_seconds', 0):>8.1f} {u.get('peak_rss_mb', 0):>8.0f}  {waiting:.1f} s")
    rows += [(f"run {r['phase']} (s)", r["seconds"]), (f"run {r['phase']} rss (MB)", u.get("peak_rss_mb", 0))]
sonic = next((r["output"] for r in ckpt["done"] if r["phase"] == "sonic"), {})
print(f"  runner's own time {own:.1f} s (target <= 900 s at 100%); Plex working {plex:.1f} s; "
      f"{sonic.get('snapshots', 0)} snapshots during Sonic took {sonic.get('snapshot_seconds', 0):.1f} s beside Plex")
rows += [("run: runner's own time (s)", round(own, 1)), ("run: snapshots", sonic.get("snapshots", 0)),
         ("run: snapshot time (s)", round(sonic.get("snapshot_seconds", 0), 1))]
with open(table, "a") as t:
    for name, value in rows:
        t.write(f"{name}\t{f}\t{value}\n")
PY
    kill "$plextv_pid" 2>/dev/null; wait "$plextv_pid" 2>/dev/null || true
    rm -rf "$dir" "$media" "$WORK/s3/bench/runs/$run"
}

# bench_scale: every scale of $BENCH_SCALE, then the table.
bench_scale() {
    : >"$SCALE_TABLE"
    for f in $BENCH_SCALE; do bench_scale_one "$f"; done
    say ""
    say "== scaling: each figure at every scale; 'vs linear' is the figure's growth from the first scale to the last over the scale's (1.00 = linear, below = better) =="
    python3 - "$SCALE_TABLE" $BENCH_SCALE <<'PY' | tee -a "$RESULTS"
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    name, f, value = line.rstrip("\n").split("\t")
    rows.setdefault(name, {})[f] = value
scales = sys.argv[2:]
print("| figure | " + " | ".join(f"{float(s):.0%}" for s in scales) + " | vs linear |")
print("|---|" + "---|" * (len(scales) + 1))
for name, by in rows.items():
    cells = [by.get(s, "-") for s in scales]
    try:
        lo, hi = float(cells[0].rstrip("x")), float(cells[-1].rstrip("x"))
        linear = float(scales[-1]) / float(scales[0])
        growth = f"{hi / lo / linear:.2f}" if lo > 0 and "/" not in name and len(scales) > 1 else ""
    except ValueError:
        growth = ""
    print(f"| {name} | " + " | ".join(cells) + f" | {growth} |")
PY
}
