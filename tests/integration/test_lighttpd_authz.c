/*
 * test_lighttpd_authz.c - rategate as a FastCGI authorizer behind a real
 * lighttpd (mod_fastcgi "mode" => "authorizer"), both spawned by lighttpd
 * through bin-path (examples/lighttpd-authorizer.conf, run with its var.*
 * values replaced) and started on its own unix socket by the test.
 *
 * Allowed requests reach a static file and a CGI script that sees the
 * authorizer's Variable-* as environment variables; denied ones get exactly
 * rategate's 429 (Retry-After, X-RateLimit-*, Cache-Control, the rule's
 * message, or JSON when asked for), and the protected script, which counts
 * its runs in a file, is not run.  X-Forwarded-For cannot pick the key
 * with trusted-proxies 0, nor with 1 by writing anything left of the hop
 * the proxy added.  Stopping lighttpd stops rategate with exit status 0.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>

#include "servers.h"

/* A CGI script that counts its runs and prints what the authorizer told
 * it.  @COUNT@ is the counter file. */
static const char count_cgi[] =
	"#!/bin/sh\n"
	"echo run >> '@COUNT@'\n"
	"printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n"
	"echo \"RL_CLIENT=${RL_CLIENT-unset}\"\n"
	"[ -z \"${RL_EXEMPT-}\" ] || echo \"RL_EXEMPT=$RL_EXEMPT\"\n"
	"echo \"RL_KEY=${RL_KEY-unset}\"\n"
	"echo \"RL_RULE=${RL_RULE-unset}\"\n"
	"echo \"RL_LIMIT=${RL_LIMIT-unset}\"\n"
	"echo \"RL_REMAINING=${RL_REMAINING-unset}\"\n";

static const char rules_a[] =
	"# lighttpd integration test, trusted-proxies 0\n"
	"storage      memory\n"
	"headers      on\n"
	"message      \"Too many requests (site)\"\n"
	"/static.txt      3/minute  message=\"static: slow down\"\n"
	"/cgi/count.cgi   2/minute  message=\"count.cgi: slow down\"\n"
	"/json.txt        1/minute  message=\"json: \\\"slow\\\" down\"\n"
	"/xff/**          1/minute  message=\"xff: slow down\"\n"
	"/up/**           100/minute  max-body=1K\n";

static const char rules_b[] =
	"# lighttpd integration test, one trusted proxy\n"
	"storage          memory\n"
	"headers          on\n"
	"trusted-proxies  1\n"
	"exempt-clients   10.0.5.0/24\n"
	"/xff/**          1/minute  message=\"xff: slow down\"\n";

/* The own-socket set-up: lighttpd connects to a rategate it did not
 * start. */
static const char lighttpd_socket_conf[] =
	"server.document-root = \"@DIR@/docroot\"\n"
	"server.bind          = \"127.0.0.1\"\n"
	"server.port          = @PORT@\n"
	"server.pid-file      = \"@DIR@/lighttpd.pid\"\n"
	"server.errorlog      = \"@DIR@/lighttpd-error.log\"\n"
	"server.modules       = ( \"mod_fastcgi\", \"mod_cgi\" )\n"
	"mimetype.assign      = ( \".txt\" => \"text/plain\" )\n"
	"cgi.assign           = ( \".cgi\" => \"\" )\n"
	"fastcgi.server = ( \"/\" => ( ( \"mode\" => \"authorizer\",\n"
	"    \"socket\" => \"@DIR@/rg.sock\", \"check-local\" => \"disable\" ) ) )\n";

static int port;
static pid_t lighttpd;
static int max_procs = 1;       /* lighttpd "max-procs" for start_example */
static char base[64];

static void
setup(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("docroot/cgi"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("docroot/xff"), 0755), 0);
	srv_write("docroot/static.txt", "static file content\n", 0644);
	srv_write("docroot/json.txt", "{\"ok\":true}\n", 0644);
	const char *cnt[] = { "@COUNT@", srv_path("count"), NULL };
	srv_write_subst("docroot/cgi/count.cgi", count_cgi, cnt, 0755);
	srv_write_subst("docroot/xff/env.cgi", count_cgi, cnt, 0755);
}

static void
teardown(void)
{
	srv_cleanup();
}

/* lighttpd from examples/lighttpd-authorizer.conf, spawning rategate with
 * rules. */
