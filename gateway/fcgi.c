/*
 * fcgi.c - the FastCGI server: the listening socket (own or inherited),
 * worker threads around FCGX_Accept_r / FCGX_Finish_r, one decision per
 * request, answered in the authorizer role or, in the responder role, by
 * passing allowed requests on to a CGI program (cgi.c) or a FastCGI
 * application (upstream.c); the statistics endpoint; SIGHUP reloads and
 * a clean stop on SIGTERM.
 *
 * Reloading: the rules and everything derived from them (answer options,
 * per-rule backends and counters) form a generation.  Each request holds a
 * reference to the generation it started with; SIGHUP loads the file again
 * in the main thread and, only when it loads without an error, swaps the
 * current generation; the last request of the old one frees it.  The store
 * is never reopened, so counters survive.
 *
 * Each worker copies the request's params into its own buffer before
 * deciding, so nothing points into libfcgi's memory past FCGX_Finish_r.  An
 * authorizer never reads the request body: lighttpd sends no FCGI_STDIN at
 * all for a POST and Apache never does, so a read would block.
 *
 * Slow or stalled web servers (client-timeout, default 60 s, like nginx's
 * client_header_timeout, client_body_timeout and send_timeout: a bound on
 * the time without progress, not on the whole transfer).  libfcgi's
 * FCGX_Accept_r accepts a connection and reads BEGIN_REQUEST and the params
 * inside itself with blocking reads, so a web server that stops in the
 * middle would hold the worker for good; libfcgi's streams block the same
 * way on the body and on the answer.  So:
 *
 * - The workers accept connections themselves (accept_conn: TCP_NODELAY
 *   and FCGI_WEB_SERVER_ADDRS as libfcgi's OS_Accept has them) and hand
 *   each to FCGX_Accept_r through req.ipcFd, which it takes as an open
 *   connection.  The requests' listen_sock is -1: libfcgi never accepts
 *   by itself, and a connection it gives up on (a protocol error) comes
 *   back as FCGX_Accept_r < 0.
 * - Every connection gets SO_RCVTIMEO and SO_SNDTIMEO of client-timeout,
 *   so one read or write without progress for that long fails with
 *   EAGAIN.  libfcgi makes that a stream error (FCGX_GetError), never a
 *   retry: the body read (client_read) or the answer's write
 *   (client_write, finish_request) fails, and w->stalled says it was the
 *   timeout, not a web server that went away.
 * - Before FCGX_Accept_r, head_ready peeks (MSG_PEEK) at what the web
 *   server sent until BEGIN_REQUEST and the whole params stream are there
 *   (or FCGI_HEAD_PEEK bytes, for a larger head SO_RCVTIMEO is the bound),
 *   so that a connection that stalls before its request is complete is
 *   closed and logged once here, before libfcgi reads (it would take a
 *   read that fails between two params for their end, and close with a
 *   2 s lingering wait of its own).
 * - A responder request's body of known length up to FCGI_BODY_PREFETCH
 *   is read whole before the application is called (prefetch_body): a
 *   body that stalls there never reaches the application.  A larger or
 *   chunked body streams; a stall aborts the application's request
 *   (upstream.c resets the connection, cgi.c kills the script).  Either
 *   way the web server gets 408 when nothing was answered yet, the log
 *   says client-timeout with the request's client and path, and the
 *   statistics count it.  upstream-timeout no longer runs while the web
 *   server is being waited for (upstream.c, cgi.c).
 *
 * Not chosen: SO_RCVTIMEO of client-timeout on the listening socket
 * (Linux copies it to accepted TCP sockets but not to unix ones); a
 * watchdog that shuts down the fd a worker's FCGX_Accept_r is reading (it
 * races libfcgi's own close of that fd, whose number may be reused).  The
 * listening socket does get an SO_RCVTIMEO, FCGI_ACCEPT_WAKE_MS, only so
 * that a worker waiting in accept() looks up now and then (see "Workers"
 * below); every connection's own timeouts are set before it is read.
 *
 * Stopping: the main thread waits for signals with sigwait (they are
 * blocked in every thread).  On SIGTERM it raises libfcgi's shutdown flag
 * and shuts the listening socket down, which makes every accept() -- one in
 * progress or a later one -- fail, so each worker finishes the request it
 * holds and leaves its loop.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <limits.h>
#include <malloc.h>
#include <fastcgi.h>
#include <fcgiapp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cgi.h"
#include "fcgi.h"
#include "target.h"
#include "fileio.h"
#include "log.h"
#include "respond.h"
#include "proxy.h"
#include "stats.h"
#include "store.h"
#include "store_redis.h"
#include "store_shm.h"
#include "upstream.h"

/* ------------------------------------------------------------------ */
/* The process-local store is not thread-safe: a mutex around each call. */

struct locked_store {
	pthread_mutex_t mu;
	struct rl_store inner;
};

static int
ls_apply(void *impl, struct rl_store_op *ops, size_t n, enum rl_mode mode,
	 int64_t now_ms, struct rl_diag *err)
{
	struct locked_store *ls = impl;

	pthread_mutex_lock(&ls->mu);
	int r = ls->inner.ops->apply(ls->inner.impl, ops, n, mode, now_ms, err);
	pthread_mutex_unlock(&ls->mu);
	return r;
}

static int
ls_acquire(void *impl, const char *key, size_t key_len, uint64_t max,
	   int64_t lease_ms, int64_t now_ms, uint64_t *lease_id,
	   uint64_t *held, struct rl_diag *err)
{
	struct locked_store *ls = impl;

	pthread_mutex_lock(&ls->mu);
	int r = ls->inner.ops->acquire(ls->inner.impl, key, key_len, max,
				       lease_ms, now_ms, lease_id, held, err);
	pthread_mutex_unlock(&ls->mu);
	return r;
}

static int
ls_release(void *impl, const char *key, size_t key_len, uint64_t lease_id,
	   int64_t now_ms, struct rl_diag *err)
{
	struct locked_store *ls = impl;

	pthread_mutex_lock(&ls->mu);
	int r = ls->inner.ops->release(ls->inner.impl, key, key_len, lease_id,
				       now_ms, err);
	pthread_mutex_unlock(&ls->mu);
	return r;
}

static void
ls_destroy(void *impl)
{
	struct locked_store *ls = impl;

	if (ls == NULL)
		return;
	ls->inner.ops->destroy(ls->inner.impl);
	pthread_mutex_destroy(&ls->mu);
	free(ls);
}

static const struct rl_store_ops locked_ops = {
	"memory", ls_apply, ls_acquire, ls_release, ls_destroy
};

static const char *
storage_kind_name(enum rl_storage_kind k)
{
	switch (k) {
	case RL_STORAGE_SHM:
		return "shm";
	case RL_STORAGE_MEMORY:
		return "memory";
	case RL_STORAGE_REDIS:
		break;
	}
	return "redis";
}

const char *
fcgi_param(const struct rl_param *params, size_t n, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (params[i].name_len == len &&
		    memcmp(params[i].name, name, len) == 0)
			return params[i].value;
	return NULL;
}

/* Decimal digits into *v.  Returns 0, or -1 for anything else. */
static int
parse_length(const char *s, uint64_t *v)
{
	*v = 0;
	for (const char *p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || *v > (UINT64_MAX - 9) / 10)
			return -1;
		*v = *v * 10 + (uint64_t)(*p - '0');
	}
	return 0;
}

/* The body's length from the params into *bytes: CONTENT_LENGTH; or,
 * in the authorizer role, which gets none (the FastCGI spec says so),
 * the client's Content-Length header (HTTP_CONTENT_LENGTH), whose length
 * lighttpd holds the body to, so that max-body and bandwidth= can use
 * it.  A name variant (Content_Length) comes as another param of the
 * same name, in the client's order: the largest counts.  Returns 0, or
 * -1 with *bad the value that is not a number. */
static int
body_length(const struct rl_param *params, size_t np, uint64_t *bytes,
	    const char **bad)
{
	const char *cl = fcgi_param(params, np, "CONTENT_LENGTH");
	const char *role = fcgi_param(params, np, "FCGI_ROLE");

	*bytes = 0;
	*bad = NULL;
	if (cl != NULL && cl[0] != '\0') {
		if (parse_length(cl, bytes) == 0)
			return 0;
		*bad = cl;
		return -1;
	}
	if (role == NULL || strcmp(role, "AUTHORIZER") != 0)
		return 0;       /* a responder's CONTENT_LENGTH is the body's */
	for (size_t i = 0; i < np; i++) {
		uint64_t v;
		if (params[i].name_len != 19 ||
		    memcmp(params[i].name, "HTTP_CONTENT_LENGTH", 19) != 0 ||
		    params[i].value[0] == '\0')
			continue;
		if (parse_length(params[i].value, &v) != 0) {
			*bad = params[i].value;
			return -1;
		}
		if (v > *bytes)
			*bytes = v;
	}
	return 0;
}

const char *
fcgi_bad_length(const struct rl_param *params, size_t np)
{
	uint64_t v;
	const char *bad;

	body_length(params, np, &v, &bad);
	return bad;
}

int
fcgi_request(const struct rl_param *params, size_t np, char *buf, size_t cap,
	     struct rl_request *rq)
{
	struct target t;

	memset(rq, 0, sizeof(*rq));
	rq->method = fcgi_param(params, np, "REQUEST_METHOD");
	if (target_parse(fcgi_param(params, np, "REQUEST_URI"),
			fcgi_param(params, np, "SCRIPT_NAME"),
			fcgi_param(params, np, "PATH_INFO"),
			fcgi_param(params, np, "QUERY_STRING"), buf, cap, &t) == 0) {
		rq->path = t.path;
		rq->path_len = t.path_len;
		rq->query = t.query;
		rq->query_len = t.query_len;
	}
	rq->remote_addr = fcgi_param(params, np, "REMOTE_ADDR");
	rq->remote_addr_len = rq->remote_addr ? strlen(rq->remote_addr) : 0;
	rq->params = params;
	rq->nparams = np;
	const char *bad;
	if (body_length(params, np, &rq->body_bytes, &bad) != 0)
		return -1;
	/* a chunked body (Apache mod_proxy_fcgi streams one without
	 * CONTENT_LENGTH): its length is learnt as it streams */
	const char *cl = fcgi_param(params, np, "CONTENT_LENGTH");
	const char *te = fcgi_param(params, np, "HTTP_TRANSFER_ENCODING");
	rq->body_unknown = rq->body_bytes == 0 && (cl == NULL || cl[0] == '\0') &&
			   te != NULL && te[0] != '\0';
	return 0;
}

/* ------------------------------------------------------------------ */
/* Rule generations: what SIGHUP swaps                                 */

/* Where allowed requests go in responder mode. */
struct backend {
	char *uri;              /* as written: the registry's key */
	int cgi;                /* 1: a CGI program (path), 0: FastCGI (up) */
	char *path;
	struct upstream *up;
	struct backend *next;
};

/* One loaded rule set with everything derived from it.  Workers hold a
 * reference for the length of a request; the main thread swaps `current`
 * on SIGHUP and the last reference frees the old one. */
struct gen {
	struct rl_ruleset *rs;
	const struct rl_settings *s;
	struct respond_opts ropts;
	struct stats_rules *stats;
	struct backend **backends;      /* [nrules + 1]: per rule, then the global */
	char stats_path[RL_PATH_MAX + 1]; /* normalised; "" when off */
	atomic_uchar *warned;   /* [nrules]: said that a rule needs the responder */
	atomic_int refs;
};

struct server {
	const char *rules_path;
	struct rl_store store;
	enum rl_storage_kind store_kind;
	const char *store_uri;  /* of the store opened at start (owned copy) */
	const char *store_shown; /* the same, password masked (owned copy) */
	/* largest moving-window count and concurrency= the store's slots
	 * hold (a shm file, or Redis's fallback file, keeps them);
	 * UINT64_MAX: no bound (memory, Redis without a fallback) */
	uint64_t store_max_moving, store_max_leases;
	struct log *log;
	struct stats stats;
	struct backend *backends;       /* every backend ever configured */
	pthread_mutex_t gen_mu;
	struct gen *current;
	int listen_fd;
	const char *web_server_addrs;   /* FCGI_WEB_SERVER_ADDRS, or NULL */
	atomic_int_fast64_t client_timeout_ms; /* the current rules' */
	atomic_int stopping;
	atomic_int failed;      /* a worker could not accept any more */
	atomic_int running;     /* workers still in their loop */
	/* The workers (see "Workers" above worker_main): ws has room for
	 * FCGI_WORKERS_MAX; the first nstarted slots have been used, nlive
	 * of them by a worker in its loop now (the others retired), all
	 * under spawn_mu, which also keeps a worker from being started once
	 * stopping is set.  nbase is -j: never retired below it.  idle
	 * counts those waiting for a request, idle_low the fewest since the
	 * last retirement round; retire asks that many idle workers to go. */
	struct worker *ws;
	unsigned nstarted, nlive, nbase;
	pthread_mutex_t spawn_mu;
	atomic_int idle;
	atomic_int idle_low;
	atomic_int retire;
	unsigned retired;       /* since the last round's line (spawn_mu) */
	atomic_uint bg_killed;  /* scripts a worker ending at a stop killed */
	int64_t retire_ms;      /* the round: FCGI_RETIRE_S, or the test's */
	atomic_int_fast64_t spawn_failed_ms;    /* last such line */
	atomic_int spawn_stuck; /* the last worker_busy with none idle could
				   start no worker (at FCGI_WORKERS_MAX, or
				   pthread_create failed) */
	/* Application slots: at most app_max (-j) requests with an
	 * application at once (app_slot_take). */
	pthread_mutex_t app_mu;
	struct slot_waiter *app_head, *app_tail; /* waiting, first come first */
	unsigned app_busy, app_max;
	atomic_int_fast64_t store_err_logged_ms; /* last store-error line */
	atomic_int_fast64_t accept_logged_ms;   /* last accept line (fds) */
	atomic_int_fast64_t proxy_logged_ms;    /* last proxy-header line */
	atomic_int_fast64_t role_logged_ms;     /* last unknown RATEGATE_ROLE */
	atomic_uint_fast64_t proxy_unlogged;    /* such requests since */
};

static struct gen *
gen_acquire(struct server *srv)
{
	pthread_mutex_lock(&srv->gen_mu);
	struct gen *g = srv->current;
	atomic_fetch_add(&g->refs, 1);
	pthread_mutex_unlock(&srv->gen_mu);
	return g;
}

static void
gen_release(struct gen *g)
{
	if (g == NULL || atomic_fetch_sub(&g->refs, 1) != 1)
		return;
	stats_rules_free(g->stats);
	free(g->backends);
	free(g->warned);
	rl_ruleset_free(g->rs);
	free(g);
}

/* The backend for uri, made once and kept until exit (so idle upstream
 * connections survive reloads), with the rules' upstream-keepalive (a
 * reload may change it). */
static struct backend *
backend_for(struct server *srv, const struct rl_upstream *u, unsigned keepalive,
	    char *err, size_t errcap)
{
	for (struct backend *b = srv->backends; b != NULL; b = b->next)
		if (strcmp(b->uri, u->uri) == 0) {
			if (b->up != NULL)
				upstream_set_idle_max(b->up, keepalive);
			return b;
		}
	struct backend *b = log_xrealloc(NULL, sizeof(*b));
	memset(b, 0, sizeof(*b));
	b->uri = strdup(u->uri);
	if (b->uri == NULL)
		log_xrealloc(NULL, SIZE_MAX);   /* out of memory: abort */
	if (u->kind == RL_UPSTREAM_CGI) {
		b->cgi = 1;
		b->path = strdup(u->path);
		if (b->path == NULL)
			log_xrealloc(NULL, SIZE_MAX);
	} else {
		b->up = upstream_new(u->uri, err, errcap);
		if (b->up == NULL) {
			free(b->uri);
			free(b);
			return NULL;
		}
		upstream_set_log(b->up, srv->log);
		upstream_set_idle_max(b->up, keepalive);
	}
	b->next = srv->backends;
	srv->backends = b;
	return b;
}

/* After a reload: a FastCGI backend the rules g no longer name keeps no
 * idle connection (a request of the old rules still in flight closes its
 * own when it ends).  Kept, each upstream a reload left behind held up to
 * upstream-keepalive connections open for good, and the workers of the
 * application at its end (found by a soak test); a later reload that names
 * it again gives it its keepalive back (backend_for). */
static void
backends_unused_idle(struct server *srv, const struct gen *g)
{
	size_t n = rl_ruleset_nrules(g->rs);

	for (struct backend *b = srv->backends; b != NULL; b = b->next) {
		if (b->up == NULL)
			continue;
		size_t i = 0;
		while (i <= n && g->backends[i] != b)
			i++;
		if (i > n)
			upstream_set_idle_max(b->up, 0);
	}
}

