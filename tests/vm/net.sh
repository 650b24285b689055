#!/usr/bin/env bash
# The VM test's network: a namespace of its own with a bridge for the
# guests (tests/vm/hypervisor.py plugs a tap device per guest into it, as
# each Scaleway server has its own NIC), dnsmasq for their DHCP leases
# (static: the hypervisor gives each server's MAC its address in
# STATE_DIR/hosts; an unknown guest gets none), 169.254.42.42 (Scaleway's
# metadata address) on the gateway for the metadata double, and the guest's
# Debian mirror (the base image's mirror/ and the test's artifacts) over HTTP.
# Its DNS knows no name (no upstream) but logs every query: the guests
# reach everything by address, and the VM test checks that none looked up
# a container registry.
# Everything the test starts afterwards runs inside the namespace, so the
# guest's traffic never leaves it, and a tap (unlike QEMU's user
# networking) keeps the guest's source ports: the metadata double checks
# them.
#
#   net.sh up NETNS WWW_DIR STATE_DIR    (a stale namespace is removed first)
#   net.sh down NETNS STATE_DIR
set -euo pipefail

GATEWAY=10.77.0.1
METADATA=169.254.42.42
BRIDGE=pbbr0

down() {
    local ns=$1 state=$2
    for pid in "$state"/*.pid; do
        [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
        rm -f "$pid"
    done
    ip netns del "$ns" 2>/dev/null || true
}

case ${1:-} in
up)
    ns=$2 www=$3 state=$4
    mkdir -p "$state"
    down "$ns" "$state"
    rm -rf "$state/hosts" "$state/leases"
    mkdir "$state/hosts"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add $BRIDGE type bridge
    ip -n "$ns" addr add $GATEWAY/24 dev $BRIDGE
    ip -n "$ns" addr add $METADATA/32 dev $BRIDGE
    ip -n "$ns" link set $BRIDGE up
    ip netns exec "$ns" dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --log-queries \
        --interface=$BRIDGE --bind-interfaces --except-interface=lo \
        --dhcp-range=10.77.0.0,static,255.255.255.0,12h --dhcp-hostsdir="$state/hosts" \
        --dhcp-option=option:router,$GATEWAY --dhcp-option=option:dns-server,$GATEWAY \
        --dhcp-leasefile="$state/leases" --pid-file="$state/dnsmasq.pid" \
        --log-dhcp --log-facility="$state/dnsmasq.log"
    ip netns exec "$ns" python3 -m http.server 80 --bind $GATEWAY --directory "$www" \
        >"$state/mirror.log" 2>&1 &
    echo $! >"$state/mirror.pid"
    for _ in $(seq 50); do
        ip netns exec "$ns" python3 -c "import socket; socket.create_connection(('$GATEWAY', 80), 1)" \
            2>/dev/null && exit 0
        sleep 0.1
    done
    echo "net.sh: the mirror did not start: $(cat "$state/mirror.log")" >&2
    exit 1
    ;;
down)
    down "$2" "$3"
    ;;
*)
    echo "usage: net.sh up NETNS WWW_DIR STATE_DIR | down NETNS STATE_DIR" >&2
    exit 2
    ;;
esac
