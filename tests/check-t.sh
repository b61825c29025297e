#!/bin/sh
# rategate -t: the gateway's own checks of a rule set (the upstreams it
# names) report FILE:LINE:COL like the rule parser does, point at the URI,
# and decide the exit status: a CGI program that is missing, not a regular
# file or not executable is an error; a unix socket that does not exist yet
# is a warning (the application may start after rategate).  The shm store:
# a file that does not exist yet is described as it would be created; an
# existing one is checked as opening it would (read-only), its own geometry
# printed when it fits, and the gateway's refusal printed as an error when
# it does not.
set -u
bin="${top_builddir:-.}/rategate"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail=0
expect() {  # name, expected exit status, file with expected stderr
	if [ "$rc" != "$2" ]; then
		echo "FAIL: $1: exit status $rc, expected $2"; fail=1
	elif ! diff -u "$3" "$d/err"; then
		echo "FAIL: $1: stderr differs (above)"; fail=1
	else
		echo "ok: $1"
	fi
}
mkdir "$d/dir"
printf '#!/bin/sh\n' > "$d/noexec.cgi"
printf '#!/bin/sh\n' > "$d/ok.cgi"
chmod +x "$d/ok.cgi"
cat > "$d/bad.rules" <<RULES
storage shm:$d/store?size=2M
upstream   fcgi+unix://$d/app.sock
/a 1/minute upstream=cgi:$d/missing.cgi
/b  1/minute  upstream=cgi:$d/dir
/c 1/minute upstream=cgi:$d/noexec.cgi
/d 1/minute upstream=cgi:$d/ok.cgi
RULES
"$bin" -t -c "$d/bad.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/bad.rules:2:12: warning: upstream fcgi+unix://$d/app.sock: No such file or directory (the application is not running yet?)
$d/bad.rules:3:22: upstream cgi:$d/missing.cgi: No such file or directory
$d/bad.rules:4:24: upstream cgi:$d/dir: not a regular file
$d/bad.rules:5:22: upstream cgi:$d/noexec.cgi: not executable
rategate: $d/bad.rules: 3 errors in the gateway settings
WANT
expect "bad upstreams: one line each, at the URI" 1 "$d/want"
# nothing on stdout: no storage geometry line for a check that failed
if [ -s "$d/out" ]; then
	echo "FAIL: bad upstreams: stdout not empty:"; cat "$d/out"; fail=1
fi

printf 'storage shm:%s/store?size=2M\nupstream fcgi+unix://%s/app.sock\n/d 1/minute upstream=cgi:%s/ok.cgi\n' \
	"$d" "$d" "$d" > "$d/warn.rules"
"$bin" -t -c "$d/warn.rules" >"$d/out" 2>"$d/err"; rc=$?
printf '%s/warn.rules:2:10: warning: upstream fcgi+unix://%s/app.sock: No such file or directory (the application is not running yet?)\n' \
	"$d" "$d" > "$d/want"
expect "a socket not there yet is only a warning" 0 "$d/want"
case "$(cat "$d/out")" in
*"warn.rules: ok: 1 rule in 1 file;"*) echo "ok: ... and the summary line follows" ;;
*) echo "FAIL: no summary line:"; cat "$d/out"; fail=1 ;;
esac

# exempt-clients shows in the summary, so a check names who is never limited
printf 'storage shm:%s/store?size=2M\nexempt-clients 10.0.0.0/8 ::1\n/a 1/minute\n' "$d" > "$d/ex.rules"
"$bin" -t -c "$d/ex.rules" >"$d/out" 2>"$d/err"; rc=$?
case "$rc:$(tail -n 1 "$d/out")" in
*"0:rategate: $d/ex.rules: ok: 1 rule in 1 file; default \"none\"; application \"none\"; strategy fixed-window; storage shm:$d/store?size=2M; exempt clients in 2 networks")
	echo "ok: exempt-clients in the summary line" ;;