static void
backends_free(struct server *srv)
{
	struct backend *b = srv->backends;

	while (b != NULL) {
		struct backend *next = b->next;
		upstream_free(b->up);
		free(b->path);
		free(b->uri);
		free(b);
		b = next;
	}
	srv->backends = NULL;
}

/* Wrap rs into a generation.  Returns NULL with err set when a backend
 * cannot be made or the rules need more than the open store holds. */
static struct gen *
gen_new(struct server *srv, struct rl_ruleset *rs, const struct stats_rules *old,
	char *err, size_t errcap)
{
	struct gen *g = log_xrealloc(NULL, sizeof(*g));
	size_t n = rl_ruleset_nrules(rs);

	memset(g, 0, sizeof(*g));
	g->rs = rs;
	g->s = rl_ruleset_settings(rs);
	respond_opts_from_settings(&g->ropts, g->s);
	g->backends = log_xrealloc(NULL, (n + 1) * sizeof(*g->backends));
	for (size_t i = 0; i <= n; i++) {
		const struct rl_upstream *u = i < n ? rl_ruleset_rule(rs, i)->upstream : NULL;
		if (u == NULL)
			u = g->s->upstream;
		g->backends[i] = NULL;
		if (u != NULL && (g->backends[i] = backend_for(srv, u, g->s->upstream_keepalive,
							    err, errcap)) == NULL)
			goto fail;
	}
	g->stats_path[0] = '\0';
	if (g->s->stats != NULL) {
		struct rl_diag d;
		size_t len;
		if (rl_path_normalize(g->s->stats, strlen(g->s->stats),
				      g->s->case_insensitive, g->stats_path, &len, &d) != 0) {
			snprintf(err, errcap, "stats %s: %s", g->s->stats, d.msg);
			goto fail;
		}
	}
	if (rl_ruleset_max_moving(rs) > srv->store_max_moving) {
		snprintf(err, errcap,
			 "%s needs moving-window slots for %llu hits; the store was opened for %llu, and a shm store file keeps its slot size: stop every gateway, delete the file (its counters are lost) and start them again (rategate -t says what a start would do)",
			 rl_ruleset_max_moving_by(rs),
			 (unsigned long long)rl_ruleset_max_moving(rs),
			 (unsigned long long)srv->store_max_moving);
		goto fail;
	}
	if (rl_ruleset_max_inflight(rs) > srv->store_max_leases) {
		snprintf(err, errcap,
			 "%s needs in-flight slots for concurrency up to %llu; the store was opened for %llu, and a shm store file keeps its slot size: stop every gateway, delete the file (its counters are lost) and start them again (rategate -t says what a start would do; concurrency-max=N on the storage line reserves room for later rules)",
			 rl_ruleset_max_inflight_by(rs),
			 (unsigned long long)rl_ruleset_max_inflight(rs),
			 (unsigned long long)srv->store_max_leases);
		goto fail;
	}
	g->stats = stats_rules_new(rs, old);
	g->warned = log_xrealloc(NULL, (n + 1) * sizeof(*g->warned));
	for (size_t i = 0; i <= n; i++)
		atomic_init(&g->warned[i], 0);
	atomic_init(&g->refs, 1);
	return g;
fail:
	free(g->backends);
	free(g);
	return NULL;
}

/* Load the rule file, logging every diagnostic.  NULL on errors. */
static struct rl_ruleset *
load_logged(struct server *srv, const char *event)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_load(srv->rules_path, &fileio, &rep);

	for (size_t i = 0; i < rep.nerrors; i++)
		log_printf(srv->log, LOG_LEVEL_ERROR, event, "%s", rep.errors[i]);
	if (rep.truncated)
		log_printf(srv->log, LOG_LEVEL_ERROR, event,
			   "%s: too many errors, stopped after %d",
			   srv->rules_path, RL_REPORT_MAX_ERRORS);
	for (size_t i = 0; i < rep.nwarnings; i++)
		log_printf(srv->log, LOG_LEVEL_WARN, event, "%s", rep.warnings[i]);
	rl_report_free(&rep);
	return rs;
}

/* A reload whose `storage` differs: said, with what a restart would do
 * when the new file is a shm store that opening would refuse (the same
 * file with another size=: the restart must come with deleting it). */
static void
storage_changed(struct server *srv, const struct rl_ruleset *rs)
{
	const struct rl_settings *s = rl_ruleset_settings(rs);
	char e[512];

	if (s->storage.kind == RL_STORAGE_SHM) {
		struct shm_config c;
		struct shm_plan p;
		uint64_t keys;
		store_shm_config(rs, &c);
		if (shm_probe_file(&c, &p, &keys, e, sizeof(e)) == SHM_PROBE_REFUSED) {
			log_printf(srv->log, LOG_LEVEL_WARN, "reload",
				   "storage changed to %s, but a restart would stop on it: %s; until then the counters stay in %s",
				   s->storage.shown, e, srv->store_shown);
			return;
		}
	}
	log_printf(srv->log, LOG_LEVEL_WARN, "reload",
		   "storage changed to %s: restart rategate to use it; until then the counters stay in %s",
		   s->storage.shown, srv->store_shown);
}

/* A reload that switches Redis's store-failure fallback on or off: the
 * fallback's shm store is opened (or not) with the store, at start, so
 * that too needs a restart (a review found the switch loaded without a
 * word, and the gateway going on as before). */
static void
fallback_changed(struct server *srv, const struct rl_settings *s)
{
	struct redis_store *r = store_redis_of(&srv->store);

	if (r == NULL)
		return;
	int has = store_redis_fallback(r) != NULL;
	int wants = s->store_failure == RL_STORE_FAIL_FALLBACK;
	if (has == wants)
		return;
	if (wants)
		log_printf(srv->log, LOG_LEVEL_WARN, "reload",
			   "store-failure changed to fallback: restart rategate to open its shared-memory store; until then requests are answered as store-failure deny says while Redis is away");
	else
		log_printf(srv->log, LOG_LEVEL_WARN, "reload",
			   "store-failure changed from fallback: restart rategate to close its shared-memory store; until then requests are decided there while Redis is away");
}

/* SIGHUP: load the file again and swap it in whole, or keep the old
 * rules.  The store stays: counters survive; a changed `storage` needs a
 * restart (said in the log), since the new rules would otherwise count
 * in another place than the processes that have not reloaded yet. */
