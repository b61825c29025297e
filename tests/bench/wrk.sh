#!/bin/bash
# wrk.sh - HTTP throughput and latency of rategate behind lighttpd, beside
# the set-ups it should be read against, in one run on this machine.  It
# prints figures; it asserts nothing and is not part of make check.
#
#   make bench-wrk                       (builds what it needs, then runs this)
#   tests/bench/wrk.sh                   (from a tree built in place)
#   DURATION=5 tests/bench/wrk.sh
#
# Set-ups, each its own lighttpd on 127.0.0.1, all measured with the same
# wrk threads and connections on the same URL, /static/bench.txt (a 20-byte
# file), every request carrying an X-Forwarded-For from xff.lua (CLIENTS
# distinct addresses at random):
#   a  lighttpd alone, serving the static file;
#   b  the same behind a trivial FastCGI authorizer (fcgi_stub.c -a: libfcgi,
#      always "Status: 200 OK"): what the authorizer hop costs by itself;
#   c  the same behind rategate as the authorizer, with wrk/bench.rules (20
#      rules; trusted-proxies 1, so each X-Forwarded-For address is a client;
#      the path's limit is never reached) on a fresh shared-memory store;
#   d1 a trivial FastCGI responder (fcgi_stub.c) served by lighttpd directly;
#   d2 the same application behind rategate in responder mode (lighttpd ->
#      rategate -> upstream fcgi+unix://hello.sock); skipped when this build's
#      rategate does not answer as a responder (probed once).
# b and c run the same number of FastCGI processes (PROCS, lighttpd
# "max-procs") and worker threads (WORKERS, -j) and d2's rategate too.
#
# Environment: DURATION (seconds per set-up, default 10), WARMUP (seconds of
# unmeasured load before each, default 1), WRK_THREADS (2), WRK_CONNECTIONS
# (32), CLIENTS (100000), PROCS (1), WORKERS (4), SETUPS (default "a b c d"),
# RATEGATE, FCGI_STUB (the programs; default: the build tree
# given by BUILDDIR, default the source tree), LIGHTTPD, WRK.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
BUILDDIR=${BUILDDIR:-$top}
RATEGATE=${RATEGATE:-$BUILDDIR/rategate}
FCGI_STUB=${FCGI_STUB:-$BUILDDIR/tests/bench/fcgi_stub}
LIGHTTPD=${LIGHTTPD:-$(PATH=$PATH:/usr/sbin command -v lighttpd || true)}
WRK=${WRK:-$(command -v wrk || true)}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-32}
CLIENTS=${CLIENTS:-100000}
PROCS=${PROCS:-1}
WORKERS=${WORKERS:-4}
SETUPS=${SETUPS:-a b c d}
export CLIENTS

die() { echo "wrk.sh: $*" >&2; exit 1; }
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

[ -n "$WRK" ] || die "wrk not found: apt-get install -y wrk"
[ -n "$LIGHTTPD" ] || die "lighttpd not found: apt-get install -y lighttpd"
for p in "$RATEGATE" "$FCGI_STUB"; do
	[ -x "$p" ] || die "$p not found: build it (make bench-wrk builds everything this needs)"
done
RATEGATE=$(abs "$RATEGATE")
FCGI_STUB=$(abs "$FCGI_STUB")

DIR=$(mktemp -d "${TMPDIR:-/tmp}/rategate-wrk.XXXXXX")
chmod 755 "$DIR"
STORE_BASE=/dev/shm/rategate-wrk.$$
lighttpd_pid=
hello_pid=

