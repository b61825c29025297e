#!/bin/sh
# Build every libFuzzer target with clang (ASan+UBSan) and run each for a
# bounded time on a copy of its seed corpus (tests/fuzz/corpus/NAME).
# Targets: the rules library's parsers (limits, path, xff, rules), the
# whole decision (decide), and the gateway's parsers of what comes from
# outside (head: an application's response head; upstream: a FastCGI
# application's record stream, through a real socket; replay: trace and
# access log lines, and whole logs through replay_run).
# Usage: tests/fuzz/run.sh [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-30}
out=${FUZZ_OUT:-$top/build/fuzz}
mkdir -p "$out"
lib="rules/arena.c rules/diag.c rules/util.c rules/limit.c rules/match.c rules/clientaddr.c rules/strategy.c rules/memstore.c rules/parse.c rules/keys.c rules/decide.c"
# The gateway sources include config.h for autoconf's macros; these use
# none of them, so an empty one stands in (no configure needed here).
: >"$out/config.h"
for target in limits path xff rules decide head upstream replay; do
	src="$top/tests/fuzz/fuzz_$target.c"
	[ -f "$src" ] || { echo "missing $src"; exit 1; }
	case $target in
	head) extra="gateway/proxy.c gateway/respond.c gateway/log.c gateway/clock.c" ;;
	upstream) extra="gateway/upstream.c gateway/proxy.c gateway/respond.c gateway/log.c gateway/clock.c -pthread" ;;
	replay) extra="gateway/replay.c gateway/target.c gateway/store_memory.c" ;;
	*) extra="" ;;
	esac
	bin="$out/fuzz_$target"
	(cd "$top" && clang -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I"$out" -Irules -Igateway $lib $extra "$src" -o "$bin")
	corpus="$out/corpus_$target"
	rm -rf "$corpus"
	mkdir -p "$corpus"
	cp "$top/tests/fuzz/corpus/$target/"* "$corpus/"
	echo "fuzz_$target: ${secs}s"
	"$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 "$corpus" >"$out/fuzz_$target.log" 2>&1 ||
		{ tail -n 60 "$out/fuzz_$target.log"; echo "fuzz_$target FAILED"; exit 1; }
	grep -E '^stat::number_of_executed_units' "$out/fuzz_$target.log" || true
done