*) echo "FAIL: exempt-clients summary (exit $rc):"; cat "$d/out" "$d/err"; fail=1 ;;
esac

# The shm store file: to be created, existing and fitting, existing and
# refused.  A CGI-wrapper request creates it with one key (/bin/true runs).
same() {  # name, expected exit status, file with expected stdout, and stderr
	if [ "$rc" != "$2" ]; then
		echo "FAIL: $1: exit status $rc, expected $2"; fail=1
	elif ! diff -u "$3" "$d/out" || ! diff -u "$4" "$d/err"; then
		echo "FAIL: $1: output differs (above)"; fail=1
	else
		echo "ok: $1"
	fi
}
: > "$d/none"
printf 'storage shm:%s/st?size=2M\n/a 1/minute\n' "$d" > "$d/r.rules"
printf 'storage shm:%s/st?size=2M\n/a 1/minute\n/mw 10/minute strategy=moving-window\n' "$d" > "$d/mw.rules"
printf 'storage shm:%s/st?size=4M\n/a 1/minute\n' "$d" > "$d/big.rules"
geometry="2097152 bytes: 10304 counter slots (192 bytes each with its name, 204 with its share of the pools, locks and header)"
summary="ok: 1 rule in 1 file; default \"none\"; application \"none\"; strategy fixed-window; storage shm:$d/st?size=2M"
"$bin" -t -c "$d/r.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
rategate: storage shm:$d/st?size=2M: file $d/st (to be created), $geometry, moving windows up to 6 hits in 4 slots, concurrency up to 67 in 36 slots, 4 stripes
rategate: $d/r.rules: $summary
WANT
same "no store file yet: the geometry it would be created with" 0 "$d/want" "$d/none"
[ -e "$d/st" ] && { echo "FAIL: -t created the store file"; fail=1; }

env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET REQUEST_URI=/a \
	REMOTE_ADDR=192.0.2.1 "$bin" cgi -c "$d/r.rules" /bin/true >/dev/null 2>&1
cp "$d/st" "$d/st.before"
"$bin" -t -c "$d/r.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
rategate: storage shm:$d/st?size=2M: file $d/st (exists, 1 key held), $geometry, moving windows up to 6 hits in 4 slots, concurrency up to 67 in 36 slots, 4 stripes
rategate: $d/r.rules: $summary
WANT
same "an existing store that fits: its own geometry and keys" 0 "$d/want" "$d/none"

"$bin" -t -c "$d/mw.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/mw.rules:1:9: shm store "$d/st": the rule at $d/mw.rules:3 needs moving-window counts up to 10 but the file's slots hold counts up to 6: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (moving-window-max=N on the storage line reserves room for later rules)
rategate: $d/mw.rules: 1 error in the gateway settings
WANT
same "rules needing bigger moving-window slots than the file's: the start's error" 1 "$d/none" "$d/want"

printf 'storage shm:%s/st?size=2M\n/a 1/minute\n/c concurrency=100\n' "$d" > "$d/cc.rules"
"$bin" -t -c "$d/cc.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/cc.rules:1:9: shm store "$d/st": the rule at $d/cc.rules:3 needs concurrency up to 100 but the file's slots hold up to 67: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (concurrency-max=N on the storage line reserves room for later rules)
rategate: $d/cc.rules: 1 error in the gateway settings
WANT
same "a rule needing bigger in-flight slots than the file's: the rule named" 1 "$d/none" "$d/want"

"$bin" -t -c "$d/big.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/big.rules:1:9: shm store "$d/st": the file holds size=2M but storage asks for size=4M: stop the gateways and delete the file (its counters are lost), or set size=2M
rategate: $d/big.rules: 1 error in the gateway settings
WANT
same "another size than the file's: the start's error" 1 "$d/none" "$d/want"
cmp -s "$d/st" "$d/st.before" || { echo "FAIL: -t changed the store file"; fail=1; }

