/*
 * test_strategy.c - unit tests of rules/strategy.c: names, state sizes,
 * the shared vectors on the pure functions, expiry, in-flight leases, and
 * all-or-nothing batches of several limits (run through the memstore,
 * which is where a batch is made atomic).  Expected numbers are worked out
 * by hand in the comments.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "strategy_vectors.h"

static const struct {
	enum rl_strategy s;
	const char *name;
} names[] = {
	{ RL_FIXED_WINDOW, "fixed-window" },
	{ RL_FIXED_WINDOW_ELASTIC, "fixed-window-elastic-expiry" },
	{ RL_MOVING_WINDOW, "moving-window" },
	{ RL_SLIDING_WINDOW, "sliding-window-counter" },
	{ RL_GCRA, "gcra" },
};

Test(strategy, names_round_trip)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		enum rl_strategy s = RL_STRATEGY_COUNT;

		cr_expect_str_eq(rl_strategy_name(names[i].s), names[i].name);
		cr_expect_eq(rl_strategy_from_name(names[i].name,
						   strlen(names[i].name), &s),
			     0, "%s", names[i].name);
		cr_expect_eq(s, names[i].s, "%s", names[i].name);
	}
	cr_expect_str_eq(rl_strategy_name(RL_STRATEGY_COUNT), "unknown");
}

Test(strategy, from_name_rejects)
{
	enum rl_strategy s = RL_GCRA;

	cr_expect_eq(rl_strategy_from_name("gcr", 3, &s), -1);
	cr_expect_eq(rl_strategy_from_name("gcra", 3, &s), -1);
	cr_expect_eq(rl_strategy_from_name("GCRA", 4, &s), -1);
	cr_expect_eq(rl_strategy_from_name("fixed-window-elastic", 20, &s), -1);
	cr_expect_eq(rl_strategy_from_name("", 0, &s), -1);
	cr_expect_eq(s, RL_GCRA, "unchanged on failure");
	/* len bounds the name: no NUL needed */
	cr_expect_eq(rl_strategy_from_name("gcrax", 4, &s), 0);
	cr_expect_eq(s, RL_GCRA);
	cr_expect_eq(rl_strategy_from_name("moving-windows", 13, &s), 0);
	cr_expect_eq(s, RL_MOVING_WINDOW);
}

Test(strategy, state_words)
{
	cr_expect_eq(rl_strategy_state_words(RL_FIXED_WINDOW, 100), 2);
	cr_expect_eq(rl_strategy_state_words(RL_FIXED_WINDOW_ELASTIC, 100), 2);
	cr_expect_eq(rl_strategy_state_words(RL_MOVING_WINDOW, 100), 102);
	cr_expect_eq(rl_strategy_state_words(RL_SLIDING_WINDOW, 100), 3);
	cr_expect_eq(rl_strategy_state_words(RL_GCRA, 100), 3);
	cr_expect_eq(rl_inflight_state_words(10), 21);
}

Test(strategy, vectors_pure)
{
	run_vectors_pure();
}

static struct rl_step step(enum rl_strategy s, uint64_t count,
			   uint64_t period, uint64_t burst, uint64_t cost)
{
	struct rl_step p = { s, count, period, burst, cost };
	return p;
}

Test(strategy, check_changes_nothing)
{
	uint64_t st[3] = { 10000, 2, 0 }, copy[3];
	struct rl_verdict v;

	for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
		struct rl_step p = step((enum rl_strategy)s, 3, 1000, 0, 1);
		/* 5 words: the largest layout here (moving-window of 3) */
		uint64_t *mst = calloc(5, sizeof(uint64_t));
		memcpy(copy, st, sizeof(st));
		if (p.strategy != RL_MOVING_WINDOW) {
			rl_strategy_check(&p, st, 10500, &v);
			cr_expect_arr_eq(st, copy, sizeof(st), "%d", s);
		}
		rl_strategy_consume(&p, mst, 10500, &v);
		uint64_t w[5];
		memcpy(w, mst, sizeof(w));
		rl_strategy_check(&p, mst, 10600, &v);
		cr_expect_arr_eq(mst, w, sizeof(w), "%d", s);
		/* penalize changes only the elastic window */
		if (p.strategy != RL_FIXED_WINDOW_ELASTIC) {
			rl_strategy_penalize(&p, mst, 10600, &v);
			cr_expect_arr_eq(mst, w, sizeof(w), "%d", s);
		}
		free(mst);
	}
}

