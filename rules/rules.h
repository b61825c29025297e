/*
 * rules.h - the rategate rules library: the one public header.
 *
 * The library parses rule files, normalises and matches request paths,
 * resolves the client address, and decides whether a request is within its
 * limits.  It is pure: it never opens files, reads the clock, prints or
 * exits.  File access comes in through an rl_io callback table, time comes in
 * as milliseconds since the Unix epoch, and counters live behind an rl_store
 * function table, so the same engine runs on the process-local store here,
 * on shared memory and on Redis (gateway/).
 *
 * Conventions: functions return 0 / -1 (or a pointer / NULL); a named enum
 * only where there are more outcomes.  Error detail goes into an rl_diag or
 * an rl_report, never to stderr.  Times are int64_t milliseconds; counts are
 * uint64_t hits.
 */
#ifndef RULES_RULES_H
#define RULES_RULES_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Bounds (validated at load; the request path trusts them)            */

#define RL_MAX_COUNT        1000000000ULL  /* hits per period */
#define RL_MAX_PERIOD_MS    (100ULL * 12 * 30 * 86400 * 1000) /* 100 "years" */
#define RL_MAX_LIMITS       8      /* limits in one limit string */
#define RL_LIMIT_TEXT_MAX   64     /* one limit item as written, incl. NUL */
#define RL_LIMIT_ID_MAX     40     /* "1000000000/3110400000000/fwe" + NUL */
#define RL_MOVING_MAX       100000 /* largest moving-window count (O(count) memory) */
#define RL_INFLIGHT_MAX     10000  /* largest in-flight maximum */
#define RL_PATH_MAX         8192   /* longest request path accepted, bytes */
#define RL_KEYPART_MAX      128    /* longer client key parts count as missing */
#define RL_STORE_KEY_MAX    2048   /* longest store key, bytes */
#define RL_MSG_MAX          256    /* diagnostic message buffer */
#define RL_SIZE_MAX         (1ULL << 50)   /* largest size, bytes (1 PiB) */
#define RL_DURATION_MAX_MS  ((int64_t)RL_MAX_PERIOD_MS) /* longest duration */
/* Largest bandwidth limit, bytes per period: counted in MiB at most (see
 * struct rl_limit's unit), RL_MAX_COUNT of them. */
#define RL_MAX_BANDWIDTH    (RL_MAX_COUNT << 20)

/* ------------------------------------------------------------------ */
/* Diagnostics                                                          */

/* One positioned problem found by a parser.  col is a 0-based byte offset
 * into the text that was parsed; rendering adds 1. */
struct rl_diag {
	size_t col;
	char msg[RL_MSG_MAX];
};

/* Every error and warning of one rule-file load, each already rendered as
 * "FILE:LINE:COL: message" (warnings as "FILE:LINE:COL: warning: message").
 * Owned by the caller; rl_report_free releases the lines, not the struct. */
struct rl_report {
	char **errors;
	size_t nerrors;
	char **warnings;
	size_t nwarnings;
	int truncated;          /* more errors than RL_REPORT_MAX_ERRORS */
};
#define RL_REPORT_MAX_ERRORS 100

void rl_report_free(struct rl_report *r);

/* ------------------------------------------------------------------ */
/* Limits: "100/day; 10 per hour; 5 per 10 seconds"                     */

enum rl_strategy {
	RL_FIXED_WINDOW = 0,
	RL_FIXED_WINDOW_ELASTIC,
	RL_MOVING_WINDOW,
	RL_SLIDING_WINDOW,      /* sliding-window-counter */
	RL_GCRA,
	RL_STRATEGY_COUNT
};

struct rl_limit {
	uint64_t count;         /* hits allowed per period, 1..RL_MAX_COUNT */
	uint64_t period_ms;     /* 1000..RL_MAX_PERIOD_MS */
	char text[RL_LIMIT_TEXT_MAX]; /* the item as written, trimmed: "10/minute" */
	/* The limit's part of a counter key, "COUNT/PERIOD_MS/STRATEGY", set
	 * by the rule loader once the strategy is known (not by
	 * rl_limits_parse), so no request formats numbers.  Bandwidth limits
	 * read "bw/COUNT[k|m]/PERIOD_MS/STRATEGY". */
	char id[RL_LIMIT_ID_MAX];
	size_t id_len;          /* strlen(id) */
	/* 0 for a request limit.  A bandwidth limit counts body bytes in units
	 * of this many bytes: 1 while the limit is at most RL_MAX_COUNT bytes,
	 * else 1024, else 1048576 (count is then the limit in those units,
	 * rounded down, and a body's cost is its size rounded up), so up to
	 * RL_MAX_BANDWIDTH bytes per period fit the strategies' bounds. */
	uint64_t unit;
};

/* Parse a limit string of up to RL_MAX_LIMITS items joined by ';', ',' or
 * '|'.  Returns 0 and *n items, or -1 with d->col at the fault and d->msg
 * quoting the bad text and saying what was expected. */
int rl_limits_parse(const char *s, size_t len, struct rl_limit *out,
		    size_t *n, struct rl_diag *d);

/* Bandwidth limits: the same notation with a size instead of a count,
 * "10MB/minute; 100MB per day" (sizes as rl_size_parse, at least 1 byte and
 * at most RL_MAX_BANDWIDTH).  Fills count, period_ms, text and unit as
 * described in struct rl_limit; errors as rl_limits_parse. */
int rl_bandwidth_parse(const char *s, size_t len, struct rl_limit *out,
		       size_t *n, struct rl_diag *d);

