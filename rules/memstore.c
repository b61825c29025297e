/*
 * memstore.c - the process-local store ("memory"): strategy state per key in
 * a hash table on this process's heap.
 *
 * The table is open addressing with linear probing over 64-byte slots (one
 * cache line each), and a slot is the whole entry: the key's identity, its
 * expiry and its state.  With 1,000,000 keys the table is far larger than
 * the caches, so a decision's cost is its cache misses; here a decision
 * that finds its key at home touches one cache line and allocates nothing.
 * What does not fit a slot lives on the heap: the state of moving-window
 * (count + 2 words) and in-flight counters (1 + 2 * max words).  Deletion
 * shifts the following slots back, so there are no tombstones.
 *
 * A key is known by its 128-bit SipHash-1-3 under the store's secret
 * (memstore_secret; rl_siphash13_128): the first half picks the home slot,
 * and both halves are compared; the key's text is not kept.  A slot of
 * 128 bytes with the text in it cost ~20 ns more a decision at 1M keys
 * (two lines from memory instead of one: bench_decide), and twice the
 * memory; the hash costs ~5 ns more than the unkeyed one it replaced plus
 * the text compare.  Two keys share a counter only when all 128 bits
 * agree: by chance about n^2 / 2^129 for n live keys (1e-27 for a
 * million), and clients who do not know the secret cannot aim at it.
 *
 * A key's state layout depends on its strategy and count, so a slot
 * remembers both and starts over from a fresh state when an op disagrees
 * (the engine puts the strategy and limit into the key, so this is only a
 * defence).
 *
 * Memory is bounded by max_keys: the table grows by doubling up to the size
 * that holds max_keys at a load of 3/4 (64 * 4/3 = 85 bytes per key when
 * full).  When a new key does not fit, expired slots (state equivalent to
 * fresh: rl_strategy_expiry <= now, or every lease expired) are swept; if
 * none is, the op fails with "store full" rather than forget a live
 * counter.  The store keeps a lower bound of all expiries, so a full table
 * of live keys answers "full" without rescanning itself for every new key.
 * That is exact, and right for `rategate replay`; a gateway facing clients
 * calls memstore_evict_lru instead, so that one client inventing keys
 * cannot make the store refuse everyone: a new key that does not fit then
 * takes the place of one of the MEM_EVICT_CANDIDATES used slots from its
 * home on (its probe neighbourhood, a random sample of the table): the
 * expired one that expired first, else the least recently hit among those
 * not limiting a client (not denied at their last hit), else the least
 * recently hit of the limiting ones (a ban lifted early; counted apart),
 * as the shared-memory store does.  Never a key of the batch itself, nor
 * an in-flight counter holding a live lease; when every candidate is such
 * the op fails with "store full".
 *
 * The secret: this pure library reads no random source, so a new store's
 * comes from its own address (varies with ASLR, but is not secret); the
 * gateway gives every store it makes 16 random bytes (memstore_secret)
 * before its first key, so that clients can neither aim keys at one probe
 * sequence (hash flooding) nor at one identity.
 *
 * A probe op (rl_store_op.probe) is checked with its batch but never
 * written: no slot is created for it, and RL_HIT neither consumes nor
 * penalizes it.
 *
 * Not thread-safe: one store per thread, or a lock around every call.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kind of a slot that holds an in-flight counter, after the strategies. */
#define MEM_INFLIGHT RL_STRATEGY_COUNT

#define MEM_MIN_CAP 64          /* slots in a new table */
#define MEM_BATCH_STACK 16      /* ops per batch handled without malloc */
#define MEM_INLINE_WORDS 3      /* state words kept in the slot */
/* memstore_evict_lru: the victim is chosen among the used slots from the
 * new key's home on, MEM_EVICT_CANDIDATES of them (or MEM_EVICT_SCAN slots
 * looked at, used or not) */
#define MEM_EVICT_CANDIDATES 16
#define MEM_EVICT_SCAN 4096
/* A key's identity: its 128-bit keyed hash (the top of the file). */
struct mem_id {
	uint64_t hash;          /* picks the home slot */
	uint64_t check;
};

