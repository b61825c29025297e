/*
 * store_shm.h - the shared-memory store (`storage shm:NAME`): one set of
 * counters for every rategate process and CGI invocation on a host, in a
 * fixed-size file mapped MAP_SHARED (/dev/shm/rategate by default).
 *
 * The file is created by the first process (under an flock, so two
 * processes starting together cannot both initialise it) and attached by
 * the others; it outlives them, so counters survive gateway restarts and
 * reloads.  Its header holds a magic, the layout version and the geometry;
 * a file of another version, size or geometry is refused with a message
 * saying what to do (delete it, or change size=): see store_shm.c for why.
 *
 * Every strategy and the in-flight leases run on it through the rules
 * library's pure steps, all-or-nothing per batch exactly like the
 * process-local store, atomically across processes and threads (robust
 * process-shared mutexes over stripes of the table, with an undo journal
 * per stripe so that a process killed inside a critical section leaves no
 * half-written entry).  Memory is bounded by the file: when a key's
 * buckets are full, expired entries go first, then the least recently
 * used entry that is not currently limiting a client, then (all of them
 * limiting) the least recently used denied one, lifting its ban early
 * (counted apart); an in-flight counter with a live lease never goes.  If
 * none may go, the batch fails with "store full" and the gateway's
 * store-failure policy applies.
 *
 * Ownership: an rl_store opened here owns its mapping; destroy unmaps it
 * (the file stays).  A forked child may keep using its parent's store.
 * The store is thread-safe.
 */
#ifndef GATEWAY_STORE_SHM_H
#define GATEWAY_STORE_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

#define SHM_LAYOUT_VERSION   2      /* 2: evict_limiting in the stripe block */
#define SHM_DEFAULT_PATH     "/dev/shm/rategate"
#define SHM_DEFAULT_SIZE     (64ULL << 20)   /* bytes */
#define SHM_WAYS             8      /* entries per bucket */
#define SHM_ENTRY_BYTES      64     /* one key's counter entry */
#define SHM_NAME_BYTES       128    /* one key's name record, when kept */
#define SHM_NAME_TEXT        112    /* key bytes a name record holds */
#define SHM_BATCH_MAX        32     /* ops in one apply */
#define SHM_LEASES_DEFAULT   64     /* in-flight maximum per key, default */
#define SHM_RING_PERCENT     12     /* share of the file for moving windows */
#define SHM_LEASE_PERCENT    2      /* share of the file for in-flight keys */

/* How to open a store.  store_shm_open fills one from the rule set's
 * settings; tests, the bench and inspect fill their own. */
struct shm_config {
	const char *path;       /* the file */
	uint64_t size;          /* bytes of the file (1M..64G) */
	uint64_t max_moving;    /* largest moving-window count of the rules */
	uint64_t max_leases;    /* largest concurrency= (0: SHM_LEASES_DEFAULT) */
	const char *moving_by;  /* who asks for max_moving and max_leases, for
				   a refusal ("the rule at FILE:LINE"); NULL:
				   "the rules"; borrowed for the open */
	const char *leases_by;
	int names;              /* keep each key's text for inspect */
	unsigned ring_percent;  /* 0: SHM_RING_PERCENT */
	unsigned stripes;       /* 0: from the size (tests use 1 or 2) */
	int attach_only;        /* inspect: never create, accept any size */
};

/* The store of rs's `storage shm:...`: path and size from its settings,
 * moving-window slots sized for its largest moving-window count, in-flight
 * slots for its largest concurrency= (at least SHM_LEASES_DEFAULT), or the
 * storage line's moving-window-max= and concurrency-max= when larger; key
 * names kept unless the URI says names=off.  Returns 0 and fills *st, or
 * -1 with a message in err. */
int store_shm_open(const struct rl_ruleset *rs, struct rl_store *st,
		   char *err, size_t errcap);
/* The configuration store_shm_open uses (it borrows from rs). */
void store_shm_config(const struct rl_ruleset *rs, struct shm_config *c);

/* The geometry a configuration gives, without touching any file (for
 * `rategate -t`).  Returns 0, or -1 with err set when the size is too
 * small. */
struct shm_plan {
	unsigned stripes;
	uint64_t slots;         /* counter entries (keys x limits) */
	uint64_t ring_slots;    /* moving-window keys at once */
	uint64_t max_moving;    /* largest moving-window count a slot holds */
	uint64_t lease_slots;   /* in-flight keys at once */
	uint64_t max_leases;    /* largest concurrency= a slot holds */
	unsigned entry_bytes;   /* table bytes per counter entry: 64, plus
				   128 for its name when names are kept */
	double bytes_per_key;   /* file bytes per counter entry: the above
				   plus its share of the header, stripe
				   blocks (locks, journals) and pools */
};
int shm_plan(const struct shm_config *c, struct shm_plan *p, char *err,
	     size_t errcap);

/* What opening c's file would do, found without creating, writing or
 * mapping it (for `rategate -t`, while gateways may be using it):
 *   SHM_PROBE_NEW         no file, or a blank one: it would be created
 *                         with the geometry in *p
 *   SHM_PROBE_FITS        it exists and would be attached: its own
 *                         geometry in *p, the keys it holds in *keys
 *   SHM_PROBE_REFUSED     opening would fail: err is the message the
 *                         gateway would stop with
 *   SHM_PROBE_UNREADABLE  it cannot be read here (permissions): err says
 *                         why; whether it fits is unknown */
