#!/bin/sh
# The whole test suite, as README.md tells a new user to run it:
#  1. gcc build, -Werror, `make check` (unit and integration tests);
#  2. clang build with ASan+UBSan (--enable-sanitizers), `make check`;
#  3. the unit tests under valgrind (gcc build);
#  4. every libFuzzer target for FUZZ_SECONDS (default 30) each.
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
	top_srcdir="$top" top_builddir="$top/build/gcc" valgrind -q --trace-children=yes --trace-children-skip='*/redis-server' \
		--error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite "$t" --jobs 1 >/dev/null 2>build/valgrind.out ||
		{ echo "valgrind: $t"; cat build/valgrind.out; exit 1; }
	echo "valgrind clean: $(basename "$t")"
done

step "fuzzing, ${fuzz_seconds}s per target"
"$top/tests/fuzz/run.sh" "$fuzz_seconds"

# One closing line for whoever reads the run: every Criterion test of both
# builds (each binary's "Synthesis" line), summed.
cat build/gcc/tests/*/*.log build/asan/tests/*/*.log 2>/dev/null |
	sed -n 's/.*Synthesis: Tested: \([0-9]*\) | Passing: \([0-9]*\) | Failing: \([0-9]*\) | Crashing: \([0-9]*\).*/\2 \3 \4/p' |
	awk '{ p += $1; f += $2 + $3 } END { printf "tests: %d passed, %d failed\n", p, f }'
step "all passed"