stop_pid() {    # PID: SIGTERM, wait up to 10 s, then SIGKILL
	local pid=$1
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	stop_pid "$lighttpd_pid"
	stop_pid "$hello_pid"
	if [ -z "${RATEGATE_KEEP_BENCHDIR:-}" ]; then
		rm -f "$STORE_BASE".*
		rm -rf "$DIR"
	else
		echo "kept $DIR and $STORE_BASE.*" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${PORT:-}
if [ -z "$PORT" ]; then
	PORT=$((20000 + RANDOM % 20000))
	while busy "$PORT"; do PORT=$((PORT + 1)); done
fi

# GET path through the running lighttpd: sets STATUS and BODY.
http_get() {
	local fd resp
	STATUS='' BODY=''
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n' "$1" >&"$fd"
	resp=$(timeout 5 cat <&"$fd" | tr -d '\r') || true
	exec {fd}<&-
	STATUS=$(printf '%s\n' "$resp" | sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
	BODY=$(printf '%s\n' "$resp" | sed '1,/^$/d')
}

mkdir -p "$DIR/docroot/static"
printf 'static file content\n' > "$DIR/docroot/static/bench.txt"
URL_PATH=/static/bench.txt

# lighttpd.conf for set-up $1 with extra lines $2.
write_conf() {
	cat > "$DIR/$1.conf" <<EOF
server.document-root = "$DIR/docroot"
server.bind          = "127.0.0.1"
server.port          = $PORT
server.errorlog      = "$DIR/$1-error.log"
server.breakagelog   = "$DIR/$1-fcgi.log"
server.modules       = ( "mod_fastcgi" )
mimetype.assign      = ( ".txt" => "text/plain" )
$2
EOF
}

# Start lighttpd on set-up $1's config; wait until URL_PATH answers.
# Returns 1 (with WHY set) when it does not start or answer.
start_lighttpd() {
	WHY=
	"$LIGHTTPD" -tt -f "$DIR/$1.conf" > "$DIR/$1-check.log" 2>&1 ||
		{ WHY="lighttpd rejects the config: $(head -c 300 "$DIR/$1-check.log")"; return 1; }
	"$LIGHTTPD" -D -f "$DIR/$1.conf" > "$DIR/$1-lighttpd.out" 2>&1 &
	lighttpd_pid=$!
	for _ in $(seq 1 100); do
		if ! kill -0 "$lighttpd_pid" 2>/dev/null; then
			wait "$lighttpd_pid" 2>/dev/null || true
			lighttpd_pid=
			WHY="lighttpd exited: $(tail -n 3 "$DIR/$1-error.log" "$DIR/$1-lighttpd.out" 2>/dev/null | head -c 400)"
			return 1
		fi
		if http_get "$URL_PATH" && [ -n "$STATUS" ]; then
			[ "$STATUS" = 200 ] && return 0
			WHY="GET $URL_PATH answered $STATUS"
			[ -s "$DIR/$1-fcgi.log" ] && WHY="$WHY; $(tail -n 1 "$DIR/$1-fcgi.log" | head -c 300)"
			return 1
		fi
		sleep 0.1
	done
	WHY="lighttpd did not answer on 127.0.0.1:$PORT in 10 s"
	return 1
}

stop_lighttpd() {
	stop_pid "$lighttpd_pid"
	lighttpd_pid=
}

declare -A RPS P50 P99 NON2XX ERRS NAME

# wrk against the running lighttpd; results into the arrays under key $1.
run_wrk() {
	local url=http://127.0.0.1:$PORT$URL_PATH line
	if [ "$WARMUP" != 0 ]; then
		"$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WARMUP}s" -s "$here/wrk/xff.lua" "$url" > /dev/null 2>&1 || true
	fi
	"$WRK" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${DURATION}s" -s "$here/wrk/xff.lua" "$url" > "$DIR/$1-wrk.txt" 2>&1 ||
		{ cat "$DIR/$1-wrk.txt" >&2; die "wrk failed for set-up $1"; }
	line=$(grep '^RESULT ' "$DIR/$1-wrk.txt") || { cat "$DIR/$1-wrk.txt" >&2; die "no RESULT line from wrk for set-up $1"; }
	RPS[$1]=$(sed 's/.* rps=\([^ ]*\).*/\1/' <<< "$line")
	P50[$1]=$(sed 's/.* p50_us=\([^ ]*\).*/\1/' <<< "$line")
	P99[$1]=$(sed 's/.* p99_us=\([^ ]*\).*/\1/' <<< "$line")
	NON2XX[$1]=$(sed 's/.* non2xx=\([^ ]*\).*/\1/' <<< "$line")
	ERRS[$1]=$(sed 's/.* errors=\([^ ]*\).*/\1/' <<< "$line")
	echo "  $1: $(printf '%.0f' "${RPS[$1]}") req/s" >&2
}

# The rules with a store of their own (and, for the responder, an upstream).
rules_for() {   # NAME [UPSTREAM]
	sed -e "s|^storage[[:space:]].*|storage          shm:$STORE_BASE.$1?size=64M|" \
		"$here/wrk/bench.rules" > "$DIR/$1.rules"
	[ -z "${2:-}" ] || printf 'upstream         %s\n' "$2" >> "$DIR/$1.rules"
}

authorizer_conf() {     # BIN-PATH SOCKET
	cat <<EOF
fastcgi.server = ( "/" => ( "authz" => (
    "mode" => "authorizer", "bin-path" => "$1", "socket" => "$2",
    "max-procs" => $PROCS, "check-local" => "disable" ) ) )
EOF
}

echo "wrk.sh: ${DURATION} s per set-up (+${WARMUP} s warm-up), wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, $CLIENTS clients, FastCGI: $PROCS process(es) x $WORKERS threads" >&2

for s in $SETUPS; do
	case $s in
	a)
		NAME[a]="a  static file, lighttpd alone"
		write_conf a ""
		start_lighttpd a || die "set-up a: $WHY"
		run_wrk a
		stop_lighttpd
		;;
	b)
		NAME[b]="b  + trivial libfcgi authorizer"
		write_conf b "$(authorizer_conf "$FCGI_STUB -a -j $WORKERS" "$DIR/b.sock")"
		start_lighttpd b || die "set-up b: $WHY"
		run_wrk b
		stop_lighttpd
		;;
	c)
		NAME[c]="c  + rategate authorizer (20 rules)"
		rules_for c
		"$RATEGATE" -t -c "$DIR/c.rules" > "$DIR/c-rules.txt" 2>&1 ||
			die "set-up c: the rules do not load: $(cat "$DIR/c-rules.txt")"
		write_conf c "$(authorizer_conf "$RATEGATE -j $WORKERS -c $DIR/c.rules" "$DIR/c.sock")"
		start_lighttpd c || die "set-up c: $WHY"
		run_wrk c
		stop_lighttpd
		# What rategate counted: 2 keys (the rule's, the application's) per client.
		STORE_NOTE=$("$RATEGATE" inspect --store "$STORE_BASE.c" --stats 2>&1 |
			sed -n 's/^\(keys\|hits\): /\1 /p' | sed 's/;.*//' | paste -sd ';' - | sed 's/;/; /g') || STORE_NOTE=
		;;
	d)
		NAME[d1]="d1 fcgi_stub responder, lighttpd direct"
		NAME[d2]="d2 fcgi_stub behind rategate responder"
		"$FCGI_STUB" -j "$WORKERS" "$DIR/hello.sock" > "$DIR/hello.log" 2>&1 &
		hello_pid=$!
		for _ in $(seq 1 50); do [ -S "$DIR/hello.sock" ] && break; sleep 0.1; done
		[ -S "$DIR/hello.sock" ] || die "fcgi_stub did not start: $(cat "$DIR/hello.log")"
		write_conf d1 "fastcgi.server = ( \"/\" => ( \"hello\" => (
    \"socket\" => \"$DIR/hello.sock\", \"check-local\" => \"disable\" ) ) )"
		start_lighttpd d1 || die "set-up d1: $WHY"
		[ "$BODY" = hello ] || die "set-up d1: fcgi_stub answered \"$BODY\""
		run_wrk d1
		stop_lighttpd
		# d2: probe once whether this rategate serves the responder role.
		rules_for d2 "fcgi+unix://$DIR/hello.sock"
		d2_ok=
		if ! "$RATEGATE" -t -c "$DIR/d2.rules" > "$DIR/d2-rules.txt" 2>&1; then
			WHY="the rules do not load: $(head -n 1 "$DIR/d2-rules.txt")"
		else
			write_conf d2 "fastcgi.server = ( \"/\" => ( \"rategate\" => (
    \"bin-path\" => \"$RATEGATE -j $WORKERS -c $DIR/d2.rules\", \"socket\" => \"$DIR/d2.sock\",
    \"max-procs\" => $PROCS, \"check-local\" => \"disable\" ) ) )"
			if start_lighttpd d2; then
				if [ "$BODY" = hello ]; then d2_ok=1; else WHY="answered \"$BODY\" instead of hello"; fi
			fi
		fi
		if [ -n "$d2_ok" ]; then
			run_wrk d2
		else
			echo "responder: skipped (not supported by this build): $WHY" >&2
			NAME[d2]="${NAME[d2]}: skipped (not supported by this build)"
		fi
		stop_lighttpd
		stop_pid "$hello_pid"
		hello_pid=
		;;
	*) die "unknown set-up \"$s\" in SETUPS (a b c d)" ;;
	esac
