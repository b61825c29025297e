/*
 * store_redis.c - the Redis store: the rl_store ops over hiredis, the
 * connection pool, the down/up state machine with its backoff and
 * fallback, and the local over-limit cache.  What the store promises is in
 * store_redis.h; the strategies themselves are in store_redis.lua.
 *
 * One apply is one EVALSHA:
 *
 *   EVALSHA sha N key1..keyN apply MODE NOW {STRATEGY COUNT PERIOD BURST
 *   COST PROBE} x N
 *
 * answered by 5 numbers per op (allowed, never, remaining, reset, retry).
 * NOW is -1 (the script reads Redis TIME) unless the test-only
 * client_clock is set.  A cost above the limit can never pass; it is sent
 * as max(count, burst) + 1, which gives the same verdict and keeps the
 * script's arithmetic small.
 *
 * Down and up.  The store is "up" until a call fails with a connection
 * error, a timeout or an error reply that says the server cannot serve
 * (READONLY, LOADING, NOAUTH...).  Then it is "down": the next attempt is
 * allowed at next_try, and the one call that claims it (a compare and
 * swap) is the probe; every other call meanwhile fails at once or, with
 * the fallback, goes to the shared-memory store.  A failed probe doubles
 * the backoff; a successful one switches back up.  Only the first failure
 * and the probe's success log, so each switch is one line.  Error replies
 * about one call (a script error) fail that call only.
 *
 * Idle connections are all dropped when one of them turns out dead, since
 * they died together (a Redis restart), and the call is retried once on a
 * new connection when the failure was immediate (not a timeout): a
 * restarted Redis then costs no failure at all.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "clock.h"
#include "store_redis.h"

const char store_redis_lua[] =
#include "store_redis_lua.h"
	;

#define CACHE_STRIPES 16
#define ARGS_STACK 16           /* ops per call without malloc */
#define NUM_MAX 24              /* one decimal number, with its NUL */

struct conn {
	redisContext *c;
	char sha[41];
};

struct cache_slot {
	uint64_t hash;
	int64_t until;          /* monotonic ms */
	int64_t reset_ms;
	uint64_t remaining;
	uint64_t count, period, burst, cost;
	uint16_t key_len;
	uint8_t strategy;
	uint8_t used;
	char key[REDIS_CACHE_KEY_MAX];
};

struct cache {
	size_t mask;            /* slots - 1; slots are a power of two */
	struct cache_slot *slots;
	pthread_mutex_t mu[CACHE_STRIPES];
	struct rl_sipkey sip;   /* made from 16 random bytes */
	atomic_uint_fast64_t entries;
};

struct resolver;

struct redis_store {
	struct redis_config c;  /* strings point into the store's copies */
	char *host, *path, *password, *user;
	char where[300];        /* "redis 127.0.0.1:6379" for messages */
	struct resolver *rv;    /* a host that is a name; NULL otherwise */

	pthread_mutex_t pool_mu;
	struct conn *idle[REDIS_POOL_MAX];
	size_t nidle;
	pid_t pid;

	/* store-failure as the current rules say (a reload may switch
	 * between allow and deny; fallback needs the store opened with it,
	 * has_fb): what the store-down line tells the admin */
	atomic_int failure;
	atomic_int down;
	atomic_int_fast64_t next_try;   /* monotonic ms */
	atomic_int_fast64_t backoff;    /* ms */
	atomic_int_fast64_t down_since; /* monotonic ms */
	pthread_mutex_t err_mu;
	char last_err[RL_MSG_MAX];

	struct rl_store fb;
	int has_fb;
	char fb_path[256];      /* the fallback file, for messages */

	struct cache *cache;
	/* The epoch the cache was learnt under ("PREFIX.epoch" in Redis): a
	 * new one (inspect --reset, or a Redis that restarted empty) empties
	 * the cache.  Checked at most every REDIS_EPOCH_CHECK_MS, and only
	 * when the cache is about to deny. */
	char epoch_key[80];
	pthread_mutex_t epoch_mu;
	char epoch[33];         /* "?": Redis refuses to say (logged once) */
	atomic_int_fast64_t epoch_checked;      /* monotonic ms */
	atomic_int epoch_refused_logged;

	struct log *_Atomic log;
	struct log *own_log;

	uint64_t lease_base;
	atomic_uint_fast64_t lease_next;

	atomic_uint_fast64_t calls, errors, refused, connects, noscript,
			     down_switches, up_switches, fallback,
			     cache_denied;
};

static const struct rl_store_ops redis_ops;