/* A size: decimal digits, optional spaces or tabs, an optional unit B, K,
 * KB, KiB, M, MB, MiB, G, GB or GiB (ASCII case-insensitive).  Every unit
 * is binary, as nginx's k and m: K = KB = KiB = 1024 bytes, so "10MB" is
 * 10485760 bytes.  Spaces around the whole are ignored.  Returns 0 and
 * *bytes, or -1 with d->col at the fault (nothing, no digits, an unknown
 * unit, a size above RL_SIZE_MAX).  0 is a valid result here: each caller
 * decides whether a zero size means something and reports it otherwise. */
int rl_size_parse(const char *s, size_t len, uint64_t *bytes,
		  struct rl_diag *d);

/* A duration: digits, optional spaces or tabs, an optional unit ms, s, m
 * or h (ASCII case-insensitive); a bare number is seconds ("30" = "30s").
 * Returns 0 and *ms, or -1 with d->col at the fault (nothing, no digits, an
 * unknown unit, a fraction, more than RL_DURATION_MAX_MS).  0 is a valid
 * result here; callers bound the value. */
int rl_duration_parse(const char *s, size_t len, int64_t *ms,
		      struct rl_diag *d);

const char *rl_strategy_name(enum rl_strategy s);
/* Returns 0 and sets *s, or -1 for an unknown name. */
int rl_strategy_from_name(const char *name, size_t len, enum rl_strategy *s);

/* ------------------------------------------------------------------ */
/* Strategies: pure steps over small integer state                     */

/* What a store applies to one key.  burst is the GCRA bucket size in hits
 * (0 means count); other strategies ignore it. */
struct rl_step {
	enum rl_strategy strategy;
	uint64_t count;
	uint64_t period_ms;
	uint64_t burst;
	uint64_t cost;          /* hits this request weighs, >= 1 */
};

/* The outcome of one step.  remaining: hits of cost 1 still allowed now
 * (after this hit when it was consumed).  reset_ms: absolute time at which
 * the key is back to its full count if nothing else hits it.  retry_ms:
 * when denied, milliseconds from now until this same hit would be allowed
 * (>= 1); 0 when allowed.  never: denied because cost exceeds the limit. */
struct rl_verdict {
	int allowed;
	int never;
	uint64_t remaining;
	int64_t reset_ms;
	int64_t retry_ms;
};

/* Number of uint64_t words of state a key of this strategy needs.  An
 * all-zero state is a fresh key. */
size_t rl_strategy_state_words(enum rl_strategy s, uint64_t count);

/* Verdict of a hit at now_ms, state unchanged.  remaining is the value
 * before the hit. */
void rl_strategy_check(const struct rl_step *p, const uint64_t *state,
		       int64_t now_ms, struct rl_verdict *v);

/* Consume the hit.  Precondition: rl_strategy_check said allowed at now_ms
 * on this state.  Fills v as after the hit; v->reset_ms is then also
 * rl_strategy_expiry of the new state. */
void rl_strategy_consume(const struct rl_step *p, uint64_t *state,
			 int64_t now_ms, struct rl_verdict *v);

/* Side effects of a denied hit: consumes nothing; the elastic fixed window
 * moves its end to now + period (and v's reset and retry with it).  No-op
 * for the other strategies. */
void rl_strategy_penalize(const struct rl_step *p, uint64_t *state,
			  int64_t now_ms, struct rl_verdict *v);

/* Absolute time from which this state is equivalent to a fresh one; a store
 * may drop the key then (TTL, eviction).  Returns 0 for a fresh state. */
int64_t rl_strategy_expiry(const struct rl_step *p, const uint64_t *state);

/* A hit on one key alone, as a store applies a batch of one op in RL_HIT:
 * check, then consume when allowed or penalize when denied, in one step
 * (cheaper than the three calls).  v is what consume or, when denied,
 * check then penalize leave; returns rl_strategy_expiry of the new
 * state. */
int64_t rl_strategy_hit(const struct rl_step *p, uint64_t *state,
			int64_t now_ms, struct rl_verdict *v);

/* In-flight counters: state is 1 + 2 * max words (n, then lease expiry and
 * lease id pairs).  acquire returns 1 and records a lease expiring at
 * now + lease_ms, or 0 when max unexpired leases are held.  release returns
 * 1 if the lease was found.  Leases of dead holders simply expire. */
size_t rl_inflight_state_words(uint64_t max);
int rl_inflight_acquire(uint64_t *state, uint64_t max, int64_t now_ms,
			int64_t lease_ms, uint64_t lease_id, uint64_t *held);
int rl_inflight_release(uint64_t *state, uint64_t max, int64_t now_ms,
			uint64_t lease_id, uint64_t *held);

/* ------------------------------------------------------------------ */
/* Stores                                                              */

enum rl_mode {
	RL_TEST = 0,    /* decide, change nothing (headers without a hit) */
	RL_HIT,         /* decide and, when every op allows, consume all */
	RL_PEEK         /* as RL_TEST from what the store knows without asking
			   anyone: a local store is exact; a remote one (Redis)
			   answers from its over-limit cache and allows the
			   rest, at no round trip */
};

/* One key's step inside a batch.  key is not NUL-terminated necessarily.
 * probe: the op is checked with the batch (its denial denies the batch)
 * but never changes its key: RL_HIT neither consumes nor penalizes it, and
 * a store creates no key for it.  Its verdict is the check's (remaining
 * before the hit). */
