/*
 * test_decide.c - the decision engine on the process-local store: which
 * counters apply (rules, defaults, application, exempt, scope, methods),
 * all-or-nothing, keys, proxies, path spellings, dry-run, store keys.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

#define T0 1700000000000LL      /* a virtual clock, ms */

static struct rl_ruleset *rs;
static struct rl_store st;

/* A spy around memstore: records the keys of the last apply, and can be
 * told to fail. */
static char last_keys[32][RL_STORE_KEY_MAX];
static size_t nlast;
static int fail_next;
static const struct rl_store_ops *inner_ops;

static int
spy_apply(void *impl, struct rl_store_op *ops, size_t n, enum rl_mode mode,
	  int64_t now, struct rl_diag *err)
{
	if (fail_next) {
		snprintf(err->msg, sizeof(err->msg), "connection refused");
		return -1;
	}
	nlast = n;
	for (size_t i = 0; i < n && i < 32; i++)
		snprintf(last_keys[i], sizeof(last_keys[i]), "%.*s",
			 (int)ops[i].key_len, ops[i].key);
	return inner_ops->apply(impl, ops, n, mode, now, err);
}

static struct rl_store_ops spy_ops;

static void
setup_rules(const char *text)
{
	struct rl_report rep;

	rs = rl_ruleset_parse("t.rules", text, strlen(text), NULL, &rep);
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	rl_report_free(&rep);
	cr_assert_eq(memstore_new(100000, &st), 0);
	inner_ops = st.ops;
	spy_ops = *st.ops;
	spy_ops.apply = spy_apply;
	st.ops = &spy_ops;
	fail_next = 0;
}

static void
teardown(void)
{
	rl_ruleset_free(rs);
	rs = NULL;
	if (st.ops)
		st.ops->destroy(st.impl);
	memset(&st, 0, sizeof(st));
}

TestSuite(decide, .fini = teardown);

/* A request; params as "NAME=value" strings, NULL-terminated. */
static enum rl_outcome
req_full(const char *method, const char *target, const char *addr,
	 const char *const *params, int64_t now, enum rl_mode mode,
	 uint64_t cost, struct rl_decision *d)
{
	struct rl_param p[16];
	size_t np = 0;
	const char *q = strchr(target, '?');

	for (; params && params[np]; np++) {
		const char *eq = strchr(params[np], '=');
		p[np].name = params[np];
		p[np].name_len = (size_t)(eq - params[np]);
		p[np].value = eq + 1;
		p[np].value_len = strlen(eq + 1);
	}
	struct rl_request r = {
		.method = method,
		.path = target,
		.path_len = q ? (size_t)(q - target) : strlen(target),
		.query = q ? q + 1 : NULL,
		.query_len = q ? strlen(q + 1) : 0,
		.remote_addr = addr,
		.remote_addr_len = addr ? strlen(addr) : 0,
		.params = p,
		.nparams = np,
		.cost = cost,
	};
	return rl_decide(rs, &st, &r, now, mode, d);
}

static enum rl_outcome
hit(const char *method, const char *target, const char *addr, int64_t now,
    struct rl_decision *d)
{
	return req_full(method, target, addr, NULL, now, RL_HIT, 0, d);
}

/* How many of n hits at now are allowed. */
static int
allowed_of(int n, const char *method, const char *target, const char *addr,
	   int64_t now)
{
	struct rl_decision d;
	int ok = 0;

	for (int i = 0; i < n; i++)
		ok += hit(method, target, addr, now, &d) == RL_ALLOW;
	return ok;
}

Test(decide, retry_seconds_round_up_never_zero)
{
	cr_assert_eq(rl_retry_seconds(0), 1);
	cr_assert_eq(rl_retry_seconds(1), 1);
	cr_assert_eq(rl_retry_seconds(1000), 1);
	cr_assert_eq(rl_retry_seconds(1001), 2);
	cr_assert_eq(rl_retry_seconds(59999), 60);
	/* a saturated wait stays the longest one, never wraps to 1 */
	cr_assert_eq(rl_retry_seconds(INT64_MAX), INT64_MAX / 1000 + 1);
	cr_assert_eq(rl_retry_seconds(INT64_MAX - 806), INT64_MAX / 1000 + 1);
}

/* A gcra bucket much larger than its rate: the wait of the second hit
 * (2e8 excess hits at 1 per 100 years) exceeds INT64_MAX ms, so it is
 * saturated; Retry-After must still be astronomically long, not 1 s. */
Test(decide, retry_after_of_a_saturated_wait)
{
	struct rl_decision d;

	setup_rules("/x \"1/100 years\" strategy=gcra burst=1000000000\n");
	cr_assert_eq(req_full("GET", "/x", "192.0.2.1", NULL, T0, RL_HIT,
			      600000000, &d), RL_ALLOW);
	cr_assert_eq(req_full("GET", "/x", "192.0.2.1", NULL, T0, RL_HIT,
			      600000000, &d), RL_DENY);
	cr_assert_geq(rl_retry_seconds(d.retry_ms), INT64_MAX / 1000,
		      "Retry-After %lld s", (long long)rl_retry_seconds(d.retry_ms));
}

Test(decide, rule_replaces_defaults)
{
	struct rl_decision d;

	setup_rules("default 3/minute\n/slow 1/day\n");
	cr_assert_eq(hit("GET", "/slow", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_str_eq(d.limit->text, "1/day");
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.reset_ms, T0 + 86400000);
	cr_assert_eq(d.origin, RL_FROM_RULE);
	cr_assert_eq(nlast, 1);
	cr_assert_str_eq(last_keys[0], "rg:r/slow:addr=192.0.2.1:1/86400000/fw");

	cr_assert_eq(hit("GET", "/slow", "192.0.2.1", T0 + 5000, &d), RL_DENY);
	cr_assert_str_eq(d.limit->text, "1/day");
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.retry_ms, 86400000 - 5000);
	cr_assert_str_eq(d.message, "Too Many Requests: rate limit exceeded");
	/* another client has its own budget */
	cr_assert_eq(hit("GET", "/slow", "192.0.2.2", T0 + 5000, &d), RL_ALLOW);
}

Test(decide, defaults_per_path_and_client)
{
	struct rl_decision d;

	setup_rules("default 2/minute\n");
	cr_assert_eq(allowed_of(5, "GET", "/a", "192.0.2.1", T0), 2);
	cr_assert_eq(allowed_of(5, "GET", "/b", "192.0.2.1", T0), 2);
	cr_assert_eq(allowed_of(5, "GET", "/a", "192.0.2.9", T0), 2);
	hit("GET", "/a?x=1", "192.0.2.1", T0, &d);
	cr_assert_eq(d.outcome, RL_DENY);
	cr_assert_eq(d.origin, RL_FROM_DEFAULT);
	cr_assert_str_eq(last_keys[0], "rg:d/a:addr=192.0.2.1:2/60000/fw");
	/* a new window */
	cr_assert_eq(allowed_of(5, "GET", "/a", "192.0.2.1", T0 + 60000), 2);
}

Test(decide, defaults_add)
{
	setup_rules("default 2/minute\n/medium 5/minute defaults=add\n/other 5/minute\n");
	cr_assert_eq(allowed_of(6, "GET", "/medium", "192.0.2.1", T0), 2);
	cr_assert_eq(allowed_of(6, "GET", "/other", "192.0.2.1", T0), 5);
}

Test(decide, application_one_budget_across_paths)
{
	struct rl_decision d;

	setup_rules("application 3/minute\n/a 10/minute\n");
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(nlast, 2);
	cr_assert_str_eq(last_keys[1], "rg:a:addr=192.0.2.1:3/60000/fw");
	cr_assert_eq(hit("GET", "/b", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("POST", "/c/d", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_DENY);
	cr_assert_eq(d.origin, RL_FROM_APPLICATION);
	cr_assert_str_eq(d.limit->text, "3/minute");
}

Test(decide, exempt_skips_everything)
{
	struct rl_decision d;

	setup_rules("default 1/minute\napplication 1/minute\n/ping exempt\n");
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(hit("GET", "/ping", "192.0.2.1", T0, &d), RL_ALLOW);
		cr_assert_eq(d.exempt, 1);
		cr_assert_null(d.limit);
	}
	/* the application budget is untouched by /ping */
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/y", "192.0.2.1", T0, &d), RL_DENY);
}

Test(decide, exempt_for_some_methods_only)
{
	setup_rules("default 1/minute\n/ping exempt methods=GET,HEAD\n");
	cr_assert_eq(allowed_of(5, "GET", "/ping", "192.0.2.1", T0), 5);
	cr_assert_eq(allowed_of(5, "POST", "/ping", "192.0.2.1", T0), 1);
}

Test(decide, all_or_nothing)
{
	struct rl_decision d;

	/* the rule's 5/minute and the default 2/10 seconds both apply */
	setup_rules("default 2 per 10 seconds\n/x 5/minute defaults=add\n");
	cr_assert_eq(allowed_of(5, "GET", "/x", "192.0.2.1", T0), 2);
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0, &d), RL_DENY);
	cr_assert_str_eq(d.limit->text, "2 per 10 seconds");
	cr_assert_eq(d.retry_ms, 10000);
	/* denied hits consumed nothing of 5/minute: 3 are left */
	cr_assert_eq(allowed_of(5, "GET", "/x", "192.0.2.1", T0 + 10000), 2);
	cr_assert_eq(allowed_of(5, "GET", "/x", "192.0.2.1", T0 + 20000), 1);
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0 + 20000, &d), RL_DENY);
	cr_assert_str_eq(d.limit->text, "5/minute");
	cr_assert_eq(d.retry_ms, 40000);
}

