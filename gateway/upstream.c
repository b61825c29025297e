/*
 * upstream.c - the FastCGI client of the responder proxy (see upstream.h),
 * written from the FastCGI 1.0 specification (Open Market, 1996).
 *
 * The protocol as we speak it.  Every record is an 8-byte header (version
 * 1, type, requestId, contentLength, paddingLength, reserved), content and
 * padding.  A request is FCGI_BEGIN_REQUEST (role RESPONDER, flags
 * FCGI_KEEP_CONN), the name-value pairs as an FCGI_PARAMS stream (lengths
 * of 1 byte below 128, else 4 bytes with the top bit set; the stream is cut
 * into records of at most 65535 bytes wherever the cut falls, and ends with
 * an empty record), then the body as an FCGI_STDIN stream ending with an
 * empty record.  We always use requestId 1 (one request per connection at
 * a time) and send no padding; we accept padding and records cut anywhere.
 * The answer is FCGI_STDOUT (the CGI head, then the body), FCGI_STDERR
 * (logged by line, at most UPSTREAM_STDERR_LINES_MAX lines a request, then
 * one line counting the rest) and one FCGI_END_REQUEST, whose protocolStatus must be
 * FCGI_REQUEST_COMPLETE; FCGI_CANT_MPX_CONN, FCGI_OVERLOADED and
 * FCGI_UNKNOWN_ROLE become a 502 naming them.  Anything else -- another
 * version, another requestId, a management record, FCGI_UNKNOWN_TYPE, an
 * END_REQUEST body that is not 8 bytes -- is a protocol error: 502.  The
 * appStatus is ignored (php-fpm and libfcgi report 0).
 *
 * Choices:
 *
 * - One poll loop per request over one non-blocking socket, both
 *   directions: the answer is read whenever it is readable, and the body
 *   is read from the client (c->read, which blocks) only when the socket is
 *   writable and nothing else is queued, so an application that answers
 *   before reading its body, or that writes more than the socket buffers
 *   hold, never deadlocks us.  c->write blocks; it is the web server's
 *   side.  spec->timeout_ms bounds connect, send and receive together (one
 *   deadline, monotonic clock), counting only the time the application is
 *   waited for: time spent inside c->read and c->write is the web
 *   server's (bounded by the gateway's client-timeout), so the deadline
 *   moves on by it, and a slow web server is never reported as a slow
 *   application.  timeout_ms <= 0 means no deadline.
 *
 * - The pool.  After a clean FCGI_END_REQUEST on a connection we sent the
 *   whole request on (the empty FCGI_STDIN included), with nothing after
 *   the END_REQUEST and no EOF waiting, the connection goes back to the
 *   upstream's idle list (a mutex, at most upstream_set_idle_max, default
 *   UPSTREAM_IDLE_MAX, taken LIFO so the warmest connection goes first;
 *   see upstream.h on sizing it against the application's workers).  An application that answered
 *   before the end of its body, an END_REQUEST that is not COMPLETE, or a
 *   write error all mean the connection is closed: records of the old
 *   request still in flight would be read as the next request's.
 *
 * - Dead idle connections.  An application may close an idle connection
 *   (php-fpm restarted, a libfcgi app that ignores FCGI_KEEP_CONN and
 *   closes after END_REQUEST).  At checkout each pooled connection is
 *   tested with a non-blocking recv(MSG_PEEK): EOF, an error or unexpected
 *   bytes mean it is closed and the next one (or a new connection) is
 *   tried.  The close can still race the checkout, so a request that
 *   started on a pooled connection and saw it reset or closed before any
 *   byte came back is retried once on a new connection, when no body byte
 *   was taken from the client yet (the body cannot be replayed) and either
 *   a send failed (the application cannot have the whole request) or the
 *   method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE: RFC 9110,
 *   9.2.2): an application that died after receiving the request but
 *   before writing anything may then run an idempotent request twice, as
 *   behind nginx.  A request on a new connection is never retried.
 *
 * - Failures before the head reached the client become our 502 (or 413 when
 *   the body exceeds max_body); after it, the body is cut short, res->error
 *   says why, and upstream_run still returns 0: the client's answer is as
 *   complete as it will get.  -1 means only that the client went away.  On
 *   any failure the connection is closed, not pooled, with a reset
 *   (SO_LINGER 0): that is how we abort, no FCGI_ABORT_REQUEST; the
 *   application sees the reset on its next read or write, and no unsent
 *   body lingers in the kernel behind an application that stopped
 *   reading.  A content_length above max_body is answered 413
 *   without contacting the application.
 *
 * - Name resolution happens once in upstream_new (a bad name is a load
 *   error; getaddrinfo has no timeout and has no place on the request
 *   path); every address is tried in order on connect.  Sockets are
 *   SOCK_CLOEXEC, so no connection leaks into a CGI child; TCP ones get
 *   TCP_NODELAY (records are small and written as they come).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "upstream.h"

/* FastCGI 1.0 constants. */
#define FCGI_HEADER_LEN 8
#define FCGI_VERSION_1 1
#define FCGI_BEGIN_REQUEST 1
#define FCGI_END_REQUEST 3
#define FCGI_PARAMS 4
#define FCGI_STDIN 5
#define FCGI_STDOUT 6
#define FCGI_STDERR 7
#define FCGI_UNKNOWN_TYPE 11
#define FCGI_RESPONDER 1
#define FCGI_KEEP_CONN 1
#define FCGI_REQUEST_COMPLETE 0
#define FCGI_CANT_MPX_CONN 1
#define FCGI_OVERLOADED 2
#define FCGI_UNKNOWN_ROLE 3
#define FCGI_MAX_CONTENT 65535u
#define FCGI_MAX_NVLEN 0x7fffffffu

