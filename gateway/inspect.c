/*
 * inspect.c - `rategate inspect`: the shared-memory store seen from the
 * outside.  It attaches to the store file (never creating it, whatever its
 * size), walks it once with shm_scan (which holds each stripe's lock only
 * while it copies a few buckets, so gateways are not held up), and prints:
 *
 *   --stats        the store's geometry and statistics
 *   --top N        the N keys with most hits, with most denials, and those
 *                  nearest their limit (fewest remaining for their count)
 *   --client TEXT  the counters of every key whose name contains TEXT
 *   --reset TEXT   removes every key whose name contains TEXT: the client
 *                  starts afresh on those limits (lifts a ban)
 *                  (an address TEXT must be a whole field of the name:
 *                  rl_key_name_match)
 *
 * Rows are tab-separated: hits, denied, remaining/limit, expires, key.
 * Names exist only when the store keeps them (the default); a key whose
 * name is unknown prints as "#" and its hash; a longer key than the name
 * record holds is kept findable by its parts (rl_key_name_compact), and
 * one cut short all the same ends in "...".  --now MS sets the clock
 * (tests, post-mortems).
 *
 * With `storage redis://...` it asks Redis instead (inspect_redis): the
 * keys under the key prefix, found with SCAN, which never blocks Redis;
 * --stats counts them, --client shows each one's state and TTL, --reset
 * deletes them.  Redis keeps no hit or denial counts: no --top there.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "fileio.h"
#include "inspect.h"
#include "store_redis.h"
#include "store_shm.h"

#define TOP_DEFAULT 10

/* One ranking: the best n of everything offered, best first. */
struct ranking {
	struct shm_key_info *k;
	size_t n, cap;
	int (*before)(const struct shm_key_info *a, const struct shm_key_info *b,
		      int64_t now);
};

struct walk {
	int64_t now;
	struct ranking hits, denials, nearest;
	const char *text;               /* --client / --reset */
	struct shm_key_info *match;     /* keys containing text */
	size_t nmatch, capmatch;
	int oom;
};

static int name_cmp(const struct shm_key_info *a, const struct shm_key_info *b)
{
	int c = strcmp(a->name, b->name);

	if (c)
		return c;
	return a->hash < b->hash ? -1 : a->hash > b->hash;
}

static int name_qsort(const void *a, const void *b)
{
	return name_cmp(a, b);
}

static int by_hits(const struct shm_key_info *a, const struct shm_key_info *b,
		   int64_t now)
{
	(void)now;
	if (a->hits != b->hits)
		return a->hits > b->hits;
	return name_cmp(a, b) < 0;
}

static int by_denials(const struct shm_key_info *a,
		      const struct shm_key_info *b, int64_t now)
{
	(void)now;
	if (a->denials != b->denials)
		return a->denials > b->denials;
	return name_cmp(a, b) < 0;
}

/* Fewest remaining for the count (remaining/count compared as
 * remaining_a * count_b < remaining_b * count_a), then most hits. */
static int by_nearest(const struct shm_key_info *a,
		      const struct shm_key_info *b, int64_t now)
{
	unsigned __int128 x = (unsigned __int128)a->remaining * b->count;
	unsigned __int128 y = (unsigned __int128)b->remaining * a->count;

	(void)now;
	if (x != y)
		return x < y;
	return by_hits(a, b, now);
}

static void rank(struct ranking *r, const struct shm_key_info *k, int64_t now)
{
	size_t i;

	if (r->cap == 0)
		return;
	if (r->n == r->cap && !r->before(k, &r->k[r->n - 1], now))
		return;
	i = r->n < r->cap ? r->n++ : r->n - 1;
	while (i > 0 && r->before(k, &r->k[i - 1], now)) {
		r->k[i] = r->k[i - 1];
		i--;
	}
	r->k[i] = *k;
}

static int visit(void *ctx, const struct shm_key_info *k)
{
	struct walk *w = ctx;

	if (k->hits)
		rank(&w->hits, k, w->now);
	if (k->denials)
		rank(&w->denials, k, w->now);
	if (k->kind != SHM_KIND_INFLIGHT && k->expiry_ms > w->now)
		rank(&w->nearest, k, w->now);
	if (w->text && k->name_known &&
	    rl_key_name_match(k->name, strlen(k->name), w->text)) {
		if (w->nmatch == w->capmatch) {
			size_t cap = w->capmatch ? w->capmatch * 2 : 16;
			void *p = realloc(w->match, cap * sizeof(*w->match));
			if (!p) {
				w->oom = 1;
				return 1;
			}
			w->match = p;
			w->capmatch = cap;
		}
		w->match[w->nmatch++] = *k;
	}
	return 0;
}

