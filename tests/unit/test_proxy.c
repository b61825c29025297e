/*
 * test_proxy.c - gateway/proxy.c, the response head parser: LF and CRLF
 * heads, the status from Status / Location / neither (a 1xx Status is
 * malformed: no final answer), every malformed kind
 * with its exact message, a head split across feeds at every byte
 * boundary, the PROXY_HEAD_MAX limit, the exact bytes render writes, and
 * what proxy_gave_up makes of each answer of a client's aborted().
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define S(lit) lit, sizeof(lit) - 1

struct head_case {
	int line;
	const char *in;
	size_t len;
	int rc;                 /* proxy_head_feed's answer to all of in */
	int status;
	const char *reason;
	size_t used;
	const char *msg;        /* the exact message when rc is -1 */
};

static const struct head_case cases[] = {
	{ __LINE__, S("Content-Type: text/html\n\nbody"), 1, 200, "", 25, NULL },
	{ __LINE__, S("Content-Type: text/html\r\n\r\nbody"), 1, 200, "", 27, NULL },
	{ __LINE__, S("Content-Type: a\n\r\n"), 1, 200, "", 18, NULL },
	{ __LINE__, S("Content-Type: a\r\n\n"), 1, 200, "", 18, NULL },
	{ __LINE__, S("content-type:text/plain\r\n\r\n"), 1, 200, "", 27, NULL },
	{ __LINE__, S("Status: 404\r\n\r\n"), 1, 404, "", 15, NULL },
	{ __LINE__, S("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nx"),
	  1, 404, "Not Found", 51, NULL },
	{ __LINE__, S("Status:201   Made  it \n\n"), 1, 201, "Made  it", 24, NULL },
	{ __LINE__, S("status: 500\n\n"), 1, 500, "", 13, NULL },
	{ __LINE__, S("Status: 200\n\n"), 1, 200, "", 13, NULL },
	{ __LINE__, S("Status: 599\n\n"), 1, 599, "", 13, NULL },
	{ __LINE__, S("Location: /x\r\n\r\n"), 1, 302, "", 16, NULL },
	{ __LINE__, S("Location: http://example.com/\r\nStatus: 301\r\n\r\n"),
	  1, 301, "", 46, NULL },
	{ __LINE__, S("Content-Type: text/plain\r\nX-Tab: a\tb\r\nX-High: caf\xc3\xa9\r\n\r\n"),
	  1, 200, "", 55, NULL },
	{ __LINE__, S("Content-Type: text/plain\r\nX-Empty:\r\n\r\n"), 1, 200, "", 38, NULL },
	/* incomplete: all taken */
	{ __LINE__, S("Content-Type: text/plain\r\n"), 0, 0, "", 26, NULL },
	{ __LINE__, S("Content-Type: text/plain\r\n\r"), 0, 0, "", 27, NULL },
	{ __LINE__, S(""), 0, 0, "", 0, NULL },
	/* malformed */
	{ __LINE__, S("X-Foo: bar\r\n\r\n"), -1, 0, "", 0,
	  "response head has none of Status, Location and Content-Type" },
	{ __LINE__, S("\r\nContent-Type: text/plain\r\n\r\n"), -1, 0, "", 0,
	  "empty response head (the output starts with an empty line)" },
	{ __LINE__, S("\n"), -1, 0, "", 0,
	  "empty response head (the output starts with an empty line)" },
	{ __LINE__, S("this is not a CGI head\n\n"), -1, 0, "", 0,
	  "malformed header line \"this is not a CGI head\" (expected \"Name: value\")" },
	{ __LINE__, S("Content-Type: a\r\nNo colon here at all and a very long line indeed\r\n\r\n"),
	  -1, 0, "", 0,
	  "malformed header line \"No colon here at all and a very long lin...\" (expected \"Name: value\")" },
	{ __LINE__, S("Content-Type : text/plain\r\n\r\n"), -1, 0, "", 0,
	  "malformed header line \"Content-Type : text/plain\" (expected \"Name: value\")" },
	{ __LINE__, S(": v\r\n\r\n"), -1, 0, "", 0,
	  "malformed header line \": v\" (expected \"Name: value\")" },
	{ __LINE__, S("Conte\0nt-Type: x\r\n\r\n"), -1, 0, "", 0,
	  "malformed header line \"Conte\\x00nt-Type: x\" (expected \"Name: value\")" },
	{ __LINE__, S("Content-\"Type\": x\r\n\r\n"), -1, 0, "", 0,
	  "malformed header line \"Content-\\\"Type\\\": x\" (expected \"Name: value\")" },
	{ __LINE__, S("Content-Type: a\r\n b\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: obsolete line folding (a line starting with white space)" },
	{ __LINE__, S("Content-Type: a\r\n\tb\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: obsolete line folding (a line starting with white space)" },
	{ __LINE__, S("Content-Type: a\x01" "b\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: control byte 0x01 in the value of Content-Type" },
	{ __LINE__, S("Set-Cookie: secret\rX\r\nContent-Type: a\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: control byte 0x0d in the value of Set-Cookie" },
	{ __LINE__, S("Content-Type: a\0b\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: control byte 0x00 in the value of Content-Type" },
	{ __LINE__, S("Content-Type: a\x7f\r\n\r\n"), -1, 0, "", 0,
	  "malformed header: control byte 0x7f in the value of Content-Type" },
	/* a 1xx is an interim response, never the answer: malformed too */
	{ __LINE__, S("Status: 100\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"100\" (an interim 1xx status; expected a final code from 200 to 599)" },
	{ __LINE__, S("Status: 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"101 Switching Protocols\" (an interim 1xx status; expected a final code from 200 to 599)" },
	{ __LINE__, S("Content-Type: text/html\r\nStatus: 103 Early Hints\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"103 Early Hints\" (an interim 1xx status; expected a final code from 200 to 599)" },
	{ __LINE__, S("Status: 199\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"199\" (an interim 1xx status; expected a final code from 200 to 599)" },
	{ __LINE__, S("Status: 99\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"99\" (expected a code from 200 to 599)" },
	{ __LINE__, S("Status: 600 Big\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"600 Big\" (expected a code from 200 to 599)" },
	{ __LINE__, S("Status: 2000\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"2000\" (expected a code from 200 to 599)" },
	{ __LINE__, S("Status: abc\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"abc\" (expected a code from 200 to 599)" },
	{ __LINE__, S("Status:\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"\" (expected a code from 200 to 599)" },
	{ __LINE__, S("Status: 404Not Found\r\n\r\n"), -1, 0, "", 0,
	  "malformed Status header \"404Not Found\" (expected a code from 200 to 599)" },
};

Test(proxy_head, table)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct head_case *t = &cases[i];
		struct proxy_head h;
		size_t used = 12345;
		char msg[256] = "";

		proxy_head_init(&h);
		int rc = proxy_head_feed(&h, t->in, t->len, &used, msg, sizeof(msg));
		cr_expect_eq(rc, t->rc, "line %d: rc %d, expected %d (%s)", t->line, rc, t->rc, msg);
		if (rc == 1) {
			cr_expect_eq(h.status, t->status, "line %d: status %d", t->line, h.status);
			cr_expect_str_eq(h.reason, t->reason, "line %d: reason \"%s\"", t->line, h.reason);
			cr_expect_eq(h.done, 1, "line %d", t->line);
		}
		if (rc >= 0)
			cr_expect_eq(used, t->used, "line %d: used %zu, expected %zu", t->line, used, t->used);
		if (rc < 0)
			cr_expect_str_eq(msg, t->msg, "line %d: message \"%s\"", t->line, msg);
		proxy_head_free(&h);
	}
}

/* Feed in[0..k) then in[k..len) for every k; the outcome, the status and
 * where the body starts must not depend on k.  Byte by byte too. */
static void
split_everywhere(int line, const char *in, size_t len, int rc_want,
		 int status_want, size_t body_at)
{
	for (size_t k = 0; k <= len; k++) {
		struct proxy_head h;
		size_t used;
		char msg[256] = "";
		size_t at;

		proxy_head_init(&h);
		int rc = proxy_head_feed(&h, in, k, &used, msg, sizeof(msg));
		if (rc == 1) {
			at = used;
		} else if (rc == 0) {
			cr_expect_eq(used, k, "line %d split %zu", line, k);
			rc = proxy_head_feed(&h, in + k, len - k, &used, msg, sizeof(msg));
			at = k + used;
		} else {
			at = 0;
		}
		cr_expect_eq(rc, rc_want, "line %d split %zu: rc %d (%s)", line, k, rc, msg);
		if (rc == 1) {
			cr_expect_eq(h.status, status_want, "line %d split %zu", line, k);
			cr_expect_eq(at, body_at, "line %d split %zu: body at %zu", line, k, at);
			/* Done: more output is body, not head. */
			rc = proxy_head_feed(&h, "X", 1, &used, msg, sizeof(msg));
			cr_expect_eq(rc, 1);
			cr_expect_eq(used, 0);
		}
		proxy_head_free(&h);
	}

	struct proxy_head h;
	size_t used, i;
	char msg[256];
	int rc = 0;

	proxy_head_init(&h);
	for (i = 0; i < len && rc == 0; i++)
		rc = proxy_head_feed(&h, in + i, 1, &used, msg, sizeof(msg));
	cr_expect_eq(rc, rc_want, "line %d byte by byte", line);
	if (rc == 1) {
		cr_expect_eq(h.status, status_want, "line %d byte by byte", line);
		cr_expect_eq(i - 1 + used, body_at, "line %d byte by byte", line);
	}
	proxy_head_free(&h);
}

Test(proxy_head, split_at_every_byte)
{
	split_everywhere(__LINE__, S("Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\n<p>body</p>\r\n\r\n"),
			 1, 404, 50);
	split_everywhere(__LINE__, S("Content-Type: text/html\n\nbody\n\n"), 1, 200, 25);
	split_everywhere(__LINE__, S("Location: /x\n\r\nbody"), 1, 302, 15);
	split_everywhere(__LINE__, S("Content-Type: a\r\nbroken line\r\n\r\nbody"), -1, 0, 0);
	split_everywhere(__LINE__, S("\r\n\r\n"), -1, 0, 0);
}

/* "Content-Type: text/plain\r\nX-Pad: aaa...\r\n\r\n" of exactly total
 * bytes, then tail. */
static char *
big_head(size_t total, const char *tail, size_t *len)
{
	static const char pre[] = "Content-Type: text/plain\r\nX-Pad: ";
	size_t tl = strlen(tail);
	size_t pad = total - (sizeof(pre) - 1) - 4;
	char *s = malloc(total + tl + 1);

	memcpy(s, pre, sizeof(pre) - 1);
	memset(s + sizeof(pre) - 1, 'a', pad);
	memcpy(s + total - 4, "\r\n\r\n", 4);
	memcpy(s + total, tail, tl + 1);
	*len = total + tl;
	return s;
}

Test(proxy_head, size_limit)
{
	struct proxy_head h;
	size_t len, used;
	char msg[256] = "";
	char *s;

	/* Exactly PROXY_HEAD_MAX bytes, in one feed and with a body after it. */
	s = big_head(PROXY_HEAD_MAX, "body", &len);
	proxy_head_init(&h);
	cr_assert_eq(proxy_head_feed(&h, s, len, &used, msg, sizeof(msg)), 1, "%s", msg);
	cr_assert_eq(used, PROXY_HEAD_MAX);
	proxy_head_free(&h);

	/* The same in 1000-byte feeds. */
	size_t pos = 0;
	int rc = 0;
	while (rc == 0 && pos < len) {
		size_t k = len - pos < 1000 ? len - pos : 1000;
		rc = proxy_head_feed(&h, s + pos, k, &used, msg, sizeof(msg));
		pos += rc == 1 ? used : k;
	}
	cr_assert_eq(rc, 1, "%s", msg);
	cr_assert_eq(pos, PROXY_HEAD_MAX);
	proxy_head_free(&h);
	free(s);

	/* One byte more is too long, whole or in pieces. */
	s = big_head(PROXY_HEAD_MAX + 1, "", &len);
	cr_assert_eq(proxy_head_feed(&h, s, len, &used, msg, sizeof(msg)), -1);
	cr_assert_str_eq(msg, "response head longer than 65536 bytes");
	proxy_head_free(&h);
	rc = 0;
	for (pos = 0; rc == 0 && pos < len; pos += 4096) {
		size_t k = len - pos < 4096 ? len - pos : 4096;
		rc = proxy_head_feed(&h, s + pos, k, &used, msg, sizeof(msg));
	}
	cr_assert_eq(rc, -1);
	cr_assert_str_eq(msg, "response head longer than 65536 bytes");
	proxy_head_free(&h);
	free(s);

	/* A head that never ends. */
	s = malloc(PROXY_HEAD_MAX * 2);
	memset(s, 'a', PROXY_HEAD_MAX * 2);
	cr_assert_eq(proxy_head_feed(&h, s, PROXY_HEAD_MAX * 2, &used, msg, sizeof(msg)), -1);
	cr_assert_str_eq(msg, "response head longer than 65536 bytes");
	proxy_head_free(&h);
	free(s);
}

struct render_case {
	int line;
	const char *head;
	const char *extra;
	const char *want;
};

static const struct render_case renders[] = {
	{ __LINE__, "Content-Type: text/html\n\n", NULL,
	  "Status: 200 OK\r\nContent-Type: text/html\r\n\r\n" },
	{ __LINE__, "Content-Type: text/html\nStatus: 404 Not Found\nX-A: 1\n\n",
	  "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n",
	  "Status: 404 Not Found\r\nContent-Type: text/html\r\nX-A: 1\r\n"
	  "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n\r\n" },
	{ __LINE__, "status: 404\r\nContent-Type: text/plain\r\n\r\n", "",
	  "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n" },
	{ __LINE__, "Status: 201 Made\r\nStatus: 202\r\nContent-Type: a\r\n\r\n", NULL,
	  "Status: 202 Accepted\r\nContent-Type: a\r\n\r\n" },
	{ __LINE__, "Location: /x\r\n\r\n", "X-RateLimit-Limit: 10\r\n",
	  "Status: 302 Found\r\nLocation: /x\r\nX-RateLimit-Limit: 10\r\n\r\n" },
	{ __LINE__, "Status: 299\r\nContent-Type: a\r\n\r\n", NULL,
	  "Status: 299\r\nContent-Type: a\r\n\r\n" },
	{ __LINE__, "Status: 299 Custom\r\nX-Status: kept\r\nContent-Type: a\r\n\r\n", NULL,
	  "Status: 299 Custom\r\nX-Status: kept\r\nContent-Type: a\r\n\r\n" },
	/* the application's own rate-limit headers give way to rategate's */
	{ __LINE__, "Content-Type: a\nx-ratelimit-limit: 5\nX-RateLimit-Limited: kept\nX-RateLimit-Remaining: 4\n\n",
	  "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n",
	  "Status: 200 OK\r\nContent-Type: a\r\nX-RateLimit-Limited: kept\r\n"
	  "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n\r\n" },
	{ __LINE__, "Content-Type: text/plain\r\nX-Empty:\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n", NULL,
	  "Status: 200 OK\r\nContent-Type: text/plain\r\nX-Empty:\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n" },
};

Test(proxy_head, render)
{
	struct respond_buf out;

	respond_buf_init(&out);
	respond_buf_add(&out, "old bytes", 9);
	for (size_t i = 0; i < sizeof(renders) / sizeof(renders[0]); i++) {
		const struct render_case *t = &renders[i];
		struct proxy_head h;
		size_t used;
		char msg[256] = "";

		proxy_head_init(&h);
		cr_assert_eq(proxy_head_feed(&h, t->head, strlen(t->head), &used, msg, sizeof(msg)), 1,
			     "line %d: %s", t->line, msg);
		proxy_head_render(&h, t->extra, t->extra ? strlen(t->extra) : 0, &out);
		cr_expect_str_eq(out.data, t->want, "line %d:\n%s", t->line, out.data);
		cr_expect_eq(out.len, strlen(t->want), "line %d", t->line);
		proxy_head_free(&h);
	}
	respond_buf_free(&out);
}

Test(proxy_head, reusable_after_free)
{
	struct proxy_head h;
	size_t used;
	char msg[256] = "";

	proxy_head_init(&h);
	cr_assert_eq(proxy_head_feed(&h, S("garbage\n\n"), &used, msg, sizeof(msg)), -1);
	proxy_head_free(&h);
	cr_assert_eq(proxy_head_feed(&h, S("Status: 204\n\n"), &used, msg, sizeof(msg)), 1);
	cr_assert_eq(h.status, 204);
	proxy_head_free(&h);
	proxy_head_free(&h);
}

/* ------------------------------------------------------------------ */
/* Watching the web server's connection                                */

static enum proxy_watch watch_answer;

static int
watch_fd(void *ctx)
{
	(void)ctx;
	return 7;
}

static enum proxy_watch
watch_aborted(void *ctx)
{
	(void)ctx;
	return watch_answer;
}

/* Gone stops the application; the late end of the body, taken, keeps the
 * fd watched; anything else ends the watch. */
Test(proxy_watch, gave_up)
{
	static const struct {
		enum proxy_watch answer;
		int gave_up, fd_after;
		int line;
	} watches[] = {
		{ PROXY_WATCH_GONE, 1, 7, __LINE__ },
		{ PROXY_WATCH_AGAIN, 0, 7, __LINE__ },
		{ PROXY_WATCH_OTHER, 0, -1, __LINE__ },
	};

	for (size_t i = 0; i < sizeof(watches) / sizeof(watches[0]); i++) {
		struct proxy_client c = { .watch = watch_fd, .aborted = watch_aborted };
		cr_expect_eq(proxy_watch_fd(&c, 0), -1, "line %d: watched before the body's end",
			     watches[i].line);
		cr_expect_eq(proxy_watch_fd(&c, 1), 7, "line %d", watches[i].line);
		watch_answer = watches[i].answer;
		cr_expect_eq(proxy_gave_up(&c), watches[i].gave_up, "line %d", watches[i].line);
		cr_expect_eq(proxy_watch_fd(&c, 1), watches[i].fd_after, "line %d", watches[i].line);
	}
	struct proxy_client none = { 0 };
	cr_expect_eq(proxy_watch_fd(&none, 1), -1, "no watch()");
}
