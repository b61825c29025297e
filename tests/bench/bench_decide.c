/*
 * bench_decide.c - ns per decision through the whole engine (path
 * normalisation, rule lookup, client address, key building, store) on the
 * process-local store, for each strategy, with 1 key, with 1,000 keys (as
 * many distinct addresses as the 1M run varies, but a table that stays in
 * the caches: the cost of the computation alone) and with 1,000,000 keys
 * (distinct client addresses), and the store's bytes per key.  The 1M
 * figure less the 1,000 one is what the table's memory costs, to be read
 * against the memory floor printed last.
 *
 * Prints figures; asserts nothing.  Usage: bench_decide [KEYS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules.h"

#define BATCH 10000
#define CACHED_KEYS 1000     /* a table that fits the caches */

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Runs passes * nkeys decisions, the clock advancing step_ms per decision;
 * prints median and mean ns per decision. */
static void
run(const char *strategy, size_t nkeys, int passes, char (*addrs)[16],
    int64_t step_ms)
{
	char text[256];
	struct rl_report rep;
	struct rl_store st;

	snprintf(text, sizeof(text), "strategy %s\n/api/** 10/minute\n", strategy);
	struct rl_ruleset *rs = rl_ruleset_parse("bench", text, strlen(text), NULL, &rep);
	if (rs == NULL) {
		fprintf(stderr, "%s\n", rep.nerrors ? rep.errors[0] : "?");
		exit(1);
	}
	rl_report_free(&rep);
	if (memstore_new(nkeys * 2 + 16, &st) != 0)
		exit(1);

	size_t total = nkeys * (size_t)passes;
	if (total < 20 * BATCH)
		total = 20 * BATCH;
	size_t nb = total / BATCH;
	double *per = malloc(nb * sizeof(*per));
	int64_t t = 1700000000000LL;
	size_t k = 0, denied = 0;
	struct rl_decision d;

	/* A first pass puts every key into the table (growing it as it
	 * goes); the figures are for a table that holds nkeys keys, and the
	 * fill's own mean is printed apart. */
	double fill_start = now_ns();
	for (size_t i = 0; i < nkeys; i++) {
		struct rl_request req = {
			.method = "GET", .path = "/api/items/42", .path_len = 13,
			.remote_addr = addrs[i], .remote_addr_len = strlen(addrs[i]),
		};
		rl_decide(rs, &st, &req, t, RL_HIT, &d);
		t += step_ms;
	}
	double fill_ns = (now_ns() - fill_start) / (double)nkeys;
	double start = now_ns();

	for (size_t b = 0; b < nb; b++) {
		double t0 = now_ns();
		for (size_t i = 0; i < BATCH; i++) {
			struct rl_request req = {
				.method = "GET", .path = "/api/items/42", .path_len = 13,
				.remote_addr = addrs[k], .remote_addr_len = strlen(addrs[k]),
			};
			denied += rl_decide(rs, &st, &req, t, RL_HIT, &d) == RL_DENY;
			if (++k == nkeys)
				k = 0;
			t += step_ms;
		}
		per[b] = (now_ns() - t0) / BATCH;
	}
	double mean = (now_ns() - start) / (double)(nb * BATCH);
	qsort(per, nb, sizeof(*per), cmp_double);
	printf("%-28s %9zu keys  median %7.1f ns  mean %7.1f ns  p90 %7.1f ns  %5.1f%% denied  %6.1f bytes/key  (fill %.1f ns)\n",
	       strategy, nkeys, per[nb / 2], mean, per[nb * 9 / 10],
	       100.0 * (double)denied / (double)(nb * BATCH),
	       (double)memstore_bytes(&st) / (double)memstore_count(&st),
	       fill_ns);
	free(per);
	st.ops->destroy(st.impl);
	rl_ruleset_free(rs);
}

/* The machine's floor: ns per dependent random read over a table as large
 * as the 1M-key store (a pointer chase), measured in the same run so the
 * figures above can be read against it. */
static void
memory_floor(size_t bytes)
{
	size_t n = bytes / sizeof(size_t);
	size_t *next = malloc(n * sizeof(*next));
	size_t *perm = malloc(n * sizeof(*perm));
	uint64_t x = 88172645463325252ULL;

	if (next == NULL || perm == NULL)
		exit(1);
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		size_t j = (size_t)(x % (i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (size_t i = 0; i < n; i++)
		next[perm[i]] = perm[(i + 1) % n];
	size_t p = perm[0], steps = 2000000;
	double t0 = now_ns();
	for (size_t i = 0; i < steps; i++)
		p = next[p];
	double ns = (now_ns() - t0) / (double)steps;
	printf("memory floor: %.1f ns per dependent random read over %zu MB (pointer chase; end %zu)\n",
	       ns, bytes >> 20, p % 2);
	free(next);
	free(perm);
}

int
main(int argc, char **argv)
{
	size_t many = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	static const char *const strategies[] = {
		"fixed-window", "fixed-window-elastic-expiry", "moving-window",
		"sliding-window-counter", "gcra",
	};
	char (*addrs)[16];

	if (many < 1) {
		fprintf(stderr, "usage: bench_decide [KEYS >= 1]\n");
		return 2;
	}
	addrs = malloc(many * sizeof(*addrs));
	if (addrs == NULL)
		return 1;

	for (size_t i = 0; i < many; i++)
		snprintf(addrs[i], sizeof(addrs[i]), "10.%u.%u.%u",
			 (unsigned)(i >> 16) & 255, (unsigned)(i >> 8) & 255,
			 (unsigned)i & 255);
	/* the cached run's addresses spread over the whole set, so that they
	 * vary in length and digits as the 1M run's do */
	static char sample[CACHED_KEYS][16];
	for (size_t i = 0; i < CACHED_KEYS; i++)
		memcpy(sample[i], addrs[i * (many / CACHED_KEYS)], 16);
	printf("rategate bench_decide: rl_decide() on the process-local store, rule \"/api/** 10/minute\"\n");
	for (size_t s = 0; s < sizeof(strategies) / sizeof(strategies[0]); s++) {
		run(strategies[s], 1, 1, addrs, 1);
		/* 200 ms a decision: each key comes back after 200 s, past its
		 * window, and is allowed, as every key of the 1M run is */
		if (many > CACHED_KEYS)
			run(strategies[s], CACHED_KEYS, 1, sample, 200);
		run(strategies[s], many, 3, addrs, 1);
	}
	free(addrs);
	memory_floor((size_t)256 << 20);
	return 0;
}
