/*
 * strategy.c - the rate-limiting strategies as pure steps over small integer
 * state, and the in-flight (concurrency) counter.
 *
 * Every strategy keeps a key's state in a few uint64_t words and offers the
 * same four operations: check (a verdict, no change), consume (count an
 * allowed hit), penalize (the side effects of a denied hit) and expiry (when
 * the state becomes equivalent to a fresh one).  A store only has to run a
 * step on one key atomically, so every strategy works on every store.  An
 * all-zero state is a fresh key.  All arithmetic is exact integer arithmetic
 * in milliseconds and hits; products that can exceed 64 bits (count * period
 * reaches 1e9 * 3.1e12) are taken in unsigned __int128.
 *
 * Time never runs backwards for a key: the clocks of two processes sharing a
 * store may disagree by a little, so when now_ms is earlier than a time
 * recorded in the state (window start, newest hit, last drain), the step
 * runs as if now were that recorded time.  Every verdict, retry_ms
 * included, is computed at that effective now.  A negative now_ms is taken
 * as 0 (the state stores unsigned milliseconds).
 *
 * Preconditions (the parser and the stores guarantee them): count and
 * period_ms >= 1, cost >= 1, count <= RL_MAX_COUNT, period_ms <=
 * RL_MAX_PERIOD_MS; state has rl_strategy_state_words() words.
 *
 * Layouts (words):
 *   fixed-window            [window_start_ms, used]
 *   fixed-window-elastic    [window_end_ms, used]
 *   moving-window           [n, head, ts[count]]   ring of hit times, oldest
 *                                                 at head, in time order
 *   sliding-window-counter  [cur_start_ms, prev, cur]
 *   gcra                    [t_last_ms, level_lo, level_hi]
 *   in-flight               [n, (expiry_ms, lease_id) * max]
 *
 * The GCRA level is a 128-bit number in two words: in its units one hit is
 * period_ms and the bucket drains count units per ms, so a full bucket
 * holds burst * period_ms units, which exceeds 64 bits for the largest
 * limits the parser accepts (1e9 hits per 100 years).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "rules.h"

#include <string.h>

static const char *const strategy_names[RL_STRATEGY_COUNT] = {
	[RL_FIXED_WINDOW] = "fixed-window",
	[RL_FIXED_WINDOW_ELASTIC] = "fixed-window-elastic-expiry",
	[RL_MOVING_WINDOW] = "moving-window",
	[RL_SLIDING_WINDOW] = "sliding-window-counter",
	[RL_GCRA] = "gcra",
};

/* Returns "unknown" for a value outside the enum, so that it can always be
 * printed. */
const char *rl_strategy_name(enum rl_strategy s)
{
	if ((unsigned)s >= RL_STRATEGY_COUNT)
		return "unknown";
	return strategy_names[s];
}

/* Exact, case-sensitive match of one of the names above. */
int rl_strategy_from_name(const char *name, size_t len, enum rl_strategy *s)
{
	for (unsigned i = 0; i < RL_STRATEGY_COUNT; i++) {
		const char *n = strategy_names[i];
		if (strlen(n) == len && memcmp(n, name, len) == 0) {
			*s = (enum rl_strategy)i;
			return 0;
		}
	}
	return -1;
}

