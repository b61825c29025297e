/*
 * strategy_vectors.h - strategy test vectors, replayable against any store.
 *
 * Each vector is one limit (strategy, count, period, burst) and a sequence
 * of steps on one key on a virtual clock: at now_ms, a request of cost in
 * mode RL_TEST or RL_HIT, and the exact verdict expected.  Every expected
 * number was worked out by hand from the semantics in rules/strategy.c (the
 * comment beside a step shows the arithmetic), never copied from output.
 *
 * Two runners: run_vectors_pure() drives rl_strategy_check / consume /
 * penalize on a bare state array, and run_vectors_on_store() drives
 * st->ops->apply of any store (memstore here; shared memory and Redis in
 * gateway/ tests), one fresh store per vector, one key per vector.
 * run_vectors_on_store_paired() runs them in batches of two ops, each
 * vector's op beside a companion op on another key that always allows.
 * run_probe_on_store() checks that a store honours rl_store_op.probe (checked
 * with the batch, never written) for every strategy.
 * Include this from a Criterion test file.
 */
#ifndef TESTS_UNIT_STRATEGY_VECTORS_H
#define TESTS_UNIT_STRATEGY_VECTORS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

#define SV_MAX_STEPS 24

struct sv_step {
	int64_t now_ms;
	uint64_t cost;          /* 0 ends the vector */
	enum rl_mode mode;
	int allowed;
	int never;
	uint64_t remaining;
	int64_t reset_ms;
	int64_t retry_ms;
};

struct sv_vector {
	const char *name;
	enum rl_strategy strategy;
	uint64_t count;
	uint64_t period_ms;
	uint64_t burst;
	struct sv_step steps[SV_MAX_STEPS];
};

/* SV_x(now, cost, allowed, never, remaining, reset, retry) */
#define SV_T(...) { sv_step_t_(__VA_ARGS__) }
#define SV_H(...) { sv_step_h_(__VA_ARGS__) }
#define sv_step_t_(now, cost, a, nv, rem, reset, retry) \
	now, cost, RL_TEST, a, nv, rem, reset, retry
#define sv_step_h_(now, cost, a, nv, rem, reset, retry) \
	now, cost, RL_HIT, a, nv, rem, reset, retry

#define SV_PMAX RL_MAX_PERIOD_MS  /* 3 110 400 000 000 ms */

