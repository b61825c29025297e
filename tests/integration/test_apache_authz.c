/*
 * test_apache_authz.c - rategate as a FastCGI authorizer behind a real
 * Apache 2.4 through mod_authnz_fcgi (AuthnzFcgiDefineProvider authnz +
 * AuthnzFcgiCheckAuthnProvider), from examples/apache-authnz.conf with its
 * Define values replaced.  rategate listens on its own TCP port (the
 * module speaks TCP only and never starts the authorizer).
 *
 * Allowed: the static file and a CGI script (mod_cgid) are served, the
 * script sees RL_* in its environment, and Apache adds the authorizer's
 * X-RateLimit-* to the client's response.  Denied: 429 Too Many Requests
 * with Retry-After, X-RateLimit-*, Cache-Control and the rule's message
 * (Apache relabels the body text/html; a message Apache would read as a
 * URL gets a leading space), and the script is not run.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "servers.h"

static const char count_cgi[] =
	"#!/bin/sh\n"
	"echo run >> '@COUNT@'\n"
	"printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n"
	"echo \"RL_CLIENT=${RL_CLIENT-unset}\"\n"
	"echo \"RL_KEY=${RL_KEY-unset}\"\n"
	"echo \"RL_LIMIT=${RL_LIMIT-unset}\"\n"
	"echo \"RL_REMAINING=${RL_REMAINING-unset}\"\n";

static const char rules[] =
	"# Apache integration test\n"
	"storage      memory\n"
	"headers      on\n"
	"/static.txt  2/minute  message=\"static, slow down\"\n"
	"/count.cgi   1/minute  message=\"count.cgi: slow down\"\n";

static int port;
static pid_t apache, rg;
static char base[64];

static const char *
errlog(void)
{
	static const char *const files[] = { "apache error.log", "state/error.log",
					     "rategate log", "rategate.log", NULL };

	return srv_logs(files);
}

static void
setup(void)
{
	char authz[32], state[SRV_PATH_MAX], docroot[SRV_PATH_MAX], listen[32];

	srv_setup();
	srv_need("apache2", "apache2");
	cr_assert_eq(geteuid(), 0, "the Apache test runs apache2 as root (it refuses \"User root\" and drops to www-data): run make check as root");
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("state"), 0755), 0);
	srv_write("docroot/static.txt", "static file content\n", 0644);
	/* The script runs as www-data: the counter must be writable. */
	srv_write("count", "", 0666);
	const char *cnt[] = { "@COUNT@", srv_path("count"), NULL };
	srv_write_subst("docroot/count.cgi", count_cgi, cnt, 0755);
	srv_write("site.rules", rules, 0644);

	/* rategate first, on its own TCP port. */
	snprintf(authz, sizeof(authz), "127.0.0.1:%d", srv_free_port());
	rg = srv_start_rategate(srv_path("site.rules"), authz, 0, srv_path("rategate.log"),
				srv_path("rategate.out"));

	port = srv_free_port();
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(docroot, sizeof(docroot), "%s", srv_path("docroot"));
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	const char *defines[] = { "RG_STATE", state, "RG_DOCROOT", docroot, "RG_LISTEN", listen,
				  "RG_AUTHZ", authz, NULL };
	apache = srv_start_apache("apache-authnz.conf", defines, port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

static void
teardown(void)
{
	srv_cleanup();
}

static struct srv_resp
get(const char *path, const char *h1)
{
	const char *hdrs[] = { h1, NULL };
	struct srv_resp r;

	srv_http_at("GET", base, path, hdrs, &r);
	return r;
}

Test(apache_authz, allowed_then_429_passes_through,
     .init = setup, .fini = teardown, .timeout = 20)
{
	char v[256];

	for (int i = 0; i < 2; i++) {
		struct srv_resp r = get("/static.txt", NULL);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
		cr_expect_str_eq(r.body, "static file content\n");
		/* Apache adds an allowing authorizer's headers. */
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "2");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)),
				 i == 0 ? "1" : "0");
		cr_expect_eq(srv_header_count(&r, "Variable-RL_CLIENT"), 0);
		srv_resp_free(&r);
	}

	struct srv_resp r = get("/static.txt", NULL);
	cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", errlog());
	cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "2");
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
	cr_assert_not_null(srv_header(&r, "X-RateLimit-Reset", v, sizeof(v)));
	cr_expect_str_eq(srv_header(&r, "Cache-Control", v, sizeof(v)), "no-store");
	/* mod_authnz_fcgi replaces the authorizer's Content-Type. */
	cr_expect_str_eq(srv_header(&r, "Content-Type", v, sizeof(v)),
			 "text/html; charset=iso-8859-1");
	cr_expect_str_eq(r.body, "static, slow down\n");
	srv_resp_free(&r);

	/* JSON passes too (under Apache's Content-Type). */
	r = get("/static.txt", "Accept: application/json");
	cr_assert_eq(r.status, 429);
	cr_expect_not_null(strstr(r.body, "{\"error\":\"rate_limited\",\"message\":\"static, slow down\",\"retry_after\":"),
			   "%s", r.body);
	srv_resp_free(&r);

	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/static.txt");

	cr_expect_eq(srv_stop(apache, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", errlog());
}

Test(apache_authz, denied_request_never_runs_the_cgi_script,
     .init = setup, .fini = teardown, .timeout = 20)
{
	struct srv_resp r = get("/count.cgi", NULL);

	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_str_eq(r.body,
			 "RL_CLIENT=127.0.0.1\n"
			 "RL_KEY=addr=127.0.0.1\n"
			 "RL_LIMIT=1/minute\n"
			 "RL_REMAINING=0\n");
	srv_resp_free(&r);
	cr_assert_eq(srv_count_lines(srv_path("count")), 1);

	for (int i = 0; i < 3; i++) {
		r = get("/count.cgi", NULL);
		cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests");
		/* "count.cgi:" would be a URL to Apache: a space first */
		cr_expect_str_eq(r.body, " count.cgi: slow down\n");
		srv_resp_free(&r);
	}
	/* Spellings Apache runs count.cgi for: ";" segments are names to it
	 * (PATH_INFO); "/%2f/.." it resolves before it decodes %2f, nginx
	 * after, so rategate refuses that one. */
	static const char *const spellings[] = {
		"/count.cgi/..;", "/count.cgi/..%3B", "/count.cgi/.;/x",
		"/x;/../count.cgi",
	};
	for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
		r = get(spellings[i], NULL);
		cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests",
				 "%s", spellings[i]);
		srv_resp_free(&r);
	}
	r = get("/count.cgi/%2f/..", NULL);
	cr_expect_eq(r.status, 400, "%s: %s", r.status_line, r.body);
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("count")), 1,
		     "the protected script ran after a denial");
}
