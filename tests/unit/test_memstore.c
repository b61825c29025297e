/*
 * test_memstore.c - unit tests of rules/memstore.c: the shared strategy
 * vectors on the memory store, key isolation, RL_TEST creating nothing,
 * the bound on keys (full store, sweep of expired keys), growth, layout
 * resets, and in-flight leases.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "rules.h"
#include "strategy_vectors.h"

static int make_memstore(struct rl_store *st, void *ctx)
{
	(void)ctx;
	return memstore_new(1000, st);
}

Test(memstore, vectors)
{
	run_vectors_on_store(make_memstore, NULL, "vec:");
}

static size_t mem_keys(struct rl_store *st)
{
	return memstore_count(st);
}

Test(memstore, probes_are_checked_never_written)
{
	run_probe_on_store(make_memstore, NULL, mem_keys);
}

/* The batch vector the shared-memory and Redis stores pass too. */
Test(memstore, batch_all_or_nothing_and_duplicates)
{
	struct rl_store st;

	cr_assert_eq(make_memstore(&st, NULL), 0);
	sv_batch_vector(&st, 1700000000000LL);
	st.ops->destroy(st.impl);
}

static struct rl_step fixed(uint64_t count, uint64_t period, uint64_t cost)
{
	struct rl_step p = { RL_FIXED_WINDOW, count, period, 0, cost };
	return p;
}

/* One op on key (key_len bytes); returns apply's result, verdict in *v. */
static int one(struct rl_store *st, const char *key, size_t key_len,
	       struct rl_step p, enum rl_mode mode, int64_t now,
	       struct rl_verdict *v, struct rl_diag *err)
{
	struct rl_store_op o = { key, key_len, p, { 0, 0, 0, 0, 0 }, 0 };
	int r = st->ops->apply(st->impl, &o, 1, mode, now, err);

	*v = o.v;
	return r;
}

static int hit(struct rl_store *st, const char *key, struct rl_step p,
	       int64_t now, struct rl_verdict *v, struct rl_diag *err)
{
	return one(st, key, strlen(key), p, RL_HIT, now, v, err);
}

static uint64_t remaining(struct rl_store *st, const char *key,
			  size_t key_len, struct rl_step p, int64_t now)
{
	struct rl_verdict v;

	cr_assert_eq(one(st, key, key_len, p, RL_TEST, now, &v, NULL), 0);
	return v.remaining;
}

Test(memstore, key_isolation)
{
	/* Keys that differ only in length, an embedded NUL, or the last
	 * byte at the hash's 8-byte chunk boundaries; and the empty key. */
	static const struct {
		const char *k;
		size_t len;
	} keys[] = {
		{ "ab", 2 }, { "abc", 3 }, { "a\0b", 3 }, { "a\0c", 3 },
		{ "", 0 }, { "12345678", 8 }, { "12345679", 8 },
		{ "123456789", 9 }, { "12345678A", 9 },
		{ "0123456789abcdef", 16 }, { "0123456789abcdeF", 16 },
	};
	const size_t n = sizeof(keys) / sizeof(keys[0]);
	struct rl_store st;
	struct rl_verdict v;
	/* long keys, differing in their last byte or their length only
	 * (the hash reads 8-byte words, then a tail of len % 8 bytes) */
	char long_keys[6][120];
	static const size_t long_len[6] = { 72, 72, 73, 73, 119, 119 };

	for (int i = 0; i < 6; i++)
		memset(long_keys[i], 'L', sizeof(long_keys[i]));
	long_keys[1][71] = 'x';         /* last byte of a whole word */
	long_keys[3][72] = 'x';         /* a one-byte tail */
	long_keys[5][118] = 'x';        /* last byte of a 7-byte tail */

	cr_assert_eq(memstore_new(100, &st), 0);
	for (int i = 0; i < 6; i++) {
		for (int h = 0; h <= i; h++)
			cr_assert_eq(one(&st, long_keys[i], long_len[i],
					 fixed(20, 1000, 1), RL_HIT, 0, &v,
					 NULL), 0);
	}
	for (int i = 0; i < 6; i++)
		cr_expect_eq(remaining(&st, long_keys[i], long_len[i],
				       fixed(20, 1000, 1), 10),
			     (uint64_t)(20 - (i + 1)), "long key %d", i);
	cr_expect_eq(memstore_count(&st), 6);
	for (size_t i = 0; i < n; i++) {
		/* key i takes i + 1 hits of a 20/s limit */
		for (size_t h = 0; h <= i; h++) {
			cr_assert_eq(one(&st, keys[i].k, keys[i].len,
					 fixed(20, 1000, 1), RL_HIT, 0, &v,
					 NULL), 0);
			cr_expect(v.allowed);
		}
	}
	cr_expect_eq(memstore_count(&st), n + 6);
	for (size_t i = 0; i < n; i++)
		cr_expect_eq(remaining(&st, keys[i].k, keys[i].len,
				       fixed(20, 1000, 1), 10), 20 - (i + 1),
			     "key %zu", i);
	st.ops->destroy(st.impl);
}