static const struct sv_vector sv_vectors[] = {
	/* ---------------------------------------------------------- */
	{ "fixed-boundaries", RL_FIXED_WINDOW, 3, 1000, 0, {
		SV_T(10000, 1, 1, 0, 3, 11000, 0),   /* fresh: reset now+P */
		SV_H(10000, 1, 1, 0, 2, 11000, 0),   /* window [10000,11000) */
		SV_H(10500, 1, 1, 0, 1, 11000, 0),
		SV_H(10999, 1, 1, 0, 0, 11000, 0),   /* t0+P-1, used 3 */
		SV_H(10999, 1, 0, 0, 0, 11000, 1),   /* retry 11000-10999 */
		SV_H(11000, 1, 1, 0, 2, 12000, 0),   /* t0+P: new window */
		SV_H(11001, 2, 1, 0, 0, 12000, 0),   /* cost 2: used 3 */
		SV_T(11500, 1, 0, 0, 0, 12000, 500),
		SV_H(11999, 1, 0, 0, 0, 12000, 1),
		SV_H(13500, 1, 1, 0, 2, 14500, 0),   /* gap: window at 13500 */
		SV_H(14499, 3, 0, 0, 2, 14500, 1),   /* 1+3 > 3 */
		SV_H(14499, 2, 1, 0, 0, 14500, 0),   /* 1+2 = 3 */
		SV_H(14500, 3, 1, 0, 0, 15500, 0),   /* cost = count */
		SV_H(14500, 4, 0, 1, 0, 15500, 1000), /* cost > count: never */
		SV_H(20000, 4, 0, 1, 3, 21000, 1000), /* never, on no window */
		SV_T(20000, 1, 1, 0, 3, 21000, 0),   /* never consumed nothing */
	} },
	{ "fixed-clock-skew", RL_FIXED_WINDOW, 2, 1000, 0, {
		SV_H(5000, 1, 1, 0, 1, 6000, 0),
		SV_H(4990, 1, 1, 0, 0, 6000, 0),     /* now taken as 5000 */
		SV_T(4990, 1, 0, 0, 0, 6000, 1000),  /* retry 6000-5000 */
		SV_H(6000, 1, 1, 0, 1, 7000, 0),
	} },
	{ "fixed-at-epoch", RL_FIXED_WINDOW, 1, 1000, 0, {
		SV_H(0, 1, 1, 0, 0, 1000, 0),        /* window at t = 0 */
		SV_H(999, 1, 0, 0, 0, 1000, 1),
		SV_H(1000, 1, 1, 0, 0, 2000, 0),
	} },
	/* ---------------------------------------------------------- */
	{ "elastic-extension", RL_FIXED_WINDOW_ELASTIC, 2, 1000, 0, {
		SV_T(50000, 1, 1, 0, 2, 51000, 0),
		SV_H(50000, 1, 1, 0, 1, 51000, 0),   /* end 51000 */
		SV_H(50400, 1, 1, 0, 0, 51400, 0),   /* end moves to 51400 */
		/* denied; check says 400, penalize moves end to 52000 */
		SV_H(51000, 1, 0, 0, 0, 52000, 1000),
		SV_T(51999, 1, 0, 0, 0, 52000, 1),   /* TEST: no extension */
		SV_H(51999, 1, 0, 0, 0, 52999, 1000), /* end 52999 */
		SV_H(52999, 1, 1, 0, 1, 53999, 0),   /* end reached: new */
		/* never on a live window: still extends it, to 54000 */
		SV_H(53000, 3, 0, 1, 1, 54000, 1000),
		SV_T(53999, 1, 1, 0, 1, 54000, 0),   /* used 1, end 54000 */
		SV_H(54000, 2, 1, 0, 0, 55000, 0),   /* dead: new window */
		SV_T(54999, 1, 0, 0, 0, 55000, 1),
		/* skew: last hit was 54000, so 53990 counts as 54000 */
		SV_H(53990, 1, 0, 0, 0, 55000, 1000),
		/* never on a dead window: nothing to extend */
		SV_H(60000, 3, 0, 1, 2, 61000, 1000),
		SV_T(60000, 2, 1, 0, 2, 61000, 0),
	} },
	/* ---------------------------------------------------------- */
	{ "moving-partial-expiry", RL_MOVING_WINDOW, 3, 1000, 0, {
		SV_T(100000, 1, 1, 0, 3, 100000, 0), /* nothing counts: now */
		SV_H(100000, 1, 1, 0, 2, 101000, 0),
		SV_H(100300, 1, 1, 0, 1, 101300, 0),
		SV_H(100600, 1, 1, 0, 0, 101600, 0),
		SV_H(100999, 1, 0, 0, 0, 101600, 1), /* 100000+1000-100999 */
		SV_T(101000, 1, 1, 0, 1, 101600, 0), /* 100000 expired */
		SV_T(101000, 2, 0, 0, 1, 101600, 300), /* needs 100300 gone */
		SV_H(101000, 2, 0, 0, 1, 101600, 300), /* not recorded */
		SV_H(101300, 2, 1, 0, 0, 102300, 0), /* 100600 + 2x101300 */
		SV_T(101599, 1, 0, 0, 0, 102300, 1),
		SV_T(101600, 1, 1, 0, 1, 102300, 0),
		SV_T(101600, 3, 0, 0, 1, 102300, 700), /* 2nd oldest 101300 */
		SV_H(101600, 4, 0, 1, 1, 102300, 1000), /* never */
		SV_T(102300, 1, 1, 0, 3, 102300, 0), /* all expired */
		SV_H(105000, 3, 1, 0, 0, 106000, 0), /* ring restarts */
		SV_H(105999, 1, 0, 0, 0, 106000, 1),
		SV_H(106000, 1, 1, 0, 2, 107000, 0),
	} },
	{ "moving-ring-wrap", RL_MOVING_WINDOW, 4, 100, 0, {
		SV_H(1000, 1, 1, 0, 3, 1100, 0),
		SV_H(1010, 1, 1, 0, 2, 1110, 0),
		SV_H(1020, 1, 1, 0, 1, 1120, 0),
		SV_H(1030, 1, 1, 0, 0, 1130, 0),
		SV_H(1105, 2, 0, 0, 1, 1130, 5),     /* 1000 gone; wait 1010 */
		SV_H(1110, 2, 1, 0, 0, 1210, 0),     /* wraps to slots 0,1 */
		SV_T(1125, 1, 1, 0, 1, 1210, 0),     /* 1030,1110,1110 */
		SV_T(1125, 3, 0, 0, 1, 1210, 85),    /* 2nd oldest: 1110 */
		SV_H(1130, 3, 0, 0, 2, 1210, 80),    /* 1030 gone at 1130 */
		SV_H(1130, 2, 1, 0, 0, 1230, 0),
		SV_T(1209, 1, 0, 0, 0, 1230, 1),
		SV_T(1210, 1, 1, 0, 2, 1230, 0),
		SV_H(1125, 1, 0, 0, 0, 1230, 80),    /* skew: now = 1130 */
	} },
	/* ---------------------------------------------------------- */
	{ "sliding-interpolation", RL_SLIDING_WINDOW, 10, 1000, 0, {
		SV_T(20000, 1, 1, 0, 10, 20000, 0),
		SV_H(20000, 4, 1, 0, 6, 22000, 0),   /* cur 4 */
		SV_H(20500, 6, 1, 0, 0, 22000, 0),   /* cur 10 */
		/* next window, prev 10: 10*(1000-e)+1000 <= 10000 at e=100 */
		SV_H(20999, 1, 0, 0, 0, 22000, 101),
		/* rolled: prev 10 weighs 10000 at e=0 */
		SV_T(21000, 1, 0, 0, 0, 22000, 100),
		SV_H(21100, 1, 1, 0, 0, 23000, 0),   /* 9000 + 1000 */
		SV_T(21250, 1, 1, 0, 1, 23000, 0),   /* 7500+1000 used */
		/* need 3: 10*(1000-e) <= 7000 at e=300 */
		SV_H(21250, 2, 0, 0, 1, 23000, 50),
		SV_H(21300, 2, 1, 0, 0, 23000, 0),   /* 7000+3000 */
		SV_T(21999, 1, 1, 0, 6, 23000, 0),   /* 10*1 + 3000 used */
		SV_H(22000, 7, 1, 0, 0, 24000, 0),   /* prev 3, cur 7 */
		/* 3*(1000-e) <= 2000: 1000-e <= 666, e = 334 */
		SV_H(22000, 1, 0, 0, 0, 24000, 334),
		SV_T(23500, 1, 1, 0, 6, 24000, 0),   /* prev 7 * 500 */
		SV_T(24999, 1, 1, 0, 10, 24999, 0),  /* both windows gone */
		SV_H(25000, 11, 0, 1, 10, 25000, 1000), /* never */
	} },
	{ "sliding-later-windows", RL_SLIDING_WINDOW, 2, 1000, 0, {
		SV_H(30000, 2, 1, 0, 0, 32000, 0),
		/* not this window (4 > 2), nor the next (prev 2 full): 32000 */
		SV_H(30500, 2, 0, 0, 0, 32000, 1500),
		/* prev 2: 2*(1000-e)+1000 <= 2000 at e = 500 */
		SV_H(31000, 1, 0, 0, 0, 32000, 500),
		SV_H(31500, 1, 1, 0, 0, 33000, 0),   /* 1000 + 1000 */
		/* this window full at any e; next: prev 1, fits at e = 0 */
		SV_H(31750, 1, 0, 0, 0, 33000, 250),
		/* prev 1 + cost 2 never fit here; next window prev 0 */
		SV_T(32000, 2, 0, 0, 1, 33000, 1000),
		SV_T(32001, 1, 1, 0, 1, 33000, 0),   /* 999 + 1000 <= 2000 */
		SV_H(32000, 1, 1, 0, 0, 34000, 0),   /* prev 1, cur 1 */
		/* skew: 31999 taken as 32000 (current window start) */
		SV_H(31999, 1, 0, 0, 0, 34000, 1000),
	} },
	{ "sliding-huge-limit", RL_SLIDING_WINDOW, 1000000000, SV_PMAX, 0, {
		SV_H(0, 1, 1, 0, 999999999, 2 * (int64_t)SV_PMAX, 0),
		SV_H(0, 999999999, 1, 0, 0, 2 * (int64_t)SV_PMAX, 0),
		/* next window: 1e9*(P-e) + P <= 1e9*P when P-e <= P-P/1e9,
		 * e >= ceil(P/1e9) = 3111 */
		SV_H(1, 1, 0, 0, 0, 2 * (int64_t)SV_PMAX,
		     (int64_t)SV_PMAX + 3111 - 1),
	} },
	/* ---------------------------------------------------------- */
	{ "gcra-burst-then-rate", RL_GCRA, 10, 60000, 0, {
		/* bucket 10 hits = 600000 units; drains 10 units/ms */
		SV_T(1000000, 1, 1, 0, 10, 1000000, 0),
		SV_H(1000000, 1, 1, 0, 9, 1006000, 0),
		SV_H(1000000, 9, 1, 0, 0, 1060000, 0),
		SV_H(1000000, 1, 0, 0, 0, 1060000, 6000), /* one per 6 s */
		SV_H(1005999, 1, 0, 0, 0, 1060000, 1), /* level 540010 */
		SV_H(1006000, 1, 1, 0, 0, 1066000, 0),
		SV_T(1012000, 2, 0, 0, 1, 1066000, 6000),
		SV_H(1012000, 11, 0, 1, 1, 1066000, 60000), /* never */
		SV_T(1066000, 1, 1, 0, 10, 1066000, 0), /* empty again */
		SV_H(1066000, 10, 1, 0, 0, 1126000, 0),
		SV_T(1065000, 1, 0, 0, 0, 1126000, 6000), /* skew */
	} },
	{ "gcra-smooth", RL_GCRA, 10, 60000, 1, {
		SV_H(2000000, 1, 1, 0, 0, 2006000, 0),
		SV_H(2000001, 1, 0, 0, 0, 2006000, 5999),
		SV_H(2006000, 1, 1, 0, 0, 2012000, 0),
		SV_H(2009000, 1, 0, 0, 0, 2012000, 3000),
		SV_H(2012000, 2, 0, 1, 1, 2012000, 60000), /* 2 > burst 1 */
		SV_H(2012000, 1, 1, 0, 0, 2018000, 0),
	} },
	{ "gcra-uneven", RL_GCRA, 3, 1000, 5, {
		/* bucket 5000 units, drains 3 units/ms */
		SV_H(0, 2, 1, 0, 3, 667, 0),         /* 2000/3 -> 667 */
		SV_H(100, 3, 1, 0, 0, 1667, 0),      /* 1700+3000 = 4700 */
		SV_T(100, 1, 0, 0, 0, 1667, 234),    /* ceil(700/3) */
		SV_T(333, 1, 0, 0, 0, 1667, 1),      /* level 4001 */
		SV_H(334, 1, 1, 0, 0, 2000, 0),      /* 3998+1000 */
		SV_T(1000, 2, 1, 0, 2, 2000, 0),     /* level 3000 */
		SV_H(1000, 6, 0, 1, 2, 2000, 1000),  /* 6 > burst 5 */
		SV_T(5000, 5, 1, 0, 5, 5000, 0),
	} },
	{ "gcra-huge-limit", RL_GCRA, 1000000000, SV_PMAX, 0, {
		/* one hit = P units, drain 1e9/ms: ceil(P/1e9) = 3111 ms */
		SV_H(0, 1, 1, 0, 999999999, 3111, 0),
		/* bucket full: 1e9 * P = 3.1e21 units, beyond 64 bits */
		SV_H(0, 999999999, 1, 0, 0, (int64_t)SV_PMAX, 0),
		SV_T(0, 1, 0, 0, 0, (int64_t)SV_PMAX, 3111),
	} },
};

