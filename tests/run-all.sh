#!/bin/sh
# The whole test suite, as README.md tells a new user to run it:
#  1. gcc build, -Werror, `make check` (unit and integration tests);
#  2. clang build with ASan+UBSan (--enable-sanitizers), `make check`;
#  3. the unit tests under valgrind (gcc build);
#  4. the integration tests with rategate under valgrind (gcc build);
#  5. every libFuzzer target for FUZZ_SECONDS (default 30) each.
# Each build lives in its own directory under build/.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-30}

start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "autogen"
# README's first command builds in the source tree; builds under build/
# need it clean (configure refuses a tree that is already configured).
if [ -f config.status ]; then
	make distclean >/dev/null 2>&1 || rm -f config.status config.h
fi
./autogen.sh >/dev/null 2>&1 || ./autogen.sh

step "gcc build and make check"
mkdir -p build/gcc
(cd build/gcc && "$top/configure" CC=gcc --quiet && make -s -j"$jobs" && make -s -j"$jobs" check) ||
	{ cat build/gcc/test-suite.log 2>/dev/null; exit 1; }

step "clang build with sanitizers and make check"
mkdir -p build/asan
(cd build/asan && "$top/configure" CC=clang --enable-sanitizers --quiet &&
	make -s -j"$jobs" && ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions="$top/tests/lsan.supp" \
	UBSAN_OPTIONS=print_stacktrace=1 make -s -j"$jobs" check) ||
	{ cat build/asan/test-suite.log 2>/dev/null; exit 1; }

step "unit tests under valgrind"
for t in build/gcc/tests/unit/test_*; do
	case "$t" in *.log|*.trs|*.o) continue ;; esac
	[ -x "$t" ] || continue
	# redis-server (started by test_store_redis) is not ours to check.
	top_srcdir="$top" top_builddir="$top/build/gcc" valgrind -q --vgdb=no --trace-children=yes --trace-children-skip='*/redis-server' \
		--error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite "$t" --jobs 1 >/dev/null 2>build/valgrind.out ||
		{ echo "valgrind: $t"; cat build/valgrind.out; exit 1; }
	echo "valgrind clean: $(basename "$t")"
done

step "integration tests with rategate under valgrind"
# Every integration test again (gcc build), each rategate the web servers
# and the tests start being run by valgrind through RATEGATE_WRAPPER
# (tests/integration/servers.c), without valgrind's gdbserver (--vgdb=no):
# a process the tests kill leaves its /tmp/vgdb-pipe-* files behind, and a
# later process of another user (www-data) with the same pid cannot make
# its own, fails, and the web server answers 500.  The scripts rategate executes as CGI
# upstreams, and the servers, run natively.  A web server may run rategate
# as another user: the log directory is writable by all.
vg=$top/build/valgrind-gateway
rm -rf "$vg"
mkdir -p "$vg/logs"
chmod 1777 "$vg/logs"
printf '#!/bin/sh\nexec valgrind -q --vgdb=no --log-file=%s/logs/vg.%%p --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite %s/build/gcc/rategate "$@"\n' \
	"$vg" "$top" >"$vg/rategate"
chmod 755 "$vg/rategate"
for t in build/gcc/tests/integration/test_*; do
	case "$t" in *.log|*.trs|*.o) continue ;; esac
	[ -x "$t" ] || continue
	RATEGATE_WRAPPER="$vg/rategate" top_srcdir="$top" top_builddir="$top/build/gcc" \
		"$t" >"$vg/$(basename "$t").out" 2>&1 ||
		{ echo "under valgrind: $t"; cat "$vg/$(basename "$t").out"; exit 1; }
	echo "passed with rategate under valgrind: $(basename "$t")"
done
bad=0
for f in "$vg"/logs/vg.*; do
	[ -s "$f" ] || continue
	echo "valgrind: $f"
	cat "$f"
	bad=1
done
[ "$bad" = 0 ] || exit 1
echo "valgrind clean: $(ls "$vg/logs" | wc -l) rategate processes"

step "fuzzing, ${fuzz_seconds}s per target"
"$top/tests/fuzz/run.sh" "$fuzz_seconds"

# One closing line for whoever reads the run: every Criterion test of both
# builds (each binary's "Synthesis" line), summed.
cat build/gcc/tests/*/*.log build/asan/tests/*/*.log 2>/dev/null |
	sed -n 's/.*Synthesis: Tested: \([0-9]*\) | Passing: \([0-9]*\) | Failing: \([0-9]*\) | Crashing: \([0-9]*\).*/\2 \3 \4/p' |
	awk '{ p += $1; f += $2 + $3 } END { printf "tests: %d passed, %d failed\n", p, f }'
step "all passed"
