/*
 * bench_shm.c - ns per decision on the shared-memory store, beside the
 * process-local store measured in the same run.
 *
 * For each strategy, two paths: a raw apply (one op per apply, keys built
 * beforehand) and rl_decide through a rule set (10/minute on the /api tree, the
 * client address as key, as bench_decide.c), each with one key (every
 * decision on the same counter: contention) and with KEYS distinct keys
 * (default 1,000,000) visited in a shuffled order after a warm-up pass
 * that creates them (their text copied into visiting order first, since a
 * request's key is in the cache when it is decided: the figure pays for
 * the store's memory, not for the bench's key array).  The many-keys run is
 * timed twice: "many", decisions one after the other as fast as they go,
 * where the CPU may start the next one's hash and miss while the previous
 * miss is out; and "chained", where each key depends on the previous
 * answer (through a test that is always false but that neither the
 * compiler nor the CPU can know), so that no two decisions overlap, as in
 * a gateway (see bench_store.c).  The shared-memory store runs with 1 process and with
 * 2 processes (fork): on one key both hit the same counter; on KEYS keys
 * each process takes its own half.  For 2 processes the figure is the
 * wall time of a run divided by the decisions of both, i.e. the inverse of
 * the combined throughput.  Each figure is the median of RUNS runs; the
 * clock is virtual (+1 ms per decision).  bytes/key is the store's memory
 * divided by the keys it holds after the KEYS run (the shared file, of
 * which 64 bytes per key are the counter entry and 128 its name).
 *
 * The store files live in a fresh directory under /dev/shm (tmpfs), or
 * under $BENCH_SHM_DIR, and are removed at the end.  Prints figures;
 * asserts nothing.  Usage: bench_shm [KEYS]; BENCH_STRATEGY=NAME and
 * BENCH_PATH=apply|decide run one strategy or one path only.
 */

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rules.h"
#include "store_shm.h"

#define RUNS 5
#define ONE_KEY_OPS 300000
#define KEY_STRIDE 64
#define ADDR_STRIDE 16
#define LIMIT_COUNT 10
#define LIMIT_PERIOD_MS 60000

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
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

/* What one process runs: n decisions visiting order[] cyclically. */
struct job {
	int decide;             /* rl_decide, else raw apply */
	struct rl_store *st;
	const struct rl_ruleset *rs;
	struct rl_step p;
	const char *keys;       /* apply: KEY_STRIDE bytes each */
	const uint16_t *lens;
	const char *addrs;      /* decide: ADDR_STRIDE bytes each */
	const uint32_t *order;
	size_t norder, n;
	int64_t now;
	uint64_t allowed, errors;
	int chained;            /* each key waits for the previous answer */
};

static void pass(struct job *j)
{
	struct rl_store_op op;
	struct rl_diag err;
	struct rl_decision d;

	memset(&op, 0, sizeof(op));
	op.step = j->p;
	d.reset_ms = 0;
	for (size_t i = 0, k = 0; i < j->n; i++) {
		uint32_t x = j->order[k];
		if (++k == j->norder)
			k = 0;
		/* reset_ms is never negative: x stays, but only once the
		 * previous answer is in */
		if (j->chained)
			x += (j->decide ? d.reset_ms : op.v.reset_ms) < 0;
		if (j->decide) {
			const char *a = j->addrs + (size_t)x * ADDR_STRIDE;
			struct rl_request req = {
				.method = "GET", .path = "/api/items/42",
				.path_len = 13, .remote_addr = a,
				.remote_addr_len = strlen(a),
			};
			enum rl_outcome o = rl_decide(j->rs, j->st, &req,
						      j->now++, RL_HIT, &d);
			j->allowed += o == RL_ALLOW;
			j->errors += o == RL_STORE_ERROR;
		} else {
			op.key = j->keys + (size_t)x * KEY_STRIDE;
			op.key_len = j->lens[x];
			if (j->st->ops->apply(j->st->impl, &op, 1, RL_HIT,
					      j->now++, &err))
				j->errors++;
			else
				j->allowed += op.v.allowed;
		}
	}
}

/* Shared between the two processes of a 2-process measurement. */
struct shared {
	unsigned arrived;       /* barrier */
	unsigned generation;
	double elapsed[2][RUNS];
	uint64_t ops[2], allowed[2], errors[2];
};