size_t rl_strategy_state_words(enum rl_strategy s, uint64_t count)
{
	switch (s) {
	case RL_FIXED_WINDOW:
	case RL_FIXED_WINDOW_ELASTIC:
		return 2;
	case RL_MOVING_WINDOW:
		return (size_t)count + 2;
	case RL_SLIDING_WINDOW:
	case RL_GCRA:
		return 3;
	default:
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* The effective now: now_ms, but never before a time stored in the state
 * (see the top of the file). */
static uint64_t effective_now(int64_t now_ms, uint64_t stored_ms)
{
	uint64_t t = now_ms < 0 ? 0 : (uint64_t)now_ms;

	return t < stored_ms ? stored_ms : t;
}

/* An absolute or relative time in ms as the verdict's int64_t, saturating
 * rather than wrapping for absurd states. */
static int64_t ms_out(unsigned __int128 ms)
{
	return ms > (unsigned __int128)INT64_MAX ? INT64_MAX : (int64_t)ms;
}

static uint64_t u64_sat(unsigned __int128 x)
{
	return x > (unsigned __int128)UINT64_MAX ? UINT64_MAX : (uint64_t)x;
}

/* a / b, in 64 bits when both fit: a 128-bit division is a library call
 * (__udivmodti4) costing more than the rest of a step. */
static unsigned __int128 div128(unsigned __int128 a, unsigned __int128 b)
{
	if ((a >> 64) == 0 && (b >> 64) == 0)
		return (uint64_t)a / (uint64_t)b;
	return a / b;
}

static unsigned __int128 ceil_div(unsigned __int128 a, unsigned __int128 b)
{
	if ((a >> 64) == 0 && (b >> 64) == 0) {
		uint64_t x = (uint64_t)a, y = (uint64_t)b;
		return x / y + (x % y != 0);
	}
	return a / b + (a % b != 0);
}

/* The common part of every verdict that a hit costing more than the whole
 * limit gets: it is never allowed, and retry_ms is one period, the soonest
 * a client should bother asking again (there is no exact answer). */
static void deny_never(const struct rl_step *p, struct rl_verdict *v)
{
	v->allowed = 0;
	v->never = 1;
	v->retry_ms = ms_out(p->period_ms);
}

static void allow(struct rl_verdict *v)
{
	v->allowed = 1;
	v->never = 0;
	v->retry_ms = 0;
}

static void deny(struct rl_verdict *v, unsigned __int128 retry_ms)
{
	v->allowed = 0;
	v->never = 0;
	v->retry_ms = retry_ms < 1 ? 1 : ms_out(retry_ms);
}

/* ------------------------------------------------------------------ */
/* fixed-window: [window_start_ms, used]                               */

/* The live window at the effective now *t: a window opened at t0 covers
 * [t0, t0 + period).  A dead window counts as no window (used 0), and then
 * the window a hit would open ends at t + period. */
static void fixed_view(const struct rl_step *p, const uint64_t *st,
		       int64_t now_ms, uint64_t *t, uint64_t *used,
		       uint64_t *end)
{
	*t = effective_now(now_ms, st[1] ? st[0] : 0);
	if (st[1] && *t - st[0] < p->period_ms) {
		*used = st[1];
		*end = st[0] + p->period_ms;
	} else {
		*used = 0;
		*end = *t + p->period_ms;
	}
}

/* Shared by both fixed windows: used hits in a window ending at end. */
static void window_verdict(const struct rl_step *p, uint64_t t, uint64_t used,
			   uint64_t end, struct rl_verdict *v)
{
	v->remaining = used < p->count ? p->count - used : 0;
	v->reset_ms = ms_out(end);
	if (p->cost > p->count)
		deny_never(p, v);
	else if (used + p->cost <= p->count)
		allow(v);
	else
		deny(v, end - t);
}

static void fixed_check(const struct rl_step *p, const uint64_t *st,
			int64_t now_ms, struct rl_verdict *v)
{
	uint64_t t, used, end;

	fixed_view(p, st, now_ms, &t, &used, &end);
	window_verdict(p, t, used, end, v);
}

/* The hit taken on the view (used, end) of st: what consume and hit
 * write once they know it is allowed. */
static void fixed_take(const struct rl_step *p, uint64_t *st, uint64_t used,
		       uint64_t end, struct rl_verdict *v)
{
	st[0] = end - p->period_ms;
	st[1] = used + p->cost;
	v->remaining = st[1] < p->count ? p->count - st[1] : 0;
	v->reset_ms = ms_out(end);
	allow(v);
}

static void fixed_consume(const struct rl_step *p, uint64_t *st,
			  int64_t now_ms, struct rl_verdict *v)
{
	uint64_t t, used, end;

	fixed_view(p, st, now_ms, &t, &used, &end);
	fixed_take(p, st, used, end, v);
}

/* ------------------------------------------------------------------ */
/* fixed-window-elastic-expiry: [window_end_ms, used]                   */

/* Every hit moves the end to its time + period, so the latest hit was at
 * end - period: that is the stored time now must not precede. */
static void elastic_view(const struct rl_step *p, const uint64_t *st,
			 int64_t now_ms, uint64_t *t, uint64_t *used,
			 uint64_t *end)
{
	uint64_t last = 0;

	if (st[1] && st[0] >= p->period_ms)
		last = st[0] - p->period_ms;
	*t = effective_now(now_ms, last);
	if (st[1] && *t < st[0]) {
		*used = st[1];
		*end = st[0];
	} else {
		*used = 0;
		*end = *t + p->period_ms;
	}
}

static void elastic_check(const struct rl_step *p, const uint64_t *st,
			  int64_t now_ms, struct rl_verdict *v)
{
	uint64_t t, used, end;

	elastic_view(p, st, now_ms, &t, &used, &end);
	window_verdict(p, t, used, end, v);
}

/* The hit taken on the view (t, used) of st. */
static void elastic_take(const struct rl_step *p, uint64_t *st, uint64_t t,
			 uint64_t used, struct rl_verdict *v)
{
	st[0] = t + p->period_ms;
	st[1] = used + p->cost;
	v->remaining = st[1] < p->count ? p->count - st[1] : 0;
	v->reset_ms = ms_out(st[0]);
	allow(v);
}

static void elastic_consume(const struct rl_step *p, uint64_t *st,
			    int64_t now_ms, struct rl_verdict *v)
{
	uint64_t t, used, end;

	elastic_view(p, st, now_ms, &t, &used, &end);
	elastic_take(p, st, t, used, v);
}

/* A denied hit on a live window pushes its end to now + period; the hit is
 * then allowed no sooner than that (retry_ms = period).  A fresh or dead
 * window has nothing to extend: the state stays fresh, and check already
 * gave reset = now + period.  An op that its own limit allowed but the
 * batch denied keeps allowed = 1 and retry_ms = 0; only its reset moves. */
static void elastic_penalize(const struct rl_step *p, uint64_t *st,
			     int64_t now_ms, struct rl_verdict *v)
{
	uint64_t t, used, end;

	elastic_view(p, st, now_ms, &t, &used, &end);
	if (used)
		st[0] = t + p->period_ms;
	v->reset_ms = ms_out(t + p->period_ms);
	if (!v->allowed)
		v->retry_ms = ms_out(p->period_ms);
}

/* ------------------------------------------------------------------ */
/* moving-window: [n, head, ts[count]]                                 */

/* A hit made at ts counts while now < ts + period: the window is
 * (now - period, now], half-open so that a hit stops counting exactly one
 * period after it was made, as in the fixed window.  Denied hits are not
 * recorded; a hit of cost c records c timestamps. */
struct ring {
	uint64_t n, head, cap;
	const uint64_t *ts;
};

/* The i-th oldest recorded hit. */
static uint64_t ring_at(const struct ring *r, uint64_t i)
{
	uint64_t k = r->head + i;

	return r->ts[k >= r->cap ? k - r->cap : k];
}

/* Reads only words 0 and 1 when n is 0, so a fresh key may be passed as a
 * short all-zero array (the memstore relies on this).  A state that does
 * not fit the count (corrupt, or written for another count) reads as
 * empty. */
static void ring_open(const struct rl_step *p, const uint64_t *st,
		      struct ring *r)
{
	r->n = st[0];
	r->head = st[1];
	r->cap = p->count;
	r->ts = st + 2;
	if (r->n > r->cap || (r->n && r->head >= r->cap))
		r->n = r->head = 0;
}

/* Index of the oldest hit still counting at t (n when none does): the ring
 * is in time order, so a binary search. */
static uint64_t ring_first_live(const struct rl_step *p, const struct ring *r,
				uint64_t t)
{
	uint64_t lo = 0, hi = r->n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (t - ring_at(r, mid) >= p->period_ms)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void moving_check(const struct rl_step *p, const uint64_t *st,
			 int64_t now_ms, struct rl_verdict *v)
{
	struct ring r;
	uint64_t t, first, live;

	ring_open(p, st, &r);
	t = effective_now(now_ms, r.n ? ring_at(&r, r.n - 1) : 0);
	first = ring_first_live(p, &r, t);
	live = r.n - first;
	v->remaining = p->count - live;
	/* Back to the full count when the newest counted hit expires; with
	 * nothing counting the key already is. */
	v->reset_ms = ms_out(live ? (unsigned __int128)ring_at(&r, r.n - 1) +
			     p->period_ms : t);
	if (p->cost > p->count) {
		deny_never(p, v);
	} else if (live + p->cost <= p->count) {
		allow(v);
	} else {
		/* The (live + cost - count)-th oldest counted hit must expire. */
		uint64_t k = first + (live + p->cost - p->count) - 1;
		deny(v, (unsigned __int128)ring_at(&r, k) + p->period_ms - t);
	}
}

static void moving_consume(const struct rl_step *p, uint64_t *st,
			   int64_t now_ms, struct rl_verdict *v)
{
	struct ring r;
	uint64_t t, first, n, head;

	ring_open(p, st, &r);
	t = effective_now(now_ms, r.n ? ring_at(&r, r.n - 1) : 0);
	first = ring_first_live(p, &r, t);
	n = r.n - first;
	head = n ? (r.head + first) % r.cap : 0;
	for (uint64_t c = 0; c < p->cost && n < r.cap; c++, n++) {
		uint64_t k = head + n;
		st[2 + (k >= r.cap ? k - r.cap : k)] = t;
	}
	st[0] = n;
	st[1] = head;
	v->remaining = p->count - n;
	v->reset_ms = ms_out((unsigned __int128)t + p->period_ms);
	allow(v);
}

/* ------------------------------------------------------------------ */
/* sliding-window-counter: [cur_start_ms, prev, cur]                    */

/* Windows are aligned to multiples of period since the epoch (as HAProxy
 * and the Python `limits` library do); the previous window's count weighs
 * (period - e) / period, e being the ms elapsed in the current window. */
struct sliding {
	uint64_t t, start, prev, cur, e;
};

static void sliding_roll(const struct rl_step *p, const uint64_t *st,
			 int64_t now_ms, struct sliding *s)
{
	uint64_t P = p->period_ms;

	s->t = effective_now(now_ms, st[0]);
	s->prev = st[1];
	s->cur = st[2];
	/* st[0] is a window's start, a multiple of P (0 for a new key), so
	 * the current window's start needs a division only once the stored
	 * one and the next are both over */
	if (s->t - st[0] >= 2 * P) {
		s->prev = s->cur = 0;
		s->start = s->t - s->t % P;
	} else if (s->t - st[0] >= P) {
		s->prev = s->cur;
		s->cur = 0;
		s->start = st[0] + P;
	} else {
		s->start = st[0];
	}
	s->e = s->t - s->start;
}

/* Hits of cost 1 still allowed: floor((count*P - prev*(P-e) - cur*P) / P),
 * at least 0. */
static uint64_t sliding_remaining(const struct rl_step *p,
				  const struct sliding *s)
{
	unsigned __int128 P = p->period_ms;
	unsigned __int128 cap = p->count * P;
	unsigned __int128 used = s->prev * (P - s->e) + s->cur * P;

	if (s->prev == 0)       /* the common case, without a division */
		return s->cur >= p->count ? 0 : p->count - s->cur;
	return used >= cap ? 0 : u64_sat(div128(cap - used, P));
}

static uint64_t sliding_reset(const struct rl_step *p, const struct sliding *s)
{
	if (s->cur)
		return s->start + 2 * p->period_ms;
	if (s->prev)
		return s->start + p->period_ms;
	return s->t;
}

/* The first ms offset e' in [0, P) of a window at which a previous count
 * prev leaves room for a current count of need: prev * (P - e') <=
 * (count - need) * P, i.e. P - e' <= floor(room / prev).  Returns P when no
 * such offset exists. */
static uint64_t sliding_first_fit(const struct rl_step *p, uint64_t prev,
				  uint64_t need)
{
	unsigned __int128 P = p->period_ms, q;

	if (need > p->count)
		return p->period_ms;
	if (prev == 0)
		return 0;
	q = div128((p->count - need) * P, prev);
	return q >= P ? 0 : (uint64_t)(P - q);
}

static void sliding_check(const struct rl_step *p, const uint64_t *st,
			  int64_t now_ms, struct rl_verdict *v)
{
	unsigned __int128 P = p->period_ms;
	struct sliding s;

	sliding_roll(p, st, now_ms, &s);
	v->remaining = sliding_remaining(p, &s);
	v->reset_ms = ms_out(sliding_reset(p, &s));
	if (p->cost > p->count) {
		deny_never(p, v);
	} else if (s.prev * (P - s.e) + (s.cur + (unsigned __int128)p->cost) *
		   P <= p->count * P) {
		allow(v);
	} else {
		/* Assuming no other hits: later in this window (prev decays),
		 * else in the next (cur becomes prev), else the one after. */
		unsigned __int128 at;
		uint64_t e1 = sliding_first_fit(p, s.prev,
						 s.cur + p->cost > p->count ?
						 p->count + 1 : s.cur + p->cost);

		if (e1 < s.e)
			e1 = s.e;
		if (e1 < P) {
			at = (unsigned __int128)s.start + e1;
		} else {
			e1 = sliding_first_fit(p, s.cur, p->cost);
			if (e1 < P)
				at = (unsigned __int128)s.start + P + e1;
			else
				at = (unsigned __int128)s.start + 2 * P;
		}
		deny(v, at - s.t);
	}
}

/* The hit taken on the rolled view s of st. */
static void sliding_take(const struct rl_step *p, uint64_t *st,
			 struct sliding *s, struct rl_verdict *v)
{
	s->cur += p->cost;
	st[0] = s->start;
	st[1] = s->prev;
	st[2] = s->cur;
	v->remaining = sliding_remaining(p, s);
	v->reset_ms = ms_out(sliding_reset(p, s));
	allow(v);
}

static void sliding_consume(const struct rl_step *p, uint64_t *st,
			    int64_t now_ms, struct rl_verdict *v)
{
	struct sliding s;

	sliding_roll(p, st, now_ms, &s);
	sliding_take(p, st, &s, v);
}

/* ------------------------------------------------------------------ */
/* gcra: [t_last_ms, level_lo, level_hi]                               */

/* A token bucket of burst hits (count when burst is 0) refilled at count
 * hits per period, kept as the level of a leaky bucket: one hit adds
 * period units, and the bucket drains count units per ms, so every
 * quantity is an integer.  "10/minute" allows 10 at once, then one every
 * 6 s; burst 1 spaces hits perfectly evenly. */
struct gcra {
	uint64_t t;
	unsigned __int128 level, cap, hit;
};

static void gcra_view(const struct rl_step *p, const uint64_t *st,
		      int64_t now_ms, struct gcra *g)
{
	unsigned __int128 level = st[1] | (unsigned __int128)st[2] << 64;
	unsigned __int128 drained;

	g->t = effective_now(now_ms, st[0]);
	drained = (unsigned __int128)(g->t - st[0]) * p->count;
	g->level = level > drained ? level - drained : 0;
	g->cap = (unsigned __int128)(p->burst ? p->burst : p->count) *
		 p->period_ms;
	g->hit = (unsigned __int128)p->cost * p->period_ms;
}

static void gcra_fill(const struct rl_step *p, const struct gcra *g,
		      struct rl_verdict *v)
{
	v->remaining = g->level >= g->cap ? 0 :
		       u64_sat(div128(g->cap - g->level, p->period_ms));
	v->reset_ms = ms_out(g->t + ceil_div(g->level, p->count));
}

static void gcra_check(const struct rl_step *p, const uint64_t *st,
		       int64_t now_ms, struct rl_verdict *v)
{
	struct gcra g;

	gcra_view(p, st, now_ms, &g);
	gcra_fill(p, &g, v);
	if (g.hit > g.cap)
		deny_never(p, v);
	else if (g.level + g.hit <= g.cap)
		allow(v);
	else
		deny(v, ceil_div(g.level + g.hit - g.cap, p->count));
}

/* The hit taken on the view g of st. */
static void gcra_take(const struct rl_step *p, uint64_t *st, struct gcra *g,
		      struct rl_verdict *v)
{
	g->level += g->hit;
	st[0] = g->t;
	st[1] = (uint64_t)g->level;
	st[2] = (uint64_t)(g->level >> 64);
	gcra_fill(p, g, v);
	allow(v);
}

static void gcra_consume(const struct rl_step *p, uint64_t *st,
			 int64_t now_ms, struct rl_verdict *v)
{
	struct gcra g;

	gcra_view(p, st, now_ms, &g);
	gcra_take(p, st, &g, v);
}

/* ------------------------------------------------------------------ */
/* Check and consume in one step (rl_strategy_hit)                     */

/* Each of these takes the hit when check would allow it, from one view of
 * the state instead of check's and consume's two (the same *_take as
 * consume), and returns 1; it returns 0 having changed nothing otherwise.
 * v is then as consume leaves it. */

static int fixed_hit(const struct rl_step *p, uint64_t *st, int64_t now_ms,
		     struct rl_verdict *v)
{
	uint64_t t, used, end;

	fixed_view(p, st, now_ms, &t, &used, &end);
	if (p->cost > p->count || used + p->cost > p->count)
		return 0;
	fixed_take(p, st, used, end, v);
	return 1;
}

static int elastic_hit(const struct rl_step *p, uint64_t *st, int64_t now_ms,
		       struct rl_verdict *v)
{
	uint64_t t, used, end;

	elastic_view(p, st, now_ms, &t, &used, &end);
	if (p->cost > p->count || used + p->cost > p->count)
		return 0;
	elastic_take(p, st, t, used, v);
	return 1;
}

static int sliding_hit(const struct rl_step *p, uint64_t *st, int64_t now_ms,
		       struct rl_verdict *v)
{
	unsigned __int128 P = p->period_ms;
	struct sliding s;

	sliding_roll(p, st, now_ms, &s);
	if (p->cost > p->count ||
	    s.prev * (P - s.e) + (s.cur + (unsigned __int128)p->cost) * P >
	    p->count * P)
		return 0;
	sliding_take(p, st, &s, v);
	return 1;
}

static int gcra_hit(const struct rl_step *p, uint64_t *st, int64_t now_ms,
		    struct rl_verdict *v)
{
	struct gcra g;

	gcra_view(p, st, now_ms, &g);
	if (g.hit > g.cap || g.level + g.hit > g.cap)
		return 0;
	gcra_take(p, st, &g, v);
	return 1;
}

int64_t rl_strategy_hit(const struct rl_step *p, uint64_t *state,
			int64_t now_ms, struct rl_verdict *v)
{
	int done;

	switch (p->strategy) {
	case RL_FIXED_WINDOW:
		done = fixed_hit(p, state, now_ms, v);
		break;
	case RL_FIXED_WINDOW_ELASTIC:
		done = elastic_hit(p, state, now_ms, v);
		break;
	case RL_SLIDING_WINDOW:
		done = sliding_hit(p, state, now_ms, v);
		break;
	case RL_GCRA:
		done = gcra_hit(p, state, now_ms, v);
		break;
	default:
		done = 0;
		break;
	}
	/* After a consume the reset is the expiry: the key is back to its
	 * full count exactly when its state is fresh again. */
	if (done)
		return v->reset_ms;
	rl_strategy_check(p, state, now_ms, v);
	if (v->allowed) {
		rl_strategy_consume(p, state, now_ms, v);
		return v->reset_ms;
	}
	rl_strategy_penalize(p, state, now_ms, v);
	return rl_strategy_expiry(p, state);
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */

void rl_strategy_check(const struct rl_step *p, const uint64_t *state,
		       int64_t now_ms, struct rl_verdict *v)
{
	switch (p->strategy) {
	case RL_FIXED_WINDOW:
		fixed_check(p, state, now_ms, v);
		break;
	case RL_FIXED_WINDOW_ELASTIC:
		elastic_check(p, state, now_ms, v);
		break;
	case RL_MOVING_WINDOW:
		moving_check(p, state, now_ms, v);
		break;
	case RL_SLIDING_WINDOW:
		sliding_check(p, state, now_ms, v);
		break;
	case RL_GCRA:
		gcra_check(p, state, now_ms, v);
		break;
	default:
		/* Not a strategy: deny rather than allow silently. */
		memset(v, 0, sizeof(*v));
		v->never = 1;
		v->retry_ms = 1;
		break;
	}
}

void rl_strategy_consume(const struct rl_step *p, uint64_t *state,
			 int64_t now_ms, struct rl_verdict *v)
{
	switch (p->strategy) {
	case RL_FIXED_WINDOW:
		fixed_consume(p, state, now_ms, v);
		break;
	case RL_FIXED_WINDOW_ELASTIC:
		elastic_consume(p, state, now_ms, v);
		break;
	case RL_MOVING_WINDOW:
		moving_consume(p, state, now_ms, v);
		break;
	case RL_SLIDING_WINDOW:
		sliding_consume(p, state, now_ms, v);
		break;
	case RL_GCRA:
		gcra_consume(p, state, now_ms, v);
		break;
	default:
		break;
	}
}

void rl_strategy_penalize(const struct rl_step *p, uint64_t *state,
			  int64_t now_ms, struct rl_verdict *v)
{
	if (p->strategy == RL_FIXED_WINDOW_ELASTIC)
		elastic_penalize(p, state, now_ms, v);
}

int64_t rl_strategy_expiry(const struct rl_step *p, const uint64_t *state)
{
	uint64_t P = p->period_ms;

	switch (p->strategy) {
	case RL_FIXED_WINDOW:
		return state[1] ? ms_out((unsigned __int128)state[0] + P) : 0;
	case RL_FIXED_WINDOW_ELASTIC:
		return state[1] ? ms_out(state[0]) : 0;
	case RL_MOVING_WINDOW: {
		struct ring r;

		ring_open(p, state, &r);
		return r.n ? ms_out((unsigned __int128)ring_at(&r, r.n - 1) +
				    P) : 0;
	}
	case RL_SLIDING_WINDOW:
		if (state[2])
			return ms_out((unsigned __int128)state[0] + 2 * P);
		return state[1] ? ms_out((unsigned __int128)state[0] + P) : 0;
	case RL_GCRA: {
		unsigned __int128 level = state[1] |
					  (unsigned __int128)state[2] << 64;

		return level ? ms_out(state[0] + ceil_div(level, p->count)) :
			       0;
	}
	default:
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* In-flight counters: [n, (expiry_ms, lease_id) * max]                */

size_t rl_inflight_state_words(uint64_t max)
{
	return 1 + 2 * (size_t)max;
}

/* Drops the leases expired at now (expiry <= now) and returns how many
 * remain; the order of leases does not matter. */
static uint64_t inflight_sweep(uint64_t *state, uint64_t max, int64_t now_ms)
{
	uint64_t n = state[0] > max ? max : state[0];
	uint64_t t = now_ms < 0 ? 0 : (uint64_t)now_ms;
	uint64_t *l = state + 1;
	uint64_t kept = 0;

	for (uint64_t i = 0; i < n; i++) {
		if (l[2 * i] > t) {
			l[2 * kept] = l[2 * i];
			l[2 * kept + 1] = l[2 * i + 1];
			kept++;
		}
	}
	state[0] = kept;
	return kept;
}

int rl_inflight_acquire(uint64_t *state, uint64_t max, int64_t now_ms,
			int64_t lease_ms, uint64_t lease_id, uint64_t *held)
{
	uint64_t n = inflight_sweep(state, max, now_ms);
	uint64_t t = now_ms < 0 ? 0 : (uint64_t)now_ms;
	int got = 0;

	if (n < max) {
		state[1 + 2 * n] = t + (lease_ms < 0 ? 0 : (uint64_t)lease_ms);
		state[2 + 2 * n] = lease_id;
		state[0] = ++n;
		got = 1;
	}
	if (held)
		*held = n;
	return got;
}

/* An expired lease is not found: it was already dropped. */
int rl_inflight_release(uint64_t *state, uint64_t max, int64_t now_ms,
			uint64_t lease_id, uint64_t *held)
{
	uint64_t n = inflight_sweep(state, max, now_ms);
	uint64_t *l = state + 1;
	int found = 0;

	for (uint64_t i = 0; i < n; i++) {
		if (l[2 * i + 1] == lease_id) {
			n--;
			l[2 * i] = l[2 * n];
			l[2 * i + 1] = l[2 * n + 1];
			state[0] = n;
			found = 1;
			break;
		}
	}
	if (held)
		*held = n;
	return found;
}
