#!/bin/bash
# Builds the GitHub runner image from the Ubuntu cloud image and publishes it in LXD under
# the base-image alias (jammy or noble). Run by the github-runner charm when the alias is
# missing, and daily from cron (/etc/cron.d/github-runner-image).
#
# Usage: build-runner-image.sh --alias jammy|noble [--type virtual-machine|container]
#                              [--lock <file>]
#
# With --lock, the build first takes an flock on <file> (waiting up to 2 hours): every
# unit's daily cron and the install-time build share the builder instance and LXD's proxy
# settings, so only one may run on the machine at a time.
#
# Proxies come from HTTP_PROXY / HTTPS_PROXY / NO_PROXY in the environment (never argv).
# They reach apt inside the builder through a root-only file removed before publishing,
# and LXD's own image download through core.proxy_* (set only when given, through
# `lxc config edit` on stdin, and put back as they were on exit).
# LXD_CONF must point at the charm's lxc config dir (hooks and cron run without HOME).
set -euo pipefail

alias_name=""
instance_type="virtual-machine"
lock_file=""

usage() {
    echo "usage: $0 --alias jammy|noble [--type virtual-machine|container] [--lock <file>]" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --alias) alias_name="${2:-}"; shift 2 ;;
        --type) instance_type="${2:-}"; shift 2 ;;
        --lock) lock_file="${2:-}"; [ -n "$lock_file" ] || usage; shift 2 ;;
        *) usage ;;
    esac
done

case "$alias_name" in
    jammy | noble) ;;
    *) usage ;;
esac
case "$instance_type" in
    virtual-machine) type_flag=(--vm); root_size="8GiB" ;;
    container) type_flag=(); root_size="5GiB" ;;
    *) usage ;;
esac

log() { echo "build-runner-image: $*"; }

# One build at a time on the machine. The lock is held on fd 9 until this script exits.
if [ -n "$lock_file" ]; then
    (umask 077 && mkdir -p "$(dirname "$lock_file")" && : >>"$lock_file")
    exec 9>>"$lock_file"
    if ! flock --nonblock 9; then
        log "another image build holds ${lock_file}: waiting for it"
        if ! flock --wait 7200 9; then
            log "gave up: another image build held ${lock_file} for 2 hours"
            exit 1
        fi
    fi
fi

builder="github-runner-image-builder-${alias_name}"
http_proxy_value="${HTTP_PROXY:-${http_proxy:-}}"
https_proxy_value="${HTTPS_PROXY:-${https_proxy:-}}"
no_proxy_value="${NO_PROXY:-${no_proxy:-}}"

# LXD's proxy settings as found, restored on exit when this run changed them.
orig_http="" orig_https="" orig_ignore="" proxy_changed=""