static void
start_example(const char *rules)
{
	srv_write("site.rules", rules, 0644);
	port = srv_free_port();
	char *conf = srv_lighttpd_conf("lighttpd-authorizer.conf", "site.rules", port, max_procs);
	lighttpd = srv_start_lighttpd(conf, port);
	free(conf);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

static struct srv_resp
get(const char *path, const char *h1, const char *h2)
{
	const char *hdrs[] = { h1, h2, NULL };
	struct srv_resp r;

	srv_http_at("GET", base, path, hdrs, &r);
	return r;
}

/* GET path (no extra headers): its status, the answer freed. */
static long
get_status(const char *path)
{
	struct srv_resp r = get(path, NULL, NULL);
	long st = r.status;

	srv_resp_free(&r);
	return st;
}

/* lighttpd's error log, then rategate's (server.breakagelog in the
 * example, -L in the own-socket set-up) and lighttpd's stderr. */
static const char *
errlog(void)
{
	static const char *const files[] = { "lighttpd error log", "lighttpd-error.log",
					     "rategate log", "rategate.log",
					     "lighttpd stderr", "lighttpd.out", NULL };

	return srv_logs(files);
}

/* Exactly rategate's 429 for limit "N/minute" and message. */
static void
expect_429(const struct srv_resp *r, const char *limit_count, const char *body)
{
	srv_expect_429(r, limit_count, body, errlog);
}

Test(lighttpd_authz, example_allows_static_and_cgi_with_variables,
     .init = setup, .fini = teardown, .timeout = 20)
{
	start_example(rules_a);

	struct srv_resp r = get("/static.txt", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_str_eq(r.body, "static file content\n");
	/* lighttpd drops an allowing authorizer's headers */
	cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 0);
	srv_resp_free(&r);

	r = get("/cgi/count.cgi", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_str_eq(r.body,
			 "RL_CLIENT=127.0.0.1\n"
			 "RL_KEY=addr=127.0.0.1\n"
			 "RL_RULE=/cgi/count.cgi\n"
			 "RL_LIMIT=2/minute\n"
			 "RL_REMAINING=1\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("count")), 1);
}

Test(lighttpd_authz, denied_request_gets_429_and_never_runs_the_script,
     .init = setup, .fini = teardown, .timeout = 20)
{
	start_example(rules_a);

	for (int i = 0; i < 2; i++) {
		struct srv_resp r = get("/cgi/count.cgi", NULL, NULL);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
		srv_resp_free(&r);
	}
	cr_assert_eq(srv_count_lines(srv_path("count")), 2);

	struct srv_resp r = get("/cgi/count.cgi", NULL, NULL);
	expect_429(&r, "2", "count.cgi: slow down\n");
	srv_resp_free(&r);

	/* Other spellings of the path are the same budget: lighttpd runs
	 * count.cgi for each of them (";" segments are names to it, given
	 * in PATH_INFO). */
	static const char *const spellings[] = {
		"/cgi//./count.cgi", "/cgi/count.cgi/..;", "/cgi/count.cgi/..%3B",
		"/cgi/count.cgi/.;/x", "/cgi/x;/../count.cgi",
	};
	for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
		r = get(spellings[i], NULL, NULL);
		expect_429(&r, "2", "count.cgi: slow down\n");
		srv_resp_free(&r);
	}
	/* an encoded '/' with "..": servers read it apart (nginx decodes
	 * it first, Apache after), so it is refused */
	r = get("/cgi/count.cgi/%2f/..", NULL, NULL);
	cr_expect_eq(r.status, 400, "%s\n%s", r.status_line, errlog());
	srv_resp_free(&r);

	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/cgi/count.cgi", base);
	srv_http("POST", url, NULL, &r);
	expect_429(&r, "2", "count.cgi: slow down\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("count")), 2,
		     "the protected script ran after a denial");

	/* The static file has its own budget: 3 allowed, then 429. */
	for (int i = 0; i < 3; i++) {
		r = get("/static.txt", NULL, NULL);
		cr_expect_eq(r.status, 200);
		srv_resp_free(&r);
	}
	r = get("/static.txt", NULL, NULL);
	expect_429(&r, "3", "static: slow down\n");
	srv_resp_free(&r);

	/* The denials are in server.breakagelog (rategate's stderr). */
	cr_expect_not_null(strstr(errlog(), "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/cgi/count.cgi origin=rule limit=2/minute remaining=0 path=/cgi/count.cgi method=GET retry_after="),
			   "log:\n%s", errlog());
	cr_expect_not_null(strstr(errlog(), "path=/cgi/count.cgi method=POST"),
			   "log:\n%s", errlog());

	/* Stopping lighttpd stops rategate, cleanly. */
	/* (lighttpd's own exit status after SIGTERM varies, 0 or 1: not
	 * ours to check.) */
	srv_stop(lighttpd, 10);
	int st[4];
	int n = srv_reap_orphans(st, 4, 10);
	cr_assert_eq(n, 1, "rategate did not exit with lighttpd");
	cr_expect_eq(st[0], 0, "rategate exit status %d; log:\n%s", st[0], errlog());
	cr_expect_null(strstr(errlog(), "Sanitizer"), "log:\n%s", errlog());
}

/* lighttpd gives its authorizer no CONTENT_LENGTH, only the client's
 * Content-Length header (HTTP_CONTENT_LENGTH): max-body is enforced from
 * it, before anything is counted. */
Test(lighttpd_authz, max_body_from_the_content_length_header,
     .init = setup, .fini = teardown, .timeout = 30)
{
	static char body[2048];
	char url[128];
	struct srv_resp r;

	memset(body, 'a', sizeof(body));
	cr_assert_eq(mkdir(srv_path("docroot/up"), 0755), 0);
	const char *cnt[] = { "@COUNT@", srv_path("count"), NULL };
	srv_write_subst("docroot/up/env.cgi", count_cgi, cnt, 0755);
	start_example(rules_a);
	snprintf(url, sizeof(url), "%s/up/env.cgi", base);
	srv_http_body("POST", url, NULL, body, 1025, 0, &r);
	cr_expect_eq(r.status, 413, "%s\n%s", r.status_line, errlog());
	srv_resp_free(&r);
	srv_http_body("POST", url, NULL, body, 1024, 0, &r);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_not_null(strstr(r.body, "RL_REMAINING=99\n"),
			   "the 413 cost no budget: %s", r.body);
	srv_resp_free(&r);
}

/* lighttpd serves /static.txt/x as static.txt (path info): the rule for
 * the file counts it. */
Test(lighttpd_authz, path_info_after_a_file_counts_as_the_file,
     .init = setup, .fini = teardown, .timeout = 30)
{
	static const char *const paths[] = { "/static.txt/x", "/static.txt",
					      "/static.txt/y/z" };
	start_example(rules_a);
	for (size_t i = 0; i < 3; i++) {
		struct srv_resp r = get(paths[i], NULL, NULL);
		cr_expect_eq(r.status, 200, "%s: %s\n%s", paths[i], r.status_line, errlog());
		cr_expect_str_eq(r.body, "static file content\n", "%s", paths[i]);
		srv_resp_free(&r);
	}
	struct srv_resp r = get("/static.txt/w", NULL, NULL);
	expect_429(&r, "3", "static: slow down\n");
	srv_resp_free(&r);
}

Test(lighttpd_authz, json_body_when_the_client_prefers_json,
     .init = setup, .fini = teardown, .timeout = 20)
{
	char v[64], want[256];

	start_example(rules_a);
	struct srv_resp r = get("/json.txt", "Accept: application/json", NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	srv_resp_free(&r);

	r = get("/json.txt", "Accept: text/html, application/json;q=0.9, */*;q=0.1", NULL);
	cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests");
	cr_expect_str_eq(srv_header(&r, "Content-Type", v, sizeof(v)), "application/json");
	cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
	snprintf(want, sizeof(want),
		 "{\"error\":\"rate_limited\",\"message\":\"json: \\\"slow\\\" down\",\"retry_after\":%s,\"limit\":\"1/minute\"}\n",
		 v);
	cr_expect_str_eq(r.body, want);
	srv_resp_free(&r);

	/* q-values count, not order: JSON at q=0.1 loses to text/plain. */
	r = get("/json.txt", "Accept: application/json;q=0.1, text/plain", NULL);
	cr_expect_str_eq(srv_header(&r, "Content-Type", v, sizeof(v)),
			 "text/plain; charset=utf-8");
	cr_expect_str_eq(r.body, "json: \"slow\" down\n");
	srv_resp_free(&r);
}

/* The own-socket set-up: rategate -l unix:DIR/rg.sock -L DIR/rategate.log
 * with rules, started first, then lighttpd on it.  Returns rategate's PID. */
static pid_t
start_own_socket(const char *rules)
{
	char portbuf[16], sock[SRV_PATH_MAX];

	srv_need("lighttpd", "lighttpd");
	srv_write("site.rules", rules, 0644);
	port = srv_free_port();
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	const char *pairs[] = { "@DIR@", srv_dir, "@PORT@", portbuf, NULL };
	char *conf = srv_subst(lighttpd_socket_conf, pairs);
	snprintf(sock, sizeof(sock), "unix:%s", srv_path("rg.sock"));
	pid_t rg = srv_start_rategate(srv_path("site.rules"), sock, 2, srv_path("rategate.log"),
				      srv_path("rategate.out"));
	lighttpd = srv_start_lighttpd(conf, port);
	free(conf);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	return rg;
}

Test(lighttpd_authz, forwarded_for_cannot_pick_the_key_without_trusted_proxies,
     .init = setup, .fini = teardown, .timeout = 20)
{
	start_example(rules_a);

	struct srv_resp r = get("/xff/env.cgi", "X-Forwarded-For: 203.0.113.9", NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_not_null(strstr(r.body, "RL_CLIENT=127.0.0.1\n"), "%s", r.body);
	srv_resp_free(&r);

	/* A new X-Forwarded-For value is no new budget. */
	r = get("/xff/env.cgi", "X-Forwarded-For: 198.51.100.1", NULL);
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);
	r = get("/xff/env.cgi", "X-Forwarded-For: 198.51.100.2, 198.51.100.3", NULL);
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("count")), 1);
}

Test(lighttpd_authz, own_socket_with_one_trusted_proxy,
     .init = setup, .fini = teardown, .timeout = 20)
{
	struct stat sb;

	pid_t rg = start_own_socket(rules_b);
	cr_assert_eq(stat(srv_path("rg.sock"), &sb), 0);
	cr_expect_eq(sb.st_mode & 0777, 0660, "socket mode %o", sb.st_mode & 0777);

	/* The client is the hop our one trusted proxy appended. */
	struct srv_resp r = get("/xff/env.cgi", "X-Forwarded-For: 203.0.113.9, 10.0.0.1", NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	cr_expect_not_null(strstr(r.body, "RL_CLIENT=10.0.0.1\n"), "%s", r.body);
	srv_resp_free(&r);

	/* Whatever the client writes left of it changes nothing. */
	r = get("/xff/env.cgi", "X-Forwarded-For: 192.0.2.77, 10.0.0.1", NULL);
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);
	r = get("/xff/env.cgi", "X-Forwarded-For: 192.0.2.78", "X-Forwarded-For: 10.0.0.1");
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);

	/* Another client behind the proxy has its own budget. */
	r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.0.2", NULL);
	cr_expect_eq(r.status, 200);
	cr_expect_not_null(strstr(r.body, "RL_CLIENT=10.0.0.2\n"), "%s", r.body);
	srv_resp_free(&r);

	/* An exempt client (exempt-clients 10.0.5.0/24) is never limited nor
	 * told of limits; a client that writes an exempt address left of
	 * what our proxy appended is not exempt. */
	for (int i = 0; i < 3; i++) {
		r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.5.7", NULL);
		cr_expect_eq(r.status, 200, "%s", r.status_line);
		cr_expect_not_null(strstr(r.body, "RL_EXEMPT=1\n"), "%s", r.body);
		cr_expect_null(strstr(r.headers, "X-RateLimit"), "%s", r.headers);
		srv_resp_free(&r);
	}
	r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.5.7, 10.0.0.2", NULL);
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);

	/* X_Forwarded_For, a name variant lighttpd passes as a second
	 * HTTP_X_FORWARDED_FOR: neither is trusted, the client is the proxy
	 * (REMOTE_ADDR), and one warning says so for both requests. */
	r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.0.3", "X_Forwarded_For: 10.0.0.9");
	cr_expect_eq(r.status, 200);
	cr_expect_not_null(strstr(r.body, "RL_CLIENT=127.0.0.1\n"), "%s", r.body);
	srv_resp_free(&r);
	r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.0.4", "X_Forwarded_For: 10.0.0.8");
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("count")), 6);

	/* log rotation (logrotate's postrotate: kill -HUP): the -L file
	 * moved away, SIGHUP makes a new one and the lines go there */
	cr_assert_eq(rename(srv_path("rategate.log"), srv_path("rategate.log.1")), 0);
	cr_assert_eq(kill(rg, SIGHUP), 0);
	for (int i = 0; i < 250 && srv_count_in_file(srv_path("rategate.log"), "loaded\"") < 1; i++)
		srv_sleep_ms(20);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "1 rule loaded\""), 1, "%s", errlog());
	r = get("/xff/env.cgi", "X-Forwarded-For: 10.0.0.2", NULL);
	expect_429(&r, "1", "xff: slow down\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "event=deny status=429 client=10.0.0.2"), 1,
		     "%s", errlog());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log.1"), "loaded\""), 0);

	srv_stop(lighttpd, 10);
	/* SIGTERM: rategate finishes and exits 0, removing its socket. */
	cr_expect_eq(srv_stop(rg, 10), 0);
	cr_expect_neq(stat(srv_path("rg.sock"), &sb), 0, "socket file left behind");

	/* the lines before the rotation, then those after it */
	char *log0 = srv_read(srv_path("rategate.log.1")), *log1 = srv_read(srv_path("rategate.log"));
	char *log = NULL;
	cr_assert(asprintf(&log, "%s%s", log0 ? log0 : "", log1 ? log1 : "") > 0);
	free(log0);
	free(log1);
	cr_expect_not_null(strstr(log, "event=deny status=429 client=10.0.0.1 key=\"addr=10.0.0.1\" rule=/xff/** origin=rule limit=1/minute remaining=0 path=/xff/env.cgi method=GET retry_after="),
			   "log:\n%s", log);
	cr_expect_not_null(strstr(log, "event=stop"), "log:\n%s", log);
	const char *warn = strstr(log, "level=warn event=proxy-header msg=\"X-Forwarded-For came as two or more params behind lighttpd/");
	cr_expect_not_null(warn, "log:\n%s", log);
	if (warn != NULL) {
		cr_expect_not_null(strstr(warn, "the client counts as 127.0.0.1, the nearest trusted hop (1 request with an untrusted proxy header since the last line like this)\"\n"),
				   "log:\n%s", log);
		cr_expect_null(strstr(warn + strlen("level=warn event="), "event=proxy-header"), "a second line within the minute:\n%s", log);
	}
	free(log);
	char *out = srv_read(srv_path("rategate.out"));
	cr_expect(out == NULL || strstr(out, "Sanitizer") == NULL, "stderr:\n%s", out);
	free(out);
}