done

# The table.
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
pct() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.0f%%", 100 * x / y; else printf "-" }'; }
ncpu=$(nproc 2>/dev/null || echo "?")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo
echo "rategate wrk benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu CPU(s)${cpu:+ ($cpu)}, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$("$LIGHTTPD" -v 2>&1 | head -n 1 | cut -d' ' -f1), $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2); wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, ${DURATION} s each, GET $URL_PATH with X-Forwarded-For from $CLIENTS addresses; FastCGI $PROCS process(es) x $WORKERS threads"
printf '%-46s %10s %9s %9s %8s %8s  %s\n' "set-up" "req/s" "p50 ms" "p99 ms" "non-2xx" "errors" "relative"
for k in a b c d1 d2; do
	[ -n "${NAME[$k]:-}" ] || continue
	if [ -z "${RPS[$k]:-}" ]; then
		printf '%s\n' "${NAME[$k]}"
		continue
	fi
	rel=
	case $k in
	b) [ -n "${RPS[a]:-}" ] && rel="$(pct "${RPS[b]}" "${RPS[a]}") of a" ;;
	c) [ -n "${RPS[b]:-}" ] && rel="$(pct "${RPS[c]}" "${RPS[b]}") of the trivial authorizer (b)" ;;
	d2) [ -n "${RPS[d1]:-}" ] && rel="$(pct "${RPS[d2]}" "${RPS[d1]}") of direct (d1)" ;;
	esac
	printf '%-46s %10.0f %9s %9s %8s %8s  %s\n' "${NAME[$k]}" "${RPS[$k]}" "$(ms "${P50[$k]}")" \
		"$(ms "${P99[$k]}")" "${NON2XX[$k]}" "${ERRS[$k]}" "$rel"
done
[ -z "${STORE_NOTE:-}" ] || echo "c's store after its run (warm-up included): $STORE_NOTE"
