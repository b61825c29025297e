/*
 * stats.h - the gateway's counters and the statistics endpoint's two
 * renderings: JSON and the Prometheus text format (0.0.4).
 *
 * Counters are atomics in the gateway process: with several processes
 * (lighttpd max-procs, mod_fcgid) each answers for itself, and the
 * endpoint says which process it is (pid).  The store's own figures
 * (distinct keys, evictions; shared by every process on the host with the
 * shm store) are read from the store when rendering.
 *
 * Per-rule counters live in a stats_rules array made for one rule set; a
 * reload makes a new one and carries every rule's totals over by its
 * pattern and file (a rule that is gone takes its totals with it; "default"
 * requests, which match no rule, are one more entry).
 */
#ifndef GATEWAY_STATS_H
#define GATEWAY_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "respond.h"
#include "rules.h"

/* Why a request was not let through (one counter each). */
enum stats_reason {
	STATS_RATE = 0,         /* over a rate or bandwidth limit: 429 */
	STATS_CONCURRENCY,      /* all in-flight slots held: 429 */
	STATS_MISSING_KEY,      /* missing-key=deny, or no client address: 429 */
	STATS_TOO_LARGE,        /* max-body: 413 */
	STATS_BAD_REQUEST,      /* the path is not a path, params too large: 400 */
	STATS_STORE_ERROR,      /* the store failed and the policy said deny: 503 */
	STATS_REASONS
};

struct stats {
	int64_t started_ms;
	atomic_uint_fast64_t allowed;           /* let through (incl. dry-run) */
	atomic_uint_fast64_t dry_run_denied;    /* allowed, a dry-run limit said no */
	atomic_uint_fast64_t denied[STATS_REASONS];
	atomic_uint_fast64_t store_errors;      /* every store failure, whatever the policy */
	atomic_uint_fast64_t upstream_errors;   /* 502s and responses cut short */
	/* connections and requests given up because the web server made no
	 * progress for client-timeout (params, body or answer) */
	atomic_uint_fast64_t client_timeouts;
	/* requests whose proxy header a trusted hop could not vouch for (an
	 * entry that is not an address, or the header in two or more params
	 * behind lighttpd or Apache): the client counted as the nearest
	 * trusted hop */
	atomic_uint_fast64_t proxy_header_untrusted;
	atomic_int_fast64_t inflight;           /* requests now with the application */
	atomic_uint_fast64_t reloads_ok, reloads_failed;
};

/* Counters of one rule set's rules, index i for rule i and nrules for
 * requests under the defaults. */
struct stats_rule {
	const char *name;       /* pattern text, "(default)" for the last */
	const char *file;
	unsigned line;
	atomic_uint_fast64_t allowed, denied;
};

struct stats_rules {
	size_t n;               /* nrules + 1 */
	struct stats_rule *r;
};

/* Make the counters for rs, carrying totals over from old (may be NULL).
 * Returns NULL only when memory runs out (the gateway aborts then). */
struct stats_rules *stats_rules_new(const struct rl_ruleset *rs,
				    const struct stats_rules *old);
void stats_rules_free(struct stats_rules *sr);     /* NULL-safe */

/* Count one decided request. */
void stats_count(struct stats *s, struct stats_rules *sr,
		 const struct rl_decision *d, int denied,
		 enum stats_reason reason);
/* A request counted allowed whose body turned out over max-body while it
 * streamed (413): moved to the too-large denials, as one refused before
 * it was passed on is counted. */
void stats_recount_too_large(struct stats *s, struct stats_rules *sr,
			     const struct rl_decision *d);

/* What the store says about itself, filled by the caller (the gateway
 * knows which kind it has); fields it cannot know stay -1. */
struct stats_store {
	const char *kind;       /* "shm", "memory", "redis" */
	/* evictions: idle live keys evicted; evictions_limiting: keys of
	 * clients being limited evicted because all candidates were (their
	 * bans lifted early); full: requests refused, no entry could go. */
	int64_t keys, slots, evictions, evictions_limiting, full;
	/* Redis: answering (1) or not (0); the switches down and back up,
	 * decisions made on the fallback store, batches denied from the
	 * over-limit cache without asking Redis.  -1 for other stores. */
	int64_t up, down_switches, up_switches, fallback, cache_denied;
};

/* A FastCGI application the rules name (upstream): connections opened,
 * kept ones reused, and requests that failed there, since this process
 * started.  name is the URI as written, borrowed. */
struct stats_upstream {
	const char *name;
	uint64_t connects, reuses, failures;
};

enum stats_format { STATS_JSON = 0, STATS_PROMETHEUS };

/* Pick the format: ?format=prometheus or ?format=json in the query wins;
 * else Prometheus when Accept names text/plain or
 * application/openmetrics-text (what a Prometheus scraper sends) and not
 * application/json; else JSON. */
enum stats_format stats_negotiate(const char *query, const char *accept);

/* The whole endpoint answer (status 200, Content-Type, Cache-Control:
 * no-store, the body) into b, reset first. */
void stats_render(struct respond_buf *b, enum stats_format f,
		  const struct stats *s, const struct stats_rules *sr,
		  const struct stats_store *st, const struct stats_upstream *ups,
		  size_t nups, int64_t now_ms, long pid);

#endif