#define SV_NVECTORS (sizeof(sv_vectors) / sizeof(sv_vectors[0]))

static inline struct rl_step sv_step_of(const struct sv_vector *vec,
					const struct sv_step *s)
{
	struct rl_step p = {
		.strategy = vec->strategy,
		.count = vec->count,
		.period_ms = vec->period_ms,
		.burst = vec->burst,
		.cost = s->cost,
	};
	return p;
}

static inline void sv_expect(const struct sv_vector *vec, size_t i,
			     const struct rl_verdict *v)
{
	const struct sv_step *s = &vec->steps[i];

	cr_expect_eq(v->allowed, s->allowed, "%s step %zu: allowed %d",
		     vec->name, i, v->allowed);
	cr_expect_eq(v->never, s->never, "%s step %zu: never %d",
		     vec->name, i, v->never);
	cr_expect_eq(v->remaining, s->remaining,
		     "%s step %zu: remaining %llu, expected %llu", vec->name,
		     i, (unsigned long long)v->remaining,
		     (unsigned long long)s->remaining);
	cr_expect_eq(v->reset_ms, s->reset_ms,
		     "%s step %zu: reset %lld, expected %lld", vec->name, i,
		     (long long)v->reset_ms, (long long)s->reset_ms);
	cr_expect_eq(v->retry_ms, s->retry_ms,
		     "%s step %zu: retry %lld, expected %lld", vec->name, i,
		     (long long)v->retry_ms, (long long)s->retry_ms);
}

