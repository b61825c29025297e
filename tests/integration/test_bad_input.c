/*
 * test_bad_input.c - hostile and broken input through a real lighttpd to
 * rategate, in the responder role (examples/lighttpd-responder.conf, with
 * request and response bodies streamed so that a client going away
 * reaches rategate) and in the authorizer role
 * (examples/lighttpd-authorizer.conf).
 *
 * A 60 KiB X-Forwarded-For (and a 64 KiB one, which lighttpd refuses);
 * header values and query parameters trying CR/LF (never reflected: every
 * header we send stays one clean line, RL_KEY reaches the application as
 * one printable line, the log stays one line per event); NUL bytes,
 * invalid UTF-8, bad escapes and overlong paths (400 from rategate or the
 * server, never a 5xx); clients that go away in the middle of an upload or
 * a download (no fd leaked, no CGI child left, a log line); applications
 * that send garbage or close early (502).  After each, the same rategate
 * process is alive and answering.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"

static int port;
static pid_t lighttpd, rg, app;
static char base[64];
static char echo_cgi[SRV_PATH_MAX], app_uri[SRV_PATH_MAX];

static void
setup(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("docroot/cgi"), 0755), 0);
	srv_built("tests/apps/echo_cgi", echo_cgi);
	snprintf(app_uri, sizeof(app_uri), "fcgi+unix://%s", srv_path("app.sock"));
}

static void
teardown(void)
{
	srv_cleanup();
}

static void
start_app(void)
{
	app = srv_start_echo_fcgi(0, srv_path("app.sock"), 16, NULL);
}

/* Bodies streamed both ways (so a client that goes away is seen by
 * rategate at once), room for a 60 KiB header, and lighttpd's own checks
 * of header bytes and URLs relaxed, so that what it would refuse reaches
 * rategate. */
static const char streaming[] =
	"server.stream-request-body    = 2\n"
	"server.stream-response-body   = 2\n"
	"server.max-request-field-size = 131072\n"
	"server.http-parseopts = ( \"header-strict\" => \"disable\",\n"
	"    \"url-ctrls-reject\" => \"disable\", \"url-normalize\" => \"disable\" )\n";

/* lighttpd from examples/<example>, rategate spawned with rules (@STORE@,
 * @CGI@, @APP@ replaced), extra lines appended to the configuration. */
static void
start(const char *example, const char *rules, const char *extra)
{
	char store[SRV_PATH_MAX + 32];

	snprintf(store, sizeof(store), "shm:%s?size=4M", srv_path("counters"));
	const char *pairs[] = { "@STORE@", store, "@CGI@", echo_cgi, "@APP@", app_uri, NULL };
	char *text = srv_subst_some(rules, pairs);
	srv_write("site.rules", text, 0644);
	free(text);

	port = srv_free_port();
	char *conf = srv_lighttpd_conf(example, "site.rules", port, 0), *full = NULL;
	cr_assert(asprintf(&full, "%s\n%s", conf, extra ? extra : "") > 0);
	free(conf);
	lighttpd = srv_start_lighttpd(full, port);
	free(full);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
	rg = srv_child(lighttpd, "rategate", 10);
	cr_assert_neq(rg, 0, "lighttpd started no rategate");
}