struct rl_store_op {
	const char *key;
	size_t key_len;
	struct rl_step step;
	struct rl_verdict v;    /* out */
	int probe;
};

/* A store applies strategy steps to keys atomically.  Implementations:
 * memstore (rules/memstore.c, process-local), shared memory and Redis
 * (gateway/).
 *
 * apply: ops[0..n) as one atomic unit.  RL_HIT: when every op allows, every
 *   op is consumed; otherwise none is, and rl_strategy_penalize runs on each
 *   op; probe ops are never consumed nor penalized.  RL_TEST: nothing
 *   changes.  Fills every op's verdict.  Returns 0, or
 *   -1 on a store failure with err->msg set (err->col unused).
 * acquire: one in-flight lease on key; returns 1 (acquired, *lease_id set),
 *   0 (max reached) or -1 (store failure).  *held is the count after.
 * release: returns 0 (released or already expired) or -1 (store failure).
 * destroy: frees the store; NULL-safe. */
struct rl_store_ops {
	const char *name;
	int (*apply)(void *impl, struct rl_store_op *ops, size_t n,
		     enum rl_mode mode, int64_t now_ms, struct rl_diag *err);
	int (*acquire)(void *impl, const char *key, size_t key_len,
		       uint64_t max, int64_t lease_ms, int64_t now_ms,
		       uint64_t *lease_id, uint64_t *held, struct rl_diag *err);
	int (*release)(void *impl, const char *key, size_t key_len,
		       uint64_t lease_id, int64_t now_ms, struct rl_diag *err);
	void (*destroy)(void *impl);
};

struct rl_store {
	const struct rl_store_ops *ops;
	void *impl;
};

/* Every store checks each op before applying a batch: returns 1, or 0 with
 * err set for a key longer than RL_STORE_KEY_MAX or a step outside the
 * loader's bounds (never produced by rl_decide; a guard for other
 * callers). */
int rl_store_op_valid(const struct rl_store_op *op, struct rl_diag *err);

/* The process-local store: a hash table in this process's heap.  max_keys
 * bounds memory: when full, expired keys are swept; if none is expired,
 * apply fails (-1, "store full") rather than forget a live counter.
 * Returns 0 and fills *st, or -1 (out of memory). */
int memstore_new(size_t max_keys, struct rl_store *st);
/* Makes secret (16 bytes, random) the store's hash secret, so that
 * clients cannot aim keys at one slot or one identity (see
 * rules/memstore.c).  Only on an empty store: -1 once it holds a key.
 * Without it a store's secret comes from its address (not secret). */
int memstore_secret(struct rl_store *st, const uint8_t secret[16]);
/* From now on a new key that does not fit evicts an old one (the expired
 * first, then the least recently hit; see rules/memstore.c) instead of
 * failing with "store full": for a gateway, where one client inventing
 * keys must not make the store refuse everyone.  Exact counting until the
 * table is full either way. */
void memstore_evict_lru(struct rl_store *st);
/* Live keys not limiting a client evicted so far by memstore_evict_lru
 * (expired ones are not counted), and in *limiting (may be NULL) the keys
 * of clients being limited evicted (bans lifted early), as the
 * shared-memory store counts them. */
uint64_t memstore_evictions(const struct rl_store *st, uint64_t *limiting);
/* Keys currently held (for tests and statistics). */
size_t memstore_count(const struct rl_store *st);
/* Approximate heap bytes held (for the bench). */
size_t memstore_bytes(const struct rl_store *st);

/* ------------------------------------------------------------------ */
/* Paths                                                               */

/* Normalise a raw request path (no query string): percent-decode once,
 * drop ';' path parameters from every segment, collapse repeated '/',
 * remove '.' and '..' segments (never above the root), drop a trailing
 * '/' (except for "/" itself), and fold ASCII case when fold_case.
 * out must hold len + 1 bytes; the result is NUL-terminated.  Returns 0, or
 * -1 with d set when the path is not one: empty, not starting with '/',
 * longer than RL_PATH_MAX, a bad %-escape, or a decoded NUL. */
int rl_path_normalize(const char *in, size_t len, int fold_case,
		      char *out, size_t *out_len, struct rl_diag *d);

/* A compiled path pattern: exact ("/login"), or glob where '*' matches
 * within one segment and a "**" segment matches zero or more segments
 * (the pattern /api followed by a "**" segment is the subtree /api and
 * everything below it). */
struct rl_pattern {
	char *text;             /* normalised pattern, NUL-terminated; owned by
				   whoever allocated it (the ruleset arena) */
	size_t len;
	int exact;              /* no wildcard */
	size_t literal_prefix;  /* bytes before the first wildcard */
	size_t literal_chars;   /* non-wildcard bytes in total */
	unsigned wildcards;     /* number of '*' and '**' */
	unsigned globstars;     /* of which '**' */
	/* A plain subtree: a literal prefix without a final '/' ("/api" or
	 * nothing) and one final "**" segment, matched by a prefix test; 0
	 * (the general matcher, same results) when not known to be one. */
	int subtree;
};

/* What rl_pattern_compile says of a valid pattern, for the caller to warn:
 * RL_PAT_NEVER, no normalised path can match it ("/a//b", "/a/../b",
 * "/a/", "/a;x"); RL_PAT_ENCODED, it has '?', '#' or '%', which a
 * normalised path holds only when the request spelled them %3F, %23, %25
 * (the query string is never part of the path). */
enum { RL_PAT_OK = 0, RL_PAT_NEVER = 1, RL_PAT_ENCODED = 2 };

