/*
 * test_lighttpd_responder.c - rategate as a FastCGI *responder* behind a
 * real lighttpd (examples/lighttpd-responder.conf, run with its var.*
 * values replaced; lighttpd spawns rategate through bin-path), proxying
 * allowed requests to tests/apps/echo_cgi (upstream cgi:) and to
 * tests/apps/echo_fcgi (upstream fcgi+unix:), per path.
 *
 * Allowed requests reach the application with method, query, headers and
 * body intact (a 10 MiB upload and a chunked one, by checksum) and come
 * back with X-RateLimit-*; denied ones get 429 and never reach it
 * (echo_fcgi's call counter, asked through the exempt /ping?count, does not
 * move).  X-Forwarded-For cannot pick the key with trusted-proxies 0, 1 or
 * 2.  A CGI script that crashes, hangs or writes garbage is a 502 and a
 * log line, with no zombie left and its concurrency slot given back.
 * max-body (413), bandwidth=, deduct-when=, concurrency=, SIGHUP reloads
 * (good and broken files), the statistics endpoint and four processes on
 * one shared-memory budget.  The classic rule files of examples/rules/ are
 * each run here with their storage and upstream lines replaced.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"

static int port;
static pid_t lighttpd, rg, app;
static char base[64];
static int max_procs = 1;
static char echo_cgi[SRV_PATH_MAX], app_uri[SRV_PATH_MAX];

static void
setup(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	srv_built("tests/apps/echo_cgi", echo_cgi);
	snprintf(app_uri, sizeof(app_uri), "fcgi+unix://%s", srv_path("app.sock"));
	max_procs = 1;
	app = 0;
}

static void
teardown(void)
{
	srv_cleanup();
}

/* echo_fcgi on srv_dir/app.sock, 16 threads: more than rategate's
 * processes x workers ever hold connections. */
static void
start_app(void)
{
	app = srv_start_echo_fcgi(0, srv_path("app.sock"), 16, NULL);
}

/* rules with @STORE@ (a shm store in srv_dir), @CGI@ (echo_cgi's path)
 * and @APP@ (echo_fcgi's URI) replaced where they occur. */
static char *
fill(const char *rules)
{
	char store[SRV_PATH_MAX + 32];

	snprintf(store, sizeof(store), "shm:%s?size=4M", srv_path("counters"));
	const char *pairs[] = { "@STORE@", store, "@CGI@", echo_cgi, "@APP@", app_uri, NULL };
	return srv_subst_some(rules, pairs);
}

/* An example rule file of examples/rules/ with its storage and upstream
 * lines pointed at this test's store and echo_fcgi. */
static char *
example_rules(const char *name)
{
	char rel[128], line[SRV_PATH_MAX + 64];

	snprintf(rel, sizeof(rel), "examples/rules/%s", name);
	char *text = srv_source(rel);
	snprintf(line, sizeof(line), "storage          shm:%s?size=4M", srv_path("counters"));
	char *a = srv_set_line(text, "storage ", line);
	snprintf(line, sizeof(line), "upstream         %s", app_uri);
	char *b = srv_set_line(a, "upstream ", line);
	free(text);
	free(a);
	return b;
}

/* lighttpd from examples/lighttpd-responder.conf spawning rategate with
 * rules (taken as they are: fill() them first). */
static void
start_with(const char *rules)
{
	srv_write("site.rules", rules, 0644);
	port = srv_free_port();
	char *conf = srv_lighttpd_conf("lighttpd-responder.conf", "site.rules", port, max_procs);
	lighttpd = srv_start_lighttpd(conf, port);
	free(conf);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	rg = srv_child(lighttpd, "rategate", 10);
	cr_assert_neq(rg, 0, "lighttpd started no rategate");
}

static void
start(const char *rules)
{
	char *r = fill(rules);
	start_with(r);
	free(r);
}

/* lighttpd's error log, rategate's log (server.breakagelog) and stderr. */
static const char *
logs(void)
{
	static const char *const files[] = { "lighttpd error log", "lighttpd-error.log",
					     "rategate log", "rategate.log",
					     "lighttpd stderr", "lighttpd.out", NULL };

	return srv_logs(files);
}

/* Stop lighttpd: its rategate processes drain and exit by themselves
 * (nothing has to be killed), and in the sanitizer build report
 * nothing. */
static void
finish(void)
{
	srv_stop_spawner(lighttpd, srv_path("rategate.log"));
}

static char *
rglog(void)
{
	return srv_read_text(srv_path("rategate.log"));
}

static struct srv_resp
req(const char *method, const char *path, const char *h1, const char *h2)
{
	const char *hdrs[] = { h1, h2, NULL };
	struct srv_resp r;

	srv_http_at(method, base, path, hdrs, &r);
	return r;
}

static long
status(const char *method, const char *path)
{
	struct srv_resp r = req(method, path, NULL, NULL);
	long st = r.status;
	srv_resp_free(&r);
	return st;
}

/* The application's call counter (echo_fcgi "count", through the exempt
 * /ping, which every rule set here sends to echo_fcgi). */
static long
calls(void)
{
	struct srv_resp r = req("GET", "/ping?count", NULL, NULL);
	cr_assert_eq(r.status, 200, "/ping?count: %s\n%s", r.status_line, logs());
	cr_assert_eq(strncmp(r.body, "calls=", 6), 0, "%s", r.body);
	long n = atol(r.body + 6);
	srv_resp_free(&r);
	return n;
}

static void
expect_hdr(const struct srv_resp *r, const char *name, const char *want)
{
	char v[256];
	const char *got = srv_header(r, name, v, sizeof(v));

	cr_expect(got != NULL && strcmp(got, want) == 0, "%s: \"%s\", want \"%s\"; headers:\n%s",
		  name, got ? got : "(absent)", want, r->headers);
}

/* rategate's 429: Retry-After within 1..max_retry, X-RateLimit-* with
 * limit (when not NULL), the message. */
static void
expect_429(const struct srv_resp *r, const char *limit, int max_retry, const char *body)
{
	char v[256];

	cr_assert_str_eq(r->status_line, "HTTP/1.1 429 Too Many Requests", "%s\n%s",
			 r->headers, logs());
	cr_assert_not_null(srv_header(r, "Retry-After", v, sizeof(v)), "%s", r->headers);
	cr_expect(atoi(v) >= 1 && atoi(v) <= max_retry, "Retry-After %s", v);
	if (limit != NULL) {
		expect_hdr(r, "X-RateLimit-Limit", limit);
		expect_hdr(r, "X-RateLimit-Remaining", "0");
		cr_assert_not_null(srv_header(r, "X-RateLimit-Reset", v, sizeof(v)));
		cr_expect(atoi(v) >= 1 && atoi(v) <= max_retry, "X-RateLimit-Reset %s", v);
	}
	expect_hdr(r, "Cache-Control", "no-store");
	if (body != NULL)
		cr_expect_str_eq(r->body, body);
}

/* ------------------------------------------------------------------ */