struct mem_slot {
	uint64_t hash;          /* the key's mem_id */
	uint64_t check;
	int64_t expiry;         /* ms: state is fresh again from then */
	uint64_t w[MEM_INLINE_WORDS]; /* state, or w[0] = heap state */
	uint32_t count;         /* limit count or in-flight max (layout) */
	uint32_t stamp;         /* the store's clock at its last hit (LRU) */
	uint8_t kind;           /* enum rl_strategy or MEM_INFLIGHT */
	uint8_t used;           /* 0: empty slot */
	uint8_t limiting;       /* its last hit was denied */
	uint8_t pad[5];
};

_Static_assert(sizeof(struct mem_slot) == 64, "a slot is one cache line");

struct memstore {
	struct mem_slot *slots;
	size_t cap;             /* slots */
	size_t max_cap;         /* slots at which the table stops growing */
	size_t count;           /* keys held */
	size_t max_keys;
	size_t heap_bytes;      /* heap states, approximately */
	struct rl_sipkey secret;
	uint64_t last_lease;    /* lease ids are 1, 2, 3... */
	/* No slot expires before this (ms); INT64_MAX when empty.  Lowered on
	 * every write, recomputed by a sweep. */
	int64_t min_expiry;
	int evict;              /* memstore_evict_lru: evict instead of "full" */
	/* Hits so far, for the LRU stamps.  32 bits, as the shared-memory
	 * store's: after a wrap (4e9 hits) an entry idle for longer than one
	 * wrap ranks as younger than it is, in the LRU order only. */
	uint32_t clock;
	size_t added;           /* new keys since the last sweep */
	uint64_t evictions, evictions_limiting;
};

static const struct rl_store_ops memstore_ops;

/* ------------------------------------------------------------------ */
/* Slots                                                               */

/* malloc's real footprint, glibc-style: a size word, 16-byte rounding,
 * 32 bytes at least.  Only for memstore_bytes. */
static size_t heap_size(size_t n)
{
	size_t c = (n + 8 + 15) & ~(size_t)15;

	return c < 32 ? 32 : c;
}

static size_t layout_words(unsigned kind, uint64_t count)
{
	if (kind == MEM_INFLIGHT)
		return rl_inflight_state_words(count);
	return rl_strategy_state_words((enum rl_strategy)kind, count);
}

static int layout_inline(unsigned kind)
{
	return kind != MEM_INFLIGHT && kind != RL_MOVING_WINDOW;
}

static uint64_t *heap_state(const struct mem_slot *s)
{
	uint64_t *p;

	memcpy(&p, &s->w[0], sizeof(p));
	return p;
}

static uint64_t *slot_state(struct mem_slot *s)
{
	return layout_inline(s->kind) ? s->w : heap_state(s);
}

/* One key, as the table knows keys (two ops of a batch are on one key
 * when their ids are the same). */
static int same_id(struct mem_id a, struct mem_id b)
{
	return a.hash == b.hash && a.check == b.check;
}

static int slot_is(const struct mem_slot *s, struct mem_id id)
{
	struct mem_id here = { s->hash, s->check };

	return same_id(here, id);
}

/* Gives s a fresh state of layout (kind, count), allocating a heap state
 * when the layout needs one.  Returns 0, or -1 out of memory (s is then
 * left without heap state and with an inline layout). */
static int slot_set_layout(struct memstore *m, struct mem_slot *s,
			   unsigned kind, uint64_t count)
{
	if (!layout_inline(s->kind)) {
		m->heap_bytes -= heap_size(layout_words(s->kind, s->count) *
					   sizeof(uint64_t));
		free(heap_state(s));
	}
	memset(s->w, 0, sizeof(s->w));
	s->kind = RL_FIXED_WINDOW;
	s->count = 0;
	s->expiry = 0;
	if (!layout_inline(kind)) {
		size_t words = layout_words(kind, count);
		uint64_t *p = calloc(words, sizeof(uint64_t));
		if (!p)
			return -1;
		memcpy(&s->w[0], &p, sizeof(p));
		m->heap_bytes += heap_size(words * sizeof(uint64_t));
	}
	s->kind = (uint8_t)kind;
	s->count = (uint32_t)count;
	return 0;
}