static void
reload(struct server *srv)
{
	char err[512];
	/* the -L file first, so that a rotation's new file gets this
	 * reload's lines (logrotate's postrotate: kill -HUP) */
	if (log_reopen(srv->log, err, sizeof(err)) != 0)
		log_printf(srv->log, LOG_LEVEL_ERROR, "reload",
			   "%s: still writing to the file opened before", err);
	/* the store is never reopened (its counters would be lost), but a
	 * file deleted or replaced under running gateways splits them: said
	 * on every reload until they are restarted */
	struct shm *shm = shm_of(&srv->store);
	if (shm != NULL && shm_file_replaced(shm))
		log_printf(srv->log, LOG_LEVEL_ERROR, "reload",
			   "the store file of %s was deleted or replaced since this process opened it: this process still counts in the old file, apart from any process started since (a client then has a budget in each); stop every rategate process and start them again",
			   srv->store_shown);
	/* An empty file is what an editor or a deploy that truncates, then
	 * writes, leaves for a moment: reloading it would lift every limit.
	 * (To run without limits on purpose, say so: "enabled off".) */
	struct stat sb;
	if (stat(srv->rules_path, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_size == 0) {
		atomic_fetch_add(&srv->stats.reloads_failed, 1);
		log_printf(srv->log, LOG_LEVEL_ERROR, "reload",
			   "%s is empty (still being written?): still running the rules loaded before; write \"enabled off\" to run without limits",
			   srv->rules_path);
		return;
	}
	struct rl_ruleset *rs = load_logged(srv, "reload-error");

	if (rs == NULL) {
		atomic_fetch_add(&srv->stats.reloads_failed, 1);
		log_printf(srv->log, LOG_LEVEL_ERROR, "reload",
			   "%s has errors: still running the rules loaded before",
			   srv->rules_path);
		return;
	}
	const struct rl_settings *s = rl_ruleset_settings(rs);
	if (strcmp(s->storage.uri, srv->store_uri) != 0)
		storage_changed(srv, rs);
	else
		fallback_changed(srv, s);
	pthread_mutex_lock(&srv->gen_mu);
	struct gen *old = srv->current;
	pthread_mutex_unlock(&srv->gen_mu);
	struct gen *g = gen_new(srv, rs, old->stats, err, sizeof(err));
	if (g == NULL) {
		rl_ruleset_free(rs);
		atomic_fetch_add(&srv->stats.reloads_failed, 1);
		log_printf(srv->log, LOG_LEVEL_ERROR, "reload",
			   "%s: %s: still running the rules loaded before",
			   srv->rules_path, err);
		return;
	}
	log_set_json(srv->log, s->log_format == RL_LOG_JSON);
	/* a new key-prefix: the over-limit cache watches the new prefix's
	 * epoch (inspect --reset with these rules writes that one) */
	const char *op = old->s->key_prefix, *np = s->key_prefix;
	if (store_redis_of(&srv->store) != NULL &&
	    strcmp(op ? op : "rg", np ? np : "rg") != 0)
		store_redis_set_key_prefix(store_redis_of(&srv->store), np);
	/* allow and deny apply at once (store_failed reads the current
	 * rules): the store's store-down line says the new one (a review
	 * found "answered 503 (store-failure deny)" above requests let
	 * through after a reload to allow) */
	if (store_redis_of(&srv->store) != NULL)
		store_redis_set_failure(store_redis_of(&srv->store),
					s->store_failure);
	pthread_mutex_lock(&srv->gen_mu);
	srv->current = g;
	pthread_mutex_unlock(&srv->gen_mu);
	backends_unused_idle(srv, g);
	atomic_store(&srv->client_timeout_ms, s->client_timeout_ms);
	/* Totals were copied before the swap; a request counted in between
	 * on the old generation is lost to the statistics (not to the
	 * limits). */
	gen_release(old);
	atomic_fetch_add(&srv->stats.reloads_ok, 1);
	log_printf(srv->log, LOG_LEVEL_INFO, "reload",
		   "%s: %zu rule%s loaded", srv->rules_path, rl_ruleset_nrules(rs),
		   rl_ruleset_nrules(rs) == 1 ? "" : "s");
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

/* How the web server stalled on the request in hand. */
enum stall {
	STALL_NONE = 0,
	STALL_READ,             /* the body stopped arriving */
	STALL_WRITE,            /* the answer stopped being read */
};

/* One worker's reusable memory: copies of the params, the response. */
struct worker {
	struct server *srv;
	pthread_t tid;
	FCGX_Request req;
	char *pbuf;             /* param bytes, NUL-separated */
	size_t pcap;
	struct rl_param *params;
	size_t nparams_cap;
	char target[RL_PATH_MAX + 2];
	char norm[RL_PATH_MAX + 1];
	struct respond_buf out;
	struct respond_buf hdr;
	/* The web server's side of the request in hand. */
	int64_t timeout_ms;     /* client-timeout, as set on the connection */
	enum stall stalled;
	uint64_t body_got;      /* body bytes read from the web server */
	uint64_t body_len;      /* the body's CONTENT_LENGTH; 0: none given */
	int end_due;            /* CONTENT_LENGTH 0 (proxy_spec.no_body): the
				   web server's empty FCGI_STDIN is still to
				   be taken off the connection */
	int end_taken;          /* client_aborted took the web server's end
				   of the body off the connection */
	char *pre;              /* a prefetched body (FCGI_BODY_PREFETCH) */
	size_t pre_len, pre_pos;
	char peek[FCGI_HEAD_PEEK]; /* head_ready's look at the connection */
	size_t peek_len;        /* bytes of it head_ready saw last */
	int trim;               /* give libfcgi's params memory back after */
	enum { W_UNUSED = 0, W_LIVE, W_RETIRED } state; /* under spawn_mu */
};

/* A read or write that failed on SO_RCVTIMEO / SO_SNDTIMEO. */
static int
timed_out(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK;
}

/* "60 s", or "1500 ms" when not whole seconds. */
static const char *
duration_text(int64_t ms, char *buf, size_t cap)
{
	if (ms % 1000 == 0)
		snprintf(buf, cap, "%lld s", (long long)(ms / 1000));
	else
		snprintf(buf, cap, "%lld ms", (long long)ms);
	return buf;
}

/* Copy every "NAME=VALUE" of envp into w->pbuf and index it in
 * w->params.  Returns the number of params, or -1 when they exceed
 * FCGI_PARAMS_MAX bytes. */
static long
copy_params(struct worker *w, char **envp)
{
	size_t total = 0, n = 0;

	for (char **e = envp; *e != NULL; e++) {
		total += strlen(*e) + 1;
		n++;
	}
	if (total > FCGI_PARAMS_MAX)
		return -1;
	if (total > w->pcap) {
		w->pbuf = log_xrealloc(w->pbuf, total);
		w->pcap = total;
	}
	if (n > w->nparams_cap) {
		w->params = log_xrealloc(w->params, n * sizeof(*w->params));
		w->nparams_cap = n;
	}
	size_t pos = 0, k = 0;
	for (char **e = envp; *e != NULL; e++) {
		size_t len = strlen(*e);
		char *s = w->pbuf + pos;
		memcpy(s, *e, len + 1);
		pos += len + 1;
		char *eq = strchr(s, '=');
		if (eq == NULL)
			continue;       /* not a param: skip */
		*eq = '\0';
		w->params[k].name = s;
		w->params[k].name_len = (size_t)(eq - s);
		w->params[k].value = eq + 1;
		w->params[k].value_len = len - (size_t)(eq - s) - 1;
		k++;
	}
	return (long)k;
}

/* After a request whose params outgrew FCGI_PARAMS_KEEP: free the copy
 * of them (copy_params makes it anew) and give the heap back, libfcgi's
 * own copy of the params included, which its FCGX_Finish_r freed into
 * this thread's arena.  Kept, a head of many small params just under
 * FCGI_PARAMS_MAX held some 25 MB per worker for good (the index is 32
 * bytes a param, libfcgi a malloc'd string each): 256 workers that each
 * met one held over 6 GB (found by a soak test). */
static void
params_release(struct worker *w)
{
	if (!w->trim && w->pcap <= FCGI_PARAMS_KEEP &&
	    w->nparams_cap * sizeof(*w->params) <= FCGI_PARAMS_KEEP)
		return;
	free(w->pbuf);
	w->pbuf = NULL;
	w->pcap = 0;
	free(w->params);
	w->params = NULL;
	w->nparams_cap = 0;
	malloc_trim(0);
	w->trim = 0;
}

/* The first value of a copied param, or NULL. */
static const char *
param(const struct worker *w, size_t n, const char *name)
{
	return fcgi_param(w->params, n, name);
}

static void
send_out(struct worker *w)
{
	/* A failed write means the web server went away: nothing to tell. */
	(void)FCGX_PutStr(w->out.data, (int)w->out.len, w->req.out);
}

static int
fill_request(struct worker *w, size_t np, struct rl_request *rq)
{
	return fcgi_request(w->params, np, w->target, sizeof(w->target), rq);
}

static enum stats_reason
reason_of(const struct rl_decision *d, int concurrency)
{
	switch (d->outcome) {
	case RL_DENY:
		return concurrency ? STATS_CONCURRENCY : STATS_RATE;
	case RL_DENY_KEY:
		return STATS_MISSING_KEY;
	case RL_TOO_LARGE:
		return STATS_TOO_LARGE;
	case RL_BAD_REQUEST:
		return STATS_BAD_REQUEST;
	case RL_STORE_ERROR:
	case RL_ALLOW:
		break;
	}
	return STATS_STORE_ERROR;
}

/* A store failure: counted always, logged at most once a second per
 * process (a dead store would otherwise write a line per request).  With
 * `store-failure allow` the request goes on as allowed.  Returns 1 when it
 * should be let through. */
/* SIGBUS: a page of the mapped shm store is gone (the file was truncated
 * under the running gateway).  Say so in the log, then die of it (the
 * handler is reset: the faulting access runs again and kills the process
 * as before, for the web server to see and restart). */
static struct log *sigbus_log;

static void
on_sigbus(int sig)
{
	(void)sig;
	if (sigbus_log != NULL)
		log_fatal(sigbus_log, "crash",
			  "SIGBUS: the shared-memory store file was truncated under the running gateway (leave it alone while gateways run); this process dies");
	/* the default action now (SA_RESETHAND), also for a SIGBUS sent by
	 * kill, which returning would not repeat */
	raise(SIGBUS);
}

/* 1 for the one caller that may write a rate-limited line now: at most
 * once every every_ms per process, by the monotonic clock (a wall clock
 * set back must not silence the line). */
static int
log_due(atomic_int_fast64_t *last_ms, int64_t every_ms)
{
	int64_t now = clock_mono_ms(), last = atomic_load(last_ms);

	if (last != 0 && now >= last && now - last < every_ms)
		return 0;
	return atomic_compare_exchange_strong(last_ms, &last, now);
}

static int
store_failed(struct server *srv, const struct gen *g, struct rl_decision *d)
{
	atomic_fetch_add(&srv->stats.store_errors, 1);
	int allow = g->s->store_failure == RL_STORE_FAIL_ALLOW;
	if (log_due(&srv->store_err_logged_ms, 1000))
		log_printf(srv->log, LOG_LEVEL_ERROR, "store-error",
			   "%s (store-failure %s: requests are %s; this one from %s, rule %s)",
			   d->error, allow ? "allow" : "deny",
			   allow ? "let through" : "answered 503", d->client,
			   d->rule != NULL ? d->rule->pattern.text : "- (the default limits)");
	if (!allow)
		return 0;
	d->outcome = RL_ALLOW;
	d->limit = NULL;
	return 1;
}

/* A store call after the decision that failed (the deduct-when= count
 * after the response, giving back an in-flight slot): logged under the
 * same once-a-second bound as store_failed's lines, since a store that
 * is down fails it for every request (a review found one line per answer
 * of a deduct-when= rule while Redis was away, under store-failure
 * allow). */
static void
store_error_line(struct server *srv, const char *what, const char *msg,
		 const char *after)
{
	if (log_due(&srv->store_err_logged_ms, 1000))
		log_printf(srv->log, LOG_LEVEL_ERROR, "store-error", "%s: %s%s",
			   what, msg, after);
}

/* A request whose proxy header could not be trusted: the client counts as
 * the nearest trusted hop, often the proxy itself, so every client behind
 * it may share one budget.  Counted always; logged at most once a minute
 * per process, with how many such requests came since the last line,
 * since any client can cause it at will (log_due). */
static void
proxy_header_note(struct worker *w, const struct gen *g, size_t np,
		  const struct rl_decision *d)
{
	struct server *srv = w->srv;

	if (d->addr_source != RL_ADDR_INVALID &&
	    d->addr_source != RL_ADDR_VARIANTS)
		return;
	atomic_fetch_add(&srv->stats.proxy_header_untrusted, 1);
	atomic_fetch_add(&srv->proxy_unlogged, 1);
	if (!log_due(&srv->proxy_logged_ms, 60000))
		return;
	unsigned long long n = atomic_exchange(&srv->proxy_unlogged, 0);
	const char *hdr = g->s->proxies.forwarded ? "Forwarded" : "X-Forwarded-For";
	const char *sw = param(w, np, "SERVER_SOFTWARE");
	if (d->addr_source == RL_ADDR_VARIANTS)
		log_printf(srv->log, LOG_LEVEL_WARN, "proxy-header",
			   "%s came as two or more params behind %s, which joins repeated header lines: one is a name variant a client wrote (X_Forwarded_For), so the header is not trusted and the client counts as %s, the nearest trusted hop (%llu request%s with an untrusted proxy header since the last line like this)",
			   hdr, sw != NULL ? sw : "a web server without SERVER_SOFTWARE",
			   d->client, n, n == 1 ? "" : "s");
	else
		log_printf(srv->log, LOG_LEVEL_WARN, "proxy-header",
			   "an entry of %s that a trusted proxy wrote is not an address: the client counts as %s, the nearest valid trusted hop (%llu request%s with an untrusted proxy header since the last line like this)",
			   hdr, d->client, n, n == 1 ? "" : "s");
}

/* SO_RCVTIMEO or SO_SNDTIMEO (which) of ms on fd. */
static void
sock_timeout(int fd, int which, int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, which, &tv, sizeof(tv));
}

/* A request answered without its body being read (a denial, a 413, a
 * 400, no upstream): on a connection the web server keeps, the rest of the
 * request's FCGI_STDIN stream is still on its way, ahead of the next
 * request, and libfcgi drops what of it its buffer holds when the request
 * ends.  The next request was then read from the middle of that stream:
 * logged as a bad request ("first record: version 0, type 0 ..." or
 * "type 5"), counted in bad_request, and the connection closed (found by
 * a review).  A body of known length up to FCGI_BODY_PREFETCH bytes (and
 * the empty record of a request without one) is read and dropped here,
 * each read waiting at most FCGI_LINGER_IDLE_MS; a larger or chunked body,
 * or a web server that stops sending it, ends the connection instead
 * (libfcgi's close takes the rest without a reset). */
static void drain_stdin(struct worker *w, uint64_t left);

static void
skip_unread_body(struct worker *w, const struct rl_request *rq, int length_ok)
{
	FCGX_Request *q = &w->req;

	if (!q->keepConnection || q->ipcFd < 0 || FCGX_HasSeenEOF(q->in))
		return;
	if (!length_ok || rq->body_unknown || rq->body_bytes > FCGI_BODY_PREFETCH) {
		q->keepConnection = 0;
		return;
	}
	drain_stdin(w, rq->body_bytes + 1);
}

/* Reads and drops at most left bytes of the request's FCGI_STDIN, up to
 * its end, each read waiting at most FCGI_LINGER_IDLE_MS; the connection
 * is not kept unless the end was seen. */
static void
drain_stdin(struct worker *w, uint64_t left)
{
	FCGX_Request *q = &w->req;
	char sink[4096];

	FCGX_FFlush(q->out);    /* the answer first: it does not wait on this */
	sock_timeout(q->ipcFd, SO_RCVTIMEO, FCGI_LINGER_IDLE_MS);
	while (left > 0 && !FCGX_HasSeenEOF(q->in) && FCGX_GetError(q->in) == 0) {
		int n = FCGX_GetStr(sink, (int)sizeof(sink), q->in);
		if (n <= 0)
			break;
		left = (uint64_t)n >= left ? 0 : left - (uint64_t)n;
	}
	if (!FCGX_HasSeenEOF(q->in) || FCGX_GetError(q->in) != 0)
		q->keepConnection = 0;
	sock_timeout(q->ipcFd, SO_RCVTIMEO, w->timeout_ms);
}

/* The statistics endpoint, when path is its path.  Only REMOTE_ADDR --
 * the peer of the web server, never a forwarded header -- is checked
 * against stats-allow.  Returns 1 when the request was answered. */
static int
maybe_stats(struct worker *w, struct gen *g, size_t np,
	    const struct rl_request *rq, int authorizer, int64_t now)
{
	struct rl_diag dg;
	size_t len;

	if (g->stats_path[0] == '\0' || rq->path == NULL ||
	    rl_path_normalize(rq->path, rq->path_len, g->s->case_insensitive,
			      w->norm, &len, &dg) != 0 ||
	    strcmp(w->norm, g->stats_path) != 0)
		return 0;
	struct rl_addr a;
	int ok = 0;
	if (rq->remote_addr != NULL &&
	    rl_addr_parse_peer(rq->remote_addr, rq->remote_addr_len, &a) == 0)
		ok = rl_cidrs_contain(g->s->stats_allow, g->s->nstats_allow, &a);
	/* Behind trusted proxies REMOTE_ADDR is a proxy's: 127.0.0.1 for
	 * one on this host, which the default stats-allow admits, so every
	 * client through it could read the statistics (found by a review).
	 * The client the proxies vouch for must be allowed too, and a proxy
	 * header that cannot be trusted allows nobody. */
	char who[64] = "", why[160] = ", not in stats-allow";
	if (ok) {
		struct rl_addr c;
		enum rl_addr_source src = rl_request_client(g->rs, rq, &c);
		if (src == RL_ADDR_HEADER || src == RL_ADDR_SHORT) {
			ok = rl_cidrs_contain(g->s->stats_allow,
					      g->s->nstats_allow, &c);
			rl_addr_format(&c, 32, 128, who, sizeof(who));
			snprintf(why, sizeof(why), " through %.64s, not in stats-allow",
				 rq->remote_addr);
		} else if (src == RL_ADDR_INVALID || src == RL_ADDR_VARIANTS) {
			ok = 0;
			snprintf(why, sizeof(why), " with a proxy header that cannot be trusted (the client behind the proxy is not known)");
		}
	}
	const char *accept = param(w, np, "HTTP_ACCEPT");
	if (!ok) {
		log_printf(w->srv->log, LOG_LEVEL_WARN, "stats-refused",
			   "statistics asked for by %.64s%s",
			   who[0] ? who : rq->remote_addr ? rq->remote_addr :
			   "(no REMOTE_ADDR)", why);
		respond_error(&w->out, 403, 0, "forbidden",
			      "Forbidden: statistics are not available to this address",
			      respond_negotiate(accept, accept ? strlen(accept) : 0));
	} else if (authorizer) {
		/* An authorizer cannot send a body with a 200: let the web
		 * server pass the request on to rategate as a responder. */
		respond_buf_reset(&w->out);
		respond_buf_add(&w->out, "Status: 200 OK\r\n\r\n", 18);
	} else {
		struct stats_store st = { storage_kind_name(w->srv->store_kind),
					  -1, -1, -1, -1, -1, -1, -1, -1, -1, -1 };
		struct redis_store *rd = store_redis_of(&w->srv->store);
		if (rd != NULL) {
			struct redis_stats rs;
			store_redis_stats(rd, &rs);
			st.up = rs.up;
			st.down_switches = (int64_t)rs.down_switches;
			st.up_switches = (int64_t)rs.up_switches;
			st.fallback = (int64_t)rs.fallback;
			st.cache_denied = (int64_t)rs.cache_denied;
		}
		if (w->srv->store.ops == &locked_ops) {
			/* storage memory: its keys and evictions */
			struct locked_store *ls = w->srv->store.impl;
			uint64_t lim = 0;
			pthread_mutex_lock(&ls->mu);
			st.keys = (int64_t)memstore_count(&ls->inner);
			st.evictions = (int64_t)memstore_evictions(&ls->inner, &lim);
			pthread_mutex_unlock(&ls->mu);
			st.evictions_limiting = (int64_t)lim;
		}
		struct shm *m = shm_of(&w->srv->store);
		if (m != NULL) {
			struct shm_stats ss;
			shm_stats(m, &ss);
			st.keys = (int64_t)ss.keys;
			st.slots = (int64_t)ss.slots;
			st.evictions = (int64_t)ss.evict_lru;
			st.evictions_limiting = (int64_t)ss.evict_limiting;
			st.full = (int64_t)ss.full;
		}
		char q[64] = "";
		if (rq->query != NULL)
			snprintf(q, sizeof(q), "%.*s", (int)rq->query_len, rq->query);
		/* the FastCGI applications the rules in use name, each once
		 * (their counters are since start: a backend outlives
		 * reloads) */
		size_t nb = rl_ruleset_nrules(g->rs) + 1, nups = 0;
		struct stats_upstream *ups = log_xrealloc(NULL, nb * sizeof(*ups));
		for (size_t i = 0; i < nb; i++) {
			const struct backend *be = g->backends[i];
			size_t k = 0;
			if (be == NULL || be->up == NULL)
				continue;
			while (k < nups && ups[k].name != be->uri)
				k++;
			if (k < nups)
				continue;
			ups[nups].name = be->uri;
			upstream_stats(be->up, &ups[nups].connects,
				       &ups[nups].reuses, &ups[nups].failures);
			nups++;
		}
		stats_render(&w->out, stats_negotiate(q, accept), &w->srv->stats,
			     g->stats, &st, ups, nups, now, (long)getpid());
		free(ups);
	}
	send_out(w);
	/* a body sent with it (any client may POST to the path) is no part
	 * of the next request on a connection the web server keeps */
	skip_unread_body(w, rq, 1);
	return 1;
}

/* A CONTENT_LENGTH that is not a number: no decision can be made (the
 * body's size is part of it), so a 400, a bad-request line naming the
 * client and the path (never the query) and the bad-request count. */
static void
bad_content_length(struct worker *w, size_t np, const struct rl_request *rq,
		   enum respond_format f)
{
	struct server *srv = w->srv;
	const char *cl = fcgi_bad_length(w->params, np);
	const char *addr = param(w, np, "REMOTE_ADDR");

	respond_error(&w->out, 400, 0, "bad_request",
		      "Bad Request: Content-Length is not a number", f);
	send_out(w);
	skip_unread_body(w, rq, 0);
	atomic_fetch_add(&srv->stats.denied[STATS_BAD_REQUEST], 1);
	log_bad_content_length(srv->log, rq, addr, cl);
}

static void
authorize(struct worker *w, struct gen *g, size_t np, int64_t now,
	  int auth_request)
{
	struct server *srv = w->srv;
	struct rl_request rq;
	struct rl_decision d;
	const char *accept = param(w, np, "HTTP_ACCEPT");
	enum respond_format f = respond_negotiate(accept, accept ? strlen(accept) : 0);

	if (fill_request(w, np, &rq) != 0) {
		bad_content_length(w, np, &rq, f);
		return;
	}
	if (maybe_stats(w, g, np, &rq, 1, now))
		return;
	/* nginx runs auth_request again after each internal redirect of one
	 * client request (index, a try_files fallback, error_page), with the
	 * same REQUEST_URI, client and headers.  An allowed answer carries
	 * `Rategate-Decision: allow`; the example configuration keeps it
	 * (auth_request_set, a variable of the client's request that
	 * survives its redirects) and passes it back as RATEGATE_DECIDED.
	 * Such a repeat was counted already: it is looked at, not counted,
	 * and allowed even where the first run took the last hit, so that
	 * its X-RateLimit-* figures are current; it is neither logged nor
	 * counted in the statistics.  Only nginx sets the param (a client's
	 * header arrives as HTTP_*), and only from rategate's own answer. */
	const char *decided = auth_request ? param(w, np, "RATEGATE_DECIDED") : NULL;
	int repeat = decided != NULL && strcmp(decided, "allow") == 0;
	rl_decide(g->rs, &srv->store, &rq, now, repeat ? RL_TEST : RL_HIT, &d);
	if (repeat && d.outcome == RL_DENY) {
		d.outcome = RL_ALLOW;
		d.would_deny = 0;
	}
	proxy_header_note(w, g, np, &d);
	if (d.outcome == RL_STORE_ERROR)
		store_failed(srv, g, &d);
	struct respond_opts ro = g->ropts;
	ro.apache = param(w, np, "FCGI_APACHE_ROLE") != NULL;
	ro.deny_status = auth_request ? 403 : 0;
	ro.auth_request = auth_request;
	/* the log says what the web server got */
	int status = respond_authorizer(&w->out, &ro, &d, now, f);
	send_out(w);
	if (repeat && d.outcome == RL_ALLOW)
		return;
	/* An authorizer sees neither the response nor its end: say once per
	 * rule (and reload) that these options do nothing here. */
	if (d.rule != NULL && (d.rule->deduct || d.rule->concurrency > 0) &&
	    !atomic_exchange(&g->warned[d.rule->index], 1))
		log_responder_only(srv->log, "authorizer-limits", d.rule,
				   "as an authorizer rategate",
				   "checks the rule's limits but never counts them",
				   "does not limit requests in flight");
	stats_count(&srv->stats, g->stats, &d, d.outcome != RL_ALLOW,
		    reason_of(&d, 0));
	struct log_request lr = { rq.method, rq.path, rq.path_len, now };
	/* a store failure was logged by store_failed, at most once a second */
	if (d.outcome != RL_STORE_ERROR)
		log_decision(srv->log, &lr, &d, status);
}

/* The web server's connection while the application works: once the body
 * is read, the only bytes it can send are an FCGI_ABORT_REQUEST (type 2;
 * Apache and nginx send it, or close, when their client disconnects) or
 * nothing but a hang-up; lighttpd closes the connection.  And, for a body
 * of known length, the empty FCGI_STDIN record that ends it: the back ends
 * stop reading at CONTENT_LENGTH bytes, so that record is still to come
 * when the web server sends it after the body (late, or in a write of its
 * own). */
static int
client_watch(void *ctx)
{
	struct worker *w = ctx;

	return w->req.ipcFd;
}

/* The late end of a body of known length (or of CONTENT_LENGTH 0, whose
 * end the application had with the params: w->end_due) is taken off the
 * connection here, exactly its bytes (header and padding), so that the
 * watch goes on and sees a hang-up or an FCGI_ABORT_REQUEST after it;
 * before, it counted as "something else", the watch ended, and a web
 * server that hung up then left the application running to
 * upstream-timeout.  Read with recv, not through libfcgi, whose stream
 * would read on into its buffer and swallow an FCGI_ABORT_REQUEST behind
 * the record; nothing reads this request's input through libfcgi
 * afterwards (FCGX_Finish_r does not drain it), and a kept connection's
 * next request starts at the record that follows. */
static enum proxy_watch
client_aborted(void *ctx)
{
	struct worker *w = ctx;
	unsigned char h[8], pad[255];
	ssize_t n = recv(w->req.ipcFd, h, sizeof(h), MSG_PEEK | MSG_DONTWAIT);

	if (n == 0)
		return PROXY_WATCH_GONE;        /* hung up */
	if (n < 0)
		return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR ?
		       PROXY_WATCH_GONE : PROXY_WATCH_OTHER;
	if (n >= 2 && h[1] == FCGI_ABORT_REQUEST) {
		/* The request ends (FCGX_Finish_r answers FCGI_END_REQUEST).
		 * On a connection the web server keeps, the record must not
		 * be left for the next request to begin with ("bad-request
		 * ... first record: version 1, type 2", counted, and the
		 * connection closed under the web server's next request,
		 * found by a review): it is taken off, when it is this
		 * request's, whole (no content) and after the whole body;
		 * else the connection is not kept. */
		if (w->req.keepConnection &&
		    (FCGX_HasSeenEOF(w->req.in) || w->end_taken) && n == (ssize_t)sizeof(h) &&
		    h[0] == FCGI_VERSION_1 && ((int)h[2] << 8 | h[3]) == w->req.requestId &&
		    h[4] == 0 && h[5] == 0 &&
		    recv(w->req.ipcFd, h, sizeof(h), MSG_WAITALL) == (ssize_t)sizeof(h) &&
		    (h[6] == 0 || recv(w->req.ipcFd, pad, h[6], MSG_WAITALL) == (ssize_t)h[6]))
			return PROXY_WATCH_GONE;
		w->req.keepConnection = 0;
		return PROXY_WATCH_GONE;
	}
	if (n < (ssize_t)sizeof(h) || h[0] != FCGI_VERSION_1 || h[1] != FCGI_STDIN ||
	    ((int)h[2] << 8 | h[3]) != w->req.requestId || h[4] != 0 || h[5] != 0 ||
	    (!w->end_due && (w->body_len == 0 || w->body_got < w->body_len)))
		return PROXY_WATCH_OTHER;
	/* the whole record, its padding included: waits at most
	 * client-timeout (SO_RCVTIMEO) for padding still on its way */
	if (recv(w->req.ipcFd, h, sizeof(h), MSG_WAITALL) != (ssize_t)sizeof(h) ||
	    (h[6] > 0 && recv(w->req.ipcFd, pad, h[6], MSG_WAITALL) != (ssize_t)h[6]))
		return PROXY_WATCH_GONE;        /* hung up or stalled inside it */
	w->end_due = 0;
	w->end_taken = 1;
	return PROXY_WATCH_AGAIN;
}

/* The web server's side of a proxied request: libfcgi's streams, the
 * prefetched body first.  A failure on client-timeout marks w->stalled. */
static long
client_read(void *ctx, char *buf, size_t cap)
{
	struct worker *w = ctx;

	if (w->pre_pos < w->pre_len) {
		size_t n = w->pre_len - w->pre_pos;
		if (n > cap)
			n = cap;
		memcpy(buf, w->pre + w->pre_pos, n);
		w->pre_pos += n;
		return (long)n;
	}
	int n = FCGX_GetStr(buf, cap > INT_MAX ? INT_MAX : (int)cap, w->req.in);
	if (n > 0) {
		w->body_got += (uint64_t)n;
		return n;
	}
	/* 0: the end of FCGI_STDIN, or an error on the connection */
	int e = FCGX_GetError(w->req.in);
	if (timed_out(e))
		w->stalled = STALL_READ;
	return e != 0 ? -1 : 0;
}

static int
client_write(void *ctx, const char *buf, size_t len)
{
	struct worker *w = ctx;

	while (len > 0) {
		int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
		if (FCGX_PutStr(buf, chunk, w->req.out) != chunk) {
			if (timed_out(FCGX_GetError(w->req.out)))
				w->stalled = STALL_WRITE;
			return -1;
		}
		buf += chunk;
		len -= (size_t)chunk;
	}
	/* What the application wrote goes out now, not when libfcgi's 8 KiB
	 * buffer fills or the request ends: server-sent events, progress
	 * output and heartbeats must stream (a review found ticks held back
	 * until upstream-timeout).  The proxy writes each read of the
	 * application's output at once, so this is one record per read. */
	if (FCGX_FFlush(w->req.out) != 0) {
		if (timed_out(FCGX_GetError(w->req.out)))
			w->stalled = STALL_WRITE;
		return -1;
	}
	return 0;
}

/* A body whose length the web server gave, up to FCGI_BODY_PREFETCH bytes
 * and within max_body (a larger one is refused unread), is read whole
 * before the application is called, so that a web server that stalls in
 * it never reaches the application.  client_read hands it out first; a
 * short one (the web server went away) ends as it would have.  Returns 0,
 * or -1 when the web server stalled (w->stalled): no application call. */
static int
prefetch_body(struct worker *w, const struct proxy_spec *spec)
{
	uint64_t cl = spec->content_length;

	if (w->stalled != STALL_NONE)
		return -1;      /* unknown_body waited for it in vain */
	if (cl == 0)
		return 0;       /* unknown_body's first byte stays in w->pre */
	w->pre_len = w->pre_pos = 0;
	if (cl > FCGI_BODY_PREFETCH ||
	    (spec->max_body > 0 && cl > spec->max_body))
		return 0;
	if (w->pre == NULL)
		w->pre = log_xrealloc(NULL, FCGI_BODY_PREFETCH);
	int n = FCGX_GetStr(w->pre, (int)cl, w->req.in);
	if (n > 0) {
		w->pre_len = (size_t)n;
		w->body_got += (uint64_t)n;
	}
	if ((uint64_t)n < cl && timed_out(FCGX_GetError(w->req.in))) {
		w->stalled = STALL_READ;
		return -1;
	}
	return 0;
}

/* A request without a length (no CONTENT_LENGTH, or an empty one) and
 * without Transfer-Encoding may still have a body: HTTP/2 and HTTP/3 have
 * no Transfer-Encoding, and nginx with fastcgi_request_buffering off
 * streams such a client's body with CONTENT_LENGTH "" (a review: POSTs
 * over h2c with no content-length went through a bandwidth= limit already
 * used up, 60 bytes each past 100/minute, while a Content-Length one got
 * 429).  Whether one comes is learnt here, before the decision: the web
 * server's end of an empty body (a GET's, sent with or just after the
 * params) or the body's first byte, which is kept for the application
 * (w->pre) and makes the body one of unknown length, checked on arrival
 * like a chunked one.  A web server that sends neither within
 * client-timeout is a stalled body (w->stalled): 408, the application not
 * called. */
static void
unknown_body(struct worker *w, size_t np, struct rl_request *rq)
{
	const char *cl = param(w, np, "CONTENT_LENGTH");

	if (rq->body_bytes > 0 || rq->body_unknown || (cl != NULL && cl[0] != '\0') ||
	    FCGX_HasSeenEOF(w->req.in))
		return;
	int c = FCGX_GetChar(w->req.in);
	if (c != EOF) {
		if (w->pre == NULL)
			w->pre = log_xrealloc(NULL, FCGI_BODY_PREFETCH);
		w->pre[0] = (char)c;
		w->pre_len = 1;
		w->pre_pos = 0;
		w->body_got = 1;
		rq->body_unknown = 1;
	} else if (timed_out(FCGX_GetError(w->req.in))) {
		w->stalled = STALL_READ;
		rq->body_unknown = 1;   /* none may pass unchecked */
	}
}

/* The web server stalled while the body was read or the answer written:
 * its doing, not the application's.  408 when nothing was answered yet;
 * a client-timeout line with the request's client and path; counted. */
static void
client_stalled(struct worker *w, const struct rl_decision *d,
	       const struct log_request *lr, const struct proxy_spec *spec,
	       struct proxy_result *res, int called)
{
	struct server *srv = w->srv;
	char t[32], msg[300], of[32] = "";

	duration_text(w->timeout_ms, t, sizeof(t));
	if (w->stalled == STALL_READ) {
		if (spec->content_length > 0)
			snprintf(of, sizeof(of), " of %llu",
				 (unsigned long long)spec->content_length);
		snprintf(msg, sizeof(msg),
			 "the web server sent %llu%s bytes of the request body and then nothing for %s; %s",
			 (unsigned long long)w->body_got, of, t,
			 !called ? "the application was not called"
				 : res->head_sent ? "the application's request was aborted, its answer cut short"
						  : "the application's request was aborted");
		if (!res->head_sent) {
			respond_error(&w->out, 408, 0, "request_timeout",
				      "Request Timeout: the request body stopped arriving",
				      spec->error_format);
			send_out(w);
			res->status = 408;
			res->head_sent = 1;
		}
	} else {
		snprintf(msg, sizeof(msg),
			 "the web server read nothing of the answer for %s (%llu body bytes passed on); the application's request was aborted",
			 t, (unsigned long long)res->body_out);
	}
	atomic_fetch_add(&srv->stats.client_timeouts, 1);
	log_request_event(srv->log, LOG_LEVEL_INFO, "client-timeout", lr, d,
			  res->status, msg);
}

#define ENV_MAX 8

/* "RL_CLIENT=..." and friends for the application: the facts an
 * authorizer passes as Variable-RL_*. */
static size_t
make_env(const struct rl_decision *d, int64_t now, char bufs[ENV_MAX][RL_DECISION_KEY_MAX + 32],
	 const char *env[ENV_MAX])
{
	size_t n = 0;

#define ENV(...) do { snprintf(bufs[n], sizeof(bufs[n]), __VA_ARGS__); env[n] = bufs[n]; n++; } while (0)
	if (d->client[0] != '\0')
		ENV("RL_CLIENT=%s", d->client);
	if (d->key[0] != '\0')
		ENV("RL_KEY=%s", d->key);
	if (d->exempt)
		ENV("RL_EXEMPT=1");
	if (d->rule != NULL)
		ENV("RL_RULE=%.200s", d->rule->pattern.text);
	if (d->limit != NULL) {
		ENV("RL_LIMIT=%s", d->limit->text);
		ENV("RL_REMAINING=%llu", (unsigned long long)d->remaining);
		ENV("RL_RESET=%lld", (long long)respond_seconds_until(d->reset_ms, now));
	}
	if (d->would_deny)
		ENV("RL_DRY_RUN_DENY=1");
#undef ENV
	return n;
}

/* A request waiting for an application slot (app_slot_take), on the
 * waiter's own stack. */
struct slot_waiter {
	pthread_cond_t cv;
	int granted;            /* app_slot_give handed it a slot */
	struct slot_waiter *next;
};

/* Take w out of the waiting line (with app_mu). */
static void
slot_unqueue(struct server *srv, struct slot_waiter *w)
{
	struct slot_waiter **pp = &srv->app_head, *prev = NULL;

	while (*pp != NULL && *pp != w) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp == NULL)
		return;
	*pp = w->next;
	if (srv->app_tail == w)
		srv->app_tail = prev;
}

