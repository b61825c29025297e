/*
 * bench_store.c - how long one decision takes on the memory store.
 *
 * For each strategy, ns per apply (RL_HIT, one op per apply) with one key
 * and with 1,000,000 distinct keys, and the heap bytes per key.  Keys are
 * built beforehand, so key generation is not measured; the clock is read
 * only around each run.  Time is virtual: now advances 1 ms per op.  With
 * many keys, every key is created in a warm-up pass and the timed passes
 * visit them in a shuffled order, so that the table and entries are
 * reached the way random clients would reach them, not in allocation
 * order.  Each figure is the median (and mean) of several runs.
 *
 * The many-keys run is timed twice: "keys", applies one after the other
 * as fast as they go, where the CPU may start the next apply's hash and
 * table miss while the previous miss is still out; and "chained", where
 * each apply's key depends on the previous answer (through a test that is
 * always false but that neither the compiler nor the CPU can know), so
 * that no two applies overlap.  A gateway does thousands of instructions
 * between two decisions (rl_decide alone is ~1,700), so its applies do
 * not overlap either: "chained" is the figure to read; the gap between the
 * two shows how much a store's figure owes to overlap.
 *
 * Usage: bench_store [keys] (default 1000000).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules.h"

#define RUNS 7
#define ONE_KEY_OPS 1000000
#define KEY_STRIDE 64           /* bytes per pre-built key */
#define LIMIT_COUNT 10          /* "10/minute" */
#define LIMIT_PERIOD_MS 60000

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static uint64_t rng = 88172645463325252ULL;

static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct result {
	double median, mean;
	double allowed;         /* fraction of hits allowed */
};

/* One timed pass of n applies over keys[i * KEY_STRIDE] (or one key when
 * nkeys is 1), each key depending on the previous verdict when chained;
 * returns ns per apply. */
static double pass(struct rl_store *st, const char *keys,
		   const uint16_t *lens, size_t nkeys, size_t n,
		   struct rl_step p, int64_t *now, uint64_t *allowed,
		   int chained)
{
	struct rl_store_op op;
	struct rl_diag err;
	double t0, t1;
	uint64_t ok = 0;

	memset(&op, 0, sizeof(op));
	op.step = p;
	op.v.reset_ms = 0;
	t0 = now_ns();
	for (size_t i = 0; i < n; i++) {
		size_t k = nkeys == 1 ? 0 : i;
		/* reset_ms is never negative: k stays i, but only once the
		 * previous apply has answered */
		if (chained)
			k += op.v.reset_ms < 0;
		op.key = keys + k * KEY_STRIDE;
		op.key_len = lens[k];
		if (st->ops->apply(st->impl, &op, 1, RL_HIT, (*now)++, &err)) {
			fprintf(stderr, "apply: %s\n", err.msg);
			exit(1);
		}
		ok += op.v.allowed;
	}
	t1 = now_ns();
	*allowed += ok;
	return (t1 - t0) / (double)n;
}

static struct result measure(struct rl_store *st, const char *keys,
			     const uint16_t *lens, size_t nkeys, size_t n,
			     struct rl_step p, int64_t *now, int chained)
{
	double ns[RUNS], sum = 0;
	uint64_t allowed = 0;
	struct result r;

	for (int i = 0; i < RUNS; i++) {
		ns[i] = pass(st, keys, lens, nkeys, n, p, now, &allowed,
			     chained);
		sum += ns[i];
	}
	qsort(ns, RUNS, sizeof(ns[0]), cmp_double);
	r.median = ns[RUNS / 2];
	r.mean = sum / RUNS;
	r.allowed = (double)allowed / ((double)n * RUNS);
	return r;
}

/* Keys like the engine's: strategy, scope, client, limit. */
static void build_keys(char *buf, uint16_t *lens, size_t n,
		       enum rl_strategy s)
{
	for (size_t i = 0; i < n; i++) {
		int len = snprintf(buf + i * KEY_STRIDE, KEY_STRIDE,
				   "%s:/api/**:10.%u.%u.%u:10/minute",
				   rl_strategy_name(s),
				   (unsigned)(i >> 16 & 255),
				   (unsigned)(i >> 8 & 255),
				   (unsigned)(i & 255));
		lens[i] = (uint16_t)(len < KEY_STRIDE ? len : KEY_STRIDE - 1);
	}
}

static void shuffle(char *buf, uint16_t *lens, size_t n)
{
	char tmp[KEY_STRIDE];

	for (size_t i = n - 1; i > 0; i--) {
		size_t j = xorshift() % (i + 1);
		uint16_t l = lens[i];
		memcpy(tmp, buf + i * KEY_STRIDE, KEY_STRIDE);
		memcpy(buf + i * KEY_STRIDE, buf + j * KEY_STRIDE, KEY_STRIDE);
		memcpy(buf + j * KEY_STRIDE, tmp, KEY_STRIDE);
		lens[i] = lens[j];
		lens[j] = l;
	}
}

int main(int argc, char **argv)
{
	size_t nkeys = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	char *keys = malloc(nkeys * KEY_STRIDE);
	uint16_t *lens = malloc(nkeys * sizeof(*lens));

	if (!keys || !lens || nkeys < 2) {
		fprintf(stderr, "bench_store: bad key count or out of memory\n");
		return 1;
	}
	printf("memstore, RL_HIT, 1 op per apply, limit %d per %d ms, "
	       "%d runs (median / mean ns per apply)\n",
	       LIMIT_COUNT, LIMIT_PERIOD_MS, RUNS);
	printf("%-28s %19s %7s %21s %7s %21s %9s\n", "strategy", "1 key",
	       "allow", "keys", "allow", "chained", "bytes/key");
	for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
		struct rl_step p = { (enum rl_strategy)s, LIMIT_COUNT,
				     LIMIT_PERIOD_MS, 0, 1 };
		int64_t now = 1700000000000;
		struct rl_store st;
		struct result one, many, chain;
		uint64_t warm = 0;
		size_t bytes;

		build_keys(keys, lens, nkeys, (enum rl_strategy)s);
		if (memstore_new(nkeys, &st) < 0)
			return 1;
		one = measure(&st, keys, lens, 1, ONE_KEY_OPS, p, &now, 0);
		st.ops->destroy(st.impl);

		if (memstore_new(nkeys, &st) < 0)
			return 1;
		pass(&st, keys, lens, nkeys, nkeys, p, &now, &warm, 0);
		bytes = memstore_bytes(&st);
		shuffle(keys, lens, nkeys);
		many = measure(&st, keys, lens, nkeys, nkeys, p, &now, 0);
		chain = measure(&st, keys, lens, nkeys, nkeys, p, &now, 1);
		printf("%-28s %9.1f / %7.1f %6.1f%% %9.1f / %9.1f %6.1f%% %9.1f / %9.1f %9.1f\n",
		       rl_strategy_name((enum rl_strategy)s), one.median,
		       one.mean, 100 * one.allowed, many.median, many.mean,
		       100 * many.allowed, chain.median, chain.mean,
		       (double)bytes / (double)memstore_count(&st));
		st.ops->destroy(st.impl);
	}
	printf("keys: %zu distinct, visited in shuffled order; chained: each key waits for the previous answer\n",
	       nkeys);
	free(keys);
	free(lens);
	return 0;
}
