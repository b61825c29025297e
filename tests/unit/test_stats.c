/*
 * test_stats.c - gateway/stats.c: counting per reason and per rule, totals
 * carried over a reload, format negotiation, and the exact JSON and
 * Prometheus answers.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "stats.h"

static const char rules[] =
	"storage memory\n"
	"default 10/minute\n"
	"/login 5/minute\n"
	"/api/** 100/minute\n";

static struct rl_ruleset *
load(const char *text)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_parse("site.rules", text, strlen(text), NULL, &rep);

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	rl_report_free(&rep);
	return rs;
}

Test(stats, counts_render_and_carry_over)
{
	struct rl_ruleset *rs = load(rules);
	struct stats s;
	struct rl_decision d;

	memset(&s, 0, sizeof(s));
	s.started_ms = 1000;
	struct stats_rules *sr = stats_rules_new(rs, NULL);
	cr_assert_eq(sr->n, 3);
	memset(&d, 0, sizeof(d));
	d.rule = rl_ruleset_rule(rs, 0);        /* /login */
	stats_count(&s, sr, &d, 0, STATS_RATE);
	stats_count(&s, sr, &d, 1, STATS_RATE);
	stats_count(&s, sr, &d, 1, STATS_RATE);
	d.rule = NULL;                          /* defaults */
	d.would_deny = 1;
	stats_count(&s, sr, &d, 0, STATS_RATE);
	stats_count(&s, sr, NULL, 1, STATS_BAD_REQUEST);
	atomic_store(&s.inflight, 2);
	atomic_store(&s.client_timeouts, 4);
	atomic_store(&s.proxy_header_untrusted, 5);
	atomic_store(&s.reloads_ok, 1);

	struct stats_store st = { "shm", 7, 1000, 3, 2, 0, -1, -1, -1, -1, -1 };
	struct respond_buf b;
	respond_buf_init(&b);
	stats_render(&b, STATS_JSON, &s, sr, &st, NULL, 0, 61500, 42);
	const char *body = strstr(b.data, "\r\n\r\n");
	cr_assert_not_null(body);
	body += 4;
	char want[2048];
	snprintf(want, sizeof(want),
		 "{\"version\":\"%s\",\"pid\":42,\"uptime_s\":60,"
		 "\"requests\":{\"allowed\":2,\"denied\":3,\"dry_run_denied\":1},"
		 "\"denials\":{\"rate\":2,\"concurrency\":0,\"missing_key\":0,\"too_large\":0,\"bad_request\":1,\"store_error\":0},"
		 "\"inflight\":2,\"upstream_errors\":0,\"client_timeouts\":4,\"proxy_header_untrusted\":5,\"reloads\":{\"ok\":1,\"failed\":0},"
		 "\"store\":{\"kind\":\"shm\",\"errors\":0,\"keys\":7,\"slots\":1000,\"evictions\":3,\"evictions_limiting\":2,\"full\":0},"
		 "\"upstreams\":[],"
		 "\"rules\":[{\"rule\":\"/login\",\"file\":\"site.rules\",\"line\":3,\"allowed\":1,\"denied\":2},"
		 "{\"rule\":\"/api/**\",\"file\":\"site.rules\",\"line\":4,\"allowed\":0,\"denied\":0},"
		 "{\"rule\":\"(default)\",\"file\":\"\",\"line\":0,\"allowed\":1,\"denied\":1}]}\n",
		 PACKAGE_VERSION);
	cr_assert_str_eq(body, want);
	char head[200];
	snprintf(head, sizeof(head),
		 "Status: 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: %zu\r\n\r\n",
		 strlen(want));
	cr_assert_eq(strncmp(b.data, head, strlen(head)), 0, "%s", b.data);

	stats_render(&b, STATS_PROMETHEUS, &s, sr, &st, NULL, 0, 61500, 42);
	cr_assert_not_null(strstr(b.data, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	cr_assert_not_null(strstr(b.data, "\n# TYPE rategate_requests_total counter\n"
				  "rategate_requests_total{result=\"allowed\"} 2\n"
				  "rategate_requests_total{result=\"denied\"} 3\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_denials_total{reason=\"bad_request\"} 1\n"));
	cr_assert_not_null(strstr(b.data,
		"\nrategate_rule_requests_total{rule=\"/login\",file=\"site.rules\",line=\"3\",result=\"denied\"} 2\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_store_keys 7\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_store_evictions_total 3\n"
				  "# HELP rategate_store_evictions_limiting_total "));
	cr_assert_not_null(strstr(b.data, "\nrategate_store_evictions_limiting_total 2\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_inflight 2\n"));
	cr_assert_not_null(strstr(b.data, "\n# TYPE rategate_client_timeouts_total counter\n"
				  "rategate_client_timeouts_total 4\n"));
	cr_assert_not_null(strstr(b.data, "\n# TYPE rategate_proxy_header_untrusted_total counter\n"
				  "rategate_proxy_header_untrusted_total 5\n"));

	/* A reload: /login moves to line 4 and keeps its totals; /api is
	 * gone; /new starts at zero. */
	struct rl_ruleset *rs2 = load("storage memory\ndefault 10/minute\n\n/login 5/minute\n/new 1/second\n");
	struct stats_rules *sr2 = stats_rules_new(rs2, sr);
	cr_assert_eq(sr2->n, 3);
	cr_assert_str_eq(sr2->r[0].name, "/login");
	cr_assert_eq(sr2->r[0].line, 4);
	cr_assert_eq(atomic_load(&sr2->r[0].allowed), 1);
	cr_assert_eq(atomic_load(&sr2->r[0].denied), 2);
	cr_assert_eq(atomic_load(&sr2->r[1].allowed), 0);
	cr_assert_eq(atomic_load(&sr2->r[2].denied), 1);      /* (default) */
	stats_rules_free(sr);
	stats_rules_free(sr2);
	respond_buf_free(&b);
	rl_ruleset_free(rs);
	rl_ruleset_free(rs2);
}

Test(stats, negotiate)
{
	cr_expect_eq(stats_negotiate(NULL, NULL), STATS_JSON);
	cr_expect_eq(stats_negotiate("format=prometheus", NULL), STATS_PROMETHEUS);
	cr_expect_eq(stats_negotiate("a=1&format=json", "text/plain"), STATS_JSON);
	cr_expect_eq(stats_negotiate(NULL, "*/*"), STATS_JSON);
	cr_expect_eq(stats_negotiate(NULL, "application/json"), STATS_JSON);
	/* what Prometheus 2.x sends */
	cr_expect_eq(stats_negotiate(NULL,
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
		STATS_PROMETHEUS);
	cr_expect_eq(stats_negotiate(NULL, "text/plain;q=0"), STATS_JSON);
	cr_expect_eq(stats_negotiate("format=prometheusx", NULL), STATS_JSON);
}

Test(stats, redis_figures)
{
	struct rl_ruleset *rs = load(rules);
	struct stats s;

	memset(&s, 0, sizeof(s));
	struct stats_rules *sr = stats_rules_new(rs, NULL);
	struct stats_store st = { "redis", -1, -1, -1, -1, -1, 0, 2, 1, 40, 7 };
	struct respond_buf b;
	respond_buf_init(&b);
	stats_render(&b, STATS_JSON, &s, sr, &st, NULL, 0, 0, 1);
	cr_assert_not_null(strstr(b.data,
		"\"store\":{\"kind\":\"redis\",\"errors\":0,\"keys\":-1,\"slots\":-1,\"evictions\":-1,\"evictions_limiting\":-1,\"full\":-1,"
		"\"up\":0,\"down_switches\":2,\"up_switches\":1,\"fallback\":40,\"cache_denied\":7},\"upstreams\":[],\"rules\":["), "%s", b.data);
	stats_render(&b, STATS_PROMETHEUS, &s, sr, &st, NULL, 0, 0, 1);
	cr_assert_not_null(strstr(b.data, "\nrategate_redis_up 0\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_redis_switches_total{to=\"down\"} 2\n"));
	cr_assert_not_null(strstr(b.data, "\nrategate_redis_cache_denied_total 7\n"));
	cr_assert_null(strstr(b.data, "rategate_store_keys"));
	respond_buf_free(&b);
	stats_rules_free(sr);
	rl_ruleset_free(rs);
}

/* The FastCGI applications: connections opened, kept ones reused and
 * failures, each, in both formats (none: an empty list, no series). */
Test(stats, upstreams)
{
	struct rl_ruleset *rs = load(rules);
	struct stats s;

	memset(&s, 0, sizeof(s));
	struct stats_rules *sr = stats_rules_new(rs, NULL);
	struct stats_store st = { "shm", 0, 10, 0, 0, 0, -1, -1, -1, -1, -1 };
	struct stats_upstream ups[2] = { { "fcgi+unix:///run/app.sock", 1, 599, 0 },
					 { "fcgi://127.0.0.1:9000", 3, 0, 2 } };
	struct respond_buf b;
	respond_buf_init(&b);
	stats_render(&b, STATS_JSON, &s, sr, &st, ups, 2, 0, 1);
	cr_expect_not_null(strstr(b.data,
		"\"full\":0},\"upstreams\":[{\"upstream\":\"fcgi+unix:///run/app.sock\",\"connects\":1,\"reuses\":599,\"failures\":0},"
		"{\"upstream\":\"fcgi://127.0.0.1:9000\",\"connects\":3,\"reuses\":0,\"failures\":2}],\"rules\":["), "%s", b.data);
	stats_render(&b, STATS_PROMETHEUS, &s, sr, &st, ups, 2, 0, 1);
	cr_expect_not_null(strstr(b.data, "\n# TYPE rategate_upstream_connects_total counter\n"
				  "rategate_upstream_connects_total{upstream=\"fcgi+unix:///run/app.sock\"} 1\n"
				  "rategate_upstream_connects_total{upstream=\"fcgi://127.0.0.1:9000\"} 3\n"), "%s", b.data);
	cr_expect_not_null(strstr(b.data, "\nrategate_upstream_reuses_total{upstream=\"fcgi+unix:///run/app.sock\"} 599\n"), "%s", b.data);
	cr_expect_not_null(strstr(b.data, "\nrategate_upstream_failures_total{upstream=\"fcgi://127.0.0.1:9000\"} 2\n"), "%s", b.data);
	stats_render(&b, STATS_PROMETHEUS, &s, sr, &st, NULL, 0, 0, 1);
	cr_expect_null(strstr(b.data, "rategate_upstream_connects"), "%s", b.data);
	respond_buf_free(&b);
	stats_rules_free(sr);
	rl_ruleset_free(rs);
}

/* A rule pattern (from the admin's file) with a backslash and
 * bytes that are not UTF-8: both answers stay valid (escaped; U+FFFD),
 * and valid UTF-8 passes unchanged. */
Test(stats, rule_names_are_escaped_and_utf8)
{
	struct rl_ruleset *rs = load("storage memory\n/a\xff\xfe 5/minute\n/caf\xc3\xa9 5/minute\n"
				     "/q\\b 5/minute\n");
	struct stats s;

	memset(&s, 0, sizeof(s));
	struct stats_rules *sr = stats_rules_new(rs, NULL);
	struct stats_store st = { "shm", 0, 10, 0, 0, 0, -1, -1, -1, -1, -1 };
	struct respond_buf b;
	respond_buf_init(&b);
	stats_render(&b, STATS_JSON, &s, sr, &st, NULL, 0, 0, 1);
	cr_expect_not_null(strstr(b.data, "\"rule\":\"/a\xef\xbf\xbd\xef\xbf\xbd\""), "%s", b.data);
	cr_expect_not_null(strstr(b.data, "\"rule\":\"/caf\xc3\xa9\""), "%s", b.data);
	cr_expect_not_null(strstr(b.data, "\"rule\":\"/q\\\\b\""), "%s", b.data);
	cr_expect_null(strstr(b.data, "\xff"), "a raw 0xff byte");
	stats_render(&b, STATS_PROMETHEUS, &s, sr, &st, NULL, 0, 0, 1);
	cr_expect_not_null(strstr(b.data, "rule=\"/a\xef\xbf\xbd\xef\xbf\xbd\""), "%s", b.data);
	cr_expect_null(strstr(b.data, "\xfe"), "a raw 0xfe byte");
	respond_buf_free(&b);
	stats_rules_free(sr);
	rl_ruleset_free(rs);
}

/* One pattern twice in a file (methods=POST, methods=GET): after a
 * reload each rule keeps its own totals; the second never takes the
 * first's (found by a review: both got the first rule's totals). */
Test(stats, carry_over_of_a_pattern_written_twice)
{
	const char *text = "storage memory\n/login 5/minute methods=POST\n/login 100/minute methods=GET\n";
	struct rl_ruleset *rs = load(text);
	struct stats s;
	struct rl_decision d;

	memset(&s, 0, sizeof(s));
	struct stats_rules *sr = stats_rules_new(rs, NULL);
	cr_assert_eq(sr->n, 3);
	memset(&d, 0, sizeof(d));
	d.outcome = RL_ALLOW;
	d.rule = rl_ruleset_rule(rs, 0);
	for (int i = 0; i < 3; i++)
		stats_count(&s, sr, &d, 0, STATS_RATE);
	d.rule = rl_ruleset_rule(rs, 1);
	stats_count(&s, sr, &d, 1, STATS_RATE);
	struct rl_ruleset *rs2 = load(text);
	struct stats_rules *sr2 = stats_rules_new(rs2, sr);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(sr2->r[i].line, sr->r[i].line);
		cr_assert_eq(atomic_load(&sr2->r[i].allowed), atomic_load(&sr->r[i].allowed), "rule %zu", i);
		cr_assert_eq(atomic_load(&sr2->r[i].denied), atomic_load(&sr->r[i].denied), "rule %zu", i);
	}
	stats_rules_free(sr);
	stats_rules_free(sr2);
	rl_ruleset_free(rs);
	rl_ruleset_free(rs2);
}
