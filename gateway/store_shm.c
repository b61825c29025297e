/*
 * store_shm.c - the shared-memory store: strategy state per key in a
 * fixed-size table inside a file mapped MAP_SHARED by every rategate
 * process on the host, applied all-or-nothing with the rules library's
 * pure steps, exactly as rules/memstore.c does in one process.
 *
 * The file (offsets in bytes; every area starts on a 64-byte line):
 *
 *   header      4096    magic, layout version, geometry, the hash secret
 *   stripes     S x     one block per stripe: its robust mutex, statistics,
 *                       LRU clock, undo journal, and the owner tables of
 *                       its share of the two pools below
 *   buckets     S x B x 512      8 entries of 64 bytes per bucket
 *   names       S x B x 8 x 128  the key text of each entry (optional)
 *   ring pool   S x R x ring     moving-window states (count + 2 words)
 *   lease pool  S x L x lease    in-flight states (1 + 2 x max words)
 *
 * Keys.  A key is known by its SipHash-2-4 under a random 128-bit secret
 * made at creation (getrandom) and kept in the header: clients cannot
 * choose keys that collide or that crowd one bucket.  The hash picks the
 * stripe (high 32 bits) and two candidate buckets in it (low 32 bits, and a
 * mix of the whole hash); a key lives in one of the 16 entries of its two
 * buckets ("two choices": new keys go to the emptier bucket, which keeps
 * the table evenly filled up to ~90%).  Two keys with one 64-bit hash would
 * share a counter; among a million live keys the chance is about 3e-8.  The
 * key text is kept, when names are on, only for `rategate inspect`.
 *
 * Entries.  64 bytes, one cache line: hash, expiry, three state words,
 * layout (strategy, count), LRU stamp, hits, denials, remaining, flags.
 * The O(1) strategies keep their whole state in the entry.  Moving-window
 * keys (count + 2 words) and in-flight keys with max > 1 (1 + 2 x max
 * words) keep theirs in a slot of the stripe's ring or lease pool, sized
 * at creation from the rules' largest moving-window count and in-flight
 * maximum; a file whose slots are too small for the rules is refused.
 *
 * Locking.  Each stripe (a 1/S share of the buckets and pools) has a
 * robust process-shared mutex; a batch locks the distinct stripes of its
 * keys in ascending order, so two batches never deadlock, and keys in other
 * stripes go on in parallel.  Everything a batch writes is first copied
 * into its stripe's undo journal ("before images"), so a batch that cannot
 * finish (store full) is rolled back, and so is a batch whose process died
 * inside the critical section: the next process to take the lock gets
 * EOWNERDEAD and restores the images.  A batch over several stripes
 * commits on its first stripe (its leader) with one store; recovery of a
 * follower stripe asks the leader whether the batch committed, and
 * recovery of a leader settles its followers first, so a batch is applied
 * on all its stripes or on none even when its process is killed.
 * A damaged entry (entry_sane: written by something else) is never
 * followed: a key that finds one has the stripe repaired first
 * (bucket_find_locked); one met as an eviction victim is only emptied,
 * and the stripe repaired when the batch is over.  Both count as
 * recoveries.
 *
 * Eviction.  When neither of a new key's buckets has a free entry, the
 * candidates are its 16 entries, best victim first:
 *
 *   1. an expired one (its state is equivalent to a fresh one, nothing is
 *      lost), the earliest expiry first;
 *   2. else the least recently used (by a per-stripe clock of hits) among
 *      those not limiting a client (not denied at their last hit);
 *   3. else, when all of them are limiting, the least recently used among
 *      the denied ones: that client's ban lifts early.
 *
 * Never evicted: an in-flight counter holding a live lease (that would let
 * a concurrency limit be exceeded) and an entry this batch already uses;
 * if all 16 are such, the batch fails with "store full" (the gateway's
 * store-failure policy applies).  A flood of new keys thus recycles its
 * own idle entries first.  Step 3 exists because a flood that drives its
 * own keys into denial (two hits each on a 1/hour key) would otherwise
 * fill every candidate with entries that never go, and every new key of
 * every other client would fail for the whole period; with it, what goes
 * is mostly the flood's own idle denied entries, and a client that keeps
 * hitting stays most recently used, so its ban holds.  An idle banned
 * client can still lose its entry to such a flood: the statistics count
 * these evictions apart (evict_limiting, "bans lifted early").  An
 * application limit keyed by address prevents it: a request it denies
 * consumes nothing, so its other keys' new entries stay fresh (evicted
 * first), and one address makes at most its budget's worth of denied
 * entries per period.
 * Pool slots are evicted the same way within their stripe.  LRU is per
 * pair of buckets, as in a set-associative cache: for a random flood an
 * idle entry survives as many new keys as under a global LRU list, on
 * average, without the two extra cache misses per hit that maintaining
 * such a list would cost.
 *
 * Mismatch policy: refuse.  A file of another layout version, size or slot
 * geometry (or whose pools are too small for the rules) is refused with a
 * message naming the fix: delete the file (its counters are lost) or
 * change size=.  Recreating it automatically would need to know that no
 * other process still has it mapped, which a file cannot tell us; a file
 * that was never initialised (empty, or a creator died half-way) is
 * initialised in place under the flock.  `rategate -t` asks the same
 * question of an existing file without opening it for writing
 * (shm_probe_file: the header checks are one function, header_check), so
 * a refusal shows before a restart rather than at it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "store_shm.h"

#define SHM_HEADER_BYTES  4096
#define SHM_BUCKET_BYTES  (SHM_WAYS * SHM_ENTRY_BYTES)
#define SHM_STRIPES_MAX   64
#define SHM_STRIPE_SHARE  (512u << 10)  /* file bytes per stripe, small files */
#define SHM_RING_MIN_WORDS 8
/* Journal bytes one op of a batch may need: its entry (80), a victim's
 * pool slot (56), its name (144), a new pool slot with a pool victim (160)
 * and a ring header (32). */
#define SHM_JOURNAL_PER_OP 512
#define SHM_TOUCH_MAX     512   /* journaled addresses per batch */
#define SHM_CLAIM_MAX     128   /* entries a batch uses */
#define SHM_SCAN_BUCKETS  32    /* buckets copied per lock in shm_scan */
#define SHM_LOCK_WAIT_MS  2000  /* longest wait for a stripe's lock */

static const char shm_magic[8] = { 'R', 'G', 'S', 'H', 'M', 0, 0x1a, '\n' };
/* The magic of a file being initialised: its creator's first write, so
 * that a creator that dies half-way leaves a file the next opener (under
 * the flock, so the creator is gone) knows to initialise again. */
static const char shm_magic_init[8] = { 'R', 'G', 'S', 'H', 'M', 0, 0x1a, '?' };

/* Journal phases, in the low 2 bits of a stripe's jstate (seq above). */
enum { J_IDLE = 0, J_ACTIVE = 1, J_COMMITTED = 2 };

/* Entry flags. */
#define F_DENIED 1      /* its last hit was denied: it is limiting */
#define F_BIG    2      /* w[0] is a slot of the ring or lease pool */

enum { POOL_RING = 0, POOL_LEASE = 1 };

struct shm_entry {
	uint64_t hash;          /* keyed hash; 0: empty */
	int64_t expiry;         /* ms: the state is fresh again from then */
	uint64_t w[3];          /* state, or w[0] = pool slot (F_BIG) */
	uint32_t count;         /* limit count or in-flight max (layout) */
	uint32_t stamp;         /* stripe clock at its last hit (LRU) */
	uint32_t hits;          /* allowed hits, saturating */
	uint32_t denials;       /* denied hits, saturating */
	uint32_t remaining;     /* after its last hit, saturating */
	uint8_t kind;           /* enum rl_strategy or SHM_KIND_INFLIGHT */
	uint8_t flags;
	uint16_t spare;
};

_Static_assert(sizeof(struct shm_entry) == SHM_ENTRY_BYTES,
	       "an entry is one cache line");

struct shm_name {
	uint64_t hash;          /* the entry it belongs to */
	uint32_t len;           /* the key's full length when text is cut
				   short, else stored */
	uint32_t stored;        /* bytes in text */
	char text[SHM_NAME_TEXT];
};

_Static_assert(sizeof(struct shm_name) == SHM_NAME_BYTES, "name record");

/* Per-stripe statistics: written under the stripe's lock, read without. */
struct shm_counters {
	uint64_t keys, ring_used, lease_used;
	uint64_t allowed, denied, inserts, evict_expired, evict_lru;
	uint64_t full, recoveries, resets;
	uint64_t evict_limiting;        /* layout version 2 */
};

struct shm_stripe {
	pthread_mutex_t lock;   /* robust, process-shared */
	uint64_t jstate;        /* seq << 2 | J_* */
	uint64_t jused;         /* bytes of journal records */
	uint64_t jseq;          /* last batch this stripe led */
	uint32_t jleader;       /* the batch's first stripe */
	uint32_t jnfollow;      /* leader only: the batch's other stripes */
	uint16_t jfollow[SHM_BATCH_MAX];
	uint32_t clock;         /* hits on this stripe (LRU stamps) */
	uint32_t spare;
	uint64_t lease;         /* last lease id given out here */
	struct shm_counters c;
};

struct shm_header {
	char magic[8];          /* byte 0 */
	uint32_t version;       /* byte 8 */
	uint32_t ways;
	uint32_t entry_bytes;
	uint32_t name_bytes;
	uint32_t mutex_bytes;
	uint32_t stripe_struct_bytes;
	uint32_t byte_order;    /* 0x01020304 in the creator's order */
	uint32_t stripes;
	uint64_t file_bytes;
	uint64_t ring_words, lease_words;
	uint32_t bps, ring_n, lease_n, spare;
	uint64_t jcap, stripe_bytes;
	uint64_t off_stripes, off_buckets, off_names, off_ring, off_lease;
	uint8_t secret[16];
	int64_t created_ms;
};

_Static_assert(sizeof(struct shm_header) <= SHM_HEADER_BYTES, "header");

/* Where everything is; derived from the header's counts. */
struct shm_geom {
	uint64_t size;
	uint32_t stripes, bps, ring_n, lease_n, name_bytes;
	uint64_t ring_words, lease_words, jcap, stripe_bytes;
	uint64_t off_stripes, off_buckets, off_names, off_ring, off_lease;
	uint64_t so_ring_owner, so_lease_owner, so_journal; /* in a stripe */
};

/* One process's handle on the mapping. */
struct shm {
	uint8_t *base;
	size_t map_bytes;
	struct shm_geom g;
	struct rl_sipkey sip;   /* the hash secret */
	char *path;             /* for messages */
	dev_t dev;              /* the file mapped, to tell whether the path */
	ino_t ino;              /* still names it (shm_file_replaced) */
};

void (*shm_test_hook)(enum shm_hook where);

static const struct rl_store_ops shm_ops;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static uint64_t round_up(uint64_t x, uint64_t to)
{
	return (x + to - 1) / to * to;
}

