/*
 * test_respond.c - gateway/respond.c: the exact bytes of every answer
 * (allow with Variable-*, 429 in text and JSON, Retry-After as seconds and
 * as an HTTP-date, the IETF fields, 400/503), Accept negotiation with
 * q-values, and that nothing from a request can break a header line.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "respond.h"

#define NOW 1795424400000LL     /* 2026-11-23 09:00:00.000 UTC */

static struct rl_limit lim = { .count = 10, .period_ms = 60000, .text = "10/minute" };
static struct rl_rule rule;
static struct respond_buf b;
static struct respond_opts o;

static void
setup(void)
{
	respond_buf_init(&b);
	memset(&rule, 0, sizeof(rule));
	rule.pattern.text = "/login";
	rule.scope = "/login";
	o.headers = 1;
	o.ietf_headers = 0;
	o.retry_after = RL_RETRY_SECONDS;
	o.apache = 0;
	o.deny_status = 0;
	o.auth_request = 0;
}

static void
teardown(void)
{
	respond_buf_free(&b);
}

static struct rl_decision
deny(int64_t retry_ms)
{
	struct rl_decision d;

	memset(&d, 0, sizeof(d));
	d.outcome = RL_DENY;
	d.rule = &rule;
	d.limit = &lim;
	d.origin = RL_FROM_RULE;
	d.remaining = 0;
	d.retry_ms = retry_ms;
	d.reset_ms = NOW + retry_ms;
	d.cost = 1;
	strcpy(d.client, "192.0.2.7");
	strcpy(d.key, "addr=192.0.2.7");
	d.message = "Too many login attempts";
	return d;
}

TestSuite(respond, .init = setup, .fini = teardown);

Test(respond, deny_text)
{
	struct rl_decision d = deny(29001);

	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 429);
	cr_assert_str_eq(b.data,
		"Status: 429 Too Many Requests\r\n"
		"Retry-After: 30\r\n"
		"X-RateLimit-Limit: 10\r\n"
		"X-RateLimit-Remaining: 0\r\n"
		"X-RateLimit-Reset: 30\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Too many login attempts\n");
	cr_assert_eq(b.len, strlen(b.data));
}

/* nginx auth_request: the same denial as 403, every header of the 429
 * kept; a missing key too; an allowed request is untouched. */
Test(respond, deny_as_403_for_auth_request)
{
	struct rl_decision d = deny(29001);

	o.deny_status = 403;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 403);
	cr_assert_str_eq(b.data,
		"Status: 403 Forbidden\r\n"
		"Retry-After: 30\r\n"
		"X-RateLimit-Limit: 10\r\n"
		"X-RateLimit-Remaining: 0\r\n"
		"X-RateLimit-Reset: 30\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Too many login attempts\n");
	d.outcome = RL_DENY_KEY;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 403);
	cr_assert(strncmp(b.data, "Status: 403 Forbidden\r\n", 23) == 0, "%s", b.data);
	d.outcome = RL_ALLOW;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 200);
	cr_assert_null(strstr(b.data, "Rategate-Decision"), "%s", b.data);
	/* with auth_request set (what RATEGATE_ROLE auth-request sets), an
	 * allowed answer says so, for the example's RATEGATE_DECIDED */
	o.auth_request = 1;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 200);
	cr_assert_str_eq(b.data,
		"Status: 200 OK\r\n"
		"Variable-RL_CLIENT: 192.0.2.7\r\n"
		"Variable-RL_KEY: addr=192.0.2.7\r\n"
		"Variable-RL_RULE: /login\r\n"
		"Variable-RL_LIMIT: 10/minute\r\n"
		"Variable-RL_REMAINING: 0\r\n"
		"Variable-RL_RESET: 30\r\n"
		"Rategate-Decision: allow\r\n"
		"X-RateLimit-Limit: 10\r\n"
		"X-RateLimit-Remaining: 0\r\n"
		"X-RateLimit-Reset: 30\r\n"
		"\r\n");
	d.outcome = RL_DENY;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 403);
	cr_assert_null(strstr(b.data, "Rategate-Decision"), "%s", b.data);
}

