#!/bin/sh
# Makes a local LXD usable by the integration tests: installs Debian's lxd (and
# busybox-static for the test image) when missing, starts the daemon when nothing answers,
# waits for it, and ensures a `dir` storage pool named "default". Idempotent; safe to run
# while tests of another checkout use the same daemon (it never deletes anything).
set -eu

# Hooks and CI may run without HOME: give lxc a config dir of its own.
LXD_CONF="${LXD_CONF:-${TMPDIR:-/tmp}/github-runner-test-lxc-conf}"
export LXD_CONF
mkdir -p "$LXD_CONF"
chmod 700 "$LXD_CONF"

need_install=""
command -v lxd >/dev/null 2>&1 || need_install="$need_install lxd"
command -v lxc >/dev/null 2>&1 || need_install="$need_install lxd-client"
dpkg -s busybox-static >/dev/null 2>&1 || need_install="$need_install busybox-static"
# LXD picks its firewall driver when it starts: without nft then, it stays on xtables,
# and with no iptables either every bridge fails to come up.
command -v nft >/dev/null 2>&1 || need_install="$need_install nftables"
if [ -n "$need_install" ]; then
    echo "setup-lxd: installing$need_install"
    apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_install
fi

if lxc query /1.0 2>/dev/null | grep -q '"firewall": *"xtables"' \
    && ! command -v iptables >/dev/null 2>&1; then
    echo "setup-lxd: the daemon started before nftables was installed (firewall xtables, no iptables); restarting it"
    lxd shutdown --timeout 60 || true
fi
if ! lxc query /1.0 >/dev/null 2>&1; then
    echo "setup-lxd: no LXD daemon answers; starting 'lxd --group root' in the background"
    log="${TMPDIR:-/tmp}/github-runner-test-lxd.log"
    setsid lxd --group root >"$log" 2>&1 </dev/null &
fi
lxd waitready --timeout 120

if ! lxc storage show default >/dev/null 2>&1; then
    echo "setup-lxd: creating dir storage pool 'default'"
    lxc storage create default dir
fi
echo "setup-lxd: LXD $(lxc query /1.0 | sed -n 's/.*"server_version": *"\([^"]*\)".*/\1/p' | head -n 1) ready"
