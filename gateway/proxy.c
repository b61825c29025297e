/*
 * proxy.c - the response head parser shared by the CGI runner and the
 * FastCGI upstream client (see proxy.h).
 *
 * The head is collected whole (at most PROXY_HEAD_MAX bytes) before
 * anything reaches the client, so a malformed head becomes our 502 instead
 * of half an answer.  Lines are checked as they complete; the status comes
 * from Status (200..599: a 1xx is malformed), else Location (302), else
 * 200.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "log.h"
#include "proxy.h"

static void
web_server_time(int64_t *deadline, int64_t t0)
{
	if (*deadline != 0 && *deadline != INT64_MAX)
		*deadline += clock_mono_ms() - t0;
}

long
proxy_read(struct proxy_client *c, char *buf, size_t cap, int64_t *deadline)
{
	int64_t t0 = clock_mono_ms();
	long n = c->read(c->ctx, buf, cap);

	web_server_time(deadline, t0);
	return n;
}

int
proxy_write(struct proxy_client *c, const char *buf, size_t len,
	    int64_t *deadline)
{
	int64_t t0 = clock_mono_ms();
	int rc = c->write(c->ctx, buf, len);

	web_server_time(deadline, t0);
	return rc;
}

int
proxy_watch_fd(const struct proxy_client *c, int body_done)
{
	return body_done && !c->unwatched && c->watch != NULL ?
	       c->watch(c->ctx) : -1;
}

int
proxy_declared_too_large(const struct proxy_spec *spec,
			 struct proxy_result *res)
{
	if (spec->max_body == 0 || spec->content_length <= spec->max_body)
		return 0;
	res->too_large = 1;
	snprintf(res->error, sizeof(res->error),
		 "request body of %llu bytes exceeds max_body (%llu bytes)",
		 (unsigned long long)spec->content_length,
		 (unsigned long long)spec->max_body);
	return 1;
}

int
proxy_gave_up(struct proxy_client *c)
{
	switch (c->aborted(c->ctx)) {
	case PROXY_WATCH_GONE:
		return 1;
	case PROXY_WATCH_AGAIN:
		return 0;
	case PROXY_WATCH_OTHER:
		break;
	}
	c->unwatched = 1;
	return 0;
}

void
proxy_head_init(struct proxy_head *h)
{
	memset(h, 0, sizeof(*h));
}

void
proxy_head_free(struct proxy_head *h)
{
	free(h->buf);
	proxy_head_init(h);
}

/* RFC 9110 tchar. */
static int
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* The first QUOTE_MAX bytes of s, printable ASCII kept and the rest as
 * \xNN ('"' and '\' escaped too), "..." when cut: enough of an offending
 * line for the log to show what was wrong.  out needs QUOTE_CAP bytes. */
#define QUOTE_MAX 40
#define QUOTE_CAP (QUOTE_MAX * 4 + 4)
static const char *
quote(const char *s, size_t len, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < len && i < QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			snprintf(out + o, 5, "\\x%02x", c);
			o += 4;
		} else {
			out[o++] = (char)c;
		}
	}
	if (len > QUOTE_MAX) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}

/* One line without its ending.  Returns 0, or -1 with msg set.  Only the
 * name of a header with a bad value is quoted: values may be secrets
 * (Set-Cookie). */