Test(respond, deny_json_with_ietf_fields)
{
	struct rl_decision d = deny(30000);

	d.message = "say \"when\"\\ \x01 caf\xc3\xa9 \xff";
	d.reset_ms = NOW + 45500;       /* reset later than the retry (GCRA) */
	o.ietf_headers = 1;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_JSON), 429);
	cr_assert_str_eq(b.data,
		"Status: 429 Too Many Requests\r\n"
		"Retry-After: 30\r\n"
		"X-RateLimit-Limit: 10\r\n"
		"X-RateLimit-Remaining: 0\r\n"
		"X-RateLimit-Reset: 46\r\n"
		"RateLimit-Policy: \"/login\";q=10;w=60\r\n"
		"RateLimit: \"/login\";r=0;t=30\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: application/json\r\n"
		"\r\n"
		"{\"error\":\"rate_limited\",\"message\":\"say \\\"when\\\"\\\\ \\u0001 caf\xc3\xa9 \\ufffd\","
		"\"retry_after\":30,\"limit\":\"10/minute\"}\n");
}

Test(respond, ietf_policy_names)
{
	struct rl_decision d = deny(1000);

	o.headers = 0;
	o.ietf_headers = 1;
	d.origin = RL_FROM_DEFAULT;
	d.outcome = RL_ALLOW;
	d.remaining = 7;
	d.retry_ms = 0;
	d.reset_ms = NOW + 12000;
	respond_buf_reset(&b);
	respond_ratelimit_headers(&b, &o, &d, NOW);
	cr_assert_str_eq(b.data,
		"RateLimit-Policy: \"default\";q=10;w=60\r\n"
		"RateLimit: \"default\";r=7;t=12\r\n");
	d.origin = RL_FROM_APPLICATION;
	respond_buf_reset(&b);
	respond_ratelimit_headers(&b, &o, &d, NOW);
	cr_assert_str_eq(b.data,
		"RateLimit-Policy: \"application\";q=10;w=60\r\n"
		"RateLimit: \"application\";r=7;t=12\r\n");
	/* A scope with a quote stays one sf-string. */
	d.origin = RL_FROM_RULE;
	rule.scope = "a\"b\\c";
	respond_buf_reset(&b);
	respond_ratelimit_headers(&b, &o, &d, NOW);
	cr_assert_str_eq(b.data,
		"RateLimit-Policy: \"a\\\"b\\\\c\";q=10;w=60\r\n"
		"RateLimit: \"a\\\"b\\\\c\";r=7;t=12\r\n");
	/* No deciding limit: nothing. */
	d.limit = NULL;
	respond_buf_reset(&b);
	respond_ratelimit_headers(&b, &o, &d, NOW);
	cr_assert_eq(b.len, 0);
}

Test(respond, retry_after_http_date)
{
	struct rl_decision d = deny(29001);

	o.retry_after = RL_RETRY_HTTP_DATE;
	o.headers = 0;
	respond_authorizer(&b, &o, &d, NOW + 500, RESPOND_TEXT);
	/* 09:00:00.500 + 29.001 s = 09:00:29.501, rounded up to :30 */
	cr_assert_str_eq(b.data,
		"Status: 429 Too Many Requests\r\n"
		"Retry-After: Mon, 23 Nov 2026 09:00:30 GMT\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Too many login attempts\n");
}

Test(respond, retry_after_http_date_saturated)
{
	struct rl_decision d = deny(1000);

	d.retry_ms = INT64_MAX;
	d.reset_ms = INT64_MAX;
	o.retry_after = RL_RETRY_HTTP_DATE;
	o.headers = 0;
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	/* not a date before the epoch: the last one HTTP can write */
	cr_assert(strstr(b.data, "Retry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\n")
		  != NULL, "%s", b.data);
}

Test(respond, apache_would_read_a_url)
{
	static const struct { const char *msg, *body; } cases[] = {
		{ "slow: down", " slow: down\n" },
		{ "http://example.com/", " http://example.com/\n" },
		{ "a+b-c.d:", " a+b-c.d:\n" },
		{ "/login", " /login\n" },
		{ "Too many: requests", "Too many: requests\n" },
		{ ":x", ":x\n" },
		{ "plain", "plain\n" },
	};
	struct rl_decision d = deny(1000);

	o.apache = 1;
	o.headers = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		d.message = cases[i].msg;
		respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
		const char *body = strstr(b.data, "\r\n\r\n") + 4;
		cr_expect_str_eq(body, cases[i].body, "message \"%s\"", cases[i].msg);
	}
	/* JSON starts with '{': never misread, never changed. */
	d.message = "slow: down";
	respond_authorizer(&b, &o, &d, NOW, RESPOND_JSON);
	cr_expect_not_null(strstr(b.data, "\r\n\r\n{\"error\":\"rate_limited\",\"message\":\"slow: down\""));
	/* Not behind Apache: the message as written. */
	o.apache = 0;
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	cr_expect_str_eq(strstr(b.data, "\r\n\r\n") + 4, "slow: down\n");
}