/* Application slots.  Workers are started as they are needed (below),
 * but at most -j requests of a process are with an application at once,
 * as when there were -j workers and no more: a libfcgi program or php-fpm
 * gives a worker to each connection, and one kept open (upstream-keepalive)
 * keeps it, so more connections than it has workers would leave the new
 * ones unaccepted until upstream-timeout (a test with nginx's kept
 * connections found it); CGI scripts stay as many as before.  A request
 * waits for a slot at most its upstream-timeout, then is answered 503 (as
 * HAProxy's "timeout queue" does), and the time it waited is taken off
 * what it may wait for the application.  A stop ends the wait at once:
 * a slot given back then is often a CGI script's the stop killed, and a
 * script started after that would be left running (stop_slot_waiters).
 * Requests wait in line: a slot given back goes to the one that has
 * waited longest, handed over (app_busy unchanged), never to one that
 * came later and found it free first.  With one condition variable for
 * all, a waiter woken for a slot could find it taken by a newcomer and
 * wait again.  Returns the ms waited, -1 after upstream-timeout, -2 when
 * stopping. */
static int64_t
app_slot_take(struct server *srv, int64_t timeout_ms)
{
	int64_t t0;
	struct slot_waiter me = { .granted = 0, .next = NULL };

	pthread_mutex_lock(&srv->app_mu);
	if (srv->app_busy < srv->app_max && srv->app_head == NULL) {
		/* free at once: no wait to take off, nor to mention (a
		 * review found "waited 5 ms" said of a slot that was free,
		 * the time being the lock's under valgrind) */
		srv->app_busy++;
		pthread_mutex_unlock(&srv->app_mu);
		return 0;
	}
	t0 = clock_mono_ms();
	struct timespec dl = clock_mono_deadline(timeout_ms);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&me.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (srv->app_tail != NULL)
		srv->app_tail->next = &me;
	else
		srv->app_head = &me;
	srv->app_tail = &me;
	int64_t ret;
	for (;;) {
		if (atomic_load(&srv->stopping)) {
			/* a slot handed over now goes back: the stop kills
			 * what runs, and would not see what starts later */
			if (me.granted)
				srv->app_busy--;
			else
				slot_unqueue(srv, &me);
			ret = -2;
			break;
		}
		if (me.granted) {
			int64_t waited = clock_mono_ms() - t0;
			ret = waited > 0 ? waited : 1;  /* it did wait: say so */
			break;
		}
		if (pthread_cond_timedwait(&me.cv, &srv->app_mu, &dl) == ETIMEDOUT &&
		    !me.granted) {
			slot_unqueue(srv, &me);
			ret = -1;
			break;
		}
	}
	pthread_mutex_unlock(&srv->app_mu);
	pthread_cond_destroy(&me.cv);
	return ret;
}

static void
app_slot_give(struct server *srv)
{
	pthread_mutex_lock(&srv->app_mu);
	struct slot_waiter *w = srv->app_head;
	if (w != NULL) {
		srv->app_head = w->next;
		if (srv->app_head == NULL)
			srv->app_tail = NULL;
		w->next = NULL;
		w->granted = 1;
		pthread_cond_signal(&w->cv);
	} else {
		srv->app_busy--;
	}
	pthread_mutex_unlock(&srv->app_mu);
}

/* Stopping (set before): every request waiting for a slot is answered
 * 503 at once (app_slot_take). */
static void
stop_slot_waiters(struct server *srv)
{
	pthread_mutex_lock(&srv->app_mu);
	for (struct slot_waiter *w = srv->app_head; w != NULL; w = w->next)
		pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&srv->app_mu);
}