/* Compile s into p, writing the normalised text into buf (len + 1 bytes).
 * Returns 0, or -1 with d (col into s) for something that is not a path
 * pattern.  Sets *never (when never is not NULL) to one of RL_PAT_*. */
int rl_pattern_compile(const char *s, size_t len, int fold_case,
		       struct rl_pattern *p, char *buf, int *never,
		       struct rl_diag *d);
/* Does the normalised path match?  1 or 0. */
int rl_pattern_match(const struct rl_pattern *p, const char *path,
		     size_t len);

/* ------------------------------------------------------------------ */
/* Client addresses                                                    */

struct rl_addr {
	int family;             /* 4 or 6 */
	uint8_t b[16];          /* network order; IPv4 in b[0..3] */
};

struct rl_cidr {
	struct rl_addr net;     /* host bits cleared */
	unsigned bits;
};

/* Parse one address as found in REMOTE_ADDR or a proxy header: "1.2.3.4",
 * "1.2.3.4:8080", "2001:db8::1", "[2001:db8::1]:443"; "::ffff:1.2.3.4" is
 * mapped to IPv4.  Surrounding spaces are ignored.  Returns 0 or -1. */
int rl_addr_parse(const char *s, size_t len, struct rl_addr *a);
/* The same for the web server's own REMOTE_ADDR, which may also carry an
 * IPv6 zone ("fe80::1%eth0": the zone names the server's interface, not
 * the client, and is dropped).  Returns 0 or -1. */
int rl_addr_parse_peer(const char *s, size_t len, struct rl_addr *a);
/* "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). */
int rl_cidr_parse(const char *s, size_t len, struct rl_cidr *c);
int rl_cidr_contains(const struct rl_cidr *c, const struct rl_addr *a);
/* 1 when a lies in one of the n networks of nets. */
int rl_cidrs_contain(const struct rl_cidr *nets, size_t n,
		     const struct rl_addr *a);
/* Canonical text of a with its host bits beyond v4bits / v6bits cleared,
 * followed by "/N" when bits were cleared ("2001:db8:1:2::/64").  out needs
 * 64 bytes. */
void rl_addr_format(const struct rl_addr *a, unsigned v4bits,
		    unsigned v6bits, char *out, size_t cap);

/* How the client address was found (logged by the gateway). */
enum rl_addr_source {
	RL_ADDR_REMOTE = 0,     /* REMOTE_ADDR: no proxies trusted, or none
				   of the proxy header present */
	RL_ADDR_HEADER,         /* from X-Forwarded-For / Forwarded as configured */
	RL_ADDR_SHORT,          /* fewer entries than trusted hops: leftmost */
	RL_ADDR_INVALID,        /* a hop we trust wrote garbage: the nearest
				   valid trusted hop is used */
	RL_ADDR_VARIANTS,       /* the header came as two or more params
				   behind a server that joins repeated lines
				   (one is a client's name variant): not
				   trusted, the client is REMOTE_ADDR */
	RL_ADDR_NONE            /* REMOTE_ADDR itself missing or invalid */
};

struct rl_proxy_conf {
	unsigned hops;          /* trusted-proxies N; 0 with nnets == 0: none */
	const struct rl_cidr *nets;  /* trusted proxy networks, or NULL */
	size_t nnets;
	int forwarded;          /* read RFC 7239 Forwarded instead of XFF */
};

/* Resolve the client.  values are the proxy header's values in arrival
 * order (one per header line; each may hold a comma-separated list).  With
 * hops = N the client is the N-th entry from the right; with nets, entries
 * are walked from the right while they (and REMOTE_ADDR first) lie in a
 * trusted network, and the first untrusted one is the client.  Returns the
 * source; *out is valid unless RL_ADDR_NONE. */
enum rl_addr_source rl_client_addr(const struct rl_proxy_conf *pc,
				   const char *remote, size_t remote_len,
				   const char *const *values,
				   const size_t *value_lens, size_t nvalues,
				   struct rl_addr *out);

/* The client of req as rl_decide resolves it with rs's trusted-proxies
 * and proxy-header, whole: not grouped by ipv4-prefix or ipv6-prefix.
 * Returns the source (RL_ADDR_VARIANTS, with REMOTE_ADDR in *out, for a
 * proxy header in name variants, which is not read); *out is valid unless
 * RL_ADDR_NONE. */
struct rl_ruleset;
struct rl_request;
enum rl_addr_source rl_request_client(const struct rl_ruleset *rs,
				      const struct rl_request *req,
				      struct rl_addr *out);

/* Does the counter key name[0..len) match TEXT (rategate inspect --client
 * and --reset)?  A TEXT that is a client address or network as keys write
 * them ("192.0.2.7", "2001:db8::/64") must be a whole field of the name,
 * between '=', ':', '+' or its start and ':', '+' or its end, so that
 * 192.0.2.7 does not take 192.0.2.70 along.  A TEXT that is a key part as
 * the log's key= writes it ("addr=192.0.2.7", "h.x-api-key=k1", or with
 * the value hashed, "h.x-api-key=#5d2c0e0a0b8a7f31") must be a whole part
 * of the name, its value compared by that hash when hashed.  Any other
 * TEXT matches anywhere in the name.  1 or 0. */
int rl_key_name_match(const char *name, size_t len, const char *text);

/* Is the key part p[0..n) ("LABEL=VALUE") one whose value the log writes
 * as a hash: a header, cookie or query parameter ("h.", "c.", "q."), or
 * a CGI variable that carries a request header ("v.HTTP_...", cookies
 * included)?  1 or 0. */