static const char rules_basic[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         @APP@\n"
	"/cgi/**          100/minute  upstream=cgi:@CGI@\n"
	"/cgi/app         upstream=@APP@\n"
	"/fcgi/**         100/minute\n"
	"/ping            exempt\n";

Test(responder, allowed_requests_reach_both_apps_intact,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start(rules_basic);

	/* CGI: method, query, a header and the decision's facts */
	struct srv_resp r = req("GET", "/cgi/x?a=1&b=%20two", "X-Test: hello there", NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "method", "GET");
	srv_expect_field(&r, "query", "a=1&b=%20two");
	srv_expect_field(&r, "http_x_test", "hello there");
	srv_expect_field(&r, "rl_client", "127.0.0.1");
	srv_expect_field(&r, "script_filename", echo_cgi);
	srv_expect_field(&r, "http_proxy", "absent");
	srv_expect_field(&r, "body_len", "0");
	expect_hdr(&r, "X-RateLimit-Limit", "100");
	expect_hdr(&r, "X-RateLimit-Remaining", "99");
	expect_hdr(&r, "Content-Type", "text/plain");
	srv_resp_free(&r);

	/* httpoxy: a client's Proxy: header never becomes HTTP_PROXY */
	r = req("POST", "/cgi/form?x=y", "X-Test: posted", "Proxy: http://evil.example/");
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "method", "POST");
	srv_expect_field(&r, "content_length", "7");
	srv_expect_field(&r, "body_len", "7");
	char fnv[17];
	srv_fnv("a=1&b=2", 7, fnv);
	srv_expect_field(&r, "body_fnv", fnv);
	srv_expect_field(&r, "http_proxy", "absent");
	expect_hdr(&r, "X-RateLimit-Remaining", "98");
	srv_resp_free(&r);

	/* FastCGI application behind it */
	long before = calls();
	r = req("PUT", "/fcgi/item/7?v=1", "X-Test: put", "Proxy: http://evil.example/");
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "method", "PUT");
	srv_expect_field(&r, "query", "v=1");
	srv_expect_field(&r, "uri", "/fcgi/item/7?v=1");
	srv_expect_field(&r, "http_x_test", "put");
	srv_expect_field(&r, "rl_client", "127.0.0.1");
	srv_expect_field(&r, "http_proxy", "absent");
	expect_hdr(&r, "X-RateLimit-Limit", "100");
	expect_hdr(&r, "X-RateLimit-Remaining", "99");
	srv_resp_free(&r);
	r = req("POST", "/fcgi/form", NULL, NULL);
	srv_expect_field(&r, "body_len", "7");
	srv_expect_field(&r, "body_fnv", fnv);
	expect_hdr(&r, "X-RateLimit-Remaining", "98");
	srv_resp_free(&r);
	cr_expect_eq(calls(), before + 2);

	/* The application's own status and headers pass through, with ours */
	r = req("GET", "/fcgi/s?status=203&header=X-App:yes", NULL, NULL);
	cr_expect_str_eq(r.status_line, "HTTP/1.1 203 Non-Authoritative Information");
	expect_hdr(&r, "X-App", "yes");
	expect_hdr(&r, "X-RateLimit-Remaining", "97");
	srv_resp_free(&r);

	/* An exempt path carries no rate-limit headers */
	r = req("GET", "/ping", NULL, NULL);
	cr_expect_eq(r.status, 200);
	cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 0, "%s", r.headers);
	srv_resp_free(&r);

	/* A settings rule (upstream= only) under the /cgi subtree: its upstream, the
	 * subtree's budget (two CGI requests taken above) */
	before = calls();
	r = req("GET", "/cgi/app", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "uri", "/cgi/app");
	expect_hdr(&r, "X-RateLimit-Limit", "100");
	expect_hdr(&r, "X-RateLimit-Remaining", "97");
	srv_resp_free(&r);
	cr_expect_eq(calls(), before + 1, "the FastCGI application answered");
	finish();
}

Test(responder, big_and_chunked_uploads_arrive_intact,
     .init = setup, .fini = teardown, .timeout = 60)
{
	enum { BIG = 10 << 20 };
	char fnv[17], v[64];
	char *body = srv_noise(BIG, 0);

	srv_fnv(body, BIG, fnv);
	start_app();
	start(rules_basic);

	const char *paths[] = { "/cgi/upload", "/fcgi/upload" };
	for (int p = 0; p < 2; p++) {
		for (int chunked = 0; chunked < 2; chunked++) {
			char url[SRV_PATH_MAX];
			struct srv_resp r;
			snprintf(url, sizeof(url), "%s%s", base, paths[p]);
			srv_http_body("POST", url, NULL, body, BIG, chunked, &r);
			cr_assert_eq(r.status, 200, "%s chunked=%d: %s\n%s", paths[p], chunked,
				     r.status_line, logs());
			snprintf(v, sizeof(v), "%d", BIG);
			srv_expect_field(&r, "body_len", v);
			srv_expect_field(&r, "body_fnv", fnv);
			/* lighttpd reads a chunked body whole and passes it on
			 * with its length */
			srv_expect_field(&r, "content_length", v);
			srv_resp_free(&r);
		}
		/* a small chunked one, and an empty one */
		char url[SRV_PATH_MAX];
		struct srv_resp r;
		snprintf(url, sizeof(url), "%s%s", base, paths[p]);
		srv_http_body("POST", url, NULL, "hello, chunks", 13, 1, &r);
		cr_expect_eq(r.status, 200);
		srv_expect_field(&r, "body_len", "13");
		srv_fnv("hello, chunks", 13, fnv);
		srv_expect_field(&r, "body_fnv", fnv);
		srv_resp_free(&r);
		srv_http_body("POST", url, NULL, "", 0, 0, &r);
		cr_expect_eq(r.status, 200);
		srv_expect_field(&r, "body_len", "0");
		srv_resp_free(&r);
		srv_fnv(body, BIG, fnv);
	}
	free(body);
	finish();
}

/* examples/rules/payment.rules: one request per 10 s on /pay. */
Test(responder, payment_example_denials_never_reach_the_app,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	char *rules = example_rules("payment.rules");
	start_with(rules);
	free(rules);

	long before = calls();
	struct srv_resp r = req("POST", "/pay", "X-Test: first", NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "http_x_test", "first");
	expect_hdr(&r, "X-RateLimit-Limit", "1");
	expect_hdr(&r, "X-RateLimit-Remaining", "0");
	srv_resp_free(&r);
	cr_assert_eq(calls(), before + 1);

	for (int i = 0; i < 3; i++) {
		r = req(i == 1 ? "GET" : "POST", i == 2 ? "//pay/" : "/pay", NULL, NULL);
		expect_429(&r, "1", 10, "Payments: one request per 10 seconds\n");
		expect_hdr(&r, "Content-Type", "text/plain; charset=utf-8");
		srv_resp_free(&r);
	}
	cr_expect_eq(calls(), before + 1, "a denied request reached the application");

	/* /ping is exempt: never limited */
	for (int i = 0; i < 5; i++)
		cr_expect_eq(status("GET", "/ping"), 200);
	cr_expect_eq(calls(), before + 6);

	char *log = rglog();
	cr_expect_not_null(strstr(log, "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/pay origin=rule limit=\"1 per 10 seconds\" remaining=0 path=/pay method=POST retry_after="),
			   "%s", log);
	free(log);
	finish();
}

