/*
 * store_redis.h - the Redis store (`storage redis://[:password@]host:port/db`
 * or `redis+unix:///path?db=N`): one budget shared by many gateway hosts.
 *
 * Every strategy and the in-flight counters run inside Redis as one Lua
 * script (gateway/store_redis.lua, sent with EVALSHA and loaded again on
 * NOSCRIPT): all the ops of a batch are decided in one round trip,
 * all-or-nothing exactly as the process-local store does, and time comes
 * from the server (TIME) so that hosts whose clocks disagree still agree
 * on windows.  Every key written gets a TTL (the time from which its state
 * is equivalent to a fresh one), so Redis memory follows the active
 * clients.  Keys are the engine's, readable as they are
 * ("rg:r/login:addr=192.0.2.7:5/60000/fw").
 *
 * Connections: a small pool, one connection per thread at a time; each new
 * connection sends AUTH, SELECT and SCRIPT LOAD in one pipelined round
 * trip.  A failed call marks Redis down: from then on at most one call per
 * backoff interval (REDIS_BACKOFF_MIN_MS doubling to REDIS_BACKOFF_MAX_MS)
 * tries it again, every other call is answered at once by the failure
 * policy: -1 (the gateway applies store-failure deny or allow) or, with
 * store-failure fallback, a decision on this host's shared-memory store.
 * Each switch (down, up) is logged once and counted.  A call waits at most
 * the command timeout for Redis, plus the connect timeout when it is the
 * one that reconnects (a host name is looked up on a thread of its own:
 * the DNS is waited for only until its first answer, within that).
 *
 * Local over-limit cache: when Redis denies an op on its own key state
 * (not because of another op of the batch) until now + retry, later
 * batches holding that key (same limit, at least that cost) are denied in
 * this process without asking Redis until then.  The retry is Redis's,
 * counted from before the request was sent, so a cached denial never lasts
 * longer than Redis would make it; fixed-window-elastic-expiry keys are
 * never cached (each denied hit must move their window, in Redis).
 *
 * Ownership: the rl_store owns its connections, its fallback store and
 * its cache; destroy frees them.  Thread-safe.  A forked child may use
 * its parent's store (it opens its own connections).
 */
#ifndef GATEWAY_STORE_REDIS_H
#define GATEWAY_STORE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "rules.h"
#include "store_shm.h"

#define REDIS_CACHE_ENTRIES  4096   /* over-limit cache, entries */
#define REDIS_EPOCH_CHECK_MS 1000   /* the cache's epoch asked at most so often */
#define REDIS_CACHE_KEY_MAX  160    /* longer keys are never cached, bytes */
#define REDIS_BACKOFF_MIN_MS 100    /* first wait after a failure, ms */
#define REDIS_BACKOFF_MAX_MS 2000   /* longest wait between attempts, ms */
#define REDIS_POOL_MAX       64     /* idle connections kept */

/* How to open a store.  store_redis_open fills one from the rule set's
 * settings; tests and the bench fill their own. */
struct redis_config {
	const char *host;       /* TCP: name or address; NULL with path */
	unsigned port;
	const char *path;       /* unix socket; NULL for TCP */
	unsigned db;
	const char *password;   /* NULL: no AUTH */
	const char *user;       /* ACL user for AUTH; NULL: the default */
	unsigned connect_timeout_ms;    /* 0: 200 */
	unsigned timeout_ms;            /* per command; 0: 100 */
	enum rl_store_failure failure;
	/* store-failure fallback: the shared-memory store to decide on while
	 * Redis is down (path NULL: SHM_DEFAULT_PATH). */
	struct shm_config fallback;
	size_t cache_entries;   /* 0: REDIS_CACHE_ENTRIES */
	/* Where the store's lines (store-down, store-up) go from the start,
	 * as store_redis_set_log; NULL: standard error.  Must outlive it. */
	struct log *log;
	int cache_off;          /* no over-limit cache */
	/* The rules' key-prefix: the over-limit cache's epoch lives in
	 * "PREFIX.epoch" (NULL: "rg"). */
	const char *key_prefix;
	unsigned backoff_min_ms, backoff_max_ms;   /* 0: the defaults */
	/* TESTS ONLY: the script takes the time from the now_ms the caller
	 * passes instead of Redis TIME, so that the strategy vectors can run
	 * on a virtual clock.  Never set from a rule file. */
	int client_clock;
};