static void barrier(struct shared *sh)
{
	unsigned gen = __atomic_load_n(&sh->generation, __ATOMIC_ACQUIRE);

	if (__atomic_add_fetch(&sh->arrived, 1, __ATOMIC_ACQ_REL) == 2) {
		__atomic_store_n(&sh->arrived, 0, __ATOMIC_RELAXED);
		__atomic_add_fetch(&sh->generation, 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&sh->generation, __ATOMIC_ACQUIRE) == gen)
		sched_yield();
}

struct figure {
	double ns;              /* median ns per decision */
	double allowed;         /* fraction */
	uint64_t errors;
};

/* RUNS timed passes by nprocs processes (jobs[i] for process i). */
static struct figure measure(struct job *jobs, int nprocs)
{
	struct figure f = { 0, 0, 0 };
	double per[RUNS];
	uint64_t ops = 0, allowed = 0;

	if (nprocs == 1) {
		for (int r = 0; r < RUNS; r++) {
			double t0 = now_ns();
			pass(&jobs[0]);
			per[r] = (now_ns() - t0) / (double)jobs[0].n;
		}
		ops = jobs[0].n * RUNS;
		allowed = jobs[0].allowed;
		f.errors = jobs[0].errors;
	} else {
		struct shared *sh = mmap(NULL, sizeof(*sh),
					 PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		pid_t pid;

		if (sh == MAP_FAILED)
			exit(1);
		memset(sh, 0, sizeof(*sh));
		pid = fork();
		if (pid < 0)
			exit(1);
		int me = pid == 0;
		for (int r = 0; r < RUNS; r++) {
			barrier(sh);
			double t0 = now_ns();
			pass(&jobs[me]);
			sh->elapsed[me][r] = now_ns() - t0;
		}
		sh->ops[me] = jobs[me].n * RUNS;
		sh->allowed[me] = jobs[me].allowed;
		sh->errors[me] = jobs[me].errors;
		if (me)
			_exit(0);
		waitpid(pid, NULL, 0);
		for (int r = 0; r < RUNS; r++) {
			double wall = sh->elapsed[0][r] > sh->elapsed[1][r] ?
				      sh->elapsed[0][r] : sh->elapsed[1][r];
			per[r] = wall / (double)(jobs[0].n + jobs[1].n);
		}
		ops = sh->ops[0] + sh->ops[1];
		allowed = sh->allowed[0] + sh->allowed[1];
		f.errors = sh->errors[0] + sh->errors[1];
		munmap(sh, sizeof(*sh));
	}
	qsort(per, RUNS, sizeof(per[0]), cmp_double);
	f.ns = per[RUNS / 2];
	f.allowed = (double)allowed / (double)ops;
	return f;
}

static void shuffle(uint32_t *a, size_t n)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = xorshift() % (i + 1);
		uint32_t t = a[i];
		a[i] = a[j];
		a[j] = t;
	}
}

/* The keys (and addresses) of order[0..n) copied, in that order, into the
 * visit arrays, which j then walks front to back: a request's key text is
 * in the cache when its decision is made, so the figure should pay for
 * the table's memory, not for fetching the bench's own key array at
 * random.  The table positions stay random: keys are placed by hash. */
static char *vkeys, *vaddrs;
static uint16_t *vlens;
static uint32_t *ident;

static void visit_in(struct job *j, const char *keys, const uint16_t *lens,
		     const char *addrs, const uint32_t *order, size_t lo,
		     size_t hi)
{
	for (size_t i = lo; i < hi; i++) {
		memcpy(vkeys + i * KEY_STRIDE, keys + (size_t)order[i] * KEY_STRIDE,
		       KEY_STRIDE);
		vlens[i] = lens[order[i]];
		memcpy(vaddrs + i * ADDR_STRIDE,
		       addrs + (size_t)order[i] * ADDR_STRIDE, ADDR_STRIDE);
	}
	j->keys = vkeys + lo * KEY_STRIDE;
	j->lens = vlens + lo;
	j->addrs = vaddrs + lo * ADDR_STRIDE;
	j->order = ident;
	j->norder = j->n = hi - lo;
}

static char dir[256];
static int file_n;

