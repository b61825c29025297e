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
# ... with the headers of every answer of rategate's (rategate(8), RESPONSES),
# in JSON when asked for
check "... with Cache-Control: no-store" "$(cgi a=1 2 "$echo_cgi" /bin/sh)" "Cache-Control: no-store"
check "... in JSON for Accept: application/json" \
	"$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/r.rules" \
		REQUEST_METHOD=GET REQUEST_URI=/app/x QUERY_STRING= REMOTE_ADDR=192.0.2.2 \
		HTTP_ACCEPT=application/json SCRIPT_FILENAME="$echo_cgi" "$bin" /bin/sh 2>/dev/null)" \
	'{"error":"internal_error"'
# The same refusal for an nph- script under Apache (mod_cgi sends what it
# prints to the client unread): a whole HTTP response, not a bare
# Status line the client would take for the body of nothing.
nph=$d/nph-app.cgi
cp "$echo_cgi" "$nph"
refused=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/r.rules" \
	REQUEST_METHOD=GET REQUEST_URI="/app/x" QUERY_STRING="" REMOTE_ADDR=192.0.2.7 \
	SERVER_SOFTWARE=Apache/2.4.62 SERVER_PROTOCOL=HTTP/1.1 \
	SCRIPT_FILENAME="$nph" "$bin" /bin/sh 2>>"$d/stderr")
check "an nph- script's refusal starts with a status line" "$(printf '%s' "$refused" | head -1)" \
	"HTTP/1.1 500 Internal Server Error"
check "... and closes the connection" "$refused" "Connection: close"
# Apache: ScriptAlias onto rategate; "?/bin/sh" arrives as argv[1].
check "query words are not a script" "$(cgi /bin/sh 3 "$bin" /bin/sh)" "script_filename=$echo_cgi"
# Words that would make a whole command line of their own: nobody can tell
# whether Apache appended them or the configuration wrote them, so refused.
check "query words that form a sub-command are refused" \
	"$(cgi "cgi+-c+$d/r.rules+/bin/sh" 4 "$bin" "cgi -c $d/r.rules /bin/sh")" "Status: 500"
# A client repeating the configuration's own last arguments in its query
# cannot make rategate drop them: the wrapper script "exec rategate cgi -c
# RULES SCRIPT" (no "$@") asked for "?SCRIPT", and lighttpd's interpreter
# form asked for "?SCRIPT_FILENAME", would otherwise run the rules'
# upstream (or nothing) instead of SCRIPT.
other=$d/other.cgi
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nother\\n"\n' > "$other"
chmod +x "$other"
printf 'storage shm:%s/store?size=2M\nupstream cgi:%s\n/app/** 100/minute\n' "$d" "$other" > "$d/u.rules"
ucgi() {
	env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/u.rules" \
		REQUEST_METHOD=GET REQUEST_URI="/app/x?$1" QUERY_STRING="$1" REMOTE_ADDR=192.0.2.20 \
		SCRIPT_FILENAME="$2" "$bin" $3 2>>"$d/stderr"
}
check "the configured script is not dropped for ?SCRIPT" \
	"$(ucgi "$echo_cgi" "$echo_cgi" "cgi -c $d/u.rules $echo_cgi")" "Status: 500"
check "the interpreter form's script is not dropped for ?SCRIPT_FILENAME" \
	"$(ucgi "$echo_cgi" "$echo_cgi" "$echo_cgi")" "Status: 500"
check "... and said in the log" "$(cat "$d/stderr")" "means something with and without them: refused"
check "without such a query the configured script runs" \
	"$(ucgi "a=1" "$echo_cgi" "cgi -c $d/u.rules $echo_cgi")" "script_filename=$echo_cgi"
check "query words are not options" "$(cgi "-l+127.0.0.1:1" 5 "$bin" "-l 127.0.0.1:1")" "script_filename=$echo_cgi"
# The limit still holds for such requests (2/minute per address).
cgi /bin/sh 6 "$bin" /bin/sh >/dev/null
cgi /bin/sh 6 "$bin" /bin/sh >/dev/null
check "third request from one address is a 429" "$(cgi /bin/sh 6 "$bin" /bin/sh)" "Status: 429 Too Many Requests"
# The store cannot be opened and store-failure is allow: the request is let
# through, but the rules still pick the script (the rule's upstream=, not
# the global one), the environment is still cleaned (httpoxy), and the log
# says what happened.
printf 'storage shm:%s/nodir/store?size=2M\nstore-failure allow\nupstream cgi:%s\n/other/** 10/minute upstream=cgi:%s\n' \
	"$d" "$other" "$echo_cgi" > "$d/down.rules"
down=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/down.rules" \
	REQUEST_METHOD=GET REQUEST_URI="/other/x" QUERY_STRING="" REMOTE_ADDR=192.0.2.30 \
	HTTP_PROXY=http://evil.example SCRIPT_FILENAME="$bin" "$bin" 2>"$d/stderr.down")
check "store down, allow: the rule's script runs" "$down" "script_filename=$echo_cgi"
check "... with HTTP_PROXY removed" "$down" "http_proxy=absent"
check "... and the log says it was let through" "$(cat "$d/stderr.down")" \
	"(store-failure allow: request let through)"
# A script whose #! line names rategate would start rategate again, which
# would run the script again, each round counting a hit: refused at once.
loop=$d/loop.cgi
printf '#!%s\necho never\n' "$(cd "$(dirname "$bin")" && pwd)/rategate" > "$loop"
chmod +x "$loop"
printf 'storage shm:%s/store?size=2M\n/** 1000/minute\n' "$d" > "$d/loop.rules"
lp=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/loop.rules" \
	REQUEST_METHOD=GET REQUEST_URI="/loop.cgi" QUERY_STRING="" REMOTE_ADDR=192.0.2.40 \
	SCRIPT_FILENAME="$loop" timeout 5 "$bin" "$loop" 2>"$d/stderr.loop")