Test(respond, http_dates)
{
	char s[40];

	respond_http_date(784111777, s, sizeof(s));
	cr_assert_str_eq(s, "Sun, 06 Nov 1994 08:49:37 GMT");
	respond_http_date(0, s, sizeof(s));
	cr_assert_str_eq(s, "Thu, 01 Jan 1970 00:00:00 GMT");
	respond_http_date(951782400, s, sizeof(s));
	cr_assert_str_eq(s, "Tue, 29 Feb 2000 00:00:00 GMT");
}

Test(respond, allow_authorizer_variables)
{
	struct rl_decision d = deny(0);

	d.outcome = RL_ALLOW;
	d.remaining = 9;
	d.reset_ms = NOW + 59999;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 200);
	cr_assert_str_eq(b.data,
		"Status: 200 OK\r\n"
		"Variable-RL_CLIENT: 192.0.2.7\r\n"
		"Variable-RL_KEY: addr=192.0.2.7\r\n"
		"Variable-RL_RULE: /login\r\n"
		"Variable-RL_LIMIT: 10/minute\r\n"
		"Variable-RL_REMAINING: 9\r\n"
		"Variable-RL_RESET: 60\r\n"
		"X-RateLimit-Limit: 10\r\n"
		"X-RateLimit-Remaining: 9\r\n"
		"X-RateLimit-Reset: 60\r\n"
		"\r\n");

	/* headers off, a dry-run would-be denial */
	o.headers = 0;
	d.would_deny = 1;
	d.remaining = 0;
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	cr_assert_str_eq(b.data,
		"Status: 200 OK\r\n"
		"Variable-RL_CLIENT: 192.0.2.7\r\n"
		"Variable-RL_KEY: addr=192.0.2.7\r\n"
		"Variable-RL_RULE: /login\r\n"
		"Variable-RL_LIMIT: 10/minute\r\n"
		"Variable-RL_REMAINING: 0\r\n"
		"Variable-RL_RESET: 60\r\n"
		"Variable-RL_DRY_RUN_DENY: 1\r\n"
		"\r\n");
}

Test(respond, allow_exempt_and_disabled)
{
	struct rl_decision d;

	memset(&d, 0, sizeof(d));
	d.outcome = RL_ALLOW;
	d.exempt = 1;
	d.rule = &rule;
	strcpy(d.client, "-");
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	cr_assert_str_eq(b.data,
		"Status: 200 OK\r\n"
		"Variable-RL_EXEMPT: 1\r\n"
		"Variable-RL_RULE: /login\r\n"
		"\r\n");
	memset(&d, 0, sizeof(d));
	d.outcome = RL_ALLOW;
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	cr_assert_str_eq(b.data, "Status: 200 OK\r\n\r\n");
}

Test(respond, no_control_bytes_reach_a_header)
{
	struct rl_decision d = deny(0);

	d.outcome = RL_ALLOW;
	d.limit = NULL;
	d.rule = NULL;
	strcpy(d.key, "v.remote_user=x\r\nSet-Cookie: a=b\x7f\xc3\xa9");
	strcpy(d.client, "1.2.3.4\nX: y");
	respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT);
	cr_assert_str_eq(b.data,
		"Status: 200 OK\r\n"
		"Variable-RL_CLIENT: 1.2.3.4?X: y\r\n"
		"Variable-RL_KEY: v.remote_user=x??Set-Cookie: a=b???\r\n"
		"\r\n");
}

Test(respond, deny_missing_key)
{
	struct rl_decision d = deny(0);

	d.outcome = RL_DENY_KEY;
	d.limit = NULL;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 429);
	cr_assert_str_eq(b.data,
		"Status: 429 Too Many Requests\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Too many login attempts\n");
	respond_authorizer(&b, &o, &d, NOW, RESPOND_JSON);
	cr_assert_str_eq(b.data,
		"Status: 429 Too Many Requests\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: application/json\r\n"
		"\r\n"
		"{\"error\":\"missing_key\",\"message\":\"Too many login attempts\"}\n");
}