#define REQUEST_ID 1
/* Request body read from the client per FCGI_STDIN record, bytes.  libfcgi's
 * FCGX_GetStr waits for all of it (or the end), so not too big. */
#define BODY_CHUNK 16384
/* Answer bytes read per recv, bytes. */
#define READ_CHUNK 16384

struct uaddr {
	struct sockaddr_storage sa;
	socklen_t len;
};

struct upstream {
	char *name;
	struct uaddr *addrs;
	size_t naddrs;
	int tcp;
	struct log *log;
	atomic_size_t idle_max; /* 0: no FCGI_KEEP_CONN */
	pthread_mutex_t mu;     /* guards what follows */
	int idle[UPSTREAM_IDLE_MAX];
	size_t nidle;
	uint64_t connects, reuses, failures;
};

/* ------------------------------------------------------------------ */
/* Addresses                                                           */

static int
parse_unix(struct upstream *u, const char *uri, const char *path,
	   char *err, size_t cap)
{
	struct sockaddr_un sun;
	size_t len = strlen(path);

	if (len == 0 || path[0] != '/') {
		snprintf(err, cap, "upstream \"%s\": expected an absolute socket path", uri);
		return -1;
	}
	if (len >= sizeof(sun.sun_path)) {
		snprintf(err, cap, "upstream \"%s\": socket path longer than %zu bytes",
			 uri, sizeof(sun.sun_path) - 1);
		return -1;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, path, len);
	u->addrs = log_xrealloc(NULL, sizeof(*u->addrs));
	memset(u->addrs, 0, sizeof(*u->addrs));
	memcpy(&u->addrs[0].sa, &sun, sizeof(sun));
	u->addrs[0].len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	u->naddrs = 1;
	size_t nl = strlen("fcgi+unix://") + len + 1;
	u->name = log_xrealloc(NULL, nl);
	snprintf(u->name, nl, "fcgi+unix://%s", path);
	return 0;
}

static int
parse_tcp(struct upstream *u, const char *uri, const char *rest,
	  char *err, size_t cap)
{
	char host[256], port[8];
	const char *p, *hend;
	int bracket = 0;

	if (rest[0] == '[') {
		bracket = 1;
		hend = strchr(rest, ']');
		if (hend == NULL) {
			snprintf(err, cap, "upstream \"%s\": missing ']' after an IPv6 address", uri);
			return -1;
		}
		p = rest + 1;
		if (hend[1] != ':') {
			snprintf(err, cap, "upstream \"%s\": expected \":PORT\" after the address", uri);
			return -1;
		}
	} else {
		hend = strchr(rest, ':');
		p = rest;
		if (hend == NULL) {
			snprintf(err, cap, "upstream \"%s\": expected \":PORT\" after the host", uri);
			return -1;
		}
		if (strchr(hend + 1, ':') != NULL) {
			snprintf(err, cap, "upstream \"%s\": an IPv6 address needs brackets ([::1]:9000)", uri);
			return -1;
		}
	}
	size_t hl = (size_t)(hend - p);
	if (hl == 0 || hl >= sizeof(host)) {
		snprintf(err, cap, "upstream \"%s\": %s host", uri, hl == 0 ? "empty" : "over-long");
		return -1;
	}
	memcpy(host, p, hl);
	host[hl] = '\0';
	const char *ps = hend + (bracket ? 2 : 1);
	size_t pl = 0;
	unsigned long pv = 0;
	while (ps[pl] >= '0' && ps[pl] <= '9' && pl < 6)
		pv = pv * 10 + (unsigned long)(ps[pl++] - '0');
	if (pl == 0 || pv < 1 || pv > 65535 ||
	    !(ps[pl] == '\0' || (ps[pl] == '/' && ps[pl + 1] == '\0'))) {
		snprintf(err, cap, "upstream \"%s\": expected a port from 1 to 65535", uri);
		return -1;
	}
	snprintf(port, sizeof(port), "%lu", pv);

	struct addrinfo hints, *res = NULL, *ai;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (bracket ? AI_NUMERICHOST : 0);
	int gr = getaddrinfo(host, port, &hints, &res);
	if (gr != 0) {
		snprintf(err, cap, "upstream \"%s\": cannot resolve \"%s\": %s", uri, host,
			 gai_strerror(gr));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(struct sockaddr_storage))
			continue;
		u->addrs = log_xrealloc(u->addrs, (u->naddrs + 1) * sizeof(*u->addrs));
		memset(&u->addrs[u->naddrs], 0, sizeof(*u->addrs));
		memcpy(&u->addrs[u->naddrs].sa, ai->ai_addr, ai->ai_addrlen);
		u->addrs[u->naddrs].len = ai->ai_addrlen;
		u->naddrs++;
	}
	freeaddrinfo(res);
	if (u->naddrs == 0) {
		snprintf(err, cap, "upstream \"%s\": \"%s\" has no IPv4 or IPv6 address", uri, host);
		return -1;
	}
	u->tcp = 1;
	size_t nl = strlen("fcgi://[]:65535") + hl + 1;
	u->name = log_xrealloc(NULL, nl);
	snprintf(u->name, nl, "fcgi://%s%s%s:%s", bracket ? "[" : "", host,
		 bracket ? "]" : "", port);
	return 0;
}

