/*
 * fuzz_head.c - libFuzzer target for the response-head parser of
 * gateway/proxy.c (an application's CGI head, from a CGI script or a
 * FastCGI application) and for proxy_head_render, which turns it into what
 * the web server gets.  The first byte picks the size of the pieces the
 * rest is fed in (1..255 bytes, as a slow application writes), the rest is
 * the application's output.  Checks:
 *   - the parse in pieces agrees with the parse in one piece: the same
 *     answer, and for a complete head the same bytes used, status and
 *     reason, and the same rendered head;
 *   - "needs more" takes every byte given, a complete head uses no more
 *     than it was given, its status is 200..599 (a 1xx is malformed);
 *   - the rendered head starts with "Status: ", every line ends in CRLF,
 *     there is no other CR or LF and no NUL, it ends with an empty line,
 *     and every other line is "Name: value" with a token name: whatever the
 *     application wrote, it cannot split the response or inject a line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_headcheck.h"
#include "proxy.h"
#include "respond.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char extra[] = "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n";

/* Feeds d[0..n) in pieces of chunk bytes; the parser's answer, with the
 * bytes the head used in *used. */
static int
parse(const char *d, size_t n, size_t chunk, struct proxy_head *h,
      size_t *used)
{
	char msg[256];
	size_t off = 0;

	*used = 0;
	while (off < n) {
		size_t k = n - off < chunk ? n - off : chunk, u = 0;
		msg[0] = '\0';
		int r = proxy_head_feed(h, d + off, k, &u, msg, sizeof msg);
		if (r < 0) {
			if (msg[0] == '\0')
				abort();        /* a refusal says why */
			return r;
		}
		if (r == 1) {
			if (u > k)
				abort();
			*used += u;
			return 1;
		}
		if (r != 0 || u != k)
			abort();                /* "more" takes everything */
		*used += u;
		off += k;
	}
	return 0;
}

/* The rendered head and nothing after it. */
static void
check_rendered(const struct respond_buf *b)
{
	if (fuzz_check_head(b->data, b->len) != b->len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_head whole, pieces;
	struct respond_buf b1, b2;
	size_t u1, u2;

	if (size == 0)
		return 0;
	size_t chunk = data[0] ? data[0] : 1;
	const char *d = (const char *)data + 1;
	size_t n = size - 1;

	proxy_head_init(&whole);
	proxy_head_init(&pieces);
	int r1 = parse(d, n, n ? n : 1, &whole, &u1);
	int r2 = parse(d, n, chunk, &pieces, &u2);
	if (r1 != r2)
		abort();
	if (r1 == 1) {
		if (u1 != u2 || whole.status != pieces.status ||
		    strcmp(whole.reason, pieces.reason) != 0)
			abort();
		if (whole.status < 200 || whole.status > 599)
			abort();
		respond_buf_init(&b1);
		respond_buf_init(&b2);
		proxy_head_render(&whole, extra, sizeof extra - 1, &b1);
		proxy_head_render(&pieces, extra, sizeof extra - 1, &b2);
		if (b1.len != b2.len || memcmp(b1.data, b2.data, b1.len) != 0)
			abort();
		check_rendered(&b1);
		/* and without rategate's headers */
		proxy_head_render(&whole, NULL, 0, &b1);
		check_rendered(&b1);
		respond_buf_free(&b1);
		respond_buf_free(&b2);
	}
	proxy_head_free(&whole);
	proxy_head_free(&pieces);
	return 0;
}