/* The vectors on the pure functions, as a one-op store would run them. */
static inline void run_vectors_pure(void)
{
	for (size_t k = 0; k < SV_NVECTORS; k++) {
		const struct sv_vector *vec = &sv_vectors[k];
		size_t words = rl_strategy_state_words(vec->strategy,
						       vec->count);
		uint64_t *st = calloc(words, sizeof(uint64_t));

		cr_assert_not_null(st);
		for (size_t i = 0; i < SV_MAX_STEPS && vec->steps[i].cost; i++) {
			const struct sv_step *s = &vec->steps[i];
			struct rl_step p = sv_step_of(vec, s);
			struct rl_verdict v;

			memset(&v, 0xa5, sizeof(v));
			rl_strategy_check(&p, st, s->now_ms, &v);
			if (s->mode == RL_HIT) {
				if (v.allowed)
					rl_strategy_consume(&p, st, s->now_ms,
							    &v);
				else
					rl_strategy_penalize(&p, st, s->now_ms,
							     &v);
			}
			sv_expect(vec, i, &v);
		}
		free(st);
	}
}

/* make fills *st with a new, empty store (ctx is passed through) and
 * returns 0; the runner destroys it with st->ops->destroy.  Each vector
 * gets its own store and the key key_prefix + vector name. */
