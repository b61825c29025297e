/*
 * log.h - the gateway's log: one logfmt line per denial and per error, on
 * standard error (for a process lighttpd spawns: server.breakagelog, or
 * lighttpd's own stderr without it) or appended to a file (-L).
 *
 *   time=2026-11-23T08:26:48.123Z level=info event=deny status=429
 *   client=192.0.2.7 key="addr=192.0.2.7" rule=/login origin=rule
 *   limit=5/minute remaining=0 path=/login method=POST retry_after=42
 *
 * (one line).  Values holding a space, '=', '"', '\' or a control byte are
 * quoted with "\"", "\\", "\n", "\t" and "\xNN" escapes, so a client cannot
 * forge a field or a line.  Request text (path, method) is cut at
 * LOG_FIELD_MAX bytes with "..." appended.  The query string is never
 * logged (it may carry tokens), and key values that come from a header, a
 * cookie or the query are replaced by a hash (see log_key), so secrets
 * such as API keys never reach the log.
 *
 * Thread-safe: a line is built on the caller's stack and written with one
 * write(2) under a mutex, so lines of concurrent workers never interleave.
 * Never blocking: on a pipe, socket or terminal a line is written only when
 * it fits at once, else dropped and counted; the next line that goes
 * through is followed by event=log-dropped with the count (see emit).
 */
#ifndef GATEWAY_LOG_H
#define GATEWAY_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

#define LOG_LINE_MAX 2048       /* one line, bytes, newline included */
#define LOG_FIELD_MAX 200       /* longest request-derived value logged, bytes */
#define LOG_KEY_MAX 160         /* longest key logged, bytes */

enum log_level { LOG_LEVEL_INFO = 0, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

struct log;

/* Log to path (appended, created 0640), or to standard error when path is
 * NULL or "-".  Returns NULL with a message in err when the file cannot be
 * opened. */
struct log *log_new(const char *path, char *err, size_t errcap);
/* Opens the -L file again by its path (after a log rotation moved it, or
 * its directory was removed and made again) and writes there from now on;
 * nothing for standard error.  Returns 0, or -1 with a message in err (the
 * old file is kept then). */
int log_reopen(struct log *l, char *err, size_t errcap);
void log_free(struct log *l);   /* NULL-safe; never closes stderr */

/* `log-format json`: each line one JSON object with the same fields, in
 * the same order, as the logfmt line ({"time":"...","level":"info",
 * "event":"deny","status":429,...}); numbers as JSON numbers, strings
 * escaped, invalid UTF-8 replaced by U+FFFD.  Set before the workers
 * start, or on reload (a line in progress keeps its format). */
void log_set_json(struct log *l, int json);

/* Writes one line "time=... level=error event=EVENT msg=\"MSG\"" (or its
 * JSON form; msg written as given: no quotes or control bytes in it) with
 * nothing but async-signal-safe calls, for a fatal signal's handler, and
 * never waits for the reader; no mutex, so it may interleave with a line
 * being written. */
void log_fatal(struct log *l, const char *event, const char *msg);

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when s does not
 * start with one (overlongs, surrogates and values past U+10FFFF are not
 * valid). */
size_t log_utf8_len(const unsigned char *s, size_t n);

/* A request's path for a message: path cut at LOG_FIELD_MAX bytes into
 * buf, or "-" when there is none (rl_request.path never holds the query,
 * which is never logged). */
const char *log_path(const char *path, size_t len, char buf[LOG_FIELD_MAX + 1]);

/* The bad-request line of a CONTENT_LENGTH that is not a number (answered
 * 400 before any decision): method, path, the peer addr and the value. */
void log_bad_content_length(struct log *l, const struct rl_request *rq,
			    const char *addr, const char *cl);

/* A rule whose deduct-when= or concurrency= only the responder mode can
 * honour, used where it cannot: "rule R (F:L): deduct-when= and
 * concurrency= need the responder mode; HERE DEDUCT_DOES and
 * CONCURRENCY_DOES" (each part only for the options the rule has). */
void log_responder_only(struct log *l, const char *event,
			const struct rl_rule *r, const char *here,
			const char *deduct_does, const char *concurrency_does);

/* time=... level=... event=EVENT msg="formatted text" */
void log_printf(struct log *l, enum log_level level, const char *event,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* What the log needs of a request besides its decision. */
struct log_request {
	const char *method;     /* NULL: "-" */
	const char *path;       /* raw, without the query; may be NULL */
	size_t path_len;
	int64_t now_ms;
};

/* The line for a decision answered with HTTP status: event deny (429),
 * deny-key (429, no usable key), dry-run-deny (allowed, but a dry-run limit
 * would have denied), bad-request (400), too-large (413, the body over
 * max-body) or store-error (503, with the store's message).  Writes nothing for a plain allow. */
void log_decision(struct log *l, const struct log_request *r,
		  const struct rl_decision *d, int status);

/* A line about a decided request that is not its decision (event
 * client-timeout: the web server stalled while the request was served):
 * status, client, key, rule, path and method as log_decision writes them,
 * then msg.  d may be NULL (no decision: client, key and rule are "-"). */
void log_request_event(struct log *l, enum log_level level, const char *event,
		       const struct log_request *r, const struct rl_decision *d,
		       int status, const char *msg);

/* The client key as logged: parts from a header ("h."), a cookie ("c.") or
 * the query ("q.") keep their label and name but their value becomes
 * "#" and 16 hex digits of a 64-bit FNV-1a hash, e.g.
 * "h.x-api-key=#5d2c0e0a0b8a7f31+addr=192.0.2.7"; the result is cut at
 * LOG_KEY_MAX bytes.  The hash lets one client's lines be matched up
 * without printing the secret; it is not a defence against guessing a
 * low-entropy value.  out needs LOG_KEY_MAX + 4 bytes. */
void log_key(const char *key, char *out, size_t cap);

/* realloc that logs to stderr and aborts when memory runs out: the
 * gateway's one out-of-memory policy (the library returns errors instead). */
void *log_xrealloc(void *p, size_t n);

#endif