Test(memstore, test_mode_creates_nothing)
{
	struct rl_store st;
	char key[32];

	cr_assert_eq(memstore_new(100, &st), 0);
	for (int i = 0; i < 50; i++) {
		for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
			struct rl_step p = { (enum rl_strategy)s, 5, 1000, 0,
					     1 };
			snprintf(key, sizeof(key), "t%d", i);
			cr_expect_eq(remaining(&st, key, strlen(key), p, 100),
				     5);
		}
	}
	cr_expect_eq(memstore_count(&st), 0);
	st.ops->destroy(st.impl);
}

Test(memstore, full_store_error_and_sweep)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };

	cr_assert_eq(memstore_new(2, &st), 0);
	cr_assert_eq(hit(&st, "a", fixed(1, 1000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "b", fixed(1, 1000, 1), 0, &v, &err), 0);
	cr_expect_eq(hit(&st, "c", fixed(1, 1000, 1), 500, &v, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 2 keys, none expired");
	cr_expect_eq(memstore_count(&st), 2);
	/* existing keys still work, and RL_TEST on a new one */
	cr_expect_eq(hit(&st, "a", fixed(1, 1000, 1), 500, &v, &err), 0);
	cr_expect_eq(v.retry_ms, 500);
	cr_expect_eq(remaining(&st, "c", 1, fixed(1, 1000, 1), 500), 1);
	/* a and b expire at 1000: swept, c fits */
	cr_expect_eq(hit(&st, "c", fixed(1, 1000, 1), 1000, &v, &err), 0);
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(memstore_count(&st), 1);
	st.ops->destroy(st.impl);
}

Test(memstore, sweep_keeps_live_keys)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };

	cr_assert_eq(memstore_new(4, &st), 0);
	/* expiries 1000, 2000, 3000, 4000 */
	cr_assert_eq(hit(&st, "k0", fixed(1, 1000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "k1", fixed(1, 2000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "k2", fixed(1, 3000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "k3", fixed(1, 4000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "n1", fixed(1, 9000, 1), 1500, &v, &err), 0);
	cr_expect_eq(memstore_count(&st), 4);           /* k0 swept */
	cr_expect_eq(hit(&st, "n2", fixed(1, 9000, 1), 1600, &v, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 4 keys, none expired");
	cr_assert_eq(hit(&st, "n2", fixed(1, 9000, 1), 2500, &v, &err), 0);
	cr_expect_eq(memstore_count(&st), 4);           /* k1 swept */
	cr_expect_eq(remaining(&st, "k2", 2, fixed(1, 3000, 1), 2500), 0);
	cr_expect_eq(remaining(&st, "k3", 2, fixed(1, 4000, 1), 2500), 0);
	cr_expect_eq(remaining(&st, "n1", 2, fixed(1, 9000, 1), 2500), 0);
	cr_expect_eq(remaining(&st, "n2", 2, fixed(1, 9000, 1), 2500), 0);
	st.ops->destroy(st.impl);
}

/* Three ops on keys "a", "b", "c", each 5 per 10 s. */
static void abc_ops(struct rl_store_op ops[3])
{
	memset(ops, 0, 3 * sizeof(ops[0]));
	for (int i = 0; i < 3; i++) {
		ops[i].key = i == 0 ? "a" : i == 1 ? "b" : "c";
		ops[i].key_len = 1;
		ops[i].step = fixed(5, 10000, 1);
	}
}

/* A batch that needs two new keys when one fits fails whole: nothing is
 * created and the existing key is not consumed. */
Test(memstore, full_batch_changes_nothing)
{
	struct rl_store st;
	struct rl_store_op ops[3];
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };

	cr_assert_eq(memstore_new(2, &st), 0);
	cr_assert_eq(hit(&st, "a", fixed(5, 10000, 1), 0, &v, &err), 0);
	abc_ops(ops);
	cr_expect_eq(st.ops->apply(st.impl, ops, 3, RL_HIT, 10, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 2 keys, none expired");
	cr_expect_eq(memstore_count(&st), 1);
	cr_expect_eq(remaining(&st, "a", 1, fixed(5, 10000, 1), 10), 4);
	st.ops->destroy(st.impl);
}

/* Growth from 64 slots, then a sweep of every other key: the survivors
 * must still be found after the backward shifts. */
Test(memstore, growth_and_partial_sweep)
{
	enum { N = 5000 };
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	char key[32];
	size_t empty_bytes;

	cr_assert_eq(memstore_new(N, &st), 0);
	empty_bytes = memstore_bytes(&st);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		/* even keys expire at 1000, odd ones at 5000 */
		cr_assert_eq(hit(&st, key, fixed(2, i % 2 ? 5000 : 1000, 1), 0,
				 &v, &err), 0, "%s: %s", key, err.msg);
	}
	cr_expect_eq(memstore_count(&st), N);
	cr_expect_gt(memstore_bytes(&st), empty_bytes + N * 48);
	cr_expect_eq(hit(&st, "new", fixed(2, 1000, 1), 999, &v, &err), -1);
	cr_assert_eq(hit(&st, "new", fixed(2, 1000, 1), 1000, &v, &err), 0);
	cr_expect_eq(memstore_count(&st), N / 2 + 1);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		cr_expect_eq(remaining(&st, key, strlen(key),
				       fixed(2, i % 2 ? 5000 : 1000, 1), 1000),
			     i % 2 ? 1 : 2, "%s", key);
	}
	cr_expect_eq(memstore_count(&st), N / 2 + 1);
	st.ops->destroy(st.impl);
}

/* A key reused with another layout starts over instead of misreading. */
Test(memstore, layout_change_resets)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_step moving = { RL_MOVING_WINDOW, 3, 1000, 0, 1 };
	struct rl_step moving5 = { RL_MOVING_WINDOW, 5, 1000, 0, 1 };

	cr_assert_eq(memstore_new(10, &st), 0);
	cr_assert_eq(hit(&st, "k", fixed(2, 1000, 1), 0, &v, NULL), 0);
	cr_expect_eq(v.remaining, 1);
	cr_assert_eq(hit(&st, "k", moving, 0, &v, NULL), 0);
	cr_expect_eq(v.remaining, 2);
	cr_expect_eq(remaining(&st, "k", 1, fixed(2, 1000, 1), 0), 2);
	cr_assert_eq(hit(&st, "k", moving, 10, &v, NULL), 0);
	cr_expect_eq(v.remaining, 1);
	cr_assert_eq(hit(&st, "k", moving5, 20, &v, NULL), 0);
	cr_expect_eq(v.remaining, 4);
	cr_assert_eq(hit(&st, "k", fixed(2, 1000, 1), 30, &v, NULL), 0);
	cr_expect_eq(v.remaining, 1);
	cr_expect_eq(memstore_count(&st), 1);
	st.ops->destroy(st.impl);
}

Test(memstore, bad_ops)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	static char big[RL_STORE_KEY_MAX + 1];
	struct rl_step zero_count = fixed(0, 1000, 1);
	struct rl_step moving_big = { RL_MOVING_WINDOW, RL_MOVING_MAX + 1,
				      1000, 0, 1 };

	cr_assert_eq(memstore_new(10, &st), 0);
	cr_expect_eq(hit(&st, "k", zero_count, 0, &v, &err), -1);
	cr_expect_str_eq(err.msg,
			 "invalid step (strategy, count, period or cost)");
	cr_expect_eq(hit(&st, "k", moving_big, 0, &v, &err), -1);
	cr_expect_str_eq(err.msg, "moving-window count above RL_MOVING_MAX");
	memset(big, 'x', sizeof(big));
	cr_expect_eq(one(&st, big, sizeof(big), fixed(1, 1000, 1), RL_HIT, 0,
			 &v, &err), -1);
	cr_expect_str_eq(err.msg, "store key longer than RL_STORE_KEY_MAX");
	cr_expect_eq(memstore_count(&st), 0);
	st.ops->destroy(st.impl);
	st.ops->destroy(NULL);
}

Test(memstore, inflight)
{
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	uint64_t id1 = 0, id2 = 0, id3 = 0, id = 0, held = 0;

	cr_assert_eq(memstore_new(10, &st), 0);
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 2, 1000, 0, &id1, &held,
				     &err), 1);
	cr_expect_eq(id1, 1);
	cr_expect_eq(held, 1);
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 2, 1000, 10, &id2,
				     &held, &err), 1);
	cr_expect_eq(id2, 2);
	cr_expect_eq(held, 2);
	id = 77;
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 2, 1000, 20, &id, &held,
				     &err), 0);
	cr_expect_eq(id, 77, "untouched when not acquired");
	cr_expect_eq(held, 2);
	cr_expect_eq(st.ops->release(st.impl, "i", 1, id1, 30, &err), 0);
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 2, 1000, 40, &id3,
				     &held, &err), 1);
	cr_expect_eq(id3, 3);
	cr_expect_eq(held, 2);
	/* id2 expires at 1010: then one lease is held */
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 2, 1000, 1010, &id,
				     &held, &err), 1);
	cr_expect_eq(id, 4);
	cr_expect_eq(held, 2);
	cr_expect_eq(st.ops->release(st.impl, "i", 1, id2, 1010, &err), 0);
	cr_expect_eq(st.ops->release(st.impl, "nokey", 5, 1, 1010, &err), 0);
	cr_expect_eq(memstore_count(&st), 1);
	/* releasing the last lease drops the counter */
	cr_expect_eq(st.ops->release(st.impl, "i", 1, id3, 1020, &err), 0);
	cr_expect_eq(st.ops->release(st.impl, "i", 1, 4, 1020, &err), 0);
	cr_expect_eq(memstore_count(&st), 0);
	st.ops->destroy(st.impl);
}