/* trusted-proxies N: which X-Forwarded-For entry is the client. */
static void
forwarded_for(int n)
{
	char rules[512];

	snprintf(rules, sizeof(rules),
		 "storage          @STORE@\n"
		 "headers          on\n"
		 "trusted-proxies  %d\n"
		 "upstream         @APP@\n"
		 "/who/**          2/minute  upstream=cgi:@CGI@\n"
		 "/ping            exempt\n", n);
	start(rules);

	/* [n][i]: the header of request i, and the client rategate must see */
	static const char *const xff[3][4] = {
		{ "X-Forwarded-For: 203.0.113.1", "X-Forwarded-For: 203.0.113.2, 198.51.100.2",
		  "X-Forwarded-For: 10.9.9.9", NULL },
		{ "X-Forwarded-For: 203.0.113.1, 10.0.0.1", "X-Forwarded-For: 198.51.100.9, 10.0.0.1",
		  "X-Forwarded-For: garbage, 10.0.0.1", "X-Forwarded-For: 10.0.0.2" },
		{ "X-Forwarded-For: 6.6.6.6, 192.0.2.5, 10.0.0.1",
		  "X-Forwarded-For: 7.7.7.7, 192.0.2.5, 10.0.0.3",
		  "X-Forwarded-For: 8.8.8.8, 9.9.9.9, 192.0.2.5, 10.0.0.1",
		  "X-Forwarded-For: 192.0.2.6, 10.0.0.1" },
	};
	static const char *const client[3][4] = {
		{ "127.0.0.1", "127.0.0.1", "127.0.0.1", NULL },
		{ "10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2" },
		{ "192.0.2.5", "192.0.2.5", "192.0.2.5", "192.0.2.6" },
	};
	for (int i = 0; i < 2; i++) {
		struct srv_resp r = req("GET", "/who/am/i", xff[n][i], NULL);
		cr_assert_eq(r.status, 200, "request %d (%s): %s\n%s", i, xff[n][i],
			     r.status_line, logs());
		srv_expect_field(&r, "rl_client", client[n][i]);
		srv_resp_free(&r);
	}
	/* a third spelling of the same client is the same budget */
	struct srv_resp r = req("GET", "/who/am/i", xff[n][2], NULL);
	expect_429(&r, "2", 60, NULL);
	srv_resp_free(&r);
	/* so is no header at all with 0; with 1 or 2 that is 127.0.0.1 */
	r = req("GET", "/who/am/i", NULL, NULL);
	if (n == 0)
		expect_429(&r, "2", 60, NULL);
	else
		cr_expect_eq(r.status, 200, "no X-Forwarded-For: %s", r.status_line);
	srv_resp_free(&r);
	/* another client behind the proxies has its own budget */
	if (xff[n][3] != NULL) {
		r = req("GET", "/who/am/i", xff[n][3], NULL);
		cr_expect_eq(r.status, 200, "%s: %s", xff[n][3], r.status_line);
		srv_expect_field(&r, "rl_client", client[n][3]);
		srv_resp_free(&r);
	}
	char *log = rglog(), want[128];
	snprintf(want, sizeof(want), "event=deny status=429 client=%s key=\"addr=%s\" rule=/who/**",
		 client[n][2], client[n][2]);
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
}

Test(responder, forwarded_for_cannot_escape_with_trusted_proxies_0,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	forwarded_for(0);
	finish();
}

Test(responder, forwarded_for_rightmost_with_trusted_proxies_1,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	forwarded_for(1);
	finish();
}

Test(responder, forwarded_for_second_from_right_with_trusted_proxies_2,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	forwarded_for(2);
	finish();
}

static const char rules_fail[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         cgi:@CGI@\n"
	"upstream-timeout 1s\n"
	"/slot            100/minute  concurrency=1\n"
	"/fslot           100/minute  concurrency=1  upstream=@APP@\n"
	"/ping            exempt  upstream=@APP@\n";

/* No child of rategate is left, running or zombie. */
static void
expect_no_children(void)
{
	int zombies = 0, n = srv_wait_no_children(rg, &zombies, 2);

	cr_expect_eq(n, 0, "rategate %d has %d children (%d zombies)", (int)rg, n, zombies);
}

Test(responder, cgi_crash_hang_garbage_are_502_without_zombies,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start(rules_fail);

	static const struct { const char *q, *log; } cases[] = {
		{ "crash", "answered 502: script killed by signal 11 before its response head was complete" },
		{ "garbage", "answered 502: script output: malformed header line \\\"this is not a CGI head\\\"" },
	};
	for (size_t i = 0; i < 2; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/cgi/x?%s", cases[i].q);
		struct srv_resp r = req("GET", path, NULL, NULL);
		cr_expect_eq(r.status, 502, "%s: %s\n%s", path, r.status_line, logs());
		expect_hdr(&r, "Cache-Control", "no-store");
		cr_expect_str_eq(r.body, "Bad Gateway: the application failed to answer\n");
		srv_resp_free(&r);
		char *log = rglog();
		cr_expect_not_null(strstr(log, cases[i].log), "%s\n%s", cases[i].log, log);
		free(log);
		expect_no_children();
	}

	/* hang: killed at upstream-timeout, with the child it started */
	char hdr[SRV_PATH_MAX + 32];
	snprintf(hdr, sizeof(hdr), "X-Pid-File: %s", srv_path("hang.pids"));
	double t0 = srv_now();
	struct srv_resp r = req("GET", "/cgi/x?hang", hdr, NULL);
	double took = srv_now() - t0;
	cr_expect_eq(r.status, 502, "%s\n%s", r.status_line, logs());
	cr_expect(took >= 0.9 && took < 5, "hang answered after %.2f s", took);
	srv_resp_free(&r);
	char *pids = srv_read(srv_path("hang.pids"));
	cr_assert_not_null(pids, "the hanging script wrote no pid file");
	long script = 0, child = 0;
	cr_assert_eq(sscanf(pids, "%ld %ld", &script, &child), 2, "%s", pids);
	free(pids);
	for (int i = 0; i < 100 && (srv_alive((pid_t)script) || srv_alive((pid_t)child)); i++)
		srv_sleep_ms(20);
	cr_expect(!srv_alive((pid_t)script), "the hanging script %ld survived", script);
	cr_expect(!srv_alive((pid_t)child), "the hanging script's child %ld survived", child);
	char *log = rglog();
	/* the path without its query: the query is never logged */
	cr_expect_not_null(strstr(log, "level=error event=upstream-error msg=\"GET /cgi/x from 127.0.0.1 -> cgi:"),
			   "%s", log);
	cr_expect_null(strstr(log, "?hang"), "%s", log);
	cr_expect_not_null(strstr(log, "answered 502: script timed out after 1000 ms"), "%s", log);
	free(log);
	expect_no_children();

	/* a script that exits 3 after a complete answer: the answer stands */
	r = req("GET", "/cgi/x?exit=3", NULL, NULL);
	cr_expect_eq(r.status, 200);
	srv_expect_field(&r, "query", "exit=3");
	srv_resp_free(&r);

	/* crash after the head: the answer is cut short, logged */
	r = req("GET", "/cgi/x?crash-after-head", NULL, NULL);
	cr_expect_eq(r.status, 200);
	cr_expect_str_eq(r.body, "partial\n");
	srv_resp_free(&r);
	log = rglog();
	cr_expect_not_null(strstr(log, "answered 200: script killed by signal 11 after its response head was sent"),
			   "%s", log);
	free(log);
	expect_no_children();

	/* a script that answers and exits 0, leaving a child in the
	 * background that keeps its output open: the answer ends at
	 * upstream-timeout (as behind Apache), the child is killed, and the
	 * log says the script exited, not that it timed out */
	snprintf(hdr, sizeof(hdr), "X-Pid-File: %s", srv_path("bg.pids"));
	r = req("GET", "/cgi/x?background", hdr, NULL);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "query", "background");
	srv_resp_free(&r);
	pids = srv_read(srv_path("bg.pids"));
	cr_assert_not_null(pids, "the script wrote no pid file");
	cr_assert_eq(sscanf(pids, "%ld %ld", &script, &child), 2, "%s", pids);
	free(pids);
	for (int i = 0; i < 100 && srv_alive((pid_t)child); i++)
		srv_sleep_ms(20);
	cr_expect(!srv_alive((pid_t)child), "the script's background child %ld survived", child);
	log = rglog();
	cr_expect_not_null(strstr(log, "answered 200: script exited with status 0, but another process "
				  "(one it started?) kept its output open until the timeout (1000 ms): "
				  "the response was ended there and its process group killed\"\n"),
			   "%s", log);
	free(log);
	expect_no_children();

	/* still serving, the same process */
	r = req("GET", "/cgi/x?fine", NULL, NULL);
	cr_expect_eq(r.status, 200);
	srv_expect_field(&r, "query", "fine");
	srv_resp_free(&r);
	cr_expect(srv_alive(rg));
	cr_expect_eq(srv_child(lighttpd, "rategate", 0), rg, "rategate was restarted");
	finish();
}