static int
check_line(struct proxy_head *h, const char *s, size_t len, int *seen,
	   char *msg, size_t cap)
{
	char q[QUOTE_CAP];
	size_t i = 0;

	if (len > 0 && (s[0] == ' ' || s[0] == '\t')) {
		snprintf(msg, cap, "malformed header: obsolete line folding (a line starting with white space)");
		return -1;
	}
	while (i < len && is_tchar((unsigned char)s[i]))
		i++;
	if (i == 0 || i == len || s[i] != ':') {
		snprintf(msg, cap, "malformed header line \"%s\" (expected \"Name: value\")",
			 quote(s, len, q));
		return -1;
	}
	for (size_t j = i + 1; j < len; j++) {
		unsigned char c = (unsigned char)s[j];
		if (c == '\0' || c == '\r' || c == '\n' ||
		    (c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(msg, cap, "malformed header: control byte 0x%02x in the value of %s",
				 c, quote(s, i, q));
			return -1;
		}
	}
	const char *v = s + i + 1;
	size_t vl = len - i - 1;
	rl_trim(&v, &vl);
	if (i == 6 && strncasecmp(s, "Status", 6) == 0) {
		int code = 0;
		size_t k = 0;
		while (k < vl && k < 3 && v[k] >= '0' && v[k] <= '9')
			code = code * 10 + (v[k++] - '0');
		if (k != 3 || code < 100 || code > 599 ||
		    (k < vl && v[k] != ' ')) {
			snprintf(msg, cap, "malformed Status header \"%s\" (expected a code from 200 to 599)",
				 quote(v, vl, q));
			return -1;
		}
		/* A 1xx is an interim response: CGI has no way to send one
		 * before the answer, and passed on as the final status it
		 * would leave the client waiting for the real one. */
		if (code < 200) {
			snprintf(msg, cap, "malformed Status header \"%s\" (an interim 1xx status; expected a final code from 200 to 599)",
				 quote(v, vl, q));
			return -1;
		}
		h->status = code;
		const char *r = v + k;
		size_t rlen = vl - k;
		rl_trim(&r, &rlen);
		if (rlen >= sizeof(h->reason))
			rlen = sizeof(h->reason) - 1;
		memcpy(h->reason, r, rlen);
		h->reason[rlen] = '\0';
		*seen |= 1;
	} else if (i == 8 && strncasecmp(s, "Location", 8) == 0) {
		*seen |= 2;
	} else if (i == 12 && strncasecmp(s, "Content-Type", 12) == 0) {
		*seen |= 4;
	}
	return 0;
}

/* Check the whole head h->buf[0..end) (ending at the empty line). */
static int
check_head(struct proxy_head *h, size_t end, char *msg, size_t cap)
{
	int seen = 0;
	size_t pos = 0;

	h->status = 0;
	h->reason[0] = '\0';
	while (pos < end) {
		const char *nl = memchr(h->buf + pos, '\n', end - pos);
		size_t len = (size_t)(nl - (h->buf + pos));
		if (len > 0 && h->buf[pos + len - 1] == '\r')
			len--;
		if (len == 0)
			break;  /* the empty line */
		if (check_line(h, h->buf + pos, len, &seen, msg, cap) != 0)
			return -1;
		pos = (size_t)(nl - h->buf) + 1;
	}
	if (end <= 2) {
		snprintf(msg, cap, "empty response head (the output starts with an empty line)");
		return -1;
	}
	if (seen == 0) {
		snprintf(msg, cap, "response head has none of Status, Location and Content-Type");
		return -1;
	}
	if (h->status == 0)
		h->status = (seen & 2) ? 302 : 200;
	return 0;
}

int
proxy_head_feed(struct proxy_head *h, const char *data, size_t len,
		size_t *used, char *msg, size_t msgcap)
{
	*used = 0;
	if (h->done) {
		return 1;
	}
	/* Look for the end of the head in old tail + new data: an LF that
	 * follows an LF (optionally with a CR between). */
	size_t old = h->len;
	size_t take = len;
	if (old + take > PROXY_HEAD_MAX)
		take = PROXY_HEAD_MAX - old;
	if (old + take + 1 > h->cap) {
		size_t ncap = h->cap ? h->cap : 1024;
		while (ncap < old + take + 1)
			ncap *= 2;
		h->buf = log_xrealloc(h->buf, ncap);
		h->cap = ncap;
	}
	memcpy(h->buf + old, data, take);
	h->len = old + take;
	h->buf[h->len] = '\0';
	/* An empty first line is an empty head: malformed. */
	size_t start = old > 2 ? old - 2 : 0;
	for (size_t i = start; i < h->len; i++) {
		if (h->buf[i] != '\n')
			continue;
		int end_here = 0;
		if (i == 0 || (i == 1 && h->buf[0] == '\r'))
			end_here = 1;
		else if (h->buf[i - 1] == '\n')
			end_here = 1;
		else if (h->buf[i - 1] == '\r' && i >= 2 && h->buf[i - 2] == '\n')
			end_here = 1;
		if (!end_here)
			continue;
		if (i < old) {
			continue;       /* seen on an earlier call: impossible */
		}
		size_t end = i + 1;
		*used = end - old;
		h->len = end;
		if (check_head(h, end, msg, msgcap) != 0)
			return -1;
		h->done = 1;
		return 1;
	}
	if (h->len >= PROXY_HEAD_MAX) {
		snprintf(msg, msgcap, "response head longer than %u bytes", PROXY_HEAD_MAX);
		return -1;
	}
	*used = take;
	return 0;
}

/* Is the header of line s[0..len) ("Name: value") also one of the lines
 * of extra?  Ours replace the application's of the same name: one
 * X-RateLimit-Limit, not two that disagree. */
static int
named_in(const char *s, size_t len, const char *extra, size_t extra_len)
{
	const char *colon = memchr(s, ':', len);
	size_t nl = colon ? (size_t)(colon - s) : len;
	size_t pos = 0;

	while (extra != NULL && pos < extra_len) {
		const char *e = extra + pos;
		const char *end = memchr(e, '\n', extra_len - pos);
		size_t el = end ? (size_t)(end - e) : extra_len - pos;
		const char *ec = memchr(e, ':', el);
		if (ec != NULL && (size_t)(ec - e) == nl && strncasecmp(e, s, nl) == 0)
			return 1;
		pos += el + 1;
	}
	return 0;
}

void
proxy_head_render(const struct proxy_head *h, const char *extra,
		  size_t extra_len, struct respond_buf *out)
{
	char line[128];
	const char *reason = h->reason[0] ? h->reason : respond_reason(h->status);

	respond_buf_reset(out);
	int n = snprintf(line, sizeof(line), "Status: %d%s%s\r\n", h->status,
			 reason[0] ? " " : "", reason);
	respond_buf_add(out, line, (size_t)n);
	size_t pos = 0;
	while (pos < h->len) {
		const char *nl = memchr(h->buf + pos, '\n', h->len - pos);
		size_t len = (size_t)(nl - (h->buf + pos));
		if (len > 0 && h->buf[pos + len - 1] == '\r')
			len--;
		if (len == 0)
			break;
		const char *s = h->buf + pos;
		if (!(len > 6 && strncasecmp(s, "Status", 6) == 0 &&
		      (s[6] == ':')) && !named_in(s, len, extra, extra_len)) {
			respond_buf_add(out, s, len);
			respond_buf_add(out, "\r\n", 2);
		}
		pos = (size_t)(nl - h->buf) + 1;
	}
	if (extra != NULL && extra_len > 0)
		respond_buf_add(out, extra, extra_len);
	respond_buf_add(out, "\r\n", 2);
}