struct upstream *
upstream_new(const char *uri, char *err, size_t errcap)
{
	struct upstream *u = log_xrealloc(NULL, sizeof(*u));
	int r;

	memset(u, 0, sizeof(*u));
	atomic_init(&u->idle_max, UPSTREAM_IDLE_MAX);
	if (pthread_mutex_init(&u->mu, NULL) != 0) {
		free(u);
		snprintf(err, errcap, "upstream \"%s\": cannot create a mutex", uri);
		return NULL;
	}
	if (strncmp(uri, "fcgi+unix://", 12) == 0)
		r = parse_unix(u, uri, uri + 12, err, errcap);
	else if (strncmp(uri, "unix:", 5) == 0)
		r = parse_unix(u, uri, uri + 5, err, errcap);
	else if (uri[0] == '/')
		r = parse_unix(u, uri, uri, err, errcap);
	else if (strncmp(uri, "fcgi://", 7) == 0)
		r = parse_tcp(u, uri, uri + 7, err, errcap);
	else {
		snprintf(err, errcap, "upstream \"%s\": expected fcgi://HOST:PORT, "
			 "fcgi+unix:///PATH, unix:/PATH or /PATH", uri);
		r = -1;
	}
	if (r != 0)
		goto fail;
	return u;
fail:
	upstream_free(u);
	return NULL;
}

void
upstream_free(struct upstream *u)
{
	if (u == NULL)
		return;
	for (size_t i = 0; i < u->nidle; i++)
		close(u->idle[i]);
	pthread_mutex_destroy(&u->mu);
	free(u->addrs);
	free(u->name);
	free(u);
}

void
upstream_set_log(struct upstream *u, struct log *log)
{
	u->log = log;
}

void
upstream_set_idle_max(struct upstream *u, size_t n)
{
	int drop[UPSTREAM_IDLE_MAX];
	size_t ndrop = 0;

	if (n > UPSTREAM_IDLE_MAX)
		n = UPSTREAM_IDLE_MAX;
	pthread_mutex_lock(&u->mu);
	atomic_store(&u->idle_max, n);
	while (u->nidle > n)
		drop[ndrop++] = u->idle[--u->nidle];
	pthread_mutex_unlock(&u->mu);
	for (size_t i = 0; i < ndrop; i++)
		close(drop[i]);
}

const char *
upstream_name(const struct upstream *u)
{
	return u->name;
}

void
upstream_stats(const struct upstream *u, uint64_t *connects, uint64_t *reuses,
	       uint64_t *failures)
{
	/* The mutex is not part of u's value: locking it through a const
	 * pointer is fine. */
	struct upstream *mu = (struct upstream *)u;

	pthread_mutex_lock(&mu->mu);
	*connects = u->connects;
	*reuses = u->reuses;
	*failures = u->failures;
	pthread_mutex_unlock(&mu->mu);
}

/* ------------------------------------------------------------------ */
/* Time and connections                                                */