Test(responder, concurrency_slot_released_after_upstream_failure,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start(rules_fail);

	/* CGI: each failure gives the one slot back */
	static const char *const fails[] = { "/slot?crash", "/slot?garbage", "/slot?hang",
					     "/slot?crash-after-head" };
	for (size_t i = 0; i < 4; i++) {
		long st = status("GET", fails[i]);
		cr_expect_eq(st, i == 3 ? 200 : 502, "%s: %ld", fails[i], st);
		struct srv_resp r = req("GET", "/slot?next", NULL, NULL);
		cr_expect_eq(r.status, 200, "after %s: %s\n%s", fails[i], r.status_line, logs());
		srv_expect_field(&r, "query", "next");
		srv_resp_free(&r);
	}

	/* FastCGI: a connection closed without an answer, garbage */
	static const char *const ffails[] = { "/fslot?close", "/fslot?garbage", "/fslot?badhead" };
	for (size_t i = 0; i < 3; i++) {
		cr_expect_eq(status("GET", ffails[i]), 502, "%s", ffails[i]);
		cr_expect_eq(status("GET", "/fslot"), 200, "after %s\n%s", ffails[i], logs());
	}
	/* the application crashes (abort): no 429 after it, only the 502
	 * of an application that is gone until it is back */
	cr_expect_eq(status("GET", "/fslot?crash"), 502);
	int st[4];
	srv_stop(app, 5);
	srv_reap_orphans(st, 4, 0.2);
	cr_expect_eq(status("GET", "/fslot"), 502, "the application is down");
	start_app();
	cr_expect_eq(status("GET", "/fslot"), 200, "%s", logs());
	char *log = rglog();
	cr_expect_null(strstr(log, "event=deny"), "a slot was not given back:\n%s", log);
	free(log);
	finish();
}

/* examples/rules/chat.rules: two long polls in flight per client. */
struct bg {
	const char *url;
	long status;
};

static void *
bg_get(void *arg)
{
	struct bg *b = arg;

	b->status = srv_status(b->url);
	return NULL;
}

/* Poll the statistics until `inflight` reaches n (1), or give up (0). */
static int
wait_inflight(int n)
{
	char want[32];

	snprintf(want, sizeof(want), "\"inflight\":%d,", n);
	for (int i = 0; i < 250; i++) {
		struct srv_resp r = req("GET", "/rategate-status", NULL, NULL);
		int ok = strstr(r.body, want) != NULL;
		srv_resp_free(&r);
		if (ok)
			return 1;
		srv_sleep_ms(20);
	}
	return 0;
}

/* GET /cgi/x?hang with an X-Pid-File header (echo_cgi then starts a child
 * too), in a thread. */
struct hang_req {
	char hdr[SRV_PATH_MAX + 32];
	long status;
};

static void *
hang_get(void *arg)
{
	struct hang_req *h = arg;
	char rq[SRV_PATH_MAX + 128];
	size_t got = 0;

	/* raw, with a wait longer than libcurl's 10 s in srv_http_at: the
	 * answer comes after rategate's 10 s drain */
	snprintf(rq, sizeof(rq), "GET /cgi/x?hang HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n",
		 h->hdr);
	char *ans = srv_raw(port, rq, strlen(rq), 25, &got);
	h->status = ans != NULL && got > 12 && strncmp(ans, "HTTP/1.", 7) == 0 ?
		    strtol(ans + 9, NULL, 10) : -1;
	free(ans);
	return NULL;
}

/* SIGTERM with CGI scripts still running: rategate waits FCGI_DRAIN_S
 * (10 s) for them, then kills their process groups (the scripts and what
 * they started), answers their requests as for a crash and exits: nothing
 * is left behind as an orphan. */
Test(responder, sigterm_kills_scripts_still_running,
     .init = setup, .fini = teardown, .timeout = 60)
{
	start("storage          @STORE@\n"
	      "upstream         cgi:@CGI@\n"
	      "upstream-timeout 60s\n"
	      "/cgi/**          100/minute\n");
	struct hang_req hr[2];
	pthread_t th[2];
	for (int i = 0; i < 2; i++) {
		char name[32];
		snprintf(name, sizeof(name), "hang%d.pids", i);
		snprintf(hr[i].hdr, sizeof(hr[i].hdr), "X-Pid-File: %s", srv_path(name));
		cr_assert_eq(pthread_create(&th[i], NULL, hang_get, &hr[i]), 0);
	}
	pid_t scripts[2], kids[2];
	int n = 0;
	for (int i = 0; i < 250 && n < 2; i++) {
		n = srv_children_named(rg, "echo_cgi", scripts, 2);
		srv_sleep_ms(20);
	}
	cr_assert_eq(n, 2, "rategate %d runs %d scripts\n%s", (int)rg, n, logs());
	for (int i = 0; i < 2; i++) {
		kids[i] = 0;
		for (int k = 0; k < 250 && srv_children_named(scripts[i], NULL, &kids[i], 1) == 0; k++)
			srv_sleep_ms(20);
		cr_assert_neq(kids[i], 0, "script %d started no child", (int)scripts[i]);
	}

	double t0 = srv_now();
	cr_assert_eq(kill(rg, SIGTERM), 0);
	for (int i = 0; i < 800 && srv_alive(rg); i++)
		srv_sleep_ms(20);
	double took = srv_now() - t0;
	cr_expect(!srv_alive(rg), "rategate still running %.1f s after SIGTERM", took);
	cr_expect(took > 9 && took < 14, "rategate took %.1f s to stop", took);
	for (int i = 0; i < 2; i++) {
		cr_expect(!srv_alive(scripts[i]), "script %d survived the gateway", (int)scripts[i]);
		cr_expect(!srv_alive(kids[i]), "the child %d of script %d survived the gateway",
			  (int)kids[i], (int)scripts[i]);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(hr[i].status, 502, "request %d: %ld\n%s", i, hr[i].status, logs());
	}
	char *log = rglog();
	cr_expect_not_null(strstr(log, "event=stop msg=\"stopping: 2 requests in flight, waiting up to 10 s for them\""),
			   "said when the stop begins: %s", log);
	cr_expect_not_null(strstr(log, "event=stop msg=\"2 CGI scripts still running after 10 s: killed\""),
			   "%s", log);
	cr_expect_not_null(strstr(log, "event=stop msg=stopped"), "%s", log);
	free(log);
	finish();
}