/* A moving window of 100 with hits every 10 ms exercises the binary
 * search: at 1050 the hits at 0..50 (6 of them) have expired. */
Test(strategy, moving_binary_search)
{
	struct rl_step p = step(RL_MOVING_WINDOW, 100, 1000, 0, 1);
	uint64_t *st = calloc(102, sizeof(uint64_t));
	struct rl_verdict v;

	for (int i = 0; i < 100; i++) {
		rl_strategy_check(&p, st, i * 10, &v);
		cr_assert(v.allowed, "hit %d", i);
		rl_strategy_consume(&p, st, i * 10, &v);
	}
	cr_expect_eq(v.remaining, 0);
	rl_strategy_check(&p, st, 1050, &v);
	cr_expect_eq(v.remaining, 6);       /* 94 live */
	cr_expect_eq(v.reset_ms, 1990);     /* newest 990 + 1000 */
	p.cost = 10;                        /* 94+10-100 = 4th: ts 90 */
	rl_strategy_check(&p, st, 1050, &v);
	cr_expect_eq(v.allowed, 0);
	cr_expect_eq(v.retry_ms, 40);       /* 90 + 1000 - 1050 */
	p.cost = 6;
	rl_strategy_consume(&p, st, 1050, &v); /* ring wraps: head 6 */
	cr_expect_eq(v.remaining, 0);
	cr_expect_eq(rl_strategy_expiry(&p, st), 2050);
	p.cost = 1;
	rl_strategy_check(&p, st, 1060, &v);   /* 60 expired */
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(v.remaining, 1);
	free(st);
}

Test(strategy, expiry)
{
	uint64_t st[3] = { 0, 0, 0 };
	struct rl_verdict v;
	struct rl_step p;

	for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
		p = step((enum rl_strategy)s, 3, 1000, 0, 1);
		cr_expect_eq(rl_strategy_expiry(&p, st), 0, "fresh %d", s);
	}

	p = step(RL_FIXED_WINDOW, 3, 1000, 0, 1);
	rl_strategy_consume(&p, st, 10000, &v);
	rl_strategy_consume(&p, st, 10700, &v);
	cr_expect_eq(rl_strategy_expiry(&p, st), 11000);

	memset(st, 0, sizeof(st));
	p = step(RL_FIXED_WINDOW_ELASTIC, 3, 1000, 0, 1);
	rl_strategy_consume(&p, st, 50000, &v);
	rl_strategy_consume(&p, st, 50400, &v);
	cr_expect_eq(rl_strategy_expiry(&p, st), 51400);

	uint64_t mst[5] = { 0 };
	p = step(RL_MOVING_WINDOW, 3, 1000, 0, 1);
	rl_strategy_consume(&p, mst, 100000, &v);
	rl_strategy_consume(&p, mst, 100300, &v);
	cr_expect_eq(rl_strategy_expiry(&p, mst), 101300);

	memset(st, 0, sizeof(st));
	p = step(RL_SLIDING_WINDOW, 10, 1000, 0, 1);
	rl_strategy_consume(&p, st, 20500, &v);     /* cur window 20000 */
	cr_expect_eq(rl_strategy_expiry(&p, st), 22000);
	rl_strategy_consume(&p, st, 21200, &v);     /* prev 1, cur 1 */
	cr_expect_eq(rl_strategy_expiry(&p, st), 23000);
	uint64_t only_prev[3] = { 21000, 1, 0 };
	cr_expect_eq(rl_strategy_expiry(&p, only_prev), 22000);

	memset(st, 0, sizeof(st));
	p = step(RL_GCRA, 3, 1000, 5, 2);
	rl_strategy_consume(&p, st, 0, &v);         /* 2000 units, 3/ms */
	cr_expect_eq(rl_strategy_expiry(&p, st), 667);
}

