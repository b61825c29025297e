#!/bin/sh
# rategate -M MODE -U USER[:GROUP]: the unix socket it makes gets that mode
# and owner; bad values and a TCP listener are refused with a message, and so
# is a TCP port out of range.
set -u
bin="${top_builddir:-.}/rategate"
d=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$d"' EXIT
fail=0
check() { if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAIL: $1: got \"$2\", want \"$3\""; fail=1; fi; }
printf 'storage shm:%s/store?size=2M\n/a 1/second\n' "$d" > "$d/r.rules"
owner=""
want_owner=$(id -un):$(id -gn)
if [ "$(id -u)" = 0 ] && getent passwd www-data >/dev/null; then
	owner="-U www-data:www-data"; want_owner=www-data:www-data
fi
# shellcheck disable=SC2086
"$bin" -c "$d/r.rules" -l "$d/sock" -M 0666 $owner -L "$d/log" &
pid=$!
i=0
while [ ! -S "$d/sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check "socket mode" "$(stat -c %a "$d/sock" 2>/dev/null)" 666
check "socket owner" "$(stat -c %U:%G "$d/sock" 2>/dev/null)" "$want_owner"
kill "$pid"; wait "$pid"
check "socket removed at exit" "$(ls "$d/sock" 2>/dev/null)" ""
check "bad mode" "$("$bin" -c "$d/r.rules" -l "$d/sock" -M 999 2>&1)" \
	'rategate: -M "999": expected an octal mode such as 0660'
check "unknown user" "$("$bin" -c "$d/r.rules" -l "$d/sock" -U nosuchuser 2>&1)" \
	'rategate: -U "nosuchuser": no such user "nosuchuser"'
# -U :GROUP sets the group only (the owner stays who runs rategate)
if [ "$(id -u)" = 0 ] && getent group www-data >/dev/null; then
	"$bin" -c "$d/r.rules" -l "$d/sock" -U :www-data -L "$d/log" &
	pid=$!
	i=0
	while [ ! -S "$d/sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	check "socket group only" "$(stat -c %U:%G "$d/sock" 2>/dev/null)" "root:www-data"
	kill "$pid"; wait "$pid"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
check "TCP listener" "$("$bin" -c "$d/r.rules" -l "127.0.0.1:$port" -M 0600 2>&1)" \
	'rategate: -M and -U apply to a unix socket rategate makes (-l /path or listen /path)'
check "no socket left after errors" "$(ls "$d/sock" 2>/dev/null)" ""
# A port out of 1..65535 is refused, not wrapped into 16 bits (70000 would
# be 4464) nor taken as "any port" (0).
check "port above 65535" "$(timeout 5 "$bin" -c "$d/r.rules" -l 127.0.0.1:99999 2>&1)" \
	'rategate: listen "127.0.0.1:99999": bad port "99999": expected 1 to 65535'
check "port 0" "$(timeout 5 "$bin" -c "$d/r.rules" -l 127.0.0.1:0 2>&1)" \
	'rategate: listen "127.0.0.1:0": bad port "0": expected 1 to 65535'
exit $fail