/* Expired leases count as expired keys for the bound on keys. */
Test(memstore, inflight_swept_when_full)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	uint64_t id = 0, held = 0;

	cr_assert_eq(memstore_new(1, &st), 0);
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 3, 100, 0, &id, &held,
				     &err), 1);
	cr_expect_eq(hit(&st, "k", fixed(1, 1000, 1), 50, &v, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 1 keys, none expired");
	cr_expect_eq(st.ops->acquire(st.impl, "j", 1, 3, 100, 60, &id, &held,
				     &err), -1);
	cr_expect_eq(hit(&st, "k", fixed(1, 1000, 1), 100, &v, &err), 0);
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(memstore_count(&st), 1);
	st.ops->destroy(st.impl);
}

Test(memstore, name)
{
	struct rl_store st;

	cr_assert_eq(memstore_new(1, &st), 0);
	cr_expect_str_eq(st.ops->name, "memory");
	st.ops->destroy(st.impl);
}

/* Sweeping and layout changes free the heap parts of a slot: the state of
 * moving-window and in-flight counters and the tail of a long key (the
 * leak checkers see the rest). */
Test(memstore, sweep_frees_heap_parts)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct rl_step moving = { RL_MOVING_WINDOW, 50, 1000, 0, 1 };
	char key[100];
	size_t bytes0;
	uint64_t id, held;

	cr_assert_eq(memstore_new(3, &st), 0);
	bytes0 = memstore_bytes(&st);
	for (int i = 0; i < 3; i++) {
		memset(key, 'k', sizeof(key));
		key[0] = (char)('0' + i);
		cr_assert_eq(one(&st, key, sizeof(key), moving, RL_HIT, 0, &v,
				 &err), 0);
		cr_expect_eq(v.remaining, 49);
	}
	cr_expect_gt(memstore_bytes(&st), bytes0 + 3 * 52 * 8);
	/* a layout change on the third key: in-flight instead, until 2000 */
	cr_expect_eq(st.ops->acquire(st.impl, key, sizeof(key), 4, 2000, 0, &id,
				     &held, &err), 1);
	cr_expect_eq(held, 1);
	cr_expect_eq(hit(&st, "n", moving, 999, &v, &err), -1);
	cr_assert_eq(hit(&st, "n", moving, 1000, &v, &err), 0, "%s", err.msg);
	cr_expect_eq(memstore_count(&st), 2);
	/* glibc-style chunks (size + 8, rounded up to 16): "n"'s 52 words
	 * 416 -> 432; the lease counter's 9 words 72 -> 80; keys take no
	 * heap, however long (a slot holds their hash) */
	cr_expect_eq(memstore_bytes(&st), bytes0 + 432 + 80);
	cr_expect_eq(st.ops->release(st.impl, key, sizeof(key), id, 1000,
				     &err), 0);
	cr_expect_eq(memstore_count(&st), 1);
	cr_expect_eq(memstore_bytes(&st), bytes0 + 432);
	st.ops->destroy(st.impl);
}

