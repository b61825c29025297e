#!/bin/bash
# quickstart.sh - lighttpd on 127.0.0.1 in front of rategate, a FastCGI
# authorizer, with the example rules (examples/site.rules) and their
# shared-memory store.  Run it from anywhere after building rategate
# (README, command 1):
#
#   examples/quickstart.sh
#
# It writes a lighttpd configuration and a small site (index.html, /login,
# /pay, /ping ...) into a temporary directory, starts lighttpd in the
# background (lighttpd spawns two rategate processes through bin-path; both
# count in the one shared-memory store the rules name), waits until it
# answers, and prints curl commands that get a 429 and the command that
# stops it all.  It needs bash, lighttpd and the built rategate; nothing
# else (it probes ports with bash's /dev/tcp, not curl).
#
# Environment (all optional):
#   PORT            port on 127.0.0.1 (default: 8080, else the next free one
#                   up to 8099); a busy PORT is an error
#   QUICKSTART_DIR  directory for the configuration, site, socket and logs
#                   (created if missing; default: a new mktemp -d)
#   RATEGATE        the rategate binary (default: ./rategate beside examples/)
#   RULES           the rule file (default: examples/site.rules)
#   STORAGE         replace the rules' "storage" (e.g. shm:/tmp/x/store?size=8M);
#                   the rules are then copied into QUICKSTART_DIR
#   LIGHTTPD        the lighttpd binary (default: lighttpd from PATH or /usr/sbin)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
RATEGATE=${RATEGATE:-$top/rategate}
RULES=${RULES:-$here/site.rules}
LIGHTTPD=${LIGHTTPD:-$(PATH=$PATH:/usr/sbin:/usr/local/sbin command -v lighttpd || true)}

die() { echo "quickstart: $*" >&2; exit 1; }

[ -n "$LIGHTTPD" ] && [ -x "$LIGHTTPD" ] || die "lighttpd not found: apt-get install -y lighttpd"
[ -x "$RATEGATE" ] || die "$RATEGATE not found: build it first (./autogen.sh && ./configure && make)"
[ -r "$RULES" ] || die "cannot read the rules $RULES"
RATEGATE=$(cd "$(dirname "$RATEGATE")" && pwd)/$(basename "$RATEGATE")
RULES=$(cd "$(dirname "$RULES")" && pwd)/$(basename "$RULES")

if [ -n "${QUICKSTART_DIR:-}" ]; then
	mkdir -p "$QUICKSTART_DIR"
	DIR=$(cd "$QUICKSTART_DIR" && pwd)
else
	DIR=$(mktemp -d "${TMPDIR:-/tmp}/rategate-quickstart.XXXXXX")
fi
chmod 755 "$DIR"
# lighttpd's bin-path is split on spaces and its strings are "..."-quoted.
case "$DIR$RATEGATE$RULES" in
*[[:space:]\"\\]*) die "paths with spaces, quotes or backslashes are not supported: $DIR, $RATEGATE, $RULES" ;;
esac

# Is something listening on 127.0.0.1:$1?
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -n "${PORT:-}" ]; then
	busy "$PORT" && die "port $PORT on 127.0.0.1 is busy: set PORT to a free one"
else
	for p in $(seq 8080 8099); do
		if ! busy "$p"; then PORT=$p; break; fi
	done
	[ -n "${PORT:-}" ] || die "ports 8080-8099 on 127.0.0.1 are all busy: set PORT"
fi

if [ -n "${STORAGE:-}" ]; then
	# A copy of the rules with another store; includes made absolute.
	rdir=$(dirname "$RULES")
	sed -e "s|^storage[[:space:]].*|storage          $STORAGE|" \
	    -e "s|^include[[:space:]]\{1,\}\([^/[:space:]]\)|include          $rdir/\1|" \
	    "$RULES" > "$DIR/site.rules"
	grep -q "^storage[[:space:]]" "$DIR/site.rules" ||
		printf 'storage          %s\n' "$STORAGE" >> "$DIR/site.rules"
	RULES=$DIR/site.rules
fi
"$RATEGATE" -t -c "$RULES" > "$DIR/rules-check.txt" 2>&1 ||
	die "the rules do not load:$(printf '\n'; cat "$DIR/rules-check.txt")"