static void set_err(struct rl_diag *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_err(struct rl_diag *err, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	err->col = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static struct log *log_of(struct redis_store *r)
{
	struct log *l = atomic_load(&r->log);

	return l ? l : r->own_log;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */

static struct timeval tv_of(unsigned ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	return tv;
}

/* Why a call failed: the server is unusable (the store goes down), or only
 * this call went wrong. */
enum fail { FAIL_DOWN = 1, FAIL_CALL, FAIL_CONFIG };

/* Error replies that mean the server cannot serve anyone right now. */
static int error_means_down(const char *s)
{
	static const char *const down[] = {
		"READONLY", "LOADING", "MASTERDOWN", "NOAUTH", "WRONGPASS",
		"OOM", "BUSY", "MISCONF", "NOPERM", "CLUSTERDOWN", "TRYAGAIN",
	};

	for (size_t i = 0; i < sizeof(down) / sizeof(down[0]); i++)
		if (strncmp(s, down[i], strlen(down[i])) == 0)
			return 1;
	return 0;
}

/* A read or write that hit SO_RCVTIMEO / SO_SNDTIMEO (EAGAIN). */
static int is_timeout(const redisContext *c)
{
	return c->err == REDIS_ERR_IO && strstr(c->errstr, "temporarily") != NULL;
}

/* The message of a context in error: timeouts said as such. */
static void io_message(struct redis_store *r, const redisContext *c,
		       const char *doing, char *msg, size_t cap)
{
	if (is_timeout(c))
		snprintf(msg, cap, "%s: %s: timed out after %u ms", r->where,
			 doing, r->c.timeout_ms);
	else
		snprintf(msg, cap, "%s: %s: %s", r->where, doing,
			 c->errstr[0] ? c->errstr : "connection lost");
}

/* ------------------------------------------------------------------ */
/* Host names                                                          */

/* A host given by name is resolved on a thread of its own, never by the
 * call that connects: getaddrinfo (which hiredis would call) waits as
 * long as the resolver says, 10 s and more per name when the DNS server
 * does not answer, whatever connect-timeout is, and every worker needing
 * a connection would wait so.  A connection uses the last answer at once
 * and starts a new lookup for the next (a name that moves is followed
 * one connection later, as the kept connections follow it anyway); only
 * while no answer has come yet does it wait, at most connect-timeout.
 * One lookup at a time.  The lookup's thread holds a reference, so a
 * store destroyed meanwhile leaves the resolver to it. */
struct resolver {
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* a lookup ended */
	int refs;               /* the store's and the lookup's in flight */
	int busy;               /* a lookup in flight */
	pid_t pid;              /* of the process whose thread it is */
	char *host;
	char port[8];
	char addr[INET6_ADDRSTRLEN];    /* the last answer; "" none yet */
	char err[128];          /* why the last lookup failed; "" it did not */
};

static void resolver_unref_locked(struct resolver *rv)
{
	int last = --rv->refs == 0;

	pthread_mutex_unlock(&rv->mu);
	if (last) {
		pthread_mutex_destroy(&rv->mu);
		pthread_cond_destroy(&rv->cv);
		free(rv->host);
		free(rv);
	}
}

static void *resolver_lookup(void *arg)
{
	struct resolver *rv = arg;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	char addr[INET6_ADDRSTRLEN] = "", err[128] = "";
	int e = getaddrinfo(rv->host, rv->port, &hints, &res);

	if (e != 0) {
		snprintf(err, sizeof(err), "%s", gai_strerror(e));
	} else {
		/* IPv4 first, as hiredis does */
		const struct addrinfo *pick = NULL;
		for (const struct addrinfo *a = res; a && !pick; a = a->ai_next)
			if (a->ai_family == AF_INET)
				pick = a;
		for (const struct addrinfo *a = res; a && !pick; a = a->ai_next)
			if (a->ai_family == AF_INET6)
				pick = a;
		if (pick == NULL || getnameinfo(pick->ai_addr, pick->ai_addrlen,
						addr, sizeof(addr), NULL, 0,
						NI_NUMERICHOST) != 0) {
			addr[0] = '\0';
			snprintf(err, sizeof(err), "no IPv4 or IPv6 address");
		}
		freeaddrinfo(res);
	}
	pthread_mutex_lock(&rv->mu);
	if (addr[0] != '\0')
		memcpy(rv->addr, addr, sizeof(addr));
	memcpy(rv->err, err, sizeof(err));
	rv->busy = 0;
	pthread_cond_broadcast(&rv->cv);
	resolver_unref_locked(rv);
	return NULL;
}

static struct resolver *resolver_new(const char *host, unsigned port)
{
	struct resolver *rv = calloc(1, sizeof(*rv));

	if (rv == NULL || (rv->host = strdup(host)) == NULL) {
		free(rv);
		return NULL;
	}
	pthread_condattr_t ca;

	pthread_mutex_init(&rv->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* as the wait's end */
	pthread_cond_init(&rv->cv, &ca);
	pthread_condattr_destroy(&ca);
	rv->refs = 1;
	snprintf(rv->port, sizeof(rv->port), "%u", port);
	return rv;
}

static void resolver_free(struct resolver *rv)
{
	if (rv == NULL)
		return;
	pthread_mutex_lock(&rv->mu);
	resolver_unref_locked(rv);
}

/* The address to connect to, numeric, in out: the last answer, or the
 * first within wait_ms.  Starts a lookup when none is in flight.  -1 with
 * msg when there is none. */
static int resolve(struct resolver *rv, unsigned wait_ms, char *out,
		   size_t cap, char *msg, size_t msgcap)
{
	int rc = -1;

	pthread_mutex_lock(&rv->mu);
	if (rv->busy && rv->pid != getpid()) {
		/* forked while a lookup ran: its thread is the parent's */
		rv->busy = 0;
		rv->refs--;
	}
	if (!rv->busy) {
		pthread_t t;
		pthread_attr_t at;
		sigset_t all, was;
		int e;

		/* no signal for the lookup's thread: one it left to its
		 * default action (a SIGTERM the gateway waits for with
		 * sigwait) would end the process */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &was);
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		rv->busy = 1;
		rv->pid = getpid();
		rv->refs++;
		e = pthread_create(&t, &at, resolver_lookup, rv);
		pthread_attr_destroy(&at);
		pthread_sigmask(SIG_SETMASK, &was, NULL);
		if (e != 0) {
			rv->busy = 0;
			rv->refs--;
			snprintf(rv->err, sizeof(rv->err), "cannot start a lookup: %s",
				 strerror(e));
		}
	}
	struct timespec dl = clock_mono_deadline(wait_ms);
	while (rv->addr[0] == '\0' && rv->busy &&
	       pthread_cond_timedwait(&rv->cv, &rv->mu, &dl) != ETIMEDOUT)
		;
	if (rv->addr[0] != '\0') {
		snprintf(out, cap, "%s", rv->addr);
		rc = 0;
	} else if (rv->busy) {
		snprintf(msg, msgcap, "resolving %s: no answer within %u ms",
			 rv->host, wait_ms);
	} else {
		snprintf(msg, msgcap, "resolving %s: %s", rv->host, rv->err);
	}
	pthread_mutex_unlock(&rv->mu);
	return rc;
}

/* A new connection, its handshake done in one round trip: AUTH, SELECT,
 * SCRIPT LOAD.  NULL with msg and *why on failure. */
static struct conn *conn_open(struct redis_store *r, char *msg, size_t cap,
			      enum fail *why)
{
	struct timeval ct = tv_of(r->c.connect_timeout_ms);
	redisContext *c;
	redisReply *rep[3] = { NULL, NULL, NULL };
	/* SELECT even db 0: an unauthenticated client gets NOAUTH for it,
	 * before SCRIPT LOAD's body is refused as a protocol error. */
	int nrep = 0, want_auth = r->password != NULL || r->user != NULL;
	int want_db = 1;
	struct conn *cn = NULL;

	*why = FAIL_DOWN;
	if (r->path) {
		c = redisConnectUnixWithTimeout(r->path, ct);
	} else if (r->rv != NULL) {
		char addr[INET6_ADDRSTRLEN], m[200];
		if (resolve(r->rv, r->c.connect_timeout_ms, addr, sizeof(addr),
			    m, sizeof(m)) != 0) {
			snprintf(msg, cap, "%s: connect: %s", r->where, m);
			return NULL;
		}
		c = redisConnectWithTimeout(addr, (int)r->c.port, ct);
	} else {
		c = redisConnectWithTimeout(r->host, (int)r->c.port, ct);
	}
	if (c == NULL) {
		snprintf(msg, cap, "%s: connect: out of memory", r->where);
		return NULL;
	}
	if (c->err) {
		if (c->err == REDIS_ERR_IO && (strstr(c->errstr, "timed out") ||
					       strstr(c->errstr, "temporarily")))
			snprintf(msg, cap, "%s: connect: timed out after %u ms",
				 r->where, r->c.connect_timeout_ms);
		else
			snprintf(msg, cap, "%s: connect: %s", r->where, c->errstr);
		goto fail;
	}
	atomic_fetch_add(&r->connects, 1);
	redisSetTimeout(c, tv_of(r->c.timeout_ms));
	if (want_auth && r->user != NULL)      /* a nopass user: any password */
		redisAppendCommand(c, "AUTH %s %s", r->user,
				   r->password ? r->password : "");
	else if (want_auth)
		redisAppendCommand(c, "AUTH %s", r->password);
	if (want_db)
		redisAppendCommand(c, "SELECT %u", r->c.db);
	redisAppendCommand(c, "SCRIPT LOAD %s", store_redis_lua);
	for (nrep = 0; nrep < want_auth + want_db + 1; nrep++) {
		void *p = NULL;
		if (redisGetReply(c, &p) != REDIS_OK) {
			io_message(r, c, "handshake", msg, cap);
			goto fail;
		}
		rep[nrep] = p;
	}
	nrep = 0;
	if (want_auth) {
		redisReply *a = rep[nrep++];
		if (a->type == REDIS_REPLY_ERROR) {
			snprintf(msg, cap, "%s: AUTH failed: %s (check the %s in the storage URI)",
				 r->where, a->str,
				 r->user ? "user and password" : "password");
			*why = FAIL_CONFIG;
			goto fail;
		}
	}
	if (want_db) {
		redisReply *a = rep[nrep++];
		if (a->type == REDIS_REPLY_ERROR) {
			if (strncmp(a->str, "NOAUTH", 6) == 0) {
				snprintf(msg, cap, "%s: the server wants a password (redis://:PASSWORD@host...): %s",
					 r->where, a->str);
			} else {
				snprintf(msg, cap, "%s: SELECT %u failed: %s",
					 r->where, r->c.db, a->str);
			}
			*why = FAIL_CONFIG;
			goto fail;
		}
	}
	redisReply *a = rep[nrep];
	if (a->type == REDIS_REPLY_ERROR) {
		if (strncmp(a->str, "NOAUTH", 6) == 0) {
			snprintf(msg, cap, "%s: the server wants a password (redis://:PASSWORD@host...): %s",
				 r->where, a->str);
			*why = FAIL_CONFIG;
		} else {
			snprintf(msg, cap, "%s: SCRIPT LOAD failed: %s", r->where,
				 a->str);
			*why = error_means_down(a->str) ? FAIL_DOWN : FAIL_CALL;
		}
		goto fail;
	}
	if (a->type != REDIS_REPLY_STRING || a->len != 40) {
		snprintf(msg, cap, "%s: SCRIPT LOAD: unexpected reply", r->where);
		*why = FAIL_CALL;
		goto fail;
	}
	cn = malloc(sizeof(*cn));
	if (cn == NULL) {
		snprintf(msg, cap, "%s: out of memory", r->where);
		goto fail;
	}
	cn->c = c;
	memcpy(cn->sha, a->str, 40);
	cn->sha[40] = '\0';
	for (int i = 0; i < 3; i++)
		if (rep[i])
			freeReplyObject(rep[i]);
	return cn;
fail:
	for (int i = 0; i < 3; i++)
		if (rep[i])
			freeReplyObject(rep[i]);
	redisFree(c);
	return NULL;
}

static void conn_free(struct conn *cn)
{
	if (cn == NULL)
		return;
	redisFree(cn->c);
	free(cn);
}

/* Connections of another process (we were forked) are closed here and
 * never used: the socket belongs to the parent's protocol stream. */
static void pool_check_pid_locked(struct redis_store *r)
{
	pid_t me = getpid();

	if (r->pid == me)
		return;
	for (size_t i = 0; i < r->nidle; i++)
		conn_free(r->idle[i]);
	r->nidle = 0;
	r->pid = me;
}

/* An idle connection (*fresh = 0) or a new one (*fresh = 1). */
static struct conn *pool_get(struct redis_store *r, int *fresh, char *msg,
			     size_t cap, enum fail *why)
{
	struct conn *cn = NULL;

	pthread_mutex_lock(&r->pool_mu);
	pool_check_pid_locked(r);
	if (r->nidle > 0)
		cn = r->idle[--r->nidle];
	pthread_mutex_unlock(&r->pool_mu);
	*fresh = cn == NULL;
	if (cn == NULL)
		cn = conn_open(r, msg, cap, why);
	return cn;
}

static void pool_put(struct redis_store *r, struct conn *cn)
{
	pthread_mutex_lock(&r->pool_mu);
	if (r->pid == getpid() && r->nidle < REDIS_POOL_MAX) {
		r->idle[r->nidle++] = cn;
		cn = NULL;
	}
	pthread_mutex_unlock(&r->pool_mu);
	conn_free(cn);
}

static void pool_flush(struct redis_store *r)
{
	struct conn *old[REDIS_POOL_MAX];
	size_t n;

	pthread_mutex_lock(&r->pool_mu);
	n = r->nidle;
	memcpy(old, r->idle, n * sizeof(old[0]));
	r->nidle = 0;
	pthread_mutex_unlock(&r->pool_mu);
	for (size_t i = 0; i < n; i++)
		conn_free(old[i]);
}

/* Run the script: argv[1] is filled with the connection's SHA.  Returns
 * the reply (the caller frees it) or NULL with msg and *why. */
static redisReply *call(struct redis_store *r, int argc, const char **argv,
			size_t *lens, char *msg, size_t cap, enum fail *why)
{
	int fresh;
	struct conn *cn = pool_get(r, &fresh, msg, cap, why);
	redisReply *rep;

	if (cn == NULL)
		return NULL;
	for (int attempt = 0;; attempt++) {
		argv[1] = cn->sha;
		lens[1] = 40;
		rep = redisCommandArgv(cn->c, argc, argv, lens);
		if (rep == NULL) {
			int timeout = is_timeout(cn->c);
			io_message(r, cn->c, "EVALSHA", msg, cap);
			conn_free(cn);
			*why = FAIL_DOWN;
			if (fresh || timeout)
				return NULL;
			/* An idle connection found dead: so are its
			 * siblings; one more try on a new one. */
			pool_flush(r);
			cn = pool_get(r, &fresh, msg, cap, why);
			if (cn == NULL)
				return NULL;
			continue;
		}
		if (rep->type == REDIS_REPLY_ERROR &&
		    strncmp(rep->str, "NOSCRIPT", 8) == 0 && attempt < 2) {
			redisReply *load;

			freeReplyObject(rep);
			atomic_fetch_add(&r->noscript, 1);
			load = redisCommand(cn->c, "SCRIPT LOAD %s", store_redis_lua);
			if (load == NULL) {
				io_message(r, cn->c, "SCRIPT LOAD", msg, cap);
				conn_free(cn);
				*why = FAIL_DOWN;
				return NULL;
			}
			if (load->type == REDIS_REPLY_STRING && load->len == 40) {
				memcpy(cn->sha, load->str, 40);
				freeReplyObject(load);
				continue;
			}
			snprintf(msg, cap, "%s: SCRIPT LOAD failed: %s", r->where,
				 load->type == REDIS_REPLY_ERROR ? load->str :
				 "unexpected reply");
			*why = load->type == REDIS_REPLY_ERROR &&
			       error_means_down(load->str) ? FAIL_DOWN : FAIL_CALL;
			freeReplyObject(load);
			pool_put(r, cn);
			return NULL;
		}
		break;
	}
	pool_put(r, cn);
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(msg, cap, "%s: %s", r->where, rep->str);
		*why = error_means_down(rep->str) ? FAIL_DOWN : FAIL_CALL;
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

/* ------------------------------------------------------------------ */
/* Down and up                                                         */

/* May this call go to Redis?  Sets *probe when it is the one attempt of
 * this backoff interval while Redis is down. */
static int gate(struct redis_store *r, int64_t now, int *probe)
{
	int_fast64_t nt;

	*probe = 0;
	if (!atomic_load(&r->down))
		return 1;
	nt = atomic_load(&r->next_try);
	if (now < nt)
		return 0;
	if (!atomic_compare_exchange_strong(&r->next_try, &nt,
					    now + atomic_load(&r->backoff)))
		return 0;
	*probe = 1;
	return 1;
}

static void note_down(struct redis_store *r, const char *msg, int probe,
		      int64_t now)
{
	int was = 0;

	pthread_mutex_lock(&r->err_mu);
	snprintf(r->last_err, sizeof(r->last_err), "%s", msg);
	pthread_mutex_unlock(&r->err_mu);
	if (atomic_compare_exchange_strong(&r->down, &was, 1)) {
		atomic_store(&r->backoff, r->c.backoff_min_ms);
		atomic_store(&r->down_since, now);
		atomic_store(&r->next_try, now + r->c.backoff_min_ms);
		atomic_fetch_add(&r->down_switches, 1);
		/* what the gateway will do, which is what the rules loaded last
		 * say: the fallback decides whenever it was opened; without
		 * it, only allow lets requests through (the gateway's
		 * store_failed) */
		if (r->has_fb)
			log_printf(log_of(r), LOG_LEVEL_ERROR, "store-down",
				   "%s; deciding on the shared-memory store %s until Redis answers again (store-failure fallback)",
				   msg, r->fb_path);
		else if (atomic_load(&r->failure) == RL_STORE_FAIL_ALLOW)
			log_printf(log_of(r), LOG_LEVEL_ERROR, "store-down",
				   "%s; requests are let through uncounted until Redis answers again (store-failure allow)",
				   msg);
		else
			log_printf(log_of(r), LOG_LEVEL_ERROR, "store-down",
				   "%s; requests are answered 503 until Redis answers again (store-failure deny)",
				   msg);
		return;
	}
	if (probe) {
		int_fast64_t b = atomic_load(&r->backoff) * 2;
		if (b > r->c.backoff_max_ms)
			b = r->c.backoff_max_ms;
		atomic_store(&r->backoff, b);
		atomic_store(&r->next_try, now + b);
	}
}

static void cache_clear(struct cache *k);

static void note_up(struct redis_store *r, int probe, int64_t now)
{
	int was = 1;

	if (!probe || !atomic_compare_exchange_strong(&r->down, &was, 0))
		return;
	atomic_fetch_add(&r->up_switches, 1);
	atomic_store(&r->backoff, r->c.backoff_min_ms);
	/* Redis may have restarted with empty counters: what it denied
	 * before is not sure any more. */
	if (r->cache)
		cache_clear(r->cache);
	log_printf(log_of(r), LOG_LEVEL_INFO, "store-up",
		   "%s answers again: the first call to succeed came %lld ms after it went down%s", r->where,
		   (long long)(now - atomic_load(&r->down_since)),
		   r->has_fb ? "; deciding there again (store-failure fallback)" : "");
}

/* A call that could not be made or failed: decide on the fallback store,
 * or fail with msg. */
static int failed(struct redis_store *r, struct rl_store_op *ops, size_t n,
		  enum rl_mode mode, int64_t now_ms, const char *msg,
		  struct rl_diag *err)
{
	if (r->has_fb) {
		atomic_fetch_add(&r->fallback, 1);
		if (r->fb.ops->apply(r->fb.impl, ops, n, mode, now_ms, err) == 0)
			return 0;
		char m[RL_MSG_MAX];
		snprintf(m, sizeof(m), "%s", err ? err->msg : "");
		set_err(err, "%s; fallback: %s", msg, m);
		return -1;
	}
	set_err(err, "%s", msg);
	return -1;
}

/* The message for a call refused while Redis is down. */
static void down_message(struct redis_store *r, int64_t now, char *msg,
			 size_t cap)
{
	char last[RL_MSG_MAX];
	int64_t wait = atomic_load(&r->next_try) - now;

	pthread_mutex_lock(&r->err_mu);
	snprintf(last, sizeof(last), "%s", r->last_err);
	pthread_mutex_unlock(&r->err_mu);
	snprintf(msg, cap, "%s (down; next attempt in %lld ms)", last,
		 (long long)(wait > 0 ? wait : 0));
}

/* ------------------------------------------------------------------ */
/* The over-limit cache                                                */

static struct cache *cache_new(size_t entries)
{
	struct cache *k = calloc(1, sizeof(*k));
	size_t n = 2;

	if (k == NULL)
		return NULL;
	while (n < entries && n < ((size_t)1 << 24))
		n *= 2;
	uint8_t seed[16];

	k->slots = calloc(n, sizeof(*k->slots));
	if (k->slots == NULL || getrandom(seed, sizeof(seed), 0) !=
	    (ssize_t)sizeof(seed)) {
		free(k->slots);
		free(k);
		return NULL;
	}
	k->sip = rl_sipkey_of(seed);
	k->mask = n - 1;
	for (int i = 0; i < CACHE_STRIPES; i++)
		pthread_mutex_init(&k->mu[i], NULL);
	return k;
}

static void cache_free(struct cache *k)
{
	if (k == NULL)
		return;
	for (int i = 0; i < CACHE_STRIPES; i++)
		pthread_mutex_destroy(&k->mu[i]);
	free(k->slots);
	free(k);
}

static void cache_clear(struct cache *k)
{
	for (size_t i = 0; i <= k->mask; i += 2) {
		pthread_mutex_t *mu = &k->mu[(i >> 1) % CACHE_STRIPES];
		pthread_mutex_lock(mu);
		for (size_t j = i; j < i + 2; j++) {
			if (k->slots[j].used) {
				k->slots[j].used = 0;
				atomic_fetch_sub(&k->entries, 1);
			}
		}
		pthread_mutex_unlock(mu);
	}
}

static int slot_is(const struct cache_slot *s, uint64_t h,
		   const struct rl_store_op *op)
{
	return s->used && s->hash == h && s->key_len == op->key_len &&
	       memcmp(s->key, op->key, op->key_len) == 0 &&
	       s->strategy == (uint8_t)op->step.strategy &&
	       s->count == op->step.count && s->period == op->step.period_ms &&
	       s->burst == op->step.burst;
}

/* Is op denied by the cache at now?  Fills v when it is. */
static int cache_lookup(struct cache *k, const struct rl_store_op *op,
			int64_t now, struct rl_verdict *v)
{
	uint64_t h;
	size_t i;
	pthread_mutex_t *mu;
	int hit = 0;

	/* a cost above the limit is never allowed: Redis says so */
	if (op->key_len > REDIS_CACHE_KEY_MAX ||
	    op->step.cost > (op->step.strategy == RL_GCRA && op->step.burst ?
			     op->step.burst : op->step.count))
		return 0;
	h = rl_siphash24(&k->sip, op->key, op->key_len);
	i = (size_t)h & k->mask & ~(size_t)1;
	mu = &k->mu[(i >> 1) % CACHE_STRIPES];
	pthread_mutex_lock(mu);
	for (size_t j = i; j < i + 2; j++) {
		struct cache_slot *s = &k->slots[j];
		if (!slot_is(s, h, op))
			continue;
		if (s->until <= now) {
			s->used = 0;
			atomic_fetch_sub(&k->entries, 1);
		} else if (op->step.cost >= s->cost) {
			v->allowed = 0;
			v->never = 0;
			v->remaining = s->remaining;
			v->reset_ms = s->reset_ms;
			v->retry_ms = s->until - now;
			hit = 1;
		}
		break;
	}
	pthread_mutex_unlock(mu);
	return hit;
}

/* Deny the batch here when an op's key is cached as over its limit.  Not
 * in a hit that would move an elastic window in Redis.  The batch's other
 * ops were not looked at: they read as allowed, with nothing known
 * (remaining 0, reset 0); a denied batch reports its denied ops only. */
static int cache_deny(struct cache *k, struct rl_store_op *ops, size_t n,
		      enum rl_mode mode, int64_t now)
{
	static const struct rl_verdict unknown = { 1, 0, 0, 0, 0 };
	int hits = 0;

	if (atomic_load(&k->entries) == 0)
		return 0;
	if (mode == RL_HIT)
		for (size_t i = 0; i < n; i++)
			if (!ops[i].probe &&
			    ops[i].step.strategy == RL_FIXED_WINDOW_ELASTIC)
				return 0;
	/* Verdicts written here are overwritten by Redis when nothing hits. */
	for (size_t i = 0; i < n; i++) {
		if (cache_lookup(k, &ops[i], now, &ops[i].v))
			hits++;
		else
			ops[i].v = unknown;
	}
	return hits > 0;
}

static void cache_insert(struct cache *k, const struct rl_store_op *op,
			 int64_t until)
{
	uint64_t h = rl_siphash24(&k->sip, op->key, op->key_len);
	size_t i = (size_t)h & k->mask & ~(size_t)1;
	pthread_mutex_t *mu = &k->mu[(i >> 1) % CACHE_STRIPES];
	struct cache_slot *s = NULL;
	int64_t now = clock_mono_ms();

	pthread_mutex_lock(mu);
	for (size_t j = i; j < i + 2 && s == NULL; j++)
		if (slot_is(&k->slots[j], h, op))
			s = &k->slots[j];
	for (size_t j = i; j < i + 2 && s == NULL; j++)
		if (!k->slots[j].used || k->slots[j].until <= now)
			s = &k->slots[j];
	if (s == NULL)         /* both live: drop the one ending sooner */
		s = &k->slots[k->slots[i].until <= k->slots[i + 1].until ? i : i + 1];
	if (!s->used)
		atomic_fetch_add(&k->entries, 1);
	s->used = 1;
	s->hash = h;
	s->until = until;
	s->reset_ms = op->v.reset_ms;
	s->remaining = op->v.remaining;
	s->count = op->step.count;
	s->period = op->step.period_ms;
	s->burst = op->step.burst;
	s->cost = op->step.cost;
	s->strategy = (uint8_t)op->step.strategy;
	s->key_len = (uint16_t)op->key_len;
	memcpy(s->key, op->key, op->key_len);
	pthread_mutex_unlock(mu);
}

static int same_key(const struct rl_store_op *a, const struct rl_store_op *b)
{
	return a->key_len == b->key_len &&
	       (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
}

/* After Redis answered, sent at sent (monotonic ms): remember the ops it
 * denied on their own key state. */
static void cache_learn(struct cache *k, const struct rl_store_op *ops,
			size_t n, int64_t sent)
{
	for (size_t i = 0; i < n; i++) {
		const struct rl_store_op *op = &ops[i];
		int dup = 0;

		if (op->v.allowed || op->v.never || op->v.retry_ms <= 0 ||
		    op->step.strategy == RL_FIXED_WINDOW_ELASTIC ||
		    op->key_len > REDIS_CACHE_KEY_MAX)
			continue;
		/* A key twice in the batch: its verdict depends on the
		 * other op. */
		for (size_t j = 0; j < n && !dup; j++)
			dup = j != i && same_key(&ops[j], op);
		if (!dup)
			cache_insert(k, op, sent + op->v.retry_ms);
	}
}

/* ------------------------------------------------------------------ */
/* The store ops                                                       */

static int reply_u64(const redisReply *e, uint64_t *out)
{
	if (e->type == REDIS_REPLY_INTEGER) {
		*out = e->integer < 0 ? 0 : (uint64_t)e->integer;
		return 0;
	}
	if (e->type == REDIS_REPLY_STRING) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(e->str, &end, 10);
		if (end == e->str)
			return -1;
		*out = errno == ERANGE ? UINT64_MAX : (uint64_t)v;
		return 0;
	}
	return -1;
}

static int reply_i64(const redisReply *e, int64_t *out)
{
	uint64_t v;

	if (reply_u64(e, &v) != 0)
		return -1;
	*out = v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
	return 0;
}

static int validate(const struct rl_store_op *ops, size_t n,
		    struct rl_diag *err)
{
	for (size_t i = 0; i < n; i++) {
		if (!rl_store_op_valid(&ops[i], err))
			return -1;
		for (size_t j = 0; j < i; j++) {
			if (same_key(&ops[j], &ops[i]) &&
			    (ops[j].step.strategy != ops[i].step.strategy ||
			     ops[j].step.count != ops[i].step.count)) {
				set_err(err, "one key with two strategies or counts in one batch");
				return -1;
			}
		}
	}
	return 0;
}

static int64_t now_arg(const struct redis_store *r, int64_t now_ms)
{
	if (!r->c.client_clock)
		return -1;
	return now_ms < 0 ? 0 : now_ms;
}

/* 32 random hex digits. */
static void epoch_token(char out[33])
{
	unsigned char b[16];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		uint64_t x = (uint64_t)clock_mono_ms() * 0x9e3779b97f4a7c15ULL ^
			     (uint64_t)getpid();
		for (size_t i = 0; i < sizeof(b); i++, x = x * 6364136223846793005ULL + 1)
			b[i] = (unsigned char)(x >> 56);
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Read the epoch Redis holds now into r->epoch: SET PREFIX.epoch TOKEN NX
 * GET gives it, or makes ours the epoch of a Redis that has none (one that
 * restarted empty).  1 when it differs from the one known before, 0 when
 * not (or when none was known), -1 when Redis did not answer or cannot
 * serve for the moment (nothing changes: the cache holds only what Redis
 * said). */
static int epoch_read(struct redis_store *r)
{
	char token[33], msg[RL_MSG_MAX];
	enum fail why;
	int fresh, changed = -1;

	struct conn *cn;
	redisReply *rep;

	char key[sizeof(r->epoch_key)];

	pthread_mutex_lock(&r->epoch_mu);
	memcpy(key, r->epoch_key, sizeof(key));
	pthread_mutex_unlock(&r->epoch_mu);
	epoch_token(token);
	for (;;) {
		cn = pool_get(r, &fresh, msg, sizeof(msg), &why);
		if (cn == NULL)
			return -1;
		rep = redisCommand(cn->c, "SET %s %s NX GET", key, token);
		if (rep != NULL)
			break;
		int timeout = is_timeout(cn->c);
		conn_free(cn);
		/* an idle connection found dead (Redis restarted, and
		 * perhaps empty: what this read is for): one more try on a
		 * new one, as call() does */
		if (fresh || timeout)
			return -1;
		pool_flush(r);
	}
	const char *now_epoch = rep->type == REDIS_REPLY_NIL ? token :
				rep->type == REDIS_REPLY_STRING ? rep->str : NULL;
	if (now_epoch != NULL) {
		pthread_mutex_lock(&r->epoch_mu);
		if (strcmp(key, r->epoch_key) != 0) {
			/* the prefix changed meanwhile: an old epoch */
			pthread_mutex_unlock(&r->epoch_mu);
			freeReplyObject(rep);
			pool_put(r, cn);
			return -1;
		}
		changed = r->epoch[0] != '\0' && strncmp(r->epoch, now_epoch, 32) != 0;
		snprintf(r->epoch, sizeof(r->epoch), "%.32s", now_epoch);
		pthread_mutex_unlock(&r->epoch_mu);
	} else if (rep->type == REDIS_REPLY_ERROR && error_means_down(rep->str) &&
		   strncmp(rep->str, "NOPERM", 6) != 0) {
		/* a Redis that cannot serve for the moment (READONLY: a
		 * replica after a failover; LOADING, OOM...): no answer, as a
		 * timeout is, and no word of the refusal below, which lasts
		 * (its warning named causes that were not there, and being
		 * logged once in the process's life hid a real one later) */
	} else if (rep->type == REDIS_REPLY_ERROR) {
		/* a Redis before 7 (no SET NX GET) or a user not allowed the
		 * key: the cache works without it, as known under an epoch
		 * that never changes, rather than asking on every denial */
		pthread_mutex_lock(&r->epoch_mu);
		if (r->epoch[0] == '\0' && strcmp(key, r->epoch_key) == 0)
			snprintf(r->epoch, sizeof(r->epoch), "?");
		pthread_mutex_unlock(&r->epoch_mu);
		if (atomic_exchange(&r->epoch_refused_logged, 1) == 0)
			log_printf(log_of(r), LOG_LEVEL_WARN, "store-epoch",
				   "%s: SET %s ... NX GET failed: %.200s: the over-limit cache cannot see rategate inspect --reset or a Redis restarted empty, so a ban it holds lasts its wait (needs Redis 7 and a user allowed that key)",
				   r->where, key, rep->str);
		changed = 0;
	}
	freeReplyObject(rep);
	pool_put(r, cn);
	return changed;
}

static int epoch_known(struct redis_store *r)
{
	int known;

	pthread_mutex_lock(&r->epoch_mu);
	known = r->epoch[0] != '\0';
	pthread_mutex_unlock(&r->epoch_mu);
	return known;
}

/* Has the epoch changed since the cache learnt what it holds?  Asks Redis
 * at most every REDIS_EPOCH_CHECK_MS (one thread at a time; the others
 * answer "no" meanwhile).  The cache learns nothing before the epoch is
 * known (see redis_apply), so an epoch known here is the one its entries
 * were learnt under. */
static int epoch_changed(struct redis_store *r, int64_t now)
{
	int64_t last = atomic_load(&r->epoch_checked);

	if (now - last < REDIS_EPOCH_CHECK_MS ||
	    !atomic_compare_exchange_strong(&r->epoch_checked, &last, now))
		return 0;
	return epoch_read(r) == 1;
}

/* Would cache_learn keep anything of this answer? */
static int cache_worthy(const struct rl_store_op *ops, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!ops[i].v.allowed && !ops[i].v.never && ops[i].v.retry_ms > 0 &&
		    ops[i].step.strategy != RL_FIXED_WINDOW_ELASTIC &&
		    ops[i].key_len <= REDIS_CACHE_KEY_MAX)
			return 1;
	return 0;
}

/* Does the over-limit cache deny ops now?  1: their verdicts are the
 * cache's.  A cache that would deny under an epoch Redis has changed since
 * (inspect --reset, a restart that emptied it) is emptied instead, and
 * Redis, which answered, is asked at once rather than the fallback store
 * until the backoff ends (a fresh fallback window there would add a
 * second budget to the one Redis starts afresh). */
static int cache_denies(struct redis_store *r, struct rl_store_op *ops,
			size_t n, enum rl_mode mode, int64_t t0)
{
	if (r->cache == NULL || !cache_deny(r->cache, ops, n, mode, t0))
		return 0;
	if (!epoch_changed(r, t0))
		return 1;
	cache_clear(r->cache);
	if (atomic_load(&r->down))
		atomic_store(&r->next_try, t0);
	return 0;
}

static int redis_apply(void *impl, struct rl_store_op *ops, size_t n,
		       enum rl_mode mode, int64_t now_ms, struct rl_diag *err)
{
	struct redis_store *r = impl;
	const char *argv_s[6 + 7 * ARGS_STACK], **argv = argv_s;
	size_t lens_s[6 + 7 * ARGS_STACK], *lens = lens_s;
	char nums_s[(3 + 6 * ARGS_STACK) * NUM_MAX], *nums = nums_s;
	char msg[RL_MSG_MAX];
	int argc = (int)(6 + 7 * n), probe, rc = -1;
	enum fail why;
	redisReply *rep;
	int64_t t0;

	if (validate(ops, n, err) != 0)
		return -1;
	if (n == 0)
		return 0;
	t0 = clock_mono_ms();
	if (mode == RL_PEEK) {
		/* the over-limit cache's denials, nothing asked of Redis (and
		 * not counted: the hit that follows a denial counts it) */
		static const struct rl_verdict unknown = { 1, 0, 0, 0, 0 };
		if (cache_denies(r, ops, n, RL_TEST, t0))
			return 0;
		for (size_t i = 0; i < n; i++)
			ops[i].v = unknown;
		return 0;
	}
	if (cache_denies(r, ops, n, mode, t0)) {
		atomic_fetch_add(&r->cache_denied, 1);
		return 0;
	}
	if (!gate(r, t0, &probe)) {
		atomic_fetch_add(&r->refused, 1);
		down_message(r, t0, msg, sizeof(msg));
		return failed(r, ops, n, mode, now_ms, msg, err);
	}
	if (n > ARGS_STACK) {
		argv = malloc((size_t)argc * sizeof(*argv));
		lens = malloc((size_t)argc * sizeof(*lens));
		nums = malloc((3 + 6 * n) * NUM_MAX);
		if (argv == NULL || lens == NULL || nums == NULL) {
			set_err(err, "out of memory");
			goto out;
		}
	}

	/* EVALSHA sha N keys... apply MODE NOW {6 numbers} x N */
	char *p = nums;
	int a = 0;
#define ARG(s, l) (argv[a] = (s), lens[a] = (l), a++)
#define NUM(fmt, v) (lens[a] = (size_t)snprintf(p, NUM_MAX, fmt, v), \
		     argv[a++] = p, p += NUM_MAX)
	ARG("EVALSHA", 7);
	ARG("", 0);             /* the SHA, set by call() */
	NUM("%zu", n);
	for (size_t i = 0; i < n; i++)
		ARG(ops[i].key, ops[i].key_len);
	ARG("apply", 5);
	NUM("%d", mode == RL_HIT ? 1 : 0);
	NUM("%lld", (long long)now_arg(r, now_ms));
	for (size_t i = 0; i < n; i++) {
		const struct rl_step *s = &ops[i].step;
		uint64_t cap = (s->burst > s->count ? s->burst : s->count) + 1;
		NUM("%d", (int)s->strategy);
		NUM("%llu", (unsigned long long)s->count);
		NUM("%llu", (unsigned long long)s->period_ms);
		NUM("%llu", (unsigned long long)s->burst);
		NUM("%llu", (unsigned long long)(s->cost < cap ? s->cost : cap));
		NUM("%d", ops[i].probe ? 1 : 0);
	}
#undef ARG
#undef NUM

	rep = call(r, argc, argv, lens, msg, sizeof(msg), &why);
	if (rep == NULL) {
		atomic_fetch_add(&r->errors, 1);
		if (why != FAIL_CALL) {
			note_down(r, msg, probe, clock_mono_ms());
			rc = failed(r, ops, n, mode, now_ms, msg, err);
		} else {
			set_err(err, "%s", msg);
		}
		goto out;
	}
	atomic_fetch_add(&r->calls, 1);
	int64_t t_redis;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 5 * n + 1 ||
	    reply_i64(rep->element[5 * n], &t_redis)) {
		set_err(err, "%s: the script answered %zu values for %zu ops",
			r->where, rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0, n);
		freeReplyObject(rep);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct rl_verdict *v = &ops[i].v;
		redisReply **e = rep->element + 5 * i;
		uint64_t allowed, never;
		if (reply_u64(e[0], &allowed) || reply_u64(e[1], &never) ||
		    reply_u64(e[2], &v->remaining) ||
		    reply_i64(e[3], &v->reset_ms) ||
		    reply_i64(e[4], &v->retry_ms)) {
			set_err(err, "%s: the script answered a value that is not a number",
				r->where);
			freeReplyObject(rep);
			goto out;
		}
		v->allowed = allowed != 0;
		v->never = never != 0;
		/* reset_ms is on Redis's clock; the caller's answer (headers,
		 * X-RateLimit-Reset as seconds from its now) is on this host's:
		 * moved by the difference, so that a gateway whose clock is off
		 * still says the right number of seconds */
		if (v->reset_ms < INT64_MAX / 2 && t_redis > 0)
			v->reset_ms += now_ms - t_redis;
	}
	freeReplyObject(rep);
	note_up(r, probe, clock_mono_ms());
	/* The first denial to learn reads the epoch first (once in the
	 * store's life): an entry learnt under an unknown epoch would survive
	 * a reset or an empty restart that came before the first check. */
	if (r->cache && cache_worthy(ops, n) &&
	    (epoch_known(r) || epoch_read(r) >= 0))
		cache_learn(r->cache, ops, n, t0);
	rc = 0;
out:
	if (argv != argv_s) {
		free(argv);
		free(lens);
		free(nums);
	}
	return rc;
}

/* acquire and release: one short script call, [result, held].  Returns
 * -1 with msg and *why when the key is too long (FAIL_CALL), when Redis is
 * down and this is not the moment to try it (FAIL_DOWN, counted as
 * refused), or when the call fails. */
static int lease_call(struct redis_store *r, const char *key, size_t key_len,
		      const char *const *args, size_t nargs, uint64_t *res,
		      uint64_t *held, char *msg, size_t cap, enum fail *why)
{
	const char *argv[12];
	size_t lens[12];
	int argc = 0, probe;
	redisReply *rep;

	if (key_len > RL_STORE_KEY_MAX) {
		snprintf(msg, cap, "store key longer than RL_STORE_KEY_MAX");
		*why = FAIL_CALL;
		return -1;
	}
	if (!gate(r, clock_mono_ms(), &probe)) {
		atomic_fetch_add(&r->refused, 1);
		down_message(r, clock_mono_ms(), msg, cap);
		*why = FAIL_DOWN;
		return -1;
	}
	argv[argc] = "EVALSHA"; lens[argc++] = 7;
	argv[argc] = ""; lens[argc++] = 0;
	argv[argc] = "1"; lens[argc++] = 1;
	argv[argc] = key; lens[argc++] = key_len;
	for (size_t i = 0; i < nargs; i++) {
		argv[argc] = args[i];
		lens[argc++] = strlen(args[i]);
	}
	rep = call(r, argc, argv, lens, msg, cap, why);
	if (rep == NULL) {
		atomic_fetch_add(&r->errors, 1);
		if (*why != FAIL_CALL)
			note_down(r, msg, probe, clock_mono_ms());
		return -1;
	}
	atomic_fetch_add(&r->calls, 1);
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    reply_u64(rep->element[0], res) || reply_u64(rep->element[1], held)) {
		snprintf(msg, cap, "%s: the script answered something unexpected",
			 r->where);
		*why = FAIL_CALL;
		freeReplyObject(rep);
		return -1;
	}
	freeReplyObject(rep);
	note_up(r, probe, clock_mono_ms());
	return 0;
}

static int redis_acquire(void *impl, const char *key, size_t key_len,
			 uint64_t max, int64_t lease_ms, int64_t now_ms,
			 uint64_t *lease_id, uint64_t *held,
			 struct rl_diag *err)
{
	struct redis_store *r = impl;
	char now_s[NUM_MAX], max_s[NUM_MAX], lease_s[NUM_MAX], id_s[NUM_MAX];
	char msg[RL_MSG_MAX];
	uint64_t got = 0, h = 0;
	uint64_t id = r->lease_base + atomic_fetch_add(&r->lease_next, 1);
	enum fail why;

	snprintf(now_s, sizeof(now_s), "%lld", (long long)now_arg(r, now_ms));
	snprintf(max_s, sizeof(max_s), "%llu", (unsigned long long)max);
	snprintf(lease_s, sizeof(lease_s), "%lld", (long long)lease_ms);
	snprintf(id_s, sizeof(id_s), "%llu", (unsigned long long)id);
	const char *args[] = { "acquire", now_s, max_s, lease_s, id_s };
	if (lease_call(r, key, key_len, args, 5, &got, &h, msg, sizeof(msg),
		       &why) == 0) {
		if (held)
			*held = h;
		if (got && lease_id)
			*lease_id = id;
		return got ? 1 : 0;
	}
	if (why == FAIL_CALL) {
		set_err(err, "%s", msg);
		return -1;
	}
	if (r->has_fb) {
		atomic_fetch_add(&r->fallback, 1);
		return r->fb.ops->acquire(r->fb.impl, key, key_len, max, lease_ms,
					  now_ms, lease_id, held, err);
	}
	set_err(err, "%s", msg);
	return -1;
}

/* A lease taken on the other store (Redis or the fallback) is not found
 * and simply expires there. */
static int redis_release(void *impl, const char *key, size_t key_len,
			 uint64_t lease_id, int64_t now_ms, struct rl_diag *err)
{
	struct redis_store *r = impl;
	char now_s[NUM_MAX], id_s[NUM_MAX], msg[RL_MSG_MAX];
	uint64_t gone, h;
	enum fail why;

	snprintf(now_s, sizeof(now_s), "%lld", (long long)now_arg(r, now_ms));
	snprintf(id_s, sizeof(id_s), "%llu", (unsigned long long)lease_id);
	const char *args[] = { "release", now_s, id_s };
	if (lease_call(r, key, key_len, args, 3, &gone, &h, msg, sizeof(msg),
		       &why) == 0)
		return 0;
	if (why == FAIL_CALL) {
		set_err(err, "%s", msg);
		return -1;
	}
	if (r->has_fb) {
		atomic_fetch_add(&r->fallback, 1);
		return r->fb.ops->release(r->fb.impl, key, key_len, lease_id,
					  now_ms, err);
	}
	set_err(err, "%s", msg);
	return -1;
}

static void redis_destroy(void *impl)
{
	struct redis_store *r = impl;

	if (r == NULL)
		return;
	pthread_mutex_lock(&r->pool_mu);
	for (size_t i = 0; i < r->nidle; i++)
		conn_free(r->idle[i]);
	r->nidle = 0;
	pthread_mutex_unlock(&r->pool_mu);
	if (r->has_fb)
		r->fb.ops->destroy(r->fb.impl);
	resolver_free(r->rv);
	cache_free(r->cache);
	log_free(r->own_log);
	pthread_mutex_destroy(&r->pool_mu);
	pthread_mutex_destroy(&r->err_mu);
	pthread_mutex_destroy(&r->epoch_mu);
	free(r->host);
	free(r->path);
	free(r->password);
	free(r->user);
	free(r);
}

static const struct rl_store_ops redis_ops = {
	.name = "redis",
	.apply = redis_apply,
	.acquire = redis_acquire,
	.release = redis_release,
	.destroy = redis_destroy,
};

/* ------------------------------------------------------------------ */
/* Opening                                                             */

void store_redis_config(const struct rl_ruleset *rs, struct redis_config *c)
{
	const struct rl_settings *s = rl_ruleset_settings(rs);
	const struct rl_storage *g = &s->storage;

	memset(c, 0, sizeof(*c));
	c->host = g->path ? NULL : g->host;
	c->port = g->port;
	c->path = g->path;
	c->db = g->db;
	c->password = g->password;
	c->user = g->user;
	c->connect_timeout_ms = g->connect_timeout_ms;
	c->timeout_ms = g->timeout_ms;
	c->failure = s->store_failure;
	/* the fallback's slots sized for the rules as a shm store's are (the
	 * storage line's shm options are not on a redis line); its own file,
	 * the default size, names kept */
	store_shm_config(rs, &c->fallback);
	c->fallback.path = g->fallback_path ? g->fallback_path : SHM_DEFAULT_PATH;
	c->fallback.size = SHM_DEFAULT_SIZE;
	c->fallback.names = 1;
	c->key_prefix = s->key_prefix;
}

int store_redis_open(const struct rl_ruleset *rs, struct log *log,
		     struct rl_store *st, char *err, size_t errcap)
{
	struct redis_config c;

	store_redis_config(rs, &c);
	c.log = log;    /* from the start: a Redis down at start is said there */
	return redis_store_open(&c, st, err, errcap);
}

static char *dup_or_null(const char *s, int *oom)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*oom = 1;
	return d;
}

