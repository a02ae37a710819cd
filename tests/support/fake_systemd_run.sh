#!/bin/sh
# A stand-in for `systemd-run --scope [options] -- command...` in integration tests: copy it
# as `systemd-run` into a directory first on the charm's PATH. It appends "<its pid> <its
# arguments>" to `calls` next to itself, then does what systemd does for a scope: moves
# itself into a cgroup of its own named after --unit (in the name=systemd hierarchy, when
# that is writable here), and execs the command after `--` in this same process.
dir=$(dirname "$0")
echo "$$ $*" >> "$dir/calls"
unit=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in --unit=*) unit="${1#--unit=}" ;; esac
    shift
done
shift
cgroup=/sys/fs/cgroup/systemd/$unit.scope
if [ -n "$unit" ] && mkdir "$cgroup" 2>/dev/null; then
    echo $$ > "$cgroup/cgroup.procs" 2>/dev/null
fi
exec "$@"