/* Send SIGHUP and wait for the nth line holding needle in the log. */
static void
hup_and_wait(pid_t rg, const char *needle, int nth)
{
	cr_assert_eq(kill(rg, SIGHUP), 0);
	for (int i = 0; i < 250; i++) {
		if (srv_count_in_file(srv_path("rategate.log"), needle) >= nth)
			return;
		srv_sleep_ms(20);
	}
	cr_assert_fail("no \"%s\" (#%d) in the log after SIGHUP\n%s", needle, nth, errlog());
}

/* A reload is refused only for rules the open store cannot hold: the
 * memory store takes a moving window of any size (it was refused, the
 * store "opened for 0" hits). */
Test(lighttpd_authz, reload_takes_any_moving_window_on_the_memory_store,
     .init = setup, .fini = teardown, .timeout = 30)
{
	pid_t rg = start_own_socket("storage memory\n/static.txt 100/minute\n");
	cr_expect_eq(get_status("/static.txt"), 200, "%s", errlog());
	srv_write("site.rules", "storage memory\n"
		  "/static.txt 2/minute strategy=moving-window\n"
		  "/json.txt 1000/minute strategy=moving-window\n", 0644);
	hup_and_wait(rg, "2 rules loaded\"", 1);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "still running the rules loaded before"), 0,
		     "%s", errlog());
	cr_expect_eq(get_status("/static.txt"), 200);
	cr_expect_eq(get_status("/static.txt"), 200);
	cr_expect_eq(get_status("/static.txt"), 429, "%s", errlog());
	srv_stop(lighttpd, 10);
	cr_expect_eq(srv_stop(rg, 10), 0);
}

