/*
 * upstream.h - the FastCGI client of the responder proxy: an allowed
 * request goes on to an upstream FastCGI application (php-fpm, any libfcgi
 * program) over a unix or TCP socket, in the RESPONDER role, and the
 * application's answer streams back to the web server through a
 * proxy_client (see proxy.h for what both back ends share).
 *
 * One struct upstream is one address and its pool of idle connections
 * (FCGI_KEEP_CONN); it is thread-safe, so every worker thread proxies
 * through the same one.  Each upstream_run holds one connection of its own
 * for the request, one request per connection at a time (requestId 1), and
 * gives it back to the pool only after a clean FCGI_END_REQUEST.
 *
 * Failures always end in a complete answer for the client: our 502 (or
 * 413) when nothing of the application's reached the client yet, else a
 * body cut short; proxy_result.error says what went wrong in one line.
 * See upstream.c for the policies (retries, pooling, timeouts).
 */
#ifndef GATEWAY_UPSTREAM_H
#define GATEWAY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "proxy.h"

/* Idle connections kept per upstream by default, and at most; one more is
 * closed on return. */
#define UPSTREAM_IDLE_MAX 64
/* Longest FCGI_STDERR line logged, bytes; longer lines are split. */
#define UPSTREAM_STDERR_LINE_MAX 512
/* FCGI_STDERR lines logged per request, at most: the rest are counted, and
 * one line at the end of the request says how many (and their bytes). */
#define UPSTREAM_STDERR_LINES_MAX 20

struct upstream;

/* Parse uri and resolve its host name (once, here: a name that does not
 * resolve is a load error; reload re-resolves).  Accepted:
 *   fcgi://127.0.0.1:9000   fcgi://[::1]:9000   fcgi://localhost:9000
 *   fcgi+unix:///run/app.sock   unix:/run/app.sock   /run/app.sock
 * A TCP port is required (1..65535); one trailing "/" is allowed after it.
 * A name with several addresses is tried in order on each connect.  Does
 * not connect (the first request does).  Returns NULL with a one-line
 * message in err for a bad URI. */
struct upstream *upstream_new(const char *uri, char *err, size_t errcap);
/* NULL-safe; closes the idle connections.  No upstream_run may be in
 * progress. */
void upstream_free(struct upstream *u);

/* Where the application's FCGI_STDERR lines go: one log line each (level
 * warn, event upstream-stderr), the first UPSTREAM_STDERR_LINES_MAX of a
 * request; then, at its end, one line (event upstream-stderr-dropped)
 * saying how many more there were and their bytes.  NULL (the default):
 * dropped.  Set before the first upstream_run; the log must outlive u. */
void upstream_set_log(struct upstream *u, struct log *log);

/* Keep at most n idle connections (clamped to UPSTREAM_IDLE_MAX); 0: ask
 * for no FCGI_KEEP_CONN and close after every request.  May be called at
 * any time: idle connections beyond n are closed at once, and a request
 * in flight keeps its connection only if there is room when it ends.
 *
 * Sizing: libfcgi programs and php-fpm give a worker to a connection for
 * as long as it stays open, idle or not.  So the connections open at once
 * -- at most one per gateway thread proxying to this upstream -- must not
 * outnumber the application's workers (php-fpm pm.max_children), or the
 * requests on the connections beyond them wait unaccepted until they time
 * out.  With fewer workers than gateway threads, use 0. */
void upstream_set_idle_max(struct upstream *u, size_t n);

/* The URI as canonically written ("fcgi://127.0.0.1:9000",
 * "fcgi+unix:///run/app.sock"), for logs.  Owned by u. */
const char *upstream_name(const struct upstream *u);

/* Proxy one request.  The application gets the FastCGI RESPONDER role
 * with FCGI_KEEP_CONN (unless idle_max is 0); params are the request's (minus HTTP_PROXY, the
 * httpoxy header, and minus any name that spec->extra_env sets) followed by
 * spec->extra_env; the body is read from c->read (at most
 * spec->content_length bytes when that is > 0, else until read returns 0)
 * and sent as FCGI_STDIN while the answer is read, so an application may
 * answer before it reads the body.  The answer's head is re-rendered with
 * spec->extra_headers (proxy_head_render) and its body streamed to
 * c->write.
 *
 * Returns 0 when the client got a whole answer (the application's, or our
 * 502 / 413 made by respond_error in spec->error_format) or, after a
 * failure once the head was sent, as much of the body as there was (then
 * res->error is set); -1 when the client went away (c->read or c->write
 * returned -1, or the body ended before content_length: res->client_gone,
 * res->error says which).  res is always filled: status is what the client
 * got (0 when nothing reached it). */
int upstream_run(struct upstream *u, const struct rl_param *params,
		 size_t nparams, const struct proxy_spec *spec,
		 struct proxy_client *c, struct proxy_result *res);

/* Counters since upstream_new: connections opened, requests that started
 * on a pooled connection, and requests the application failed (our 502, or
 * a body cut short after the head; a 413 or a client that went away is not
 * the application's failure). */
void upstream_stats(const struct upstream *u, uint64_t *connects,
		    uint64_t *reuses, uint64_t *failures);

#endif