static void
proxy(struct worker *w, struct gen *g, size_t np, int64_t now)
{
	struct server *srv = w->srv;
	struct rl_request rq;
	struct rl_decision d;
	struct rl_lease lease;
	const char *accept = param(w, np, "HTTP_ACCEPT");
	enum respond_format f = respond_negotiate(accept, accept ? strlen(accept) : 0);
	struct log_request lr;
	int status, concurrency = 0;

	lease.held = 0;
	lease.key_len = 0;
	if (fill_request(w, np, &rq) != 0) {
		bad_content_length(w, np, &rq, f);
		return;
	}
	lr = (struct log_request){ rq.method, rq.path, rq.path_len, now };
	if (maybe_stats(w, g, np, &rq, 0, now))
		return;
	unknown_body(w, np, &rq);
	/* The in-flight slot first, then the rates, so that a request the
	 * slot refuses (Retry-After 1) consumes no rate budget: a denied
	 * request consumes nothing.  A slot taken for a request the rates
	 * then refuse is given back at once.  But rates that deny already
	 * answer first (RL_PEEK: exact on a local store, Redis's over-limit
	 * cache at no round trip), so that a client they refuse costs no slot
	 * taken and given back, and its denied hit moves its elastic windows.
	 * (A rule without concurrency= takes no slot; a request identify()
	 * settles, exempt or missing its key, has no lease key and is
	 * decided by rl_decide as before.) */
	struct rl_decision d2;
	enum rl_outcome o = RL_ALLOW;
	int counted = 0;        /* the rates took this request's hit */
	int slot_dry = 0;       /* d2: a dry-run concurrency= would-be denial */
	if (rl_ruleset_max_inflight(g->rs) > 0) {  /* else: no rule takes one */
		if (rl_decide(g->rs, &srv->store, &rq, now, RL_PEEK, &d) == RL_DENY) {
			rl_decide(g->rs, &srv->store, &rq, now, RL_HIT, &d);
			counted = 1;
		}
		/* (allowed after all, the state having moved in between: the
		 * hit is counted, and a slot refused now wastes it) */
		if (!counted || d.outcome == RL_ALLOW)
			o = rl_inflight_begin(g->rs, &srv->store, &rq, now,
					      g->s->lease_ms, &lease, &d2);
	}
	int slot_said = lease.key_len > 0 && !lease.held;
	if (o == RL_STORE_ERROR && slot_said && store_failed(srv, g, &d2))
		o = RL_ALLOW;
	if (slot_said && o != RL_ALLOW) {
		d = d2;
		concurrency = o == RL_DENY;
		/* a client over its rates as well waits for them, not for a
		 * slot: looked at without counting, and then, when they deny,
		 * hit (a denied hit consumes nothing but moves elastic
		 * windows) */
		struct rl_decision d3;
		if (concurrency && !counted &&
		    rl_decide(g->rs, &srv->store, &rq, now, RL_TEST, &d3) == RL_DENY &&
		    rl_decide(g->rs, &srv->store, &rq, now, RL_HIT, &d3) == RL_DENY &&
		    d3.retry_ms > d.retry_ms) {
			d = d3;
			concurrency = 0;
		}
		proxy_header_note(w, g, np, &d);
	} else {
		if (!counted)
			rl_decide(g->rs, &srv->store, &rq, now, RL_HIT, &d);
		proxy_header_note(w, g, np, &d);
		if (d.outcome == RL_STORE_ERROR)
			store_failed(srv, g, &d);
		if (d.outcome != RL_ALLOW && lease.held) {
			struct rl_diag err;
			if (rl_inflight_end(&srv->store, &lease, clock_wall_ms(), &err) != 0)
				store_error_line(srv, "releasing an in-flight slot",
						 err.msg, " (it expires by itself)");
		}
		/* a dry-run concurrency= limit that would have denied: said
		 * in the log and the statistics as a would-be denial */
		if (slot_said && o == RL_ALLOW && d2.would_deny &&
		    d.outcome == RL_ALLOW && !d.would_deny) {
			d.would_deny = 1;       /* counted so */
			/* logged as the slot's, as its denial would be; the
			 * answer's headers stay the rates' */
			slot_dry = 1;
		}
	}
	struct respond_opts ro = g->ropts;
	ro.apache = param(w, np, "FCGI_APACHE_ROLE") != NULL;
	if (d.outcome != RL_ALLOW) {
		status = respond_authorizer(&w->out, &ro, &d, now, f);
		send_out(w);
		skip_unread_body(w, &rq, 1);
		stats_count(&srv->stats, g->stats, &d, 1, reason_of(&d, concurrency));
		/* a store failure was logged by store_failed, at most once a
		 * second */
		if (d.outcome != RL_STORE_ERROR)
			log_decision(srv->log, &lr, &d, status);
		return;
	}
	stats_count(&srv->stats, g->stats, &d, 0, STATS_RATE);
	log_decision(srv->log, &lr, slot_dry ? &d2 : &d, 200);  /* dry-run denials */

	struct backend *b = g->backends[d.upstream_rule != NULL ? d.upstream_rule->index : rl_ruleset_nrules(g->rs)];
	if (b == NULL) {
		/* a configuration error, not the application's: say so (the
		 * request was counted like any other allowed one) */
		respond_error(&w->out, 502, 0, "no_upstream",
			      "Bad Gateway: no application is set up for this path", f);
		send_out(w);
		skip_unread_body(w, &rq, 1);
		atomic_fetch_add(&srv->stats.upstream_errors, 1);
		char pb[LOG_FIELD_MAX + 1];
		log_printf(srv->log, LOG_LEVEL_ERROR, "no-upstream",
			   "no upstream for %s: set \"upstream\" in %s or upstream= on its rule",
			   log_path(rq.path, rq.path_len, pb), srv->rules_path);
		goto end;
	}

	char envbuf[ENV_MAX][RL_DECISION_KEY_MAX + 32];
	const char *env[ENV_MAX];
	respond_buf_reset(&w->hdr);
	respond_ratelimit_headers(&w->hdr, &ro, &d, now);
	struct proxy_spec spec;
	memset(&spec, 0, sizeof(spec));
	spec.timeout_ms = g->s->upstream_timeout_ms;
	spec.max_body = d.max_body;
	spec.content_length = rq.body_bytes;
	const char *cl = param(w, np, "CONTENT_LENGTH");
	/* No body: CONTENT_LENGTH 0 (lighttpd's GET), or no length and the
	 * web server's end of the body already read with nothing before it
	 * (nginx's and Apache's GET, unknown_body) */
	int ended = FCGX_HasSeenEOF(w->req.in) && w->pre_len == 0;
	spec.no_body = rq.body_bytes == 0 && !rq.body_unknown &&
		       ((cl != NULL && cl[0] != '\0') || ended);
	spec.extra_headers = w->hdr.len ? w->hdr.data : NULL;
	spec.extra_len = w->hdr.len;
	spec.nextra_env = make_env(&d, now, envbuf, env);
	spec.extra_env = env;
	spec.error_format = f;
	/* the request as log lines about it name it: the path without its
	 * query (which may hold secrets: it is never logged), who asked,
	 * and where it went */
	char what[LOG_FIELD_MAX + 400], wpb[LOG_FIELD_MAX + 1];
	snprintf(what, sizeof(what), "%s %s from %s -> %s",
		 rq.method ? rq.method : "-", log_path(rq.path, rq.path_len, wpb),
		 d.client[0] ? d.client : "-", b->uri);
	spec.what = what;
	struct proxy_client pc = { .ctx = w, .read = client_read,
				   .write = client_write, .watch = client_watch,
				   .aborted = client_aborted };
	struct proxy_result res;
	w->body_len = spec.content_length;
	w->end_due = spec.no_body && !ended;
	int called = prefetch_body(w, &spec) == 0;
	int64_t waited = called ? app_slot_take(srv, spec.timeout_ms) : 0;
	if (called && waited < 0) {
		respond_error(&w->out, 503, 0, "busy",
			      "Service Unavailable: the application is busy", f);
		send_out(w);
		skip_unread_body(w, &rq, 1);
		atomic_fetch_add(&srv->stats.upstream_errors, 1);
		char t[32];
		if (waited == -2)
			log_printf(srv->log, LOG_LEVEL_ERROR, "upstream-error",
				   "%s: answered 503: rategate is stopping, and all %u application slots of this process (-j) were busy; the application was not called",
				   what, srv->app_max);
		else
			log_printf(srv->log, LOG_LEVEL_ERROR, "upstream-error",
				   "%s: answered 503: all %u application slots of this process (-j) stayed busy for %s (upstream-timeout); the application was not called",
				   what, srv->app_max,
				   duration_text(spec.timeout_ms, t, sizeof(t)));
		goto end;
	}
	if (called) {
		spec.timeout_ms -= waited < spec.timeout_ms ? waited
							    : spec.timeout_ms - 1;
		atomic_fetch_add(&srv->stats.inflight, 1);
		if (b->cgi)
			cgi_run(b->path, w->params, np, &spec, &pc, &res);
		else
			upstream_run(b->up, w->params, np, &spec, &pc, &res);
		atomic_fetch_sub(&srv->stats.inflight, 1);
		app_slot_give(srv);
		/* With CONTENT_LENGTH 0 the application had the body's end
		 * with the params, and nothing read the web server's own: one
		 * that came after libfcgi's read of the head, and that the
		 * watch did not take, is read here, or a kept connection's
		 * next request began with it ("bad-request ... type 5" and
		 * the connection closed, one request in a few hundred through
		 * Apache's enablereuse=on) */
		if (w->end_due && w->stalled == STALL_NONE && !res.client_gone)
			skip_unread_body(w, &rq, 1);
		/* Likewise the rest of any body: the proxy reads
		 * CONTENT_LENGTH bytes and no further, and none at all of what
		 * comes after an application answered without reading its
		 * input (fcgi_stub, Apache's GET without CONTENT_LENGTH); the
		 * watch takes an end that comes while the application works.
		 * One that came later (Apache writes it on its own) began the
		 * kept connection's next request ("bad-request ... type 5,
		 * request id 1, 0 bytes", the connection closed and the next
		 * request failed: about one POST in a hundred through
		 * enablereuse=on, and one GET in a hundred to an application
		 * that answers first; found by a soak test) */
		else if (!w->end_taken && w->stalled == STALL_NONE &&
			 !res.client_gone && w->req.keepConnection &&
			 w->req.ipcFd >= 0 && !FCGX_HasSeenEOF(w->req.in)) {
			if (w->body_len > 0 && w->body_got >= w->body_len)
				drain_stdin(w, 1);
			else
				skip_unread_body(w, &rq, 1);
		}
	} else {
		memset(&res, 0, sizeof(res));
	}
	int64_t later = clock_wall_ms();
	if (w->stalled != STALL_NONE) {
		client_stalled(w, &d, &lr, &spec, &res, called);
	} else if (res.error[0] != '\0') {
		/* a body (chunked, or longer than its Content-Length said)
		 * found over max-body while streaming is the client's doing,
		 * not the application's, whether the 413 could still be sent
		 * or the application's head had gone out already */
		int too_large = res.too_large && !res.client_gone;
		if (!res.client_gone && !too_large)
			atomic_fetch_add(&srv->stats.upstream_errors, 1);
		if (too_large)
			stats_recount_too_large(&srv->stats, g->stats, &d);
		char st[40];
		if (res.status > 0)
			snprintf(st, sizeof(st), "answered %d", res.status);
		else
			snprintf(st, sizeof(st), "no answer sent");
		/* the timeouts it names are what was left of upstream-timeout
		 * after the wait for a slot: say so */
		char ws[120] = "", t[32];
		if (called && waited > 0)
			snprintf(ws, sizeof(ws), "; it waited %lld ms for an application slot (-j) first, which upstream-timeout %s counts",
				 (long long)waited,
				 duration_text(g->s->upstream_timeout_ms, t,
					       sizeof(t)));
		log_printf(srv->log, res.client_gone || too_large ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR,
			   res.client_gone ? "client-gone" : too_large ? "too-large" : "upstream-error",
			   "%s: %s: %s%s", what, st, res.error, ws);
	}
	struct rl_diag err;
	if (rl_after_response(g->rs, &srv->store, &rq, res.status,
			      rq.body_bytes == 0 ? res.body_in : 0, later, &err) != 0) {
		atomic_fetch_add(&srv->stats.store_errors, 1);
		store_error_line(srv, "counting after the response", err.msg, "");
	}
end:
	if (lease.held && rl_inflight_end(&srv->store, &lease, clock_wall_ms(), &err) != 0)
		store_error_line(srv, "releasing an in-flight slot", err.msg,
				 " (it expires by itself)");
}

static void
serve_one(struct worker *w)
{
	struct server *srv = w->srv;
	int64_t now = clock_wall_ms();

	w->stalled = STALL_NONE;
	w->body_got = 0;
	w->body_len = 0;
	w->end_due = 0;
	w->end_taken = 0;
	w->pre_len = w->pre_pos = 0;
	/* libfcgi puts its own FCGI_ROLE first (Apache sends a second one). */
	const char *role = FCGX_GetParam("FCGI_ROLE", w->req.envp);
	long np = copy_params(w, w->req.envp);

	if (np < 0) {
		const char *ra = FCGX_GetParam("REMOTE_ADDR", w->req.envp);
		const char *ru = FCGX_GetParam("REQUEST_URI", w->req.envp);
		/* its path: the query is never logged */
		int rl = ru ? (int)strcspn(ru, "?") : 1;
		log_printf(srv->log, LOG_LEVEL_WARN, "bad-request",
			   "request params exceed %u bytes (REMOTE_ADDR %s, REQUEST_URI %.*s): answered 400",
			   FCGI_PARAMS_MAX, ra ? ra : "-", rl > 200 ? 200 : rl,
			   ru ? ru : "-");
		/* libfcgi read them all into memory first (it cannot be told
		 * to stop): hand that memory back once the request is done */
		w->trim = 1;
		respond_error(&w->out, 400, 0, "bad_request",
			      "Bad Request: request headers too large", RESPOND_TEXT);
		send_out(w);
		atomic_fetch_add(&srv->stats.denied[STATS_BAD_REQUEST], 1);
		return;
	}
	struct gen *g = gen_acquire(srv);
	/* A web server without the authorizer role names the one it wants:
	 * nginx `fastcgi_param RATEGATE_ROLE auth-request;` in the location
	 * its auth_request calls (answers 200 or 403), or "authorizer"
	 * (answers 200 or 429, for servers that pass the 429 on). */
	const char *want = param(w, (size_t)np, "RATEGATE_ROLE");
	if (want != NULL && want[0] != '\0' && strcmp(want, "auth-request") != 0 &&
	    strcmp(want, "authorizer") != 0) {
		/* a misspelt role ("auth_request") would be served in the
		 * request's own role: nginx's auth_request subrequest sent on
		 * to the application, or a 502 for a path without one */
		if (log_due(&srv->role_logged_ms, 60000))
			log_printf(srv->log, LOG_LEVEL_ERROR, "unsupported-role",
				   "RATEGATE_ROLE \"%.64s\": expected auth-request or authorizer; answered 502 (at most one line a minute)",
				   want);
		respond_error(&w->out, 502, 0, "bad_gateway",
			      "Bad Gateway: unknown RATEGATE_ROLE", RESPOND_TEXT);
		send_out(w);
		w->req.keepConnection = 0;      /* a body may follow, unread */
	} else if (want != NULL && strcmp(want, "auth-request") == 0) {
		authorize(w, g, (size_t)np, now, 1);
	} else if ((want != NULL && strcmp(want, "authorizer") == 0) ||
		   (role != NULL && strcmp(role, "AUTHORIZER") == 0)) {
		authorize(w, g, (size_t)np, now, 0);
	} else if (role != NULL && strcmp(role, "RESPONDER") == 0) {
		proxy(w, g, (size_t)np, now);
	} else {
		log_printf(srv->log, LOG_LEVEL_ERROR, "unsupported-role",
			   "FastCGI role %s: rategate serves the AUTHORIZER and RESPONDER roles",
			   role ? role : "(none)");
		respond_error(&w->out, 502, 0, "bad_gateway",
			      "Bad Gateway: unsupported FastCGI role", RESPOND_TEXT);
		send_out(w);
	}
	gen_release(g);
}

/* A connection the web server asked to keep (FCGI_KEEP_CONN: nginx
 * fastcgi_keep_conn on, Apache enablereuse=on) pins this worker, since
 * libfcgi waits on it for the next request.  A server that keeps more
 * connections than there are workers would leave the rest unanswered in
 * the accept queue, and SIGTERM would wait for the server to hang up.  So
 * wait for either: the next request on the kept connection goes on as
 * usual; a new connection that no worker takes (still waiting 10 ms later)
 * while none can be started (spawn_stuck: a worker waiting here is not
 * idle, so one is started for a new connection), or stopping, closes the
 * idle kept one (the server finds it closed when it wants to reuse it and
 * opens a new one; nginx answers a POST sent on it 502).  It is closed
 * here, not by libfcgi, whose close waits up to 2 s for the server to
 * hang up first: Apache does not, for a connection in its pool. */
static void
keep_or_release(struct worker *w)
{
	struct server *srv = w->srv;
	int waiting = 0;

	while (w->req.ipcFd >= 0) {
		struct pollfd p[2] = { { w->req.ipcFd, POLLIN, 0 },
				       { srv->listen_fd, POLLIN, 0 } };
		int r = poll(p, 2, waiting ? 10 : 500);
		if (r < 0 && errno != EINTR)
			return;         /* let libfcgi find out */
		if (p[0].revents != 0)
			return;         /* the next request, or the server hung up */
		if (p[1].revents != 0 && !waiting) {
			waiting = 1;    /* give a free worker a chance first */
			continue;
		}
		/* a worker is started whenever none is left to accept (one
		 * waiting here is not), so the connection waits only for its
		 * start, unless none can be started: a kept connection closed
		 * meanwhile met the web server's next request on it (nginx
		 * then answers a POST 502, see worker_main) */
		if ((r > 0 && p[1].revents != 0 && atomic_load(&srv->spawn_stuck)) ||
		    atomic_load(&srv->stopping)) {
			close(w->req.ipcFd);
			w->req.ipcFd = -1;      /* FCGX_Accept_r accepts anew */
			return;
		}
		waiting = 0;
	}
}

/* ------------------------------------------------------------------ */
/* Connections: accepting them, and the web server's client-timeout     */

/* Close the connection in hand without a word (FCGX_Finish_r then finds
 * none and frees only the request's memory). */