/* poll's timeout until deadline (INT64_MAX: none): -1 forever, 0 passed. */
static int
wait_ms(int64_t deadline)
{
	if (deadline == INT64_MAX)
		return -1;
	int64_t left = deadline - clock_mono_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* A pooled connection is usable when it has nothing to read and no EOF. */
static int
conn_idle_ok(int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A live pooled connection, or -1. */
static int
pool_get(struct upstream *u)
{
	for (;;) {
		pthread_mutex_lock(&u->mu);
		if (u->nidle == 0) {
			pthread_mutex_unlock(&u->mu);
			return -1;
		}
		int fd = u->idle[--u->nidle];
		pthread_mutex_unlock(&u->mu);
		if (conn_idle_ok(fd))
			return fd;
		close(fd);
	}
}

static void
pool_put(struct upstream *u, int fd)
{
	if (!conn_idle_ok(fd)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&u->mu);
	if (u->nidle < atomic_load(&u->idle_max)) {
		u->idle[u->nidle++] = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&u->mu);
	if (fd >= 0)
		close(fd);
}

/* Close a connection in the middle of a request: with a reset, so that
 * neither side keeps unsent bytes (an application that stopped reading
 * would otherwise hold our request body, and our FIN behind it, in the
 * kernel), and the application sees at once that the request is gone. */
static void
conn_abort(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void
count(struct upstream *u, uint64_t *field)
{
	pthread_mutex_lock(&u->mu);
	(*field)++;
	pthread_mutex_unlock(&u->mu);
}

/* Connect to one address before deadline.  Returns the fd, or -1 with why
 * set (and *timed_out when the deadline passed). */
static int
connect_addr(const struct uaddr *a, int tcp, int64_t deadline, char *why,
	     size_t cap, int *timed_out)
{
	int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		snprintf(why, cap, "socket: %s", strerror(errno));
		return -1;
	}
	if (tcp) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (connect(fd, (const struct sockaddr *)&a->sa, a->len) == 0)
		return fd;
	if (errno == EAGAIN && !tcp) {
		snprintf(why, cap, "the socket's listen queue is full");
		goto fail;
	}
	if (errno != EINPROGRESS && errno != EINTR) {
		snprintf(why, cap, "%s", strerror(errno));
		goto fail;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int w = wait_ms(deadline);
		int r = w == 0 ? 0 : poll(&pfd, 1, w);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(why, cap, "poll: %s", strerror(errno));
			goto fail;
		}
		if (r == 0) {
			snprintf(why, cap, "timed out");
			*timed_out = 1;
			goto fail;
		}
		break;
	}
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
		soerr = errno;
	if (soerr != 0) {
		snprintf(why, cap, "%s", strerror(soerr));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* ------------------------------------------------------------------ */
/* One request                                                         */

/* Bytes waiting to go to the application: [off, len) of p. */
struct obuf {
	unsigned char *p;
	size_t off, len, cap;
};

static unsigned char *
obuf_reserve(struct obuf *b, size_t n)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n > b->cap) {
		size_t ncap = b->cap ? b->cap : 4096;
		while (ncap < b->len + n)
			ncap *= 2;
		b->p = log_xrealloc(b->p, ncap);
		b->cap = ncap;
	}
	return b->p + b->len;
}

static void
obuf_add(struct obuf *b, const void *s, size_t n)
{
	memcpy(obuf_reserve(b, n), s, n);
	b->len += n;
}

static void
rec_header(unsigned char *h, unsigned type, size_t clen)
{
	h[0] = FCGI_VERSION_1;
	h[1] = (unsigned char)type;
	h[2] = (REQUEST_ID >> 8) & 0xff;
	h[3] = REQUEST_ID & 0xff;
	h[4] = (unsigned char)((clen >> 8) & 0xff);
	h[5] = (unsigned char)(clen & 0xff);
	h[6] = 0;       /* no padding */
	h[7] = 0;
}

/* The stream s[0..n) as records of type, plus the empty record that ends
 * it. */
static void
add_stream(struct obuf *b, unsigned type, const unsigned char *s, size_t n)
{
	unsigned char h[FCGI_HEADER_LEN];

	while (n > 0) {
		size_t k = n > FCGI_MAX_CONTENT ? FCGI_MAX_CONTENT : n;
		rec_header(h, type, k);
		obuf_add(b, h, sizeof(h));
		obuf_add(b, s, k);
		s += k;
		n -= k;
	}
	rec_header(h, type, 0);
	obuf_add(b, h, sizeof(h));
}

static void
nv_len(struct obuf *b, size_t n)
{
	unsigned char l[4];

	if (n < 128) {
		l[0] = (unsigned char)n;
		obuf_add(b, l, 1);
		return;
	}
	l[0] = (unsigned char)(((n >> 24) & 0x7f) | 0x80);
	l[1] = (unsigned char)((n >> 16) & 0xff);
	l[2] = (unsigned char)((n >> 8) & 0xff);
	l[3] = (unsigned char)(n & 0xff);
	obuf_add(b, l, 4);
}

static void
nv_pair(struct obuf *b, const char *name, size_t nl, const char *value,
	size_t vl)
{
	nv_len(b, nl);
	nv_len(b, vl);
	obuf_add(b, name, nl);
	obuf_add(b, value, vl);
}

struct xfer {
	struct upstream *u;
	const struct proxy_spec *spec;
	struct proxy_client *c;
	struct proxy_result *res;
	int64_t deadline;       /* monotonic ms; INT64_MAX: none */
	/* The client's body: kept across a retry. */
	uint64_t body_in;
	int body_eof;           /* the client's body has ended */
	/* This connection. */
	struct obuf out;
	int stdin_ended;        /* the empty FCGI_STDIN is queued */
	int wdead;              /* a write failed: send nothing more */
	int werr;
	int in_any;             /* a byte came back */
	unsigned char hdr[FCGI_HEADER_LEN];
	size_t hdr_have;
	unsigned rtype;
	size_t clen, plen;      /* of the current record, left */
	unsigned char endb[8];
	size_t end_have;
	int ended;              /* a complete FCGI_END_REQUEST */
	int trailing;           /* bytes after it */
	struct proxy_head head;
	struct respond_buf hb;  /* the rendered head, or our error answer */
	char errline[UPSTREAM_STDERR_LINE_MAX + 1];
	size_t errlen;
	/* The request's FCGI_STDERR lines: logged, then (past
	 * UPSTREAM_STDERR_LINES_MAX) dropped and counted, text bytes without
	 * the line ends.  Kept across a retry, which happens only before any
	 * byte came back. */
	unsigned err_logged;
	uint64_t err_dropped, err_dropped_bytes;
};

/* How one attempt on a connection ended. */
enum outcome {
	OUT_GOING = 0,          /* not yet */
	OUT_OK,                 /* END_REQUEST: the answer is complete */
	OUT_FAIL,               /* the application failed; res->error says how */
	OUT_CLOSED,             /* closed or reset before a byte came back */
	OUT_TOO_LARGE,          /* the body exceeds max_body */
	OUT_GONE,               /* the client went away */
};

static enum outcome
fail(struct xfer *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static enum outcome
fail(struct xfer *x, const char *fmt, ...)
{
	va_list ap;

	if (x->res->error[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(x->res->error, sizeof(x->res->error), fmt, ap);
		va_end(ap);
	}
	return OUT_FAIL;
}

/* BEGIN_REQUEST and the PARAMS stream, queued. */
static void
queue_request(struct xfer *x, const struct rl_param *params, size_t nparams)
{
	const struct proxy_spec *s = x->spec;
	struct obuf nv = { 0 };
	unsigned char h[FCGI_HEADER_LEN], body[8] = { 0 };

	rec_header(h, FCGI_BEGIN_REQUEST, sizeof(body));
	body[0] = (FCGI_RESPONDER >> 8) & 0xff;
	body[1] = FCGI_RESPONDER & 0xff;
	body[2] = atomic_load(&x->u->idle_max) > 0 ? FCGI_KEEP_CONN : 0;
	obuf_add(&x->out, h, sizeof(h));
	obuf_add(&x->out, body, sizeof(body));

	for (size_t i = 0; i < nparams; i++) {
		const struct rl_param *p = &params[i];
		int skip = p->name_len == 10 && strncasecmp(p->name, "HTTP_PROXY", 10) == 0;
		for (size_t j = 0; !skip && j < s->nextra_env; j++) {
			const char *e = s->extra_env[j];
			if (e == NULL)
				continue;
			const char *eq = strchr(e, '=');
			size_t el = eq ? (size_t)(eq - e) : strlen(e);
			skip = el == p->name_len && memcmp(e, p->name, el) == 0;
		}
		if (skip || p->name_len > FCGI_MAX_NVLEN || p->value_len > FCGI_MAX_NVLEN)
			continue;
		nv_pair(&nv, p->name, p->name_len, p->value ? p->value : "",
			p->value ? p->value_len : 0);
	}
	for (size_t j = 0; j < s->nextra_env; j++) {
		const char *e = s->extra_env[j];
		if (e == NULL)
			continue;
		const char *eq = strchr(e, '=');
		size_t el = eq ? (size_t)(eq - e) : strlen(e);
		const char *v = eq ? eq + 1 : "";
		nv_pair(&nv, e, el, v, strlen(v));
	}
	add_stream(&x->out, FCGI_PARAMS, nv.p, nv.len);
	free(nv.p);
	/* No body (lighttpd's CONTENT_LENGTH 0, a GET's): its end goes in
	 * the same write.  Sent after the params were, as for a body, it
	 * came too late for an application that answers before reading its
	 * input (a libfcgi one that never calls FCGX_GetStr): the answer
	 * ended before the request did, and the connection could not be
	 * kept (a connect and a close per request, found by strace) */
	if (s->no_body) {
		rec_header(h, FCGI_STDIN, 0);
		obuf_add(&x->out, h, sizeof(h));
		x->body_eof = 1;
		x->stdin_ended = 1;
	}
}

/* A fresh connection's state (the client's body state is kept). */
static void
xfer_reset_conn(struct xfer *x)
{
	x->out.off = x->out.len = 0;
	x->stdin_ended = 0;
	x->wdead = 0;
	x->werr = 0;
	x->in_any = 0;
	x->hdr_have = 0;
	x->clen = x->plen = 0;
	x->end_have = 0;
	x->ended = 0;
	x->trailing = 0;
	proxy_head_free(&x->head);
	x->errlen = 0;
	x->res->error[0] = '\0';
}

static int
client_write(struct xfer *x, const char *p, size_t n)
{
	if (n == 0)
		return 0;
	if (proxy_write(x->c, p, n, &x->deadline) != 0) {
		x->res->client_gone = 1;
		return -1;
	}
	return 0;
}

/* One line of the application's stderr to the log, while the request has
 * logged fewer than UPSTREAM_STDERR_LINES_MAX: an application that floods
 * its stderr must not flood the log (one line per line, unbounded, from
 * every request), nor spend the gateway's time writing it. */
static void
stderr_flush(struct xfer *x)
{
	size_t n = x->errlen;

	if (n > 0 && x->errline[n - 1] == '\r')
		n--;
	x->errlen = 0;
	if (n == 0 || x->u->log == NULL)
		return;
	if (x->err_logged < UPSTREAM_STDERR_LINES_MAX) {
		x->err_logged++;
		/* which request's: with several upstreams (upstream= per
		 * rule) the admin must see whose line it is; a NUL would end
		 * the text there, so it is written as a space */
		for (size_t i = 0; i < n; i++)
			if (x->errline[i] == '\0')
				x->errline[i] = ' ';
		log_printf(x->u->log, LOG_LEVEL_WARN, "upstream-stderr", "%s: %.*s",
			   x->spec->what ? x->spec->what : x->u->name,
			   (int)n, x->errline);
	} else {
		x->err_dropped++;
		x->err_dropped_bytes += n;
	}
}

/* At the end of the request: how much of its stderr was not logged. */
static void
stderr_dropped(const struct xfer *x)
{
	if (x->err_dropped == 0 || x->u->log == NULL)
		return;
	log_printf(x->u->log, LOG_LEVEL_WARN, "upstream-stderr-dropped",
		   "%s: %llu more lines (%llu bytes) of a request's stderr not logged: at most %d a request",
		   x->u->name, (unsigned long long)x->err_dropped,
		   (unsigned long long)x->err_dropped_bytes, UPSTREAM_STDERR_LINES_MAX);
}

static void
on_stderr(struct xfer *x, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			stderr_flush(x);
			continue;
		}
		if (x->errlen == UPSTREAM_STDERR_LINE_MAX)
			stderr_flush(x);
		x->errline[x->errlen++] = (char)p[i];
	}
}

static enum outcome
on_stdout(struct xfer *x, const unsigned char *data, size_t n)
{
	const char *p = (const char *)data;

	if (!x->head.done) {
		char msg[160];
		size_t used = 0;
		int r = proxy_head_feed(&x->head, p, n, &used, msg, sizeof(msg));
		if (r < 0)
			return fail(x, "malformed response head from the application: %s", msg);
		if (r == 0)
			return OUT_GOING;
		proxy_head_render(&x->head, x->spec->extra_headers,
				  x->spec->extra_len, &x->hb);
		respond_buf_add(&x->hb, p + used, n - used);
		x->res->status = x->head.status;
		x->res->head_sent = 1;
		x->res->body_out += n - used;
		if (client_write(x, x->hb.data, x->hb.len) != 0)
			return OUT_GONE;
		return OUT_GOING;
	}
	x->res->body_out += n;
	return client_write(x, p, n) != 0 ? OUT_GONE : OUT_GOING;
}

static const char *
protocol_status_name(unsigned s)
{
	switch (s) {
	case FCGI_CANT_MPX_CONN: return "FCGI_CANT_MPX_CONN (it cannot take another request on this connection)";
	case FCGI_OVERLOADED: return "FCGI_OVERLOADED (it is out of resources)";
	case FCGI_UNKNOWN_ROLE: return "FCGI_UNKNOWN_ROLE (it is not a responder)";
	default: return NULL;
	}
}

static enum outcome
on_end(struct xfer *x)
{
	unsigned ps = x->endb[4];

	stderr_flush(x);
	if (ps != FCGI_REQUEST_COMPLETE) {
		const char *n = protocol_status_name(ps);
		if (n != NULL)
			return fail(x, "the application rejected the request: %s", n);
		return fail(x, "the application ended the request with unknown protocol status %u", ps);
	}
	if (!x->head.done) {
		if (x->head.len == 0)
			return fail(x, "the application ended the request without a response");
		return fail(x, "the application ended the request before its response head was complete");
	}
	x->ended = 1;
	return OUT_GOING;
}

static enum outcome
check_header(struct xfer *x)
{
	const unsigned char *h = x->hdr;
	unsigned id = (unsigned)h[2] << 8 | h[3];

	x->rtype = h[1];
	x->clen = (size_t)h[4] << 8 | h[5];
	x->plen = h[6];
	if (h[0] != FCGI_VERSION_1)
		return fail(x, "malformed FastCGI record from the application (version %u, expected 1)",
			    h[0]);
	if (x->rtype == FCGI_UNKNOWN_TYPE)
		return fail(x, "the application answered FCGI_UNKNOWN_TYPE (it does not speak FastCGI 1.0 as we do)");
	if (x->rtype != FCGI_STDOUT && x->rtype != FCGI_STDERR &&
	    x->rtype != FCGI_END_REQUEST)
		return fail(x, "unexpected FastCGI record type %u from the application", x->rtype);
	if (id != REQUEST_ID)
		return fail(x, "FastCGI record for request %u from the application, expected %u",
			    id, REQUEST_ID);
	if (x->rtype == FCGI_END_REQUEST && x->clen != sizeof(x->endb))
		return fail(x, "malformed FCGI_END_REQUEST from the application (%zu bytes, expected 8)",
			    x->clen);
	x->end_have = 0;
	return OUT_GOING;
}

/* Feed bytes from the application to the record parser. */
static enum outcome
feed(struct xfer *x, const unsigned char *p, size_t n)
{
	enum outcome o;

	while (!x->ended) {
		if (x->hdr_have < FCGI_HEADER_LEN) {
			if (n == 0)
				break;
			size_t k = FCGI_HEADER_LEN - x->hdr_have;
			if (k > n)
				k = n;
			memcpy(x->hdr + x->hdr_have, p, k);
			x->hdr_have += k;
			p += k;
			n -= k;
			if (x->hdr_have < FCGI_HEADER_LEN)
				break;
			if ((o = check_header(x)) != OUT_GOING)
				return o;
		}
		if (x->clen > 0) {
			if (n == 0)
				break;
			size_t k = x->clen < n ? x->clen : n;
			if (x->rtype == FCGI_STDOUT) {
				if ((o = on_stdout(x, p, k)) != OUT_GOING)
					return o;
			} else if (x->rtype == FCGI_STDERR) {
				on_stderr(x, p, k);
			} else {
				memcpy(x->endb + x->end_have, p, k);
				x->end_have += k;
			}
			p += k;
			n -= k;
			x->clen -= k;
			if (x->clen > 0)
				continue;
		}
		if (x->plen > 0) {
			if (n == 0)
				break;
			size_t k = x->plen < n ? x->plen : n;
			p += k;
			n -= k;
			x->plen -= k;
			if (x->plen > 0)
				continue;
		}
		/* The record is complete. */
		if (x->rtype == FCGI_END_REQUEST && (o = on_end(x)) != OUT_GOING)
			return o;
		x->hdr_have = 0;
	}
	if (x->ended && n > 0)
		x->trailing = 1;
	return OUT_GOING;
}

static const char *
phase(const struct xfer *x)
{
	if (x->head.done)
		return "while reading the response body";
	if (!x->stdin_ended || x->out.off < x->out.len)
		return "while sending the request";
	return "waiting for the response head";
}

static enum outcome
do_read(struct xfer *x, int fd, int err_event)
{
	unsigned char buf[READ_CHUNK];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);

	if (n > 0) {
		x->in_any = 1;
		return feed(x, buf, (size_t)n);
	}
	if (n < 0 && (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && !err_event)))
		return OUT_GOING;
	int e = n < 0 ? errno : 0;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		socklen_t sl = sizeof(e);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0 || e == 0)
			e = EIO;
	}
	const char *what = e == 0 ? "closed the connection" : "reset the connection";
	char detail[96] = "";
	if (e != 0)
		snprintf(detail, sizeof(detail), " (%s)", strerror(e));
	else if (x->wdead)
		snprintf(detail, sizeof(detail), " (sending: %s)", strerror(x->werr));
	if (!x->in_any) {
		fail(x, "the application %s without answering%s", what, detail);
		return OUT_CLOSED;
	}
	if (!x->head.done)
		return fail(x, "the application %s before its response head was complete%s",
			    what, detail);
	return fail(x, "the application %s before FCGI_END_REQUEST%s: response body cut short",
		    what, detail);
}

