#!/usr/bin/env bash
# Builds the stand-in of Scaleway's Debian bookworm marketplace image for
# the VM test (scripts/vm-e2e): debootstrap, the cloud kernel, systemd,
# cloud-init with the Scaleway datasource, DHCP networking by ifupdown.
#
#   base-image.sh OUT_DIR
#
# OUT_DIR gets: disk.raw (an ext4 root filesystem, no partition table: the
# VM boots it by direct kernel boot), vmlinuz, initrd.img, and mirror/: a
# flat apt repository with the packages the image recipe installs
# (image/provision.sh), served to the guest inside the test's network
# namespace as its Debian mirror, the way Scaleway's image uses Scaleway's.
# The caller caches OUT_DIR by a hash of this file.
set -euo pipefail

OUT=$1
SUITE=bookworm
# Where the guest finds its mirror inside the test network (tests/vm/net.sh).
GUEST_MIRROR=http://10.77.0.1/debian
# What Scaleway's image has, plus what cloud-init and a DHCP boot need.
# (apt installs them after debootstrap: debootstrap's resolver misses
# virtual packages cloud-init's dependencies need.)
BASE_PACKAGES="systemd-sysv udev dbus linux-image-cloud-amd64 initramfs-tools cloud-init ifupdown isc-dhcp-client curl ca-certificates netbase iproute2 procps kmod less sudo locales"
# The packages image/provision.sh installs (its `packages` step, and
# Docker for the Plex container in its `plex` step).
RECIPE_PACKAGES="ca-certificates curl fuse3 unzip sqlite3 nftables docker.io apparmor"
DISK_SIZE=3G

# The host's own Debian mirror, unless one is given.
mirror=${PB_VM_MIRROR:-$(apt-get indextargets --format '$(REPO_URI)' | grep -v security | sort -u | head -1)}
[ -n "$mirror" ] || { echo "base-image: no Debian mirror found; set PB_VM_MIRROR" >&2; exit 1; }

rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
root="$OUT.tmp/rootfs"
echo "base-image: debootstrap $SUITE" >&2
log="$OUT.tmp/build.log"
fail() { tail -30 "$log" >&2; echo "base-image: $1 failed (log: $log)" >&2; exit 1; }
debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$log" 2>&1 || fail debootstrap
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive "$@" >>"$log" 2>&1; }
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_root apt-get install -q -y --no-install-recommends $BASE_PACKAGES || fail "installing $BASE_PACKAGES"

echo "base-image: the recipe's packages into the guest's mirror" >&2
# Downloaded with the image's own apt (versions match its release), alone.
in_root apt-get clean
in_root apt-get install -q -y --download-only --no-install-recommends $RECIPE_PACKAGES ||
    fail "downloading $RECIPE_PACKAGES"
mkdir -p "$OUT.tmp/mirror/debian"
cp "$root"/var/cache/apt/archives/*.deb "$OUT.tmp/mirror/debian/"
(
    cd "$OUT.tmp/mirror/debian"
    apt-ftparchive packages . >Packages
    gzip -9kn Packages
    apt-ftparchive release . >Release
)

echo "base-image: configuring" >&2
in_root apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
echo "deb [trusted=yes] $GUEST_MIRROR ./" >"$root/etc/apt/sources.list"
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
echo debian >"$root/etc/hostname"
# Like Scaleway's image: cloud-init reads the Scaleway datasource.
cat >"$root/etc/cloud/cloud.cfg.d/90-scaleway.cfg" <<'CFG'
datasource_list: [ Scaleway, None ]
CFG
# The hypervisor boots the kernel and initramfs exported below (direct
# kernel boot): rebuilding the guest's own copy when a package asks (fuse3
# does) would only cost minutes of emulated CPU.
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
# ifupdown brings the network up (cloud-init writes its config) and says
# when it is online. networkd manages nothing here, and its wait-online
# would hold network-online.target for two minutes: masked, since the
# first boot (empty machine-id) enables every unit by preset.
in_root systemctl mask systemd-networkd.service systemd-networkd-wait-online.service \
    systemd-networkd.socket || fail "masking systemd-networkd"
# A marketplace image carries no machine identity.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

cp -L "$root/vmlinuz" "$OUT.tmp/vmlinuz"
cp -L "$root/initrd.img" "$OUT.tmp/initrd.img"
mkfs.ext4 -q -F -L root -d "$root" "$OUT.tmp/disk.raw" "$DISK_SIZE"
rm -rf "$root"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "base-image: done ($(du -sh --apparent-size "$OUT/disk.raw" | cut -f1) disk, $(du -sh "$OUT/disk.raw" | cut -f1) used)" >&2