int rl_key_part_secret(const char *p, size_t n);

/* The counter key key[0..len) as a name of at most cap bytes for a store
 * that keeps names in records of that size (rategate inspect), such that
 * rl_key_name_match finds it by every key part as the log writes it:
 * the key itself when it fits; else with header, cookie and query values
 * longer than 17 bytes written as the log writes them ("#" and their
 * hash); else also with the middle of its longest other field (a rule's
 * path) written "..."; else its first cap bytes, and *cut set.  Returns
 * the name's length; out is not NUL-terminated. */
size_t rl_key_name_compact(const char *key, size_t len, char *out, size_t cap,
			   int *cut);

/* ------------------------------------------------------------------ */
/* Rule sets                                                           */

/* File access for includes, supplied by the caller (the gateway does real
 * I/O; tests use in-memory files).  Both callbacks return 0, or -1 with a
 * short reason in msg ("No such file or directory").
 * read_file: *data is malloc'd by the callback and freed by the library.
 * glob: expands a pattern to a sorted, malloc'd array of malloc'd paths,
 *   all freed by the library; a pattern that matches nothing yields n = 0.
 *   Called only for an include whose argument has '*', '?' or '['; the
 *   including file's directory in front of it has those and '\' escaped
 *   with '\', as glob(3) and fnmatch(3) read them.
 * identity: writes a stable identity of the file (e.g. dev:inode) used to
 *   detect include cycles; may be NULL (the path text is used). */
struct rl_io {
	void *ctx;
	int (*read_file)(void *ctx, const char *path, char **data, size_t *len,
			 char *msg, size_t msgcap);
	int (*glob)(void *ctx, const char *pattern, char ***paths, size_t *n,
		    char *msg, size_t msgcap);
	int (*identity)(void *ctx, const char *path, char *out, size_t cap);
};

#define RL_INCLUDE_DEPTH_MAX 16
#define RL_FILE_SIZE_MAX     (4u << 20)  /* one rule file, bytes */
#define RL_LINE_MAX          4096        /* one rule line, bytes */

enum rl_storage_kind { RL_STORAGE_SHM = 0, RL_STORAGE_MEMORY, RL_STORAGE_REDIS };

/* storage URI, validated at load. */
struct rl_storage {
	enum rl_storage_kind kind;
	const char *uri;        /* as written */
	const char *shown;      /* uri with any password as "***": what
				   messages and logs print */
	const char *path;       /* shm: file path (default /dev/shm/<name>);
				   redis+unix: socket path */
	uint64_t size;          /* shm: bytes */
	int names;              /* shm: keep key text for inspect (names=on) */
	/* shm: slots reserved at creation for moving-window counts and
	 * concurrency= maximums up to these (0: what the rules need), so
	 * that rules can grow into them without a new file */
	uint64_t moving_max, concurrency_max;
	const char *host;       /* redis */
	unsigned port;
	unsigned db;
	const char *fallback_path; /* redis: the shm file store-failure
				      fallback uses; NULL: the default */
	const char *password;   /* NULL when none */
	const char *user;       /* redis ACL user; NULL: the default user */
	unsigned connect_timeout_ms, timeout_ms;
	const char *file;       /* where the storage line's URI is (its */
	unsigned line;          /* first byte, col from 0), for messages */
	size_t col;             /* about the store; file NULL: the default */
};

enum rl_retry_format { RL_RETRY_SECONDS = 0, RL_RETRY_HTTP_DATE };
/* What the gateway does when the store fails: deny (503 with Retry-After,
 * the default), allow (let the request through uncounted, logged), or fall
 * back to process-local counters (accepted with redis storage only; the
 * gateway implements it later). */
enum rl_store_failure { RL_STORE_FAIL_DENY = 0, RL_STORE_FAIL_ALLOW,
			RL_STORE_FAIL_FALLBACK };
enum rl_log_format { RL_LOG_LOGFMT = 0, RL_LOG_JSON };

/* Where the responder sends a request, validated at load:
 *   cgi:/absolute/path/to/script   a CGI program executed directly
 *   fcgi://HOST:PORT               HOST a numeric IPv4 address, [IPv6] or
 *                                  localhost; PORT 1..65535
 *   fcgi+unix:///path/to.sock      a FastCGI application on a unix socket */
#define RL_KEEPALIVE_DEFAULT 4
enum rl_upstream_kind { RL_UPSTREAM_CGI = 0, RL_UPSTREAM_FCGI,
			RL_UPSTREAM_FCGI_UNIX };

struct rl_upstream {
	enum rl_upstream_kind kind;
	const char *uri;        /* as written */
	const char *path;       /* cgi: the script; fcgi+unix: the socket;
				   NULL for fcgi */
	const char *host;       /* fcgi: "127.0.0.1", "::1" (no brackets) or
				   "localhost"; NULL otherwise */
	unsigned port;          /* fcgi */
	const char *file;       /* where the URI was written (its first */
	unsigned line;          /* byte), for messages about the target */
	size_t col;
};

/* deduct-when= statuses: bit (status - 100) of a bitmap for 100..599. */
#define RL_DEDUCT_WORDS 8
enum rl_missing_key { RL_MISSING_ADDR = 0, RL_MISSING_DENY };
enum rl_key_source { RL_KEY_ADDR = 0, RL_KEY_HEADER, RL_KEY_COOKIE,
		     RL_KEY_QUERY, RL_KEY_VAR };