enum shm_probe {
	SHM_PROBE_NEW,
	SHM_PROBE_FITS,
	SHM_PROBE_REFUSED,
	SHM_PROBE_UNREADABLE
};
enum shm_probe shm_probe_file(const struct shm_config *c, struct shm_plan *p,
			      uint64_t *keys, char *err, size_t errcap);

/* The same from a full configuration. */
int shm_store_open(const struct shm_config *c, struct rl_store *st,
		   char *err, size_t errcap);

struct shm;

/* The shared-memory store behind st, or NULL for another kind. */
struct shm *shm_of(const struct rl_store *st);

/* Statistics, summed over the stripes (each read without locking, so a
 * snapshot of moving numbers). */
struct shm_stats {
	uint64_t file_bytes;
	unsigned version;
	unsigned stripes;
	uint64_t slots;         /* counter entries the table can hold */
	uint64_t keys;          /* entries in use */
	uint64_t name_bytes;    /* per slot; 0 when names are off */
	uint64_t ring_slots, ring_used, ring_bytes;   /* moving-window pool */
	uint64_t lease_slots, lease_used, lease_bytes; /* in-flight pool */
	uint64_t max_moving;    /* largest moving-window count the file holds */
	uint64_t max_leases;    /* largest in-flight maximum it holds */
	uint64_t allowed, denied;       /* ops applied with RL_HIT */
	uint64_t inserts;               /* keys created */
	uint64_t evict_expired;         /* entries dropped as expired */
	uint64_t evict_lru;             /* live entries evicted (LRU) */
	uint64_t evict_limiting;        /* denied entries evicted (LRU), all
					   candidates limiting: bans lifted
					   early */
	uint64_t full;                  /* batches refused: store full */
	uint64_t recoveries;            /* locks recovered from dead owners,
					   stripes repaired after damage */
	uint64_t resets;                /* keys removed by inspect --reset */
	int64_t created_ms;
};

void shm_stats(struct shm *m, struct shm_stats *out);

/* 1 when the store's path no longer names the file this process mapped
 * (deleted, or replaced by another file): this process then counts alone
 * in the old file, apart from any process started since.  The gateway
 * asks on every reload and logs it. */
int shm_file_replaced(const struct shm *m);

/* Kind of an entry after the strategies (enum rl_strategy). */
#define SHM_KIND_INFLIGHT RL_STRATEGY_COUNT

/* One key as inspect sees it, copied out under its stripe's lock. */
struct shm_key_info {
	uint64_t hash;
	char name[SHM_NAME_TEXT + 1];   /* NUL-terminated; "" when unknown */
	size_t name_len;        /* the key's full length (may exceed name) */
	int name_known;         /* the name record belongs to this key */
	unsigned kind;          /* enum rl_strategy or SHM_KIND_INFLIGHT */
	uint64_t count;         /* limit count, or in-flight maximum */
	uint64_t state[3];      /* the state's first words ([n, head] for
				   moving windows, [n, ...] for leases) */
	int64_t expiry_ms;      /* fresh again from then */
	uint64_t hits, denials; /* allowed and denied hits (saturating) */
	uint64_t remaining;     /* hits remaining after its last hit */
	int limiting;           /* its last hit was denied */
	uint64_t idle;          /* hits on its stripe since its last hit */
};

/* Calls fn on every key, in table order, holding each stripe's lock only
 * while a few buckets are copied out.  fn returns 0 to go on.  Returns 0,
 * fn's non-zero value, or -1 with err set when a stripe's lock cannot be
 * had (held past SHM_LOCK_WAIT_MS, or broken) or memory is short. */
int shm_scan(struct shm *m,
	     int (*fn)(void *ctx, const struct shm_key_info *k), void *ctx,
	     struct rl_diag *err);

/* Removes the key whose hash is hash (from shm_scan), as if it had never
 * been hit: lifts a ban.  Returns 1 removed, 0 not there, -1 (err). */
int shm_remove(struct shm *m, uint64_t hash, char *err, size_t errcap);

/* The keyed hash of a key in this store, and its stripe (tests). */
uint64_t shm_key_hash(const struct shm *m, const char *key, size_t len);
unsigned shm_key_stripe(const struct shm *m, const char *key, size_t len);
/* Where a key may live, its stripe and two candidate buckets (any of the
 * pointers may be NULL), and the bucket of the entry that holds it now, or
 * -1 when it has none (tests; reads without the lock). */
long shm_key_place(const struct shm *m, const char *key, size_t len,
		   unsigned *stripe, unsigned *b1, unsigned *b2);

/* Test hook: when not NULL, called with a stripe lock held, between writes
 * of a batch, so that a test can stop (and kill) a process there. */
enum shm_hook {
	SHM_HOOK_WRITING = 1,   /* the first op's state written, the rest not */
	SHM_HOOK_COMMITTING,    /* the batch committed on its first stripe,
				   not yet on the others */
	SHM_HOOK_CREATING       /* a new file's header and locks written,
				   its magic not yet */
};
extern void (*shm_test_hook)(enum shm_hook where);

#endif