static inline void run_vectors_on_store(int (*make)(struct rl_store *st,
						    void *ctx),
					void *ctx, const char *key_prefix)
{
	for (size_t k = 0; k < SV_NVECTORS; k++) {
		const struct sv_vector *vec = &sv_vectors[k];
		struct rl_store st;
		char key[RL_STORE_KEY_MAX];
		int key_len;

		cr_assert_eq(make(&st, ctx), 0, "%s: make store", vec->name);
		key_len = snprintf(key, sizeof(key), "%s%s", key_prefix,
				   vec->name);
		for (size_t i = 0; i < SV_MAX_STEPS && vec->steps[i].cost; i++) {
			const struct sv_step *s = &vec->steps[i];
			struct rl_store_op op = {
				.key = key,
				.key_len = (size_t)key_len,
				.step = sv_step_of(vec, s),
			};
			struct rl_diag err = { 0, "" };

			memset(&op.v, 0xa5, sizeof(op.v));
			cr_assert_eq(st.ops->apply(st.impl, &op, 1, s->mode,
						   s->now_ms, &err), 0,
				     "%s step %zu: apply: %s", vec->name, i,
				     err.msg);
			sv_expect(vec, i, &op.v);
		}
		st.ops->destroy(st.impl);
	}
}

/* As run_vectors_on_store, but every apply is a batch of two: the
 * vector's op and, on another key, the companion op, which must never be
 * denied.  A store that decides some batches by another route than others
 * (the Redis script's plain and general paths) thus runs the vectors
 * through each of them by the choice of companion; the verdicts must be
 * the same. */