struct rl_key_part {
	enum rl_key_source src;
	const char *name;       /* header "X-Api-Key", cookie, query or CGI
				   variable name; NULL for addr */
	const char *var;        /* CGI parameter looked up: "HTTP_X_API_KEY" */
};

/* One alternative of a key: parts joined with '+'. */
struct rl_key_alt {
	struct rl_key_part *parts;
	size_t nparts;
};

/* key=header:X-Api-Key|addr : alternatives tried in order. */
struct rl_key {
	struct rl_key_alt *alts;
	size_t nalts;
	const char *text;       /* as written */
};

struct rl_rule {
	struct rl_pattern pattern;
	const char *file;       /* where it was written, for messages */
	unsigned line;
	unsigned index;         /* position in the ruleset, file order */
	int exempt;
	int defaults_add;       /* defaults=add: defaults still apply */
	unsigned methods;       /* bit set of RL_METHOD_*; 0 = any method */
	int per_method;
	const char *scope;      /* budget name; the pattern text by default */
	const struct rl_key *key;  /* NULL: the ruleset's key */
	enum rl_strategy strategy;
	uint64_t burst;
	uint64_t cost;
	const char *message;    /* NULL: the ruleset's */
	int dry_run;
	enum rl_missing_key missing;
	uint64_t concurrency;   /* in-flight requests per client; 0: none */
	struct rl_limit *limits;
	size_t nlimits;
	/* Largest request body accepted, bytes (413 beyond): max-body=, or
	 * the global max-body when the rule has none; 0 = no limit. */
	uint64_t max_body;
	/* bandwidth=: request body bytes per period, counted in their own
	 * counters with the rule's strategy and key (never moving-window). */
	struct rl_limit *bandwidth;
	size_t nbandwidth;
	/* deduct-when=: the rule's request limits are only checked at request
	 * time and counted after the response when its status is in the set
	 * (rl_rule_deducts, rl_after_response). */
	int deduct;
	uint64_t deduct_status[RL_DEDUCT_WORDS];
	const struct rl_upstream *upstream; /* upstream=; NULL: the global */
	/* A settings rule: only max-body= and/or upstream= (and methods=).
	 * It sets those for its paths and leaves the limits to the next
	 * matching rule in precedence order, or to the defaults. */
	int settings_only;
	int sets_max_body;      /* max-body= was written on it */
};

/* Does r count its request limits after a response with this status
 * (deduct-when=)?  1 or 0; 0 for NULL or a rule without deduct-when. */
int rl_rule_deducts(const struct rl_rule *r, int status);

/* Methods known to the methods= filter. */
enum {
	RL_METHOD_GET = 1 << 0, RL_METHOD_HEAD = 1 << 1, RL_METHOD_POST = 1 << 2,
	RL_METHOD_PUT = 1 << 3, RL_METHOD_DELETE = 1 << 4,
	RL_METHOD_PATCH = 1 << 5, RL_METHOD_OPTIONS = 1 << 6,
	RL_METHOD_CONNECT = 1 << 7, RL_METHOD_TRACE = 1 << 8,
	RL_METHOD_OTHER = 1 << 9
};
/* The bit of method m[0..len), in any ASCII case; RL_METHOD_OTHER for
 * one not listed. */
unsigned rl_method_bit(const char *m, size_t len);

/* Globals of a rule set.  Everything is validated; strings live in the
 * ruleset. */
struct rl_settings {
	int enabled;
	int dry_run;
	int headers;
	int ietf_headers;       /* RateLimit-Policy / RateLimit (IETF draft) */
	enum rl_retry_format retry_after;
	enum rl_strategy strategy;
	uint64_t burst;
	const char *key_prefix;
	struct rl_storage storage;
	struct rl_proxy_conf proxies;
	unsigned ipv4_prefix, ipv6_prefix;
	int case_insensitive;
	const struct rl_key *key;   /* default key: addr */
	const char *message;        /* default deny message */
	struct rl_limit *defaults;
	size_t ndefaults;
	struct rl_limit *application;
	size_t napplication;
	const char *listen;         /* gateway: as written, validated later */
	/* Responder mode (the gateway). */
	const struct rl_upstream *upstream; /* NULL: none (authorizer only) */
	int64_t upstream_timeout_ms;        /* time the application is waited
					       for; default 30 s */
	/* client-timeout: longest the gateway waits for the web server
	 * without progress (the request's params, the body, each write of
	 * the answer); default 60 s.  Both roles. */
	int64_t client_timeout_ms;
	/* Idle connections kept open to each FastCGI upstream (0..64, default
	 * RL_KEEPALIVE_DEFAULT; 0: a new connection per request, no
	 * FCGI_KEEP_CONN).  A libfcgi or php-fpm worker stays with a kept
	 * connection, so keep this at most the application's workers. */
	unsigned upstream_keepalive;
	int64_t lease_ms;   /* concurrency-lease: longest an in-flight slot is
			       held unreleased; default upstream_timeout_ms +
			       10 s */
	uint64_t max_body;  /* bytes, for requests without a rule; 0: none */
	enum rl_store_failure store_failure;
	enum rl_log_format log_format;
	const char *stats;  /* URL path of the statistics; NULL: off */
	const struct rl_cidr *stats_allow;  /* who may read them; default
					       127.0.0.1/32 and ::1/128 */
	size_t nstats_allow;
	/* exempt-clients: requests whose client address (as resolved with
	 * trusted-proxies) lies in one of these are not limited at all, as
	 * on an exempt path; NULL: none */
	const struct rl_cidr *exempt_clients;
	size_t nexempt_clients;
};