/* Expired state reads as fresh: an old window at a later time. */
Test(strategy, stale_state_is_fresh)
{
	uint64_t st[3] = { 0 };
	struct rl_verdict v;
	struct rl_step p = step(RL_FIXED_WINDOW, 2, 1000, 0, 2);

	rl_strategy_consume(&p, st, 1000, &v);
	rl_strategy_check(&p, st, 1999, &v);
	cr_expect_eq(v.allowed, 0);
	cr_expect_eq(v.retry_ms, 1);
	rl_strategy_check(&p, st, 2000, &v);
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(v.remaining, 2);
	cr_expect_eq(v.reset_ms, 3000);
}

Test(strategy, inflight_pure)
{
	uint64_t st[5] = { 0 }, held = 99;

	cr_expect_eq(rl_inflight_acquire(st, 2, 0, 100, 7, &held), 1);
	cr_expect_eq(held, 1);
	cr_expect_eq(rl_inflight_acquire(st, 2, 0, 100, 8, &held), 1);
	cr_expect_eq(held, 2);
	cr_expect_eq(rl_inflight_acquire(st, 2, 50, 100, 9, &held), 0);
	cr_expect_eq(held, 2);
	cr_expect_eq(rl_inflight_release(st, 2, 60, 7, &held), 1);
	cr_expect_eq(held, 1);
	cr_expect_eq(rl_inflight_acquire(st, 2, 60, 100, 9, &held), 1);
	cr_expect_eq(held, 2);              /* 8 until 100, 9 until 160 */
	cr_expect_eq(rl_inflight_acquire(st, 2, 100, 100, 10, &held), 1);
	cr_expect_eq(held, 2);              /* 8 expired at 100 */
	cr_expect_eq(rl_inflight_release(st, 2, 100, 8, &held), 0);
	cr_expect_eq(held, 2);
	cr_expect_eq(rl_inflight_release(st, 2, 120, 42, &held), 0);
	cr_expect_eq(rl_inflight_release(st, 2, 200, 9, &held), 0);
	cr_expect_eq(held, 0);              /* 9 (160) and 10 (200) gone */
	cr_expect_eq(st[0], 0);
	cr_expect_eq(rl_inflight_acquire(st, 2, 200, 0, 11, NULL), 1);
	cr_expect_eq(rl_inflight_acquire(st, 2, 200, 0, 12, &held), 1);
	cr_expect_eq(held, 1);              /* lease_ms 0: 11 expired */

	uint64_t none[1] = { 0 };
	cr_expect_eq(rl_inflight_acquire(none, 0, 0, 100, 1, &held), 0);
	cr_expect_eq(held, 0);
}

/* ------------------------------------------------------------------ */
/* All-or-nothing batches                                              */

static struct rl_store_op op(const char *key, struct rl_step p)
{
	struct rl_store_op o;

	memset(&o, 0, sizeof(o));
	o.key = key;
	o.key_len = strlen(key);
	o.step = p;
	return o;
}

static void expect_v(const struct rl_verdict *v, int allowed,
		     uint64_t remaining, int64_t reset, int64_t retry,
		     const char *what)
{
	cr_expect_eq(v->allowed, allowed, "%s: allowed", what);
	cr_expect_eq(v->remaining, remaining, "%s: remaining %llu", what,
		     (unsigned long long)v->remaining);
	cr_expect_eq(v->reset_ms, reset, "%s: reset %lld", what,
		     (long long)v->reset_ms);
	cr_expect_eq(v->retry_ms, retry, "%s: retry %lld", what,
		     (long long)v->retry_ms);
}

static uint64_t test_remaining(struct rl_store *st, struct rl_store_op o,
			       int64_t now)
{
	cr_assert_eq(st->ops->apply(st->impl, &o, 1, RL_TEST, now, NULL), 0);
	return o.v.remaining;
}

