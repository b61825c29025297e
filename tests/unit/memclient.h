/*
 * memclient.h - an in-memory web-server side for the proxy unit tests
 * (test_cgi.c, test_upstream.c): a struct proxy_client whose read hands
 * out a request body and whose write collects the response, and which can
 * act as a client that goes away (a read or a write failing at a given
 * point), or as a slow one (every read and write taking delay_ms).
 * Include from a Criterion test file.
 *
 * Ownership: m->out is the struct's own (realloc'ed by mem_write); free
 * it with mem_reset or mem_free.  m->body is borrowed.
 */
#ifndef TESTS_UNIT_MEMCLIENT_H
#define TESTS_UNIT_MEMCLIENT_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy.h"

#define MEM_NEVER ((size_t)-1)

struct mem {
	const char *body;       /* the request body the client sends */
	size_t body_len, pos;
	size_t read_max;        /* largest read handed out; 0: what is asked */
	size_t read_cap_max;    /* a read asking for more fails the test; 0: any */
	size_t fail_read_at;    /* reads fail once pos reaches it; MEM_NEVER */
	size_t reads;
	char *out;              /* the response so far, NUL-terminated */
	size_t len, cap;
	size_t fail_write_after; /* a write that would pass it fails; MEM_NEVER */
	size_t failed_writes;
	int delay_ms;           /* each read and write first waits this long */
};

/* A slow web server: delay_ms before each read and write. */
static inline void
mem_delay(const struct mem *m)
{
	struct timespec ts = { m->delay_ms / 1000, (long)(m->delay_ms % 1000) * 1000000L };

	while (m->delay_ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A client sending body[0..body_len) that never fails. */
static inline void
mem_init(struct mem *m, const char *body, size_t body_len)
{
	memset(m, 0, sizeof(*m));
	m->body = body;
	m->body_len = body_len;
	m->fail_read_at = MEM_NEVER;
	m->fail_write_after = MEM_NEVER;
}

static inline void
mem_free(struct mem *m)
{
	free(m->out);
	m->out = NULL;
	m->len = m->cap = 0;
}

/* Frees the response and starts over as mem_init(m, NULL, 0). */
static inline void
mem_reset(struct mem *m)
{
	mem_free(m);
	mem_init(m, NULL, 0);
}

static inline long
mem_read(void *ctx, char *buf, size_t cap)
{
	struct mem *m = ctx;

	cr_assert(cap > 0, "read of 0 bytes");
	cr_assert(m->read_cap_max == 0 || cap <= m->read_cap_max,
		  "read of %zu bytes, more than %zu", cap, m->read_cap_max);
	m->reads++;
	mem_delay(m);
	if (m->pos >= m->fail_read_at)
		return -1;
	size_t n = m->body_len - m->pos;
	if (n > cap)
		n = cap;
	if (m->read_max > 0 && n > m->read_max)
		n = m->read_max;
	if (m->fail_read_at != MEM_NEVER && n > m->fail_read_at - m->pos)
		n = m->fail_read_at - m->pos;
	if (n > 0)
		memcpy(buf, m->body + m->pos, n);
	m->pos += n;
	return (long)n;
}

static inline int
mem_write(void *ctx, const char *buf, size_t len)
{
	struct mem *m = ctx;

	mem_delay(m);
	if (m->fail_write_after != MEM_NEVER && m->len + len > m->fail_write_after) {
		m->failed_writes++;
		return -1;
	}
	if (m->len + len + 1 > m->cap) {
		size_t ncap = m->cap ? m->cap : 4096;
		while (ncap < m->len + len + 1)
			ncap *= 2;
		m->out = realloc(m->out, ncap);
		cr_assert_not_null(m->out);
		m->cap = ncap;
	}
	memcpy(m->out + m->len, buf, len);
	m->len += len;
	m->out[m->len] = '\0';
	return 0;
}

/* The proxy client of m. */
static inline struct proxy_client
mem_client(struct mem *m)
{
	struct proxy_client c = { .ctx = m, .read = mem_read, .write = mem_write };

	return c;
}

/* The response body, what follows the head's empty line, and its length
 * in *len (when not NULL); NULL when no head was written. */
static inline const char *
mem_body(const struct mem *m, size_t *len)
{
	const char *p = m->out ? strstr(m->out, "\r\n\r\n") : NULL;

	if (p == NULL)
		return NULL;
	p += 4;
	if (len != NULL)
		*len = m->len - (size_t)(p - m->out);
	return p;
}

/* The value of the body's "name=value" line (the echo apps write one per
 * thing they saw), into buf; NULL when there is no such line. */
static inline const char *
mem_field(const struct mem *m, const char *name, char *buf, size_t cap)
{
	const char *b = mem_body(m, NULL);
	size_t nl = strlen(name);

	for (const char *p = b; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '\n');
		if (strncmp(p, name, nl) == 0 && p[nl] == '=') {
			size_t vl = (end ? (size_t)(end - p) : strlen(p)) - nl - 1;
			if (vl >= cap)
				vl = cap - 1;
			memcpy(buf, p + nl + 1, vl);
			buf[vl] = '\0';
			return buf;
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

#endif