struct rl_ruleset;

/* Load path and everything it includes.  Returns a ruleset or NULL; rep is
 * always filled (errors when NULL is returned, warnings either way) and the
 * caller frees it with rl_report_free.  Nothing is half-loaded: any error
 * gives NULL.  The ruleset owns all its memory (one arena). */
struct rl_ruleset *rl_ruleset_load(const char *path, const struct rl_io *io,
				   struct rl_report *rep);
/* The same from text in memory, named name in messages; io (for includes)
 * may be NULL, and then include is an error. */
struct rl_ruleset *rl_ruleset_parse(const char *name, const char *text,
				    size_t len, const struct rl_io *io,
				    struct rl_report *rep);
void rl_ruleset_free(struct rl_ruleset *rs);

const struct rl_settings *rl_ruleset_settings(const struct rl_ruleset *rs);
size_t rl_ruleset_nrules(const struct rl_ruleset *rs);
const struct rl_rule *rl_ruleset_rule(const struct rl_ruleset *rs, size_t i);
size_t rl_ruleset_nfiles(const struct rl_ruleset *rs);
/* Largest moving-window count and in-flight maximum (concurrency=) in the
 * rules (a store sizes its slots from them); 0 when there is none. */
uint64_t rl_ruleset_max_moving(const struct rl_ruleset *rs);
uint64_t rl_ruleset_max_inflight(const struct rl_ruleset *rs);
/* Who asks for that largest count, as the subject of a message: "the rule
 * at FILE:LINE", "the default limits at FILE:LINE" or "the application
 * limits at FILE:LINE"; NULL when the count is 0.  Owned by rs. */
const char *rl_ruleset_max_moving_by(const struct rl_ruleset *rs);
const char *rl_ruleset_max_inflight_by(const struct rl_ruleset *rs);

/* ------------------------------------------------------------------ */
/* Deciding                                                            */

/* A CGI-style variable of the request: "REMOTE_ADDR", "HTTP_X_API_KEY",
 * "HTTP_COOKIE", "REMOTE_USER"...  A name may appear more than once
 * (several X-Forwarded-For lines); values are used in order. */
