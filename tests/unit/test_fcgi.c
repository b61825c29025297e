/*
 * test_fcgi.c - gateway/fcgi.c: the request path and query read from the
 * FastCGI params (REQUEST_URI, or SCRIPT_NAME + PATH_INFO and QUERY_STRING
 * without it).  The server itself is exercised by the integration tests.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "fcgi.h"
#include "target.h"

struct tcase {
	const char *uri, *script, *info, *qs;
	int ret;
	const char *path, *query;       /* query NULL: none */
	int line;
};

Test(fcgi, target)
{
	static const struct tcase cases[] = {
		{ "/a/b?x=1", NULL, NULL, "y=2", 0, "/a/b", "x=1", __LINE__ },
		{ "/a/b", NULL, NULL, "y=2", 0, "/a/b", NULL, __LINE__ },
		{ "/a/b?", NULL, NULL, NULL, 0, "/a/b", "", __LINE__ },
		{ "/a?b?c", NULL, NULL, NULL, 0, "/a", "b?c", __LINE__ },
		/* nginx auth_request: QUERY_STRING empty, REQUEST_URI original */
		{ "/na/static.txt?a=1", "/_rl", NULL, "", 0, "/na/static.txt", "a=1", __LINE__ },
		{ "http://example.com/x/y?q", NULL, NULL, NULL, 0, "/x/y", "q", __LINE__ },
		{ "HTTPS://example.com", NULL, NULL, NULL, 0, "/", NULL, __LINE__ },
		{ "http://example.com?z", NULL, NULL, NULL, 0, "/", "z", __LINE__ },
		/* a raw '#' ends the target (the servers route without it) */
		{ "/login#x", "/login", NULL, "", 0, "/login", NULL, __LINE__ },
		{ "/q/x?user=alice#7", NULL, NULL, NULL, 0, "/q/x", "user=alice", __LINE__ },
		{ "/api/upload#/../../x", NULL, NULL, NULL, 0, "/api/upload", NULL, __LINE__ },
		{ "http://h/x#f?y", NULL, NULL, NULL, 0, "/x", NULL, __LINE__ },
		{ "http://example.com#f?y", NULL, NULL, NULL, 0, "/", NULL, __LINE__ },
		{ "http://example.com?z#f", NULL, NULL, NULL, 0, "/", "z", __LINE__ },
		{ NULL, "/app/p", "/extra", "k=v", 0, "/app/p/extra", "k=v", __LINE__ },
		{ "", "/app/p", NULL, "", 0, "/app/p", NULL, __LINE__ },
		{ NULL, NULL, "/only-info", NULL, 0, "/only-info", NULL, __LINE__ },
		/* decoded already: not decoded twice ("%252e" sent) */
		{ NULL, "/api/app.cgi", "/%2e%2e/x", NULL, 0, "/api/app.cgi/%252e%252e/x", NULL, __LINE__ },
		{ NULL, "/100%", NULL, NULL, 0, "/100%25", NULL, __LINE__ },
		{ NULL, NULL, NULL, "k=v", -1, NULL, NULL, __LINE__ },
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *c = &cases[i];
		struct target t;
		int r = target_parse(c->uri, c->script, c->info, c->qs, buf,
				    sizeof(buf), &t);
		cr_expect_eq(r, c->ret, "line %d", c->line);
		if (r != 0)
			continue;
		cr_expect_eq(t.path_len, strlen(c->path), "line %d", c->line);
		cr_expect_eq(strncmp(t.path, c->path, t.path_len), 0, "line %d: %.*s",
			     c->line, (int)t.path_len, t.path);
		if (c->query == NULL) {
			cr_expect_null(t.query, "line %d", c->line);
		} else {
			cr_expect_not_null(t.query, "line %d", c->line);
			if (t.query)
				cr_expect_eq(strncmp(t.query, c->query, t.query_len), 0,
					     "line %d", c->line);
			cr_expect_eq(t.query_len, strlen(c->query), "line %d", c->line);
		}
	}
	/* SCRIPT_NAME + PATH_INFO longer than the buffer: no path. */
	struct target t;
	cr_expect_eq(target_parse(NULL, "/aaaaaaaa", "/bbbbbbbb", NULL, buf, 10, &t), -1);
}