int redis_store_open(const struct redis_config *c, struct rl_store *st,
		     char *err, size_t errcap)
{
	struct redis_store *r = calloc(1, sizeof(*r));
	char msg[RL_MSG_MAX];
	int oom = 0;
	enum fail why;
	struct conn *cn;

	if (r == NULL) {
		snprintf(err, errcap, "out of memory");
		return -1;
	}
	pthread_mutex_init(&r->pool_mu, NULL);
	pthread_mutex_init(&r->err_mu, NULL);
	pthread_mutex_init(&r->epoch_mu, NULL);
	snprintf(r->epoch_key, sizeof(r->epoch_key), "%.64s.epoch",
		 c->key_prefix ? c->key_prefix : "rg");
	r->pid = getpid();
	r->c = *c;
	r->c.key_prefix = NULL;         /* the rules' memory: used above only */
	r->host = dup_or_null(c->host, &oom);
	r->path = dup_or_null(c->path, &oom);
	r->password = dup_or_null(c->password, &oom);
	r->user = dup_or_null(c->user, &oom);
	r->c.host = r->host;
	r->c.path = r->path;
	r->c.password = r->password;
	r->c.user = r->user;
	r->c.fallback.path = NULL;
	if (r->c.connect_timeout_ms == 0)
		r->c.connect_timeout_ms = 200;
	if (r->c.timeout_ms == 0)
		r->c.timeout_ms = 100;
	if (r->c.backoff_min_ms == 0)
		r->c.backoff_min_ms = REDIS_BACKOFF_MIN_MS;
	if (r->c.backoff_max_ms < r->c.backoff_min_ms)
		r->c.backoff_max_ms = r->c.backoff_min_ms > REDIS_BACKOFF_MAX_MS ?
				      r->c.backoff_min_ms : REDIS_BACKOFF_MAX_MS;
	atomic_store(&r->backoff, r->c.backoff_min_ms);
	atomic_store(&r->failure, (int)c->failure);
	if (oom || (r->host == NULL && r->path == NULL)) {
		snprintf(err, errcap, oom ? "out of memory" :
			 "redis storage without a host or a socket path");
		goto fail;
	}
	if (r->path == NULL) {
		unsigned char b[sizeof(struct in6_addr)];
		if (inet_pton(AF_INET, r->host, b) != 1 &&
		    inet_pton(AF_INET6, r->host, b) != 1 &&
		    (r->rv = resolver_new(r->host, r->c.port)) == NULL) {
			snprintf(err, errcap, "out of memory");
			goto fail;
		}
	}
	if (r->path)
		snprintf(r->where, sizeof(r->where), "redis unix:%s", r->path);
	else if (strchr(r->host, ':'))
		snprintf(r->where, sizeof(r->where), "redis [%s]:%u", r->host,
			 r->c.port);
	else
		snprintf(r->where, sizeof(r->where), "redis %s:%u", r->host,
			 r->c.port);
	r->own_log = log_new(NULL, err, errcap);
	if (c->log != NULL)
		atomic_store(&r->log, c->log);
	if (getrandom(&r->lease_base, sizeof(r->lease_base), 0) !=
	    (ssize_t)sizeof(r->lease_base))
		r->lease_base = (uint64_t)clock_mono_ms() * 0x9e3779b97f4a7c15ULL;
	r->lease_base &= ~(((uint64_t)1 << 32) - 1);   /* room to count */
	if (!r->c.cache_off) {
		r->cache = cache_new(c->cache_entries ? c->cache_entries :
				     REDIS_CACHE_ENTRIES);
		if (r->cache == NULL) {
			snprintf(err, errcap, "%s: out of memory for the over-limit cache",
				 r->where);
			goto fail;
		}
	}
	if (c->failure == RL_STORE_FAIL_FALLBACK) {
		struct shm_config f = c->fallback;
		char e[RL_MSG_MAX * 2];
		if (f.path == NULL)
			f.path = SHM_DEFAULT_PATH;
		if (f.size == 0)
			f.size = SHM_DEFAULT_SIZE;
		if (shm_store_open(&f, &r->fb, e, sizeof(e)) != 0) {
			snprintf(err, errcap, "%s: store-failure fallback: %s",
				 r->where, e);
			goto fail;
		}
		r->has_fb = 1;
		snprintf(r->fb_path, sizeof(r->fb_path), "%s", f.path);
	}

	cn = conn_open(r, msg, sizeof(msg), &why);
	if (cn != NULL) {
		pool_put(r, cn);
	} else if (why == FAIL_CONFIG) {
		snprintf(err, errcap, "%s", msg);
		goto fail;
	} else {
		note_down(r, msg, 0, clock_mono_ms());
	}
	st->ops = &redis_ops;
	st->impl = r;
	return 0;
fail:
	redis_destroy(r);
	return -1;
}