Test(respond, bad_request_and_store_error)
{
	struct rl_decision d = deny(0);

	d.outcome = RL_BAD_REQUEST;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_TEXT), 400);
	cr_assert_str_eq(b.data,
		"Status: 400 Bad Request\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Bad Request: the request path is not valid\n");
	d.outcome = RL_STORE_ERROR;
	cr_assert_eq(respond_authorizer(&b, &o, &d, NOW, RESPOND_JSON), 503);
	cr_assert_str_eq(b.data,
		"Status: 503 Service Unavailable\r\n"
		"Retry-After: 5\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: application/json\r\n"
		"\r\n"
		"{\"error\":\"unavailable\",\"message\":\"Service Unavailable: the rate limiter cannot reach its counters\",\"retry_after\":5}\n");
	cr_assert_eq(respond_error(&b, 502, 0, "bad_gateway", "Bad Gateway", RESPOND_TEXT), 502);
	cr_assert_str_eq(b.data,
		"Status: 502 Bad Gateway\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Bad Gateway\n");
}

Test(respond, seconds_until)
{
	cr_assert_eq(respond_seconds_until(NOW, NOW), 0);
	cr_assert_eq(respond_seconds_until(NOW - 5, NOW), 0);
	cr_assert_eq(respond_seconds_until(NOW + 1, NOW), 1);
	cr_assert_eq(respond_seconds_until(NOW + 1000, NOW), 1);
	cr_assert_eq(respond_seconds_until(NOW + 1001, NOW), 2);
}

struct neg_case {
	const char *accept;
	enum respond_format want;
	int line;
};

Test(respond, negotiate)
{
	static const struct neg_case cases[] = {
		{ NULL, RESPOND_TEXT, __LINE__ },
		{ "", RESPOND_TEXT, __LINE__ },
		{ "*/*", RESPOND_TEXT, __LINE__ },
		{ "application/json", RESPOND_JSON, __LINE__ },
		{ "Application/JSON", RESPOND_JSON, __LINE__ },
		{ "application/json; charset=utf-8", RESPOND_JSON, __LINE__ },
		{ "application/*", RESPOND_JSON, __LINE__ },
		{ "text/plain", RESPOND_TEXT, __LINE__ },
		{ "application/json, text/plain", RESPOND_TEXT, __LINE__ },
		{ "text/plain, application/json", RESPOND_TEXT, __LINE__ },
		{ "application/json, */*", RESPOND_JSON, __LINE__ },
		{ "application/json, text/*", RESPOND_JSON, __LINE__ },
		{ "application/json, text/javascript, */*; q=0.01", RESPOND_JSON, __LINE__ },
		{ "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", RESPOND_TEXT, __LINE__ },
		{ "application/json;q=0.1, text/plain", RESPOND_TEXT, __LINE__ },
		{ "text/plain;q=0.5, application/json", RESPOND_JSON, __LINE__ },
		{ "text/plain;q=0.5,application/json;q=0.501", RESPOND_JSON, __LINE__ },
		{ "application/json;q=0", RESPOND_TEXT, __LINE__ },
		{ "*/*;q=0, application/json", RESPOND_JSON, __LINE__ },
		{ "application/json;q=0, */*", RESPOND_TEXT, __LINE__ },
		{ "application/json ; Q=1.000", RESPOND_JSON, __LINE__ },
		{ "application/json;q=1.5", RESPOND_TEXT, __LINE__ },     /* malformed: ignored */
		{ "application/json;q=abc", RESPOND_TEXT, __LINE__ },
		{ "application/json;q=0.1234", RESPOND_TEXT, __LINE__ },
		{ "application/json;q=", RESPOND_TEXT, __LINE__ },
		{ "application/json;level=1;q=0.9, text/plain;q=0.8", RESPOND_JSON, __LINE__ },
		{ "json", RESPOND_TEXT, __LINE__ },
		{ "/json, application/", RESPOND_TEXT, __LINE__ },
		{ ",,, application/json ,", RESPOND_JSON, __LINE__ },
		{ "text/plain;q=0, application/json;q=0.001", RESPOND_JSON, __LINE__ },
		{ "application/json;q=0.2, application/json;q=0.9, text/plain;q=0.5", RESPOND_JSON, __LINE__ },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct neg_case *c = &cases[i];
		cr_expect_eq(respond_negotiate(c->accept, c->accept ? strlen(c->accept) : 0),
			     c->want, "line %d: Accept \"%s\"", c->line,
			     c->accept ? c->accept : "(none)");
	}
}