static const char *
logs(void)
{
	static const char *const files[] = { "lighttpd error log", "lighttpd-error.log",
					     "rategate log", "rategate.log", NULL };

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

static struct srv_resp
get(const char *path, const char *h1, const char *h2)
{
	const char *hdrs[] = { h1, h2, NULL };
	struct srv_resp r;

	srv_http_at("GET", base, path, hdrs, &r);
	return r;
}

/* The same rategate process is alive, has no child left, and answers. */
static void
still_serving(const char *after)
{
	int zombies = 0;

	cr_assert(srv_alive(rg), "rategate %d died after %s\n%s", (int)rg, after, logs());
	cr_assert_eq(srv_child(lighttpd, "rategate", 0), rg, "rategate was replaced after %s", after);
	int n = srv_wait_no_children(rg, &zombies, 2);
	cr_expect_eq(n, 0, "after %s rategate has %d children (%d zombies)", after, n, zombies);
	struct srv_resp r = get("/ping", NULL, NULL);
	cr_expect_eq(r.status, 200, "after %s: %s\n%s", after, r.status_line, logs());
	srv_resp_free(&r);
}

/* Split a raw HTTP answer: status, and checks that every header line is
 * printable ASCII and none is named like an injected header. */
static int
check_raw_answer(const char *raw, size_t len, const char *what)
{
	int status = 0;

	cr_assert(len > 12, "%s: no answer\n%s", what, logs());
	cr_assert_eq(sscanf(raw, "HTTP/1.%*d %d", &status), 1, "%s: %.200s", what, raw);
	const char *end = strstr(raw, "\r\n\r\n");
	cr_assert_not_null(end, "%s: no end of head", what);
	for (const char *p = raw; p < end;) {
		const char *eol = strstr(p, "\r\n");
		for (const char *q = p; q < eol; q++)
			cr_expect(*q >= 0x20 && *q < 0x7f, "%s: byte %02x in a header line: %.*s",
				  what, (unsigned char)*q, (int)(eol - p), p);
		cr_expect(strncasecmp(p, "Injected", 8) != 0 && strncasecmp(p, "Set-Cookie", 10) != 0,
			  "%s: injected header line %.*s", what, (int)(eol - p), p);
		p = eol + 2;
	}
	return status;
}

/* Every line of rategate's log is one event (no line was split by a
 * client's CR or LF). */
static void
log_lines_clean(void)
{
	char *log = srv_read(srv_path("rategate.log"));

	cr_assert_not_null(log);
	for (char *p = log; *p != '\0';) {
		char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		cr_expect(strncmp(p, "time=", 5) == 0, "a log line that is not an event: %.*s",
			  (int)len, p);
		for (size_t i = 0; i < len; i++)
			cr_expect(p[i] != '\r', "CR in a log line: %.*s", (int)len, p);
		p += len + (nl ? 1 : 0);
	}
	free(log);
}

static const char rules_resp[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"trusted-proxies  1\n"
	"upstream         @APP@\n"
	"max-body         1M\n"
	"/cgi/**          1000/minute  upstream=cgi:@CGI@\n"
	"/api/**          1000/minute  key=header:X-Api-Key|addr\n"
	"/q/**            1000/minute  key=query:k|addr\n"
	"/missing/**      1000/minute  upstream=cgi:/nonexistent/script.cgi\n"
	"/ping            exempt\n";

Test(bad_input, huge_forwarded_for,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char v[128];

	start_app();
	start("lighttpd-responder.conf", rules_resp, streaming);

	/* 60 KiB of addresses: the last one is the client */
	size_t cap = 61 * 1024;
	char *xff = malloc(cap + 64);
	size_t len = (size_t)sprintf(xff, "X-Forwarded-For: ");
	for (int i = 0; len < cap - 32; i++)
		len += (size_t)sprintf(xff + len, "10.%d.%d.%d, ", (i >> 16) & 255, (i >> 8) & 255, i & 255);
	sprintf(xff + len, "192.0.2.99");
	struct srv_resp r = get("/cgi/who", xff, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(srv_field(r.body, "rl_client", v, sizeof(v)), "192.0.2.99");
	srv_resp_free(&r);
	still_serving("a 60 KiB X-Forwarded-For");

	/* 60 KiB of junk: the nearest valid address is REMOTE_ADDR */
	memset(xff + 17, 'x', cap - 17);
	xff[cap] = '\0';
	r = get("/cgi/who", xff, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(srv_field(r.body, "rl_client", v, sizeof(v)), "127.0.0.1");
	srv_resp_free(&r);

	/* 65 KiB (lighttpd's strict parsing refuses that itself) */
	xff = realloc(xff, 66 * 1024);
	memset(xff + 17, '1', 65 * 1024);
	xff[17 + 65 * 1024] = '\0';
	r = get("/cgi/who", xff, NULL);
	cr_expect(r.status == 200 || r.status == 400 || r.status == 431, "64 KiB header: %s",
		  r.status_line);
	if (r.status == 200)        /* not an address: REMOTE_ADDR counts */
		cr_expect_str_eq(srv_field(r.body, "rl_client", v, sizeof(v)), "127.0.0.1");
	srv_resp_free(&r);
	free(xff);

	/* 300 header lines: merged by lighttpd, the last entry counts.
	 * HTTP/1.0, so that the body is not chunked: rategate passes on
	 * each write of the script as it comes, and lighttpd makes a chunk
	 * of each, which would split the lines looked for below. */
	char *raw = malloc(300 * 40 + 256), *p = raw;
	p += sprintf(p, "GET /cgi/lines HTTP/1.0\r\nHost: x\r\nConnection: close\r\n");
	for (int i = 0; i < 300; i++)
		p += sprintf(p, "X-Forwarded-For: 198.51.100.%d\r\n", i % 250);
	p += sprintf(p, "\r\n");
	size_t got;
	char *ans = srv_raw(port, raw, (size_t)(p - raw), 5, &got);
	cr_assert_not_null(ans);
	cr_expect_eq(check_raw_answer(ans, got, "300 X-Forwarded-For lines"), 200, "%.300s", ans);
	cr_expect_not_null(strstr(ans, "\nrl_client=198.51.100.49\n"), "%s", ans);
	free(ans);
	free(raw);
	still_serving("300 X-Forwarded-For lines");
	log_lines_clean();
	finish();
}

Test(bad_input, cr_lf_in_headers_and_keys_is_never_reflected,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("lighttpd-responder.conf", rules_resp, streaming);

	/* with the RL_KEY the application must get: client bytes in a key
	 * are percent-escaped; a value with control bytes is no key at all
	 * (the address counts) */
	static const struct { const char *what, *req, *key; } cases[] = {
		{ "obs-fold", "GET /api/a?env HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\r\n Injected: evil\r\nConnection: close\r\n\r\n",
		  "h.x-api-key=k1%20%20%20Injected%3A%20evil" },
		{ "bare CR", "GET /api/b?env HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\rInjected: evil\r\nConnection: close\r\n\r\n",
		  "addr=127.0.0.1" },
		{ "bare LF", "GET /api/c?env HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\nInjected: evil\r\nConnection: close\r\n\r\n",
		  "h.x-api-key=k1" },
		{ "control bytes", "GET /api/d?env HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\x01\x7f\x1b[2J\r\nConnection: close\r\n\r\n",
		  "addr=127.0.0.1" },
		{ "high bytes", "GET /api/e?env HTTP/1.1\r\nHost: x\r\nX-Api-Key: caf\xc3\xa9\xff\r\nConnection: close\r\n\r\n",
		  "h.x-api-key=caf%C3%A9%FF" },
		{ "%0d%0a in a key", "GET /q/f?env&k=a%0d%0aInjected:%20evil HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		  "addr=127.0.0.1" },
		{ "high bytes in a key", "GET /q/f?env&k=a%c3%a9%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		  "q.k=a%C3%A9%FF" },
		{ "%0d%0a in the path", "GET /api/g%0d%0aSet-Cookie:%20a=b?env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		  "addr=127.0.0.1" },
		{ "%0d%0a in X-Forwarded-For", "GET /api/h?env HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4%0d%0aInjected: x\r\nConnection: close\r\n\r\n",
		  "addr=127.0.0.1" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t got;
		char *ans = srv_raw(port, cases[i].req, strlen(cases[i].req), 5, &got);
		cr_assert_not_null(ans, "%s: no connection", cases[i].what);
		int st = check_raw_answer(ans, got, cases[i].what);
		cr_expect_eq(st, 200, "%s: status %d\n%.500s\n%s", cases[i].what, st, ans, logs());
		/* RL_KEY reached the application as one printable line */
		const char *k = strstr(ans, "\nenv RL_KEY=");
		cr_expect_not_null(k, "%s: %s", cases[i].what, ans);
		if (k != NULL) {
			k += 12;
			size_t kl = strcspn(k, "\n");
			for (size_t j = 0; j < kl; j++)
				cr_expect(k[j] >= 0x20 && k[j] < 0x7f, "%s: RL_KEY byte %02x: %.*s",
					  cases[i].what, (unsigned char)k[j], (int)kl, k);
			cr_expect(kl == strlen(cases[i].key) && strncmp(k, cases[i].key, kl) == 0,
				  "%s: RL_KEY=%.*s, want %s", cases[i].what, (int)kl, k, cases[i].key);
		}
		cr_expect_null(strstr(ans, "\r\nInjected"), "%s", ans);
		free(ans);
	}
	still_serving("CR/LF attempts");
	log_lines_clean();
	finish();
}

Test(bad_input, bad_paths_are_400_never_a_crash,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("lighttpd-responder.conf", rules_resp, streaming);

	char longpath[9200];
	memcpy(longpath, "/api/", 5);
	memset(longpath + 5, 'a', 9000);
	longpath[9005] = '\0';
	static const struct { const char *path; int want; } cases[] = {
		{ "/%00", 400 },
		{ "/api/a%00b", 400 },
		{ "/cgi/x%00.cgi", 400 },
		{ "/%zz", 400 },
		{ "/api/%", 400 },
		{ "/api/%ff%fe%fd", 0 },
		{ "/api/\xff\xfe\xc0\xaf", 0 },
		{ "/api/%c0%ae%c0%ae/x", 0 },
		{ "/api/..%2f..%2f..%2fetc/passwd", 0 },
		{ "/a/%2e%2e/%2e%2e/%2e%2e/api/x", 0 },
		{ "/api/x;jsessionid=%00", 400 },
		{ NULL, 0 },       /* longpath */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *path = cases[i].path ? cases[i].path : longpath;
		char *req = NULL;
		cr_assert(asprintf(&req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path) > 0);
		size_t got;
		char *ans = srv_raw(port, req, strlen(req), 5, &got);
		free(req);
		cr_assert_not_null(ans);
		int st = check_raw_answer(ans, got, path);
		if (cases[i].want != 0)
			cr_expect_eq(st, cases[i].want, "%.60s: %.300s", path, ans);
		else if (cases[i].path == NULL)
			cr_expect(st == 400 || st == 414 || st == 431, "long path: %d", st);
		else
			cr_expect(st == 200 || st == 400 || st == 404, "%.60s: %d", path, st);
		free(ans);
	}
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect_not_null(strstr(log, "level=warn event=bad-request status=400"), "%s", log);
	free(log);
	still_serving("bad paths");
	log_lines_clean();
	finish();
}

/* POST path with a Content-Length of 1000000 (under max-body), send
 * 100 KiB, hang up. */
static void
abort_upload(const char *path)
{
	char head[256];
	size_t got;
	int hl = snprintf(head, sizeof(head),
			  "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", path);
	size_t len = (size_t)hl + 100 * 1024;
	char *req = malloc(len);

	memcpy(req, head, (size_t)hl);
	memset(req + hl, 'z', len - (size_t)hl);
	free(srv_raw(port, req, len, 0.02, &got));
	free(req);
}

/* GET a large answer, read a little of it, hang up. */
static void
abort_download(const char *path)
{
	char req[256];
	size_t got;
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);

	free(srv_raw(port, req, (size_t)len, 0.03, &got));
}

/* The fds of rategate once both upstreams were used (a pooled FastCGI
 * connection is part of the steady state). */
static int
steady_fds(void)
{
	struct srv_resp r = get("/cgi/warm", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	r = get("/api/warm", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_resp_free(&r);
	int n = -1;
	for (int i = 0; i < 50; i++) {      /* let a request in its last steps finish */
		n = srv_count_fds(rg);
		srv_sleep_ms(20);
		if (srv_count_fds(rg) == n)
			break;
	}
	return n;
}

Test(bad_input, clients_that_go_away_leak_nothing,
     .init = setup, .fini = teardown, .timeout = 60)
{
	start_app();
	start("lighttpd-responder.conf", rules_resp, streaming);

	int before = steady_fds();
	cr_assert_gt(before, 2);
	for (int i = 0; i < 25; i++) {
		abort_upload("/cgi/upload");
		abort_upload("/api/upload");
	}
	for (int i = 0; i < 10; i++) {
		abort_download("/cgi/down?bigout=20000000");
		abort_download("/api/down?bigout=20000000");
	}
	/* give lighttpd and rategate a moment to notice every hang-up */
	int after = -1;
	for (int i = 0; i < 100; i++) {
		after = steady_fds();
		if (getenv("DEBUG_FDS"))
			fprintf(stderr, "%d: fds %d (before %d), children %d\n", i, after, before, srv_children(rg, NULL));
		if (after <= before && srv_children(rg, NULL) == 0)
			break;
		srv_sleep_ms(50);
	}
	char fdpath[64], link[SRV_PATH_MAX], list[4096] = "";
	for (int fd = 0; fd < 64; fd++) {
		snprintf(fdpath, sizeof(fdpath), "/proc/%d/fd/%d", (int)rg, fd);
		ssize_t n = readlink(fdpath, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			size_t l = strlen(list);
			snprintf(list + l, sizeof(list) - l, "%d -> %s\n", fd, link);
		}
	}
	cr_expect_leq(after, before, "rategate had %d fds, now %d:\n%s", before, after, list);
	still_serving("clients that went away");
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect_not_null(strstr(log, "level=info event=client-gone msg=\"POST /cgi/upload from 127.0.0.1 -> cgi:"), "%s", log);
	cr_expect_not_null(strstr(log, "level=info event=client-gone msg=\"POST /api/upload from 127.0.0.1 -> fcgi+unix://"), "%s", log);
	free(log);
	log_lines_clean();
	/* the application is fine too */
	struct srv_resp r = get("/api/after?count", NULL, NULL);
	cr_expect_eq(r.status, 200);
	srv_resp_free(&r);
	finish();
}

Test(bad_input, applications_that_misbehave_are_502,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_app();
	start("lighttpd-responder.conf", rules_resp, streaming);

	static const struct { const char *path, *log; } cases[] = {
		{ "/api/x?garbage", "answered 502: " },
		{ "/api/x?close", "answered 502: " },
		{ "/api/x?badhead", "answered 502: " },
		{ "/cgi/x?garbage", "answered 502: script output: malformed header line" },
		{ "/cgi/x?crash", "answered 502: script killed by signal 11 before its response head was complete" },
		{ "/missing/x", "answered 502: " },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv_resp r = get(cases[i].path, NULL, NULL);
		cr_expect_eq(r.status, 502, "%s: %s\n%s", cases[i].path, r.status_line, logs());
		cr_expect_str_eq(r.body, "Bad Gateway: the application failed to answer\n", "%s", cases[i].path);
		srv_resp_free(&r);
		char *log = srv_read(srv_path("rategate.log")), want[256];
		const char *q = strchr(cases[i].path, '?');
		snprintf(want, sizeof(want), "level=error event=upstream-error msg=\"GET %.*s",
			 (int)(q ? (size_t)(q - cases[i].path) : strlen(cases[i].path)), cases[i].path);
		cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
		cr_expect_not_null(strstr(log, cases[i].log), "%s\n%s", cases[i].log, log);
		if (q != NULL)  /* the query is never logged */
			cr_expect_null(strstr(log, q), "%s\n%s", q, log);
		free(log);
		still_serving(cases[i].path);
	}
	/* the application goes away altogether */
	int st[4];
	srv_stop(app, 5);
	srv_reap_orphans(st, 4, 0.2);
	struct srv_resp r = get("/api/x", NULL, NULL);
	cr_expect_eq(r.status, 502, "%s", r.status_line);
	srv_resp_free(&r);
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect_not_null(strstr(log, "connect to fcgi+unix://"), "%s", log);
	free(log);
	cr_expect(srv_alive(rg));
	finish();
}

/* The authorizer role fed the same: lighttpd-authorizer.conf, a CGI
 * script printing what the authorizer passed (Variable-RL_*). */
Test(bad_input, authorizer_stays_clean_and_alive,
     .init = setup, .fini = teardown, .timeout = 30)
{
	srv_write("docroot/cgi/env.cgi",
		  "#!/bin/sh\n"
		  "printf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
		  "echo \"RL_CLIENT=$RL_CLIENT\"\n"
		  "echo \"RL_KEY=$RL_KEY\"\n", 0755);
	srv_write("docroot/ping", "pong\n", 0644);
	start("lighttpd-authorizer.conf",
	      "storage          @STORE@\n"
	      "headers          on\n"
	      "trusted-proxies  1\n"
	      "/cgi/**          1000/minute  key=header:X-Api-Key|addr\n"
	      "/ping            exempt\n",
	      "server.max-request-field-size = 131072\n");

	static const struct { const char *what, *req; } cases[] = {
		{ "bare CR", "GET /cgi/env.cgi HTTP/1.1\r\nHost: x\r\nX-Api-Key: k1\rInjected: evil\r\nConnection: close\r\n\r\n" },
		{ "control bytes", "GET /cgi/env.cgi HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\x01\x1b[2J\r\nConnection: close\r\n\r\n" },
		{ "high bytes", "GET /cgi/env.cgi HTTP/1.1\r\nHost: x\r\nX-Api-Key: caf\xc3\xa9\xff\r\nConnection: close\r\n\r\n" },
		{ "%0d%0a in X-Forwarded-For", "GET /cgi/env.cgi HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4%0d%0aInjected: x\r\nConnection: close\r\n\r\n" },
		{ "NUL in the path", "GET /cgi/env%00.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t got;
		char *ans = srv_raw(port, cases[i].req, strlen(cases[i].req), 5, &got);
		cr_assert_not_null(ans, "%s: no connection", cases[i].what);
		int st = check_raw_answer(ans, got, cases[i].what);
		cr_expect(st == 200 || st == 400, "%s: status %d\n%.500s", cases[i].what, st, ans);
		const char *k = strstr(ans, "\nRL_KEY=");
		if (st == 200 && k != NULL) {
			k += 8;
			size_t kl = strcspn(k, "\n");
			for (size_t j = 0; j < kl; j++)
				cr_expect(k[j] >= 0x20 && k[j] < 0x7f, "%s: RL_KEY byte %02x: %.*s",
					  cases[i].what, (unsigned char)k[j], (int)kl, k);
		}
		cr_expect_null(strstr(ans, "\nInjected"), "%s", ans);
		free(ans);
	}
	/* a 60 KiB X-Forwarded-For */
	size_t cap = 60 * 1024;
	char *xff = malloc(cap + 64);
	size_t len = (size_t)sprintf(xff, "X-Forwarded-For: ");
	while (len < cap)
		len += (size_t)sprintf(xff + len, "203.0.113.7, ");
	sprintf(xff + len, "192.0.2.44");
	struct srv_resp r = get("/cgi/env.cgi", xff, NULL);
	cr_expect_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_not_null(strstr(r.body, "RL_CLIENT=192.0.2.44\n"), "%s", r.body);
	srv_resp_free(&r);
	free(xff);
	cr_assert(srv_alive(rg), "%s", logs());
	cr_expect_eq(srv_child(lighttpd, "rategate", 0), rg);
	r = get("/cgi/env.cgi", NULL, NULL);
	cr_expect_eq(r.status, 200);
	srv_resp_free(&r);
	log_lines_clean();
	finish();
}
