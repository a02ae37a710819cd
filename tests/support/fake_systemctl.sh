#!/bin/sh
# A stand-in for systemctl in integration tests: copy it as `systemctl` into a directory put
# first on the charm's PATH. The charm runs systemctl with an explicit environment, so the
# script keeps its state next to itself, not in an environment variable:
#   calls            one line per invocation, the arguments separated by single spaces;
#   active/<unit>    present while <unit> counts as active (enable --now / restart / start
#                    create it, disable --now / stop remove it; `is-active` answers from it).
# Tests make a unit inactive by deleting active/<unit> (a timer that died).
dir=$(dirname "$0")
mkdir -p "$dir/active"
echo "$*" >> "$dir/calls"

unit=""
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) unit="$arg" ;;
    esac
done

case "$1" in
    enable)
        case " $* " in *" --now "*) : > "$dir/active/$unit" ;; esac ;;
    start|restart)
        : > "$dir/active/$unit" ;;
    disable)
        case " $* " in *" --now "*) rm -f "$dir/active/$unit" ;; esac ;;
    stop)
        rm -f "$dir/active/$unit" ;;
    is-active)
        [ -e "$dir/active/$unit" ] && exit 0
        exit 3 ;;
esac
exit 0
