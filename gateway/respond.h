/*
 * respond.h - the gateway's answers, written as CGI/FastCGI header blocks
 * ("Status: 429 Too Many Requests\r\nRetry-After: 30\r\n...\r\n\r\nbody")
 * into a growable buffer.  The module does no I/O: fcgi.c (and later the
 * responder and CGI modes) sends the bytes, and the unit tests compare them
 * exactly.
 *
 * What each decision becomes (the authorizer role):
 *
 *   RL_ALLOW        Status: 200 OK, with Variable-RL_* facts for the
 *                   application (the web server turns Variable-X into the
 *                   environment variable X) and, with `headers on`, the
 *                   X-RateLimit-* headers.  lighttpd drops every header of an
 *                   allowing authorizer except Variable-*; Apache
 *                   mod_authnz_fcgi adds them to the client's response
 *                   (duplicating any the application also sends); mod_fcgid
 *                   leaks Variable-* to the client as well.
 *   RL_DENY         Status: 429 Too Many Requests (always with the reason
 *                   phrase: nginx leaves it empty otherwise), Retry-After,
 *                   X-RateLimit-* (with `headers on`), the IETF fields (when
 *                   asked for), Cache-Control: no-store, and the rule's
 *                   message as text/plain or JSON.
 *   RL_DENY_KEY     429 as well (the rule said missing-key=deny, or there is
 *                   no client address): the same body, but no Retry-After and
 *                   no X-RateLimit-*, since no amount of waiting helps.
 *   RL_BAD_REQUEST  400 Bad Request (the path is not a path).
 *   (Behind Apache a text body that Apache would read as a URL -- one
 *   starting with '/' or with "word:" -- gets a leading space; see
 *   respond_opts.apache.)
 *   RL_STORE_ERROR  503 Service Unavailable with Retry-After:
 *                   RESPOND_STORE_RETRY_S.  The gateway fails closed.
 *
 * Header values never carry request bytes unfiltered: every value passes
 * through a filter that turns anything outside printable ASCII (CR, LF,
 * other control bytes, bytes >= 0x7f) into '?'.
 */
#ifndef GATEWAY_RESPOND_H
#define GATEWAY_RESPOND_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

/* Retry-After of a 503 sent when the store fails, seconds: long enough not
 * to hammer a store that is restarting, short enough not to stall clients. */
#define RESPOND_STORE_RETRY_S 5
/* Longest header value written; longer values are cut (bytes). */
#define RESPOND_VALUE_MAX 512

/* A growable byte buffer.  Zero-initialise it (or respond_buf_init); the
 * response functions reset and refill it.  Out of memory aborts (gateway
 * policy: log_xrealloc). */
struct respond_buf {
	char *data;             /* NUL-terminated after every append */
	size_t len;
	size_t cap;
};

void respond_buf_init(struct respond_buf *b);
void respond_buf_free(struct respond_buf *b);   /* NULL-safe */
void respond_buf_reset(struct respond_buf *b);
void respond_buf_add(struct respond_buf *b, const char *s, size_t len);

/* How answers look; from the rule set's settings. */
struct respond_opts {
	int headers;            /* `headers on`: X-RateLimit-Limit/-Remaining/-Reset */
	/* The IETF fields of draft-ietf-httpapi-ratelimit-headers-11:
	 *   RateLimit-Policy: "NAME";q=COUNT;w=PERIOD_S
	 *   RateLimit: "NAME";r=REMAINING;t=SECONDS
	 * NAME is the rule's scope, "default" or "application".  Off until the
	 * rule set's `ietf-headers on` (default off). */
	int ietf_headers;
	enum rl_retry_format retry_after;
	/* The request came from Apache (it sends FCGI_APACHE_ROLE).
	 * mod_authnz_fcgi hands a denial's body to ap_custom_response, which
	 * reads a text starting with '/' as a local URL and one starting with
	 * "word:" as a URL to redirect to (a 500 for the client); such a text
	 * body gets a leading space there.  Set per request. */
	int apache;
	/* The status of a denial (RL_DENY, RL_DENY_KEY); 0: 429.  nginx
	 * auth_request passes on 2xx, 401 and 403 only (a 429 becomes a 500),
	 * so behind it a denial goes out as 403 with every header of the 429,
	 * for nginx's error_page 403 to turn back into a 429.  Set per
	 * request. */
	int deny_status;
	/* nginx auth_request: an allowed answer also carries
	 * `Rategate-Decision: allow`, which the example configuration hands
	 * back as RATEGATE_DECIDED when nginx asks again about the same
	 * request after an internal redirect (fcgi.c authorize()).  Set per
	 * request. */
	int auth_request;
};

void respond_opts_from_settings(struct respond_opts *o,
				const struct rl_settings *s);

enum respond_format { RESPOND_TEXT = 0, RESPOND_JSON };

/* Pick the body format from an Accept header value (NULL: none).  JSON
 * when application/json gets a higher q-value than text/plain, or the same
 * non-zero q-value through a more specific media range ("application/json,
 * * / *" without the spaces).  Matching is the RFC 9110 one: the most
 * specific range naming a type decides its q; q=0 means "not acceptable";
 * an element with a malformed q is ignored. */
enum respond_format respond_negotiate(const char *accept, size_t len);

/* Whole seconds from now_ms until the absolute time at_ms, rounded up; 0
 * when at_ms is not in the future.  This is what X-RateLimit-Reset and the
 * IETF "t" carry: a delta, like Retry-After, so no client clock is
 * involved. */
int64_t respond_seconds_until(int64_t at_ms, int64_t now_ms);

/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") of the Unix time t
 * (seconds); out needs 30 bytes.  Locale-independent. */
void respond_http_date(int64_t t, char *out, size_t cap);

/* Append the rate-limit headers of d (X-RateLimit-* when o->headers, the
 * IETF fields when o->ietf_headers; nothing when d has no deciding limit).
 * On a denial RateLimit's t is the Retry-After value, as the draft asks;
 * otherwise the seconds until the limit resets. */
void respond_ratelimit_headers(struct respond_buf *b,
			       const struct respond_opts *o,
			       const struct rl_decision *d, int64_t now_ms);

/* The authorizer's whole answer to decision d made at now_ms.  Resets b.
 * Returns the HTTP status written (200, 429 or o->deny_status, 400, 413 or
 * 503). */
int respond_authorizer(struct respond_buf *b, const struct respond_opts *o,
		       const struct rl_decision *d, int64_t now_ms,
		       enum respond_format f);

/* The one 413 (max-body, whether known from Content-Length or found while
 * streaming) and the one 502 (the application failed before its head) of
 * every mode, so clients see the same bytes whichever back end ran.  The
 * reason for a 502 goes to the log, never to the client.  Return the
 * status. */
int respond_too_large(struct respond_buf *b, enum respond_format f);
int respond_bad_gateway(struct respond_buf *b, enum respond_format f);

/* The RFC 9110 reason phrase of a status code ("Not Found"), or "" for a
 * code without one here. */
const char *respond_reason(int status);

/* A plain error answer: status 400, 413, 500, 502 or 503 with its reason
 * phrase, Retry-After when retry_s > 0, Cache-Control: no-store, and a
 * body made of message (text) or {"error":code,"message":message} (JSON).
 * Resets b.  Returns status. */
int respond_error(struct respond_buf *b, int status, int64_t retry_s,
		  const char *code, const char *message, enum respond_format f);

#endif