Test(decide, denial_reports_longest_wait)
{
	struct rl_decision d;

	setup_rules("/x 1/minute; 1/hour\n");
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0 + 1000, &d), RL_DENY);
	cr_assert_str_eq(d.limit->text, "1/hour");
	cr_assert_eq(d.retry_ms, 3600000 - 1000);
}

Test(decide, allowed_reports_fewest_remaining)
{
	struct rl_decision d;

	setup_rules("/x 100/hour; 3/minute\n");
	cr_assert_eq(hit("GET", "/x", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_str_eq(d.limit->text, "3/minute");
	cr_assert_eq(d.remaining, 2);
	cr_assert_eq(d.reset_ms, T0 + 60000);
}

Test(decide, shared_scope)
{
	setup_rules("/login 3/minute methods=POST scope=auth\n/reset 3/minute methods=POST scope=auth\n");
	cr_assert_eq(allowed_of(2, "POST", "/login", "192.0.2.1", T0), 2);
	cr_assert_eq(allowed_of(2, "POST", "/reset", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:rauth:addr=192.0.2.1:3/60000/fw");
}

/* The default limits count a path that continues past a file as that
 * file (PATH_INFO: "/page.php/a" runs page.php): a client varying the
 * suffix used to get a fresh default budget each time (found by a review
 * against lighttpd). */
Test(decide, default_limits_count_path_info_as_its_file)
{
	setup_rules("default 2/minute\n");
	cr_assert_eq(allowed_of(1, "GET", "/page.php", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(1, "GET", "/page.php/a", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/page.php:addr=192.0.2.1:2/60000/fw");
	cr_assert_eq(allowed_of(3, "GET", "/page.php/b/c", "192.0.2.1", T0), 0);
	cr_assert_eq(allowed_of(1, "GET", "/page.php/", "192.0.2.1", T0), 0);
	cr_assert_eq(allowed_of(1, "GET", "/dir/x.tar.gz/more", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/dir/x.tar.gz:addr=192.0.2.1:2/60000/fw");
	/* not a file: all-digit extension, a leading dot, the last segment */
	cr_assert_eq(allowed_of(1, "GET", "/v1.2/users", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/v1.2/users:addr=192.0.2.1:2/60000/fw");
	cr_assert_eq(allowed_of(1, "GET", "/.well-known/x", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/.well-known/x:addr=192.0.2.1:2/60000/fw");
	cr_assert_eq(allowed_of(1, "GET", "/a/b.html", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/a/b.html:addr=192.0.2.1:2/60000/fw");
	cr_assert_eq(allowed_of(1, "GET", "/x.toolongextension/y", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:d/x.toolongextension/y:addr=192.0.2.1:2/60000/fw");
}

Test(decide, methods_filter_and_per_method)
{
	setup_rules("default 100/minute\n/login 2/minute methods=POST\n/item 1/minute per-method\n");
	cr_assert_eq(allowed_of(5, "POST", "/login", "192.0.2.1", T0), 2);
	/* GET /login is not covered by the rule: defaults apply */
	cr_assert_eq(allowed_of(5, "GET", "/login", "192.0.2.1", T0), 5);
	cr_assert_eq(allowed_of(3, "GET", "/item", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(3, "DELETE", "/item", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:r/item@DELETE:addr=192.0.2.1:1/60000/fw");
	/* another case of the same method is the same method (Apache passes
	 * "post" on; applications upper-case it): no escape, one count */
	cr_assert_eq(allowed_of(3, "post", "/login", "192.0.2.2", T0), 2);
	cr_assert_eq(allowed_of(1, "pOsT", "/login", "192.0.2.2", T0), 0);
	cr_assert_eq(allowed_of(2, "delete", "/item", "192.0.2.1", T0), 0);
	cr_assert_str_eq(last_keys[0], "rg:r/item@DELETE:addr=192.0.2.1:1/60000/fw");
}

/* Found by a review against Apache and nginx, which pass any method token
 * on: per-method gave a budget per made-up method (FOO, BAR, ...), and
 * HEAD, which servers answer by running GET's handler, escaped a
 * methods=GET rule and had a per-method budget of its own. */
Test(decide, head_is_get_and_made_up_methods_share_one_budget)
{
	setup_rules("/item 1/minute per-method\n/search 2/minute methods=GET\n/put 1/minute methods=PUT\n");
	cr_assert_eq(allowed_of(1, "GET", "/item", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(2, "HEAD", "/item", "192.0.2.1", T0), 0);
	cr_assert_str_eq(last_keys[0], "rg:r/item@GET:addr=192.0.2.1:1/60000/fw");
	cr_assert_eq(allowed_of(1, "FOO", "/item", "192.0.2.1", T0), 1);
	cr_assert_str_eq(last_keys[0], "rg:r/item@OTHER:addr=192.0.2.1:1/60000/fw");
	cr_assert_eq(allowed_of(1, "BAR", "/item", "192.0.2.1", T0), 0);
	cr_assert_eq(allowed_of(1, "PROPFIND", "/item", "192.0.2.1", T0), 0);
	cr_assert_eq(allowed_of(1, "other", "/item", "192.0.2.1", T0), 0);
	cr_assert_str_eq(last_keys[0], "rg:r/item@OTHER:addr=192.0.2.1:1/60000/fw");
	/* the known methods keep their own budgets */
	cr_assert_eq(allowed_of(1, "OPTIONS", "/item", "192.0.2.1", T0), 1);

	/* methods=GET admits HEAD: two GET, then HEAD is denied */
	cr_assert_eq(allowed_of(1, "GET", "/search", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(1, "HEAD", "/search", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(2, "head", "/search", "192.0.2.1", T0), 0);
	cr_assert_eq(allowed_of(1, "GET", "/search", "192.0.2.1", T0), 0);
	/* but only GET does: methods=PUT does not admit HEAD or GET, which
	 * are unlimited here (no defaults) */
	cr_assert_eq(allowed_of(3, "HEAD", "/put", "192.0.2.1", T0), 3);
	cr_assert_eq(allowed_of(2, "PUT", "/put", "192.0.2.1", T0), 1);
}

Test(decide, path_spellings_share_one_budget)
{
	struct rl_decision d;
	static const char *const spellings[] = {
		"/login", "//login", "/./login", "/x/../login", "/%6cogin",
		"/login;jsessionid=1", "/login/", "/%2e%2e/login", "/login?a=b",
	};

	setup_rules("/login 9/minute\n");
	for (size_t i = 0; i < 9; i++) {
		cr_assert_eq(hit("GET", spellings[i], "192.0.2.1", T0, &d), RL_ALLOW,
			     "%s", spellings[i]);
		cr_assert_not_null(d.rule, "%s", spellings[i]);
		cr_assert_eq(d.remaining, 8 - i, "%s", spellings[i]);
	}
	cr_assert_eq(hit("GET", "/LOGIN", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_null(d.rule);
}

/* Spellings lighttpd and Apache hand to the script a rule names (found
 * by a review against real servers): ";" segments are names there, not
 * dot segments, so "/login.cgi/..;" runs login.cgi and must count on its
 * rule; an encoded '/' with a dot segment is resolved differently by
 * lighttpd and Apache, so it is refused. */
Test(decide, semicolon_and_encoded_slash_spellings_do_not_escape)
{
	struct rl_decision d;

	setup_rules("/login.cgi 1/minute\n/api/** 1/minute\n/ping exempt\n");
	cr_assert_eq(hit("GET", "/login.cgi", "192.0.2.1", T0, &d), RL_ALLOW);
	static const char *const script[] = {
		"/login.cgi/..;", "/login.cgi/..%3B", "/login.cgi/.;",
		"/login.cgi/;/..", "/login.cgi/..;/ping", "/x;/../login.cgi",
	};
	for (size_t i = 0; i < sizeof(script) / sizeof(script[0]); i++) {
		cr_assert_eq(hit("GET", script[i], "192.0.2.1", T0, &d), RL_DENY,
			     "%s", script[i]);
		cr_assert_str_eq(d.rule->pattern.text, "/login.cgi", "%s", script[i]);
	}
	cr_assert_eq(hit("GET", "/api/x", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/api/x/..;/..;", "192.0.2.1", T0, &d), RL_DENY);
	cr_assert_eq(hit("GET", "/api/;x/../y", "192.0.2.1", T0, &d), RL_DENY);
	static const char *const ambiguous[] = {
		"/login.cgi/%2f/..", "/sub/%2F/../login.cgi", "/api/%2f/./x",
	};
	for (size_t i = 0; i < sizeof(ambiguous) / sizeof(ambiguous[0]); i++) {
		cr_assert_eq(hit("GET", ambiguous[i], "192.0.2.1", T0, &d),
			     RL_BAD_REQUEST, "%s", ambiguous[i]);
		cr_assert(strstr(d.error, "ambiguous path") != NULL, "%s", d.error);
	}
	/* an encoded '/' alone is one reading for every server */
	cr_assert_eq(hit("GET", "/api/a%2Fb", "192.0.2.1", T0, &d), RL_DENY);
}

Test(decide, case_insensitive)
{
	setup_rules("case-insensitive on\n/Login 2/minute\n");
	cr_assert_eq(allowed_of(1, "GET", "/LOGIN", "192.0.2.1", T0), 1);
	cr_assert_eq(allowed_of(3, "GET", "/login", "192.0.2.1", T0), 1);
}

Test(decide, bad_path)
{
	struct rl_decision d;

	setup_rules("default 1/minute\n");
	cr_assert_eq(hit("GET", "/a%zz", "192.0.2.1", T0, &d), RL_BAD_REQUEST);
	cr_assert_str_eq(d.client, "192.0.2.1", "a bad path's log line names its client");
	cr_assert(strncmp(d.error, "bad request path: ", 18) == 0, "%s", d.error);
	cr_assert_eq(hit("GET", "/a%00b", "192.0.2.1", T0, &d), RL_BAD_REQUEST);
	cr_assert_eq(hit("GET", "relative", "192.0.2.1", T0, &d), RL_BAD_REQUEST);
}

Test(decide, glob_precedence)
{
	struct rl_decision d;

	setup_rules("/api/** 100/minute\n/api/*/admin 1/minute\n/api/v1/** 50/minute\n/api/v1/login 2/minute\n");
	hit("GET", "/api/v2/admin", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/*/admin");
	hit("GET", "/api/v1/admin", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/v1/**");
	hit("GET", "/api/v1/login", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/v1/login");
	hit("GET", "/api", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/**");
	hit("GET", "/apis", "192.0.2.1", T0, &d);
	cr_assert_null(d.rule);

	/* at equal literal text, a one-segment star goes before a
	 * whole-segment double star (any depth), whatever the file order */
	setup_rules("/e/** 1/minute\n/e/* 2/minute\n/** 3/minute\n/* 4/minute\n");
	hit("GET", "/e/x", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/e/*");
	hit("GET", "/e/x/y", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/e/**");
	hit("GET", "/e", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/e/**");
	hit("GET", "/f", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/*");
	hit("GET", "/f/g", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/**");
}

/* A rule naming a file also takes the file followed by more segments
 * (PATH_INFO: servers hand /report.cgi/x to report.cgi), as if its
 * pattern's subtree had been written after it. */
Test(decide, file_rule_covers_path_info)
{
	struct rl_decision d;

	setup_rules("default 100/minute\n"
		    "/api/** 50/minute\n"
		    "/report.cgi 2/minute\n"
		    "/files/*.pdf 3/minute\n"
		    "/api/index.php 4/minute\n"
		    "/api/index.php/login 5/minute\n"
		    "/v1.2 6/minute\n"
		    "/dl/big.7z 7/minute\n"
		    "/ping.txt exempt\n");
	hit("GET", "/report.cgi/x", "192.0.2.1", T0, &d);
	cr_assert_not_null(d.rule);
	cr_assert_str_eq(d.rule->pattern.text, "/report.cgi");
	cr_assert_eq(d.remaining, 1, "one budget with /report.cgi");
	hit("GET", "/report.cgi", "192.0.2.1", T0, &d);
	cr_assert_eq(hit("GET", "/report.cgi/y/z", "192.0.2.1", T0, &d), RL_DENY);
	hit("GET", "/files/a.pdf/anything", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/files/*.pdf");
	/* only where no written rule matches: a written subtree keeps its
	 * paths (a route named like a file, /pkg/chart.js/v/4.0, is not
	 * the file's); a rule of its own wins */
	hit("GET", "/api/index.php/users", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/**");
	hit("GET", "/api/index.php/login", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/api/index.php/login");
	/* an extension may hold digits, not digits alone */
	hit("GET", "/dl/big.7z/x", "192.0.2.1", T0, &d);
	cr_assert_str_eq(d.rule->pattern.text, "/dl/big.7z");
	/* not file names: no subtree */
	hit("GET", "/v1.2/x", "192.0.2.1", T0, &d);
	cr_assert_null(d.rule);
	hit("GET", "/reportXcgi/x", "192.0.2.1", T0, &d);
	cr_assert_null(d.rule);
	/* exempt, too: the same file */
	hit("GET", "/ping.txt/x", "192.0.2.1", T0, &d);
	cr_assert_eq(d.exempt, 1);
}

Test(decide, subtree_is_one_budget)
{
	setup_rules("/api/** 3/minute\n");
	cr_assert_eq(allowed_of(2, "GET", "/api/a", "192.0.2.1", T0), 2);
	cr_assert_eq(allowed_of(2, "GET", "/api/b/c", "192.0.2.1", T0), 1);
}

Test(decide, header_key_with_address_fallback)
{
	struct rl_decision d;
	const char *k1[] = { "HTTP_X_API_KEY=k1", NULL };
	const char *k2[] = { "HTTP_X_API_KEY=k2", NULL };
	const char *empty[] = { "HTTP_X_API_KEY=  ", NULL };
	const char *forged[] = { "HTTP_X_API_KEY=addr=192.0.2.1", NULL };

	setup_rules("/api/** 2/minute key=header:X-Api-Key|addr\n");
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.1", k1, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "h.x-api-key=k1");
	cr_assert_str_eq(last_keys[0], "rg:r/api/**:h.x-api-key=k1:2/60000/fw");
	/* the same key from another address shares the budget */
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.2", k1, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.3", k1, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.3", k2, T0, RL_HIT, 0, &d), RL_ALLOW);
	/* no header or an empty one: the address */
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.1");
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.1", empty, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	/* a header value cannot impersonate the address key */
	cr_assert_eq(req_full("GET", "/api/x", "192.0.2.9", forged, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "h.x-api-key=addr%3D192.0.2.1");
}

Test(decide, missing_key_policies)
{
	struct rl_decision d;
	const char *user[] = { "REMOTE_USER=alice", NULL };

	setup_rules("/a 1/minute key=var:REMOTE_USER\n/b 1/minute key=var:REMOTE_USER missing-key=deny\n");
	/* default policy: without the variable, the address is the key */
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.1");
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", user, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "v.REMOTE_USER=alice");
	/* deny policy */
	cr_assert_eq(req_full("GET", "/b", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_DENY_KEY);
	cr_assert_str_eq(d.error, "no usable key for \"/b\" (key=var:REMOTE_USER)");
	cr_assert_eq(req_full("GET", "/b", "192.0.2.1", user, T0, RL_HIT, 0, &d), RL_ALLOW);
}

/* A rule whose key is missing falls back to the address, spelled as the
 * key "addr" spells it, IPv6 included: two rules sharing a scope, one
 * keyed by a header the client does not send and one by address, count
 * that client once. */
Test(decide, missing_key_fallback_is_the_addr_key)
{
	struct rl_decision d;

	setup_rules("/a 1/minute key=header:X-Api-Key scope=s\n/b 1/minute scope=s\n");
	cr_assert_eq(req_full("GET", "/a", "2001:db8::1", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=2001%3Adb8%3A%3A/64");
	cr_assert_eq(req_full("GET", "/b", "2001:db8::1", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.key, "addr=2001%3Adb8%3A%3A/64");
	cr_assert_eq(nlast, 1);
	cr_assert_str_eq(last_keys[0], "rg:rs:addr=2001%3Adb8%3A%3A/64:1/60000/fw");
}

Test(decide, cookie_and_query_keys)
{
	struct rl_decision d;
	const char *c1[] = { "HTTP_COOKIE=theme=dark; sid=abc; x=1", NULL };
	const char *c2[] = { "HTTP_COOKIE=sid=abc; sid=def", NULL };

	setup_rules("/c 1/minute key=cookie:sid\n/q 1/minute key=query:api_key\n");
	cr_assert_eq(req_full("GET", "/c", "192.0.2.1", c1, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "c.sid=abc");
	/* two different values: ambiguous, so the address decides */
	cr_assert_eq(req_full("GET", "/c", "192.0.2.1", c2, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.1");
	/* percent-encoded, the same session to PHP or Rack: the same key */
	const char *c3[] = { "HTTP_COOKIE=sid=ab%63", NULL };
	const char *c4[] = { "HTTP_COOKIE=sid=\"%61bc\"; sid=abc", NULL };
	cr_assert_eq(req_full("GET", "/c", "192.0.2.2", c3, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.key, "c.sid=abc");
	cr_assert_eq(req_full("GET", "/c", "192.0.2.3", c4, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.key, "c.sid=abc");

	cr_assert_eq(req_full("GET", "/q?api_key=a%62", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "q.api_key=ab");
	/* another spelling of the same value is the same key */
	cr_assert_eq(req_full("GET", "/q?x=1&api_key=ab", "192.0.2.2", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_eq(req_full("GET", "/q?api_key=ab&api_key=zz", "192.0.2.3", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.3");
	/* spaces around a value are trimmed, as a header's are: "+ab%20"
	 * is "ab" (denied), and the same value twice is not ambiguous */
	cr_assert_eq(req_full("GET", "/q?api_key=+ab%20", "192.0.2.4", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.key, "q.api_key=ab");
	cr_assert_eq(req_full("GET", "/q?api_key=ab&api_key=%09ab", "192.0.2.5", NULL, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.key, "q.api_key=ab");
	/* a raw ';' anywhere (a separator to some applications) makes the
	 * query ambiguous */
	cr_assert_eq(req_full("GET", "/q?api_key=ab;x=1", "192.0.2.9", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.9");
	cr_assert_eq(req_full("GET", "/q?x=1;api_key=alice&api_key=n1", "192.0.2.10", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.10");
	/* a value of only spaces is empty, that is missing: never a bucket
	 * shared by everyone who sends "?api_key=+" */
	cr_assert_eq(req_full("GET", "/q?api_key=+", "192.0.2.6", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.6");
	cr_assert_eq(req_full("GET", "/q?api_key=%20%20", "192.0.2.7", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.7");
}

/* PHP reads "api.key", "api key", " api_key" and "api_key[x]" as api_key
 * (and decodes cookie names): a client sending a made-up api_key beside
 * the real value under another spelling must not be counted under the
 * made-up one (found by a review against php-cgi). */
Test(decide, php_name_spellings_are_one_name)
{
	struct rl_decision d;
	char longname[1200];

	setup_rules("/c 1/minute key=cookie:sess_id\n/q 1/minute key=query:api_key\n");
	static const char *const queries[] = {
		"/q?api_key=R1&api.key=VALID", "/q?api_key=R2&api+key=VALID",
		"/q?api_key=R3&api%5Bkey=VALID", "/q?api_key=R4&+api_key=VALID",
		"/q?api_key=R5&api_key[0]=VALID", "/q?api.key=VALID&api_key=R6",
		"/q?api_key=R7&api_key%00x=VALID", "/q?api_key=R8&api_key%00=VALID",
	};
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		cr_assert_eq(req_full("GET", queries[i], "192.0.2.1", NULL, T0, RL_HIT, 0, &d),
			     i == 0 ? RL_ALLOW : RL_DENY, "%s", queries[i]);
		cr_assert_str_eq(d.key, "addr=192.0.2.1", "%s", queries[i]);
	}
	/* one value under two spellings is still that value */
	cr_assert_eq(req_full("GET", "/q?api_key=K&api.key=K", "192.0.2.2", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "q.api_key=K");
	/* a name too long to compare makes the query unusable */
	memset(longname, ' ', sizeof(longname));
	memcpy(longname, "/q?api_key=R7&", 14);
	strcpy(longname + sizeof(longname) - 14, "api_key=VALID");
	cr_assert_eq(req_full("GET", longname, "192.0.2.3", NULL, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.3");

	static const char *const cookies[] = {
		"HTTP_COOKIE=sess.id=VALID; sess_id=R1",
		"HTTP_COOKIE=sess id=VALID; sess_id=R2",
		"HTTP_COOKIE=sess%5Fid=VALID; sess_id=R3",
		"HTTP_COOKIE=sess_id=R4; sess[id=VALID",
		"HTTP_COOKIE=a=1;\vsess_id=VALID; sess_id=R5",
		"HTTP_COOKIE=a=1;\fsess_id=VALID; sess_id=R6",
		"HTTP_COOKIE=sess_id%00x=VALID; sess_id=R7",
	};
	for (size_t i = 0; i < sizeof(cookies) / sizeof(cookies[0]); i++) {
		const char *c[] = { cookies[i], NULL };
		cr_assert_eq(req_full("GET", "/c", "192.0.2.4", c, T0, RL_HIT, 0, &d),
			     i == 0 ? RL_ALLOW : RL_DENY, "%s", cookies[i]);
		cr_assert_str_eq(d.key, "addr=192.0.2.4", "%s", cookies[i]);
	}
	const char *same[] = { "HTTP_COOKIE=sess.id=S; sess_id=S", NULL };
	cr_assert_eq(req_full("GET", "/c", "192.0.2.5", same, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "c.sess_id=S");
}

/* Cookies as PHP 8.2 reads them (found by a review against php-cgi):
 * names are not decoded there, a cookie without '=' is an empty value,
 * '+' stays '+' and quotes stay.  rategate must never count a cookie PHP
 * does not see, nor split one value into several keys. */
Test(decide, cookies_never_counted_where_php_sees_none)
{
	struct rl_decision d;

	setup_rules("/c 1/minute key=cookie:sid|addr\n");
	/* a name PHP does not read as sid (Rack and Go would): ambiguous,
	 * the address decides (it used to be c.sid=r1, a key per value) */
	static const char *const addr_only[] = {
		"HTTP_COOKIE=s%69d=r1", "HTTP_COOKIE=sid; sid=r2", "HTTP_COOKIE=sid",
		"HTTP_COOKIE=sid =r3", "HTTP_COOKIE=sid=r4, x=1",
		"HTTP_COOKIE=sid=r\\5", "HTTP_COOKIE=sid=\"r6", "HTTP_COOKIE=x=1; sid=",
	};
	for (size_t i = 0; i < sizeof(addr_only) / sizeof(addr_only[0]); i++) {
		const char *c[] = { addr_only[i], NULL };
		cr_assert_eq(req_full("GET", "/c", "192.0.2.1", c, T0, RL_HIT, 0, &d),
			     i == 0 ? RL_ALLOW : RL_DENY, "%s", addr_only[i]);
		cr_assert_str_eq(d.key, "addr=192.0.2.1", "%s", addr_only[i]);
	}
	/* one value, several spellings: one key ('+' and %2B are both a
	 * space; quotes, sent or encoded, dropped) */
	static const char *const ab[] = {
		"HTTP_COOKIE=sid=a+b", "HTTP_COOKIE=sid=a%2Bb", "HTTP_COOKIE=sid=a%20b",
		"HTTP_COOKIE=sid=\"a+b\"", "HTTP_COOKIE=sid=%22a%2bb%22",
	};
	for (size_t i = 0; i < sizeof(ab) / sizeof(ab[0]); i++) {
		const char *c[] = { ab[i], NULL };
		cr_assert_eq(req_full("GET", "/c", "192.0.2.2", c, T0, RL_HIT, 0, &d),
			     i == 0 ? RL_ALLOW : RL_DENY, "%s", ab[i]);
		cr_assert_str_eq(d.key, "c.sid=a%20b", "%s: %s", ab[i], d.key);
	}
	/* a header parsers read apart makes the key ambiguous, wherever the
	 * fault (found by a second review: Python, Werkzeug, PHP's limits) */
	static char many[8000];
	size_t o = 0;
	memcpy(many, "HTTP_COOKIE=", 12);
	o = 12;
	for (int i = 0; i < 1000; i++)
		o += (size_t)sprintf(many + o, "a%d=1;", i);
	strcpy(many + o, "sid=r9");
	static const char *const apart[] = {
		"HTTP_COOKIE=sid=r1; x=1 sid=real",             /* SimpleCookie: real */
		"HTTP_COOKIE=sid=r2; y",                         /* SimpleCookie: nothing */
		"HTTP_COOKIE=x=\"a;sid=r3;b=\"",                  /* Werkzeug: x only */
		"HTTP_COOKIE=\x1fsid=real; sid=r4",               /* Werkzeug: real */
		"HTTP_COOKIE=\xc2\xa0sid=real; sid=r5",           /* Werkzeug: real */
		"HTTP_COOKIE=sid[a][a][a]=r6",                   /* PHP nesting */
		"HTTP_COOKIE=x=1,2; sid=r7",
		"HTTP_COOKIE=s\001d=1; sid=r8",
		many,                                            /* PHP max_input_vars */
	};
	for (size_t i = 0; i < sizeof(apart) / sizeof(apart[0]); i++) {
		const char *c[] = { apart[i], NULL };
		req_full("GET", "/c", "192.0.2.9", c, T0, RL_HIT, 0, &d);
		cr_assert_str_eq(d.key, "addr=192.0.2.9", "%.60s", apart[i]);
	}
	/* well formed, with other cookies around: still the key */
	const char *ok[] = { "HTTP_COOKIE=theme=dark;sid=k7 ;  lang=\"en\"", NULL };
	req_full("GET", "/c", "192.0.2.9", ok, T0, RL_HIT, 0, &d);
	cr_assert_str_eq(d.key, "c.sid=k7");

	const char *q[] = { "HTTP_COOKIE=sid=\"q1\"; sid=%22q1%22; sid=q1", NULL };
	cr_assert_eq(req_full("GET", "/c", "192.0.2.3", q, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "c.sid=q1");
}

Test(decide, oversized_key_part_falls_back)
{
	struct rl_decision d;
	char big[300] = "HTTP_X_API_KEY=";
	memset(big + 15, 'k', 200);
	big[215] = '\0';
	const char *p[] = { big, NULL };

	setup_rules("/a 1/minute key=header:X-Api-Key\n");
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", p, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.1");
}

/* A cookie too long to be a key, then an empty one of the same name: still
 * ambiguous, so the address decides (this once passed a NULL value to
 * memcmp; found by fuzz_decide under UBSan). */
Test(decide, oversized_cookie_then_empty_cookie_falls_back)
{
	struct rl_decision d;
	char big[400] = "HTTP_COOKIE=sid=";
	size_t n = strlen(big);
	memset(big + n, 'k', 300);
	strcpy(big + n + 300, "; sid=");
	const char *p[] = { big, NULL };

	setup_rules("/c 1/minute key=cookie:sid\n");
	cr_assert_eq(req_full("GET", "/c", "192.0.2.1", p, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.key, "addr=192.0.2.1");
	cr_assert_eq(req_full("GET", "/c", "192.0.2.1", p, T0, RL_HIT, 0, &d), RL_DENY);
}

Test(decide, trusted_proxy_hops)
{
	struct rl_decision d;
	const char *x1[] = { "HTTP_X_FORWARDED_FOR=6.6.6.6, 203.0.113.5", NULL };
	/* two lines as nginx 1.22 passes them */
	const char *x2[] = { "SERVER_SOFTWARE=nginx/1.22.1", "HTTP_X_FORWARDED_FOR=1.1.1.1", "HTTP_X_FORWARDED_FOR=7.7.7.7, 203.0.113.5", NULL };
	const char *none[] = { NULL };

	setup_rules("trusted-proxies 1\n/a 1/minute\n");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", x1, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "203.0.113.5");
	cr_assert_eq(d.addr_source, RL_ADDR_HEADER);
	/* a client prepending addresses does not change its key */
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", x2, T0, RL_HIT, 0, &d), RL_DENY);
	cr_assert_str_eq(d.client, "203.0.113.5");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", none, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "10.0.0.1");
	cr_assert_eq(d.addr_source, RL_ADDR_REMOTE);
}

/* rl_request_client: the client as the decision resolves it, whole, and
 * VARIANTS (REMOTE_ADDR) for a header that came as name variants. */
Test(decide, request_client_resolves_as_the_decision)
{
	struct rl_param one = { "HTTP_X_FORWARDED_FOR", 20, "6.6.6.6, 2001:db8::7", 20 };
	struct rl_param two[2] = {
		{ "HTTP_X_FORWARDED_FOR", 20, "192.0.2.9", 9 },
		{ "HTTP_X_FORWARDED_FOR", 20, "192.0.2.8", 9 },
	};
	struct rl_request r = { .method = "GET", .path = "/", .path_len = 1,
				.remote_addr = "10.0.0.1", .remote_addr_len = 8,
				.params = &one, .nparams = 1 };
	struct rl_addr a, want;

	setup_rules("trusted-proxies 1\nipv6-prefix 48\n/a 1/minute\n");
	cr_assert_eq(rl_request_client(rs, &r, &a), RL_ADDR_HEADER);
	cr_assert_eq(rl_addr_parse("2001:db8::7", 11, &want), 0);
	cr_assert_eq(memcmp(&a, &want, sizeof(a)), 0, "the whole address, not its /48");
	r.params = two;
	r.nparams = 2;
	cr_assert_eq(rl_request_client(rs, &r, &a), RL_ADDR_VARIANTS);
	cr_assert_eq(rl_addr_parse("10.0.0.1", 8, &want), 0);
	cr_assert_eq(memcmp(&a, &want, sizeof(a)), 0);
	r.nparams = 0;
	cr_assert_eq(rl_request_client(rs, &r, &a), RL_ADDR_REMOTE);
	cr_assert_eq(memcmp(&a, &want, sizeof(a)), 0);
}

/* lighttpd passes X_Forwarded_For as a second HTTP_X_FORWARDED_FOR after
 * the real one, which a trusted proxy appended to: two of them are not
 * trusted (the client is REMOTE_ADDR, the nearest hop), except from nginx,
 * which passes repeated lines as they came. */
Test(decide, lighttpd_header_variants_are_not_trusted)
{
	struct rl_decision d;
	const char *x2[] = { "SERVER_SOFTWARE=lighttpd/1.4.69",
			     "HTTP_X_FORWARDED_FOR=1.1.1.1, 203.0.113.5",
			     "HTTP_X_FORWARDED_FOR=9.9.8.1", NULL };
	const char *x3[] = { "SERVER_SOFTWARE=lighttpd/1.4.69",
			     "HTTP_X_FORWARDED_FOR=1.1.1.1, 203.0.113.5",
			     "HTTP_X_FORWARDED_FOR=9.9.8.2", NULL };
	const char *one[] = { "SERVER_SOFTWARE=lighttpd/1.4.69",
			      "HTTP_X_FORWARDED_FOR=1.1.1.1, 203.0.113.5", NULL };
	const char *ng[] = { "SERVER_SOFTWARE=nginx/1.22.1",
			     "HTTP_X_FORWARDED_FOR=1.1.1.1",
			     "HTTP_X_FORWARDED_FOR=203.0.113.7", NULL };

	setup_rules("trusted-proxies 1\n/a 1/minute\n");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", x2, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "10.0.0.1");
	cr_assert_eq(d.addr_source, RL_ADDR_VARIANTS);
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", x3, T0, RL_HIT, 0, &d), RL_DENY,
		      "another invented address is the same client");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", one, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "203.0.113.5");
	/* nginx 1.22 passes repeated lines as they came: read in order */
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", ng, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "203.0.113.7");
	/* a lighttpd whose server.tag hides its name, or any other server */
	const char *tag[] = { "SERVER_SOFTWARE=Apache",
			      "HTTP_X_FORWARDED_FOR=9.9.9.9",
			      "HTTP_X_FORWARDED_FOR=6.6.6.6", NULL };
	const char *none[] = { "HTTP_X_FORWARDED_FOR=9.9.9.9",
			       "HTTP_X_FORWARDED_FOR=6.6.6.7", NULL };
	cr_assert_eq(req_full("GET", "/a", "10.0.0.2", tag, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "10.0.0.2");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.3", none, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "10.0.0.3");
}

/* Variants are "not trusted" only where the header would have been read:
 * a client outside the trusted networks never had its header read, and
 * must not be able to drive the warning and its counter. */
Test(decide, header_variants_from_an_untrusted_peer_are_not_reported)
{
	struct rl_decision d;
	const char *x2[] = { "SERVER_SOFTWARE=lighttpd/1.4.69",
			     "HTTP_X_FORWARDED_FOR=203.0.113.5",
			     "HTTP_X_FORWARDED_FOR=9.9.8.1", NULL };

	setup_rules("trusted-proxies 10.0.0.0/8\n/a 5/minute\n");
	cr_assert_eq(req_full("GET", "/a", "192.0.2.7", x2, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "192.0.2.7");
	cr_assert_eq(d.addr_source, RL_ADDR_REMOTE);
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", x2, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "10.0.0.1");
	cr_assert_eq(d.addr_source, RL_ADDR_VARIANTS);
}

Test(decide, no_proxies_ignores_header)
{
	struct rl_decision d;
	const char *x[] = { "HTTP_X_FORWARDED_FOR=6.6.6.6", NULL };

	setup_rules("/a 1/minute\n");
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", x, T0, RL_HIT, 0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "192.0.2.1");
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", NULL, T0, RL_HIT, 0, &d), RL_DENY);
}

Test(decide, ipv6_grouped_by_prefix)
{
	struct rl_decision d;

	setup_rules("/a 2/minute\n");
	cr_assert_eq(hit("GET", "/a", "2001:db8:1:2::1", T0, &d), RL_ALLOW);
	cr_assert_str_eq(d.client, "2001:db8:1:2::/64");
	cr_assert_eq(hit("GET", "/a", "2001:db8:1:2:ffff::9", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/a", "2001:db8:1:2::77", T0, &d), RL_DENY);
	cr_assert_eq(hit("GET", "/a", "2001:db8:1:3::1", T0, &d), RL_ALLOW);
}

Test(decide, missing_remote_addr)
{
	struct rl_decision d;

	setup_rules("/a 2/minute\n");
	cr_assert_eq(hit("GET", "/a", NULL, T0, &d), RL_DENY_KEY);
	cr_assert_eq(hit("GET", "/a", "garbage", T0, &d), RL_DENY_KEY);
	cr_assert_eq(d.addr_source, RL_ADDR_NONE);
}

Test(decide, cost)
{
	struct rl_decision d;

	setup_rules("/export 10/minute cost=3\n");
	cr_assert_eq(allowed_of(5, "GET", "/export", "192.0.2.1", T0), 3);
	hit("GET", "/export", "192.0.2.1", T0, &d);
	cr_assert_eq(d.cost, 3);
	cr_assert_eq(d.remaining, 1);
	/* the request's own cost overrides the rule's */
	cr_assert_eq(req_full("GET", "/export", "192.0.2.1", NULL, T0, RL_HIT, 1, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 0);
}

Test(decide, test_mode_counts_nothing)
{
	struct rl_decision d;

	setup_rules("/a 1/minute\n");
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(req_full("GET", "/a", "192.0.2.1", NULL, T0, RL_TEST, 0, &d), RL_ALLOW);
		cr_assert_eq(d.remaining, 1);
	}
	cr_assert_eq(memstore_count(&st), 0);
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", NULL, T0, RL_TEST, 0, &d), RL_DENY);
	cr_assert_eq(d.remaining, 0);
}

Test(decide, dry_run_rule)
{
	struct rl_decision d;

	setup_rules("application 3/minute\n/a 1/minute dry-run\n");
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(d.would_deny, 0);
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(d.would_deny, 1);
	cr_assert_str_eq(d.limit->text, "1/minute");
	cr_assert_eq(d.retry_ms, 60000);
	/* the enforced application limit still counted both */
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_DENY);
	cr_assert_str_eq(d.limit->text, "3/minute");
}

Test(decide, dry_run_global_and_disabled)
{
	struct rl_decision d;

	setup_rules("dry-run on\ndefault 1/minute\n");
	cr_assert_eq(allowed_of(5, "GET", "/a", "192.0.2.1", T0), 5);
	hit("GET", "/a", "192.0.2.1", T0, &d);
	cr_assert_eq(d.would_deny, 1);
	teardown();

	setup_rules("enabled off\ndefault 1/minute\n");
	cr_assert_eq(allowed_of(5, "GET", "/a", "192.0.2.1", T0), 5);
	cr_assert_eq(memstore_count(&st), 0);
}

Test(decide, rule_message_and_strategy)
{
	struct rl_decision d;

	setup_rules("/login 1/minute message=\"Too many login attempts\" strategy=gcra\n");
	hit("POST", "/login", "192.0.2.1", T0, &d);
	cr_assert_str_eq(last_keys[0], "rg:r/login:addr=192.0.2.1:1/60000/gcra");
	cr_assert_eq(hit("POST", "/login", "192.0.2.1", T0 + 1000, &d), RL_DENY);
	cr_assert_str_eq(d.message, "Too many login attempts");
	cr_assert_eq(d.retry_ms, 59000);
}

Test(decide, store_failure)
{
	struct rl_decision d;

	setup_rules("/a 1/minute\n");
	fail_next = 1;
	cr_assert_eq(hit("GET", "/a", "192.0.2.1", T0, &d), RL_STORE_ERROR);
	cr_assert_str_eq(d.error, "store memory: connection refused");
}

Test(decide, long_paths_hash_into_bounded_keys)
{
	struct rl_decision d;
	char path[6000];

	setup_rules("default 1/minute\n");
	path[0] = '/';
	memset(path + 1, 'p', sizeof(path) - 2);
	path[sizeof(path) - 1] = '\0';
	cr_assert_eq(hit("GET", path, "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert(strlen(last_keys[0]) < 100, "%s", last_keys[0]);
	cr_assert(strncmp(last_keys[0], "rg:d#", 5) == 0, "%s", last_keys[0]);
	cr_assert_eq(hit("GET", path, "192.0.2.1", T0, &d), RL_DENY);
}

Test(decide, inflight_leases)
{
	struct rl_decision d;
	struct rl_lease l1, l2, l3, l4;
	struct rl_diag err;
	struct rl_request r = {
		.method = "GET", .path = "/chat", .path_len = 5,
		.remote_addr = "192.0.2.1", .remote_addr_len = 9,
	};

	setup_rules("/chat concurrency=2\n/plain 1/second\n");
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l1, &d), RL_ALLOW);
	cr_assert_eq(l1.held, 1);
	cr_assert_str_eq(l1.key, "rg:r/chat:addr=192.0.2.1:inflight/2");
	cr_assert_eq(d.remaining, 1);
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l2, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l3, &d), RL_DENY);
	cr_assert_eq(l3.held, 0);
	cr_assert_eq(d.retry_ms, RL_INFLIGHT_RETRY_MS);
	cr_assert_str_eq(d.error, "2 requests already in flight");
	/* another client has its own slots */
	r.remote_addr = "192.0.2.2";
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l4, &d), RL_ALLOW);
	r.remote_addr = "192.0.2.1";
	/* ending one frees one */
	cr_assert_eq(rl_inflight_end(&st, &l1, T0 + 10, &err), 0);
	cr_assert_eq(l1.held, 0);
	cr_assert_eq(rl_inflight_end(&st, &l1, T0 + 10, &err), 0);
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0 + 10, 30000, &l1, &d), RL_ALLOW);
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0 + 10, 30000, &l3, &d), RL_DENY);
	/* a holder that never ends: its lease expires (l2 at T0 + 30000) */
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0 + 29999, 30000, &l3, &d), RL_DENY);
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0 + 30000, 30000, &l3, &d), RL_ALLOW);
	/* rules without concurrency take no slot */
	r.path = "/plain";
	r.path_len = 6;
	cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l4, &d), RL_ALLOW);
	cr_assert_eq(l4.held, 0);
}

/* dry-run (the rule's, or everyone's) never denies, concurrency= no more
 * than the rest: the would-be denial is reported, no slot is taken. */
Test(decide, inflight_dry_run_never_denies)
{
	struct rl_decision d;
	struct rl_lease l1, l2;
	struct rl_request r = {
		.method = "GET", .path = "/chat", .path_len = 5,
		.remote_addr = "192.0.2.1", .remote_addr_len = 9,
	};
	static const char *const sets[] = {
		"/chat concurrency=1 dry-run\n",
		"dry-run on\n/chat concurrency=1\n",
	};

	for (size_t i = 0; i < 2; i++) {
		setup_rules(sets[i]);
		cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l1, &d), RL_ALLOW);
		cr_assert_eq(l1.held, 1);
		cr_assert_eq(d.would_deny, 0);
		cr_assert_eq(rl_inflight_begin(rs, &st, &r, T0, 30000, &l2, &d), RL_ALLOW,
			     "%s", sets[i]);
		cr_assert_eq(l2.held, 0);
		cr_assert_eq(d.would_deny, 1);
		cr_assert_eq(d.retry_ms, RL_INFLIGHT_RETRY_MS);
		cr_assert_str_eq(d.error, "1 requests already in flight");
	}
}

Test(decide, deduct_after_response)
{
	struct rl_decision d;

	/* "count only failed logins": look first, count later */
	setup_rules("/login 2/minute\n");
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(req_full("POST", "/login", "192.0.2.1", NULL, T0, RL_TEST, 0, &d), RL_ALLOW);
		/* a successful login: no hit */
	}
	req_full("POST", "/login", "192.0.2.1", NULL, T0, RL_HIT, 0, &d);   /* failed */
	cr_assert_eq(req_full("POST", "/login", "192.0.2.1", NULL, T0, RL_TEST, 0, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 1);
	req_full("POST", "/login", "192.0.2.1", NULL, T0, RL_HIT, 0, &d);   /* failed */
	cr_assert_eq(req_full("POST", "/login", "192.0.2.1", NULL, T0 + 1, RL_TEST, 0, &d), RL_DENY);
	cr_assert_eq(d.retry_ms, 59999);
}

/* ---- bodies: max-body, bandwidth; deduct-when ---- */

static struct rl_request
body_req(const char *method, const char *path, const char *addr,
	 uint64_t body)
{
	struct rl_request r = {
		.method = method,
		.path = path,
		.path_len = strlen(path),
		.remote_addr = addr,
		.remote_addr_len = strlen(addr),
		.body_bytes = body,
	};
	return r;
}

static enum rl_outcome
with_body(const char *path, uint64_t body, int64_t now, struct rl_decision *d)
{
	struct rl_request r = body_req("POST", path, "192.0.2.1", body);

	return rl_decide(rs, &st, &r, now, RL_HIT, d);
}

static int
after(const char *path, int status, uint64_t late, int64_t now)
{
	struct rl_request r = body_req("POST", path, "192.0.2.1", 0);
	struct rl_diag err = { 0, "" };

	return rl_after_response(rs, &st, &r, status, late, now, &err);
}

/* exempt-clients: the resolved client address (after trusted-proxies,
 * not its ipv6-prefix group) decides; such a client is not limited at all
 * (rule, defaults, application, concurrency=), counts nothing, and still
 * gets its 413; a client cannot make itself exempt by writing the address
 * into X-Forwarded-For beyond the hops trusted. */
Test(decide, exempt_clients_by_resolved_address)
{
	struct rl_decision d;
	const char *via[] = { "HTTP_X_FORWARDED_FOR=10.1.2.3", NULL };
	const char *spoof[] = { "HTTP_X_FORWARDED_FOR=10.1.2.3, 203.0.113.5", NULL };
	const char *v6[] = { "HTTP_X_FORWARDED_FOR=2001:db8:0:1::5", NULL };
	const char *v6n[] = { "HTTP_X_FORWARDED_FOR=2001:db8:0:1::6", NULL };
	const char *mapped[] = { "HTTP_X_FORWARDED_FOR=::ffff:10.9.9.9", NULL };

	setup_rules("trusted-proxies 1\n"
		    "default 1/minute\n"
		    "application 1/hour\n"
		    "exempt-clients 10.0.0.0/8 2001:db8:0:1::5\n"
		    "/a 1/minute concurrency=1\n"
		    "/up 1/minute max-body=10\n");
	for (int i = 0; i < 5; i++) {
		nlast = 99;
		cr_assert_eq(req_full("GET", "/a", "192.0.2.1", via, T0, RL_HIT,
				      0, &d), RL_ALLOW);
		cr_assert_eq(d.exempt, 1);
		cr_assert_null(d.limit);
		cr_assert_eq(nlast, 99, "an exempt client counts nothing");
		cr_assert_str_eq(d.client, "10.1.2.3");
		cr_assert_eq(req_full("GET", "/other", "192.0.2.1", via, T0,
				      RL_HIT, 0, &d), RL_ALLOW);
		cr_assert_eq(d.exempt, 1);
		cr_assert_eq(req_full("GET", "/x", "192.0.2.1", mapped, T0,
				      RL_HIT, 0, &d), RL_ALLOW,
			     "::ffff:10.9.9.9 is 10.9.9.9");
		cr_assert_eq(d.exempt, 1);
		cr_assert_eq(req_full("GET", "/a", "192.0.2.1", v6, T0, RL_HIT,
				      0, &d), RL_ALLOW);
		cr_assert_eq(d.exempt, 1);
	}
	/* the proxy's own address is not the client */
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", spoof, T0, RL_HIT, 0,
			      &d), RL_ALLOW);
	cr_assert_eq(d.exempt, 0);
	cr_assert_str_eq(d.client, "203.0.113.5");
	cr_assert_eq(req_full("GET", "/b", "10.0.0.1", spoof, T0, RL_HIT, 0,
			      &d), RL_DENY, "the application budget is spent");
	/* another host of the exempt one's /64 is limited */
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", v6n, T0, RL_HIT, 0,
			      &d), RL_ALLOW);
	cr_assert_eq(d.exempt, 0);
	cr_assert_eq(req_full("GET", "/a", "192.0.2.1", v6n, T0, RL_HIT, 0,
			      &d), RL_DENY);
	/* no proxy header: the web server's peer */
	cr_assert_eq(hit("GET", "/a", "10.200.0.1", T0, &d), RL_ALLOW);
	cr_assert_eq(d.exempt, 1);
	/* max-body still applies */
	struct rl_request r = body_req("POST", "/up", "10.7.7.7", 11);
	cr_assert_eq(rl_decide(rs, &st, &r, T0, RL_HIT, &d), RL_TOO_LARGE);
}

Test(decide, too_large_before_counting)
{
	struct rl_decision d;

	setup_rules("max-body 1K\n"
		    "application 100/hour\n"
		    "/up 2/minute max-body=2K\n"
		    "/free 2/minute max-body=none\n"
		    "/ex exempt max-body=10\n");
	nlast = 99;
	cr_assert_eq(with_body("/up", 2049, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(nlast, 99, "a 413 touches no counter");
	cr_assert_eq(d.max_body, 2048);
	cr_assert_str_eq(d.error, "request body of 2049 bytes is above max-body 2048");
	cr_assert_eq(d.rule, rl_ruleset_rule(rs, 0));
	cr_assert_str_eq(d.client, "192.0.2.1", "the 413 names its client");
	cr_assert_eq(with_body("/up", 2048, T0, &d), RL_ALLOW);
	cr_assert_eq(d.max_body, 2048);
	cr_assert_eq(d.remaining, 1, "the 413 cost no budget");
	/* no rule: the global max-body */
	cr_assert_eq(with_body("/other", 1025, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(d.max_body, 1024);
	cr_assert_eq(with_body("/other", 1024, T0, &d), RL_ALLOW);
	/* max-body=none lifts the global */
	cr_assert_eq(with_body("/free", 1ULL << 40, T0, &d), RL_ALLOW);
	cr_assert_eq(d.max_body, 0);
	/* exempt from limits, not from max-body */
	cr_assert_eq(with_body("/ex", 11, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(with_body("/ex", 10, T0, &d), RL_ALLOW);
	cr_assert_eq(d.exempt, 1);
	/* unknown length (0): decided later, by the gateway, with d.max_body */
	cr_assert_eq(with_body("/up", 0, T0, &d), RL_ALLOW);
	cr_assert_eq(d.max_body, 2048);
	teardown();

	/* dry-run: reported, not enforced */
	setup_rules("dry-run on\nmax-body 1K\n/up 5/minute\n");
	cr_assert_eq(with_body("/up", 5000, T0, &d), RL_ALLOW);
	cr_assert_eq(d.would_deny, 1);
	cr_assert_eq(d.max_body, 0);
	cr_assert_eq(d.remaining, 4);
	teardown();

	/* enabled off lets everything through */
	setup_rules("enabled off\nmax-body 1K\n");
	cr_assert_eq(with_body("/up", 5000, T0, &d), RL_ALLOW);
	cr_assert_eq(d.max_body, 0);
}

/* A settings rule (only max-body= / upstream=) sets those for its paths
 * and leaves the limits to the next matching rule: adding a body limit to
 * one path under a subtree must not lift the subtree's rate limit. */
Test(decide, settings_rule_keeps_the_next_rules_limits)
{
	struct rl_decision d;

	setup_rules("default 1000/day\n"
		    "upstream fcgi://127.0.0.1:9000\n"
		    "/api/** 2/hour upstream=fcgi://127.0.0.1:9001\n"
		    "/api/upload max-body=10\n"
		    "/api/up* upstream=fcgi://127.0.0.1:9002 methods=POST\n"
		    "/api/uploader max-body=20 upstream=fcgi://127.0.0.1:9003\n"
		    "/plain max-body=5\n");
	const struct rl_rule *api = rl_ruleset_rule(rs, 0);

	cr_assert_eq(with_body("/api/upload", 11, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(d.max_body, 10);
	cr_assert_eq(with_body("/api/upload", 10, T0, &d), RL_ALLOW);
	cr_assert_eq(d.rule, api, "the subtree's limits decide");
	cr_assert_eq(d.upstream_rule, rl_ruleset_rule(rs, 2),
		     "the settings rule's upstream= for its method (POST)");
	cr_assert_eq(d.remaining, 1);
	cr_assert_eq(hit("GET", "/api/upload", "192.0.2.1", T0, &d), RL_ALLOW);
	cr_assert_eq(d.rule, api);
	cr_assert_eq(d.upstream_rule, api, "the subtree's upstream for GET");
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(hit("GET", "/api/upload", "192.0.2.1", T0, &d), RL_DENY,
		     "one budget with the rest of /api/**");
	cr_assert_eq(hit("GET", "/api/x", "192.0.2.1", T0, &d), RL_DENY);
	/* the first settings rule that sets a thing wins */
	cr_assert_eq(with_body("/api/uploader", 21, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(hit("POST", "/api/uploader", "192.0.2.2", T0, &d), RL_ALLOW);
	cr_assert_eq(d.upstream_rule, rl_ruleset_rule(rs, 3));
	cr_assert_eq(d.rule, api);
	/* nothing after it: the defaults, and the global upstream */
	cr_assert_eq(with_body("/plain", 6, T0, &d), RL_TOO_LARGE);
	cr_assert_eq(with_body("/plain", 5, T0, &d), RL_ALLOW);
	cr_assert_null(d.rule);
	cr_assert_null(d.upstream_rule);
	cr_assert_eq(d.remaining, 999);
}

Test(decide, bandwidth_charged_by_body_bytes)
{
	struct rl_decision d;

	setup_rules("/up 100/minute bandwidth=1KB/minute\n");
	cr_assert_eq(with_body("/up", 600, T0, &d), RL_ALLOW);
	cr_assert_eq(nlast, 2);
	cr_assert_str_eq(last_keys[0], "rg:r/up:addr=192.0.2.1:100/60000/fw");
	cr_assert_str_eq(last_keys[1], "rg:r/up:addr=192.0.2.1:bw/1024/60000/fw");
	/* an allowed request reports its request limits, not bytes */
	cr_assert_eq(d.bandwidth, 0);
	cr_assert_str_eq(d.limit->text, "100/minute");
	cr_assert_eq(d.remaining, 99);

	/* 600 + 600 > 1024: denied, by the bandwidth limit, until the window
	 * opened at T0 ends */
	cr_assert_eq(with_body("/up", 600, T0 + 10000, &d), RL_DENY);
	cr_assert_eq(d.bandwidth, 1);
	cr_assert_str_eq(d.limit->text, "1KB/minute");
	cr_assert_eq(d.limit->unit, 1);
	cr_assert_eq(d.cost, 600);
	cr_assert_eq(d.remaining, 424);
	cr_assert_eq(d.retry_ms, 50000);
	cr_assert_eq(d.origin, RL_FROM_RULE);

	/* the denial counted nothing; a request without a body counts no
	 * bytes, and 424 bytes still fit */
	cr_assert_eq(with_body("/up", 0, T0 + 10000, &d), RL_ALLOW);
	cr_assert_eq(nlast, 1);
	cr_assert_eq(d.remaining, 98);
	cr_assert_eq(with_body("/up", 424, T0 + 10000, &d), RL_ALLOW);
	cr_assert_eq(with_body("/up", 1, T0 + 10000, &d), RL_DENY);
	cr_assert_eq(d.bandwidth, 1);
	cr_assert_eq(with_body("/up", 1000, T0 + 60000, &d), RL_ALLOW);

	/* a body larger than the limit itself can never pass: the period */
	cr_assert_eq(with_body("/up", 1025, T0 + 200000, &d), RL_DENY);
	cr_assert_eq(d.bandwidth, 1);
	cr_assert_eq(d.retry_ms, 60000);
	teardown();

	/* only bandwidth: the decision reports it, in its units */
	setup_rules("/s bandwidth=2GB/hour strategy=sliding-window-counter\n");
	cr_assert_eq(with_body("/s", 1025, T0, &d), RL_ALLOW);
	cr_assert_eq(d.bandwidth, 1);
	cr_assert_eq(d.limit->unit, 1024);
	cr_assert_eq(d.cost, 2, "1025 bytes are two KiB");
	cr_assert_eq(d.remaining, 2097152 - 2);
	cr_assert_str_eq(last_keys[0], "rg:r/s:addr=192.0.2.1:bw/2097152k/3600000/swc");
}

Test(decide, bandwidth_all_or_nothing_with_requests)
{
	struct rl_decision d;

	/* the request limit denies: no bytes are charged either */
	setup_rules("/up 1/minute bandwidth=1KB/minute\n");
	cr_assert_eq(with_body("/up", 100, T0, &d), RL_ALLOW);
	cr_assert_eq(with_body("/up", 100, T0 + 1, &d), RL_DENY);
	cr_assert_eq(d.bandwidth, 0);
	cr_assert_eq(with_body("/up", 924, T0 + 60000, &d), RL_ALLOW);
}

Test(decide, deduct_when_probes_then_counts_after_response)
{
	struct rl_decision d;

	setup_rules("application 100/hour\n/login 2/minute methods=POST deduct-when=401,403\n");
	/* checked, not counted: any number of requests pass */
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(with_body("/login", 0, T0, &d), RL_ALLOW);
		cr_assert_eq(nlast, 2);
	}
	/* the application limit counted each of them */
	cr_assert_eq(d.remaining, 2);
	cr_assert_str_eq(d.limit->text, "2/minute");
	/* a success deducts nothing */
	cr_assert_eq(after("/login", 200, 0, T0), 0);
	cr_assert_eq(with_body("/login", 0, T0, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 2);
	/* failures do */
	nlast = 0;
	cr_assert_eq(after("/login", 401, 0, T0 + 1), 0);
	cr_assert_eq(nlast, 1);
	cr_assert_str_eq(last_keys[0], "rg:r/login:addr=192.0.2.1:2/60000/fw");
	cr_assert_eq(with_body("/login", 0, T0 + 1, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 1);
	cr_assert_eq(after("/login", 403, 0, T0 + 2), 0);
	/* over the limit: denied at request time, with the window's retry */
	cr_assert_eq(with_body("/login", 0, T0 + 1000, &d), RL_DENY);
	cr_assert_eq(d.origin, RL_FROM_RULE);
	cr_assert_eq(d.retry_ms, 59001);      /* the window opened at T0 + 1 */
	/* a late failure beyond the limit is no error and changes nothing */
	cr_assert_eq(after("/login", 401, 0, T0 + 1000), 0);
	cr_assert_eq(with_body("/login", 0, T0 + 60001, &d), RL_ALLOW);
	cr_assert_eq(d.remaining, 2);
	/* statuses outside the set, other rules and no rule deduct nothing */
	nlast = 0;
	cr_assert_eq(after("/login", 500, 0, T0), 0);
	cr_assert_eq(after("/elsewhere", 401, 0, T0), 0);
	cr_assert_eq(nlast, 0);
	cr_assert_eq(rl_rule_deducts(rl_ruleset_rule(rs, 0), 401), 1);
}

Test(decide, late_body_bytes_after_response)
{
	struct rl_decision d;

	setup_rules("/up 100/minute bandwidth=1KB/minute\n/plain 10/minute\n");
	/* a chunked body: length unknown at request time */
	cr_assert_eq(with_body("/up", 0, T0, &d), RL_ALLOW);
	cr_assert_eq(after("/up", 200, 600, T0 + 10), 0);
	cr_assert_eq(with_body("/up", 600, T0 + 20, &d), RL_DENY);
	cr_assert_eq(d.remaining, 424);
	/* more than is left: it fills the counter rather than be dropped */
	cr_assert_eq(after("/up", 200, 5000, T0 + 30), 0);
	cr_assert_eq(with_body("/up", 1, T0 + 40, &d), RL_DENY);
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.retry_ms, 60010 - 40);  /* opened by the charge at T0 + 10 */
	cr_assert_eq(with_body("/up", 1024, T0 + 60010, &d), RL_ALLOW);
	/* no bandwidth limits: nothing to charge */
	nlast = 0;
	cr_assert_eq(after("/plain", 200, 600, T0), 0);
	cr_assert_eq(nlast, 0);
}

/* A body of unknown length (chunked) is counted after the response, but
 * checked on arrival like any body: a client out of bandwidth is denied
 * (by a probe that consumes nothing), not let through with one more. */
Test(decide, unknown_length_body_checked_against_bandwidth)
{
	struct rl_decision d;
	struct rl_request r = body_req("POST", "/up", "192.0.2.1", 0);

	r.body_unknown = 1;
	setup_rules("/up 100/minute bandwidth=1KB/minute\n/plain 10/minute\n");
	cr_assert_eq(rl_decide(rs, &st, &r, T0, RL_HIT, &d), RL_ALLOW);
	cr_assert_eq(after("/up", 200, 5000, T0 + 10), 0);      /* fills it */
	cr_assert_eq(rl_decide(rs, &st, &r, T0 + 20, RL_HIT, &d), RL_DENY);
	cr_assert_eq(d.bandwidth, 1);
	cr_assert_eq(d.remaining, 0);
	cr_assert_eq(d.retry_ms, 60010 - 20);
	/* a request without a body is not held up by the bytes */
	cr_assert_eq(with_body("/up", 0, T0 + 30, &d), RL_ALLOW);
	/* the check took nothing: the next window is whole */
	cr_assert_eq(rl_decide(rs, &st, &r, T0 + 60010, RL_HIT, &d), RL_ALLOW);
	cr_assert_eq(with_body("/up", 1024, T0 + 60020, &d), RL_ALLOW);
	/* no bandwidth limits: nothing to check */
	struct rl_request p = body_req("POST", "/plain", "192.0.2.1", 0);
	p.body_unknown = 1;
	cr_assert_eq(rl_decide(rs, &st, &p, T0, RL_HIT, &d), RL_ALLOW);
}

Test(decide, after_response_store_failure)
{
	setup_rules("/login 2/minute deduct-when=401\n");
	fail_next = 1;
	cr_assert_eq(after("/login", 401, 0, T0), -1);
	cr_assert_eq(after("/login", 200, 0, T0), 0);
}

/* inspect --client/--reset TEXT: an address is a whole field. */
Test(decide, key_name_match)
{
	const char *k = "rg:r/login:addr=192.0.2.70:5/60000/fw";
	/* keys escape ':' in addresses */
	const char *k6 = "rg:a:h.x-api-key=k1+addr=2001%3Adb8%3A%3A/64:10/60000/fw";

	cr_assert_eq(rl_key_name_match(k, strlen(k), "192.0.2.7"), 0);
	cr_assert_eq(rl_key_name_match(k, strlen(k), "192.0.2.70"), 1);
	cr_assert_eq(rl_key_name_match(k, strlen(k), "92.0.2.70"), 0);
	cr_assert_eq(rl_key_name_match(k, strlen(k), "login"), 1, "other text: anywhere");
	cr_assert_eq(rl_key_name_match(k, strlen(k), "192.0.2"), 1, "not an address: anywhere");
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "2001:db8::/64"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "2001:db8::/6"), 0);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "k1"), 1);
	cr_assert_eq(rl_key_name_match(k, strlen(k), k), 1, "the whole key");

	/* a key part as the log writes it: whole (a review found
	 * "addr=192.0.2.7" resetting 192.0.2.70 too), or hashed */
	const char *k7 = "rg:r/login:addr=192.0.2.7:5/60000/fw";
	cr_assert_eq(rl_key_name_match(k, strlen(k), "addr=192.0.2.7"), 0);
	cr_assert_eq(rl_key_name_match(k7, strlen(k7), "addr=192.0.2.7"), 1);
	cr_assert_eq(rl_key_name_match(k, strlen(k), "addr=192.0.2.70"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "addr=2001:db8::/64"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "addr=2001%3Adb8%3A%3A/64"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k1"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k"), 0);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k1:"), 1);
	char hashed[64];
	snprintf(hashed, sizeof(hashed), "h.x-api-key=#%016llx",
		 (unsigned long long)rl_fnv1a("k1", 2));
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), hashed), 1, "%s", hashed);
	snprintf(hashed, sizeof(hashed), "h.x-api-key=#%016llx",
		 (unsigned long long)rl_fnv1a("k2", 2));
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), hashed), 0);
	snprintf(hashed, sizeof(hashed), "c.x-api-key=#%016llx",
		 (unsigned long long)rl_fnv1a("k1", 2));
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), hashed), 0, "another label");
	/* several parts, as the log writes a key of two (found by a second
	 * review: it matched nothing) */
	snprintf(hashed, sizeof(hashed), "h.x-api-key=#%016llx+addr=2001:db8::/64",
		 (unsigned long long)rl_fnv1a("k1", 2));
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), hashed), 1, "%s", hashed);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k1+addr=2001%3Adb8%3A%3A/64"), 1);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k1+addr=2001:db8:1::/64"), 0);
	cr_assert_eq(rl_key_name_match(k6, strlen(k6), "h.x-api-key=k2+addr=2001:db8::/64"), 0);
}

/* exempt-clients behind a proxy that is itself in an exempt network: a
 * client that makes its proxy header untrusted (a name variant such as
 * X_Forwarded_For behind lighttpd, or an invalid entry) counts as the
 * nearest trusted hop, the proxy, for its key; that fallback must not
 * exempt it: it is not an address the proxies vouch for. */
Test(decide, exempt_clients_not_by_an_untrusted_proxy_header)
{
	struct rl_decision d;
	const char *variant[] = { "SERVER_SOFTWARE=lighttpd/1.4.69",
				  "HTTP_X_FORWARDED_FOR=203.0.113.5",
				  "HTTP_X_FORWARDED_FOR=1.2.3.4", NULL };
	const char *bad[] = { "HTTP_X_FORWARDED_FOR=garbage", NULL };

	setup_rules("trusted-proxies 1\n"
		    "exempt-clients 10.0.0.0/8\n"
		    "/a 1/minute\n");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", variant, T0, RL_HIT, 0,
			      &d), RL_ALLOW);
	cr_assert_eq(d.addr_source, RL_ADDR_VARIANTS);
	cr_assert_eq(d.exempt, 0, "a name variant made the client exempt");
	cr_assert_eq(req_full("GET", "/a", "10.0.0.1", variant, T0, RL_HIT, 0,
			      &d), RL_DENY);
	cr_assert_eq(req_full("GET", "/a", "10.0.0.2", bad, T0, RL_HIT, 0,
			      &d), RL_ALLOW);
	cr_assert_eq(d.addr_source, RL_ADDR_INVALID);
	cr_assert_eq(d.exempt, 0, "an invalid entry made the client exempt");
}