Test(responder, chat_example_limits_requests_in_flight,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	char *rules = example_rules("chat.rules");
	/* the statistics endpoint tells when both polls are in flight */
	char *with_stats = NULL;
	cr_assert(asprintf(&with_stats, "%sstats /rategate-status\nstats-allow 127.0.0.1/32\n", rules) > 0);
	start_with(with_stats);
	free(rules);
	free(with_stats);

	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/chat/poll?sleep=1500", base);
	struct bg polls[2] = { { url, 0 }, { url, 0 } };
	pthread_t th[2];
	long base_calls = calls();
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, bg_get, &polls[i]), 0);
	cr_assert(wait_inflight(2), "the two polls never were in flight\n%s", logs());
	/* in flight in rategate is not yet counted by the application (the
	 * request still travels, slowly under valgrind): wait for both */
	long before = calls();
	for (int i = 0; i < 100 && before < base_calls + 2; i++) {
		srv_sleep_ms(10);
		before = calls();
	}
	cr_assert_eq(before, base_calls + 2, "the two polls never reached the application\n%s", logs());

	struct srv_resp r = req("GET", "/chat/poll", NULL, NULL);
	cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", logs());
	expect_hdr(&r, "Retry-After", "1");
	cr_expect_str_eq(r.body, "Two open polls per client at most\n");
	srv_resp_free(&r);
	cr_expect_eq(calls(), before, "the third poll reached the application");
	/* other paths are not held up by the polls */
	cr_expect_eq(status("GET", "/chat/send"), 200);

	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_expect_eq(polls[i].status, 200);
	}
	cr_expect_eq(status("GET", "/chat/poll"), 200, "slots were not given back\n%s", logs());
	struct srv_resp s = req("GET", "/rategate-status", NULL, NULL);
	cr_expect_not_null(strstr(s.body, "\"concurrency\":1,"), "%s", s.body);
	srv_resp_free(&s);
	finish();
}

/* A request the in-flight limit refuses (429, Retry-After 1) consumes none
 * of the rule's rate budget: a denied request consumes nothing.  (The
 * rates were counted before the slot was asked for: two refusals used up
 * a 2/minute budget, and the client, told to come back in a second, was
 * locked out for the minute.) */
Test(responder, concurrency_refusal_consumes_no_rate_budget,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("storage          @STORE@\n"
	      "upstream         @APP@\n"
	      "stats            /rategate-status\n"
	      "/poll            2/minute  concurrency=1\n"
	      "/once            1/minute  concurrency=1\n"
	      "/el              1/minute  concurrency=1 strategy=fixed-window-elastic-expiry\n");

	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/poll?sleep=1500", base);
	struct bg poll = { url, 0 };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, bg_get, &poll), 0);
	cr_assert(wait_inflight(1), "the poll never was in flight\n%s", logs());
	for (int i = 0; i < 2; i++) {
		struct srv_resp r = req("GET", "/poll", NULL, NULL);
		cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", logs());
		expect_hdr(&r, "Retry-After", "1");
		srv_resp_free(&r);
	}
	pthread_join(th, NULL);
	cr_expect_eq(poll.status, 200);
	/* the second of 2: the refusals took nothing */
	cr_expect_eq(status("GET", "/poll"), 200, "the refusals consumed the budget\n%s", logs());
	cr_expect_eq(status("GET", "/poll"), 429);
	/* and a request the rates refuse holds no slot */
	cr_expect(wait_inflight(0), "a slot was not given back\n%s", logs());

	/* over its slot and its rate at once: told to wait for the rate
	 * (it was told 1 s, and then denied by the rate) */
	snprintf(url, sizeof(url), "%s/once?sleep=1500", base);
	struct bg once = { url, 0 };
	cr_assert_eq(pthread_create(&th, NULL, bg_get, &once), 0);
	cr_assert(wait_inflight(1), "the request never was in flight\n%s", logs());
	struct srv_resp r = req("GET", "/once", NULL, NULL);
	cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", logs());
	char rv[32];
	const char *ra = srv_header(&r, "Retry-After", rv, sizeof(rv));
	cr_expect(ra != NULL && atoi(ra) >= 58 && atoi(ra) <= 60, "Retry-After %s", ra ? ra : "-");
	srv_resp_free(&r);
	pthread_join(th, NULL);
	cr_expect_eq(once.status, 200);

	/* ... and its denied hit moves its elastic window: a minute from
	 * this request, not from the first (it was looked at only, and told
	 * 59 after 1.2 s) */
	snprintf(url, sizeof(url), "%s/el?sleep=2500", base);
	struct bg el = { url, 0 };
	cr_assert_eq(pthread_create(&th, NULL, bg_get, &el), 0);
	cr_assert(wait_inflight(1), "the request never was in flight\n%s", logs());
	srv_sleep_ms(1200);
	r = req("GET", "/el", NULL, NULL);
	cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", logs());
	expect_hdr(&r, "Retry-After", "60");
	srv_resp_free(&r);
	pthread_join(th, NULL);
	cr_expect_eq(el.status, 200);
	finish();
}

/* examples/rules/upload.rules: max-body 1M on /upload, 64K elsewhere,
 * bandwidth 3MB/minute. */
