/*
 * proxy.h - what the responder's two back ends share: the CGI runner
 * (cgi.c: fork/exec of a legacy CGI script) and the FastCGI upstream client
 * (upstream.c: php-fpm or any libfcgi application).
 *
 *   struct proxy_client   the web server's side of one request: read the
 *                         request body, write the response (both streamed);
 *   struct proxy_head     the parser of the response head an application
 *                         writes ("Status: 404 Not Found\r\nContent-Type:
 *                         text/html\r\n\r\n"), fed incrementally;
 *   struct proxy_result   what happened, for the log, deduct-when and the
 *                         statistics.
 *
 * Both back ends send a complete response in every case: the application's
 * (its head re-rendered by proxy_head_render, with the rate-limit headers
 * added, then its body as it streams), or, when the application fails
 * before its head is complete (crash, timeout, malformed head, connection
 * refused), one of ours made by respond_error: 502 Bad Gateway (504 is not
 * used: the brief asks for 502 on timeouts too, and web servers log both the
 * same way), or 413 Content Too Large when the body exceeds max_body while
 * streaming.  A failure after the head was sent can only cut the body
 * short; it is reported in proxy_result.error.
 *
 * Ownership: nothing here keeps a pointer past the call that received it,
 * except proxy_head, which owns its buffer until proxy_head_free.
 */
#ifndef GATEWAY_PROXY_H
#define GATEWAY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "respond.h"
#include "rules.h"

/* What the bytes on a watched web-server connection were (see
 * proxy_client.aborted). */
enum proxy_watch {
	PROXY_WATCH_OTHER = 0,  /* something else: stop watching */
	PROXY_WATCH_GONE,       /* the web server gave up on the request */
	PROXY_WATCH_AGAIN,      /* the record that ends the request body,
				   sent after its last byte, now taken off
				   the connection: go on watching */
};

/* The web server's side of one proxied request. */
struct proxy_client {
	void *ctx;
	/* Up to cap bytes of the request body: returns the number read (> 0),
	 * 0 at its end, or -1 when the client went away. */
	long (*read)(void *ctx, char *buf, size_t cap);
	/* Response bytes in order (head, then body).  Returns 0, or -1 when
	 * the client went away (the back end then stops the application). */
	int (*write)(void *ctx, const char *buf, size_t len);
	/* Optional (NULL: the back end does not watch).  Once the whole body
	 * has been read, the back end polls watch()'s fd (-1: none), which
	 * becomes readable when the web server gives up on the request; then
	 * aborted() says PROXY_WATCH_GONE when it did (it aborted the request
	 * or closed the connection: the back end stops the application at
	 * once, as for a client gone, instead of running it to the end or to
	 * the timeout), PROXY_WATCH_AGAIN when the bytes were the late end of
	 * the body, taken (the fd is watched on), or PROXY_WATCH_OTHER when
	 * they are something else (the fd is then no longer watched). */
	int (*watch)(void *ctx);
	enum proxy_watch (*aborted)(void *ctx);
	int unwatched;          /* set by proxy_gave_up; 0 at the start */
};

/* c->read and c->write for the back ends: the time they take is the web
 * server's (bounded by the gateway's client-timeout), not the
 * application's, so *deadline (monotonic ms; 0 or INT64_MAX: none) moves
 * on by it. */
long proxy_read(struct proxy_client *c, char *buf, size_t cap,
		int64_t *deadline);
int proxy_write(struct proxy_client *c, const char *buf, size_t len,
		int64_t *deadline);

/* The fd to poll, besides the application's, for a web server that gives
 * up on the request: c's watch() once the body is read (body_done), -1
 * before, without one, or once proxy_gave_up said 0. */
int proxy_watch_fd(const struct proxy_client *c, int body_done);

/* proxy_watch_fd's fd was readable: 1 when the web server gave up (stop
 * the application, as for a client gone); 0 when it did not: the late end
 * of the body was taken and the fd is still watched, or the bytes are
 * something else and it is not watched any more. */
int proxy_gave_up(struct proxy_client *c);