Test(batch, second_limit_denies_none_consumed)
{
	struct rl_store st;
	struct rl_diag err;
	struct rl_store_op ops[2];

	cr_assert_eq(memstore_new(100, &st), 0);
	ops[0] = op("a", step(RL_FIXED_WINDOW, 5, 1000, 0, 1));
	ops[1] = op("b", step(RL_FIXED_WINDOW, 1, 1000, 0, 1));
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1000, &err), 0);
	expect_v(&ops[0].v, 1, 4, 2000, 0, "a first");
	expect_v(&ops[1].v, 1, 0, 2000, 0, "b first");

	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1100, &err), 0);
	expect_v(&ops[0].v, 1, 4, 2000, 0, "a, batch denied");
	expect_v(&ops[1].v, 0, 0, 2000, 900, "b denies");
	cr_expect_eq(test_remaining(&st, ops[0], 1100), 4,
		     "a was not consumed");

	/* the first limit denying: the second is not consumed either */
	ops[0] = op("a", step(RL_FIXED_WINDOW, 5, 1000, 0, 5));
	ops[1] = op("c", step(RL_GCRA, 2, 1000, 0, 1));
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1200, &err), 0);
	expect_v(&ops[0].v, 0, 4, 2000, 800, "a denies");
	expect_v(&ops[1].v, 1, 2, 1200, 0, "c fresh");
	cr_expect_eq(test_remaining(&st, ops[1], 1200), 2);
	st.ops->destroy(st.impl);
}

Test(batch, every_strategy_rolls_back)
{
	struct rl_store st;
	struct rl_store_op ops[RL_STRATEGY_COUNT + 1];

	cr_assert_eq(memstore_new(100, &st), 0);
	/* Each strategy 3 per 1000 ms with one hit at 0, then a batch at
	 * 10 with a limit that denies: nothing of the others is consumed. */
	const char *keys[RL_STRATEGY_COUNT] = { "f", "e", "m", "s", "g" };
	for (int s = 0; s < RL_STRATEGY_COUNT; s++)
		ops[s] = op(keys[s], step((enum rl_strategy)s, 3, 1000, 0, 1));
	cr_assert_eq(st.ops->apply(st.impl, ops, RL_STRATEGY_COUNT, RL_HIT, 0,
				   NULL), 0);
	for (int s = 0; s < RL_STRATEGY_COUNT; s++)
		cr_expect_eq(ops[s].v.remaining, 2, "%s", keys[s]);
	ops[RL_STRATEGY_COUNT] = op("deny", step(RL_FIXED_WINDOW, 1, 1000, 0,
						 2));
	cr_assert_eq(st.ops->apply(st.impl, ops, RL_STRATEGY_COUNT + 1, RL_HIT,
				   10, NULL), 0);
	cr_expect_eq(ops[RL_STRATEGY_COUNT].v.never, 1);
	for (int s = 0; s < RL_STRATEGY_COUNT; s++) {
		cr_expect_eq(ops[s].v.allowed, 1, "%s", keys[s]);
		cr_expect_eq(test_remaining(&st, ops[s], 10), 2, "%s",
			     keys[s]);
	}
	/* the elastic window was extended by the denied request: 10+1000 */
	cr_expect_eq(ops[RL_FIXED_WINDOW_ELASTIC].v.reset_ms, 1010);
	cr_expect_eq(ops[RL_FIXED_WINDOW_ELASTIC].v.retry_ms, 0);
	cr_expect_eq(memstore_count(&st), RL_STRATEGY_COUNT + 1);
	st.ops->destroy(st.impl);
}

Test(batch, elastic_extended_when_other_limit_denies)
{
	struct rl_store st;
	struct rl_store_op ops[2];

	cr_assert_eq(memstore_new(100, &st), 0);
	ops[0] = op("e", step(RL_FIXED_WINDOW_ELASTIC, 5, 1000, 0, 1));
	ops[1] = op("b", step(RL_FIXED_WINDOW, 1, 1000, 0, 1));
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1000, NULL), 0);
	expect_v(&ops[0].v, 1, 4, 2000, 0, "e first");
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1500, NULL), 0);
	expect_v(&ops[0].v, 1, 4, 2500, 0, "e penalized");
	expect_v(&ops[1].v, 0, 0, 2000, 500, "b denies");
	/* still the window with one hit, now ending at 2500 */
	ops[0].v.remaining = 0;
	cr_assert_eq(st.ops->apply(st.impl, ops, 1, RL_TEST, 2200, NULL), 0);
	expect_v(&ops[0].v, 1, 4, 2500, 0, "e later");
	st.ops->destroy(st.impl);
}