store=$(sed -n 's/.*; storage \(.*\)$/\1/p' "$DIR/rules-check.txt")

# The site: a static page, two small CGI "applications" that show what
# rategate told them, and an exempt health check.
mkdir -p "$DIR/docroot"
cat > "$DIR/docroot/index.html" <<'EOF'
<!doctype html>
<title>rategate quickstart</title>
<h1>rategate quickstart</h1>
<p>Every request to this lighttpd is first decided by rategate (examples/site.rules).</p>
<ul>
<li><a href="/pay">/pay</a>: 1 per 10 seconds</li>
<li>POST /login: 5 per minute</li>
<li><a href="/ping">/ping</a>: exempt</li>
<li>any other path: 50 per hour and 200 per day, per path and client</li>
</ul>
EOF
for page in login pay; do
	cat > "$DIR/docroot/$page" <<EOF
printf 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n'
echo "$page: \$REQUEST_METHOD accepted; rategate says: client \${RL_CLIENT-?}, limit \${RL_LIMIT-?}, \${RL_REMAINING-?} left"
EOF
done
echo pong > "$DIR/docroot/ping"

cat > "$DIR/lighttpd.conf" <<EOF
# Written by examples/quickstart.sh; see examples/lighttpd-authorizer.conf.
server.document-root = "$DIR/docroot"
server.bind          = "127.0.0.1"
server.port          = $PORT
server.pid-file      = "$DIR/lighttpd.pid"
server.errorlog      = "$DIR/lighttpd-error.log"
server.breakagelog   = "$DIR/rategate.log"
server.modules       = ( "mod_fastcgi", "mod_cgi" )
mimetype.assign      = ( ".html" => "text/html", "" => "text/plain" )
index-file.names     = ( "index.html" )
\$HTTP["url"] =~ "^/(login|pay)\$" { cgi.assign = ( "" => "/bin/sh" ) }

fastcgi.server = (
  "/" => ( "rategate" => (
      "mode"        => "authorizer",
      "bin-path"    => "$RATEGATE -c $RULES",
      "socket"      => "$DIR/rategate.sock",
      # Two processes, one set of counters: the shared-memory store.
      "max-procs"   => 2,
      "check-local" => "disable"
  ) )
)
EOF

# lighttpd forks into the background once it listens and writes its PID.
if ! "$LIGHTTPD" -f "$DIR/lighttpd.conf" > "$DIR/lighttpd.out" 2>&1; then
	cat "$DIR/lighttpd.out" "$DIR/lighttpd-error.log" "$DIR/rategate.log" 2>/dev/null >&2 || true
	die "lighttpd did not start (files in $DIR)"
fi

# Wait until /ping (exempt: it counts nothing) answers 200 through rategate.
status=
for _ in $(seq 1 100); do
	if exec 3<>"/dev/tcp/127.0.0.1/$PORT"; then
		printf 'GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		read -r _ status _ <&3 || true
		exec 3<&- 3>&-
		[ "$status" = 200 ] && break
	fi 2>/dev/null
	sleep 0.1
done
pid=$(cat "$DIR/lighttpd.pid" 2>/dev/null || true)
if [ "$status" != 200 ]; then
	cat "$DIR/lighttpd-error.log" "$DIR/rategate.log" 2>/dev/null >&2 || true
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	die "lighttpd on 127.0.0.1:$PORT did not answer 200 for /ping (got '${status:-nothing}'; files in $DIR)"
fi

url=http://127.0.0.1:$PORT
cat <<EOF
rategate quickstart: lighttpd (PID $pid) on $url/ asks rategate about every request.
  rules:  $RULES
  store:  $store (two rategate processes, one set of counters)
  files:  $DIR (lighttpd.conf, docroot/, lighttpd-error.log, rategate.log)

Get a 429 (POST /login allows 5 per minute; the 6th answer is 429):
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code}\n' -d user=demo $url/login; done
  curl -si -d user=demo $url/login      # the 429 itself: Retry-After, X-RateLimit-*, the message
  curl -s $url/pay; curl -si $url/pay    # 1 per 10 seconds: the second is 429

Look inside the store, and lift a ban:
  $RATEGATE inspect -c $RULES --top 5
  $RATEGATE inspect -c $RULES --reset 127.0.0.1

Stop (lighttpd stops its rategate processes):
  kill $pid
EOF