check "a script naming rategate on its #! line is refused" "$lp" "Status: 500"
check "... and said in the log" "$(cat "$d/stderr.loop")" "names it on its #! line"
# ... also through env ("#!/usr/bin/env rategate", "#!/usr/bin/env -S /path/rategate x")
for shebang in "/usr/bin/env $(cd "$(dirname "$bin")" && pwd)/rategate" \
	       "/usr/bin/env -S A=1 $(cd "$(dirname "$bin")" && pwd)/rategate x" \
	       "/usr/bin/env -u HOME $(cd "$(dirname "$bin")" && pwd)/rategate" \
	       "/usr/bin/env -S$(cd "$(dirname "$bin")" && pwd)/rategate"; do
	printf '#!%s\necho never\n' "$shebang" > "$loop"
	lp=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/loop.rules" \
		REQUEST_METHOD=GET REQUEST_URI="/loop.cgi" QUERY_STRING="" REMOTE_ADDR=192.0.2.41 \
		SCRIPT_FILENAME="$loop" timeout 5 "$bin" "$loop" 2>"$d/stderr.loop")
	check "#!$shebang is refused" "$lp" "Status: 500"
done
printf '#!/usr/bin/env sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nviaenv\\n"\n' > "$loop"
lp=$(env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/loop.rules" \
	REQUEST_METHOD=GET REQUEST_URI="/loop.cgi" QUERY_STRING="" REMOTE_ADDR=192.0.2.42 \
	SCRIPT_FILENAME="$loop" timeout 5 "$bin" "$loop" 2>"$d/stderr.loop")
check "#!/usr/bin/env sh runs" "$lp" "viaenv"
# A chunked upload (Apache passes HTTP_TRANSFER_ENCODING and no
# CONTENT_LENGTH) on a path that limits bodies: the wrapper could not
# measure it once the script runs, so it asks for a length, before counting.
printf 'storage shm:%s/store?size=2M\nupstream cgi:%s\nmax-body 100\n/free/** 10/minute max-body=none\n/** 10/minute\n' \
	"$d" "$echo_cgi" > "$d/te.rules"
te() {
	env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/te.rules" \
		REQUEST_METHOD=POST REQUEST_URI="$1" QUERY_STRING="" REMOTE_ADDR=192.0.2.50 \
		HTTP_TRANSFER_ENCODING=chunked SCRIPT_FILENAME="$bin" "$bin" </dev/null 2>>"$d/stderr.te"
}
check "a chunked body on a max-body path is a 411" "$(te /up)" "Status: 411 Length Required"
check "... and said in the log" "$(cat "$d/stderr.te")" "event=too-large status=411"
check "a chunked body on a path without body limits runs the script" "$(te /free/x)" "script_filename=$echo_cgi"
# What the script is told: RL_EXEMPT on an exempt path; and a rule with
# concurrency= says, on each request, that it is not enforced here.
envs=$d/env.cgi
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nexempt=%%s\\n" "$RL_EXEMPT"\n' > "$envs"
chmod +x "$envs"
printf 'storage shm:%s/store?size=2M\nupstream cgi:%s\n/ping exempt\n/chat 10/minute concurrency=2\n' \
	"$d" "$envs" > "$d/env.rules"
ecgi() {
	env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/env.rules" \
		REQUEST_METHOD=GET REQUEST_URI="$1" QUERY_STRING="" REMOTE_ADDR=192.0.2.60 \
		SCRIPT_FILENAME="$bin" "$bin" 2>>"$d/stderr.env"
}
check "RL_EXEMPT=1 on an exempt path" "$(ecgi /ping)" "exempt=1"
case "$(ecgi /chat | tail -n 1)" in
exempt=) echo "ok: RL_EXEMPT unset elsewhere" ;;
*) echo "FAIL: RL_EXEMPT set on a path that is not exempt"; fail=1 ;;
esac
check "concurrency= is said not to be enforced" "$(cat "$d/stderr.env")" \
	"concurrency= needs the responder mode; here requests in flight are not limited"
# Apache 2.4 keeps empty words ("?a++b" gives "a", "", "b"; "?hello+" gives
# "hello", ""): they are the query's words too, so the script runs.
words() {  # query, address, then the arguments Apache passes
	q=$1 a=$2
	shift 2
	env -i PATH=/usr/bin:/bin GATEWAY_INTERFACE=CGI/1.1 RATEGATE_CONFIG="$d/u.rules" \
		REQUEST_METHOD=GET REQUEST_URI="/app/x?$q" QUERY_STRING="$q" REMOTE_ADDR=192.0.2.$a \
		SCRIPT_FILENAME="$bin" "$bin" "$@" 2>>"$d/stderr"
}
check "empty query words (a++b) are query words" "$(words 'a++b' 30 a '' b)" "other"
check "a trailing empty word (hello+)" "$(words 'hello+' 31 hello '')" "other"
check "a leading empty word (+/bin/sh)" "$(words '+/bin/sh' 32 '' /bin/sh)" "other"
# More words than Apache passes (4091 under mod_cgid): which arguments are
# the client's cannot be told, so refused, never read as options.
q=-t; set -- -t; i=1
while [ $i -lt 4091 ]; do q="$q+-t"; set -- "$@" -t; i=$((i + 1)); done
check "4091 query words are refused" "$(words "$q" 33 "$@")" "Status: 500"
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