struct rl_param {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* What the engine needs to know about a request.  Nothing is copied; the
 * view must outlive the rl_decide call only. */
struct rl_request {
	const char *method;     /* "GET" */
	const char *path;       /* raw, undecoded, without the query string */
	size_t path_len;
	const char *query;      /* raw query string without '?', or NULL */
	size_t query_len;
	const char *remote_addr;
	size_t remote_addr_len;
	const struct rl_param *params;
	size_t nparams;
	uint64_t cost;          /* 0: the rule's cost */
	/* The request body's size when known up front (CONTENT_LENGTH); 0
	 * when there is none or it is not known yet (a chunked body, counted
	 * afterwards through rl_after_response). */
	uint64_t body_bytes;
	/* A body is coming whose length is not known up front (a chunked
	 * body: Transfer-Encoding without CONTENT_LENGTH).  Its bytes are
	 * counted afterwards, but the rule's bandwidth limits are checked
	 * now (a probe of one unit): a client already out of bandwidth is
	 * denied, as it is for a body of known length. */
	int body_unknown;
};

enum rl_outcome {
	RL_ALLOW = 0,
	RL_DENY,                /* over a limit (Retry-After applies) */
	RL_DENY_KEY,            /* key missing and missing-key=deny */
	RL_BAD_REQUEST,         /* path cannot be normalised */
	RL_STORE_ERROR,         /* the store failed; policy is the caller's */
	RL_TOO_LARGE            /* body_bytes above max-body (413); nothing
				   was counted */
};

/* Why a counter applies to the request. */
enum rl_origin { RL_FROM_RULE = 0, RL_FROM_DEFAULT, RL_FROM_APPLICATION };
/* "rule", "default" or "application", as logs and replay print it. */
const char *rl_origin_name(enum rl_origin o);

#define RL_DECISION_KEY_MAX 192

/* rl_decide sets every field (decide.c, decision_init, rather than
 * zeroing the whole struct): a new field must be set there too. */
struct rl_decision {
	enum rl_outcome outcome;
	int would_deny;         /* dry-run: a limit would have denied */
	int exempt;
	const struct rl_rule *rule;  /* the rule whose limits applied, or NULL
					(defaults); never a settings rule */
	/* The rule whose upstream= applies (a settings rule or rule), or
	 * NULL: the global upstream. */
	const struct rl_rule *upstream_rule;
	/* The deciding limit: for a denial the one with the longest wait; when
	 * allowed, the one with the fewest hits remaining.  NULL if none. */
	const struct rl_limit *limit;
	enum rl_origin origin;
	uint64_t remaining;
	int64_t reset_ms;       /* absolute */
	int64_t retry_ms;       /* denied: >= 1 */
	uint64_t cost;
	/* The deciding limit is a bandwidth limit: limit->unit bytes per hit,
	 * remaining in those units, cost the body's size in them. */
	int bandwidth;
	/* The effective max-body in bytes (0: none), for the gateway to
	 * enforce on a body whose length was not known up front; set for
	 * every outcome once the rule is known (0 when disabled or under
	 * dry-run, where an oversized body is only reported). */
	uint64_t max_body;
	enum rl_addr_source addr_source;
	char client[64];        /* resolved client address text */
	char key[RL_DECISION_KEY_MAX]; /* client key used, truncated for logs */
	const char *message;    /* deny message */
	char error[RL_MSG_MAX]; /* RL_BAD_REQUEST / RL_STORE_ERROR /
				   RL_TOO_LARGE detail */
};

/* Decide on req at now_ms.  mode RL_HIT counts the request (all limits or
 * none); RL_TEST only looks.  A body above the effective max-body is
 * RL_TOO_LARGE before anything is counted.  The batch holds the rule's
 * request limits, its bandwidth limits (cost: req->body_bytes, skipped when
 * 0), the default and the application limits; the request limits of a
 * deduct-when= rule are only checked (a client already over them is
 * denied) and counted later by rl_after_response.  Returns the outcome,
 * also in d->outcome. */
enum rl_outcome rl_decide(const struct rl_ruleset *rs, struct rl_store *st,
			  const struct rl_request *req, int64_t now_ms,
			  enum rl_mode mode, struct rl_decision *d);

/* What can only be counted after the response, for the request req that
 * rl_decide allowed earlier (same req, same ruleset): when its rule deducts
 * on status (deduct-when=), its request limits take the hit, at the cost
 * rl_decide used; when late_body_bytes > 0 (a body whose length was not
 * known up front, counted while streaming), they are charged to the rule's
 * bandwidth limits.  Each counter is charged on its own, not all or
 * nothing, and never refused: a charge above what is left fills the
 * counter instead (the client is then out of budget until it recovers).
 * Returns 0 (also when there is nothing to count), or -1 with err->msg set
 * on a store failure (or a counter key too long, which rl_decide would
 * have refused as RL_BAD_REQUEST already). */
int rl_after_response(const struct rl_ruleset *rs, struct rl_store *st,
		      const struct rl_request *req, int status,
		      uint64_t late_body_bytes, int64_t now_ms,
		      struct rl_diag *err);

/* In-flight requests.  A lease on one slot; it holds the store key by
 * value, so the caller may keep it anywhere until rl_inflight_end. */
struct rl_lease {
	char key[RL_STORE_KEY_MAX];
	size_t key_len;
	uint64_t id;
	int held;               /* 0: nothing to release */
};

#define RL_INFLIGHT_RETRY_MS 1000

/* For a request whose rule has concurrency=N, take one of its client's N
 * in-flight slots as a lease that expires at now_ms + lease_ms unless
 * ended first (so a holder that dies frees its slot).  Returns RL_ALLOW
 * (lease->held tells whether a slot was taken: not when the rule has no
 * concurrency limit), RL_DENY when N leases are held (d->retry_ms is
 * RL_INFLIGHT_RETRY_MS: slots free up as requests end, not on a clock),
 * or, as rl_decide, RL_DENY_KEY, RL_BAD_REQUEST, RL_TOO_LARGE or
 * RL_STORE_ERROR. */
enum rl_outcome rl_inflight_begin(const struct rl_ruleset *rs,
				  struct rl_store *st,
				  const struct rl_request *req, int64_t now_ms,
				  int64_t lease_ms, struct rl_lease *lease,
				  struct rl_decision *d);
/* Give the slot back; a no-op for a lease not held.  Returns 0 or -1 (store
 * failure, err set; the lease then expires by itself). */
int rl_inflight_end(struct rl_store *st, struct rl_lease *lease,
		    int64_t now_ms, struct rl_diag *err);

/* ------------------------------------------------------------------ */
/* Small helpers shared with the gateway (rules/util.c)                */

/* Drop spaces and tabs at both ends of s[0..*len). */
void rl_trim(const char **s, size_t *len);
/* The value of the hex digit c (either case), or -1. */
int rl_hex_value(unsigned char c);
/* FNV-1a, 64 bits, unkeyed: for hashing long names into keys and log
 * digests, never where clients could aim collisions (stores key their
 * hashes). */
uint64_t rl_fnv1a(const char *s, size_t len);
/* s[0..len) as keys and logs write a hashed value: '#' and the 16 hex
 * digits of its rl_fnv1a, in out (17 bytes, not NUL-terminated). */
void rl_hash_text(const char *s, size_t len, char out[17]);
/* splitmix64's finaliser: spreads the bits of x. */
uint64_t rl_mix64(uint64_t x);
/* SipHash (Aumasson and Bernstein) under a 128-bit secret: the stores'
 * keyed hash, so that clients cannot choose keys that collide.  A key is
 * made from 16 bytes read as two little-endian words.  rl_siphash24 is
 * SipHash-2-4 with a 64-bit output (the shared-memory store, the Redis
 * store's cache); the _128 forms give the 128-bit output variant in
 * out[0] (first 8 bytes of the tag, little-endian) and out[1];
 * rl_siphash13_128 does 1 compression and 3 finalisation rounds (the
 * memory store, where it is on every decision's path; SipHash-1-3 is
 * what Rust's and Python's hash tables use against hash flooding). */
struct rl_sipkey {
	uint64_t k0, k1;
};
struct rl_sipkey rl_sipkey_of(const uint8_t key[16]);
uint64_t rl_siphash24(const struct rl_sipkey *k, const void *data, size_t len);
void rl_siphash24_128(const struct rl_sipkey *k, const void *data, size_t len,
		      uint64_t out[2]);
void rl_siphash13_128(const struct rl_sipkey *k, const void *data, size_t len,
		      uint64_t out[2]);

/* Seconds for Retry-After: retry_ms rounded up, never 0. */
int64_t rl_retry_seconds(int64_t retry_ms);

#endif
