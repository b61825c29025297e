#!/bin/sh
# rategate started as a CGI program with RATEGATE_CONFIG: which command-line
# arguments it obeys.  The interpreter form (lighttpd cgi.assign runs
# "rategate SCRIPT_FILENAME") runs the script; an argument that is not
# SCRIPT_FILENAME is refused; the words of a query without '=' (which
# Apache passes as arguments, the ISINDEX convention) are never options, a
# sub-command or a script to run.
set -u
bin="${top_builddir:-.}/rategate"
echo_cgi="$(cd "${top_builddir:-.}" && pwd)/tests/apps/echo_cgi"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail=0
check() {
	case "$2" in
	*"$3"*) echo "ok: $1" ;;
	*) echo "FAIL: $1: output does not hold \"$3\":"; printf '%s\n' "$2" | head -5; fail=1 ;;
	esac
}
printf 'storage shm:%s/store?size=2M\nupstream cgi:%s\n/app/** 2/minute\n' "$d" "$echo_cgi" > "$d/r.rules"
cgi() {
	env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/r.rules" \
		REQUEST_METHOD=GET REQUEST_URI="/app/x?$1" QUERY_STRING="$1" REMOTE_ADDR=192.0.2.$2 \
		SCRIPT_FILENAME="$3" "$bin" $4 2>>"$d/stderr"
}
check "interpreter form runs SCRIPT_FILENAME" "$(cgi a=1 1 "$echo_cgi" "$echo_cgi")" "method=GET"
check "an argument other than SCRIPT_FILENAME is refused" \
	"$(cgi a=1 2 "$echo_cgi" /bin/sh)" "Status: 500"
check "... and said in the log" "$(cat "$d/stderr")" 'argument "/bin/sh" is not SCRIPT_FILENAME: refused'
# Apache: ScriptAlias onto rategate; "?/bin/sh" arrives as argv[1].
check "query words are not a script" "$(cgi /bin/sh 3 "$bin" /bin/sh)" "script_filename=$echo_cgi"
check "query words are not a sub-command" \
	"$(cgi "cgi+-c+$d/r.rules+/bin/sh" 4 "$bin" "cgi -c $d/r.rules /bin/sh")" "script_filename=$echo_cgi"
check "query words are not options" "$(cgi "-l+127.0.0.1:1" 5 "$bin" "-l 127.0.0.1:1")" "script_filename=$echo_cgi"
# The limit still holds for such requests (2/minute per address).
cgi /bin/sh 6 "$bin" /bin/sh >/dev/null
cgi /bin/sh 6 "$bin" /bin/sh >/dev/null
check "third request from one address is a 429" "$(cgi /bin/sh 6 "$bin" /bin/sh)" "Status: 429 Too Many Requests"
# A Content-Length that is not a number: a 400 before any decision, and a
# bad-request line naming the client and the path, never the query.
cl=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/r.rules" \
	REQUEST_METHOD=POST REQUEST_URI="/app/x?token=SECRET" QUERY_STRING="token=SECRET" \
	CONTENT_LENGTH=12abc REMOTE_ADDR=192.0.2.9 SCRIPT_FILENAME="$echo_cgi" "$bin" 2>"$d/stderr.cl")
check "a bad Content-Length is a 400" "$cl" "Status: 400 Bad Request"
check "... and said in the log" "$(cat "$d/stderr.cl")" \
	'event=bad-request msg="POST /app/x from 192.0.2.9: Content-Length \"12abc\" is not a number: answered 400"'
case "$(cat "$d/stderr.cl")" in
*SECRET*) echo "FAIL: the query reached the log"; fail=1 ;;
*) echo "ok: ... without the query" ;;
esac
exit $fail