/* A shm file keeps its slot sizes: concurrency= above its in-flight slots
 * is refused on reload as a bigger moving window is (it was let in, and
 * every request of the rule got a 503). */
Test(lighttpd_authz, reload_refuses_concurrency_above_the_shm_slots,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char *v1 = NULL, *v2 = NULL;
	cr_assert(asprintf(&v1, "storage shm:%s?size=1M\n/static.txt 2/minute\n",
			   srv_path("store")) > 0);
	cr_assert(asprintf(&v2, "%s/json.txt 100/minute concurrency=5000\n", v1) > 0);
	pid_t rg = start_own_socket(v1);
	cr_expect_eq(get_status("/static.txt"), 200, "%s", errlog());
	srv_write("site.rules", v2, 0644);
	hup_and_wait(rg, "still running the rules loaded before", 1);
	char want[SRV_PATH_MAX * 2 + 256];
	snprintf(want, sizeof(want),
		 "level=error event=reload msg=\"%s: the rule at %s:3 needs in-flight slots for concurrency up to 5000; the store was opened for 67,",
		 srv_path("site.rules"), srv_path("site.rules"));
	srv_expect_in_file(srv_path("rategate.log"), want);
	/* the old rules go on counting */
	cr_expect_eq(get_status("/static.txt"), 200);
	cr_expect_eq(get_status("/static.txt"), 429, "%s", errlog());
	free(v1);
	free(v2);
	srv_stop(lighttpd, 10);
	cr_expect_eq(srv_stop(rg, 10), 0);
}