/* A fresh shared store sized for nkeys keys of strategy s. */
static void shm_fresh(struct rl_store *st, size_t nkeys, enum rl_strategy s,
		      char *path, size_t cap)
{
	/* 192 bytes per slot (entry and name) at 85% load, plus the pools */
	uint64_t mb = ((uint64_t)nkeys * 192 / 85 * 100 >> 20) + 8;
	struct shm_config c = { .path = path, .max_moving = LIMIT_COUNT,
				.names = 1 };
	char err[512];

	if (s == RL_MOVING_WINDOW) {
		/* a 96-byte ring per key too */
		mb = mb * 2 + ((uint64_t)nkeys * 128 >> 20);
		c.ring_percent = 40;
	} else {
		mb = mb * 100 / 86;
	}
	c.size = (mb + 1) << 20;
	snprintf(path, cap, "%s/store%d", dir, file_n++);
	if (shm_store_open(&c, st, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_shm: %s\n", err);
		exit(1);
	}
}

static void print_row(const char *strategy, const char *path,
		      const char *store, int procs, struct figure one,
		      struct figure many, struct figure chain, double bytes,
		      uint64_t evicted)
{
	printf("%-28s %-6s %-6s %5d %9.1f %6.1f%% %9.1f %6.1f%% %9.1f %9.1f %8llu%s\n",
	       strategy, path, store, procs, one.ns, 100 * one.allowed,
	       many.ns, 100 * many.allowed, chain.ns, bytes,
	       (unsigned long long)evicted,
	       one.errors || many.errors || chain.errors ?
	       "  (store errors!)" : "");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	size_t nkeys = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	const char *base = getenv("BENCH_SHM_DIR");
	const char *only_strategy = getenv("BENCH_STRATEGY");
	const char *only_path = getenv("BENCH_PATH");
	char *keys, *addrs, path[512];
	uint16_t *lens;
	uint32_t *order, one_order = 0;

	if (nkeys < 4 || nkeys > UINT32_MAX) {
		fprintf(stderr, "bench_shm: bad key count\n");
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/rategate-bench-XXXXXX",
		 base ? base : "/dev/shm");
	if (!mkdtemp(dir)) {
		perror("bench_shm: mkdtemp");
		return 1;
	}
	keys = malloc(nkeys * KEY_STRIDE);
	lens = malloc(nkeys * sizeof(*lens));
	addrs = malloc(nkeys * ADDR_STRIDE);
	order = malloc(nkeys * sizeof(*order));
	vkeys = malloc(nkeys * KEY_STRIDE);
	vlens = malloc(nkeys * sizeof(*vlens));
	vaddrs = malloc(nkeys * ADDR_STRIDE);
	ident = malloc(nkeys * sizeof(*ident));
	if (!keys || !lens || !addrs || !order || !vkeys || !vlens || !vaddrs ||
	    !ident)
		return 1;
	for (size_t i = 0; i < nkeys; i++)
		ident[i] = (uint32_t)i;
	for (size_t i = 0; i < nkeys; i++)
		snprintf(addrs + i * ADDR_STRIDE, ADDR_STRIDE, "10.%u.%u.%u",
			 (unsigned)(i >> 16) & 255, (unsigned)(i >> 8) & 255,
			 (unsigned)i & 255);
	printf("rategate bench_shm: ns per decision (median of %d runs), limit %d per %d ms, +1 ms per decision;\n"
	       "\"apply\" = one op per store apply, \"decide\" = rl_decide(); %zu keys visited in shuffled order\n"
	       "(their text laid out in visiting order, as a request's key is in the cache);\n"
	       "2 procs: wall time / decisions of both (1 key: same counter; many keys: a half each); store files in %s\n",
	       RUNS, LIMIT_COUNT, LIMIT_PERIOD_MS, nkeys, dir);
	printf("%-28s %-6s %-6s %5s %9s %7s %9s %7s %9s %9s %8s\n", "strategy",
	       "path", "store", "procs", "1 key", "allow", "many", "allow",
	       "chained", "bytes/key", "evicted");
	for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
		const char *name = rl_strategy_name((enum rl_strategy)s);
		struct rl_step p = { (enum rl_strategy)s, LIMIT_COUNT,
				     LIMIT_PERIOD_MS, 0, 1 };
		if (only_strategy != NULL && strcmp(only_strategy, name) != 0)
			continue;
		char text[256];
		struct rl_report rep;
		struct rl_ruleset *rs;

		for (size_t i = 0; i < nkeys; i++) {
			int len = snprintf(keys + i * KEY_STRIDE, KEY_STRIDE,
					   "%s:/api/**:10.%u.%u.%u:10/minute",
					   name, (unsigned)(i >> 16 & 255),
					   (unsigned)(i >> 8 & 255),
					   (unsigned)(i & 255));
			lens[i] = (uint16_t)(len < KEY_STRIDE ? len :
					     KEY_STRIDE - 1);
		}
		snprintf(text, sizeof(text), "strategy %s\n/api/** 10/minute\n",
			 name);
		rs = rl_ruleset_parse("bench", text, strlen(text), NULL, &rep);
		rl_report_free(&rep);
		if (!rs)
			return 1;
		for (int decide = 0; decide < 2; decide++) {
			if (only_path != NULL &&
			    strcmp(only_path, decide ? "decide" : "apply") != 0)
				continue;
			const char *pname = decide ? "decide" : "apply";
			struct job base_job = { decide, NULL, rs, p, keys, lens,
						addrs, NULL, 0, 0,
						1700000000000LL, 0, 0, 0 };
			struct job jobs[2];
			struct figure one, many, chain;
			struct rl_store st;
			struct shm_stats ss;

			/* the process-local store */
			for (size_t i = 0; i < nkeys; i++)
				order[i] = (uint32_t)i;
			if (memstore_new(16, &st) < 0)
				return 1;
			jobs[0] = base_job;
			jobs[0].st = &st;
			jobs[0].order = &one_order;
			jobs[0].norder = 1;
			jobs[0].n = ONE_KEY_OPS;
			one = measure(jobs, 1);
			st.ops->destroy(st.impl);
			if (memstore_new(nkeys + 16, &st) < 0)
				return 1;
			jobs[0] = base_job;
			jobs[0].st = &st;
			jobs[0].order = order;
			jobs[0].norder = jobs[0].n = nkeys;
			pass(&jobs[0]);
			shuffle(order, nkeys);
			visit_in(&jobs[0], keys, lens, addrs, order, 0, nkeys);
			jobs[0].allowed = 0;
			many = measure(jobs, 1);
			jobs[0].allowed = jobs[0].errors = 0;
			jobs[0].chained = 1;
			chain = measure(jobs, 1);
			print_row(name, pname, "memory", 1, one, many, chain,
				  (double)memstore_bytes(&st) /
				  (double)memstore_count(&st), 0);
			st.ops->destroy(st.impl);

			/* shared memory, 1 and 2 processes */
			for (int procs = 1; procs <= 2; procs++) {
				shm_fresh(&st, nkeys, (enum rl_strategy)s, path,
					  sizeof(path));
				for (int k = 0; k < 2; k++) {
					jobs[k] = base_job;
					jobs[k].st = &st;
					jobs[k].order = &one_order;
					jobs[k].norder = 1;
					jobs[k].n = ONE_KEY_OPS;
				}
				one = measure(jobs, procs);
				st.ops->destroy(st.impl);
				unlink(path);

				shm_fresh(&st, nkeys, (enum rl_strategy)s, path,
					  sizeof(path));
				for (size_t i = 0; i < nkeys; i++)
					order[i] = (uint32_t)i;
				jobs[0] = base_job;
				jobs[0].st = &st;
				jobs[0].order = order;
				jobs[0].norder = jobs[0].n = nkeys;
				pass(&jobs[0]);         /* creates the keys */
				for (int k = 0; k < procs; k++) {
					size_t lo = nkeys * (size_t)k / (size_t)procs;
					size_t hi = nkeys * (size_t)(k + 1) / (size_t)procs;
					shuffle(order + lo, hi - lo);
					jobs[k] = base_job;
					jobs[k].st = &st;
					visit_in(&jobs[k], keys, lens, addrs, order,
						 lo, hi);
				}
				many = measure(jobs, procs);
				for (int k = 0; k < procs; k++) {
					jobs[k].allowed = jobs[k].errors = 0;
					jobs[k].chained = 1;
				}
				chain = measure(jobs, procs);
				shm_stats(shm_of(&st), &ss);
				print_row(name, pname, "shm", procs, one, many, chain,
					  (double)ss.file_bytes / (double)ss.keys,
					  ss.evict_lru + ss.evict_limiting);
				st.ops->destroy(st.impl);
				unlink(path);
			}
		}
		rl_ruleset_free(rs);
	}
	printf("chained: the many-keys run again, each key waiting for the previous answer (as in a gateway)\n");
	printf("shm bytes/key: the file over the keys it holds; per key 64 bytes of counter entry + 128 of name\n"
	       "(+ a %d-byte ring slot for moving-window); evicted: live keys evicted during the many-keys run\n"
	       "(least recently used ones, plus any denied ones when every candidate was limiting)\n",
	       (int)((LIMIT_COUNT + 2 + 7) / 8 * 64));
	rmdir(dir);
	free(keys);
	free(lens);
	free(addrs);
	free(order);
	free(vkeys);
	free(vlens);
	free(vaddrs);
	free(ident);
	return 0;
}