# ... and what a start with those rules says: the same
# (a timeout, should it start after all)
timeout 10 "$bin" -c "$d/mw.rules" -l "$d/gw.sock" >"$d/out" 2>"$d/err"; rc=$?
printf 'rategate: %s/mw.rules: shm store "%s/st": the rule at %s/mw.rules:3 needs moving-window counts up to 10 but the file'"'"'s slots hold counts up to 6: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (moving-window-max=N on the storage line reserves room for later rules)\n' \
	"$d" "$d" "$d" > "$d/want"
same "... the gateway refuses to start with the same message" 1 "$d/none" "$d/want"

printf 'not a store\n' > "$d/st"
"$bin" -t -c "$d/r.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/r.rules:1:9: shm store "$d/st": not a rategate store (12 bytes, shorter than a header): move it away or choose another path
rategate: $d/r.rules: 1 error in the gateway settings
WANT
same "somebody else's file" 1 "$d/none" "$d/want"

# A file to be created where it cannot be (here: no such directory; also a
# read-only or too small filesystem) is the start's error already, not an
# "ok (to be created)".
printf 'storage shm:%s/nodir/st?size=2M\n/a 1/minute\n' "$d" > "$d/nodir.rules"
"$bin" -t -c "$d/nodir.rules" >"$d/out" 2>"$d/err"; rc=$?
cat > "$d/want" <<WANT
$d/nodir.rules:1:9: shm store "$d/nodir/st": No such file or directory (its directory)
rategate: $d/nodir.rules: 1 error in the gateway settings
WANT
same "a file that cannot be created" 1 "$d/none" "$d/want"

# Command-line mistakes: a message naming the option, exit 2 (usage), before
# anything is loaded; -t checks -j and -M too, so that a command line -t
# passes does not fail at the start.
usage_error() {  # name, expected first line of stderr, arguments...
	name=$1 want=$2
	shift 2
	"$bin" "$@" >"$d/out" 2>"$d/err"; rc=$?
	if [ "$rc" != 2 ]; then
		echo "FAIL: $name: exit status $rc, expected 2"; fail=1
	elif [ "$(head -n 1 "$d/err")" != "$want" ]; then
		echo "FAIL: $name: stderr starts with:"; head -n 1 "$d/err"; fail=1
	else
		echo "ok: $name"
	fi
}
usage_error "-c without its file" 'rategate: -c needs a value (the rule file)' -t -c
usage_error "-l without its socket" 'rategate: -l needs a value (a socket: /path, 127.0.0.1:PORT)' -c "$d/r.rules" -l
usage_error "-c twice" "rategate: -c given twice (\"$d/r.rules\" and \"$d/big.rules\")" -t -c "$d/r.rules" -c "$d/big.rules"
usage_error "-t with -j 0" 'rategate: -j "0": expected a number of worker threads from 1 to 256' -t -c "$d/r.rules" -j 0
usage_error "a bad -M" 'rategate: -M "999": expected an octal mode such as 0660' -c "$d/r.rules" -l "$d/s.sock" -M 999
usage_error "a bad -l" 'rategate: listen "localhost:80": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000)' -t -c "$d/r.rules" -l localhost:80
usage_error "-U of no user" 'rategate: -U "nosuchuser:root": no such user "nosuchuser"' -t -c "$d/r.rules" -l "$d/s.sock" -U nosuchuser:root
usage_error "-U of nothing" 'rategate: -U ":": expected USER, USER:GROUP or :GROUP' -t -c "$d/r.rules" -l "$d/s.sock" -U :
usage_error "no rule file" 'rategate: no rule file: give -c FILE (or RATEGATE_CONFIG=FILE in the environment)' -t
usage_error "replay -c without its file" 'rategate replay: -c needs a value (the rule file)' replay -c
usage_error "inspect with -c and --store" 'rategate inspect: -c and --store are exclusive: give one' inspect -c "$d/r.rules" --store "$d/st"
usage_error "inspect --client twice" 'rategate inspect: --client given twice' inspect --client a --client b --store "$d/st"
[ -e "$d/s.sock" ] && { echo "FAIL: a bad -M left a socket"; fail=1; }