static void slot_free_heap(struct memstore *m, struct mem_slot *s)
{
	if (!layout_inline(s->kind)) {
		m->heap_bytes -= heap_size(layout_words(s->kind, s->count) *
					   sizeof(uint64_t));
		free(heap_state(s));
	}
}

/* A hit written to s: its place in the LRU order, and whether it was
 * denied (memstore_evict_lru's victims). */
static void slot_hit(struct memstore *m, struct mem_slot *s, int denied)
{
	s->stamp = ++m->clock;
	s->limiting = (uint8_t)(denied != 0);
}

static void set_expiry(struct memstore *m, struct mem_slot *s, int64_t exp)
{
	s->expiry = exp;
	if (exp < m->min_expiry)
		m->min_expiry = exp;
}

/* The latest lease expiry: the counter is fresh again from then. */
static int64_t inflight_expiry(const uint64_t *st, uint64_t max)
{
	uint64_t last = 0;

	for (uint64_t i = 0; i < st[0] && i < max; i++)
		if (st[1 + 2 * i] > last)
			last = st[1 + 2 * i];
	return last > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)last;
}

/* ------------------------------------------------------------------ */
/* Hash table                                                          */

static struct mem_id key_id(const struct memstore *m, const char *key,
			    size_t len)
{
	uint64_t h[2];
	struct mem_id id;

	rl_siphash13_128(&m->secret, key, len, h);
	id.hash = h[0];
	id.check = h[1];
	return id;
}

/* The slot a hash probes first: the high bits scaled to the capacity, so
 * the capacity need not be a power of two. */
static size_t home_of(uint64_t h, size_t cap)
{
	return (size_t)(((unsigned __int128)h * cap) >> 64);
}

static size_t next_of(size_t i, size_t cap)
{
	return i + 1 == cap ? 0 : i + 1;
}

/* Asks for slot home and home + 1 at once.  At a load near 1/2 a key is
 * found past its home slot about a third of the time (linear probing: 1.5
 * slots per successful search); fetched one after the other, as the loop
 * below reads them, those are two dependent trips to memory, asked for
 * together about one.  A batch asks for every key's slots before it reads
 * the first. */
static void table_prefetch(const struct memstore *m, size_t home)
{
	__builtin_prefetch(&m->slots[home]);
	__builtin_prefetch(&m->slots[home + 1]);
}

static struct mem_slot *table_find(const struct memstore *m, struct mem_id id)
{
	size_t home = home_of(id.hash, m->cap);

	table_prefetch(m, home);
	for (size_t i = home;; i = next_of(i, m->cap)) {
		struct mem_slot *s = &m->slots[i];
		if (!s->used)
			return NULL;
		if (slot_is(s, id))
			return s;
	}
}

/* The first free slot of h's probe sequence; the load is at most 3/4. */
static struct mem_slot *table_free_slot(struct mem_slot *slots, size_t cap,
					uint64_t h)
{
	size_t i = home_of(h, cap);

	while (slots[i].used)
		i = next_of(i, cap);
	return &slots[i];
}

static struct mem_slot *slots_alloc(size_t cap)
{
	/* one slot more than cap, never used: table_prefetch asks for slot
	 * home + 1 without a test for the end (a test there cost ~20 ns a
	 * decision in bench_decide, 1M keys) */
	struct mem_slot *s = aligned_alloc(64, (cap + 1) * sizeof(*s));

	if (s)
		memset(s, 0, (cap + 1) * sizeof(*s));
	return s;
}

/* Grows the table until need more keys fit at a load of 3/4 (or it is at
 * max_cap).  Moves slots: slot pointers taken before are invalid. */
static int table_fit(struct memstore *m, size_t need)
{
	size_t cap = m->cap;
	struct mem_slot *slots;

	while (m->count + need > cap / 4 * 3 && cap < m->max_cap)
		cap = cap * 2 > m->max_cap ? m->max_cap : cap * 2;
	if (cap == m->cap)
		return 0;
	slots = slots_alloc(cap);
	if (!slots)
		return -1;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].used)
			*table_free_slot(slots, cap, m->slots[i].hash) =
				m->slots[i];
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return 0;
}