Test(batch, test_mode_changes_nothing)
{
	struct rl_store st;
	struct rl_store_op ops[2];

	cr_assert_eq(memstore_new(100, &st), 0);
	ops[0] = op("x", step(RL_SLIDING_WINDOW, 2, 1000, 0, 1));
	ops[1] = op("y", step(RL_MOVING_WINDOW, 2, 1000, 0, 1));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_TEST, 5000,
					   NULL), 0);
		expect_v(&ops[0].v, 1, 2, 5000, 0, "x");
		expect_v(&ops[1].v, 1, 2, 5000, 0, "y");
	}
	cr_expect_eq(memstore_count(&st), 0);
	st.ops->destroy(st.impl);
}

/* The same key twice in one batch: the second op sees the first one's
 * hit, so the batch cannot consume more than the limit. */
Test(batch, duplicate_keys)
{
	struct rl_store st;
	struct rl_store_op ops[2];
	struct rl_diag err;

	cr_assert_eq(memstore_new(100, &st), 0);
	ops[0] = op("d", step(RL_FIXED_WINDOW, 3, 1000, 0, 1));
	ops[1] = ops[0];
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1000, NULL), 0);
	expect_v(&ops[0].v, 1, 2, 2000, 0, "d 1");
	expect_v(&ops[1].v, 1, 1, 2000, 0, "d 2");
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1100, NULL), 0);
	expect_v(&ops[0].v, 1, 1, 2000, 0, "d 3 (would fit)");
	expect_v(&ops[1].v, 0, 0, 2000, 900, "d 4 (after d 3)");
	cr_expect_eq(test_remaining(&st, ops[0], 1100), 1);

	/* same key, two layouts: refused */
	ops[1] = op("d", step(RL_MOVING_WINDOW, 3, 1000, 0, 1));
	cr_expect_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, 1100, &err), -1);
	cr_expect_str_eq(err.msg,
			 "one key with two strategies or counts in one batch");
	st.ops->destroy(st.impl);
}

/* rl_strategy_hit is check, then consume or penalize, in one step: on
 * every vector's RL_HIT steps it leaves the same state and verdict as the
 * three calls, and returns the expiry; after a consume the reset is the
 * expiry. */
Test(strategy, hit_is_check_then_consume)
{
	for (size_t k = 0; k < SV_NVECTORS; k++) {
		const struct sv_vector *vec = &sv_vectors[k];
		size_t words = rl_strategy_state_words(vec->strategy,
						       vec->count);
		uint64_t *a = calloc(words, sizeof(uint64_t));
		uint64_t *b = calloc(words, sizeof(uint64_t));

		cr_assert(a && b);
		for (size_t i = 0; i < SV_MAX_STEPS && vec->steps[i].cost; i++) {
			const struct sv_step *s = &vec->steps[i];
			struct rl_step p = sv_step_of(vec, s);
			struct rl_verdict va, vb;
			int64_t exp;

			if (s->mode != RL_HIT)
				continue;
			memset(&va, 0xa5, sizeof(va));
			memset(&vb, 0x5a, sizeof(vb));
			rl_strategy_check(&p, a, s->now_ms, &va);
			if (va.allowed)
				rl_strategy_consume(&p, a, s->now_ms, &va);
			else
				rl_strategy_penalize(&p, a, s->now_ms, &va);
			if (va.allowed)
				cr_expect_eq(va.reset_ms, rl_strategy_expiry(&p, a),
					     "%s step %zu", vec->name, i);
			exp = rl_strategy_hit(&p, b, s->now_ms, &vb);
			cr_expect_eq(memcmp(&va, &vb, sizeof(va)), 0,
				     "%s step %zu", vec->name, i);
			cr_expect_eq(memcmp(a, b, words * sizeof(uint64_t)), 0,
				     "%s step %zu", vec->name, i);
			cr_expect_eq(exp, rl_strategy_expiry(&p, b),
				     "%s step %zu", vec->name, i);
		}
		free(a);
		free(b);
	}
}