/* Random churn against a model of the table: which keys it holds and until
 * when each one's window lasts.  A full table sweeps exactly the expired
 * keys, so the model predicts every result, every verdict and the count;
 * this exercises growth, wrapped probe clusters and the backward shift of
 * deletion on a capacity that is not a power of two.  With these periods
 * the table fills about 11,600 times and stays full (-1) about 1,200
 * times. */
Test(memstore, churn_against_model)
{
	enum { MAX = 100, KEYS = 300, OPS = 100000 };
	static int held[KEYS];
	static int64_t until[KEYS];     /* window end of a held key */
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	uint64_t rnd = 12345;
	size_t nheld = 0;
	char key[16];

	cr_assert_eq(memstore_new(MAX, &st), 0);
	for (int64_t now = 1; now <= OPS; now++) {
		int k;
		uint64_t period;

		rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
		k = (int)((rnd >> 33) % KEYS);
		period = 1 + (uint64_t)(k * 7 % 300);
		snprintf(key, sizeof(key), "c%d", k);

		int expect_rc = 0, expect_allowed = 1;
		if (!held[k] && nheld == MAX) {
			for (int j = 0; j < KEYS; j++) {
				if (held[j] && until[j] <= now) {
					held[j] = 0;
					nheld--;
				}
			}
			if (nheld == MAX)
				expect_rc = -1;
		}
		if (expect_rc == 0 && held[k] && until[k] > now)
			expect_allowed = 0;

		int rc = hit(&st, key, fixed(1, period, 1), now, &v, &err);
		cr_assert_eq(rc, expect_rc, "op %lld key %d", (long long)now,
			     k);
		if (rc == 0) {
			cr_assert_eq(v.allowed, expect_allowed,
				     "op %lld key %d", (long long)now, k);
			if (!held[k]) {
				held[k] = 1;
				nheld++;
			}
			if (expect_allowed)
				until[k] = now + (int64_t)period;
			else
				cr_assert_eq(v.retry_ms, until[k] - now);
		}
		cr_assert_eq(memstore_count(&st), nheld, "op %lld",
			     (long long)now);
	}
	st.ops->destroy(st.impl);
}