static inline void run_vectors_on_store_paired(int (*make)(struct rl_store *st,
							   void *ctx),
					       void *ctx, const char *key_prefix,
					       struct rl_step companion)
{
	for (size_t k = 0; k < SV_NVECTORS; k++) {
		const struct sv_vector *vec = &sv_vectors[k];
		struct rl_store st;
		char key[RL_STORE_KEY_MAX], other[RL_STORE_KEY_MAX];
		int key_len, other_len;

		cr_assert_eq(make(&st, ctx), 0, "%s: make store", vec->name);
		key_len = snprintf(key, sizeof(key), "%s%s", key_prefix,
				   vec->name);
		other_len = snprintf(other, sizeof(other), "%s%s~pair",
				     key_prefix, vec->name);
		for (size_t i = 0; i < SV_MAX_STEPS && vec->steps[i].cost; i++) {
			const struct sv_step *s = &vec->steps[i];
			struct rl_store_op ops[2] = {
				{ .key = key, .key_len = (size_t)key_len,
				  .step = sv_step_of(vec, s) },
				{ .key = other, .key_len = (size_t)other_len,
				  .step = companion },
			};
			struct rl_diag err = { 0, "" };

			memset(&ops[0].v, 0xa5, sizeof(ops[0].v));
			cr_assert_eq(st.ops->apply(st.impl, ops, 2, s->mode,
						   s->now_ms, &err), 0,
				     "%s step %zu: apply: %s", vec->name, i,
				     err.msg);
			cr_expect(ops[1].v.allowed, "%s step %zu: the pair denied",
				  vec->name, i);
			sv_expect(vec, i, &ops[0].v);
		}
		st.ops->destroy(st.impl);
	}
}

/* ---- one op at a time, for store tests ---- */

/* A limit of count per period, cost 1, no burst. */
static inline struct rl_step sv_limit(enum rl_strategy s, uint64_t count,
				      uint64_t period)
{
	struct rl_step p = { s, count, period, 0, 1 };
	return p;
}

/* One op on key in mode; its verdict in *v (when not NULL).  Returns
 * apply's result. */
static inline int sv_one(struct rl_store *st, const char *key,
			 struct rl_step p, enum rl_mode mode, int64_t now,
			 struct rl_verdict *v, struct rl_diag *err)
{
	struct rl_store_op o = { key, strlen(key), p, { 0, 0, 0, 0, 0 }, 0 };
	int r = st->ops->apply(st->impl, &o, 1, mode, now, err);

	if (v)
		*v = o.v;
	return r;
}

/* A hit that must not fail; its verdict. */
static inline struct rl_verdict sv_hit(struct rl_store *st, const char *key,
				       struct rl_step p, int64_t now)
{
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };

	cr_assert_eq(sv_one(st, key, p, RL_HIT, now, &v, &err), 0, "%s: %s",
		     key, err.msg);
	return v;
}

/* What a test (no hit) says remains. */
static inline uint64_t sv_remaining(struct rl_store *st, const char *key,
				    struct rl_step p, int64_t now)
{
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };

	cr_assert_eq(sv_one(st, key, p, RL_TEST, now, &v, &err), 0, "%s",
		     err.msg);
	return v.remaining;
}

/* A batch of three limits on st at t0 and after (the store must be
 * empty): all or nothing (a denial consumes nothing, the elastic windows
 * still move, also one whose own limit allowed), the same key twice in one batch counted twice, and a key
 * with two layouts in one batch refused. */