static const char *kind_name(unsigned kind)
{
	return kind == SHM_KIND_INFLIGHT ? "in-flight" :
	       rl_strategy_name((enum rl_strategy)kind);
}

static void print_key(FILE *out, const struct shm_key_info *k)
{
	if (!k->name_known)
		fprintf(out, "#%016" PRIx64, k->hash);
	else
		fprintf(out, "%s%s", k->name,
			k->name_len > strlen(k->name) ? "..." : "");
}

static void print_expires(FILE *out, int64_t expiry, int64_t now)
{
	if (expiry <= now)
		fprintf(out, "expired");
	else
		fprintf(out, "%" PRId64 "s", (expiry - now + 999) / 1000);
}

static void print_row(FILE *out, const struct shm_key_info *k, int64_t now)
{
	fprintf(out, "%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "/%" PRIu64 "\t",
		k->hits, k->denials, k->remaining, k->count);
	print_expires(out, k->expiry_ms, now);
	fputc('\t', out);
	print_key(out, k);
	fputc('\n', out);
}

static void print_ranking(FILE *out, const char *title,
			  const struct ranking *r, int64_t now)
{
	fprintf(out, "# %s (hits, denied, remaining/limit, expires in, key)\n",
		title);
	for (size_t i = 0; i < r->n; i++)
		print_row(out, &r->k[i], now);
}

static void print_stats(FILE *out, const char *path, struct shm *m)
{
	struct shm_stats s;
	char created[32] = "?";
	time_t t;
	struct tm tm;

	shm_stats(m, &s);
	t = (time_t)(s.created_ms / 1000);
	if (gmtime_r(&t, &tm))
		strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(out, "file: %s\n", path);
	fprintf(out, "created: %s\n", created);
	fprintf(out, "size: %" PRIu64 " bytes, layout version %u, %u stripes\n",
		s.file_bytes, s.version, s.stripes);
	fprintf(out, "keys: %" PRIu64 " of %" PRIu64 " slots; 64 bytes per key",
		s.keys, s.slots);
	if (s.name_bytes)
		fprintf(out, ", +%" PRIu64 " for its name\n", s.name_bytes);
	else
		fprintf(out, ", names off\n");
	fprintf(out, "moving-window slots: %" PRIu64 " of %" PRIu64 " (%" PRIu64 " bytes, counts up to %" PRIu64 ")\n",
		s.ring_used, s.ring_slots, s.ring_bytes, s.max_moving);
	fprintf(out, "in-flight slots: %" PRIu64 " of %" PRIu64 " (%" PRIu64 " bytes, up to %" PRIu64 " leases)\n",
		s.lease_used, s.lease_slots, s.lease_bytes, s.max_leases);
	fprintf(out, "hits: %" PRIu64 " allowed, %" PRIu64 " denied\n",
		s.allowed, s.denied);
	fprintf(out, "keys created: %" PRIu64 "\n", s.inserts);
	fprintf(out, "evicted: %" PRIu64 " expired, %" PRIu64 " least recently used, %" PRIu64 " limiting (bans lifted early)\n",
		s.evict_expired, s.evict_lru, s.evict_limiting);
	fprintf(out, "store full: %" PRIu64 "\n", s.full);
	fprintf(out, "lock recoveries and repairs: %" PRIu64 "\n", s.recoveries);
	fprintf(out, "keys reset: %" PRIu64 "\n", s.resets);
}

static void print_client(FILE *out, const struct shm_key_info *k, int64_t now)
{
	fprintf(out, "key: ");
	print_key(out, k);
	/* every lease of an in-flight key past its expiry: none is held,
	 * whatever the count stored at its last acquire says */
	int lapsed = k->kind == SHM_KIND_INFLIGHT && k->expiry_ms <= now;
	fprintf(out, "\n  %s, %s %" PRIu64 ", remaining %" PRIu64 ", %s\n",
		kind_name(k->kind),
		k->kind == SHM_KIND_INFLIGHT ? "maximum" : "count", k->count,
		lapsed ? k->count : k->remaining,
		lapsed ? "no lease held (all expired)" :
		k->kind == SHM_KIND_INFLIGHT ? "leases held" :
		k->limiting && k->expiry_ms > now ? "limiting (denied at its last hit)" :
		"not limiting");
	fprintf(out, "  hits %" PRIu64 ", denied %" PRIu64 ", %s",
		k->hits, k->denials, k->expiry_ms <= now ? "" : "expires in ");
	print_expires(out, k->expiry_ms, now);
	fputc('\n', out);
	fprintf(out, "  state: %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
		k->state[0], k->state[1], k->state[2]);
}

