#!/bin/sh
# plex-burst image recipe, run once on the builder by cloud-init (see
# cloud-init/build.yaml). Installs what a run needs, reports to bootstrap
# through presigned URLs, cleans the machine's identity, powers off.
# Every step is named in the report so that a failure says where it broke.
set -eu

. "$1"
STEP=start
PLEX_DIGEST=
PLEX_STAND_IN=false
LOG=/var/log/plex-burst-build.log
exec >>"$LOG" 2>&1

report() { # ok|failed message
    printf '{"ok":%s,"step":"%s","message":"%s","recipe":"%s","plex_digest":"%s","plex_stand_in":%s}\n' \
        "$([ "$1" = ok ] && echo true || echo false)" "$STEP" \
        "$(printf %s "$2" | tr -d '"\\' | tr '\n' ' ')" "$RECIPE" \
        "$(printf %s "$PLEX_DIGEST" | tr -d '"\\')" "$PLEX_STAND_IN" >/run/plex-burst-report.json
    if [ "$1" != ok ]; then
        # What bootstrap shows of a failure: cloud-init's view and the boot.
        echo "== cloud-init status"
        cloud-init status --long
        echo "== /var/log/cloud-init-output.log (end)"
        tail -n 40 /var/log/cloud-init-output.log
        echo "== journal of this boot (end)"
        journalctl -b --no-pager -n 100
    fi
    # The log first: bootstrap reads the report, then shows the log on failure.
    curl -fsS --retry 5 -X PUT --upload-file "$LOG" "$LOG_URL" || true
    curl -fsS --retry 5 -X PUT -H 'Content-Type: application/json' \
        --upload-file /run/plex-burst-report.json "$REPORT_URL"
}

on_exit() {
    status=$?
    set +e
    if [ "$status" -ne 0 ]; then
        report failed "step $STEP exited with status $status"
    fi
    # The API powers the builder off too; halting here ends provisioning
    # even if bootstrap is gone.
    systemctl poweroff --no-block || poweroff
}
trap on_exit EXIT

step() { STEP=$1; echo "== $(date -u +%FT%TZ) $STEP"; }

step packages
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -q -y --no-install-recommends ca-certificates curl fuse3 unzip sqlite3 nftables
# rclone mounts with --allow-other: Plex runs as another user.
grep -qx user_allow_other /etc/fuse.conf || echo user_allow_other >>/etc/fuse.conf

step firewall
# Parsed and checked against this kernel now; loaded at every boot before
# the network by its unit. Debian's own nftables.service stays disabled:
# its /etc/nftables.conf starts with `flush ruleset`, which would wipe
# Docker's rules and ours.
nft -c -f /usr/local/lib/plex-burst/plex-burst.nft
systemctl disable nftables.service 2>/dev/null || true

step rclone
curl -fsSL --retry 5 -o /tmp/rclone.zip "$RCLONE_URL"
echo "$RCLONE_SHA256  /tmp/rclone.zip" | sha256sum -c -
unzip -q -o -j /tmp/rclone.zip '*/rclone' -d /usr/local/bin
chmod 0755 /usr/local/bin/rclone
rm -f /tmp/rclone.zip
/usr/local/bin/rclone version | head -1

step runner
curl -fsSL --retry 5 -o /usr/local/bin/runner "$RUNNER_URL"
echo "$RUNNER_SHA256  /usr/local/bin/runner" | sha256sum -c -
chmod 0755 /usr/local/bin/runner

step plex
case "$PLEX_RUNTIME" in
docker)
    # Pre-pulled at bake time: a pull at run time outlived the claim token
    # (lessons.md 8).
    # apparmor is only recommended, yet with AppArmor on in Debian's kernel
    # dockerd refuses every container without its parser (seen in the VM
    # test: "AppArmor enabled on system but the docker-default profile
    # could not be loaded").
    apt-get install -q -y --no-install-recommends docker.io apparmor
    systemctl enable docker
    if [ -n "${PLEX_IMAGE_ARCHIVE_URL:-}" ]; then
        # Where the registry is out of reach (the VM test): the image from
        # a `docker save` archive, sha256 checked. The only difference from
        # a pull: everything after is the same.
        curl -fsSL --retry 5 -o /tmp/plex-image.tar "$PLEX_IMAGE_ARCHIVE_URL"
        echo "$PLEX_IMAGE_ARCHIVE_SHA256  /tmp/plex-image.tar" | sha256sum -c -
        docker load -i /tmp/plex-image.tar
        rm -f /tmp/plex-image.tar
    else
        docker pull "$PLEX_IMAGE"
    fi
    # The runner starts exactly this reference, never pulling: it must be here.
    docker image inspect "$PLEX_IMAGE" >/dev/null
    # For the report (bootstrap prints it): the digest this builder got
    # (the pin when one is configured), or the loaded image's id; and
    # whether it is a stand-in of Plex (its label says so).
    PLEX_DIGEST=$(docker image inspect -f '{{join .RepoDigests ","}}' "$PLEX_IMAGE")
    [ -n "$PLEX_DIGEST" ] || PLEX_DIGEST="loaded $(docker image inspect -f '{{.Id}}' "$PLEX_IMAGE")"
    [ "$(docker image inspect -f '{{index .Config.Labels "org.plex-burst.stand-in"}}' "$PLEX_IMAGE")" != true ] ||
        PLEX_STAND_IN=true
    ;;
double)
    curl -fsSL --retry 5 -o /usr/local/bin/plex-double "$PLEX_DOUBLE_URL"
    echo "$PLEX_DOUBLE_SHA256  /usr/local/bin/plex-double" | sha256sum -c -
    chmod 0755 /usr/local/bin/plex-double
    ;;
*)
    echo "unknown PLEX_RUNTIME $PLEX_RUNTIME" >&2
    exit 1
    ;;
esac

step units
mkdir -p /etc/plex-burst
chmod 0700 /etc/plex-burst
systemctl daemon-reload
systemctl enable plex-burst-firewall.service plex-burst-runner.service plex-burst-deadman.service

step clean
# An image must not carry this machine's identity or its cloud-init state:
# each run's instance gets its own and runs its own user data.
rm -f "$1"
apt-get clean
cloud-init clean --logs --machine-id 2>/dev/null || {
    rm -rf /var/lib/cloud/instances /var/lib/cloud/instance
    truncate -s 0 /etc/machine-id
}

step done
# Everything on disk before bootstrap hears of it: it powers the builder
# off and snapshots the volume right after the report.
sync
report ok "image baked"