static inline void sv_batch_vector(struct rl_store *st, int64_t t0)
{
	struct rl_store_op ops[3] = {
		{ "a", 1, sv_limit(RL_FIXED_WINDOW, 5, 60000), { 0 }, 0 },
		{ "b", 1, sv_limit(RL_FIXED_WINDOW_ELASTIC, 1, 60000), { 0 }, 0 },
		{ "m", 1, sv_limit(RL_MOVING_WINDOW, 10, 60000), { 0 }, 0 },
	};
	struct rl_diag err = { 0, "" };

	cr_assert_eq(st->ops->apply(st->impl, ops, 3, RL_HIT, t0, &err), 0,
		     "%s", err.msg);
	cr_expect(ops[0].v.allowed && ops[1].v.allowed && ops[2].v.allowed);
	/* b denies: nothing is consumed, and b's elastic window moves */
	cr_assert_eq(st->ops->apply(st->impl, ops, 3, RL_HIT, t0 + 1000, &err),
		     0);
	cr_expect_eq(ops[0].v.allowed, 1);
	cr_expect_eq(ops[1].v.allowed, 0);
	cr_expect_eq(ops[1].v.reset_ms, t0 + 61000);
	cr_expect_eq(sv_remaining(st, "a", ops[0].step, t0 + 1000), 4);
	cr_expect_eq(sv_remaining(st, "m", ops[2].step, t0 + 1000), 9);
	/* an elastic limit that allows, in a batch another limit denies:
	 * nothing is consumed, but its window still moves (it was hit) */
	struct rl_store_op ef[2] = {
		{ "e2", 2, sv_limit(RL_FIXED_WINDOW_ELASTIC, 5, 60000), { 0 }, 0 },
		{ "f2", 2, sv_limit(RL_FIXED_WINDOW, 1, 60000), { 0 }, 0 },
	};
	cr_assert_eq(st->ops->apply(st->impl, ef, 2, RL_HIT, t0 + 3000, &err),
		     0);
	cr_expect(ef[0].v.allowed && ef[1].v.allowed);
	cr_assert_eq(st->ops->apply(st->impl, ef, 2, RL_HIT, t0 + 4000, &err),
		     0);
	cr_expect_eq(ef[0].v.allowed, 1);
	cr_expect_eq(ef[0].v.remaining, 4);
	cr_expect_eq(ef[0].v.reset_ms, t0 + 64000);
	cr_expect_eq(ef[0].v.retry_ms, 0);
	cr_expect_eq(ef[1].v.allowed, 0);
	cr_expect_eq(sv_remaining(st, "e2", ef[0].step, t0 + 4000), 4);
	/* past the first end (t0 + 63000), before the moved one */
	cr_expect_eq(sv_remaining(st, "e2", ef[0].step, t0 + 63500), 4);
	/* the same key twice counts twice, checked as the batch goes */
	struct rl_store_op dup[2] = {
		{ "m", 1, sv_limit(RL_MOVING_WINDOW, 10, 60000), { 0 }, 0 },
		{ "m", 1, sv_limit(RL_MOVING_WINDOW, 10, 60000), { 0 }, 0 },
	};
	dup[1].step.cost = 8;
	cr_assert_eq(st->ops->apply(st->impl, dup, 2, RL_HIT, t0 + 2000, &err),
		     0);
	cr_expect_eq(dup[0].v.allowed, 1);
	cr_expect_eq(dup[1].v.allowed, 1);
	cr_expect_eq(dup[1].v.remaining, 0);
	cr_expect_eq(sv_remaining(st, "m", dup[0].step, t0 + 2000), 0);
	dup[1].step.count = 11;
	cr_expect_eq(st->ops->apply(st->impl, dup, 2, RL_HIT, t0, &err), -1);
	cr_expect_str_eq(err.msg, "one key with two strategies or counts in one batch");
}

/* ---- probes ---- */

static inline void sv_apply(struct rl_store *st, struct rl_store_op *ops,
			    size_t n, enum rl_mode mode, int64_t now,
			    const char *what)
{
	struct rl_diag err = { 0, "" };

	cr_assert_eq(st->ops->apply(st->impl, ops, n, mode, now, &err), 0,
		     "%s: apply: %s", what, err.msg);
}

static inline struct rl_verdict sv_look(struct rl_store *st, const char *key,
					struct rl_step p, int64_t now)
{
	struct rl_store_op op = { key, strlen(key), p, { 0, 0, 0, 0, 0 }, 0 };

	op.step.cost = 1;
	sv_apply(st, &op, 1, RL_TEST, now, key);
	return op.v;
}

/* For every strategy, with a limit of 2 per minute: a probe is checked
 * with its batch (and can deny it) but never consumed, never penalized
 * (elastic windows do not move) and creates no key.  nkeys (may be NULL)
 * counts the keys a store holds. */