static int ranking_init(struct ranking *r, size_t cap,
			int (*before)(const struct shm_key_info *,
				      const struct shm_key_info *, int64_t))
{
	r->n = 0;
	r->cap = cap;
	r->before = before;
	r->k = cap ? calloc(cap, sizeof(*r->k)) : NULL;
	return cap && !r->k ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Redis                                                               */

struct rkey {
	char *key;
	char state[160];
	long long ttl_ms;
};

struct rwalk {
	struct rkey *k;
	size_t n, cap;
	int oom;
};

static int rkey_cmp(const void *a, const void *b)
{
	return strcmp(((const struct rkey *)a)->key,
		      ((const struct rkey *)b)->key);
}

/* A text state "STRATEGY COUNT w0 w1 [w2]" (gateway/store_redis.lua) in
 * words; anything else as it is. */
static void state_words(const char *raw, char *out, size_t cap)
{
	unsigned st;
	char count[24], w0[24], w1[24], w2[24] = "";
	int n = sscanf(raw, "%u %23[0-9] %23[0-9] %23[0-9] %23[0-9]", &st,
		       count, w0, w1, w2);

	if (n < 4 || st >= RL_STRATEGY_COUNT) {
		snprintf(out, cap, "%s", raw);
		return;
	}
	const char *name = rl_strategy_name((enum rl_strategy)st);
	switch ((enum rl_strategy)st) {
	case RL_FIXED_WINDOW:
	case RL_FIXED_WINDOW_ELASTIC:
		snprintf(out, cap, "%s, limit %s: %s used", name, count, w1);
		break;
	case RL_SLIDING_WINDOW:
		snprintf(out, cap, "%s, limit %s: %s in the previous window, %s in this one",
			 name, count, w1, w2);
		break;
	default:
		snprintf(out, cap, "%s, limit %s: state %s %s", name, count,
			 w0, w1);
		break;
	}
}

static int rvisit(void *ctx, const struct redis_key_info *k)
{
	struct rwalk *w = ctx;

	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		void *p = realloc(w->k, cap * sizeof(*w->k));
		if (p == NULL) {
			w->oom = 1;
			return 1;
		}
		w->k = p;
		w->cap = cap;
	}
	struct rkey *r = &w->k[w->n];
	if ((r->key = strdup(k->key)) == NULL) {
		w->oom = 1;
		return 1;
	}
	state_words(k->state, r->state, sizeof(r->state));
	r->ttl_ms = k->ttl_ms;
	w->n++;
	return 0;
}

static void print_ttl(FILE *out, long long ttl_ms)
{
	if (ttl_ms >= 0)
		fprintf(out, "expires in %llds", (ttl_ms + 999) / 1000);
	else if (ttl_ms == -1)
		fprintf(out, "no expiry");
	else
		fprintf(out, "gone");
}

/* inspect on a Redis store: the keys under the key prefix, found with
 * SCAN.  Redis keeps no hit or denial counts, so there is no --top. */