Test(responder, upload_example_max_body_and_bandwidth,
     .init = setup, .fini = teardown, .timeout = 30)
{
	enum { MIB = 1 << 20 };
	char *body = malloc(2 * MIB + 1);
	char url[SRV_PATH_MAX], v[64];
	struct srv_resp r;

	cr_assert_not_null(body);
	memset(body, 'u', 2 * MIB + 1);
	start_app();
	char *rules = example_rules("upload.rules");
	start_with(rules);
	free(rules);
	long before = calls();

	/* over max-body: by Content-Length, and chunked */
	snprintf(url, sizeof(url), "%s/upload", base);
	for (int chunked = 0; chunked < 2; chunked++) {
		srv_http_body("POST", url, NULL, body, MIB + 1, chunked, &r);
		cr_expect_eq(r.status, 413, "chunked=%d: %s\n%s", chunked, r.status_line, logs());
		cr_expect_str_eq(r.body, "Content Too Large: the request body exceeds this path's max-body\n");
		expect_hdr(&r, "Cache-Control", "no-store");
		srv_resp_free(&r);
	}
	/* the global max-body on a path without a rule */
	snprintf(url, sizeof(url), "%s/notes", base);
	srv_http_body("POST", url, NULL, body, 64 * 1024 + 1, 0, &r);
	cr_expect_eq(r.status, 413, "%s", r.status_line);
	srv_resp_free(&r);
	srv_http_body("POST", url, NULL, body, 64 * 1024, 0, &r);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_field(&r, "body_len", "65536");
	srv_resp_free(&r);
	cr_expect_eq(calls(), before + 1, "a 413 reached the application");

	/* bandwidth: three bodies of 1 MiB fill 3MB/minute */
	snprintf(url, sizeof(url), "%s/upload", base);
	for (int i = 0; i < 3; i++) {
		srv_http_body("POST", url, NULL, body, MIB, i == 1, &r);
		cr_expect_eq(r.status, 200, "upload %d: %s\n%s", i, r.status_line, logs());
		snprintf(v, sizeof(v), "%d", MIB);
		srv_expect_field(&r, "body_len", v);
		srv_resp_free(&r);
	}
	srv_http_body("POST", url, NULL, body, 1000, 0, &r);
	expect_429(&r, NULL, 60, NULL);
	srv_resp_free(&r);
	cr_expect_eq(calls(), before + 4);
	/* a 413 costs nothing; the log says why */
	char *log = rglog();
	cr_expect_not_null(strstr(log, "status=413"), "%s", log);
	cr_expect_not_null(strstr(log, "request body of 1048577 bytes is above max-body 1048576"), "%s", log);
	cr_expect_not_null(strstr(log, "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/upload origin=rule limit=3MB/minute"),
			   "%s", log);
	free(log);
	free(body);
	finish();
}

/* examples/rules/login.rules: only 401 and 403 answers count. */
Test(responder, login_example_counts_only_failed_attempts,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	char *rules = example_rules("login.rules");
	start_with(rules);
	free(rules);

	/* successful logins never use the budget */
	for (int i = 0; i < 8; i++) {
		struct srv_resp r = req("POST", "/login", NULL, NULL);
		cr_assert_eq(r.status, 200, "login %d: %s\n%s", i, r.status_line, logs());
		expect_hdr(&r, "X-RateLimit-Limit", "5");
		expect_hdr(&r, "X-RateLimit-Remaining", "5");
		srv_resp_free(&r);
	}
	/* 401 and 403 do, other failures do not */
	static const char *const fails[] = { "/login?status=401", "/login?status=500",
		"/login?status=403", "/login?status=401", "/login?status=404",
		"/login?status=401", "/login?status=403" };
	static const long want[] = { 401, 500, 403, 401, 404, 401, 403 };
	for (size_t i = 0; i < 7; i++)
		cr_expect_eq(status("POST", fails[i]), want[i], "%s", fails[i]);
	long before = calls();
	struct srv_resp r = req("POST", "/login", NULL, NULL);
	expect_429(&r, "5", 60, "Too many failed login attempts; try again in a minute\n");
	srv_resp_free(&r);
	r = req("POST", "/login?status=401", NULL, NULL);
	expect_429(&r, "5", 60, NULL);
	srv_resp_free(&r);
	cr_expect_eq(calls(), before, "a denied login reached the application");
	/* methods=POST: other methods are not limited */
	cr_expect_eq(status("GET", "/login"), 200);
	finish();
}

/* examples/rules/api.rules: a budget per API key, else per address. */
Test(responder, api_example_budget_per_key,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	char *rules = example_rules("api.rules");
	start_with(rules);
	free(rules);

	static const struct { const char *hdr, *remaining, *key; } seq[] = {
		{ "X-Api-Key: k1", "999", "h.x-api-key=k1" },
		{ "X-Api-Key: k1", "998", "h.x-api-key=k1" },
		{ "X-Api-Key: k2", "999", "h.x-api-key=k2" },
		{ NULL, "999", "addr=127.0.0.1" },
		{ "X-Api-Key: ", "998", "addr=127.0.0.1" },     /* empty: missing */
		{ "X-Api-Key: k1", "997", "h.x-api-key=k1" },
	};
	for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
		struct srv_resp r = req("GET", "/api/v1/things?env", seq[i].hdr, NULL);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
		expect_hdr(&r, "X-RateLimit-Limit", "1000");
		expect_hdr(&r, "X-RateLimit-Remaining", seq[i].remaining);
		char want[128];
		snprintf(want, sizeof(want), "\nenv RL_KEY=%s\n", seq[i].key);
		cr_expect_not_null(strstr(r.body, want), "request %zu: %s in\n%s", i, want, r.body);
		srv_resp_free(&r);
	}
	finish();
}