/* The body's length: CONTENT_LENGTH, else (lighttpd's authorizer) the
 * largest HTTP_CONTENT_LENGTH: a Content_Length variant before the real
 * header cannot make the body look smaller. */
Test(fcgi, request_body_length)
{
	static const struct rl_param p1[] = {
		{ "FCGI_ROLE", 9, "AUTHORIZER", 10 },
		{ "REQUEST_URI", 11, "/mb", 3 },
		{ "HTTP_CONTENT_LENGTH", 19, "5", 1 },
		{ "HTTP_CONTENT_LENGTH", 19, "1000", 4 },
	};
	/* a responder's body is what CONTENT_LENGTH says, or none */
	static const struct rl_param p4[] = {
		{ "FCGI_ROLE", 9, "RESPONDER", 9 },
		{ "REQUEST_URI", 11, "/mb", 3 },
		{ "HTTP_CONTENT_LENGTH", 19, "1000", 4 },
	};
	static const struct rl_param p2[] = {
		{ "REQUEST_URI", 11, "/mb", 3 },
		{ "CONTENT_LENGTH", 14, "7", 1 },
		{ "HTTP_CONTENT_LENGTH", 19, "1000", 4 },
	};
	static const struct rl_param p3[] = {
		{ "FCGI_ROLE", 9, "AUTHORIZER", 10 },
		{ "REQUEST_URI", 11, "/mb", 3 },
		{ "HTTP_CONTENT_LENGTH", 19, "12x", 3 },
	};
	struct rl_request rq;
	char buf[64];

	cr_assert_eq(fcgi_request(p1, 4, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_bytes, 1000);
	cr_assert_eq(fcgi_request(p4, 3, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_bytes, 0);
	cr_assert_eq(fcgi_request(p2, 3, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_bytes, 7, "CONTENT_LENGTH is the server's own");
	cr_expect_eq(fcgi_request(p3, 3, buf, sizeof(buf), &rq), -1);
	/* the log names the value refused */
	cr_expect_str_eq(fcgi_bad_length(p3, 3), "12x");
	cr_expect_null(fcgi_bad_length(p1, 4));
}

/* A chunked body (Apache streams one without CONTENT_LENGTH, with the
 * client's Transfer-Encoding) is a body of unknown length: its bytes are
 * counted afterwards, the bandwidth limits checked at once. */
Test(fcgi, chunked_body_is_of_unknown_length)
{
	static const struct rl_param chunked[] = {
		{ "FCGI_ROLE", 9, "RESPONDER", 9 },
		{ "REQUEST_URI", 11, "/up", 3 },
		{ "HTTP_TRANSFER_ENCODING", 22, "chunked", 7 },
	};
	/* nginx reads a chunked body whole and passes its length */
	static const struct rl_param known[] = {
		{ "FCGI_ROLE", 9, "RESPONDER", 9 },
		{ "REQUEST_URI", 11, "/up", 3 },
		{ "CONTENT_LENGTH", 14, "500", 3 },
		{ "HTTP_TRANSFER_ENCODING", 22, "chunked", 7 },
	};
	static const struct rl_param none[] = {
		{ "FCGI_ROLE", 9, "RESPONDER", 9 },
		{ "REQUEST_URI", 11, "/up", 3 },
		{ "CONTENT_LENGTH", 14, "", 0 },
	};
	struct rl_request rq;
	char buf[64];

	cr_assert_eq(fcgi_request(chunked, 3, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_bytes, 0);
	cr_expect_eq(rq.body_unknown, 1);
	cr_assert_eq(fcgi_request(known, 4, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_bytes, 500);
	cr_expect_eq(rq.body_unknown, 0);
	cr_assert_eq(fcgi_request(none, 3, buf, sizeof(buf), &rq), 0);
	cr_expect_eq(rq.body_unknown, 0);
}