/* One concurrent client: n requests, counting 200s and 429s. */
struct client {
	const char *url;
	int n, ok, denied;
};

static void *
client_run(void *arg)
{
	struct client *c = arg;

	for (int i = 0; i < c->n; i++) {
		long st = srv_status(c->url);
		c->ok += st == 200;
		c->denied += st == 429;
	}
	return NULL;
}

/* Four rategate processes spawned by lighttpd share one budget through
 * the shared-memory store: 4 clients x 10 concurrent requests against a
 * 10/minute limit get exactly 10 answers 200, the rest 429. */
Test(lighttpd_authz, four_processes_share_one_budget_exactly,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[SRV_PATH_MAX + 256], url[SRV_PATH_MAX];
	enum { CHILDREN = 4, EACH = 10 };

	snprintf(rules, sizeof(rules),
		 "storage shm:%s?size=4M\n"
		 "/static.txt 10/minute\n", srv_path("counters"));
	max_procs = 4;
	start_example(rules);
	max_procs = 1;
	snprintf(url, sizeof(url), "%s/static.txt", base);

	pthread_t th[CHILDREN];
	struct client cl[CHILDREN];
	for (int k = 0; k < CHILDREN; k++) {
		cl[k] = (struct client){ url, EACH, 0, 0 };
		cr_assert_eq(pthread_create(&th[k], NULL, client_run, &cl[k]), 0);
	}
	int allowed = 0, denied = 0;
	for (int k = 0; k < CHILDREN; k++) {
		pthread_join(th[k], NULL);
		allowed += cl[k].ok;
		denied += cl[k].denied;
	}
	cr_assert_eq(allowed + denied, CHILDREN * EACH,
		     "answers other than 200/429\n%s", errlog());
	cr_expect_eq(allowed, 10, "%d of %d allowed\n%s", allowed, CHILDREN * EACH, errlog());

	/* and the budget really lives in the file: one more is denied */
	struct srv_resp r = get("/static.txt", NULL, NULL);
	cr_expect_eq(r.status, 429);
	srv_resp_free(&r);
}