static const char rules_reload_v1[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         @APP@\n"
	"stats            /rategate-status\n"
	"stats-allow      127.0.0.1/32\n"
	"/keep            3/minute\n"
	"/change          5/minute\n"
	"/ping            exempt\n";

static const char rules_reload_v2[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         @APP@\n"
	"stats            /rategate-status\n"
	"stats-allow      127.0.0.1/32\n"
	"# a line more: the rules moved\n"
	"/keep            3/minute\n"
	"/change          1/minute\n"
	"/new             1/minute\n"
	"/ping            exempt\n";

static void
hup_and_wait(const char *needle, int nth)
{
	cr_assert_eq(kill(rg, SIGHUP), 0);
	for (int i = 0; i < 250; i++) {
		if (srv_count_in_file(srv_path("rategate.log"), needle) >= nth)
			return;
		srv_sleep_ms(20);
	}
	cr_assert_fail("no \"%s\" (#%d) in the log after SIGHUP\n%s", needle, nth, logs());
}

Test(responder, sighup_reloads_good_rules_and_refuses_broken_ones,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start(rules_reload_v1);

	struct srv_resp r = req("GET", "/keep", NULL, NULL);
	expect_hdr(&r, "X-RateLimit-Remaining", "2");
	srv_resp_free(&r);
	r = req("GET", "/change", NULL, NULL);
	expect_hdr(&r, "X-RateLimit-Remaining", "4");
	srv_resp_free(&r);
	cr_expect_eq(status("GET", "/new"), 200);
	cr_expect_eq(status("GET", "/new"), 200, "no rule for /new yet");

	char *v2 = fill(rules_reload_v2);
	srv_write("site.rules", v2, 0644);
	/* "rules loaded": the line of a good reload only (a refused one
	 * logs event=reload too, at level error) */
	hup_and_wait("rules loaded\"", 1);
	char *log = rglog();
	cr_expect_not_null(strstr(log, "level=info event=reload msg=\""), "%s", log);
	cr_expect_not_null(strstr(log, "site.rules: 4 rules loaded\""), "%s", log);
	free(log);

	/* unchanged limit: the count goes on (1 used, 2 left) */
	r = req("GET", "/keep", NULL, NULL);
	cr_expect_eq(r.status, 200);
	expect_hdr(&r, "X-RateLimit-Remaining", "1");
	srv_resp_free(&r);
	cr_expect_eq(status("GET", "/keep"), 200);
	r = req("GET", "/keep", NULL, NULL);
	expect_429(&r, "3", 60, NULL);
	srv_resp_free(&r);
	/* a changed limit is a new counter with the new count */
	r = req("GET", "/change", NULL, NULL);
	cr_expect_eq(r.status, 200);
	expect_hdr(&r, "X-RateLimit-Limit", "1");
	expect_hdr(&r, "X-RateLimit-Remaining", "0");
	srv_resp_free(&r);
	r = req("GET", "/change", NULL, NULL);
	expect_429(&r, "1", 60, NULL);
	srv_resp_free(&r);
	cr_expect_eq(status("GET", "/new"), 200);

	/* a broken file: refused, every error as FILE:LINE:COL, old rules on */
	char *broken = NULL;
	cr_assert(asprintf(&broken, "%s/typo            5/minte\nheaders on\n", v2) > 0);
	srv_write("site.rules", broken, 0644);
	free(broken);
	hup_and_wait("still running the rules loaded before", 1);
	log = rglog();
	char want[SRV_PATH_MAX + 128];
	snprintf(want, sizeof(want),
		 "level=error event=reload-error msg=\"%s:11:20: bad limit unit \\\"minte\\\"",
		 srv_path("site.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	snprintf(want, sizeof(want), "level=error event=reload-error msg=\"%s:12:1: ",
		 srv_path("site.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
	r = req("GET", "/new", NULL, NULL);
	expect_429(&r, "1", 60, NULL);
	srv_resp_free(&r);
	cr_expect_eq(status("GET", "/typo"), 200, "the broken file was half-loaded");

	/* an empty file (a save caught half-way): refused, limits kept */
	srv_write("site.rules", "", 0644);
	hup_and_wait("is empty (still being written?): still running the rules loaded before", 1);
	r = req("GET", "/new", NULL, NULL);
	expect_429(&r, "1", 60, NULL);
	srv_resp_free(&r);

	/* and a good file after the broken one loads again */
	srv_write("site.rules", v2, 0644);
	hup_and_wait("rules loaded\"", 2);
	r = req("GET", "/rategate-status", NULL, NULL);
	cr_expect_eq(r.status, 200);
	cr_expect_not_null(strstr(r.body, "\"reloads\":{\"ok\":2,\"failed\":2}"), "%s", r.body);
	srv_resp_free(&r);

	/* storage size= changed: the reload says a restart is needed, and
	 * that it would stop on the file as it is (the same file, another
	 * size), with the way out */
	{
		const char *sz[] = { "?size=4M", "?size=8M", NULL };
		char *v3 = srv_subst_some(v2, sz);
		srv_write("site.rules", v3, 0644);
		free(v3);
		hup_and_wait("rules loaded\"", 3);
		snprintf(want, sizeof(want),
			 "level=warn event=reload msg=\"storage changed to shm:%s?size=8M, but a restart would stop on it: shm store \\\"%s\\\": the file holds size=4M but storage asks for size=8M: stop the gateways and delete the file (its counters are lost), or set size=4M; until then the counters stay in shm:%s?size=4M\"",
			 srv_path("counters"), srv_path("counters"), srv_path("counters"));
		cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), want), 1,
			     "%s\n%s", want, logs());
		srv_write("site.rules", v2, 0644);
		hup_and_wait("rules loaded\"", 4);
	}

	/* a rule whose moving window needs bigger slots than the store
	 * file's: refused, naming that rule */
	{
		char *big = NULL;
		cr_assert(asprintf(&big, "%s/mw 100/minute strategy=moving-window\n", v2) > 0);
		srv_write("site.rules", big, 0644);
		free(big);
		hup_and_wait("still running the rules loaded before", 3);
		snprintf(want, sizeof(want),
			 "level=error event=reload msg=\"%s: the rule at %s:11 needs moving-window slots for 100 hits; the store was opened for ",
			 srv_path("site.rules"), srv_path("site.rules"));
		cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), want), 1,
			     "%s\n%s", want, logs());
		srv_write("site.rules", v2, 0644);
		hup_and_wait("rules loaded\"", 5);
	}

	/* the store file deleted under the running gateway: the next reload
	 * says so (a process started now would count apart) */
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "was deleted or replaced"), 0);
	cr_assert_eq(unlink(srv_path("counters")), 0);
	hup_and_wait("rules loaded\"", 6);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "level=error event=reload msg=\"the store file of shm:"), 1, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "was deleted or replaced since this process opened it"), 1, "%s", logs());
	cr_expect(srv_alive(rg));
	free(v2);
	finish();
}

/* A JSON number after "key": in text (from the first match on). */
static long
json_num(const char *text, const char *key)
{
	char k[128];
	snprintf(k, sizeof(k), "\"%s\":", key);
	const char *p = strstr(text, k);
	cr_assert_not_null(p, "no %s in %s", k, text);
	return strtol(p + strlen(k), NULL, 10);
}