static int inspect_redis(const struct rl_ruleset *rs, int stats,
			 int top, const char *client, const char *reset,
			 FILE *out, FILE *errs)
{
	const struct rl_settings *s = rl_ruleset_settings(rs);
	struct redis_config c;
	struct rl_store st = { NULL, NULL };
	struct rwalk w = { NULL, 0, 0, 0 };
	const char *text = client ? client : reset;
	char err[512];
	int rc = 1;

	if (top) {
		fprintf(errs, "rategate inspect: --top needs the shared-memory store: Redis keeps no hit or denial counts (use --client TEXT)\n");
		return 2;
	}
	/* No fallback store (inspect never creates one), no cache, and the
	 * store's own lines, which are about gateways ("requests are answered
	 * 503"), to nowhere: inspect says what failed itself. */
	struct log *quiet = log_new("/dev/null", err, sizeof(err));
	store_redis_config(rs, &c);
	c.failure = RL_STORE_FAIL_DENY;
	c.cache_off = 1;
	c.log = quiet;
	if (redis_store_open(&c, &st, err, sizeof(err)) != 0) {
		fprintf(errs, "rategate inspect: %s\n", err);
		log_free(quiet);
		return 1;
	}
	struct redis_store *r = store_redis_of(&st);
	const char *prefix = s->key_prefix ? s->key_prefix : "rg";
	if (stats) {
		long n = store_redis_keys(r, prefix, NULL, 0, NULL, NULL, err,
					  sizeof(err));
		if (n < 0) {
			fprintf(errs, "rategate inspect: %s\n", err);
			goto done;
		}
		fprintf(out, "store: %s\nkey prefix: %s\nkeys: %ld\n",
			store_redis_where(r), prefix, n);
	}
	if (text) {
		if (store_redis_keys(r, prefix, text, reset != NULL, rvisit, &w,
				     err, sizeof(err)) < 0 || w.oom) {
			fprintf(errs, "rategate inspect: %s\n",
				w.oom ? "out of memory" : err);
			goto done;
		}
		if (w.n > 1)
			qsort(w.k, w.n, sizeof(*w.k), rkey_cmp);
		for (size_t i = 0; i < w.n; i++) {
			if (reset) {
				fprintf(out, "reset: %s\n", w.k[i].key);
				continue;
			}
			fprintf(out, "%s\n  %s, ", w.k[i].key,
				w.k[i].state[0] ? w.k[i].state : "(another kind of key)");
			print_ttl(out, w.k[i].ttl_ms);
			fputc('\n', out);
		}
		if (reset)
			fprintf(out, "reset %zu key%s containing \"%s\"\n", w.n,
				w.n == 1 ? "" : "s", reset);
		/* and every gateway's over-limit cache, which would go on
		 * denying without asking Redis, is emptied within a second */
		if (reset && w.n > 0 && store_redis_new_epoch(r, err, sizeof(err)) != 0) {
			fprintf(errs, "rategate inspect: %s (the gateways' over-limit caches may deny until the waits they know end)\n",
				err);
			goto done;
		}
		if (w.n == 0) {
			fprintf(errs, "rategate inspect: no key contains \"%s\"\n", text);
			goto done;
		}
	}
	rc = 0;
done:
	for (size_t i = 0; i < w.n; i++)
		free(w.k[i].key);
	free(w.k);
	st.ops->destroy(st.impl);
	log_free(quiet);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rategate inspect (-c RULES | --store FILE) [--stats] [--top N]\n"
		   "                        [--client TEXT] [--reset TEXT] [--now MS]\n");
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	*v = strtoull(s, &end, 10);
	return errno || *end ? -1 : 0;
}

