#!/bin/sh
# rategate -M MODE -U USER[:GROUP]: the unix socket it makes gets that mode
# and owner; bad values and a TCP listener are refused with a message.
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
	'rategate: -U "nosuchuser": no such user'
check "TCP listener" "$("$bin" -c "$d/r.rules" -l 127.0.0.1:0 -M 0600 2>&1)" \
	'rategate: -M and -U apply to a unix socket rategate makes (-l /path or listen /path)'
check "no socket left after errors" "$(ls "$d/sock" 2>/dev/null)" ""
exit $fail