/* memstore_evict_lru (the gateway's storage memory): a flood of new keys
 * recycles its own idle entries; a client being limited that keeps
 * hitting keeps its ban; the count never passes max_keys. */
Test(memstore, evict_lru_flood_keeps_an_active_ban)
{
	enum { MAX = 100, FLOOD = 20000 };
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	char key[32];
	uint64_t lim = 7;

	cr_assert_eq(memstore_new(MAX, &st), 0);
	memstore_evict_lru(&st);
	for (int i = 0; i < 5; i++)
		cr_assert_eq(hit(&st, "heavy", fixed(5, 3600000, 1), i, &v, &err), 0);
	cr_assert_eq(hit(&st, "heavy", fixed(5, 3600000, 1), 10, &v, &err), 0);
	cr_assert_eq(v.allowed, 0);
	for (int i = 0; i < FLOOD; i++) {
		snprintf(key, sizeof(key), "flood-%d", i);
		cr_assert_eq(hit(&st, key, fixed(5, 3600000, 1), 100 + i, &v, &err), 0,
			     "%s: %s", key, err.msg);
		cr_assert_eq(v.allowed, 1);
		cr_assert_leq(memstore_count(&st), MAX);
		if (i % 50 == 0) {
			cr_assert_eq(hit(&st, "heavy", fixed(5, 3600000, 1), 100 + i, &v,
					 &err), 0);
			cr_assert_eq(v.allowed, 0, "the ban lifted after %d new keys", i);
		}
	}
	cr_expect_eq(memstore_count(&st), MAX);
	cr_expect_eq(memstore_evictions(&st, &lim), FLOOD + 1 - MAX);
	cr_expect_eq(lim, 0);
	st.ops->destroy(st.impl);
}