/* The socket is writable and nothing is queued: queue the next piece of
 * the body, or the empty FCGI_STDIN that ends it. */
static enum outcome
next_body(struct xfer *x)
{
	const struct proxy_spec *s = x->spec;
	unsigned char h[FCGI_HEADER_LEN];

	if (!x->body_eof && s->content_length > 0 && x->body_in >= s->content_length)
		x->body_eof = 1;
	if (!x->body_eof) {
		size_t cap = BODY_CHUNK;
		if (s->content_length > 0 && s->content_length - x->body_in < cap)
			cap = (size_t)(s->content_length - x->body_in);
		unsigned char *p = obuf_reserve(&x->out, FCGI_HEADER_LEN + cap);
		long n = proxy_read(x->c, (char *)p + FCGI_HEADER_LEN, cap,
				    &x->deadline);
		if (n < 0 || (size_t)n > cap) {
			x->res->client_gone = 1;
			fail(x, "client went away while sending the request body");
			return OUT_GONE;
		}
		if (n == 0 && s->content_length > 0) {
			/* The web server's stream ended early: the client is gone,
			 * and a cut body must never look complete to the app. */
			x->res->client_gone = 1;
			fail(x, "request body ended after %llu of %llu bytes",
			     (unsigned long long)x->body_in,
			     (unsigned long long)s->content_length);
			return OUT_GONE;
		}
		if (n == 0) {
			x->body_eof = 1;
		} else {
			if (s->max_body > 0 && x->body_in + (uint64_t)n > s->max_body)
				return OUT_TOO_LARGE;   /* the chunk is not passed on */
			x->body_in += (uint64_t)n;
			rec_header(p, FCGI_STDIN, (size_t)n);
			x->out.len += FCGI_HEADER_LEN + (size_t)n;
			if (s->content_length > 0 && x->body_in >= s->content_length)
				x->body_eof = 1;
		}
	}
	if (x->body_eof) {
		rec_header(h, FCGI_STDIN, 0);
		obuf_add(&x->out, h, sizeof(h));
		x->stdin_ended = 1;
	}
	return OUT_GOING;
}