struct redis_store *store_redis_of(const struct rl_store *st)
{
	return st && st->ops == &redis_ops ? st->impl : NULL;
}

struct shm *store_redis_fallback(struct redis_store *r)
{
	return r->has_fb ? shm_of(&r->fb) : NULL;
}

void store_redis_set_log(struct redis_store *r, struct log *l)
{
	atomic_store(&r->log, l);
}

void store_redis_set_failure(struct redis_store *r, enum rl_store_failure f)
{
	atomic_store(&r->failure, (int)f);
}

void store_redis_stats(struct redis_store *r, struct redis_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->up = !atomic_load(&r->down);
	out->calls = atomic_load(&r->calls);
	out->errors = atomic_load(&r->errors);
	out->refused = atomic_load(&r->refused);
	out->connects = atomic_load(&r->connects);
	out->noscript = atomic_load(&r->noscript);
	out->down_switches = atomic_load(&r->down_switches);
	out->up_switches = atomic_load(&r->up_switches);
	out->fallback = atomic_load(&r->fallback);
	out->cache_denied = atomic_load(&r->cache_denied);
	out->cache_entries = r->cache ? atomic_load(&r->cache->entries) : 0;
}

const char *store_redis_where(const struct redis_store *r)
{
	return r->where;
}

/* ------------------------------------------------------------------ */
/* rategate inspect                                                    */