# moving-window-max= reserves room when the file is created: a later rule
# set with a moving window of 40 fits the file a start made without one.
printf 'storage shm:%s/res?size=2M&moving-window-max=50\n/x 1/minute\n' "$d" > "$d/res1.rules"
"$bin" -c "$d/res1.rules" -l "$d/res.sock" >/dev/null 2>&1 &
res_pid=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S "$d/res.sock" ] && break; sleep 0.2; done
kill "$res_pid"; wait "$res_pid"
printf 'storage shm:%s/res?size=2M\n/x 40/minute strategy=moving-window\n' "$d" > "$d/res2.rules"
"$bin" -t -c "$d/res2.rules" >"$d/out" 2>"$d/err"; rc=$?
if [ "$rc" != 0 ] || ! grep -q "file $d/res (exists, 0 keys held).*moving windows up to 54 hits" "$d/out"; then
	echo "FAIL: moving-window-max=50 reserved no room (exit $rc):"; cat "$d/out" "$d/err"; fail=1
else
	echo "ok: moving-window-max= reserves room for later rules"
fi

# Redis with store-failure fallback: the gateway opens the fallback's shm
# file at start and stops on one it would refuse, so -t must say so (it
# said ok).  The file res (2M, made above) is not the fallback's 64M.
printf 'storage redis://127.0.0.1:1/0?fallback=%s/res\nstore-failure fallback\n/x 1/minute\n' "$d" > "$d/fb.rules"
"$bin" -t -c "$d/fb.rules" >"$d/out" 2>"$d/err"; rc=$?
printf '%s/fb.rules:1:9: store-failure fallback: shm store "%s/res": the file holds size=2M but storage asks for size=64M: stop the gateways and delete the file (its counters are lost), or set size=2M\nrategate: %s/fb.rules: 1 error in the gateway settings\n' \
	"$d" "$d" "$d" > "$d/want"
expect "a store-failure fallback file the start would refuse" 1 "$d/want"
printf 'storage redis://127.0.0.1:1/0?fallback=%s/fbnew\nstore-failure fallback\n/x 1/minute\n' "$d" > "$d/fb2.rules"
"$bin" -t -c "$d/fb2.rules" >"$d/out" 2>"$d/err"; rc=$?
: > "$d/want"
expect "a store-failure fallback file to be created" 0 "$d/want"

# A FIFO among the rule files is refused at once, not waited on (the open
# used to block until a writer came: a reload hung, and SIGTERM with it).
mkfifo "$d/fifo.rules"
printf 'include fifo.rules\n/x 1/minute\n' > "$d/f.rules"
timeout 10 "$bin" -t -c "$d/f.rules" >/dev/null 2>"$d/err"; rc=$?
printf '%s/f.rules:1:9: cannot read included file "%s/fifo.rules": not a regular file\nrategate: %s/f.rules: rules not loaded\n' \
	"$d" "$d" "$d" > "$d/want"
expect "a FIFO among the rule files" 1 "$d/want"

# An empty rule file: a reload refuses it (a save caught half-way), so -t,
# which the documented systemd unit's ExecReload runs first, fails too.
: > "$d/empty.rules"
"$bin" -t -c "$d/empty.rules" >/dev/null 2>"$d/err"; rc=$?
printf '%s/empty.rules:1:1: warning: nothing is limited: no default, application or path limits (every request is allowed)\nrategate: %s/empty.rules: the file is empty: a reload refuses it (a save caught half-way?); write "enabled off" to run without limits on purpose\nrategate: %s/empty.rules: 1 error in the gateway settings\n' \
	"$d" "$d" "$d" > "$d/want"
expect "an empty rule file, as a reload would" 1 "$d/want"
exit $fail