/* Empties slot i by shifting back the slots after it that probed past it,
 * so that every probe sequence stays unbroken. */
static void table_remove_at(struct memstore *m, size_t i)
{
	size_t j = i;

	for (;;) {
		size_t home;

		j = next_of(j, m->cap);
		if (!m->slots[j].used)
			break;
		home = home_of(m->slots[j].hash, m->cap);
		/* The slot at j may move to i unless its home lies
		 * cyclically in (i, j]. */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	memset(&m->slots[i], 0, sizeof(m->slots[i]));
	m->count--;
}

static void table_drop(struct memstore *m, struct mem_slot *s)
{
	slot_free_heap(m, s);
	table_remove_at(m, (size_t)(s - m->slots));
}

/* Frees every slot whose state is equivalent to a fresh one at now and
 * recomputes min_expiry.  Deleting at i may pull a later slot into i, so
 * i advances only past a kept slot; a slot pulled from the start of the
 * array (a wrapped cluster) was already kept once. */
static void table_sweep(struct memstore *m, int64_t now_ms)
{
	int64_t min = INT64_MAX;

	for (size_t i = 0; i < m->cap;) {
		struct mem_slot *s = &m->slots[i];
		if (s->used && s->expiry <= now_ms) {
			table_drop(m, s);
			continue;
		}
		if (s->used && s->expiry < min)
			min = s->expiry;
		i++;
	}
	m->min_expiry = min;
	m->added = 0;
}

/* memstore_evict_lru: drops one slot among the candidates from near's
 * home on (see the top of the file), never a key of keep[0..n).  Returns 0,
 * or -1 when no candidate may go. */
static int table_evict(struct memstore *m, struct mem_id near,
		       const struct mem_id *keep, size_t nkeep, int64_t now_ms)
{
	size_t i = home_of(near.hash, m->cap), best = SIZE_MAX;
	int best_class = 3;
	uint64_t best_rank = 0;

	for (size_t seen = 0, looked = 0;
	     seen < MEM_EVICT_CANDIDATES && looked < MEM_EVICT_SCAN &&
	     looked < m->cap; looked++, i = next_of(i, m->cap)) {
		const struct mem_slot *c = &m->slots[i];
		size_t k;
		int cls;
		uint64_t rank;

		if (!c->used)
			continue;
		seen++;
		for (k = 0; k < nkeep && !slot_is(c, keep[k]); k++)
			;
		if (k < nkeep)
			continue;
		if (c->expiry <= now_ms) {
			/* expired first, the earliest expiry best */
			cls = 0;
			rank = (uint64_t)INT64_MAX - (uint64_t)c->expiry;
		} else if (c->kind == MEM_INFLIGHT) {
			continue;       /* a live lease */
		} else {
			cls = c->limiting ? 2 : 1;
			rank = (uint32_t)(m->clock - c->stamp);  /* age */
		}
		if (cls < best_class || (cls == best_class && rank > best_rank)) {
			best = i;
			best_class = cls;
			best_rank = rank;
		}
	}
	if (best == SIZE_MAX)
		return -1;
	if (best_class == 1)
		m->evictions++;
	if (best_class == 2)
		m->evictions_limiting++;
	table_drop(m, &m->slots[best]);
	return 0;
}

/* "store full", and why no key could go.  Returns -1. */
static int store_full(const struct memstore *m, struct rl_diag *err,
		      const char *why)
{
	if (err) {
		err->col = 0;
		snprintf(err->msg, sizeof(err->msg), "store full: %zu keys, %s",
			 m->max_keys, why);
	}
	return -1;
}

/* Makes room for need more keys: sweeps when they do not fit and some
 * slot may have expired (or, with memstore_evict_lru, evicts near the
 * homes of keep[0..nkeep), the batch's keys, which are never evicted),
 * then grows the table.  Slot pointers taken before are invalid.  Returns
 * 0, or -1 with err set. */
static int table_reserve(struct memstore *m, size_t need, int64_t now_ms,
			 struct rl_diag *err, const struct mem_id *keep,
			 size_t nkeep)
{
	/* The expired anywhere go first, by a sweep; when evicting, at most
	 * once per max_keys / 16 new keys: a steady flood whose keys expire
	 * one per new key would otherwise sweep the whole table on every
	 * request.  In between, the expired near a new key go first. */
	if (m->count + need > m->max_keys && m->min_expiry <= now_ms &&
	    (!m->evict || m->added >= m->max_keys / 16))
		table_sweep(m, now_ms);
	for (size_t k = 0; m->evict && m->count + need > m->max_keys; k++) {
		size_t tried = 0;
		while (tried < nkeep &&
		       table_evict(m, keep[(k + tried) % nkeep], keep, nkeep,
				   now_ms) < 0)
			tried++;        /* another key's neighbourhood */
		if (tried == nkeep)
			return store_full(m, err, "none that may go (live in-flight counters)");
	}
	if (m->count + need > m->max_keys)
		return store_full(m, err, "none expired");
	if (table_fit(m, need) < 0) {
		if (err) {
			err->col = 0;
			snprintf(err->msg, sizeof(err->msg), "out of memory");
		}
		return -1;
	}
	return 0;
}

/* Finds key or adds it with a fresh state of layout (kind, count); room
 * was reserved, so adding moves no other slot.  NULL when out of memory.
 * A new slot's expiry (0) is not folded into min_expiry: every caller
 * sets the real expiry once its op ran, or lowers min_expiry to 0 when it
 * fails before that. */
static struct mem_slot *table_get(struct memstore *m, struct mem_id id,
				  unsigned kind, uint64_t count)
{
	struct mem_slot *s = table_find(m, id);

	if (s)
		return s;
	s = table_free_slot(m->slots, m->cap, id.hash);
	memset(s, 0, sizeof(*s));
	if (slot_set_layout(m, s, kind, count) < 0) {
		memset(s, 0, sizeof(*s));
		return NULL;
	}
	s->hash = id.hash;
	s->check = id.check;
	s->used = 1;
	m->count++;
	m->added++;
	return s;
}

static void set_err(struct rl_diag *err, const char *msg)
{
	if (err) {
		err->col = 0;
		snprintf(err->msg, sizeof(err->msg), "%s", msg);
	}
}

/* Out of memory in the middle of an op: slots added or reset by it may
 * keep expiry 0, so min_expiry must let the next sweep find them. */
static int fail_oom(struct memstore *m, struct rl_diag *err)
{
	m->min_expiry = 0;
	set_err(err, "out of memory");
	return -1;
}

/* A slot with another layout than (kind, count) starts over.  Returns 0 or
 * -1 out of memory (the slot is then dropped). */
static int slot_fit(struct memstore *m, struct mem_slot *s, unsigned kind,
		    uint64_t count)
{
	if (s->kind == kind && s->count == count)
		return 0;
	if (slot_set_layout(m, s, kind, count) == 0)
		return 0;
	table_drop(m, s);
	return -1;
}

/* ------------------------------------------------------------------ */
/* apply                                                               */

int rl_store_op_valid(const struct rl_store_op *op, struct rl_diag *err)
{
	const struct rl_step *p = &op->step;

	if (op->key_len > RL_STORE_KEY_MAX) {
		set_err(err, "store key longer than RL_STORE_KEY_MAX");
		return 0;
	}
	if ((unsigned)p->strategy >= RL_STRATEGY_COUNT || p->count < 1 ||
	    p->count > RL_MAX_COUNT || p->period_ms < 1 || p->cost < 1) {
		set_err(err, "invalid step (strategy, count, period or cost)");
		return 0;
	}
	if (p->strategy == RL_MOVING_WINDOW && p->count > RL_MOVING_MAX) {
		set_err(err, "moving-window count above RL_MOVING_MAX");
		return 0;
	}
	return 1;
}

static int slot_fits(const struct mem_slot *s, const struct rl_step *p)
{
	return s->kind == (unsigned)p->strategy && s->count == p->count;
}

/* A fresh state for checks on keys that have no slot (RL_TEST creates
 * none).  Three words are enough: the O(1) layouts have at most three, and
 * a moving-window check of an empty ring reads only n and head. */
static const uint64_t zero_state[3];

static const uint64_t *state_for_check(struct mem_slot *s,
				       const struct rl_step *p)
{
	return s && slot_fits(s, p) ? slot_state(s) : zero_state;
}

/* The verdicts when two ops of one batch name the same key: each op sees
 * the state as the earlier ops would leave it, on scratch copies, so that
 * the batch never consumes more than the limit allows.  Returns 0 or -1
 * (out of memory). */
static int check_with_duplicates(struct rl_store_op *ops, size_t n,
				 const struct mem_id *ids,
				 struct mem_slot **slots, int64_t now_ms)
{
	uint64_t **scratch = calloc(n, sizeof(*scratch));
	int rc = 0;

	if (!scratch)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct rl_step *p = &ops[i].step;
		struct rl_verdict dummy;
		size_t f = 0;

		while (!same_id(ids[f], ids[i]))
			f++;
		if (!scratch[f]) {
			size_t words = rl_strategy_state_words(p->strategy,
							       p->count);
			scratch[f] = calloc(words, sizeof(uint64_t));
			if (!scratch[f]) {
				rc = -1;
				break;
			}
			if (slots[f] && slot_fits(slots[f], p))
				memcpy(scratch[f], slot_state(slots[f]),
				       words * sizeof(uint64_t));
		}
		rl_strategy_check(p, scratch[f], now_ms, &ops[i].v);
		if (ops[i].v.allowed && !ops[i].probe)
			rl_strategy_consume(p, scratch[f], now_ms, &dummy);
	}
	for (size_t i = 0; i < n; i++)
		free(scratch[i]);
	free(scratch);
	return rc;
}