Test(responder, statistics_endpoint_json_and_prometheus,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("storage          @STORE@\n"
	      "upstream         @APP@\n"
	      "stats            /rategate-status\n"
	      "stats-allow      127.0.0.1/32 ::1\n"
	      "/s               2/minute\n"
	      "/ping            exempt\n");

	for (int i = 0; i < 3; i++)
		cr_expect_eq(status("GET", "/s"), i < 2 ? 200 : 429);
	cr_expect_eq(status("GET", "/other"), 200);

	struct srv_resp r = req("GET", "/rategate-status", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	expect_hdr(&r, "Content-Type", "application/json");
	expect_hdr(&r, "Cache-Control", "no-store");
	cr_expect_eq(r.body[0], '{', "%s", r.body);
	cr_expect_eq(json_num(r.body, "pid"), (long)rg);
	const char *req_obj = strstr(r.body, "\"requests\":");
	cr_assert_not_null(req_obj, "%s", r.body);
	cr_expect_eq(json_num(req_obj, "allowed"), 3, "%s", r.body);
	cr_expect_eq(json_num(req_obj, "denied"), 1, "%s", r.body);
	cr_expect_eq(json_num(strstr(r.body, "\"denials\":"), "rate"), 1, "%s", r.body);
	const char *rule = strstr(r.body, "{\"rule\":\"/s\",");
	cr_assert_not_null(rule, "%s", r.body);
	cr_expect_eq(json_num(rule, "allowed"), 2, "%s", rule);
	cr_expect_eq(json_num(rule, "denied"), 1, "%s", rule);
	cr_expect_eq(json_num(rule, "line"), 5, "%s", rule);
	const char *def = strstr(r.body, "{\"rule\":\"(default)\",");
	cr_assert_not_null(def, "%s", r.body);
	cr_expect_eq(json_num(def, "allowed"), 1, "%s", def);
	const char *store = strstr(r.body, "\"store\":");
	cr_assert_not_null(store);
	cr_expect_not_null(strstr(store, "\"kind\":\"shm\""), "%s", store);
	cr_expect_eq(json_num(store, "keys"), 1, "%s", store);
	/* the three requests the application got went over one kept
	 * connection (upstream-keepalive 4; lighttpd gives a GET
	 * CONTENT_LENGTH 0, whose end goes with the params) */
	char up[SRV_PATH_MAX + 128];
	snprintf(up, sizeof(up),
		 "\"upstreams\":[{\"upstream\":\"%s\",\"connects\":1,\"reuses\":2,\"failures\":0}],",
		 app_uri);
	cr_expect_not_null(strstr(r.body, up), "%s in\n%s", up, r.body);
	srv_resp_free(&r);

	r = req("GET", "/rategate-status?format=prometheus", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.status_line);
	char v[128];
	cr_expect_not_null(srv_header(&r, "Content-Type", v, sizeof(v)));
	cr_expect_eq(strncmp(v, "text/plain", 10), 0, "%s", v);
	cr_expect_not_null(strstr(r.body, "\nrategate_requests_total{result=\"allowed\"} 3\n"), "%s", r.body);
	cr_expect_not_null(strstr(r.body, "\nrategate_requests_total{result=\"denied\"} 1\n"), "%s", r.body);
	cr_expect_not_null(strstr(r.body, "\nrategate_denials_total{reason=\"rate\"} 1\n"), "%s", r.body);
	char want[SRV_PATH_MAX + 128];
	snprintf(want, sizeof(want),
		 "\nrategate_rule_requests_total{rule=\"/s\",file=\"%s\",line=\"5\",result=\"denied\"} 1\n",
		 srv_path("site.rules"));
	cr_expect_not_null(strstr(r.body, want), "%s in\n%s", want, r.body);
	cr_expect_not_null(strstr(r.body, "\nrategate_store_keys 1\n"), "%s", r.body);
	snprintf(want, sizeof(want), "\nrategate_upstream_reuses_total{upstream=\"%s\"} 2\n", app_uri);
	cr_expect_not_null(strstr(r.body, want), "%s in\n%s", want, r.body);
	srv_resp_free(&r);
	finish();
}

Test(responder, statistics_refused_outside_stats_allow,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("storage          @STORE@\n"
	      "upstream         @APP@\n"
	      "trusted-proxies  1\n"
	      "stats            /rategate-status\n"
	      "stats-allow      10.0.0.0/8\n"
	      "/ping            exempt\n");

	long before = calls();
	/* a forwarded address in stats-allow does not help: only the web
	 * server's peer (REMOTE_ADDR) is checked */
	const char *hdrs[] = { NULL, "X-Forwarded-For: 10.1.2.3" };
	for (int i = 0; i < 2; i++) {
		struct srv_resp r = req("GET", "/rategate-status", hdrs[i], NULL);
		cr_expect_eq(r.status, 403, "%s\n%s", r.status_line, logs());
		cr_expect_str_eq(r.body, "Forbidden: statistics are not available to this address\n");
		cr_expect_null(strstr(r.body, "requests"));
		srv_resp_free(&r);
	}
	cr_expect_eq(status("GET", "//rategate-status/?format=prometheus"), 403);
	cr_expect_eq(calls(), before, "the statistics path was proxied");
	char *log = rglog();
	cr_expect_not_null(strstr(log, "level=warn event=stats-refused msg=\"statistics asked for by 127.0.0.1, not in stats-allow\""),
			   "%s", log);
	free(log);
	finish();
}

/* Behind a proxy on this host every REMOTE_ADDR is 127.0.0.1, which
 * stats-allow admits: the client the trusted proxy vouches for must be
 * allowed too (found by a review: every client could read them). */
Test(responder, statistics_behind_a_proxy_need_the_client_allowed,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("storage          @STORE@\n"
	      "upstream         @APP@\n"
	      "trusted-proxies  1\n"
	      "stats            /rategate-status\n"
	      "stats-allow      127.0.0.1/32 192.0.2.0/24\n"
	      "/ping            exempt\n");

	long before = calls();
	struct srv_resp r = req("GET", "/rategate-status", "X-Forwarded-For: 203.0.113.5", NULL);
	cr_expect_eq(r.status, 403, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	/* what a client writes left of the proxy's entry does not count */
	r = req("GET", "/rategate-status", "X-Forwarded-For: 192.0.2.1, 203.0.113.5", NULL);
	cr_expect_eq(r.status, 403, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	/* lighttpd passes X_Forwarded_For as a second param: not trusted */
	const char *two[] = { "X-Forwarded-For: 192.0.2.1", "X_Forwarded_For: 192.0.2.2" };
	r = req("GET", "/rategate-status", two[0], two[1]);
	cr_expect_eq(r.status, 403, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	/* the admin through the proxy, and the host itself without one */
	r = req("GET", "/rategate-status", "X-Forwarded-For: 192.0.2.1", NULL);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_not_null(strstr(r.body, "\"requests\""), "%s", r.body);
	srv_resp_free(&r);
	r = req("GET", "/rategate-status", NULL, NULL);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	cr_expect_eq(calls(), before, "the statistics path was proxied");
	char *log = rglog();
	cr_expect_not_null(strstr(log, "level=warn event=stats-refused msg=\"statistics asked for by 203.0.113.5 through 127.0.0.1, not in stats-allow\""),
			   "%s", log);
	cr_expect_not_null(strstr(log, "level=warn event=stats-refused msg=\"statistics asked for by 127.0.0.1 with a proxy header that cannot be trusted (the client behind the proxy is not known)\""),
			   "%s", log);
	free(log);
	finish();
}

/* Four rategate processes spawned by lighttpd count in one shared-memory
 * store: 4 clients x 10 concurrent requests against 10/minute get exactly
 * 10 answers 200, and exactly 10 requests reach the application. */
struct client {
	const char *url;
	int n, ok, denied;
};

static void *
client_run(void *arg)
{
	struct client *c = arg;

	for (int i = 0; i < c->n; i++) {
		struct bg b = { c->url, 0 };
		bg_get(&b);
		c->ok += b.status == 200;
		c->denied += b.status == 429;
	}
	return NULL;
}

Test(responder, four_processes_share_one_budget_exactly,
     .init = setup, .fini = teardown, .timeout = 30)
{
	enum { CLIENTS = 4, EACH = 10 };
	char url[SRV_PATH_MAX];

	start_app();
	max_procs = 4;
	start("storage          @STORE@\n"
	      "upstream         @APP@\n"
	      "/shared          10/minute\n"
	      "/ping            exempt\n");
	pid_t pids[8];
	int n = 0;
	for (int i = 0; i < 100 && (n = srv_children_named(lighttpd, "rategate", pids, 8)) < 4; i++)
		srv_sleep_ms(20);
	cr_assert_eq(n, 4, "lighttpd started %d rategate processes", n);
	long before = calls();

	snprintf(url, sizeof(url), "%s/shared", base);
	pthread_t th[CLIENTS];
	struct client cl[CLIENTS];
	for (int k = 0; k < CLIENTS; k++) {
		cl[k] = (struct client){ url, EACH, 0, 0 };
		cr_assert_eq(pthread_create(&th[k], NULL, client_run, &cl[k]), 0);
	}
	int allowed = 0, denied = 0;
	for (int k = 0; k < CLIENTS; k++) {
		pthread_join(th[k], NULL);
		allowed += cl[k].ok;
		denied += cl[k].denied;
	}
	cr_assert_eq(allowed + denied, CLIENTS * EACH, "answers other than 200/429\n%s", logs());
	cr_expect_eq(allowed, 10, "%d of %d allowed\n%s", allowed, CLIENTS * EACH, logs());
	cr_expect_eq(calls(), before + 10, "requests that reached the application");
	cr_expect_eq(status("GET", "/shared"), 429);
	finish();
}