/* The expired go first (not counted as evictions), then the least recently
 * hit; when every candidate is limiting, the least recently hit of those
 * (counted apart). */
Test(memstore, evict_lru_order)
{
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	uint64_t lim = 0;

	cr_assert_eq(memstore_new(3, &st), 0);
	memstore_evict_lru(&st);
	cr_assert_eq(hit(&st, "a", fixed(1, 100000, 1), 0, &v, &err), 0);
	cr_assert_eq(hit(&st, "b", fixed(1, 500, 1), 1, &v, &err), 0);
	cr_assert_eq(hit(&st, "c", fixed(1, 100000, 1), 2, &v, &err), 0);
	/* b expired at 501: it goes, a and c stay */
	cr_assert_eq(hit(&st, "d", fixed(1, 100000, 1), 600, &v, &err), 0);
	cr_expect_eq(memstore_evictions(&st, &lim), 0);
	cr_expect_eq(remaining(&st, "a", 1, fixed(1, 100000, 1), 600), 0);
	cr_expect_eq(remaining(&st, "c", 1, fixed(1, 100000, 1), 600), 0);
	/* none expired: a, least recently hit, goes */
	cr_assert_eq(hit(&st, "c", fixed(1, 100000, 1), 700, &v, &err), 0);
	cr_assert_eq(v.allowed, 0);
	cr_assert_eq(hit(&st, "e", fixed(1, 100000, 1), 800, &v, &err), 0);
	cr_expect_eq(memstore_evictions(&st, &lim), 1);
	cr_expect_eq(remaining(&st, "a", 1, fixed(1, 100000, 1), 800), 1);
	cr_expect_eq(remaining(&st, "c", 1, fixed(1, 100000, 1), 800), 0);
	/* d and e denied too: all three limiting; c, hit longest ago, goes */
	cr_assert_eq(hit(&st, "d", fixed(1, 100000, 1), 900, &v, &err), 0);
	cr_assert_eq(hit(&st, "e", fixed(1, 100000, 1), 900, &v, &err), 0);
	cr_assert_eq(hit(&st, "f", fixed(1, 100000, 1), 1000, &v, &err), 0);
	cr_expect_eq(memstore_evictions(&st, &lim), 1);
	cr_expect_eq(lim, 1);
	cr_expect_eq(remaining(&st, "c", 1, fixed(1, 100000, 1), 1000), 1);
	cr_expect_eq(remaining(&st, "d", 1, fixed(1, 100000, 1), 1000), 0);
	cr_expect_eq(memstore_count(&st), 3);
	st.ops->destroy(st.impl);
}