int inspect_run(int argc, char **argv, FILE *out, FILE *errs)
{
	const char *conf = NULL, *path = NULL, *client = NULL, *reset = NULL;
	uint64_t top = 0, now_arg = 0;
	int stats = 0, have_top = 0, have_now = 0, rc = 1;
	struct rl_ruleset *rs = NULL;
	struct rl_store st = { NULL, NULL };
	struct shm_config c = { .attach_only = 1 };
	struct walk w;
	struct rl_diag sd = { 0, "" };
	char err[512];
	struct shm *m;

	memset(&w, 0, sizeof(w));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--stats") == 0) {
			stats = 1;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(out);
			return 0;
		}
		if (!v || (strcmp(a, "-c") && strcmp(a, "--store") &&
			   strcmp(a, "--top") && strcmp(a, "--client") &&
			   strcmp(a, "--reset") && strcmp(a, "--now"))) {
			fprintf(errs, "rategate inspect: unknown option or missing value \"%s\"\n", a);
			usage(errs);
			return 2;
		}
		i++;
		const char **dst = strcmp(a, "-c") == 0 ? &conf :
				   strcmp(a, "--store") == 0 ? &path :
				   strcmp(a, "--client") == 0 ? &client :
				   strcmp(a, "--reset") == 0 ? &reset : NULL;
		if ((dst != NULL && *dst != NULL) ||
		    (strcmp(a, "--top") == 0 && have_top) ||
		    (strcmp(a, "--now") == 0 && have_now)) {
			fprintf(errs, "rategate inspect: %s given twice\n", a);
			return 2;
		}
		if (dst != NULL) {
			*dst = v;
		} else if (strcmp(a, "--top") == 0) {
			if (parse_u64(v, &top) || top < 1 || top > INSPECT_TOP_MAX) {
				fprintf(errs, "rategate inspect: bad --top \"%s\": expected 1 to %d\n",
					v, INSPECT_TOP_MAX);
				return 2;
			}
			have_top = 1;
		} else {
			if (parse_u64(v, &now_arg) || now_arg > INT64_MAX) {
				fprintf(errs, "rategate inspect: bad --now \"%s\": expected milliseconds since the epoch\n",
					v);
				return 2;
			}
			have_now = 1;
		}
	}
	if (conf != NULL && path != NULL) {
		fprintf(errs, "rategate inspect: -c and --store are exclusive: give one\n");
		return 2;
	}
	if (conf == NULL && path == NULL) {
		fprintf(errs, "rategate inspect: give -c RULES or --store FILE\n");
		usage(errs);
		return 2;
	}
	if ((client && !*client) || (reset && !*reset)) {
		fprintf(errs, "rategate inspect: --client and --reset need a non-empty TEXT\n");
		return 2;
	}
	if (client && reset && strcmp(client, reset) != 0) {
		fprintf(errs, "rategate inspect: --client and --reset must name the same TEXT\n");
		return 2;
	}
	int asked_top = have_top;

	if (!stats && !have_top && !client && !reset) {
		stats = 1;
		have_top = 1;
		top = TOP_DEFAULT;
	}
	if (conf) {
		const struct rl_settings *s;
		rs = fileio_load_rules(conf, 0);
		if (!rs) {
			fprintf(errs, "rategate: %s: rules not loaded\n", conf);
			return 1;
		}
		s = rl_ruleset_settings(rs);
		if (s->storage.kind == RL_STORAGE_REDIS) {
			rc = inspect_redis(rs, stats, asked_top, client, reset,
					   out, errs);
			goto done;
		}
		if (s->storage.kind != RL_STORAGE_SHM) {
			fprintf(errs, "rategate inspect: %s: storage %s is not shared memory: nothing to inspect\n",
				conf, s->storage.shown);
			goto done;
		}
		path = s->storage.path ? s->storage.path : SHM_DEFAULT_PATH;
	}
	c.path = path;
	if (shm_store_open(&c, &st, err, sizeof(err)) < 0) {
		fprintf(errs, "rategate inspect: %s\n", err);
		goto done;
	}
	m = shm_of(&st);
	if (have_now) {
		w.now = (int64_t)now_arg;
	} else {
		w.now = clock_wall_ms();
	}
	w.text = client ? client : reset;
	if (w.text) {
		struct shm_stats ss;
		shm_stats(m, &ss);
		if (!ss.name_bytes) {
			fprintf(errs, "rategate inspect: %s keeps no key names: --client and --reset cannot match\n",
				path);
			goto done;
		}
	}
	if (ranking_init(&w.hits, have_top ? top : 0, by_hits) < 0 ||
	    ranking_init(&w.denials, have_top ? top : 0, by_denials) < 0 ||
	    ranking_init(&w.nearest, have_top ? top : 0, by_nearest) < 0 ||
	    ((have_top || w.text) && shm_scan(m, visit, &w, &sd) != 0) ||
	    w.oom) {
		if (sd.msg[0] && !w.oom)
			fprintf(errs, "rategate inspect: %s\n", sd.msg);
		else
			fprintf(errs, "rategate inspect: %s: out of memory\n",
				path);
		goto done;
	}
	if (stats)
		print_stats(out, path, m);
	if (have_top) {
		print_ranking(out, "most hits", &w.hits, w.now);
		print_ranking(out, "most denials", &w.denials, w.now);
		print_ranking(out, "nearest their limit", &w.nearest, w.now);
	}
	if (w.text && w.nmatch > 1)
		qsort(w.match, w.nmatch, sizeof(*w.match),
		      name_qsort);
	if (client)
		for (size_t i = 0; i < w.nmatch; i++)
			print_client(out, &w.match[i], w.now);
	rc = 0;
	if (reset) {
		size_t done = 0;
		for (size_t i = 0; i < w.nmatch; i++) {
			int r = shm_remove(m, w.match[i].hash, err, sizeof(err));
			if (r < 0) {
				fprintf(errs, "rategate inspect: %s\n", err);
				rc = 1;
				break;
			}
			if (r == 1) {
				fprintf(out, "reset: ");
				print_key(out, &w.match[i]);
				fputc('\n', out);
				done++;
			}
		}
		fprintf(out, "reset %zu key%s containing \"%s\"\n", done,
			done == 1 ? "" : "s", reset);
	}
	if (w.text && w.nmatch == 0) {
		fprintf(errs, "rategate inspect: no key contains \"%s\"\n", w.text);
		rc = 1;
	}
done:
	free(w.hits.k);
	free(w.denials.k);
	free(w.nearest.k);
	free(w.match);
	if (st.ops)
		st.ops->destroy(st.impl);
	rl_ruleset_free(rs);
	return rc;
}

int inspect_main(int argc, char **argv)
{
	int rc = inspect_run(argc, argv, stdout, stderr);

	if (fflush(stdout) != 0 && rc == 0)
		rc = 1;
	return rc;
}