/* The shm store file truncated under a running gateway: the next request
 * that touches the lost pages is a SIGBUS, which kills the process (the
 * web server answers 500 and restarts a process it manages), but only
 * after a log line that says why.  Not under valgrind. */
Test(lighttpd_authz, truncated_store_file_is_logged_before_the_crash,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[SRV_PATH_MAX + 64];

	/* valgrind reports a death by signal in its log, which the valgrind
	 * run counts as an error: this one is meant */
	if (getenv("RATEGATE_WRAPPER") != NULL)
		cr_skip_test("under valgrind");
	snprintf(rules, sizeof(rules), "storage shm:%s?size=4M\n/xff/** 100/minute\n",
		 srv_path("store"));
	pid_t rg = start_own_socket(rules);

	struct srv_resp r = get("/xff/env.cgi", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, errlog());
	srv_resp_free(&r);
	cr_assert_eq(truncate(srv_path("store"), 4096), 0);
	for (int i = 0; i < 3; i++) {
		r = get("/xff/env.cgi", NULL, NULL);
		cr_expect_neq(r.status, 200);
		srv_resp_free(&r);
	}
	for (int i = 0; i < 100 && srv_alive(rg); i++)
		srv_sleep_ms(20);
	cr_expect(!srv_alive(rg), "rategate survived a truncated store?");
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "level=error event=crash msg=\"SIGBUS: the shared-memory store file was truncated under the running gateway"),
		     1, "%s", errlog());
	srv_stop(lighttpd, 10);
	if (srv_alive(rg))
		srv_stop(rg, 5);
}