/* Never evicted: a live in-flight lease, and a key of the batch itself. */
Test(memstore, evict_lru_spares_leases_and_the_batch)
{
	struct rl_store st;
	struct rl_store_op ops[3];
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	uint64_t id = 0, held = 0;

	cr_assert_eq(memstore_new(1, &st), 0);
	memstore_evict_lru(&st);
	cr_expect_eq(st.ops->acquire(st.impl, "i", 1, 3, 100, 0, &id, &held, &err), 1);
	cr_expect_eq(hit(&st, "k", fixed(1, 1000, 1), 50, &v, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 1 keys, none that may go (live in-flight counters)");
	/* the lease expired: it may go */
	cr_expect_eq(hit(&st, "k", fixed(1, 1000, 1), 100, &v, &err), 0);
	cr_expect_eq(v.allowed, 1);
	st.ops->destroy(st.impl);

	cr_assert_eq(memstore_new(2, &st), 0);
	memstore_evict_lru(&st);
	cr_assert_eq(hit(&st, "a", fixed(5, 10000, 1), 0, &v, &err), 0);
	abc_ops(ops);
	/* b and c need a's place, which the batch itself uses */
	cr_expect_eq(st.ops->apply(st.impl, ops, 3, RL_HIT, 10, &err), -1);
	cr_expect_str_eq(err.msg, "store full: 2 keys, none that may go (live in-flight counters)");
	cr_expect_eq(remaining(&st, "a", 1, fixed(5, 10000, 1), 10), 4);
	/* two of them fit, with a new one evicting nothing of theirs */
	cr_expect_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 10, &err), 0, "%s", err.msg);
	cr_expect_eq(remaining(&st, "a", 1, fixed(5, 10000, 1), 10), 3);
	cr_expect_eq(remaining(&st, "b", 1, fixed(5, 10000, 1), 10), 4);
	st.ops->destroy(st.impl);
}

/* Evicting, the expired anywhere go before any live key (a sweep, at most
 * once per max_keys / 16 new keys); a batch naming one new key twice
 * needs one place, not two (found by a review). */
Test(memstore, evict_lru_sweeps_the_expired_first)
{
	enum { MAX = 1000 };
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	char key[32];
	uint64_t lim = 0;

	cr_assert_eq(memstore_new(MAX, &st), 0);
	memstore_evict_lru(&st);
	for (int i = 0; i < MAX; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(hit(&st, key, fixed(5, i < 100 ? 1000 : 3600000, 1), 0,
				 &v, &err), 0);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "new%d", i);
		cr_assert_eq(hit(&st, key, fixed(5, 3600000, 1), 5000, &v, &err), 0);
	}
	cr_expect_eq(memstore_evictions(&st, &lim), 0, "live keys evicted");
	for (int i = 100; i < MAX; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_expect_eq(remaining(&st, key, strlen(key), fixed(5, 3600000, 1), 5000), 4,
			     "%s", key);
	}
	st.ops->destroy(st.impl);

	struct rl_store_op ops[2];
	cr_assert_eq(memstore_new(8, &st), 0);
	memstore_evict_lru(&st);
	for (int i = 0; i < 8; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(hit(&st, key, fixed(5, 3600000, 1), 0, &v, &err), 0);
	}
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 2; i++) {
		ops[i].key = "twice";
		ops[i].key_len = 5;
		ops[i].step = fixed(5, 3600000, 1);
	}
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 10, &err), 0, "%s", err.msg);
	cr_expect_eq(memstore_evictions(&st, &lim), 1);
	cr_expect_eq(memstore_count(&st), 8);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* The keyed hash (rules/util.c)                                       */

Test(siphash, reference_vectors)
{
	/* Aumasson and Bernstein's vectors (the reference implementation's
	 * vectors.h): key 00..0f, message 00..n-1; SipHash-2-4 with the
	 * 64-bit and the 128-bit output (tag bytes). */
	static const struct {
		size_t n;
		uint64_t h;
		uint8_t tag[16];
	} v[] = {
		{ 0, 0x726fdb47dd0e0e31ULL,
		  { 0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6,
		    0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93 } },
		{ 7, 0xab0200f58b01d137ULL,
		  { 0xa1, 0xf1, 0xeb, 0xbe, 0xd8, 0xdb, 0xc1, 0x53,
		    0xc0, 0xb8, 0x4a, 0xa6, 0x1f, 0xf0, 0x82, 0x39 } },
		{ 8, 0x93f5f5799a932462ULL,
		  { 0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61,
		    0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14, 0x97, 0xb4 } },
		{ 15, 0xa129ca6149be45e5ULL,
		  { 0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11,
		    0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3, 0xd9 } },
		{ 63, 0x958a324ceb064572ULL,
		  { 0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a,
		    0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f, 0xbd, 0x7c } },
	};
	uint8_t key[16], msg[64];

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	struct rl_sipkey k = rl_sipkey_of(key);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint64_t out[2];
		uint8_t tag[16];

		cr_expect_eq(rl_siphash24(&k, msg, v[i].n), v[i].h,
			     "length %zu", v[i].n);
		rl_siphash24_128(&k, msg, v[i].n, out);
		for (int b = 0; b < 8; b++) {
			tag[b] = (uint8_t)(out[0] >> (8 * b));
			tag[8 + b] = (uint8_t)(out[1] >> (8 * b));
		}
		cr_expect_arr_eq(tag, v[i].tag, 16, "128-bit, length %zu",
				 v[i].n);
	}
	/* every length of a last partial word, 1 to 6 (7 is above), each
	 * entering the tail's byte gathering at its own place: 64-bit */
	static const uint64_t tail[7] = {
		0, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL,
		0x85676696d7fb7e2dULL, 0xcf2794e0277187b7ULL,
		0x18765564cd99a68dULL, 0xcbc9466e58fee3ceULL,
	};
	for (size_t n = 1; n < 7; n++)
		cr_expect_eq(rl_siphash24(&k, msg, n), tail[n], "length %zu", n);
}