# A YAML double-quoted string (a bash builtin: the value never reaches a process's argv).
yaml_quote() {
    local v=${1//\\/\\\\}
    v=${v//\"/\\\"}
    printf '"%s"' "$v"
}

# Sets LXD's core.proxy_http, core.proxy_https, core.proxy_ignore_hosts to $1 $2 $3 (empty:
# unset) and keeps every other server setting. The values go to `lxc config edit` on stdin:
# `lxc config set` would put them, credentials included, in argv, visible in ps.
set_lxd_proxies() {
    local current rest
    current="$(lxc config show)"
    rest="$(printf '%s\n' "$current" | sed -n '/^config:/,/^[^ ]/{/^  /p;}' |
        grep -v -E '^  core\.proxy_(http|https|ignore_hosts):' || true)"
    {
        if [ -z "$rest$1$2$3" ]; then
            echo "config: {}"
        else
            echo "config:"
            [ -n "$rest" ] && printf '%s\n' "$rest"
            [ -n "$1" ] && printf '  core.proxy_http: %s\n' "$(yaml_quote "$1")"
            [ -n "$2" ] && printf '  core.proxy_https: %s\n' "$(yaml_quote "$2")"
            [ -n "$3" ] && printf '  core.proxy_ignore_hosts: %s\n' "$(yaml_quote "$3")"
        fi
        true
    } | lxc config edit
}

cleanup() {
    lxc delete --force "$builder" >/dev/null 2>&1 || true
    if [ -n "$proxy_changed" ]; then
        set_lxd_proxies "$orig_http" "$orig_https" "$orig_ignore" ||
            log "could not restore LXD's core.proxy_* settings"
    fi
}
trap cleanup EXIT

in_builder() {
    # Every step runs with the proxy settings of /root/build-proxy.env, if any.
    lxc exec "$builder" -- /bin/bash -c "set -euo pipefail; [ -f /root/build-proxy.env ] && set -a && . /root/build-proxy.env && set +a; $1"
}

wait_for_builder() {
    local deadline=$((SECONDS + 600))
    local pause=1
    until lxc exec "$builder" -- /bin/true >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "builder did not answer exec within 600s"
            exit 1
        fi
        sleep "$pause"
        pause=$((pause < 10 ? pause * 2 : 10))
    done
    lxc exec "$builder" -- cloud-init status --wait >/dev/null || true
}

# A builder left by an interrupted run would make launch fail.
cleanup

if [ -n "$http_proxy_value$https_proxy_value$no_proxy_value" ]; then
    orig_http="$(lxc config get core.proxy_http)"
    orig_https="$(lxc config get core.proxy_https)"
    orig_ignore="$(lxc config get core.proxy_ignore_hosts)"
    proxy_changed=1
    set_lxd_proxies "${http_proxy_value:-$orig_http}" "${https_proxy_value:-$orig_https}" \
        "${no_proxy_value:-$orig_ignore}"
fi

log "launching ${alias_name} ${instance_type} builder"
lxc launch "ubuntu:${alias_name}" "$builder" "${type_flag[@]}" \
    --config limits.cpu=2 --config limits.memory=4GiB \
    --device "root,size=${root_size}"
wait_for_builder

if [ -n "$http_proxy_value$https_proxy_value" ]; then
    # Written from stdin, so the values never appear in a process's arguments.
    {
        [ -n "$http_proxy_value" ] && printf 'http_proxy=%s\nHTTP_PROXY=%s\n' "$http_proxy_value" "$http_proxy_value"
        [ -n "$https_proxy_value" ] && printf 'https_proxy=%s\nHTTPS_PROXY=%s\n' "$https_proxy_value" "$https_proxy_value"
        [ -n "$no_proxy_value" ] && printf 'no_proxy=%s\nNO_PROXY=%s\n' "$no_proxy_value" "$no_proxy_value"
        true
    } | lxc exec "$builder" -- /bin/sh -c 'umask 077; cat > /root/build-proxy.env'
fi

log "upgrading packages"
in_builder "export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get dist-upgrade -y -q
apt-get install -y -q --no-install-recommends \
    docker.io git curl wget jq unzip zip ca-certificates gnupg \
    build-essential python3-pip python3-venv shellcheck sudo acl
apt-get purge -y -q unattended-upgrades
apt-get autoremove -y -q
apt-get clean"

log "configuring the runner user and services"
in_builder "id -u ubuntu >/dev/null 2>&1 || useradd --create-home --uid 1000 --shell /bin/bash ubuntu
[ \"\$(id -u ubuntu)\" = 1000 ] || { echo 'user ubuntu must have uid 1000' >&2; exit 1; }
usermod -aG docker ubuntu
# The runner user may power the instance off (and, as on GitHub-hosted runners, use sudo).
printf 'ubuntu ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/90-github-runner
chmod 0440 /etc/sudoers.d/90-github-runner
visudo -cf /etc/sudoers.d/90-github-runner
systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
systemctl enable docker
ln -sf /usr/bin/python3 /usr/local/bin/python
# Runner instances are cloned from this image: let each get its own identity.
rm -f /root/build-proxy.env
cloud-init clean --logs --machine-id || truncate -s 0 /etc/machine-id"

log "publishing as ${alias_name}"
old_fingerprint="$(lxc image info "$alias_name" 2>/dev/null | sed -n 's/^Fingerprint: //p' || true)"
lxc stop "$builder"
lxc publish "$builder" --alias "$alias_name" --reuse \
    description="github-runner ${alias_name} ${instance_type} image built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
new_fingerprint="$(lxc image info "$alias_name" | sed -n 's/^Fingerprint: //p')"
if [ -n "$old_fingerprint" ] && [ "$old_fingerprint" != "$new_fingerprint" ]; then
    lxc image delete "$old_fingerprint" || log "old image $old_fingerprint kept (still in use?)"
fi
log "image ${alias_name} ready (${new_fingerprint})"