static inline void run_probe_on_store(int (*make)(struct rl_store *st,
						   void *ctx),
				      void *ctx,
				      size_t (*nkeys)(struct rl_store *st))
{
	const int64_t t = 1700000000000LL;

	for (unsigned s = 0; s < RL_STRATEGY_COUNT; s++) {
		struct rl_step p = { (enum rl_strategy)s, 2, 60000, 0, 1 };
		const char *name = rl_strategy_name((enum rl_strategy)s);
		struct rl_store st;
		struct rl_verdict v;

		cr_assert_eq(make(&st, ctx), 0, "%s: make store", name);

		/* alone, on a fresh key: allowed, nothing written */
		struct rl_store_op a = { "probe:b", 7, p, { 0, 0, 0, 0, 0 }, 1 };
		for (int i = 0; i < 3; i++) {
			sv_apply(&st, &a, 1, RL_HIT, t, name);
			cr_expect(a.v.allowed, "%s: lone probe denied", name);
			cr_expect_eq(a.v.remaining, 2, "%s: lone probe remaining %llu",
				     name, (unsigned long long)a.v.remaining);
		}
		if (nkeys)
			cr_expect_eq(nkeys(&st), 0, "%s: a probe created a key", name);

		/* with a counted op: that one is consumed, the probe is not */
		struct rl_store_op two[2] = {
			{ "probe:a", 7, p, { 0, 0, 0, 0, 0 }, 0 },
			{ "probe:b", 7, p, { 0, 0, 0, 0, 0 }, 1 },
		};
		sv_apply(&st, two, 2, RL_HIT, t, name);
		cr_expect(two[0].v.allowed && two[1].v.allowed, "%s", name);
		cr_expect_eq(sv_look(&st, "probe:a", p, t).remaining, 1, "%s", name);
		cr_expect_eq(sv_look(&st, "probe:b", p, t).remaining, 2, "%s", name);
		if (nkeys)
			cr_expect_eq(nkeys(&st), 1, "%s: keys", name);

		/* exhaust b; now the probe denies the batch: a is not
		 * consumed, b is not penalized */
		struct rl_store_op b = { "probe:b", 7, p, { 0, 0, 0, 0, 0 }, 0 };
		b.step.cost = 2;
		sv_apply(&st, &b, 1, RL_HIT, t, name);
		cr_expect(b.v.allowed, "%s", name);
		struct rl_verdict before = sv_look(&st, "probe:b", p, t + 1000);
		cr_expect(!before.allowed, "%s", name);
		sv_apply(&st, two, 2, RL_HIT, t + 1000, name);
		cr_expect(two[0].v.allowed, "%s", name);
		cr_expect(!two[1].v.allowed, "%s: the probe must deny", name);
		cr_expect_eq(two[1].v.retry_ms, before.retry_ms, "%s", name);
		v = sv_look(&st, "probe:a", p, t + 1000);
		cr_expect_eq(v.remaining, 1, "%s: a consumed by a denied batch", name);
		v = sv_look(&st, "probe:b", p, t + 1000);
		cr_expect_eq(v.reset_ms, before.reset_ms,
			     "%s: the probe moved b's reset %lld -> %lld", name,
			     (long long)before.reset_ms, (long long)v.reset_ms);
		cr_expect_eq(v.retry_ms, before.retry_ms, "%s", name);

		/* a probe after a counted op on the same key sees that op's
		 * hit, and adds none */
		struct rl_store_op dup[3] = {
			{ "probe:c", 7, p, { 0, 0, 0, 0, 0 }, 0 },
			{ "probe:c", 7, p, { 0, 0, 0, 0, 0 }, 1 },
			{ "probe:c", 7, p, { 0, 0, 0, 0, 0 }, 1 },
		};
		sv_apply(&st, dup, 3, RL_HIT, t, name);
		cr_expect(dup[0].v.allowed && dup[1].v.allowed && dup[2].v.allowed,
			  "%s", name);
		cr_expect_eq(dup[1].v.remaining, 1, "%s", name);
		cr_expect_eq(dup[2].v.remaining, 1, "%s", name);
		cr_expect_eq(sv_look(&st, "probe:c", p, t).remaining, 1, "%s", name);
		dup[0].step.cost = 1;
		dup[1].step.cost = 2;   /* more than is left: denies */
		sv_apply(&st, dup, 2, RL_HIT, t, name);
		cr_expect(!dup[1].v.allowed, "%s", name);
		cr_expect_eq(sv_look(&st, "probe:c", p, t).remaining, 1, "%s", name);

		st.ops->destroy(st.impl);
	}
}

#endif