Test(siphash, one_three_differs_from_two_four_and_follows_the_key)
{
	/* SipHash-1-3 is the same code with other round counts (checked
	 * above through 2-4); here: its output is not 2-4's, it depends on
	 * every input byte and on the key, and it is deterministic. */
	uint8_t key[16] = { 0 }, key2[16] = { 0 };
	uint64_t a[2], b[2], c[2];
	char msg[40];

	key2[15] = 1;
	struct rl_sipkey k = rl_sipkey_of(key), k2 = rl_sipkey_of(key2);
	memset(msg, 'm', sizeof(msg));
	rl_siphash13_128(&k, msg, sizeof(msg), a);
	rl_siphash24_128(&k, msg, sizeof(msg), b);
	cr_expect(a[0] != b[0] && a[1] != b[1]);
	rl_siphash13_128(&k2, msg, sizeof(msg), c);
	cr_expect(a[0] != c[0] && a[1] != c[1]);
	for (size_t i = 0; i < sizeof(msg); i++) {
		msg[i] ^= 1;
		rl_siphash13_128(&k, msg, sizeof(msg), c);
		cr_expect(a[0] != c[0] && a[1] != c[1], "byte %zu", i);
		msg[i] ^= 1;
	}
	rl_siphash13_128(&k, msg, sizeof(msg), c);
	cr_expect(a[0] == c[0] && a[1] == c[1]);
}

Test(memstore, secret_only_on_an_empty_store_and_decisions_unchanged)
{
	/* The same hits on stores under different secrets (and the default
	 * one) give the same verdicts: the secret moves keys, not counts. */
	uint8_t s1[16], s2[16];
	struct rl_store st[3];
	struct rl_verdict v[3];

	for (int i = 0; i < 16; i++) {
		s1[i] = (uint8_t)(i * 7 + 1);
		s2[i] = (uint8_t)(255 - i);
	}
	for (int i = 0; i < 3; i++)
		cr_assert_eq(memstore_new(50, &st[i]), 0);
	cr_expect_eq(memstore_secret(&st[1], s1), 0);
	cr_expect_eq(memstore_secret(&st[2], s2), 0);
	for (int t = 0; t < 400; t++) {
		char key[16];
		int n = snprintf(key, sizeof(key), "client%d", t % 37);
		for (int i = 0; i < 3; i++)
			cr_assert_eq(one(&st[i], key, (size_t)n,
					 fixed(5, 1000, 1), RL_HIT, t * 10,
					 &v[i], NULL), 0);
		cr_expect_eq(v[1].allowed, v[0].allowed, "hit %d", t);
		cr_expect_eq(v[2].allowed, v[0].allowed, "hit %d", t);
		cr_expect_eq(v[1].remaining, v[0].remaining, "hit %d", t);
		cr_expect_eq(v[2].remaining, v[0].remaining, "hit %d", t);
	}
	cr_expect_eq(memstore_count(&st[1]), memstore_count(&st[0]));
	/* keys placed under a secret stay under it */
	cr_expect_eq(memstore_secret(&st[1], s2), -1);
	for (int i = 0; i < 3; i++)
		st[i].ops->destroy(st[i].impl);
}
