/*
 * fcgi.c - the FastCGI server: the listening socket (own or inherited),
 * worker threads around FCGX_Accept_r / FCGX_Finish_r, one decision per
 * request answered in the authorizer role, and a clean stop on SIGTERM.
 *
 * Each worker copies the request's params into its own buffer before
 * deciding, so nothing points into libfcgi's memory past FCGX_Finish_r.  An
 * authorizer never reads the request body: lighttpd sends no FCGI_STDIN at
 * all for a POST and Apache never does, so a read would block.
 *
 * Stopping: the main thread waits for signals with sigwait (they are
 * blocked in every thread).  On SIGTERM it raises libfcgi's shutdown flag
 * and shuts the listening socket down, which makes every accept() -- one in
 * progress or a later one -- fail, so each worker finishes the request it
 * holds and leaves its loop.
 */
#include "config.h"

#include <errno.h>
#include <fcgiapp.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fcgi.h"
#include "fileio.h"
#include "log.h"
#include "respond.h"
#include "store.h"

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

/* ------------------------------------------------------------------ */
/* Request target                                                      */

int
fcgi_target(const char *request_uri, const char *script_name,
	    const char *path_info, const char *query_string, char *buf,
	    size_t cap, struct fcgi_target *t)
{
	t->query = NULL;
	t->query_len = 0;
	if (request_uri != NULL && request_uri[0] != '\0') {
		const char *p = request_uri;
		/* absolute-form (a proxy request): drop scheme and authority */
		if (strncasecmp(p, "http://", 7) == 0 ||
		    strncasecmp(p, "https://", 8) == 0) {
			const char *auth = strstr(p, "//") + 2;
			const char *slash = strpbrk(auth, "/?");
			if (slash == NULL || *slash == '?') {
				/* no path: the root, then any query */
				t->path = "/";
				t->path_len = 1;
				if (slash != NULL) {
					t->query = slash + 1;
					t->query_len = strlen(slash + 1);
				}
				return 0;
			}
			p = slash;
		}
		const char *q = strchr(p, '?');
		t->path = p;
		t->path_len = q ? (size_t)(q - p) : strlen(p);
		if (q != NULL) {
			t->query = q + 1;
			t->query_len = strlen(q + 1);
		}
		return 0;
	}
	size_t sl = script_name ? strlen(script_name) : 0;
	size_t pl = path_info ? strlen(path_info) : 0;
	if (sl + pl == 0 || sl + pl + 1 > cap)
		return -1;
	memcpy(buf, script_name ? script_name : "", sl);
	memcpy(buf + sl, path_info ? path_info : "", pl);
	buf[sl + pl] = '\0';
	t->path = buf;
	t->path_len = sl + pl;
	if (query_string != NULL && query_string[0] != '\0') {
		t->query = query_string;
		t->query_len = strlen(query_string);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Server                                                              */

struct server {
	const struct rl_ruleset *rs;
	struct rl_store store;
	struct log *log;
	struct respond_opts ropts;
	int listen_fd;
	atomic_int stopping;
	atomic_int failed;      /* a worker could not accept any more */
	atomic_int running;     /* workers still in their loop */
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
	struct respond_buf out;
};

static int64_t
clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* The first value of a copied param, or NULL. */
static const char *
param(const struct worker *w, size_t n, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (w->params[i].name_len == len &&
		    memcmp(w->params[i].name, name, len) == 0)
			return w->params[i].value;
	return NULL;
}

static void
send_out(struct worker *w)
{
	/* A failed write means the web server went away: nothing to tell. */
	(void)FCGX_PutStr(w->out.data, (int)w->out.len, w->req.out);
}

static void
authorize(struct worker *w, size_t np, int64_t now)
{
	struct server *srv = w->srv;
	struct rl_request rq;
	struct rl_decision d;
	struct fcgi_target t;
	const char *accept = param(w, np, "HTTP_ACCEPT");
	enum respond_format f = respond_negotiate(accept, accept ? strlen(accept) : 0);

	memset(&rq, 0, sizeof(rq));
	rq.method = param(w, np, "REQUEST_METHOD");
	if (fcgi_target(param(w, np, "REQUEST_URI"), param(w, np, "SCRIPT_NAME"),
			param(w, np, "PATH_INFO"), param(w, np, "QUERY_STRING"),
			w->target, sizeof(w->target), &t) == 0) {
		rq.path = t.path;
		rq.path_len = t.path_len;
		rq.query = t.query;
		rq.query_len = t.query_len;
	}
	rq.remote_addr = param(w, np, "REMOTE_ADDR");
	rq.remote_addr_len = rq.remote_addr ? strlen(rq.remote_addr) : 0;
	rq.params = w->params;
	rq.nparams = np;

	rl_decide(srv->rs, &srv->store, &rq, now, RL_HIT, &d);
	struct respond_opts ro = srv->ropts;
	ro.apache = param(w, np, "FCGI_APACHE_ROLE") != NULL;
	int status = respond_authorizer(&w->out, &ro, &d, now, f);
	send_out(w);

	struct log_request lr = { rq.method, rq.path, rq.path_len, now };
	log_decision(srv->log, &lr, &d, status);
}

static void
serve_one(struct worker *w)
{
	struct server *srv = w->srv;
	int64_t now = clock_ms();
	/* libfcgi puts its own FCGI_ROLE first (Apache sends a second one). */
	const char *role = FCGX_GetParam("FCGI_ROLE", w->req.envp);
	long np = copy_params(w, w->req.envp);

	if (np < 0) {
		log_printf(srv->log, LOG_LEVEL_WARN, "bad-request",
			   "request params exceed %u bytes", FCGI_PARAMS_MAX);
		respond_error(&w->out, 400, 0, "bad_request",
			      "Bad Request: request headers too large", RESPOND_TEXT);
		send_out(w);
		return;
	}
	if (role != NULL && strcmp(role, "AUTHORIZER") == 0) {
		authorize(w, (size_t)np, now);
		return;
	}
	log_printf(srv->log, LOG_LEVEL_ERROR, "unsupported-role",
		   "FastCGI role %s: responder mode not built yet; configure rategate as an authorizer",
		   role ? role : "(none)");
	respond_error(&w->out, 502, 0, "bad_gateway",
		      "Bad Gateway: rategate responder mode not built yet", RESPOND_TEXT);
	send_out(w);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;

	for (;;) {
		if (atomic_load(&srv->stopping))
			break;
		int r = FCGX_Accept_r(&w->req);
		if (r < 0) {
			if (!atomic_load(&srv->stopping)) {
				log_printf(srv->log, LOG_LEVEL_ERROR, "accept",
					   "accepting FastCGI connections failed (%d): %s",
					   r, strerror(r < 0 && r > -10000 ? -r : EIO));
				atomic_store(&srv->failed, 1);
				kill(getpid(), SIGTERM);
			}
			break;
		}
		serve_one(w);
		FCGX_Finish_r(&w->req);
	}
	atomic_fetch_sub(&srv->running, 1);
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

static int
listen_tcp(const char *spec, char *err, size_t cap)
{
	char host[128];
	const char *port;
	struct addrinfo hints, *ai = NULL;

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
	    strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
		goto bad;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	int gr = getaddrinfo(host, port, &hints, &ai);
	if (gr == EAI_NONAME)
		goto bad;       /* a host name: only numeric addresses */
	if (gr != 0) {
		snprintf(err, cap, "listen %s: %s", spec, gai_strerror(gr));
		return -1;
	}
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
bad:
	snprintf(err, cap, "listen \"%s\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000)",
		 spec);
	return -1;
}

/* Open LISTEN; *unix_path is set to the socket file to remove at exit. */
static int
open_listener(const char *spec, const char **unix_path, char *err, size_t cap)
{
	*unix_path = NULL;
	if (strncmp(spec, "unix:", 5) == 0)
		spec += 5;
	if (spec[0] == '/') {
		int fd = listen_unix(spec, err, cap);
		if (fd >= 0)
			*unix_path = spec;
		return fd;
	}
	return listen_tcp(spec, err, cap);
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

	if (parse_workers(o->workers, &nw) != 0) {
		fprintf(stderr, "rategate: -j \"%s\": expected a number of worker threads from 1 to %d\n",
			o->workers, FCGI_WORKERS_MAX);
		return 2;
	}
	memset(&srv, 0, sizeof(srv));
	srv.listen_fd = -1;
	struct rl_ruleset *rs = fileio_load_rules(o->rules, 1);
	if (rs == NULL) {
		fprintf(stderr, "rategate: %s: rules not loaded\n", o->rules);
		return 1;
	}
	srv.rs = rs;
	const struct rl_settings *s = rl_ruleset_settings(rs);
	respond_opts_from_settings(&srv.ropts, s);

	srv.log = log_new(o->log, err, sizeof(err));
	if (srv.log == NULL) {
		fprintf(stderr, "rategate: %s\n", err);
		goto out;
	}
	if (store_open(s, rl_ruleset_max_moving(rs), &srv.store, err, sizeof(err)) != 0) {
		fprintf(stderr, "rategate: %s: %s\n", o->rules, err);
		goto out;
	}
	if (s->storage.kind == RL_STORAGE_MEMORY) {
		struct locked_store *ls = log_xrealloc(NULL, sizeof(*ls));
		pthread_mutex_init(&ls->mu, NULL);
		ls->inner = srv.store;
		srv.store.ops = &locked_ops;
		srv.store.impl = ls;
	}

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

	/* Signals: ignore SIGPIPE (a web server that hangs up is a failed
	 * write, not a death); take the stop and reload signals synchronously
	 * in this thread, blocked everywhere else. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (FCGX_Init() != 0) {
		fprintf(stderr, "rategate: FCGX_Init failed\n");
		goto out;
	}
	ws = log_xrealloc(NULL, nw * sizeof(*ws));
	memset(ws, 0, nw * sizeof(*ws));
	atomic_store(&srv.running, (int)nw);
	unsigned started = 0;
	for (; started < nw; started++) {
		struct worker *w = &ws[started];
		w->srv = &srv;
		respond_buf_init(&w->out);
		FCGX_InitRequest(&w->req, srv.listen_fd, 0);
		int e = pthread_create(&w->tid, NULL, worker_main, w);
		if (e != 0) {
			fprintf(stderr, "rategate: cannot start worker threads: %s\n",
				strerror(e));
			atomic_fetch_sub(&srv.running, (int)(nw - started));
			atomic_store(&srv.failed, 1);
			break;
		}
	}
	if (s->storage.kind == RL_STORAGE_MEMORY)
		log_printf(srv.log, LOG_LEVEL_INFO, "start",
			   "storage memory: counters are private to this process; run one rategate process per site (lighttpd \"max-procs\" => 1)");
	log_printf(srv.log, LOG_LEVEL_INFO, "start",
		   "rategate %s: FastCGI authorizer on %s, %u worker%s, rules %s, storage %s",
		   PACKAGE_VERSION, where, started, started == 1 ? "" : "s",
		   o->rules, s->storage.uri);

	while (started == nw) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_printf(srv.log, LOG_LEVEL_WARN, "reload",
				   "SIGHUP: reloading rules is not built yet; still running the rules loaded at start");
			continue;
		}
		break;
	}

	/* Stop: no new connections; requests in flight finish. */
	atomic_store(&srv.stopping, 1);
	FCGX_ShutdownPending();
	shutdown(srv.listen_fd, SHUT_RDWR);
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += FCGI_DRAIN_S;
	int drained = 1;
	for (unsigned i = 0; i < started; i++) {
		if (pthread_timedjoin_np(ws[i].tid, NULL, &deadline) != 0)
			drained = 0;
	}
	if (!drained) {
		/* A worker is stuck on a connection that sends nothing; the
		 * rest is done.  Leave without freeing what it may touch. */
		log_printf(srv.log, LOG_LEVEL_WARN, "stop",
			   "a request still in flight after %d s; exiting anyway",
			   FCGI_DRAIN_S);
		if (unix_path != NULL)
			unlink(unix_path);
		_exit(atomic_load(&srv.failed) ? 1 : 0);
	}
	log_printf(srv.log, LOG_LEVEL_INFO, "stop", "stopped");
	status = atomic_load(&srv.failed) ? 1 : 0;
	for (unsigned i = 0; i < started; i++) {
		FCGX_Free(&ws[i].req, 1);
		free(ws[i].pbuf);
		free(ws[i].params);
		respond_buf_free(&ws[i].out);
	}
	free(ws);
out:
	if (srv.listen_fd > 0)
		close(srv.listen_fd);
	if (unix_path != NULL)
		unlink(unix_path);
	if (srv.store.ops != NULL)
		srv.store.ops->destroy(srv.store.impl);
	log_free(srv.log);
	rl_ruleset_free(rs);
	return status;
}
