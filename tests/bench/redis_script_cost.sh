#!/bin/bash
# redis_script_cost.sh - what one decision costs Redis, in instructions
# executed by redis-server (callgrind), for rategate's script and for the
# scripts of `limits` (the library under Flask-Limiter), in one run.
#
# Redis runs scripts one at a time on one thread, so the instructions a
# decision costs it bound how many decisions per second one Redis serves to
# all gateway hosts together.  Timing that on a shared VM varies by +-30%
# from run to run; an instruction count does not (a few tenths of a
# percent), so this is the figure to compare changes to the script with.
#
# A redis-server runs under valgrind --tool=callgrind on a unix socket in a
# temporary directory (no port) and is stopped by PID.  Each case is run
# once to warm up (so the keys hold state: the steady state of an active
# client, its window open), then N calls (default 4000, 1000 keys) are
# counted with callgrind_control -z / -d.  Printed per call: all of
# redis-server's user-space instructions (reading the command, running the
# script, writing the reply), and the same less an empty script's
# ("return 1"), which is the script's own cost.  Prints figures; asserts
# nothing.
#
# Usage: tests/bench/redis_script_cost.sh [N]
# Needs valgrind, redis-server, redis-benchmark and redis-cli (redis-tools);
# `limits`' scripts are read from python3-limits when it is installed.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-4000}
limits_lua=/usr/lib/python3/dist-packages/limits/resources/redis/lua_scripts
dir=$(mktemp -d /tmp/rg-script-cost-XXXXXX)
sock=$dir/redis.sock
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

valgrind -q --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
	redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no \
	--dir "$dir" --logfile "$dir/redis.log" >"$dir/valgrind.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
	redis-cli -s "$sock" PING >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -s "$sock" PING >/dev/null

load() { redis-cli -s "$sock" SCRIPT LOAD "$(cat "$1")"; }

# instructions per call of one redis-benchmark command line
cost() {
	redis-benchmark -s "$sock" -c 1 -P 8 -n "$n" -r 1000 "$@" >/dev/null
	callgrind_control -z "$pid" >/dev/null 2>&1
	redis-benchmark -s "$sock" -c 1 -P 8 -n "$n" -r 1000 "$@" >/dev/null
	rm -f "$dir"/cg.*.*
	callgrind_control -d "$pid" >/dev/null 2>&1
	local f
	f=$(ls "$dir"/cg.*.* | head -n 1)
	echo $(( $(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f") / n ))
	rm -f "$f"
}

empty_lua=$dir/empty.lua
echo 'return 1' >"$empty_lua"
empty=$(load "$empty_lua")
rg=$(load "$top/gateway/store_redis.lua")
base=$(cost EVALSHA "$empty" 0)

row() {
	local label=$1
	shift
	local c
	c=$(cost "$@")
	printf '%-52s %8d %8d\n' "$label" "$c" $((c - base))
}

echo "redis_script_cost: redis-server instructions per call (callgrind), $n calls over 1000 keys, steady state"
printf '%-52s %8s %8s\n' "call" "total" "script"
printf '%-52s %8d %8d\n' 'empty script (return 1)' "$base" 0
# apply MODE NOW {STRATEGY COUNT PERIOD BURST COST PROBE}...: NOW -1 = Redis TIME
op() { echo "$1" "$2" "$3" 0 1 0; }
k=rg:bench:__rand_int__
row 'rategate fixed-window, 1 limit' EVALSHA "$rg" 1 "$k:a" apply 1 -1 $(op 0 1000000 60000)
row 'rategate fixed-window, 3 limits' EVALSHA "$rg" 3 "$k:a" "$k:b" "$k:c" apply 1 -1 \
	$(op 0 1000000 60000) $(op 0 10000000 3600000) $(op 0 100000000 86400000)
row 'rategate fixed-window-elastic-expiry, 1 limit' EVALSHA "$rg" 1 "$k:e" apply 1 -1 $(op 1 1000000 60000)
row 'rategate sliding-window-counter, 1 limit' EVALSHA "$rg" 1 "$k:s" apply 1 -1 $(op 3 1000000 60000)
row 'rategate gcra, 1 limit' EVALSHA "$rg" 1 "$k:g" apply 1 -1 $(op 4 1000000 60000)
row 'rategate moving-window 1000/minute, 1 limit' EVALSHA "$rg" 1 "$k:m" apply 1 -1 $(op 2 1000 60000)
row 'rategate gcra, 2 limits' EVALSHA "$rg" 2 "$k:g2" "$k:g3" apply 1 -1 \
	$(op 4 1000000 60000) $(op 4 10000000 3600000)
row 'rategate moving-window, 2 limits' EVALSHA "$rg" 2 "$k:m2" "$k:m3" apply 1 -1 \
	$(op 2 1000 60000) $(op 2 5000 3600000)
row 'rategate moving-window 10000/minute (general path)' EVALSHA "$rg" 1 "$k:m4" apply 1 -1 \
	$(op 2 10000 60000)
if [ -d "$limits_lua" ]; then
	incr=$(load "$limits_lua/incr_expire.lua")
	amw=$(load "$limits_lua/acquire_moving_window.lua")
	row 'limits fixed window (incr_expire), 1 limit' EVALSHA "$incr" 1 "lim:__rand_int__" 60 1
	row 'limits moving window (acquire), 1000/minute' EVALSHA "$amw" 1 "lmw:__rand_int__" \
		1795000000 1000 60 1
else
	echo "(python3-limits is not installed: no figures for limits' scripts)"
fi