/* Runs after every op's verdict is known, on slots that exist and fit
 * (probe ops, which are never written, aside). */
static void apply_outcome(struct memstore *m, struct rl_store_op *ops,
			  size_t n, struct mem_slot **slots, int64_t now_ms)
{
	int all = 1;

	for (size_t i = 0; i < n; i++)
		all &= ops[i].v.allowed;
	for (size_t i = 0; i < n; i++) {
		const struct rl_step *p = &ops[i].step;
		if (ops[i].probe)
			continue;
		uint64_t *st = slot_state(slots[i]);
		if (all) {
			/* after a consume the reset is the expiry */
			rl_strategy_consume(p, st, now_ms, &ops[i].v);
			set_expiry(m, slots[i], ops[i].v.reset_ms);
		} else {
			rl_strategy_penalize(p, st, now_ms, &ops[i].v);
			set_expiry(m, slots[i], rl_strategy_expiry(p, st));
		}
		slot_hit(m, slots[i], !ops[i].v.allowed);
	}
}

/* The common case, one op: no arrays, no duplicate search. */
static int apply_one(struct memstore *m, struct rl_store_op *op,
		     enum rl_mode mode, int64_t now_ms, struct rl_diag *err)
{
	const struct rl_step *p = &op->step;
	struct mem_id id = key_id(m, op->key, op->key_len);
	struct mem_slot *s = table_find(m, id);