static uint32_t sat32(uint64_t x)
{
	return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

static void diag(struct rl_diag *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void diag(struct rl_diag *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->col = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* "64M", "1G", "1536K" or plain bytes, as size= is written. */
static void human(char *out, size_t cap, uint64_t n)
{
	if (n && n % (1ULL << 30) == 0)
		snprintf(out, cap, "%lluG", (unsigned long long)(n >> 30));
	else if (n && n % (1ULL << 20) == 0)
		snprintf(out, cap, "%lluM", (unsigned long long)(n >> 20));
	else if (n && n % (1ULL << 10) == 0)
		snprintf(out, cap, "%lluK", (unsigned long long)(n >> 10));
	else
		snprintf(out, cap, "%llu", (unsigned long long)n);
}

/* A store that a process killed right after it must still see as done
 * before anything written after it: a release store, and no compiler
 * motion of later plain stores above it. */
static void publish(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static uint64_t load64(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/* Statistics words are read by shm_stats without the lock. */
static void counter_add(uint64_t *p, int64_t d)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + (uint64_t)d,
			 __ATOMIC_RELAXED);
}

static uint64_t counter_get(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* Geometry                                                            */

static uint64_t layout_words(unsigned kind, uint64_t count)
{
	if (kind == SHM_KIND_INFLIGHT)
		return rl_inflight_state_words(count);
	return rl_strategy_state_words((enum rl_strategy)kind, count);
}

static int layout_big(unsigned kind, uint64_t count)
{
	return layout_words(kind, count) > 3;
}

static int pool_of(unsigned kind)
{
	return kind == SHM_KIND_INFLIGHT ? POOL_LEASE : POOL_RING;
}

static unsigned default_stripes(uint64_t size)
{
	unsigned s = 2;

	while (s < SHM_STRIPES_MAX && (uint64_t)s * 2 * SHM_STRIPE_SHARE <= size)
		s *= 2;
	return s;
}

/* Offsets from the counts; the same function checks a file's header, so
 * the layout is a pure function of (size, stripes, pools, names).
 * Returns 0, or -1 when the buckets do not fit. */
static int geom_layout(uint64_t size, uint32_t stripes, uint64_t ring_words,
		       uint32_t ring_n, uint64_t lease_words, uint32_t lease_n,
		       uint32_t name_bytes, struct shm_geom *g)
{
	uint64_t ring_bytes = ring_words * 8, lease_bytes = lease_words * 8;
	uint64_t tail, per_bucket, avail, bps;

	memset(g, 0, sizeof(*g));
	if (stripes < 1 || stripes > 65535 || ring_n < 1 || lease_n < 1)
		return -1;
	g->size = size;
	g->stripes = stripes;
	g->ring_words = ring_words;
	g->ring_n = ring_n;
	g->lease_words = lease_words;
	g->lease_n = lease_n;
	g->name_bytes = name_bytes;
	g->jcap = round_up((uint64_t)SHM_BATCH_MAX * SHM_JOURNAL_PER_OP +
			   16 + lease_bytes + 64, 64);
	g->so_ring_owner = round_up(sizeof(struct shm_stripe), 64);
	g->so_lease_owner = g->so_ring_owner + round_up(4ULL * ring_n, 64);
	g->so_journal = g->so_lease_owner + round_up(4ULL * lease_n, 64);
	g->stripe_bytes = g->so_journal + g->jcap;
	g->off_stripes = SHM_HEADER_BYTES;
	g->off_buckets = round_up(g->off_stripes + stripes * g->stripe_bytes,
				  4096);
	tail = stripes * ((uint64_t)ring_n * ring_bytes +
			  (uint64_t)lease_n * lease_bytes);
	if (g->off_buckets + tail >= size)
		return -1;
	avail = size - g->off_buckets - tail;
	per_bucket = SHM_BUCKET_BYTES + (uint64_t)SHM_WAYS * name_bytes;
	bps = avail / ((uint64_t)stripes * per_bucket);
	if (bps < 2)
		return -1;
	if (bps > UINT32_MAX / SHM_WAYS)
		bps = UINT32_MAX / SHM_WAYS;
	g->bps = (uint32_t)bps;
	g->off_names = g->off_buckets + stripes * bps * SHM_BUCKET_BYTES;
	g->off_ring = g->off_names + stripes * bps * SHM_WAYS * name_bytes;
	g->off_lease = g->off_ring + (uint64_t)stripes * ring_n * ring_bytes;
	return 0;
}

static uint64_t ring_words_for(uint64_t max_moving)
{
	uint64_t w = max_moving + 2;

	return round_up(w < SHM_RING_MIN_WORDS ? SHM_RING_MIN_WORDS : w, 8);
}

static uint64_t lease_words_for(uint64_t max_leases)
{
	return round_up(rl_inflight_state_words(max_leases), 8);
}

/* The geometry of a new file. */
static int geom_plan(const struct shm_config *c, struct shm_geom *g,
		     char *err, size_t errcap)
{
	uint64_t size = c->size;
	uint32_t stripes = c->stripes ? c->stripes : default_stripes(size);
	uint64_t leases = c->max_leases ? c->max_leases : SHM_LEASES_DEFAULT;
	uint64_t ring_words = ring_words_for(c->max_moving);
	uint64_t lease_words = lease_words_for(leases);
	unsigned pct = c->ring_percent ? c->ring_percent : SHM_RING_PERCENT;
	uint64_t ring_n = 1, lease_n;
	char hs[32], hn[32];

	if (pct > 90)
		pct = 90;
	human(hs, sizeof(hs), size);
	if (c->max_moving > 1) {
		ring_n = size / 100 * pct / (stripes * ring_words * 8);
		if (ring_n == 0) {
			if (stripes * ring_words * 8 > size / 2) {
				human(hn, sizeof(hn), round_up(stripes * ring_words * 8 * 2,
							      1 << 20));
				snprintf(err, errcap, "shm store \"%s\": size=%s is too small for moving-window counts up to %llu (each of its %u stripes needs a slot of %llu bytes): raise size= to at least %s",
					 c->path, hs, (unsigned long long)c->max_moving,
					 stripes, (unsigned long long)(ring_words * 8), hn);
				return -1;
			}
			ring_n = 1;
		}
	}
	lease_n = size / 100 * SHM_LEASE_PERCENT / (stripes * lease_words * 8);
	if (lease_n == 0)
		lease_n = 1;
	if (ring_n > UINT32_MAX)
		ring_n = UINT32_MAX;
	if (lease_n > UINT32_MAX)
		lease_n = UINT32_MAX;
	if (geom_layout(size, stripes, ring_words, (uint32_t)ring_n,
			lease_words, (uint32_t)lease_n,
			c->names ? SHM_NAME_BYTES : 0, g) < 0) {
		snprintf(err, errcap, "shm store \"%s\": size=%s is too small for its %u stripes and slots: raise size=",
			 c->path, hs, stripes);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Addresses                                                           */

static struct shm_stripe *stripe_at(const struct shm *m, uint32_t s)
{
	return (struct shm_stripe *)(m->base + m->g.off_stripes +
				     s * m->g.stripe_bytes);
}

static uint32_t *owners(const struct shm *m, uint32_t s, int pool)
{
	return (uint32_t *)((uint8_t *)stripe_at(m, s) +
			    (pool == POOL_LEASE ? m->g.so_lease_owner :
			     m->g.so_ring_owner));
}

static uint32_t pool_n(const struct shm *m, int pool)
{
	return pool == POOL_LEASE ? m->g.lease_n : m->g.ring_n;
}

static uint64_t pool_words(const struct shm *m, int pool)
{
	return pool == POOL_LEASE ? m->g.lease_words : m->g.ring_words;
}

static uint64_t *pool_slot(const struct shm *m, uint32_t s, int pool,
			   uint64_t idx)
{
	uint64_t off = pool == POOL_LEASE ? m->g.off_lease : m->g.off_ring;

	return (uint64_t *)(m->base + off + ((uint64_t)s * pool_n(m, pool) +
					    idx) * pool_words(m, pool) * 8);
}

static struct shm_entry *bucket_at(const struct shm *m, uint32_t s,
				   uint32_t b)
{
	return (struct shm_entry *)(m->base + m->g.off_buckets +
				    ((uint64_t)s * m->g.bps + b) *
				    SHM_BUCKET_BYTES);
}

/* Index of e among its stripe's entries. */
static uint32_t entry_index(const struct shm *m, uint32_t s,
			    const struct shm_entry *e)
{
	return (uint32_t)(e - bucket_at(m, s, 0));
}

static struct shm_name *name_of(const struct shm *m, uint32_t s,
				const struct shm_entry *e)
{
	uint64_t slot = (uint64_t)s * m->g.bps * SHM_WAYS +
			entry_index(m, s, e);

	return (struct shm_name *)(m->base + m->g.off_names +
				   slot * m->g.name_bytes);
}

static uint64_t *entry_state(const struct shm *m, uint32_t s,
			     struct shm_entry *e)
{
	if (!(e->flags & F_BIG))
		return e->w;
	return pool_slot(m, s, pool_of(e->kind), e->w[0]);
}

/* Whether e, a used entry of stripe s, holds together: a kind we know, its
 * state where its layout says, and for a pool slot, one inside the pool
 * that names e as its owner.  Only a foreign write to the file (or a bug)
 * breaks this; such an entry is dropped, never followed (its w[0] could
 * point anywhere).  Costs nothing measurable on the hot path: the fields
 * are in the line just read, and only pool entries look further. */
static int entry_sane(const struct shm *m, uint32_t s,
		      const struct shm_entry *e)
{
	int pool;

	if (e->kind > SHM_KIND_INFLIGHT)
		return 0;
	if (!(e->flags & F_BIG))
		return !layout_big(e->kind, e->count);
	pool = pool_of(e->kind);
	return e->w[0] < pool_n(m, pool) &&
	       owners(m, s, pool)[e->w[0]] == entry_index(m, s, e) + 1 &&
	       layout_words(e->kind, e->count) <= pool_words(m, pool);
}

static int entry_fits(const struct shm_entry *e, unsigned kind,
		      uint64_t count)
{
	return e->kind == kind && e->count == count;
}

/* Where a key may live: its stripe and two buckets. */
struct shm_loc {
	uint64_t h;
	uint32_t s, b1, b2;
};

static uint64_t key_hash(const struct shm *m, const char *key, size_t len)
{
	uint64_t h = rl_siphash24(&m->sip, key, len);

	return h ? h : 1;       /* 0 marks an empty entry */
}

static void locate(const struct shm *m, uint64_t h, struct shm_loc *l)
{
	uint64_t h2 = rl_mix64(h);

	l->h = h;
	l->s = (uint32_t)(((h >> 32) * m->g.stripes) >> 32);
	l->b1 = (uint32_t)(((h & 0xffffffffu) * m->g.bps) >> 32);
	l->b2 = (uint32_t)(((h2 & 0xffffffffu) * m->g.bps) >> 32);
	if (l->b2 == l->b1)
		l->b2 = l->b1 + 1 == m->g.bps ? 0 : l->b1 + 1;
}

static void prefetch_loc(const struct shm *m, const struct shm_loc *l)
{
	const char *p1 = (const char *)bucket_at(m, l->s, l->b1);
	const char *p2 = (const char *)bucket_at(m, l->s, l->b2);

	for (int i = 0; i < SHM_BUCKET_BYTES; i += 64) {
		__builtin_prefetch(p1 + i, 1);
		__builtin_prefetch(p2 + i, 1);
	}
}

static struct shm_entry *bucket_find(const struct shm *m,
				     const struct shm_loc *l)
{
	struct shm_entry *b = bucket_at(m, l->s, l->b1);

	for (int i = 0; i < SHM_WAYS; i++)
		if (b[i].hash == l->h)
			return &b[i];
	b = bucket_at(m, l->s, l->b2);
	for (int i = 0; i < SHM_WAYS; i++)
		if (b[i].hash == l->h)
			return &b[i];
	return NULL;
}

uint64_t shm_key_hash(const struct shm *m, const char *key, size_t len)
{
	return key_hash(m, key, len);
}

unsigned shm_key_stripe(const struct shm *m, const char *key, size_t len)
{
	struct shm_loc l;

	locate(m, key_hash(m, key, len), &l);
	return l.s;
}

long shm_key_place(const struct shm *m, const char *key, size_t len,
		   unsigned *stripe, unsigned *b1, unsigned *b2)
{
	struct shm_loc l;
	const struct shm_entry *e;

	locate(m, key_hash(m, key, len), &l);
	if (stripe)
		*stripe = l.s;
	if (b1)
		*b1 = l.b1;
	if (b2)
		*b2 = l.b2;
	e = bucket_find(m, &l);
	if (!e)
		return -1;
	return (long)(entry_index(m, l.s, e) / SHM_WAYS);
}

/* ------------------------------------------------------------------ */
/* Journal and recovery                                                */

/* The latest lease expiry: the counter is fresh again from then. */
static int64_t inflight_expiry(const uint64_t *st, uint64_t max)
{
	uint64_t last = 0;

	for (uint64_t i = 0; i < st[0] && i < max; i++)
		if (st[1 + 2 * i] > last)
			last = st[1 + 2 * i];
	return last > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)last;
}

static uint8_t *journal_data(const struct shm *m, uint32_t s)
{
	return (uint8_t *)stripe_at(m, s) + m->g.so_journal;
}

static uint64_t record_bytes(uint64_t len)
{
	return 16 + round_up(len, 8);
}

/* Restores the before images of stripe s's journal, newest first, so the
 * oldest image of an address wins; then empties the journal.  Records are
 * checked against the file, so a damaged journal cannot write outside the
 * table.  Idempotent: a process that dies in here leaves the journal for
 * the next one to replay. */
static void rollback(struct shm *m, uint32_t s)
{
	struct shm_stripe *st = stripe_at(m, s);
	const uint8_t *j = journal_data(m, s);
	uint64_t used = load64(&st->jused), pos = 0, len, off;
	size_t nrec = 0;

	if (used > m->g.jcap)
		used = m->g.jcap;
	while (pos + 16 <= used) {
		memcpy(&len, j + pos + 8, 8);
		if (len > m->g.jcap || pos + record_bytes(len) > used)
			break;
		pos += record_bytes(len);
		nrec++;
	}
	for (size_t k = nrec; k-- > 0;) {
		pos = 0;
		for (size_t i = 0; i < k; i++) {
			memcpy(&len, j + pos + 8, 8);
			pos += record_bytes(len);
		}
		memcpy(&off, j + pos, 8);
		memcpy(&len, j + pos + 8, 8);
		if (off >= SHM_HEADER_BYTES && off <= m->g.size &&
		    len <= m->g.size - off)
			memcpy(m->base + off, j + pos + 16, len);
	}
	publish(&st->jused, 0);
}

/* Makes stripe s's entries and pool owners agree after a recovery (a
 * damaged or foreign journal could leave them apart) and recounts its
 * keys.  Runs under the lock, without journaling; idempotent. */
static void stripe_repair(struct shm *m, uint32_t s)
{
	struct shm_stripe *st = stripe_at(m, s);
	struct shm_entry *e = bucket_at(m, s, 0);
	uint64_t n = (uint64_t)m->g.bps * SHM_WAYS, keys = 0;
	uint64_t used[2] = { 0, 0 };

	for (uint64_t i = 0; i < n; i++) {
		if (!e[i].hash)
			continue;
		if (!entry_sane(m, s, &e[i]))
			memset(&e[i], 0, sizeof(e[i]));
		else
			keys++;
	}
	for (int pool = 0; pool < 2; pool++) {
		uint32_t *o = owners(m, s, pool);
		for (uint32_t k = 0; k < pool_n(m, pool); k++) {
			if (!o[k])
				continue;
			if (o[k] <= n && e[o[k] - 1].hash &&
			    (e[o[k] - 1].flags & F_BIG) &&
			    pool_of(e[o[k] - 1].kind) == pool &&
			    e[o[k] - 1].w[0] == k)
				used[pool]++;
			else
				o[k] = 0;
		}
	}
	__atomic_store_n(&st->c.keys, keys, __ATOMIC_RELAXED);
	__atomic_store_n(&st->c.ring_used, used[POOL_RING], __ATOMIC_RELAXED);
	__atomic_store_n(&st->c.lease_used, used[POOL_LEASE], __ATOMIC_RELAXED);
}

static int lock_stripe(struct shm *m, uint32_t s, struct rl_diag *err);

static void unlock_stripe(struct shm *m, uint32_t s)
{
	pthread_mutex_unlock(&stripe_at(m, s)->lock);
}

/* Stripe s's lock came back EOWNERDEAD: its holder died.  If it died in a
 * batch, settle the batch: a leader first settles its followers (they read
 * its phase), then rolls back unless it had committed; a follower keeps the
 * writes iff its leader committed.  We hold s and possibly stripes below
 * it, so locking followers (above s) keeps the ascending order. */
static void stripe_recover(struct shm *m, uint32_t s)
{
	struct shm_stripe *st = stripe_at(m, s);
	uint64_t js = load64(&st->jstate);
	uint64_t seq = js >> 2;
	unsigned phase = js & 3;

	if (phase != J_IDLE) {
		uint32_t leader = st->jleader;

		if (leader == s) {
			uint32_t nf = st->jnfollow;
			if (nf > SHM_BATCH_MAX - 1)
				nf = SHM_BATCH_MAX - 1;
			for (uint32_t k = 0; k < nf; k++) {
				uint32_t f = st->jfollow[k];
				if (f > s && f < m->g.stripes &&
				    lock_stripe(m, f, NULL) == 0)
					unlock_stripe(m, f);
			}
			if (phase != J_COMMITTED)
				rollback(m, s);
		} else {
			int keep = leader < s &&
				   load64(&stripe_at(m, leader)->jstate) ==
				   (seq << 2 | J_COMMITTED);
			if (!keep)
				rollback(m, s);
		}
		publish(&st->jstate, seq << 2 | J_IDLE);
	}
	stripe_repair(m, s);
	counter_add(&st->c.recoveries, 1);
}

/* bucket_find for a caller holding stripe l->s's lock, before it writes
 * anything: a damaged entry found for the key (see entry_sane) has the
 * stripe repaired, counted as a recovery, and is not found. */
static struct shm_entry *bucket_find_locked(struct shm *m,
					    const struct shm_loc *l)
{
	struct shm_entry *e = bucket_find(m, l);

	if (e && !entry_sane(m, l->s, e)) {
		stripe_repair(m, l->s);
		counter_add(&stripe_at(m, l->s)->c.recoveries, 1);
		e = bucket_find(m, l);
	}
	return e;
}

/* A stripe's lock, waited for at most SHM_LOCK_WAIT_MS: a holder that
 * does not progress (stopped by SIGSTOP or a debugger, or frozen) would
 * otherwise stop every request on that stripe in every process; after the
 * wait the batch fails and the gateway's store-failure policy applies.  A
 * holder that died is recovered at once (EOWNERDEAD). */
static int lock_stripe(struct shm *m, uint32_t s, struct rl_diag *err)
{
	struct shm_stripe *st = stripe_at(m, s);
	int r = pthread_mutex_trylock(&st->lock);

	if (r == EBUSY) {
		struct timespec t = clock_mono_deadline(SHM_LOCK_WAIT_MS);
		r = pthread_mutex_clocklock(&st->lock, CLOCK_MONOTONIC, &t);
	}
	if (r == ETIMEDOUT) {
		diag(err, "shm store \"%s\": stripe %u's lock held for more than %d ms by a process that does not progress (stopped or traced?)",
		     m->path, s, SHM_LOCK_WAIT_MS);
		return -1;
	}
	if (r == EOWNERDEAD) {
		stripe_recover(m, s);
		r = pthread_mutex_consistent(&st->lock);
		if (r != 0)
			pthread_mutex_unlock(&st->lock);
	}
	if (r == 0)
		return 0;
	diag(err, "shm store \"%s\": lock of stripe %u: %s: stop the gateways and delete the file",
	     m->path, s, strerror(r));
	return -1;
}

/* ------------------------------------------------------------------ */
/* Batches                                                             */

/* Statistics of a batch, added to its stripes when it commits. */
struct shm_delta {
	int64_t keys, used[2], allowed, denied, inserts, evict_expired,
		evict_lru, evict_limiting;
};

struct shm_batch {
	struct shm *m;
	int64_t now;
	int journal;            /* RL_HIT: writes are journaled */
	int locked;
	uint64_t seq;
	uint32_t stripes[SHM_BATCH_MAX];   /* ascending */
	size_t ns;
	struct shm_delta d[SHM_BATCH_MAX];
	const void *touched[SHM_TOUCH_MAX];
	size_t ntouched;
	const struct shm_entry *claimed[SHM_CLAIM_MAX];
	size_t nclaimed;
	int damaged;            /* met a damaged entry or owner record */
	struct rl_diag *err;
};

static void batch_init(struct shm_batch *b, struct shm *m, int64_t now,
		       int journal, struct rl_diag *err)
{
	b->m = m;
	b->now = now;
	b->journal = journal;
	b->locked = 0;
	b->seq = 0;
	b->ns = 0;
	b->ntouched = 0;
	b->nclaimed = 0;
	b->damaged = 0;
	b->err = err;
}

static void batch_add_stripe(struct shm_batch *b, uint32_t s)
{
	size_t i = 0;

	while (i < b->ns && b->stripes[i] < s)
		i++;
	if (i < b->ns && b->stripes[i] == s)
		return;
	memmove(&b->stripes[i + 1], &b->stripes[i],
		(b->ns - i) * sizeof(b->stripes[0]));
	b->stripes[i] = s;
	b->ns++;
}

static struct shm_delta *delta(struct shm_batch *b, uint32_t s)
{
	for (size_t i = 0; i < b->ns; i++)
		if (b->stripes[i] == s)
			return &b->d[i];
	return &b->d[0];        /* not reached: every stripe was added */
}

/* Locks the stripes in ascending order and, for a batch that writes,
 * opens their journals: leader first, then followers. */
static int batch_lock(struct shm_batch *b)
{
	struct shm *m = b->m;

	for (size_t i = 0; i < b->ns; i++) {
		if (lock_stripe(m, b->stripes[i], b->err) < 0) {
			while (i-- > 0)
				unlock_stripe(m, b->stripes[i]);
			return -1;
		}
	}
	b->locked = 1;
	memset(b->d, 0, b->ns * sizeof(b->d[0]));
	if (!b->journal)
		return 0;
	struct shm_stripe *lead = stripe_at(m, b->stripes[0]);
	b->seq = (lead->jseq + 1) & (UINT64_MAX >> 2);
	lead->jseq = b->seq;
	for (size_t i = 0; i < b->ns; i++) {
		struct shm_stripe *st = stripe_at(m, b->stripes[i]);
		st->jused = 0;
		st->jleader = b->stripes[0];
		st->jnfollow = i == 0 ? (uint32_t)(b->ns - 1) : 0;
		if (i == 0)
			for (size_t k = 1; k < b->ns; k++)
				st->jfollow[k - 1] = (uint16_t)b->stripes[k];
		publish(&st->jstate, b->seq << 2 | J_ACTIVE);
	}
	return 0;
}

/* A batch that met damage it stepped round (entry_clear, pool_alloc) has
 * its stripes repaired before they are unlocked, when the batch is over:
 * repairing under a batch would count its keys twice. */
static void batch_unlock(struct shm_batch *b)
{
	for (size_t i = b->ns; i-- > 0;) {
		if (b->damaged) {
			stripe_repair(b->m, b->stripes[i]);
			counter_add(&stripe_at(b->m, b->stripes[i])->c.recoveries,
				    1);
		}
		unlock_stripe(b->m, b->stripes[i]);
	}
	b->locked = 0;
}

static void batch_commit(struct shm_batch *b)
{
	struct shm *m = b->m;

	for (size_t i = 0; i < b->ns; i++) {
		struct shm_counters *c = &stripe_at(m, b->stripes[i])->c;
		const struct shm_delta *d = &b->d[i];
		counter_add(&c->keys, d->keys);
		counter_add(&c->ring_used, d->used[POOL_RING]);
		counter_add(&c->lease_used, d->used[POOL_LEASE]);
		counter_add(&c->allowed, d->allowed);
		counter_add(&c->denied, d->denied);
		counter_add(&c->inserts, d->inserts);
		counter_add(&c->evict_expired, d->evict_expired);
		counter_add(&c->evict_lru, d->evict_lru);
		counter_add(&c->evict_limiting, d->evict_limiting);
	}
	if (!b->journal)
		return;
	if (b->ns == 1) {
		publish(&stripe_at(m, b->stripes[0])->jstate,
			b->seq << 2 | J_IDLE);
		return;
	}
	/* The commit point: from here recovery keeps the batch everywhere. */
	publish(&stripe_at(m, b->stripes[0])->jstate,
		b->seq << 2 | J_COMMITTED);
	if (shm_test_hook)
		shm_test_hook(SHM_HOOK_COMMITTING);
	for (size_t i = 1; i < b->ns; i++)
		publish(&stripe_at(m, b->stripes[i])->jstate,
			b->seq << 2 | J_IDLE);
	publish(&stripe_at(m, b->stripes[0])->jstate, b->seq << 2 | J_IDLE);
}

/* Undoes everything the batch wrote and unlocks. */
static void batch_abort(struct shm_batch *b)
{
	if (!b->locked)
		return;
	if (b->journal) {
		for (size_t i = 0; i < b->ns; i++) {
			uint32_t s = b->stripes[i];
			rollback(b->m, s);
			publish(&stripe_at(b->m, s)->jstate, b->seq << 2 | J_IDLE);
		}
	}
	batch_unlock(b);
}

/* Copies len bytes at addr (or the given image, when the state to restore
 * is not the current bytes) into stripe s's journal before addr is
 * written.  Only the first image of an address in a batch is kept. */
static int jlog(struct shm_batch *b, uint32_t s, const void *addr,
		const void *image, size_t len)
{
	struct shm *m = b->m;
	struct shm_stripe *st = stripe_at(m, s);
	uint64_t used, off, len64 = len;
	uint8_t *j;

	if (!b->journal)
		return 0;
	for (size_t i = 0; i < b->ntouched; i++)
		if (b->touched[i] == addr)
			return 0;
	used = st->jused;
	if (b->ntouched == SHM_TOUCH_MAX ||
	    used + record_bytes(len) > m->g.jcap) {
		diag(b->err, "shm store: batch too large for the journal");
		return -1;
	}
	j = journal_data(m, s) + used;
	off = (uint64_t)((const uint8_t *)addr - m->base);
	memcpy(j, &off, 8);
	memcpy(j + 8, &len64, 8);
	memcpy(j + 16, image ? image : addr, len);
	publish(&st->jused, used + record_bytes(len));
	b->touched[b->ntouched++] = addr;
	return 0;
}

static int jlog_entry(struct shm_batch *b, uint32_t s,
		      const struct shm_entry *e)
{
	return jlog(b, s, e, NULL, sizeof(*e));
}

static const uint64_t zero_words[3];

static int claimed(const struct shm_batch *b, const struct shm_entry *e)
{
	for (size_t i = 0; i < b->nclaimed; i++)
		if (b->claimed[i] == e)
			return 1;
	return 0;
}

static void claim(struct shm_batch *b, const struct shm_entry *e)
{
	if (b->nclaimed < SHM_CLAIM_MAX && !claimed(b, e))
		b->claimed[b->nclaimed++] = e;
}

/* ------------------------------------------------------------------ */
/* Entries and pools                                                   */

/* How good an eviction victim an entry is, best first (see the top of
 * the file). */
enum victim_class {
	V_EXPIRED,      /* expired: nothing is lost */
	V_IDLE,         /* live, not limiting a client */
	V_DENIED,       /* live, denied at its last hit: its ban would lift */
	V_NEVER         /* holds in-flight leases, or used by this batch */
};

static enum victim_class victim_class(const struct shm_batch *b,
				      const struct shm_entry *e)
{
	if (claimed(b, e))
		return V_NEVER;
	if (e->expiry <= b->now)
		return V_EXPIRED;
	if (e->kind == SHM_KIND_INFLIGHT)
		return V_NEVER; /* a live lease: its limit would be exceeded */
	return (e->flags & F_DENIED) ? V_DENIED : V_IDLE;
}

/* The best victim offered so far. */
struct victim {
	struct shm_entry *e;    /* NULL: none yet */
	enum victim_class cls;
};

/* Offers e: a better class wins; within a class, the earlier expiry for
 * expired entries, else the longer idle by the stripe's clock. */
static void victim_offer(const struct shm_batch *b, struct victim *v,
			 struct shm_entry *e, uint32_t clock)
{
	enum victim_class c = victim_class(b, e);

	if (c == V_NEVER)
		return;
	if (v->e && c == v->cls) {
		if (c == V_EXPIRED ? e->expiry >= v->e->expiry :
		    (uint32_t)(clock - e->stamp) <= (uint32_t)(clock - v->e->stamp))
			return;
	} else if (v->e && c > v->cls) {
		return;
	}
	v->e = e;
	v->cls = c;
}

/* Counts an eviction of the victim's class. */
static void victim_count(struct shm_batch *b, uint32_t s,
			 const struct victim *v)
{
	struct shm_delta *d = delta(b, s);

	if (v->cls == V_EXPIRED)
		d->evict_expired++;
	else if (v->cls == V_IDLE)
		d->evict_lru++;
	else
		d->evict_limiting++;
}

static void pool_free(struct shm_batch *b, uint32_t s, int pool,
		      uint64_t idx);

/* Empties e (journaled), freeing its pool slot. */
static int entry_clear(struct shm_batch *b, uint32_t s, struct shm_entry *e)
{
	if (jlog_entry(b, s, e) < 0)
		return -1;
	/* a damaged victim is only emptied: its w[0] may name no slot, or
	 * another entry's (batch_unlock repairs the rest) */
	if (!entry_sane(b->m, s, e)) {
		b->damaged = 1;
	} else if (e->flags & F_BIG) {
		int pool = pool_of(e->kind);
		uint64_t *slot = pool_slot(b->m, s, pool, e->w[0]);
		/* A batch that reuses the slot and then rolls back would
		 * leave e's old state clobbered: restore it as fresh, which is
		 * what evicting it would have done. */
		if (jlog(b, s, owners(b->m, s, pool) + e->w[0], NULL, 4) < 0 ||
		    jlog(b, s, slot, zero_words, 16) < 0)
			return -1;
		pool_free(b, s, pool, e->w[0]);
	}
	memset(e, 0, sizeof(*e));
	delta(b, s)->keys--;
	return 0;
}

static void pool_free(struct shm_batch *b, uint32_t s, int pool,
		      uint64_t idx)
{
	owners(b->m, s, pool)[idx] = 0;
	delta(b, s)->used[pool]--;
}

/* what: the candidates, all of them in-flight counters with live leases
 * or entries of this batch. */
static int store_full(struct shm_batch *b, uint32_t s, const char *what)
{
	counter_add(&stripe_at(b->m, s)->c.full, 1);
	diag(b->err, "store full: %s", what);
	return -1;
}

/* A free slot of the stripe's pool for e, or the slot of an evicted entry.
 * Returns the slot index, or -1 (err set). */
static int64_t pool_alloc(struct shm_batch *b, uint32_t s, int pool,
			  const struct shm_entry *for_e)
{
	struct shm *m = b->m;
	uint32_t *o = owners(m, s, pool), n = pool_n(m, pool);
	struct shm_entry *base = bucket_at(m, s, 0);
	struct victim v = { NULL, V_NEVER };
	uint32_t clock = stripe_at(m, s)->clock;
	int64_t k = -1;

	for (uint32_t i = 0; i < n; i++) {
		if (!o[i]) {
			k = i;
			break;
		}
	}
	if (k < 0) {
		uint64_t nent = (uint64_t)m->g.bps * SHM_WAYS;
		for (uint32_t i = 0; i < n && k < 0; i++) {
			struct shm_entry *e = o[i] <= nent ? base + o[i] - 1
							   : NULL;
			/* an owner record no entry backs (damaged): the
			 * slot is free */
			if (!e || !e->hash || !(e->flags & F_BIG) ||
			    pool_of(e->kind) != pool || e->w[0] != i) {
				k = i;
				b->damaged = 1;
			} else
				victim_offer(b, &v, e, clock);
		}
	}
	if (k < 0) {
		if (!v.e) {
			char what[128];
			snprintf(what, sizeof(what), pool == POOL_LEASE ?
				 "all %u in-flight slots of stripe %u hold live leases or this request's other keys" :
				 "all %u moving-window slots of stripe %u hold this request's other keys",
				 n, s);
			return store_full(b, s, what);
		}
		k = (int64_t)v.e->w[0];
		victim_count(b, s, &v);
		if (entry_clear(b, s, v.e) < 0)
			return -1;
	}
	if (jlog(b, s, &o[k], NULL, 4) < 0)
		return -1;
	o[k] = entry_index(m, s, for_e) + 1;
	delta(b, s)->used[pool]++;
	return k;
}

/* Gives e the fresh state of layout (kind, count), taking or giving back
 * a pool slot as the layout needs.  e is journaled. */
static int entry_set_layout(struct shm_batch *b, uint32_t s,
			    struct shm_entry *e, unsigned kind, uint64_t count)
{
	int big = layout_big(kind, count), pool = pool_of(kind);
	uint64_t idx = 0;

	if (jlog_entry(b, s, e) < 0)
		return -1;
	if ((e->flags & F_BIG) && big && pool_of(e->kind) == pool) {
		uint64_t *slot = pool_slot(b->m, s, pool, e->w[0]);
		idx = e->w[0];
		if (jlog(b, s, slot, zero_words, 16) < 0)
			return -1;
	} else {
		if (e->flags & F_BIG) {
			int old = pool_of(e->kind);
			if (jlog(b, s, owners(b->m, s, old) + e->w[0], NULL, 4) < 0 ||
			    jlog(b, s, pool_slot(b->m, s, old, e->w[0]),
				 zero_words, 16) < 0)
				return -1;
			pool_free(b, s, old, e->w[0]);
			e->flags &= (uint8_t)~F_BIG;
		}
		if (big) {
			int64_t k = pool_alloc(b, s, pool, e);
			if (k < 0)
				return -1;
			idx = (uint64_t)k;
		}
	}
	memset(e->w, 0, sizeof(e->w));
	if (big) {
		uint64_t *slot = pool_slot(b->m, s, pool, idx);
		slot[0] = slot[1] = 0;  /* n = 0: the rest is never read */
		e->w[0] = idx;
	}
	e->kind = (uint8_t)kind;
	e->count = (uint32_t)count;
	e->flags = big ? F_BIG : 0;
	e->expiry = 0;
	e->hits = e->denials = 0;
	e->remaining = sat32(count);
	return 0;
}

static int name_write(struct shm_batch *b, uint32_t s,
		      const struct shm_entry *e, const char *key, size_t len)
{
	struct shm_name *n;

	if (!b->m->g.name_bytes)
		return 0;
	n = name_of(b->m, s, e);
	if (jlog(b, s, n, NULL, sizeof(*n)) < 0)
		return -1;
	n->hash = e->hash;
	/* a longer key is kept findable by its parts (long values as the
	 * log writes them, the middle of a long path as "..."); len above
	 * stored says that it was cut short all the same */
	int cut;
	n->stored = (uint32_t)rl_key_name_compact(key, len, n->text,
						  SHM_NAME_TEXT, &cut);
	n->len = cut ? (uint32_t)len : n->stored;
	return 0;
}

/* Where a new key goes: a free entry of the emptier bucket (v->e set,
 * v->cls V_NEVER), else the best victim of both (see the top of the file).
 * v->e NULL when every entry holds live leases or is used by this batch. */
static void pick_entry(struct shm_batch *b, const struct shm_loc *l,
		       struct victim *v)
{
	struct shm_entry *b1 = bucket_at(b->m, l->s, l->b1);
	struct shm_entry *b2 = bucket_at(b->m, l->s, l->b2);
	uint32_t clock = stripe_at(b->m, l->s)->clock;
	struct shm_entry *free1 = NULL, *free2 = NULL;
	int n1 = 0, n2 = 0;

	for (int i = SHM_WAYS - 1; i >= 0; i--) {
		if (!b1[i].hash) {
			free1 = &b1[i];
			n1++;
		}
		if (!b2[i].hash) {
			free2 = &b2[i];
			n2++;
		}
	}
	v->e = NULL;
	v->cls = V_NEVER;
	if (free1 || free2) {
		v->e = n2 > n1 ? free2 : free1;
		return;
	}
	for (int i = 0; i < SHM_WAYS; i++) {
		victim_offer(b, v, &b1[i], clock);
		victim_offer(b, v, &b2[i], clock);
	}
}

/* A new entry for the key at l with a fresh state of (kind, count). */
static struct shm_entry *entry_insert(struct shm_batch *b,
				      const struct shm_loc *l, unsigned kind,
				      uint64_t count, const char *key,
				      size_t key_len)
{
	struct shm_stripe *st = stripe_at(b->m, l->s);
	uint32_t s = l->s;
	struct shm_entry *e;
	struct victim v;

	pick_entry(b, l, &v);
	e = v.e;
	if (!e) {
		store_full(b, s, "both buckets of the key (16 entries) hold live in-flight leases or this request's other keys");
		return NULL;
	}
	if (e->hash) {
		victim_count(b, s, &v);
		if (entry_clear(b, s, e) < 0)
			return NULL;
	} else if (jlog_entry(b, s, e) < 0) {
		return NULL;
	}
	claim(b, e);
	e->hash = l->h;
	e->flags = 0;
	if (entry_set_layout(b, s, e, kind, count) < 0) {
		e->hash = 0;    /* the journal restores it; keep it empty */
		return NULL;
	}
	e->stamp = st->clock;
	if (name_write(b, s, e, key, key_len) < 0)
		return NULL;
	delta(b, s)->keys++;
	delta(b, s)->inserts++;
	return e;
}

/* The key of l, made to have the layout (kind, count): found, reset or
 * inserted.  NULL with err set (store full). */
static struct shm_entry *entry_get(struct shm_batch *b,
				   const struct shm_loc *l,
				   struct shm_entry *e, unsigned kind,
				   uint64_t count, const char *key,
				   size_t key_len)
{
	if (!e)
		return entry_insert(b, l, kind, count, key, key_len);
	claim(b, e);
	if (!entry_fits(e, kind, count) &&
	    entry_set_layout(b, l->s, e, kind, count) < 0)
		return NULL;
	return e;
}

/* Journals a moving-window ring before consume.  The image is the ring's
 * header with the hits that no longer count dropped (live = count -
 * remaining), not its literal bytes: consume writes new times only past
 * the live hits, possibly over expired ones, so restoring [n, head] of the
 * live hits restores an equivalent state without copying the ring.  The
 * layout ([n, head, ts[count]], oldest at head) is rules/strategy.c's. */
static int jlog_ring(struct shm_batch *b, uint32_t s,
		     const struct rl_step *p, const uint64_t *st)
{
	uint64_t img[2] = { 0, 0 };
	struct rl_verdict v;

	if (st[0] <= p->count && (st[0] == 0 || st[1] < p->count)) {
		uint64_t live;

		rl_strategy_check(p, st, b->now, &v);
		live = p->count - v.remaining;
		if (live <= st[0] && live > 0) {
			img[0] = live;
			img[1] = (st[1] + (st[0] - live)) % p->count;
		}
	}
	return jlog(b, s, st, img, sizeof(img));
}

/* ------------------------------------------------------------------ */
/* apply                                                               */

struct shm_opx {
	struct shm_loc loc;
	struct shm_entry *e;    /* on the first op of its key */
	size_t first;           /* the first op with the same key */
};

static int op_valid(const struct shm *m, const struct rl_store_op *op,
		    struct rl_diag *err)
{
	const struct rl_step *p = &op->step;

	if (!rl_store_op_valid(op, err))
		return 0;
	if (layout_big(p->strategy, p->count) &&
	    layout_words(p->strategy, p->count) > m->g.ring_words) {
		diag(err, "shm store \"%s\": moving-window count %llu is above the %llu its slots hold: stop the gateways and delete the file so that it is recreated for these rules",
		     m->path, (unsigned long long)p->count,
		     (unsigned long long)(m->g.ring_words - 2));
		return 0;
	}
	return 1;
}

static const uint64_t *state_for_check(const struct shm *m,
				       struct shm_entry *e,
				       const struct shm_loc *l,
				       const struct rl_step *p)
{
	if (e && entry_fits(e, p->strategy, p->count))
		return entry_state(m, l->s, e);
	return zero_words;
}

/* Verdicts when a key appears twice in a batch: each op sees the state as
 * the earlier ops would leave it, on scratch copies (as the memstore). */
static int check_with_duplicates(const struct shm *m, struct rl_store_op *ops,
				 struct shm_opx *x, size_t n, int64_t now)
{
	uint64_t *scratch[SHM_BATCH_MAX] = { 0 };
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		const struct rl_step *p = &ops[i].step;
		size_t f = x[i].first;
		struct rl_verdict dummy;

		if (!scratch[f]) {
			size_t words = layout_words(p->strategy, p->count);
			const uint64_t *cur = state_for_check(m, x[f].e,
							      &x[f].loc, p);
			scratch[f] = calloc(words, sizeof(uint64_t));
			if (!scratch[f]) {
				rc = -1;
				break;
			}
			if (cur != zero_words)
				memcpy(scratch[f], cur, words * sizeof(uint64_t));
		}
		rl_strategy_check(p, scratch[f], now, &ops[i].v);
		if (ops[i].v.allowed && !ops[i].probe)
			rl_strategy_consume(p, scratch[f], now, &dummy);
	}
	for (size_t i = 0; i < n; i++)
		free(scratch[i]);
	return rc;
}

/* Every op's verdict is known and every entry exists with its layout:
 * consume all or penalize all, journaling before each write.  Probe ops
 * are never written, not even their statistics (their key may have no
 * entry); the batch's other ops record a denial. */
static int apply_outcome(struct shm_batch *b, struct rl_store_op *ops,
			 struct shm_opx *x, size_t n)
{
	int all = 1, hooked = 0;

	for (size_t i = 0; i < n; i++)
		all &= ops[i].v.allowed;
	for (size_t i = 0; i < n; i++) {
		const struct rl_step *p = &ops[i].step;
		if (ops[i].probe)
			continue;
		struct shm_entry *e = x[x[i].first].e;
		uint32_t s = x[i].loc.s;
		struct shm_stripe *st = stripe_at(b->m, s);
		uint64_t *state = entry_state(b->m, s, e);
		int own = ops[i].v.allowed;

		if (jlog_entry(b, s, e) < 0)
			return -1;
		if (all) {
			if ((e->flags & F_BIG) && jlog_ring(b, s, p, state) < 0)
				return -1;
			rl_strategy_consume(p, state, b->now, &ops[i].v);
		} else {
			rl_strategy_penalize(p, state, b->now, &ops[i].v);
		}
		if (!hooked && shm_test_hook) {
			hooked = 1;
			shm_test_hook(SHM_HOOK_WRITING);
		}
		e->expiry = rl_strategy_expiry(p, state);
		e->stamp = ++st->clock;
		e->remaining = sat32(ops[i].v.remaining);
		if (!own) {
			e->denials += e->denials != UINT32_MAX;
			e->flags |= F_DENIED;
			delta(b, s)->denied++;
		} else if (all) {
			e->hits += e->hits != UINT32_MAX;
			e->flags &= (uint8_t)~F_DENIED;
			delta(b, s)->allowed++;
		}
	}
	return 0;
}

static int shm_apply(void *impl, struct rl_store_op *ops, size_t n,
		     enum rl_mode mode, int64_t now_ms, struct rl_diag *err)
{
	struct shm *m = impl;
	struct shm_opx x[SHM_BATCH_MAX];
	struct shm_batch b;
	int dup = 0;

	if (n == 0)
		return 0;
	if (n > SHM_BATCH_MAX) {
		diag(err, "batch of %zu ops: the shm store takes at most %d",
		     n, SHM_BATCH_MAX);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (!op_valid(m, &ops[i], err))
			return -1;
	batch_init(&b, m, now_ms, mode == RL_HIT, err);
	for (size_t i = 0; i < n; i++) {
		locate(m, key_hash(m, ops[i].key, ops[i].key_len), &x[i].loc);
		prefetch_loc(m, &x[i].loc);
		x[i].first = i;
		x[i].e = NULL;
		for (size_t j = 0; j < i; j++) {
			if (x[j].loc.h != x[i].loc.h)
				continue;
			if (ops[j].step.strategy != ops[i].step.strategy ||
			    ops[j].step.count != ops[i].step.count) {
				diag(err, "one key with two strategies or counts in one batch");
				return -1;
			}
			x[i].first = x[j].first;
			dup = 1;
			break;
		}
		batch_add_stripe(&b, x[i].loc.s);
	}
	if (batch_lock(&b) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (x[i].first == i)
			x[i].e = bucket_find_locked(m, &x[i].loc);
	if (mode == RL_HIT) {
		for (size_t i = 0; i < n; i++)
			if (x[i].e)
				claim(&b, x[i].e);
		for (size_t i = 0; i < n; i++) {
			const struct rl_step *p = &ops[i].step;
			int written = 0;
			if (x[i].first != i)
				continue;
			/* no entry for a key that only probe ops name */
			for (size_t j = i; j < n; j++)
				written |= x[j].first == i && !ops[j].probe;
			if (!written)
				continue;
			x[i].e = entry_get(&b, &x[i].loc, x[i].e, p->strategy,
					   p->count, ops[i].key, ops[i].key_len);
			if (!x[i].e)
				goto abort;
			claim(&b, x[i].e);
		}
	}
	if (dup) {
		if (check_with_duplicates(m, ops, x, n, now_ms) < 0) {
			diag(err, "out of memory");
			goto abort;
		}
	} else {
		for (size_t i = 0; i < n; i++)
			rl_strategy_check(&ops[i].step,
					  state_for_check(m, x[i].e, &x[i].loc,
							  &ops[i].step),
					  now_ms, &ops[i].v);
	}
	if (mode == RL_HIT) {
		if (apply_outcome(&b, ops, x, n) < 0)
			goto abort;
		batch_commit(&b);
	}
	batch_unlock(&b);
	return 0;
abort:
	batch_abort(&b);
	return -1;
}

/* ------------------------------------------------------------------ */
/* In-flight                                                           */

static int lease_max_ok(const struct shm *m, uint64_t max,
			struct rl_diag *err)
{
	if (max < 1 || max > RL_INFLIGHT_MAX) {
		diag(err, "in-flight maximum outside 1..RL_INFLIGHT_MAX");
		return 0;
	}
	if (layout_big(SHM_KIND_INFLIGHT, max) &&
	    rl_inflight_state_words(max) > m->g.lease_words) {
		diag(err, "shm store \"%s\": concurrency=%llu is above the %llu in-flight requests per key its slots hold: stop the gateways and delete the file so that it is recreated for these rules",
		     m->path, (unsigned long long)max,
		     (unsigned long long)((m->g.lease_words - 1) / 2));
		return 0;
	}
	return 1;
}

/* Journals the leases an acquire or release may move: the sweep compacts
 * the live ones in place, and acquire appends one. */
static int jlog_leases(struct shm_batch *b, uint32_t s, struct shm_entry *e,
		       const uint64_t *st, int adding)
{
	uint64_t n = st[0] < e->count ? st[0] : e->count;

	if (!(e->flags & F_BIG))
		return 0;       /* in the entry, already journaled */
	if (adding && n < e->count)
		n++;
	return jlog(b, s, st, NULL, (1 + 2 * n) * sizeof(uint64_t));
}

static int shm_acquire(void *impl, const char *key, size_t key_len,
		       uint64_t max, int64_t lease_ms, int64_t now_ms,
		       uint64_t *lease_id, uint64_t *held, struct rl_diag *err)
{
	struct shm *m = impl;
	struct shm_batch b;
	struct shm_loc l;
	struct shm_entry *e;
	struct shm_stripe *st;
	uint64_t *state, id, n = 0;
	int got;

	if (key_len > RL_STORE_KEY_MAX) {
		diag(err, "store key longer than RL_STORE_KEY_MAX");
		return -1;
	}
	if (!lease_max_ok(m, max, err))
		return -1;
	locate(m, key_hash(m, key, key_len), &l);
	batch_init(&b, m, now_ms, 1, err);
	batch_add_stripe(&b, l.s);
	if (batch_lock(&b) < 0)
		return -1;
	st = stripe_at(m, l.s);
	e = entry_get(&b, &l, bucket_find_locked(m, &l), SHM_KIND_INFLIGHT, max, key,
		      key_len);
	if (!e || jlog_entry(&b, l.s, e) < 0)
		goto abort;
	state = entry_state(m, l.s, e);
	if (jlog_leases(&b, l.s, e, state, 1) < 0)
		goto abort;
	id = ++st->lease;
	got = rl_inflight_acquire(state, max, now_ms, lease_ms, id, &n);
	if (shm_test_hook)
		shm_test_hook(SHM_HOOK_WRITING);
	e->expiry = inflight_expiry(state, max);
	e->stamp = ++st->clock;
	e->remaining = sat32(max - n);
	if (got) {
		e->hits += e->hits != UINT32_MAX;
		delta(&b, l.s)->allowed++;
	} else {
		e->denials += e->denials != UINT32_MAX;
		delta(&b, l.s)->denied++;
	}
	batch_commit(&b);
	batch_unlock(&b);
	if (got && lease_id)
		*lease_id = id;
	if (held)
		*held = n;
	return got;
abort:
	batch_abort(&b);
	return -1;
}

/* A counter left with no lease is dropped at once. */
static int shm_release(void *impl, const char *key, size_t key_len,
		       uint64_t lease_id, int64_t now_ms, struct rl_diag *err)
{
	struct shm *m = impl;
	struct shm_batch b;
	struct shm_loc l;
	struct shm_entry *e;
	uint64_t *state, n = 0;

	if (key_len > RL_STORE_KEY_MAX)
		return 0;
	locate(m, key_hash(m, key, key_len), &l);
	batch_init(&b, m, now_ms, 1, err);
	batch_add_stripe(&b, l.s);
	if (batch_lock(&b) < 0)
		return -1;
	e = bucket_find_locked(m, &l);
	if (!e || e->kind != SHM_KIND_INFLIGHT) {
		batch_commit(&b);
		batch_unlock(&b);
		return 0;
	}
	state = entry_state(m, l.s, e);
	if (jlog_entry(&b, l.s, e) < 0 || jlog_leases(&b, l.s, e, state, 0) < 0)
		goto abort;
	rl_inflight_release(state, e->count, now_ms, lease_id, &n);
	if (n == 0) {
		if (entry_clear(&b, l.s, e) < 0)
			goto abort;
	} else {
		e->expiry = inflight_expiry(state, e->count);
		e->remaining = sat32(e->count - n);
	}
	batch_commit(&b);
	batch_unlock(&b);
	return 0;
abort:
	batch_abort(&b);
	return -1;
}

/* ------------------------------------------------------------------ */
/* Inspect                                                             */

struct shm *shm_of(const struct rl_store *st)
{
	return st && st->ops == &shm_ops ? st->impl : NULL;
}

void shm_stats(struct shm *m, struct shm_stats *o)
{
	const struct shm_header *h = (const struct shm_header *)m->base;

	memset(o, 0, sizeof(*o));
	o->file_bytes = m->g.size;
	o->version = h->version;
	o->stripes = m->g.stripes;
	o->slots = (uint64_t)m->g.stripes * m->g.bps * SHM_WAYS;
	o->name_bytes = m->g.name_bytes;
	o->ring_slots = (uint64_t)m->g.stripes * m->g.ring_n;
	o->ring_bytes = m->g.ring_words * 8;
	o->lease_slots = (uint64_t)m->g.stripes * m->g.lease_n;
	o->lease_bytes = m->g.lease_words * 8;
	o->max_moving = m->g.ring_words - 2;
	o->max_leases = (m->g.lease_words - 1) / 2;
	o->created_ms = h->created_ms;
	for (uint32_t s = 0; s < m->g.stripes; s++) {
		const struct shm_counters *c = &stripe_at(m, s)->c;
		o->keys += counter_get(&c->keys);
		o->ring_used += counter_get(&c->ring_used);
		o->lease_used += counter_get(&c->lease_used);
		o->allowed += counter_get(&c->allowed);
		o->denied += counter_get(&c->denied);
		o->inserts += counter_get(&c->inserts);
		o->evict_expired += counter_get(&c->evict_expired);
		o->evict_lru += counter_get(&c->evict_lru);
		o->evict_limiting += counter_get(&c->evict_limiting);
		o->full += counter_get(&c->full);
		o->recoveries += counter_get(&c->recoveries);
		o->resets += counter_get(&c->resets);
	}
}

static void key_info(struct shm *m, uint32_t s, struct shm_entry *e,
		     struct shm_key_info *k)
{
	const uint64_t *st = entry_state(m, s, e);
	uint32_t clock = stripe_at(m, s)->clock;

	memset(k, 0, sizeof(*k));
	k->hash = e->hash;
	k->kind = e->kind;
	k->count = e->count;
	for (int i = 0; i < 3; i++)
		k->state[i] = st[i];
	k->expiry_ms = e->expiry;
	k->hits = e->hits;
	k->denials = e->denials;
	k->remaining = e->remaining;
	k->limiting = (e->flags & F_DENIED) != 0;
	k->idle = (uint32_t)(clock - e->stamp);
	if (m->g.name_bytes) {
		const struct shm_name *n = name_of(m, s, e);
		if (n->hash == e->hash && n->stored <= SHM_NAME_TEXT) {
			memcpy(k->name, n->text, n->stored);
			k->name[n->stored] = '\0';
			k->name_len = n->len;
			k->name_known = 1;
		}
	}
}

int shm_scan(struct shm *m,
	     int (*fn)(void *ctx, const struct shm_key_info *k), void *ctx,
	     struct rl_diag *err)
{
	struct shm_key_info *buf = malloc(SHM_SCAN_BUCKETS * SHM_WAYS *
					  sizeof(*buf));
	int rc = 0;

	if (!buf) {
		diag(err, "shm store \"%s\": out of memory", m->path);
		return -1;
	}
	for (uint32_t s = 0; s < m->g.stripes && rc == 0; s++) {
		for (uint32_t b0 = 0; b0 < m->g.bps && rc == 0;
		     b0 += SHM_SCAN_BUCKETS) {
			uint32_t end = b0 + SHM_SCAN_BUCKETS;
			size_t nk = 0;

			if (end > m->g.bps)
				end = m->g.bps;
			if (lock_stripe(m, s, err) < 0) {
				rc = -1;
				break;
			}
			for (uint32_t bk = b0; bk < end; bk++) {
				struct shm_entry *e = bucket_at(m, s, bk);
				for (int i = 0; i < SHM_WAYS; i++)
					if (e[i].hash && entry_sane(m, s, &e[i]))
						key_info(m, s, &e[i], &buf[nk++]);
			}
			unlock_stripe(m, s);
			for (size_t i = 0; i < nk && rc == 0; i++)
				rc = fn(ctx, &buf[i]);
		}
	}
	free(buf);
	return rc;
}

int shm_remove(struct shm *m, uint64_t hash, char *err, size_t errcap)
{
	struct rl_diag d = { 0, "" };
	struct shm_batch b;
	struct shm_loc l;
	struct shm_entry *e;

	if (hash == 0)
		return 0;       /* no key hashes to 0: it marks empty entries */
	locate(m, hash, &l);
	batch_init(&b, m, 0, 1, &d);
	batch_add_stripe(&b, l.s);
	if (batch_lock(&b) < 0)
		goto fail;
	e = bucket_find_locked(m, &l);
	if (e && entry_clear(&b, l.s, e) < 0) {
		batch_abort(&b);
		goto fail;
	}
	batch_commit(&b);
	if (e)
		counter_add(&stripe_at(m, l.s)->c.resets, 1);
	batch_unlock(&b);
	return e != NULL;
fail:
	snprintf(err, errcap, "%s", d.msg);
	return -1;
}

/* ------------------------------------------------------------------ */
/* Opening: create under flock, or attach and check                    */

static void shm_destroy(void *impl)
{
	struct shm *m = impl;

	if (!m)
		return;
	if (m->base)
		munmap(m->base, m->map_bytes);
	free(m->path);
	free(m);
}

static int init_file(struct shm *m, int fd, const struct shm_config *c,
		     char *err, size_t errcap)
{
	struct shm_header *h;
	pthread_mutexattr_t attr;
	struct shm_geom g;
	int r;

	if (geom_plan(c, &g, err, errcap) < 0)
		return -1;
	/* A creator that died half-way left zeros or junk: start clean. */
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)g.size) < 0) {
		snprintf(err, errcap, "shm store \"%s\": ftruncate: %s", c->path,
			 strerror(errno));
		return -1;
	}
	/* Reserve the memory now, so that a full /dev/shm fails here rather
	 * than with SIGBUS on some later first touch. */
	r = posix_fallocate(fd, 0, (off_t)g.size);
	if (r != 0 && r != EOPNOTSUPP && r != EINVAL) {
		char hs[32];
		human(hs, sizeof(hs), g.size);
		snprintf(err, errcap, "shm store \"%s\": cannot reserve size=%s: %s",
			 c->path, hs, strerror(r));
		if (ftruncate(fd, 0) < 0) {
			/* the file stays blank: the next opener retries */
		}
		return -1;
	}
	m->base = mmap(NULL, g.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		snprintf(err, errcap, "shm store \"%s\": mmap: %s", c->path,
			 strerror(errno));
		return -1;
	}
	m->map_bytes = g.size;
	m->g = g;
	h = (struct shm_header *)m->base;
	/* before anything else: from here the file is "being initialised",
	 * not somebody's file with a bad magic */
	memcpy(h->magic, shm_magic_init, sizeof(shm_magic_init));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (getrandom(h->secret, sizeof(h->secret), 0) !=
	    (ssize_t)sizeof(h->secret)) {
		snprintf(err, errcap, "shm store \"%s\": getrandom: %s", c->path,
			 strerror(errno));
		return -1;
	}
	h->version = SHM_LAYOUT_VERSION;
	h->ways = SHM_WAYS;
	h->entry_bytes = SHM_ENTRY_BYTES;
	h->name_bytes = g.name_bytes;
	h->mutex_bytes = sizeof(pthread_mutex_t);
	h->stripe_struct_bytes = sizeof(struct shm_stripe);
	h->byte_order = 0x01020304;
	h->stripes = g.stripes;
	h->file_bytes = g.size;
	h->ring_words = g.ring_words;
	h->lease_words = g.lease_words;
	h->bps = g.bps;
	h->ring_n = g.ring_n;
	h->lease_n = g.lease_n;
	h->jcap = g.jcap;
	h->stripe_bytes = g.stripe_bytes;
	h->off_stripes = g.off_stripes;
	h->off_buckets = g.off_buckets;
	h->off_names = g.off_names;
	h->off_ring = g.off_ring;
	h->off_lease = g.off_lease;
	h->created_ms = clock_wall_ms();
	if (pthread_mutexattr_init(&attr) != 0 ||
	    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0) {
		snprintf(err, errcap, "shm store \"%s\": robust process-shared mutexes are not supported",
			 c->path);
		return -1;
	}
	for (uint32_t s = 0; s < g.stripes; s++)
		pthread_mutex_init(&stripe_at(m, s)->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	if (shm_test_hook)
		shm_test_hook(SHM_HOOK_CREATING);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	memcpy(h->magic, shm_magic, sizeof(shm_magic));
	return 0;
}

/* A non-blank file too short to hold a header is somebody else's. */
static int file_too_short(const struct shm_config *c, uint64_t file_bytes,
			  char *err, size_t errcap)
{
	if (file_bytes >= SHM_HEADER_BYTES)
		return 0;
	snprintf(err, errcap, "shm store \"%s\": not a rategate store (%llu bytes, shorter than a header): move it away or choose another path",
		 c->path, (unsigned long long)file_bytes);
	return 1;
}

/* Whether configuration c would attach to a file of file_bytes whose
 * header is h: 0 and the file's geometry in *g, or -1 and the message the
 * gateway stops with.  Reads nothing but *h, so attach_file (on the
 * mapping) and shm_probe_file (rategate -t, on a copy read with pread)
 * decide alike. */
static int header_check(const struct shm_header *h,
			const struct shm_config *c, uint64_t file_bytes,
			struct shm_geom *out, char *err, size_t errcap)
{
	struct shm_geom g;
	char a[32], b[32];

	if (memcmp(h->magic, shm_magic, sizeof(shm_magic)) != 0) {
		snprintf(err, errcap, "shm store \"%s\": not a rategate store (bad magic): move it away or choose another path",
			 c->path);
		return -1;
	}
	if (h->version != SHM_LAYOUT_VERSION) {
		snprintf(err, errcap, "shm store \"%s\": layout version %u, this rategate reads version %u: stop the gateways and delete the file (its counters are lost), or run the rategate that created it",
			 c->path, h->version, SHM_LAYOUT_VERSION);
		return -1;
	}
	if (h->ways != SHM_WAYS || h->entry_bytes != SHM_ENTRY_BYTES ||
	    (h->name_bytes != 0 && h->name_bytes != SHM_NAME_BYTES) ||
	    h->mutex_bytes != sizeof(pthread_mutex_t) ||
	    h->stripe_struct_bytes != sizeof(struct shm_stripe) ||
	    h->byte_order != 0x01020304) {
		snprintf(err, errcap, "shm store \"%s\": slot geometry differs from this build (%u entries of %u bytes per bucket, %u-byte locks; this build: %d of %d, %zu): stop the gateways and delete the file (its counters are lost)",
			 c->path, h->ways, h->entry_bytes, h->mutex_bytes,
			 SHM_WAYS, SHM_ENTRY_BYTES, sizeof(pthread_mutex_t));
		return -1;
	}
	if (h->file_bytes != file_bytes ||
	    geom_layout(h->file_bytes, h->stripes, h->ring_words, h->ring_n,
			h->lease_words, h->lease_n, h->name_bytes, &g) < 0 ||
	    g.bps != h->bps || g.jcap != h->jcap ||
	    g.stripe_bytes != h->stripe_bytes ||
	    g.off_stripes != h->off_stripes ||
	    g.off_buckets != h->off_buckets || g.off_names != h->off_names ||
	    g.off_ring != h->off_ring || g.off_lease != h->off_lease) {
		snprintf(err, errcap, "shm store \"%s\": damaged header (its geometry does not add up to the file's %llu bytes): stop the gateways and delete the file",
			 c->path, (unsigned long long)file_bytes);
		return -1;
	}
	*out = g;
	if (c->attach_only)
		return 0;
	if (c->size != file_bytes) {
		human(a, sizeof(a), file_bytes);
		human(b, sizeof(b), c->size);
		snprintf(err, errcap, "shm store \"%s\": the file holds size=%s but storage asks for size=%s: stop the gateways and delete the file (its counters are lost), or set size=%s",
			 c->path, a, b, a);
		return -1;
	}
	if (c->max_moving > 1 && c->max_moving + 2 > g.ring_words) {
		snprintf(err, errcap, "shm store \"%s\": %s needs moving-window counts up to %llu but the file's slots hold counts up to %llu: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (moving-window-max=N on the storage line reserves room for later rules)",
			 c->path, c->moving_by ? c->moving_by : "the rule set",
			 (unsigned long long)c->max_moving,
			 (unsigned long long)(g.ring_words - 2));
		return -1;
	}
	if (c->max_leases && rl_inflight_state_words(c->max_leases) >
	    g.lease_words) {
		snprintf(err, errcap, "shm store \"%s\": %s needs concurrency up to %llu but the file's slots hold up to %llu: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (concurrency-max=N on the storage line reserves room for later rules)",
			 c->path, c->leases_by ? c->leases_by : "the rule set",
			 (unsigned long long)c->max_leases,
			 (unsigned long long)((g.lease_words - 1) / 2));
		return -1;
	}
	return 0;
}

static int attach_file(struct shm *m, int fd, const struct shm_config *c,
		       uint64_t file_bytes, char *err, size_t errcap)
{
	const struct shm_header *h;

	if (file_too_short(c, file_bytes, err, errcap))
		return -1;
	m->base = mmap(NULL, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		       fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		snprintf(err, errcap, "shm store \"%s\": mmap: %s", c->path,
			 strerror(errno));
		return -1;
	}
	m->map_bytes = file_bytes;
	if (header_check((const struct shm_header *)m->base, c, file_bytes,
			 &m->g, err, errcap) < 0)
		return -1;
	h = (const struct shm_header *)m->base;
	m->sip = rl_sipkey_of(h->secret);
	return 0;
}

/* flock(fd, op), retried on EINTR, then fstat into *sb.  Returns 0, or -1
 * with err set. */
static int lock_stat(int fd, int op, const char *path, struct stat *sb,
		     char *err, size_t errcap)
{
	while (flock(fd, op) < 0) {
		if (errno != EINTR) {
			snprintf(err, errcap, "shm store \"%s\": flock: %s",
				 path, strerror(errno));
			return -1;
		}
	}
	if (fstat(fd, sb) < 0) {
		snprintf(err, errcap, "shm store \"%s\": %s", path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

/* Whether the file has never been initialised: empty, its header page
 * still all zeros (its creator died before its first write), or marked
 * as being initialised (its creator died before writing the magic, its
 * last write; the caller holds the flock, so no creator is at work).  Any
 * other content is somebody's file and is never touched. */
static int file_blank(int fd, uint64_t size)
{
	uint8_t page[SHM_HEADER_BYTES];
	size_t want = size < sizeof(page) ? (size_t)size : sizeof(page);

	if (size == 0)
		return 1;
	if (pread(fd, page, want, 0) != (ssize_t)want)
		return 0;
	if (want >= sizeof(shm_magic_init) &&
	    memcmp(page, shm_magic_init, sizeof(shm_magic_init)) == 0)
		return 1;
	for (size_t i = 0; i < want; i++)
		if (page[i])
			return 0;
	return 1;
}

/* The message for a file this process may not open read-write (EACCES):
 * who owns it, its mode, who we are, and the two ways out.  What happens
 * after a quickstart run as root, whose file a www-data gateway then
 * cannot open ("0660 less the umask", root:root). */
static const char *
user_text(uid_t uid, char *buf, size_t cap)
{
	struct passwd *pw = getpwuid(uid);

	if (pw != NULL)
		snprintf(buf, cap, "%s", pw->pw_name);
	else
		snprintf(buf, cap, "%lu", (unsigned long)uid);
	return buf;
}

static void
no_access(const char *path, char *err, size_t errcap)
{
	struct stat sb;
	char own[64], grp[64], me[64];
	uid_t uid = geteuid();

	if (stat(path, &sb) != 0) {
		snprintf(err, errcap, "shm store \"%s\": %s", path, strerror(EACCES));
		return;
	}
	struct group *gr = getgrgid(sb.st_gid);
	if (gr)
		snprintf(grp, sizeof(grp), "%s", gr->gr_name);
	else
		snprintf(grp, sizeof(grp), "%lu", (unsigned long)sb.st_gid);
	user_text(sb.st_uid, own, sizeof(own));
	user_text(uid, me, sizeof(me));
	snprintf(err, errcap, "shm store \"%s\": %s: the file is %s:%s mode %04o and this process runs as %s (uid %lu), which must read and write it: give it to the gateways' user (chown %s %s) or delete it (its counters are lost) so that the first gateway creates it",
		 path, strerror(EACCES), own, grp, (unsigned)(sb.st_mode & 07777),
		 me, (unsigned long)uid, me, path);
}

/* The message for a file that cannot be created (it does not exist):
 * its directory is missing, read-only, or not writable by this process,
 * which then says who it is, as no_access does for the file.  -t's check
 * (can_create) and a start say the same. */
static void
no_dir(const char *path, int e, char *err, size_t errcap)
{
	char me[64];
	uid_t uid = geteuid();

	if (e == EACCES || e == EPERM)
		snprintf(err, errcap, "shm store \"%s\": %s (its directory): this process runs as %s (uid %lu), which must be able to create the file there: make the directory writable by that user, or name another in the storage line",
			 path, strerror(e), user_text(uid, me, sizeof(me)),
			 (unsigned long)uid);
	else
		snprintf(err, errcap, "shm store \"%s\": %s (its directory)",
			 path, strerror(e));
}

int shm_store_open(const struct shm_config *c, struct rl_store *st,
		   char *err, size_t errcap)
{
	struct shm *m = calloc(1, sizeof(*m));
	struct stat sb;
	int fd = -1, rc = -1;

	if (!m || !(m->path = strdup(c->path))) {
		snprintf(err, errcap, "out of memory");
		goto done;
	}
	fd = open(c->path, O_RDWR | O_CLOEXEC | (c->attach_only ? 0 : O_CREAT),
		  0660);
	if (fd < 0) {
		int e = errno;

		if (c->attach_only && e == ENOENT)
			snprintf(err, errcap, "shm store \"%s\": no such file (no gateway has created it yet)",
				 c->path);
		else if (!c->attach_only && stat(c->path, &sb) != 0 &&
			 errno == ENOENT)
			no_dir(c->path, e, err, errcap);
		else if (e == EACCES)
			no_access(c->path, err, errcap);
		else
			snprintf(err, errcap, "shm store \"%s\": %s", c->path,
				 strerror(e));
		goto done;
	}
	/* One opener at a time decides whether the file needs initialising,
	 * so two processes starting together cannot both create it. */
	if (lock_stat(fd, LOCK_EX, c->path, &sb, err, errcap) < 0)
		goto done;
	if (file_blank(fd, (uint64_t)sb.st_size)) {
		if (c->attach_only) {
			snprintf(err, errcap, "shm store \"%s\": not initialised yet (no gateway has used it)",
				 c->path);
			goto done;
		}
		if (init_file(m, fd, c, err, errcap) < 0)
			goto done;
		m->sip = rl_sipkey_of(((struct shm_header *)m->base)->secret);
	} else if (attach_file(m, fd, c, (uint64_t)sb.st_size, err,
			       errcap) < 0) {
		goto done;
	}
	m->dev = sb.st_dev;
	m->ino = sb.st_ino;
	st->ops = &shm_ops;
	st->impl = m;
	m = NULL;
	rc = 0;
done:
	if (fd >= 0) {
		/* The mapping keeps the open file, and with it the flock,
		 * alive: unlock explicitly. */
		flock(fd, LOCK_UN);
		close(fd);
	}
	shm_destroy(m);
	return rc;
}

int shm_file_replaced(const struct shm *m)
{
	struct stat sb;

	if (stat(m->path, &sb) != 0)
		return errno == ENOENT;    /* another error tells nothing */
	return sb.st_dev != m->dev || sb.st_ino != m->ino;
}

void store_shm_config(const struct rl_ruleset *rs, struct shm_config *c)
{
	const struct rl_settings *s = rl_ruleset_settings(rs);
	uint64_t max_moving = rl_ruleset_max_moving(rs);
	uint64_t max_leases = rl_ruleset_max_inflight(rs);

	memset(c, 0, sizeof(*c));
	c->path = s->storage.path ? s->storage.path : SHM_DEFAULT_PATH;
	c->size = s->storage.size ? s->storage.size : SHM_DEFAULT_SIZE;
	c->moving_by = rl_ruleset_max_moving_by(rs);
	c->leases_by = rl_ruleset_max_inflight_by(rs);
	if (s->storage.moving_max > max_moving) {
		max_moving = s->storage.moving_max;
		c->moving_by = "the storage line's moving-window-max=";
	}
	if (s->storage.concurrency_max > max_leases) {
		max_leases = s->storage.concurrency_max;
		c->leases_by = "the storage line's concurrency-max=";
	}
	c->max_moving = max_moving;
	c->max_leases = max_leases > SHM_LEASES_DEFAULT ? max_leases : 0;
	c->names = s->storage.names;
}

int store_shm_open(const struct rl_ruleset *rs, struct rl_store *st,
		   char *err, size_t errcap)
{
	struct shm_config c;

	store_shm_config(rs, &c);
	return shm_store_open(&c, st, err, errcap);
}

/* What a geometry holds.  A file for rules without moving windows still
 * has a small ring pool, and it is reported: it is what the file holds. */
static void plan_of(const struct shm_geom *g, struct shm_plan *p)
{
	p->stripes = g->stripes;
	p->slots = (uint64_t)g->stripes * g->bps * SHM_WAYS;
	p->ring_slots = (uint64_t)g->stripes * g->ring_n;
	p->max_moving = g->ring_words - 2;
	p->lease_slots = (uint64_t)g->stripes * g->lease_n;
	p->max_leases = (g->lease_words - 1) / 2;
	p->entry_bytes = SHM_ENTRY_BYTES + g->name_bytes;
	p->bytes_per_key = (double)g->size / (double)p->slots;
}

int shm_plan(const struct shm_config *c, struct shm_plan *p, char *err,
	     size_t errcap)
{
	struct shm_geom g;

	if (geom_plan(c, &g, err, errcap) != 0)
		return -1;
	plan_of(&g, p);
	return 0;
}

/* Whether the gateway could create c->path (exists: it is there but
 * blank) and give it c->size bytes: its directory writable (or the file,
 * when it exists) and the filesystem holding that much free.  Returns 0,
 * or -1 with the message a start would give in err. */
static int can_create(const struct shm_config *c, int exists, char *err,
		      size_t errcap)
{
	char dir[PATH_MAX];
	struct statvfs fs;
	const char *slash = strrchr(c->path, '/');
	size_t dlen = slash == NULL ? 1 : slash == c->path ? 1 :
		      (size_t)(slash - c->path);

	if (dlen >= sizeof(dir))
		return 0;       /* the open will say */
	if (slash == NULL)
		memcpy(dir, ".", 2);
	else {
		memcpy(dir, c->path, dlen);
		dir[dlen] = '\0';
	}
	if (access(exists ? c->path : dir, W_OK) != 0) {
		if (exists)
			snprintf(err, errcap, "shm store \"%s\": %s", c->path,
				 strerror(errno));
		else
			no_dir(c->path, errno, err, errcap);
		return -1;
	}
	if (statvfs(dir, &fs) == 0 &&
	    (uint64_t)fs.f_bavail * fs.f_frsize < c->size) {
		snprintf(err, errcap, "shm store \"%s\": needs %llu bytes, the filesystem of %s has %llu free: lower size= or free space",
			 c->path, (unsigned long long)c->size, dir,
			 (unsigned long long)fs.f_bavail * fs.f_frsize);
		return -1;
	}
	return 0;
}

/* Read-only: the file is opened O_RDONLY and never mapped; the shared
 * flock, held for a few preads, only waits out a process that is creating
 * the file (openers hold the exclusive one just while they open). */
enum shm_probe shm_probe_file(const struct shm_config *c, struct shm_plan *p,
			      uint64_t *keys, char *err, size_t errcap)
{
	struct shm_header h;
	struct shm_geom g;
	struct stat sb;
	enum shm_probe r = SHM_PROBE_UNREADABLE;
	int fd;

	*keys = 0;
	/* the gateway opens it read-write: a file this user cannot would
	 * stop a gateway running as this user */
	if (faccessat(AT_FDCWD, c->path, R_OK | W_OK, AT_EACCESS) != 0 &&
	    errno == EACCES) {
		no_access(c->path, err, errcap);
		return SHM_PROBE_REFUSED;
	}
	fd = open(c->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		snprintf(err, errcap, "shm store \"%s\": %s", c->path,
			 strerror(errno));
		return SHM_PROBE_UNREADABLE;
	}
	if (fd >= 0 && lock_stat(fd, LOCK_SH, c->path, &sb, err, errcap) < 0)
		goto done;
	if (fd >= 0 && S_ISDIR(sb.st_mode)) {
		/* opening it read-write fails so */
		snprintf(err, errcap, "shm store \"%s\": %s", c->path,
			 strerror(EISDIR));
		r = SHM_PROBE_REFUSED;
		goto done;
	}
	if (fd < 0 || file_blank(fd, (uint64_t)sb.st_size)) {
		/* opening would create (or initialise) it: can it? */
		r = shm_plan(c, p, err, errcap) == 0 &&
		    can_create(c, fd >= 0, err, errcap) == 0 ? SHM_PROBE_NEW :
		    SHM_PROBE_REFUSED;
		goto done;
	}
	r = SHM_PROBE_REFUSED;
	if (file_too_short(c, (uint64_t)sb.st_size, err, errcap))
		goto done;
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		snprintf(err, errcap, "shm store \"%s\": cannot read its header",
			 c->path);
		r = SHM_PROBE_UNREADABLE;
		goto done;
	}
	if (header_check(&h, c, (uint64_t)sb.st_size, &g, err, errcap) < 0)
		goto done;
	plan_of(&g, p);
	for (uint32_t s = 0; s < g.stripes; s++) {
		uint64_t k;
		off_t off = (off_t)(g.off_stripes + s * g.stripe_bytes +
				    offsetof(struct shm_stripe, c.keys));
		if (pread(fd, &k, sizeof(k), off) == (ssize_t)sizeof(k))
			*keys += k;
	}
	r = SHM_PROBE_FITS;
done:
	if (fd >= 0)
		close(fd);      /* drops the flock */
	return r;
}

static const struct rl_store_ops shm_ops = {
	.name = "shm",
	.apply = shm_apply,
	.acquire = shm_acquire,
	.release = shm_release,
	.destroy = shm_destroy,
};