static void
drop_conn(struct worker *w)
{
	if (w->req.ipcFd >= 0)
		close(w->req.ipcFd);
	w->req.ipcFd = -1;
}

/* FCGI_WEB_SERVER_ADDRS as libfcgi's OS_Accept checks it: a
 * comma-separated list of IPv4 addresses a TCP peer over IPv4 must be
 * one of; unset or empty lets any peer in. */
static int
web_server_ok(const char *list, const struct sockaddr_in *sa)
{
	if (list == NULL || list[0] == '\0')
		return 1;
	for (const char *p = list;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char one[64];
		struct in_addr a;
		if (len < sizeof(one)) {
			memcpy(one, p, len);
			one[len] = '\0';
			if (inet_aton(one, &a) != 0 && a.s_addr == sa->sin_addr.s_addr)
				return 1;
		}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

/* accept() errors that concern one connection, not the socket: libfcgi's
 * list, and the network errors Linux passes on from the new connection
 * (accept(2)). */
static int
accept_again(int e)
{
	switch (e) {
	case EINTR: case ECONNABORTED: case EPROTO: case ECONNRESET:
	case ETIMEDOUT: case EHOSTUNREACH: case ENETUNREACH: case ENETDOWN:
	case ENOPROTOOPT: case EHOSTDOWN: case ENONET: case EOPNOTSUPP:
		return 1;
	default:
		return 0;
	}
}

/* accept() errors that say the process or the host is out of a resource
 * for now (descriptors, buffers, memory): waited out, never the end of
 * the process.  Taking EMFILE as fatal stopped the gateway for good once
 * its connections, CGI pipes and upstream connections together reached
 * the descriptor limit (found by a soak test: a stop, the requests in
 * the backlog answered 5xx by the web server). */
static int
accept_later(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

static int worker_retires(struct server *srv);

/* The next connection for this worker.  Returns its fd, or -1 when
 * stopping, or when accepting failed for good (logged; the process
 * stops, as it did when libfcgi's accept failed), or -2 when the worker
 * is to retire (worker_retires). */
static int
accept_conn(struct worker *w)
{
	struct server *srv = w->srv;

	for (;;) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);
		int fd = accept4(srv->listen_fd, (struct sockaddr *)&sa, &len, SOCK_CLOEXEC);
		if (atomic_load(&srv->stopping)) {
			if (fd >= 0)
				close(fd);
			return -1;
		}
		if (fd < 0) {
			int e = errno;
			if (e == EAGAIN || e == EWOULDBLOCK) {
				/* FCGI_ACCEPT_WAKE_MS passed (the listener's
				 * SO_RCVTIMEO): asked to go?  Or an inherited
				 * listener left non-blocking: wait for it */
				if (worker_retires(srv))
					return -2;
				int fl = fcntl(srv->listen_fd, F_GETFL);
				if (fl >= 0 && (fl & O_NONBLOCK)) {
					struct pollfd p = { srv->listen_fd, POLLIN, 0 };
					poll(&p, 1, FCGI_ACCEPT_WAKE_MS);
				}
				continue;
			}
			if (accept_again(e))
				continue;
			if (accept_later(e)) {
				/* the connection stays in the backlog: try again
				 * once requests in hand gave some back */
				if (log_due(&srv->accept_logged_ms, 60000))
					log_printf(srv->log, LOG_LEVEL_ERROR, "accept",
						   "accepting a FastCGI connection failed (%d): %s; new connections wait in the backlog until some are given back (the descriptor limit, ulimit -n, is too low for the workers?)",
						   -e, strerror(e));
				poll(NULL, 0, 100);
				continue;
			}
			log_printf(srv->log, LOG_LEVEL_ERROR, "accept",
				   "accepting FastCGI connections failed (%d): %s",
				   -e, strerror(e));
			atomic_store(&srv->failed, 1);
			kill(getpid(), SIGTERM);
			return -1;
		}
		if (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) {
			int one = 1;    /* records are small and answered at once */
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (sa.ss_family == AF_INET &&
		    !web_server_ok(srv->web_server_addrs, (const struct sockaddr_in *)&sa)) {
			close(fd);
			continue;
		}
		return fd;
	}
}

/* Whether buf, the start of what the web server sent for a request, holds
 * FCGI_BEGIN_REQUEST and the params up to their empty record, or a record
 * that is libfcgi's to deal with at once: another version, a management
 * record (request id 0: FCGI_GET_VALUES is answered before the request
 * goes on), a record that is neither BEGIN_REQUEST nor PARAMS
 * (FCGI_ABORT_REQUEST, FCGI_STDIN too early).  Then FCGX_Accept_r reads
 * without waiting for more, or only as long as SO_RCVTIMEO lets it. */
static int
head_complete(const unsigned char *buf, size_t n)
{
	size_t off = 0;
	int begun = 0;

	while (off + 8 <= n) {
		const unsigned char *h = buf + off;
		unsigned type = h[1], id = (unsigned)h[2] << 8 | h[3];
		size_t clen = (size_t)h[4] << 8 | h[5];
		if (h[0] != 1 || id == 0)
			return 1;
		if (type == 1)                  /* FCGI_BEGIN_REQUEST */
			begun = 1;
		else if (type != 4)             /* not FCGI_PARAMS */
			return 1;
		else if (begun && clen == 0)    /* the params' end */
			return 1;
		off += 8 + clen + h[6];
	}
	return 0;
}

/* A management record (request id 0) of a type libfcgi does not know,
 * at the start of what the web server sent (n bytes peeked): answered
 * FCGI_UNKNOWN_TYPE here, as the FastCGI specification asks, and taken
 * off the connection, which goes on.  libfcgi 2.4.2 would answer it, then
 * drop the connection with the request behind it and leak 48 bytes
 * (found by a review).  1 when one was taken, 0 when the peek does not
 * start with a whole one, -1 when the connection failed.  Logged when
 * log is set (the first of a connection's run of them). */
#define UNKNOWN_RECORDS_MAX 64  /* answered in a row before hanging up */

static int
unknown_management(struct worker *w, size_t n, int log)
{
	const unsigned char *h = (const unsigned char *)w->peek;
	int fd = w->req.ipcFd;

	if (n < 8 || h[0] != FCGI_VERSION_1 || h[2] != 0 || h[3] != 0 ||
	    h[1] == FCGI_GET_VALUES)
		return 0;
	unsigned char type = h[1];
	size_t len = 8 + ((size_t)h[4] << 8 | h[5]) + h[6];
	if (n < len && n < sizeof(w->peek))
		return 0;       /* the rest is on its way */
	char sink[1024];
	for (size_t left = len; left > 0;) {
		ssize_t r = recv(fd, sink, left < sizeof(sink) ? left : sizeof(sink), 0);
		if (r <= 0)
			return -1;
		left -= (size_t)r;
	}
	unsigned char ans[16] = { FCGI_VERSION_1, FCGI_UNKNOWN_TYPE, 0, 0, 0, 8, 0, 0,
				  type, 0, 0, 0, 0, 0, 0, 0 };
	if (send(fd, ans, sizeof(ans), MSG_NOSIGNAL) != (ssize_t)sizeof(ans))
		return -1;
	if (log)
		log_printf(w->srv->log, LOG_LEVEL_WARN, "bad-request",
			   "the web server sent a FastCGI management record of unknown type %u: answered FCGI_UNKNOWN_TYPE",
			   type);
	return 1;
}

/* Wait until the web server has sent the request's BEGIN_REQUEST and all
 * its params, or FCGI_HEAD_PEEK bytes of them, so that FCGX_Accept_r
 * reads them without waiting.  Returns 1 then; 0 when the connection was
 * closed here: the web server hung up (logged only when a request had
 * begun), sent nothing more for client-timeout (logged once, counted),
 * or rategate is stopping.
 *
 * MSG_PEEK leaves the bytes for libfcgi.  Until the first byte the wait
 * is a poll for input; after it, input is always there, so the wait is a
 * nap (50 us, doubling up to 250 ms: a head arriving in two writes costs
 * microseconds, a stalled one a few wakeups a second) that still ends
 * when the web server hangs up (POLLRDHUP). */
static int
head_ready(struct worker *w)
{
	struct server *srv = w->srv;
	int fd = w->req.ipcFd;
	int64_t timeout = atomic_load(&srv->client_timeout_ms);
	int64_t last = clock_mono_ms();
	size_t have = 0;
	long nap_us = 50;
	int hup = 0;
	unsigned unknown = 0;   /* management records answered in a row */
	char t[32];

	w->timeout_ms = timeout;
	sock_timeout(fd, SO_RCVTIMEO, timeout);
	sock_timeout(fd, SO_SNDTIMEO, timeout);
	for (;;) {
		ssize_t n = recv(fd, w->peek, sizeof(w->peek), MSG_PEEK | MSG_DONTWAIT);
		if (n > 0) {
			w->peek_len = (size_t)n;
			int um = unknown_management(w, (size_t)n, unknown == 0);
			if (um > 0 && ++unknown > UNKNOWN_RECORDS_MAX) {
				/* no web server does that: one line, not one
				 * per record, and the connection goes */
				log_printf(srv->log, LOG_LEVEL_WARN, "bad-request",
					   "the web server sent %u management records of unknown types in a row; connection closed",
					   unknown);
				atomic_fetch_add(&srv->stats.denied[STATS_BAD_REQUEST], 1);
				drop_conn(w);
				return 0;
			}
			if (um > 0) {
				have = 0;
				last = clock_mono_ms();
				continue;
			}
			if (um < 0)
				n = 0;          /* gone: handled as a hang-up */
		}
		if (n > 0) {
			if ((size_t)n == sizeof(w->peek) ||
			    head_complete((const unsigned char *)w->peek, (size_t)n))
				return 1;
			if ((size_t)n > have) {
				have = (size_t)n;
				last = clock_mono_ms();
				nap_us = 50;
			}
		} else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			hup = 1;        /* closed or reset, nothing left to read */
		}
		if (hup) {
			if (have > 0)
				log_printf(srv->log, LOG_LEVEL_INFO, "client-gone",
					   "the web server closed the connection after %zu bytes of a request, before its params were complete",
					   have);
			drop_conn(w);
			return 0;
		}
		if (atomic_load(&srv->stopping)) {
			drop_conn(w);
			return 0;
		}
		int64_t left = timeout - (clock_mono_ms() - last);
		if (left <= 0) {
			duration_text(timeout, t, sizeof(t));
			if (have == 0)
				log_printf(srv->log, LOG_LEVEL_WARN, "client-timeout",
					   "the web server opened a connection and sent nothing for %s; closed",
					   t);
			else
				log_printf(srv->log, LOG_LEVEL_WARN, "client-timeout",
					   "the web server sent an incomplete request (%zu bytes, its params not complete) and then nothing for %s; connection closed",
					   have, t);
			atomic_fetch_add(&srv->stats.client_timeouts, 1);
			drop_conn(w);
			return 0;
		}
		struct pollfd p = { fd, have == 0 ? POLLIN : POLLRDHUP, 0 };
		int64_t wait_us = have == 0 ? 500000 : nap_us;
		if (wait_us > left * 1000)
			wait_us = left * 1000;
		struct timespec ts = { (time_t)(wait_us / 1000000), (long)(wait_us % 1000000) * 1000 };
		if (have > 0)
			nap_us = nap_us >= 125000 ? 250000 : nap_us * 2;
		if (ppoll(&p, 1, &ts, NULL) > 0 && have > 0 &&
		    (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			hup = 1;        /* looked at once more above */
	}
}

/* libfcgi ends the params at a read error between two of them as if they
 * were complete (ReadParams stops at EOF, whatever the cause) and leaves
 * the error on the stream.  Such a request is not served: no decision was
 * made, so it is no bad request either.  Returns 1 when the params are
 * whole. */
static int
params_complete(struct worker *w)
{
	struct server *srv = w->srv;
	int e = FCGX_GetError(w->req.in);
	char t[32];

	if (e == 0)
		return 1;
	if (timed_out(e)) {
		log_printf(srv->log, LOG_LEVEL_WARN, "client-timeout",
			   "the web server sent an incomplete request (its params stopped) and then nothing for %s; connection closed",
			   duration_text(w->timeout_ms, t, sizeof(t)));
		atomic_fetch_add(&srv->stats.client_timeouts, 1);
	} else {
		log_printf(srv->log, LOG_LEVEL_INFO, "client-gone",
			   "the web server closed the connection or aborted the request before its params were complete");
	}
	drop_conn(w);
	FCGX_Finish_r(&w->req);
	return 0;
}

/* After a body stall the 408 is out: send the end of the connection and
 * read what input is left before closing, so that the close does not
 * reset the connection under the web server (TCP answers a close with
 * unread input with RST) before it read the 408.  Until the web server
 * hangs up, sends nothing for FCGI_LINGER_IDLE_MS (it is the one that
 * stalled), or FCGI_LINGER_MS passed -- libfcgi's own close waits 2 s
 * after every read, without end for a web server that keeps trickling. */
static void
linger_close(struct worker *w)
{
	int fd = w->req.ipcFd;
	int64_t end = clock_mono_ms() + FCGI_LINGER_MS;
	char trash[1024];

	if (fd >= 0 && shutdown(fd, SHUT_WR) == 0) {
		for (;;) {
			int64_t left = end - clock_mono_ms();
			struct pollfd p = { fd, POLLIN, 0 };
			if (left > FCGI_LINGER_IDLE_MS)
				left = FCGI_LINGER_IDLE_MS;
			if (left <= 0 || poll(&p, 1, (int)left) <= 0 ||
			    recv(fd, trash, sizeof(trash), MSG_DONTWAIT) <= 0)
				break;
		}
	}
	drop_conn(w);
}

/* End the request in hand.  The answer is flushed here rather than in
 * FCGX_Finish_r, to see a web server that stopped reading it; after any
 * stall the connection is closed here (at once after a write stall: a
 * flush would wait client-timeout again), else FCGX_Finish_r keeps or
 * closes it as the web server asked. */
static void
finish_request(struct worker *w)
{
	struct server *srv = w->srv;
	FCGX_Request *q = &w->req;
	char t[32];

	if (w->stalled != STALL_WRITE) {
		FCGX_FClose(q->err);
		if (FCGX_FClose(q->out) != 0 && timed_out(FCGX_GetError(q->out))) {
			if (w->stalled == STALL_NONE) {
				log_printf(srv->log, LOG_LEVEL_INFO, "client-timeout",
					   "the web server read nothing of the answer for %s; connection closed",
					   duration_text(w->timeout_ms, t, sizeof(t)));
				atomic_fetch_add(&srv->stats.client_timeouts, 1);
			}
			w->stalled = STALL_WRITE;
		}
	}
	if (w->stalled == STALL_WRITE)
		drop_conn(w);
	else if (w->stalled == STALL_READ)
		linger_close(w);
	FCGX_Finish_r(q);
}

/* Workers.  -j starts that many; whenever a worker takes a request and
 * none is left waiting for one, another is started, up to
 * FCGI_WORKERS_MAX, so that requests which hold a worker for long (a body
 * trickled through Apache's mod_proxy_fcgi, a stalled head, a slow
 * application) cannot leave the rest unanswered: with a fixed few, as many
 * slow clients stopped the whole site, exempt paths and the statistics
 * included (found by a review).  Requests for an application still wait
 * for one of -j application slots (above), so -j trickled bodies hold
 * them all, as they would hold the application's own workers without
 * rategate; but denials, the statistics and bad requests are answered at
 * once until FCGI_WORKERS_MAX slow requests, more than a web server's own
 * workers (Apache's MaxRequestWorkers is 150 on Debian), which a trickle
 * holds as well.  The count is logged each time it doubles and when it
 * reaches the most.
 *
 * Workers started this way go again when they are not needed, as Apache's
 * MaxSpareThreads and php-fpm's process_idle_timeout retire theirs: every
 * FCGI_RETIRE_S the main thread looks at the fewest workers that were
 * idle at once during that round (idle_low, lowered as workers take
 * requests); that many were never needed, and so many beyond -j are asked
 * to go (retire); the next round logs how many went.  The idle count,
 * not each worker's own idle time, decides: the kernel hands connections
 * to the workers waiting in accept() in turn, so under a steady trickle
 * every worker would look busy now and then.  A worker waiting in
 * accept() sees the request within FCGI_ACCEPT_WAKE_MS (the listening
 * socket's SO_RCVTIMEO), one done with a request at once (under that
 * trickle accept() may never wait so long), frees its memory and ends;
 * its slot is reused by the next worker started, which joins it first.
 * One holding a kept connection stays while the web server keeps it, and
 * one that started a CGI script still working after its answer stays
 * while the script runs (the kernel kills the script when the thread
 * that started it ends: cgi_started_here). */
static void *worker_main(void *arg);

/* Starts a worker in a free slot; with spawn_mu held. */
static int
start_worker(struct server *srv)
{
	struct worker *w = NULL;

	for (unsigned i = 0; i < srv->nstarted && w == NULL; i++)
		if (srv->ws[i].state == W_RETIRED) {
			/* it has ended or is about to: its memory is freed */
			pthread_join(srv->ws[i].tid, NULL);
			memset(&srv->ws[i], 0, sizeof(srv->ws[i]));
			w = &srv->ws[i];
		} else if (srv->ws[i].state == W_UNUSED) {
			w = &srv->ws[i];        /* a start that failed there */
		}
	if (w == NULL) {
		if (srv->nstarted == FCGI_WORKERS_MAX)
			return EAGAIN;  /* a retiring one has not ended yet */
		w = &srv->ws[srv->nstarted];
	}
	w->srv = srv;
	respond_buf_init(&w->out);
	respond_buf_init(&w->hdr);
	/* -1: libfcgi never accepts by itself (accept_conn does) */
	FCGX_InitRequest(&w->req, -1, 0);
	atomic_fetch_add(&srv->running, 1);
	atomic_fetch_add(&srv->idle, 1);
	int e = pthread_create(&w->tid, NULL, worker_main, w);
	if (e != 0) {
		atomic_fetch_sub(&srv->running, 1);
		atomic_fetch_sub(&srv->idle, 1);
		respond_buf_free(&w->out);
		respond_buf_free(&w->hdr);
		w->state = W_UNUSED;
		return e;
	}
	if (w == &srv->ws[srv->nstarted])
		srv->nstarted++;
	w->state = W_LIVE;
	srv->nlive++;
	return 0;
}

/* A worker took a request: start another if none is left waiting. */
static void
worker_busy(struct server *srv)
{
	int left = atomic_fetch_sub(&srv->idle, 1) - 1;
	int low = atomic_load(&srv->idle_low);

	while (left < low &&
	       !atomic_compare_exchange_weak(&srv->idle_low, &low, left))
		;
	if (left != 0)
		return;
	pthread_mutex_lock(&srv->spawn_mu);
	unsigned n = srv->nlive;
	if (atomic_load(&srv->idle) == 0 && n >= FCGI_WORKERS_MAX)
		atomic_store(&srv->spawn_stuck, 1);
	if (atomic_load(&srv->idle) == 0 && n < FCGI_WORKERS_MAX &&
	    !atomic_load(&srv->stopping)) {
		int e = start_worker(srv);
		atomic_store(&srv->spawn_stuck, e != 0);
		if (e != 0) {
			/* at most a line a minute: it is tried again at
			 * every request while all are busy */
			if (log_due(&srv->spawn_failed_ms, 60000))
				log_printf(srv->log, LOG_LEVEL_WARN, "workers",
					   "all %u workers are busy and another cannot be started: %s; new requests wait for one",
					   n, strerror(e));
		} else if (n + 1 == FCGI_WORKERS_MAX)
			log_printf(srv->log, LOG_LEVEL_WARN, "workers",
				   "all %u workers are busy: started the last one (at most %d); beyond it new requests wait (slow clients or a slow application?)",
				   n, FCGI_WORKERS_MAX);
		else if (((n + 1) & n) == 0)
			log_printf(srv->log, LOG_LEVEL_INFO, "workers",
				   "all %u workers are busy: %u now (at most %d)",
				   n, n + 1, FCGI_WORKERS_MAX);
	}
	pthread_mutex_unlock(&srv->spawn_mu);
}

/* A worker waiting for a connection: is it asked to go?  Takes one of the
 * round's requests, never below -j. */
static int
worker_retires(struct server *srv)
{
	int r = atomic_load(&srv->retire);
	int yes = 0;

	/* not one that started a CGI script still working after its answer:
	 * the kernel kills the script when this thread ends */
	if (r <= 0 || cgi_started_here() > 0)
		return 0;
	pthread_mutex_lock(&srv->spawn_mu);
	if (srv->nlive > srv->nbase && !atomic_load(&srv->stopping)) {
		/* out of the idle count now, and only while another is left
		 * idle: counted idle until its end, it could let a worker
		 * taking a connection see one free and start none, and with
		 * every other worker held by a stalled client the next
		 * connection would wait (a review) */
		int i = atomic_load(&srv->idle);
		while (i >= 2 && !atomic_compare_exchange_weak(&srv->idle, &i, i - 1))
			;
		if (i >= 2) {
			if (atomic_compare_exchange_strong(&srv->retire, &r, r - 1)) {
				srv->nlive--;
				srv->retired++;
				yes = 1;
			} else {
				atomic_fetch_add(&srv->idle, 1);
			}
		}
	}
	pthread_mutex_unlock(&srv->spawn_mu);
	return yes;
}

/* A worker's memory, at its end. */
static void
worker_free(struct worker *w)
{
	FCGX_Free(&w->req, 1);
	free(w->pbuf);
	free(w->params);
	free(w->pre);
	respond_buf_free(&w->out);
	respond_buf_free(&w->hdr);
}

/* The main thread's round (every srv->retire_ms): ask the workers beyond
 * -j that stayed idle all through it to go. */
static void
retire_round(struct server *srv)
{
	int idle = atomic_load(&srv->idle);
	int low = atomic_exchange(&srv->idle_low, idle);

	pthread_mutex_lock(&srv->spawn_mu);
	unsigned live = srv->nlive;
	unsigned spare = live > srv->nbase ? live - srv->nbase : 0;
	unsigned go = low > 0 ? (unsigned)low : 0;
	unsigned gone = srv->retired;
	srv->retired = 0;
	if (go > spare)
		go = spare;
	pthread_mutex_unlock(&srv->spawn_mu);
	/* a request not taken last round lapses: this one's count stands */
	atomic_store(&srv->retire, (int)go);
	/* what the last round's request did, not what this one asks: a
	 * worker that started a CGI script still working stays
	 * (worker_retires), one holding a kept connection too */
	if (gone > 0) {
		char t[32];
		log_printf(srv->log, LOG_LEVEL_INFO, "workers",
			   "%u worker%s retired, idle all through a round of %s; %u now (-j %u)",
			   gone, gone == 1 ? "" : "s",
			   duration_text(srv->retire_ms, t, sizeof(t)), live,
			   srv->nbase);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;
	int busy = 0;   /* counted out of srv->idle */
	int retiring = 0;

	for (;;) {
		if (atomic_load(&srv->stopping))
			break;
		keep_or_release(w);
		/* Idle is a worker that will accept the next connection: not
		 * one waiting on a connection the web server keeps (above).
		 * Counted idle, such workers let a new connection start no
		 * worker, and keep_or_release closed a kept one for it
		 * instead, while the web server could be sending its next
		 * request on it: nginx answers a POST that meets the close 502
		 * ("writev() failed (32: Broken pipe) while sending request to
		 * upstream"; it sends only idempotent requests again), found
		 * by a soak test with keepalive 8 and 16 clients: 100 POSTs in
		 * 16,604.  (A busy worker that stops here was never counted
		 * back, and its end takes nothing off the count.) */
		if (busy && w->req.ipcFd < 0) {
			atomic_fetch_add(&srv->idle, 1);
			busy = 0;
		}
		if (atomic_load(&srv->stopping))
			break;
		/* asked to go, with no connection in hand: at once, not after
		 * FCGI_ACCEPT_WAKE_MS in accept() without one, which never
		 * comes while requests arrive faster than one a second per
		 * worker waiting (the kernel hands them out in turn) */
		if (w->req.ipcFd < 0 && worker_retires(srv)) {
			retiring = 1;
			break;
		}
		if (w->req.ipcFd < 0 && (w->req.ipcFd = accept_conn(w)) < 0) {
			retiring = w->req.ipcFd == -2;
			w->req.ipcFd = -1;
			break;
		}
		if (!busy) {
			busy = 1;
			worker_busy(srv);
		}
		if (!head_ready(w))
			continue;
		/* FCGX_Accept_r first finishes the previous request, which
		 * closes a connection not marked kept: this one is to be read. */
		w->req.keepConnection = 1;
		int64_t t0 = clock_mono_ms();
		if (FCGX_Accept_r(&w->req) < 0) {
			/* libfcgi gave the connection up and closed it: a protocol
			 * error at once, or a read it was left to (a head over
			 * FCGI_HEAD_PEEK bytes, after a management record) that
			 * failed -- after client-timeout, as a rule a stall */
			if (clock_mono_ms() - t0 >= w->timeout_ms) {
				char t[32];
				log_printf(srv->log, LOG_LEVEL_WARN, "client-timeout",
					   "the web server sent an incomplete request and then nothing for %s; connection closed",
					   duration_text(w->timeout_ms, t, sizeof(t)));
				atomic_fetch_add(&srv->stats.client_timeouts, 1);
			} else {
				/* at once: what it sent is not a request libfcgi
				 * reads (another version, a malformed or unknown
				 * record); say what the first record was */
				const unsigned char *h = (const unsigned char *)w->peek;
				if (w->peek_len >= 8)
					log_printf(srv->log, LOG_LEVEL_WARN, "bad-request",
						   "the web server sent what is not a FastCGI request rategate can read (first record: version %u, type %u, request id %u, %u bytes); connection closed",
						   h[0], h[1], (unsigned)h[2] << 8 | h[3],
						   (unsigned)h[4] << 8 | h[5]);
				else
					log_printf(srv->log, LOG_LEVEL_WARN, "bad-request",
						   "the web server sent %zu bytes that are not a FastCGI record; connection closed",
						   w->peek_len);
				atomic_fetch_add(&srv->stats.denied[STATS_BAD_REQUEST], 1);
			}
			continue;
		}
		if (!params_complete(w))
			continue;
		serve_one(w);
		finish_request(w);
		params_release(w);
	}
	/* at a stop, scripts it left working after their answer while the
	 * stop drained: killed here with their groups, and counted, before
	 * this thread's end has the kernel kill each script alone */
	if (!retiring)
		atomic_fetch_add(&srv->bg_killed, cgi_kill_detached_here());
	if (!retiring && !busy) /* worker_retires took it out already */
		atomic_fetch_sub(&srv->idle, 1);
	atomic_fetch_sub(&srv->running, 1);
	if (retiring) {
		worker_free(w);
		/* the next worker started in this slot joins this one */
		pthread_mutex_lock(&srv->spawn_mu);
		w->state = W_RETIRED;
		pthread_mutex_unlock(&srv->spawn_mu);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Sockets                                                             */

/* The inherited socket: fd 0 is a listening socket. */
static int
inherited_listener(void)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

static int
listen_unix(const char *path, char *err, size_t cap)
{
	struct sockaddr_un sa;
	struct stat sb;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, cap, "listen %s: a unix socket path has at most %zu bytes",
			 path, sizeof(sa.sun_path) - 1);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			snprintf(err, cap, "listen %s: exists and is not a socket", path);
			return -1;
		}
		/* A socket file nobody listens on is what a dead process left
		 * behind: replace it.  A live one belongs to someone else. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			snprintf(err, cap, "listen %s: another process is listening there", path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, cap, "listen %s: socket: %s", path, strerror(errno));
		return -1;
	}
	/* Mode 0660 from the start: no moment where others could connect.
	 * Threads are not running yet, so the process-wide umask is ours. */
	mode_t old = umask(0117);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r != 0 || listen(fd, FCGI_BACKLOG) != 0) {
		snprintf(err, cap, "listen %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* HOST:PORT or [V6]:PORT, the host numeric, the port 1 to 65535, into
 * *ai (freeaddrinfo).  Returns 0, or -1 with err set. */
static int
listen_tcp_addr(const char *spec, struct addrinfo **ai, char *err, size_t cap)
{
	char host[128];
	const char *port;
	struct addrinfo hints;

	*ai = NULL;
	if (spec[0] == '[') {
		const char *close_b = strchr(spec, ']');
		if (close_b == NULL || close_b[1] != ':' ||
		    (size_t)(close_b - spec - 1) >= sizeof(host))
			goto bad;
		memcpy(host, spec + 1, (size_t)(close_b - spec - 1));
		host[close_b - spec - 1] = '\0';
		port = close_b + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (colon == NULL || (size_t)(colon - spec) >= sizeof(host) ||
		    memchr(spec, ':', (size_t)(colon - spec)) != NULL)
			goto bad;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	if (host[0] == '\0' || port[0] == '\0' ||
	    strspn(port, "0123456789") != strlen(port))
		goto bad;
	/* getaddrinfo takes any number and wraps it into 16 bits (70000 is
	 * port 4464), and 0 asks for a port nobody could configure */
	if (strlen(port) > 5 || atol(port) < 1 || atol(port) > 65535) {
		snprintf(err, cap, "listen \"%s\": bad port \"%s\": expected 1 to 65535",
			 spec, port);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	int gr = getaddrinfo(host, port, &hints, ai);
	if (gr == EAI_NONAME)
		goto bad;       /* a host name: only numeric addresses */
	if (gr != 0) {
		snprintf(err, cap, "listen %s: %s", spec, gai_strerror(gr));
		return -1;
	}
	return 0;
bad:
	snprintf(err, cap, "listen \"%s\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000)",
		 spec);
	return -1;
}

static int
listen_tcp(const char *spec, char *err, size_t cap)
{
	struct addrinfo *ai;

	if (listen_tcp_addr(spec, &ai, err, cap) != 0)
		return -1;
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
	    listen(fd, FCGI_BACKLOG) != 0) {
		snprintf(err, cap, "listen %s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* -M's octal mode, 0 to 0777.  Returns 0, or -1 for anything else. */
static int
parse_mode(const char *s, unsigned long *m)
{
	char *end;

	errno = 0;
	*m = strtoul(s, &end, 8);
	return errno != 0 || end == s || *end != '\0' || *m > 0777 ||
	       s[0] == '-' ? -1 : 0;
}

/* -U USER[:GROUP], "USER:" (the user's group) or ":GROUP" (the group
 * only): the ids for chown, -1 for one left as it is. */
static int
parse_owner(const char *owner, uid_t *uid, gid_t *gid, char *err, size_t cap)
{
	char user[64], *group;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (strlen(owner) >= sizeof(user)) {
		snprintf(err, cap, "-U \"%s\": too long", owner);
		return -1;
	}
	strcpy(user, owner);
	group = strchr(user, ':');
	if (group != NULL)
		*group++ = '\0';
	if (user[0] == '\0' && (group == NULL || group[0] == '\0')) {
		snprintf(err, cap, "-U \"%s\": expected USER, USER:GROUP or :GROUP", owner);
		return -1;
	}
	if (user[0] != '\0') {
		struct passwd *pw = getpwnam(user);
		if (pw == NULL) {
			snprintf(err, cap, "-U \"%s\": no such user \"%s\"", owner, user);
			return -1;
		}
		*uid = pw->pw_uid;
		if (group != NULL && group[0] == '\0')
			*gid = pw->pw_gid;      /* "user:" -- the user's group */
	}
	if (group != NULL && group[0] != '\0') {
		struct group *gr = getgrnam(group);
		if (gr == NULL) {
			snprintf(err, cap, "-U \"%s\": no such group \"%s\"", owner, group);
			return -1;
		}
		*gid = gr->gr_gid;
	}
	return 0;
}

/* -M MODE and -U USER[:GROUP] on the socket file we made (as spawn-fcgi's
 * -M, -U and -G): so that a web server running as another user (Apache's
 * www-data) can connect.  The socket is made 0660 first, so there is no
 * moment where it is wider open than asked. */
static int
socket_access(const char *path, const char *mode, const char *owner,
	      char *err, size_t cap)
{
	if (path == NULL) {
		snprintf(err, cap, "-M and -U apply to a unix socket rategate makes (-l /path or listen /path)");
		return -1;
	}
	if (owner != NULL) {
		uid_t uid;
		gid_t gid;
		if (parse_owner(owner, &uid, &gid, err, cap) != 0)
			return -1;
		if (chown(path, uid, gid) != 0) {
			snprintf(err, cap, "-U %s: chown %s: %s", owner, path, strerror(errno));
			return -1;
		}
	}
	if (mode != NULL) {
		unsigned long m;
		if (parse_mode(mode, &m) != 0) {
			snprintf(err, cap, "-M \"%s\": expected an octal mode such as 0660", mode);
			return -1;
		}
		if (chmod(path, (mode_t)m) != 0) {
			snprintf(err, cap, "-M %s: chmod %s: %s", mode, path, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* The socket file made by open_listener, to know it again at exit. */
static struct stat listen_file;

/* Open LISTEN; *unix_path is set to the socket file to remove at exit. */
static int
open_listener(const char *spec, const char **unix_path, char *err, size_t cap)
{
	*unix_path = NULL;
	if (strncmp(spec, "unix:", 5) == 0)
		spec += 5;
	if (spec[0] == '/') {
		int fd = listen_unix(spec, err, cap);
		if (fd >= 0 && lstat(spec, &listen_file) == 0)
			*unix_path = spec;
		return fd;
	}
	return listen_tcp(spec, err, cap);
}

/* Remove our socket file at exit, unless it is no longer ours: once this
 * process stopped listening, a new rategate may have found the file stale
 * and replaced it (a restart), and its socket must stay. */
static void
unlink_own_socket(const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) == 0 && sb.st_dev == listen_file.st_dev &&
	    sb.st_ino == listen_file.st_ino)
		unlink(path);
}

/* ------------------------------------------------------------------ */
/* Main                                                                */

static int
parse_workers(const char *s, unsigned *n)
{
	char *end;
	unsigned long v;

	if (s == NULL) {
		*n = FCGI_WORKERS_DEFAULT;
		return 0;
	}
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < 1 ||
	    v > FCGI_WORKERS_MAX)
		return -1;
	*n = (unsigned)v;
	return 0;
}

/* Join the workers not yet joined (joined[i] == 0) within secs seconds,
 * marking those that end.  Returns 1 when every worker has ended. */
static int
join_workers(struct worker *ws, unsigned n, char *joined, int secs)
{
	struct timespec deadline;
	int all = 1;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += secs;
	for (unsigned i = 0; i < n; i++) {
		if (joined[i])
			continue;
		if (pthread_timedjoin_np(ws[i].tid, NULL, &deadline) == 0)
			joined[i] = 1;
		else
			all = 0;
	}
	return all;
}

int
fcgi_check_options(const struct fcgi_options *o, char *err, size_t cap)
{
	unsigned nw;

	if (parse_workers(o->workers, &nw) != 0) {
		snprintf(err, cap, "-j \"%s\": expected a number of worker threads from 1 to %d",
			 o->workers, FCGI_WORKERS_MAX);
		return -1;
	}
	unsigned long m;
	if (o->mode != NULL && parse_mode(o->mode, &m) != 0) {
		snprintf(err, cap, "-M \"%s\": expected an octal mode such as 0660",
			 o->mode);
		return -1;
	}
	/* -U and -l here too, so that a bad value is a usage error (exit 2)
	 * that -t reports, not a failed start */
	uid_t uid;
	gid_t gid;
	if (o->owner != NULL && parse_owner(o->owner, &uid, &gid, err, cap) != 0)
		return -1;
	const char *l = o->listen;
	if (l != NULL && strncmp(l, "unix:", 5) == 0)
		l += 5;
	if (l != NULL && l[0] != '/') {
		struct addrinfo *ai = NULL;
		if (listen_tcp_addr(l, &ai, err, cap) != 0)
			return -1;
		freeaddrinfo(ai);
	}
	return 0;
}

int
fcgi_main(const struct fcgi_options *o)
{
	struct server srv;
	struct worker *ws = NULL;
	unsigned nw;
	char err[512];
	const char *unix_path = NULL;
	int status = 1;
	sigset_t set;
	struct rl_ruleset *rs = NULL;

	if (fcgi_check_options(o, err, sizeof(err)) != 0) {
		fprintf(stderr, "rategate: %s\n", err);
		return 2;
	}
	parse_workers(o->workers, &nw);
	/* A reload signal during start-up (loading the rules, opening the
	 * store: 100 ms and more with a Redis that does not answer) would
	 * kill the process by default, silently: held until the main loop
	 * takes it (SIGHUP a reload then, SIGUSR1 a stop).  SIGTERM and
	 * SIGINT keep their default meaning until then: nothing is in
	 * flight yet. */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	memset(&srv, 0, sizeof(srv));
	srv.listen_fd = -1;
	srv.app_max = nw;
	srv.rules_path = o->rules;
	pthread_mutex_init(&srv.gen_mu, NULL);
	pthread_mutex_init(&srv.spawn_mu, NULL);
	pthread_mutex_init(&srv.app_mu, NULL);
	srv.stats.started_ms = clock_wall_ms();
	srv.log = log_new(o->log, err, sizeof(err));
	if (srv.log == NULL) {
		fprintf(stderr, "rategate: %s\n", err);
		return 1;
	}
	rs = fileio_load_rules(o->rules, 1);
	if (rs == NULL) {
		fprintf(stderr, "rategate: %s: rules not loaded\n", o->rules);
		goto out;
	}
	const struct rl_settings *s = rl_ruleset_settings(rs);
	log_set_json(srv.log, s->log_format == RL_LOG_JSON);
	if (store_open(rs, srv.log, &srv.store, err, sizeof(err)) != 0) {
		fprintf(stderr, "rategate: %s: %s\n", o->rules, err);
		goto out;
	}
	srv.store_kind = s->storage.kind;
	if (s->storage.kind != RL_STORAGE_MEMORY) {
		/* shm, or Redis with its shm fallback: a truncated file is a
		 * SIGBUS, said in the log before it kills us */
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigbus;
		sa.sa_flags = SA_RESETHAND;
		sigemptyset(&sa.sa_mask);
		sigbus_log = srv.log;
		sigaction(SIGBUS, &sa, NULL);
	}
	if (store_redis_of(&srv.store) != NULL)
		store_redis_set_log(store_redis_of(&srv.store), srv.log);
	srv.store_uri = strdup(s->storage.uri);
	srv.store_shown = strdup(s->storage.shown);
	if (srv.store_uri == NULL || srv.store_shown == NULL)
		log_xrealloc(NULL, SIZE_MAX);
	/* a reload may bring rules up to what the slots of the shm file
	 * (or Redis's fallback file) hold; the memory store and Redis keep
	 * any size (a review found a reload of the memory store refused for
	 * a moving window, and a shm one let in a concurrency= its slots
	 * cannot hold: each of its requests a 503) */
	srv.store_max_moving = UINT64_MAX;
	srv.store_max_leases = UINT64_MAX;
	struct shm *shm = shm_of(&srv.store);
	if (shm == NULL && store_redis_of(&srv.store) != NULL)
		shm = store_redis_fallback(store_redis_of(&srv.store));
	if (shm != NULL) {
		struct shm_stats ss;
		shm_stats(shm, &ss);
		srv.store_max_moving = ss.max_moving;
		srv.store_max_leases = ss.max_leases;
	}
	if (s->storage.kind == RL_STORAGE_MEMORY) {
		struct locked_store *ls = log_xrealloc(NULL, sizeof(*ls));
		pthread_mutex_init(&ls->mu, NULL);
		ls->inner = srv.store;
		srv.store.ops = &locked_ops;
		srv.store.impl = ls;
	}
	srv.current = gen_new(&srv, rs, NULL, err, sizeof(err));
	if (srv.current == NULL) {
		fprintf(stderr, "rategate: %s: %s\n", o->rules, err);
		goto out;
	}
	rs = NULL;      /* the generation owns it */

	const char *where;
	if (o->listen != NULL) {
		where = o->listen;
		srv.listen_fd = open_listener(o->listen, &unix_path, err, sizeof(err));
	} else if (inherited_listener()) {
		where = "the inherited socket (fd 0)";
		srv.listen_fd = 0;
	} else if (s->listen != NULL) {
		where = s->listen;
		srv.listen_fd = open_listener(s->listen, &unix_path, err, sizeof(err));
	} else {
		fprintf(stderr, "rategate: no socket to serve: give -l LISTEN, set \"listen\" in %s, or let the web server (lighttpd bin-path, spawn-fcgi, mod_fcgid) start rategate\n",
			o->rules);
		goto out;
	}
	if (srv.listen_fd < 0) {
		fprintf(stderr, "rategate: %s\n", err);
		goto out;
	}
	if ((o->mode != NULL || o->owner != NULL) &&
	    socket_access(unix_path, o->mode, o->owner, err, sizeof(err)) != 0) {
		fprintf(stderr, "rategate: %s\n", err);
		goto out;
	}

	/* Signals: ignore SIGPIPE (a web server that hangs up is a failed
	 * write, not a death); take the stop and reload signals synchronously
	 * in this thread, blocked everywhere else. */
	signal(SIGPIPE, SIG_IGN);
	/* cgi.c reaps its scripts by pid; an inherited "ignore" would lose
	 * their exit statuses. */
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	srv.web_server_addrs = getenv("FCGI_WEB_SERVER_ADDRS");
	atomic_store(&srv.client_timeout_ms, s->client_timeout_ms);
	if (FCGX_Init() != 0) {
		fprintf(stderr, "rategate: FCGX_Init failed\n");
		goto out;
	}
	/* glibc's mmap threshold as a fixed setting: left dynamic, it rises
	 * to the largest block freed (a large head's params, up to 32 MB),
	 * and from then on each worker's arena keeps up to twice that after
	 * every large request, which malloc_trim does not give back outside
	 * the main arena: some 16 MB per worker, for good (found by a soak
	 * test).  Fixed, a large block is mmapped and unmapped when freed,
	 * and an arena is trimmed as its free top passes 128 KiB. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	/* calloc: room for every worker, pages touched only when one is
	 * started */
	ws = calloc(FCGI_WORKERS_MAX, sizeof(*ws));
	if (ws == NULL)
		log_xrealloc(NULL, SIZE_MAX);   /* out of memory: abort */
	srv.ws = ws;
	srv.nbase = nw;
	srv.retire_ms = FCGI_RETIRE_S * 1000;
	/* a test's shorter round (tests/integration/test_slow_clients.c) */
	const char *round = getenv("RATEGATE_TEST_RETIRE_MS");
	if (round != NULL && atoi(round) > 0)
		srv.retire_ms = atoi(round);
	/* accept() in a worker returns EAGAIN after this: how a worker asked
	 * to retire while it waits learns of it (see "Workers") */
	sock_timeout(srv.listen_fd, SO_RCVTIMEO, FCGI_ACCEPT_WAKE_MS);
	unsigned started = 0;
	pthread_mutex_lock(&srv.spawn_mu);
	for (; started < nw; started++) {
		int e = start_worker(&srv);
		if (e != 0) {
			fprintf(stderr, "rategate: cannot start worker threads: %s\n",
				strerror(e));
			atomic_store(&srv.failed, 1);
			break;
		}
	}
	pthread_mutex_unlock(&srv.spawn_mu);
	if (s->storage.kind == RL_STORAGE_MEMORY)
		log_printf(srv.log, LOG_LEVEL_INFO, "start",
			   "storage memory: counters are private to this process; run one rategate process per site (lighttpd \"max-procs\" => 1)");
	log_printf(srv.log, LOG_LEVEL_INFO, "start",
		   "rategate %s: FastCGI authorizer and responder on %s, %u worker%s (more while all are busy, up to %d), rules %s, storage %s",
		   PACKAGE_VERSION, where, started, started == 1 ? "" : "s",
		   FCGI_WORKERS_MAX, o->rules, srv.store_shown);
	s = NULL;       /* may be freed by a reload from here on */

	int64_t next_round = clock_mono_ms() + srv.retire_ms;
	while (started == nw) {
		int64_t now = clock_mono_ms();
		if (now >= next_round) {
			retire_round(&srv);
			next_round = now + srv.retire_ms;
		}
		int64_t wait = next_round - now;
		struct timespec ts = { (time_t)(wait / 1000),
				       (long)(wait % 1000) * 1000000L };
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig < 0)
			continue;       /* the round is due, or EINTR */
		if (sig == SIGHUP) {
			reload(&srv);
			continue;
		}
		break;
	}

	/* Stop: no new connections; requests in flight finish.  Said at
	 * once, so that a stop that a process manager cuts short with
	 * SIGKILL (mod_fcgid does after some 9 s) leaves a line. */
	long inflight = (long)atomic_load(&srv.stats.inflight);
	if (inflight > 0)
		log_printf(srv.log, LOG_LEVEL_INFO, "stop",
			   "stopping: %ld request%s in flight, waiting up to %d s for them",
			   inflight, inflight == 1 ? "" : "s", FCGI_DRAIN_S);
	/* scripts that answered and went on working (cgi.c detach) are no
	 * request's: killed with their process groups at once, as at their
	 * deadline (a second review found their children outliving the
	 * stop), before their workers end and the kernel kills the scripts
	 * alone (their death signal).  Before stopping is set: a worker
	 * that sees it ends, killing its own such scripts as it goes, and
	 * those were said in the second line, as if they had detached while
	 * the stop drained (12 scripts: "2 ... killed", then "10 ...
	 * killed", found by a soak test) */
	unsigned bg = cgi_kill_detached();
	if (bg > 0)
		log_printf(srv.log, LOG_LEVEL_INFO, "stop",
			   "%u CGI script%s still working after answering: killed",
			   bg, bg == 1 ? "" : "s");
	/* under spawn_mu: no worker is started after this, so nstarted is
	 * all there are to join */
	pthread_mutex_lock(&srv.spawn_mu);
	atomic_store(&srv.stopping, 1);
	started = srv.nstarted;
	pthread_mutex_unlock(&srv.spawn_mu);
	stop_slot_waiters(&srv);
	FCGX_ShutdownPending();
	shutdown(srv.listen_fd, SHUT_RDWR);
	char *joined = log_xrealloc(NULL, started ? started : 1);
	pthread_mutex_lock(&srv.spawn_mu);     /* a retiring worker writes it */
	for (unsigned i = 0; i < started; i++)  /* a slot whose start failed */
		joined[i] = ws[i].state == W_UNUSED;
	pthread_mutex_unlock(&srv.spawn_mu);
	int64_t stop_t0 = clock_mono_ms();
	int drained = join_workers(ws, started, joined, FCGI_DRAIN_S);
	if (drained) {
		/* every request is done, but scripts that answered and went
		 * on working while it drained may still run: the same */
		bg = atomic_load(&srv.bg_killed) + cgi_kill_all();
		if (bg > 0)
			log_printf(srv.log, LOG_LEVEL_INFO, "stop",
				   "%u CGI script%s still working after answering: killed",
				   bg, bg == 1 ? "" : "s");
	} else {
		/* CGI scripts still running are killed (their requests end as
		 * for a crash: a 502, or a cut body), never left behind as
		 * orphans; their workers then finish. */
		unsigned killed = cgi_kill_all();
		if (killed > 0) {
			log_printf(srv.log, LOG_LEVEL_WARN, "stop",
				   "%u CGI script%s still running after %d s: killed",
				   killed, killed == 1 ? "" : "s", FCGI_DRAIN_S);
			drained = join_workers(ws, started, joined, FCGI_KILL_GRACE_S);
		}
		if (!drained) {
			/* A worker is stuck on a connection that sends nothing,
			 * or on an application that does not answer; the rest
			 * is done.  Leave without freeing what it may touch. */
			unsigned stuck = 0;
			for (unsigned i = 0; i < started; i++)
				stuck += !joined[i];
			/* counted now, after the kills and the grace (a review
			 * found the count from before and the drain's 10 s
			 * where 12 had passed) */
			long busy = (long)atomic_load(&srv.stats.inflight);
			long secs = (long)((clock_mono_ms() - stop_t0 + 500) / 1000);
			log_printf(srv.log, LOG_LEVEL_WARN, "stop",
				   "%u worker%s still busy after %ld s (%ld request%s with the application); exiting anyway",
				   stuck, stuck == 1 ? "" : "s", secs,
				   busy, busy == 1 ? "" : "s");
			if (unix_path != NULL)
				unlink_own_socket(unix_path);
			free(joined);   /* no worker touches it */
			_exit(atomic_load(&srv.failed) ? 1 : 0);
		}
	}
	free(joined);
	log_printf(srv.log, LOG_LEVEL_INFO, "stop", "stopped");
	status = atomic_load(&srv.failed) ? 1 : 0;
	for (unsigned i = 0; i < started; i++)
		if (ws[i].state == W_LIVE)     /* a retired one freed its own */
			worker_free(&ws[i]);
	free(ws);
out:
	if (srv.listen_fd > 0)
		close(srv.listen_fd);
	if (unix_path != NULL)
		unlink_own_socket(unix_path);
	gen_release(srv.current);
	backends_free(&srv);
	if (srv.store.ops != NULL)
		srv.store.ops->destroy(srv.store.impl);
	free((char *)srv.store_uri);
	free((char *)srv.store_shown);
	log_free(srv.log);
	rl_ruleset_free(rs);
	pthread_mutex_destroy(&srv.gen_mu);
	pthread_mutex_destroy(&srv.spawn_mu);
	pthread_mutex_destroy(&srv.app_mu);
	return status;
}