	if (mode != RL_HIT || op->probe) {
		rl_strategy_check(p, state_for_check(s, p), now_ms, &op->v);
		return 0;
	}
	if (!s) {
		if (table_reserve(m, 1, now_ms, err, &id, 1) < 0)
			return -1;
		s = table_get(m, id, p->strategy, p->count);
		if (!s)
			return fail_oom(m, err);
	} else if (slot_fit(m, s, p->strategy, p->count) < 0) {
		return fail_oom(m, err);
	}
	/* check, then consume or penalize: what apply_outcome does for a
	 * batch of one, in one step */
	set_expiry(m, s, rl_strategy_hit(p, slot_state(s), now_ms, &op->v));
	slot_hit(m, s, !op->v.allowed);
	return 0;
}

static int apply_many(struct memstore *m, struct rl_store_op *ops, size_t n,
		      enum rl_mode mode, int64_t now_ms, struct rl_diag *err,
		      struct mem_slot **slots, struct mem_id *ids)
{
	size_t missing = 0;
	int dup = 0;

	/* every key's slots on their way from memory before the first is
	 * read: a batch's misses overlap instead of adding up */
	for (size_t i = 0; i < n; i++) {
		ids[i] = key_id(m, ops[i].key, ops[i].key_len);
		table_prefetch(m, home_of(ids[i].hash, m->cap));
	}
	for (size_t i = 0; i < n; i++) {
		int counted = 0;        /* an earlier op brings this key */
		for (size_t j = 0; j < i; j++) {
			if (!same_id(ids[j], ids[i]))
				continue;
			counted |= !ops[j].probe;
			if (ops[j].step.strategy != ops[i].step.strategy ||
			    ops[j].step.count != ops[i].step.count) {
				set_err(err, "one key with two strategies or counts in one batch");
				return -1;
			}
			dup = 1;
		}
		slots[i] = table_find(m, ids[i]);
		missing += !slots[i] && !ops[i].probe && !counted;
	}