/* The configuration of a rule set's `storage redis...` and
 * `store-failure`; the fallback is the default shared-memory file, sized
 * for rs's rules by store_shm_config (it borrows from rs). */
void store_redis_config(const struct rl_ruleset *rs, struct redis_config *c);

/* Open the store of s.  Returns 0 and fills *st, or -1 with a message in
 * err: a configuration Redis refuses (wrong password, no such db) or a
 * fallback store that cannot be opened.  Redis being unreachable is not
 * an error here: the store starts down (logged) and the failure policy
 * applies until Redis answers. */
int store_redis_open(const struct rl_ruleset *rs, struct log *log,
		     struct rl_store *st, char *err, size_t errcap);
/* The same from a full configuration (copied; c may go after). */
int redis_store_open(const struct redis_config *c, struct rl_store *st,
		     char *err, size_t errcap);

struct redis_store;

/* The Redis store behind st, or NULL for another kind. */
struct redis_store *store_redis_of(const struct rl_store *st);

/* The shared-memory store of store-failure fallback, or NULL without
 * one (its slots bound the rules a reload may bring). */
struct shm *store_redis_fallback(struct redis_store *r);

/* Where switches are logged (not owned; it must outlive the store).
 * Until set, and after setting NULL, they go to standard error. */
void store_redis_set_log(struct redis_store *r, struct log *l);
/* A reload's store-failure, for the store-down line to say what the
 * gateway does (it applies allow or deny from the rules in use).  A
 * fallback store is only there when the store was opened with it: with
 * one, the line says fallback whatever f is; without, fallback reads as
 * deny, as the gateway answers. */
void store_redis_set_failure(struct redis_store *r, enum rl_store_failure f);
/* A reload's new key-prefix (NULL: "rg"): the over-limit cache is emptied
 * and watches PREFIX.epoch of the new prefix, learning nothing until it
 * has read it. */
void store_redis_set_key_prefix(struct redis_store *r, const char *prefix);

/* Statistics for the statistics endpoint; each counter read atomically. */
struct redis_stats {
	int up;                 /* 1: Redis answering; 0: down */
	uint64_t calls;         /* scripts Redis answered */
	uint64_t errors;        /* calls that failed: connection, timeout,
				   error reply */
	uint64_t refused;       /* calls not sent: Redis down, waiting */
	uint64_t connects;      /* connections opened */
	uint64_t noscript;      /* script loaded again after NOSCRIPT */
	uint64_t down_switches; /* Redis went down */
	uint64_t up_switches;   /* Redis came back */
	uint64_t fallback;      /* calls decided on the fallback store */
	uint64_t cache_denied;  /* batches denied from the over-limit cache */
	uint64_t cache_entries; /* entries the cache holds (some expired) */
};

void store_redis_stats(struct redis_store *r, struct redis_stats *out);

/* For `rategate inspect --reset`: a new epoch, so that every gateway's
 * over-limit cache is emptied within REDIS_EPOCH_CHECK_MS.  Returns 0, or
 * -1 with a message in err. */
int store_redis_new_epoch(struct redis_store *r, char *err, size_t errcap);

/* For `rategate inspect`: one key under the store's key prefix. */
struct redis_key_info {
	const char *key;        /* NUL-terminated; valid during the call */
	long long ttl_ms;       /* PTTL: -1 none, -2 gone */
	const char *type;       /* "string", "zset", ... */
	/* A text state ("STRATEGY COUNT w0 w1 [w2]"), "moving-window, a
	 * ring of N hits", "N in-flight leases"; "" for another kind. */
	char state[96];
};

/* Every key whose name starts with "PREFIX:" and contains text (any key
 * under the prefix when text is NULL), found with SCAN (which does not
 * block Redis), handed to fn (which returns non-zero to stop); with
 * reset, each such key is deleted (DEL) before fn sees it.  With neither
 * fn nor reset the keys are only counted (no per-key command).  Returns
 * the number of keys, or -1 with a message in err when Redis fails. */
long store_redis_keys(struct redis_store *r, const char *prefix,
		      const char *text, int reset,
		      int (*fn)(void *ctx, const struct redis_key_info *k),
		      void *ctx, char *err, size_t errcap);

/* "redis 127.0.0.1:6379" (or the socket path), for messages. */
const char *store_redis_where(const struct redis_store *r);

/* The script's text (tests and the bench load it themselves). */
extern const char store_redis_lua[];

#endif