/* One command on cn; NULL with err set when Redis fails or answers an
 * error. */
static redisReply *inspect_cmd(struct redis_store *r, struct conn *cn,
			       char *err, size_t errcap, const char *fmt, ...)
{
	va_list ap;
	redisReply *rep;

	va_start(ap, fmt);
	rep = redisvCommand(cn->c, fmt, ap);
	va_end(ap);
	if (rep == NULL) {
		io_message(r, cn->c, "inspect", err, errcap);
		return NULL;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errcap, "%s: %s", r->where, rep->str);
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

void store_redis_set_key_prefix(struct redis_store *r, const char *prefix)
{
	pthread_mutex_lock(&r->epoch_mu);
	snprintf(r->epoch_key, sizeof(r->epoch_key), "%.64s.epoch",
		 prefix ? prefix : "rg");
	r->epoch[0] = '\0';
	pthread_mutex_unlock(&r->epoch_mu);
	if (r->cache)
		cache_clear(r->cache);
}

int store_redis_new_epoch(struct redis_store *r, char *err, size_t errcap)
{
	char token[33];
	enum fail why;
	int fresh;
	struct conn *cn = pool_get(r, &fresh, err, errcap, &why);

	if (cn == NULL)
		return -1;
	epoch_token(token);
	redisReply *rep = inspect_cmd(r, cn, err, errcap, "SET %s %s",
				      r->epoch_key, token);
	if (rep == NULL) {
		conn_free(cn);
		return -1;
	}
	freeReplyObject(rep);
	pool_put(r, cn);
	return 0;
}

/* What k's key holds, in k->state. */
static int describe(struct redis_store *r, struct conn *cn,
		    struct redis_key_info *k, char *err, size_t errcap)
{
	redisReply *rep;

	k->state[0] = '\0';
	if (strcmp(k->type, "string") == 0) {
		if (!(rep = inspect_cmd(r, cn, err, errcap, "GETRANGE %s 0 %d",
					k->key, (int)sizeof(k->state) - 2)))
			return -1;
		if (rep->type == REDIS_REPLY_STRING && rep->len >= 32 &&
		    memcmp(rep->str, "RGMOVE1:", 8) == 0) {
			/* the ring's header: count, hits, head (big-endian
			 * doubles, as the script writes them) */
			uint64_t bits = 0;
			double n;
			for (int i = 0; i < 8; i++)
				bits = bits << 8 | (unsigned char)rep->str[16 + i];
			memcpy(&n, &bits, sizeof(n));
			snprintf(k->state, sizeof(k->state),
				 "moving-window, a ring of %.0f hit%s", n,
				 n == 1 ? "" : "s");
		} else if (rep->type == REDIS_REPLY_STRING) {
			size_t n = rep->len;
			for (size_t i = 0; i < n; i++)
				if ((unsigned char)rep->str[i] < 0x20 ||
				    (unsigned char)rep->str[i] >= 0x7f)
					n = i;
			snprintf(k->state, sizeof(k->state), "%.*s", (int)n,
				 rep->str);
		}
		freeReplyObject(rep);
	} else if (strcmp(k->type, "zset") == 0) {
		if (!(rep = inspect_cmd(r, cn, err, errcap, "ZCARD %s", k->key)))
			return -1;
		snprintf(k->state, sizeof(k->state), "%lld in-flight lease%s",
			 rep->integer, rep->integer == 1 ? "" : "s");
		freeReplyObject(rep);
	}
	return 0;
}

/* One key for store_redis_keys: its type, TTL and state, deleted first
 * with reset, then handed to fn.  Returns fn's answer (non-zero: stop),
 * or -1 with err set when Redis fails. */
static int key_visit(struct redis_store *r, struct conn *cn, const char *key,
		     int reset, int (*fn)(void *ctx, const struct redis_key_info *k),
		     void *ctx, char *err, size_t errcap)
{
	struct redis_key_info k = { 0 };
	redisReply *t, *ttl;
	int rc = -1;

	k.key = key;
	if (!(t = inspect_cmd(r, cn, err, errcap, "TYPE %s", key)))
		return -1;
	k.type = t->type == REDIS_REPLY_STATUS ? t->str : "?";
	if (!(ttl = inspect_cmd(r, cn, err, errcap, "PTTL %s", key)))
		goto out;
	k.ttl_ms = ttl->integer;
	freeReplyObject(ttl);
	if (describe(r, cn, &k, err, errcap) != 0)
		goto out;
	if (reset) {
		redisReply *d = inspect_cmd(r, cn, err, errcap, "DEL %s", key);
		if (d == NULL)
			goto out;
		freeReplyObject(d);
	}
	rc = fn ? (fn(ctx, &k) != 0) : 0;
out:
	freeReplyObject(t);
	return rc;
}

long store_redis_keys(struct redis_store *r, const char *prefix,
		      const char *text, int reset,
		      int (*fn)(void *ctx, const struct redis_key_info *k),
		      void *ctx, char *err, size_t errcap)
{
	char cursor[32] = "0", pattern[96];
	enum fail why;
	int fresh;
	long found = 0;
	struct conn *cn = pool_get(r, &fresh, err, errcap, &why);

	if (cn == NULL)
		return -1;
	/* the prefix is letters, digits, '_', '.' and '-' (rules/parse.c):
	 * nothing in it is a glob character */
	snprintf(pattern, sizeof(pattern), "%s:*", prefix);
	do {
		redisReply *rep = inspect_cmd(r, cn, err, errcap,
					      "SCAN %s MATCH %s COUNT 1000",
					      cursor, pattern);
		if (rep == NULL)
			goto fail;
		if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
		    rep->element[0]->type != REDIS_REPLY_STRING ||
		    rep->element[1]->type != REDIS_REPLY_ARRAY) {
			snprintf(err, errcap, "%s: SCAN answered something else than a cursor and keys",
				 r->where);
			freeReplyObject(rep);
			goto fail;
		}
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		int stop = 0;
		for (size_t i = 0; i < rep->element[1]->elements && !stop; i++) {
			const redisReply *e = rep->element[1]->element[i];
			if (e->type != REDIS_REPLY_STRING ||
			    (text != NULL &&
			     !rl_key_name_match(e->str, e->len, text)))
				continue;
			found++;
			if (fn == NULL && !reset)
				continue;       /* counting only */
			stop = key_visit(r, cn, e->str, reset, fn, ctx, err, errcap);
		}
		freeReplyObject(rep);
		if (stop < 0)
			goto fail;
		if (stop)
			break;
	} while (strcmp(cursor, "0") != 0);
	pool_put(r, cn);
	return found;
fail:
	conn_free(cn);
	return -1;
}