	if (mode == RL_HIT) {
		/* Every structural change first (sweep, growth, new keys,
		 * layout resets); none of them moves a slot found after.
		 * Probes get no slot: they are looked up again at the end. */
		if (missing &&
		    table_reserve(m, missing, now_ms, err, ids, n) < 0)
			return -1;
		for (size_t i = 0; i < n; i++) {
			const struct rl_step *p = &ops[i].step;
			if (ops[i].probe)
				continue;
			slots[i] = table_get(m, ids[i], p->strategy, p->count);
			if (!slots[i])
				return fail_oom(m, err);
		}
		for (size_t i = 0; i < n; i++) {
			const struct rl_step *p = &ops[i].step;
			if (ops[i].probe || slot_fits(slots[i], p))
				continue;
			/* a failed reset drops a slot, which may move others:
			 * give up on the batch */
			if (slot_fit(m, slots[i], p->strategy, p->count) < 0)
				return fail_oom(m, err);
		}
		for (size_t i = 0; i < n; i++)
			if (ops[i].probe)
				slots[i] = table_find(m, ids[i]);
	}

	if (dup) {
		if (check_with_duplicates(ops, n, ids, slots, now_ms) < 0)
			return fail_oom(m, err);
	} else {
		for (size_t i = 0; i < n; i++)
			rl_strategy_check(&ops[i].step,
					  state_for_check(slots[i],
							  &ops[i].step),
					  now_ms, &ops[i].v);
	}
	if (mode == RL_HIT)
		apply_outcome(m, ops, n, slots, now_ms);
	return 0;
}

static int mem_apply(void *impl, struct rl_store_op *ops, size_t n,
		     enum rl_mode mode, int64_t now_ms, struct rl_diag *err)
{
	struct mem_slot *slots_stack[MEM_BATCH_STACK], **slots = slots_stack;
	struct mem_id ids_stack[MEM_BATCH_STACK], *ids = ids_stack;
	int rc;