static enum outcome
do_write(struct xfer *x, int fd)
{
	if (x->out.off == x->out.len) {
		enum outcome o = next_body(x);
		if (o != OUT_GOING)
			return o;
	}
	ssize_t n = send(fd, x->out.p + x->out.off, x->out.len - x->out.off,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n >= 0) {
		x->out.off += (size_t)n;
		return OUT_GOING;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return OUT_GOING;
	/* Keep reading: an application that answered and closed early has
	 * its answer waiting for us; otherwise the read sees the close. */
	x->wdead = 1;
	x->werr = errno;
	x->out.off = x->out.len = 0;
	return OUT_GOING;
}

/* Run the request on connection fd until it ends one way or another. */
static enum outcome
exchange(struct xfer *x, int fd)
{
	/* The request's head at once: a new or kept connection can nearly
	 * always take it, and waiting to be told so costs a poll */
	if (x->out.off < x->out.len) {
		enum outcome o = do_write(x, fd);
		if (o != OUT_GOING)
			return o;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int want_out = !x->wdead && (x->out.off < x->out.len || !x->stdin_ended);
		if (want_out)
			pfd.events |= POLLOUT;
		/* with the body passed on, the web server's connection:
		 * readable when it aborts the request or hangs up */
		struct pollfd both[2] = { pfd, {
			.fd = proxy_watch_fd(x->c, x->stdin_ended),
			.events = POLLIN | POLLRDHUP } };
		int w = wait_ms(x->deadline);
		int r = w == 0 ? 0 : poll(both, 2, w);
		pfd.revents = both[0].revents;
		if (both[1].fd >= 0 && both[1].revents != 0 && proxy_gave_up(x->c)) {
			x->res->client_gone = 1;
			fail(x, "the web server gave up on the request %s",
			     x->res->head_sent ? "during the response" :
			     "while the application was working on it");
			return OUT_GONE;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(x, "poll: %s", strerror(errno));
		if (r == 0)
			return fail(x, "the application timed out after %lld ms %s",
				    (long long)x->spec->timeout_ms, phase(x));
		enum outcome o;
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			o = do_read(x, fd, !(pfd.revents & POLLIN));
			if (o != OUT_GOING)
				return o;
			if (x->ended)
				return OUT_OK;
		}
		if (want_out && (pfd.revents & POLLOUT) && !(pfd.revents & POLLERR)) {
			o = do_write(x, fd);
			if (o != OUT_GOING)
				return o;
		}
	}
}

/* A new connection: each address in turn.  Returns the fd or -1 with
 * res->error set. */
static int
connect_new(struct xfer *x)
{
	struct upstream *u = x->u;
	char why[128] = "no address";
	int timed_out = 0;

	for (size_t i = 0; i < u->naddrs && !timed_out; i++) {
		int fd = connect_addr(&u->addrs[i], u->tcp, x->deadline, why,
				      sizeof(why), &timed_out);
		if (fd >= 0) {
			count(u, &u->connects);
			return fd;
		}
	}
	if (timed_out)
		fail(x, "connect to %s: timed out after %lld ms", u->name,
		     (long long)x->spec->timeout_ms);
	else
		fail(x, "connect to %s: %s", u->name, why);
	return -1;
}

/* REQUEST_METHOD is idempotent (RFC 9110, 9.2.2): running it twice is
 * like running it once. */
static int
idempotent(const struct rl_param *params, size_t nparams)
{
	static const char *const safe[] = { "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE" };

	for (size_t i = 0; i < nparams; i++) {
		const struct rl_param *p = &params[i];
		if (p->name_len != 14 || memcmp(p->name, "REQUEST_METHOD", 14) != 0)
			continue;
		for (size_t k = 0; k < sizeof(safe) / sizeof(safe[0]); k++)
			if (p->value != NULL && p->value_len == strlen(safe[k]) &&
			    memcmp(p->value, safe[k], p->value_len) == 0)
				return 1;
		return 0;
	}
	return 0;
}

/* Our own answer when nothing of the application's reached the client:
 * the same bytes as cgi.c's. */
static int
answer_error(struct xfer *x, int status)
{
	if (status == 413)
		respond_too_large(&x->hb, x->spec->error_format);
	else
		respond_bad_gateway(&x->hb, x->spec->error_format);
	x->res->status = status;
	x->res->head_sent = 1;
	return client_write(x, x->hb.data, x->hb.len);
}

int
upstream_run(struct upstream *u, const struct rl_param *params, size_t nparams,
	     const struct proxy_spec *spec, struct proxy_client *c,
	     struct proxy_result *res)
{
	struct xfer x;
	enum outcome o = OUT_FAIL;
	int fd = -1, ret = 0;

	memset(res, 0, sizeof(*res));
	memset(&x, 0, sizeof(x));
	x.u = u;
	x.spec = spec;
	x.c = c;
	x.res = res;
	x.deadline = spec->timeout_ms > 0 ? clock_mono_ms() + spec->timeout_ms : INT64_MAX;
	proxy_head_init(&x.head);
	respond_buf_init(&x.hb);

	if (proxy_declared_too_large(spec, res)) {
		ret = answer_error(&x, 413);
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		int reused = 0;
		if (attempt == 0 && (fd = pool_get(u)) >= 0) {
			reused = 1;
			count(u, &u->reuses);
		} else if ((fd = connect_new(&x)) < 0) {
			o = OUT_FAIL;
			break;
		}
		queue_request(&x, params, nparams);
		o = exchange(&x, fd);
		if (o == OUT_CLOSED && reused && x.body_in == 0 &&
		    (x.wdead || idempotent(params, nparams))) {
			/* A kept connection the application had closed, or
			 * closed on this request before answering a byte: sent
			 * once more on a new connection, as nginx does for
			 * idempotent methods.  An application that took the
			 * request and then died on it runs it twice, so say so
			 * (the second attempt's failure, if any, is the
			 * request's upstream-error line). */
			if (u->log != NULL)
				log_printf(u->log, LOG_LEVEL_WARN, "upstream-retry",
					   "%s: %s; sent again on a new connection",
					   u->name, res->error);
			conn_abort(fd);
			fd = -1;
			xfer_reset_conn(&x);
			continue;
		}
		break;
	}

	switch (o) {
	case OUT_OK:
		if (x.stdin_ended && x.out.off == x.out.len && !x.wdead && !x.trailing) {
			if (atomic_load(&u->idle_max) > 0)
				pool_put(u, fd);
			else
				close(fd);
			fd = -1;
		}
		break;
	case OUT_TOO_LARGE:
		res->too_large = 1;
		snprintf(res->error, sizeof(res->error),
			 "request body exceeds max_body (%llu bytes)%s",
			 (unsigned long long)spec->max_body,
			 res->head_sent ? "; response body cut short" : "");
		if (!res->head_sent)
			ret = answer_error(&x, 413);
		break;
	case OUT_GONE:
		res->client_gone = 1;
		if (res->error[0] == '\0')
			snprintf(res->error, sizeof(res->error), "client went away %s",
				 res->head_sent ? "during the response"
						: "before the response was sent");
		ret = -1;
		break;
	default:        /* OUT_FAIL, OUT_CLOSED */
		count(u, &u->failures);
		if (!res->head_sent)
			ret = answer_error(&x, 502);
		break;
	}
out:
	if (fd >= 0)
		conn_abort(fd);
	stderr_flush(&x);       /* a last line without its newline */
	stderr_dropped(&x);
	res->body_in = x.body_in;
	proxy_head_free(&x.head);
	respond_buf_free(&x.hb);
	free(x.out.p);
	return ret;
}