/* How one request is proxied; the same for both back ends. */
struct proxy_spec {
	int64_t timeout_ms;     /* from start to last byte, less the time
				   spent waiting for the web server (its read
				   and write) */
	uint64_t max_body;      /* request body bytes; 0: no limit */
	uint64_t content_length; /* CONTENT_LENGTH as the web server gave it;
				    0 when absent (a chunked body, or none) */
	int no_body;            /* the web server said CONTENT_LENGTH 0: the
				   body's end goes out with the params, not
				   after its end record was read */
	/* Extra header lines for the response head, each "Name: value\r\n"
	 * (the rate-limit headers); may be NULL.  Already filtered: they go
	 * out as they are. */
	const char *extra_headers;
	size_t extra_len;
	/* Extra variables for the application, "NAME=value" each (the
	 * resolved client and the decision, RL_CLIENT=...); may be NULL. */
	const char *const *extra_env;
	size_t nextra_env;
	enum respond_format error_format; /* body of our own 502/413 */
	/* "GET /path from CLIENT -> UPSTREAM", for log lines about the
	 * request made by the back end (the application's stderr); may be
	 * NULL. */
	const char *what;
};

/* What happened.  status is what the client got: the application's status,
 * or ours (413, 502).  error is empty when all went well, else one line for
 * the log ("script exited with signal 11 before its header was complete"). */
struct proxy_result {
	int status;
	int head_sent;          /* a head reached the client */
	int client_gone;        /* the client went away */
	int too_large;          /* the request body exceeded max_body (the
				 * client's doing, whether or not a head
				 * had gone out) */
	uint64_t body_in;       /* request body bytes passed to the application */
	uint64_t body_out;      /* response body bytes passed to the client */
	char error[256];
};

/* A CONTENT_LENGTH above max_body, known before the application is
 * started or asked: 1 with res->too_large and res->error set (the caller
 * answers 413 without running it), else 0.  Both back ends. */
int proxy_declared_too_large(const struct proxy_spec *spec,
			     struct proxy_result *res);

/* ------------------------------------------------------------------ */
/* Response heads                                                      */

#define PROXY_HEAD_MAX (64u * 1024)     /* longest response head, bytes */

/* CGI/1.1 (RFC 3875, 6.2) response head parser.  Lines end in LF or CRLF;
 * the head ends at the first empty line.  Each line is "Name: value" with a
 * token name; obsolete line folding, a line without a colon, a NUL or a bare
 * CR inside a line is malformed.  The status is the Status header's
 * ("Status: 404" or "Status: 404 Not Found", 200..599: a 1xx interim
 * status is malformed, it is no final answer), else 302 with a Location
 * header, else 200.  A bare local "Location: /path" (RFC 3875's local
 * redirect response) is no exception: rategate has no internal redirects,
 * it goes to the client as a 302.  A head with none of Status, Location
 * and Content-Type is malformed (RFC 3875 requires one). */
struct proxy_head {
	char *buf;              /* the head's bytes so far (owned) */
	size_t len, cap;
	int done;
	int status;
	char reason[64];        /* the Status header's reason phrase, or "" */
};

void proxy_head_init(struct proxy_head *h);
void proxy_head_free(struct proxy_head *h);     /* keeps h reusable */

/* Feed len bytes of the application's output.  Returns 1 when the head is
 * complete (then *used is the number of bytes of data that belonged to it;
 * the rest is the start of the body), 0 when it needs more (all of data was
 * taken), or -1 when it is malformed or longer than PROXY_HEAD_MAX (msg
 * says why). */
int proxy_head_feed(struct proxy_head *h, const char *data, size_t len,
		    size_t *used, char *msg, size_t msgcap);

/* The head as sent to the web server (a FastCGI responder's or CGI
 * program's output): "Status: CODE REASON\r\n", the application's header
 * lines except Status and except those extra also names, in order, with
 * CRLF endings, then extra (the rate-limit headers: rategate's replace an
 * application's own X-RateLimit-*), then "\r\n".  Resets out. */
void proxy_head_render(const struct proxy_head *h, const char *extra,
		       size_t extra_len, struct respond_buf *out);

#endif