	for (size_t i = 0; i < n; i++)
		if (!rl_store_op_valid(&ops[i], err))
			return -1;
	if (n == 1)
		return apply_one(impl, ops, mode, now_ms, err);
	if (n > MEM_BATCH_STACK) {
		slots = malloc(n * sizeof(*slots));
		ids = malloc(n * sizeof(*ids));
		if (!slots || !ids) {
			free(slots);
			free(ids);
			set_err(err, "out of memory");
			return -1;
		}
	}
	rc = apply_many(impl, ops, n, mode, now_ms, err, slots, ids);
	if (slots != slots_stack) {
		free(slots);
		free(ids);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* In-flight                                                           */

static int mem_acquire(void *impl, const char *key, size_t key_len,
		       uint64_t max, int64_t lease_ms, int64_t now_ms,
		       uint64_t *lease_id, uint64_t *held, struct rl_diag *err)
{
	struct memstore *m = impl;
	uint64_t n, *st;
	struct mem_id id;
	struct mem_slot *s;
	int got;

	if (key_len > RL_STORE_KEY_MAX) {
		set_err(err, "store key longer than RL_STORE_KEY_MAX");
		return -1;
	}
	if (max > RL_INFLIGHT_MAX) {
		set_err(err, "in-flight maximum above RL_INFLIGHT_MAX");
		return -1;
	}
	id = key_id(m, key, key_len);
	s = table_find(m, id);
	if (!s) {
		if (table_reserve(m, 1, now_ms, err, &id, 1) < 0)
			return -1;
		s = table_get(m, id, MEM_INFLIGHT, max);
		if (!s)
			return fail_oom(m, err);
	} else if (slot_fit(m, s, MEM_INFLIGHT, max) < 0) {
		return fail_oom(m, err);
	}
	st = slot_state(s);
	got = rl_inflight_acquire(st, max, now_ms, lease_ms,
				  m->last_lease + 1, &n);
	if (got && lease_id)
		*lease_id = ++m->last_lease;
	if (held)
		*held = n;
	set_expiry(m, s, inflight_expiry(st, max));
	slot_hit(m, s, !got);
	return got;
}

/* A counter left with no lease is dropped at once. */
static int mem_release(void *impl, const char *key, size_t key_len,
		       uint64_t lease_id, int64_t now_ms, struct rl_diag *err)
{
	struct memstore *m = impl;
	uint64_t n, *st;
	struct mem_slot *s;

	(void)err;
	s = table_find(m, key_id(m, key, key_len));
	if (!s || s->kind != MEM_INFLIGHT)
		return 0;
	st = slot_state(s);
	rl_inflight_release(st, s->count, now_ms, lease_id, &n);
	if (n == 0)
		table_drop(m, s);
	else
		set_expiry(m, s, inflight_expiry(st, s->count));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

static void mem_destroy(void *impl)
{
	struct memstore *m = impl;

	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].used)
			slot_free_heap(m, &m->slots[i]);
	free(m->slots);
	free(m);
}

int memstore_new(size_t max_keys, struct rl_store *st)
{
	struct memstore *m = calloc(1, sizeof(*m));

	if (!m)
		goto fail;
	if (max_keys < 1)
		max_keys = 1;
	if (max_keys > SIZE_MAX / 1024)
		max_keys = SIZE_MAX / 1024;
	m->max_keys = max_keys;
	/* max_keys at a load of 3/4 */
	m->max_cap = max_keys + (max_keys + 2) / 3;
	m->max_cap += 4 - m->max_cap % 4;
	if (m->max_cap < MEM_MIN_CAP)
		m->max_cap = MEM_MIN_CAP;
	m->cap = MEM_MIN_CAP;
	m->slots = slots_alloc(m->cap);
	if (!m->slots)
		goto fail;
	m->min_expiry = INT64_MAX;
	m->secret.k0 = rl_mix64((uint64_t)(uintptr_t)m ^
				((uint64_t)(uintptr_t)&memstore_ops << 17));
	m->secret.k1 = rl_mix64(m->secret.k0 ^ (uint64_t)(uintptr_t)m->slots);
	st->ops = &memstore_ops;
	st->impl = m;
	return 0;
fail:
	free(m);
	return -1;
}

int memstore_secret(struct rl_store *st, const uint8_t secret[16])
{
	struct memstore *m = st->impl;

	if (m->count > 0)
		return -1;      /* its keys were placed under the old one */
	m->secret = rl_sipkey_of(secret);
	return 0;
}

void memstore_evict_lru(struct rl_store *st)
{
	struct memstore *m = st->impl;

	m->evict = 1;
}

uint64_t memstore_evictions(const struct rl_store *st, uint64_t *limiting)
{
	const struct memstore *m = st->impl;

	if (limiting)
		*limiting = m->evictions_limiting;
	return m->evictions;
}

size_t memstore_count(const struct rl_store *st)
{
	const struct memstore *m = st->impl;

	return m->count;
}

size_t memstore_bytes(const struct rl_store *st)
{
	const struct memstore *m = st->impl;

	return heap_size(sizeof(*m)) + (m->cap + 1) * sizeof(struct mem_slot) +
	       m->heap_bytes;
}

static const struct rl_store_ops memstore_ops = {
	.name = "memory",
	.apply = mem_apply,
	.acquire = mem_acquire,
	.release = mem_release,
	.destroy = mem_destroy,
};
