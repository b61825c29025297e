/*
 * test_apache_cgi_wrapper.c - rategate's CGI wrapper mode behind a real
 * Apache 2.4 with mod_cgid (examples/apache-cgi-wrapper.conf, run with its
 * Define values replaced): a new rategate process per request, running as
 * www-data, decides, then prints the 429 or execs the script, so the
 * counters must live in the shared-memory store (a file in a directory
 * www-data owns) between invocations.
 *
 * Both forms of the example: rategate itself as the CGI program
 * (ScriptAlias onto the binary, SetEnv RATEGATE_CONFIG, the script from
 * the rules' `upstream cgi:`), and a two-line sh script in the ScriptAlias
 * directory running `rategate cgi -c RULES SCRIPT`.  The wrapped script,
 * scripts/app.cgi, appends "PID METHOD RL_REMAINING QUERY" to a file and
 * execs tests/apps/echo_cgi: exactly 3 of 5 POSTs against 3/minute reach
 * it, from 3 different processes, with the body (by checksum) and the
 * query intact; the 4th and 5th get rategate's 429 with Retry-After and
 * X-RateLimit-* through Apache.  Apache's ISINDEX arguments (a query
 * without '=' becomes the CGI program's argv) must not choose the script.
 * `storage memory` is a 500 with the reason in Apache's ErrorLog.
 *
 * Apache refuses to run as root and drops to www-data, so this needs root
 * (the tests are skipped otherwise).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "servers.h"

static int port;
static pid_t apache;
static char base[64];

static const char rules_app[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         cgi:@CGI@\n"
	"message          \"Legacy app: 3 a minute\"\n"
	"/app/**          3/minute\n"
	"/cgi-bin/**      3/minute\n";

static const char *
logs(void)
{
	static char *s;
	char *a = srv_read(srv_path("state/error.log"));
	char *b = srv_read(srv_path("www/calls"));

	free(s);
	if (asprintf(&s, "--- apache error.log (rategate's log lines too):\n%s--- calls of the script:\n%s",
		     a ? a : "", b ? b : "") < 0)
		s = NULL;
	free(a);
	free(b);
	return s ? s : "";
}

static char *
errlog(void)
{
	char *s = srv_read(srv_path("state/error.log"));
	return s ? s : strdup("");
}

/* Skip unless root; the temporary directory with state/ (Apache's),
 * cgi-bin/ (its ScriptAlias directory), scripts/app.cgi (the wrapped
 * script, outside every URL) and www/ (owned by www-data: the store and
 * the script's call log). */
static void
setup(void)
{
	char echo_cgi[SRV_PATH_MAX], rel[SRV_PATH_MAX], script[3 * SRV_PATH_MAX];

	srv_need("apache2", "apache2");
	if (geteuid() != 0)
		cr_skip_test("Apache refuses \"User root\" and drops to www-data, so this test starts apache2 as root: run make check as root");
	srv_setup();
	cr_assert_eq(mkdir(srv_path("state"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("cgi-bin"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("scripts"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("www"), 0755), 0);
	srv_chown_www(srv_path("www"));
	snprintf(rel, sizeof(rel), "%s/tests/apps/echo_cgi", srv_builddir());
	cr_assert_not_null(realpath(rel, echo_cgi), "%s is not built (make check builds it)", rel);
	snprintf(script, sizeof(script),
		 "#!/bin/sh\n"
		 "echo \"$$ $REQUEST_METHOD ${RL_REMAINING:--} ${QUERY_STRING:--}\" >> %s\n"
		 "exec %s\n", srv_path("www/calls"), echo_cgi);
	srv_write("scripts/app.cgi", script, 0755);
}

static void
teardown(void)
{
	srv_cleanup();
}

/* Write rules (@STORE@ and @CGI@ replaced) to legacy.rules and start
 * Apache from the example. */
static void
start(const char *rules)
{
	char store[SRV_PATH_MAX + 32], cgi[SRV_PATH_MAX], listen[64], state[SRV_PATH_MAX],
		rpath[SRV_PATH_MAX], cgibin[SRV_PATH_MAX], line[SRV_PATH_MAX + 64],
		prefix[64];
	const char *all[] = { "@STORE@", store, "@CGI@", cgi };
	const char *pairs[5];
	size_t n = 0;

	snprintf(store, sizeof(store), "shm:%s?size=4M", srv_path("www/store"));
	snprintf(cgi, sizeof(cgi), "%s", srv_path("scripts/app.cgi"));
	for (size_t i = 0; i < 4; i += 2)
		if (strstr(rules, all[i]) != NULL) {
			pairs[n++] = all[i];
			pairs[n++] = all[i + 1];
		}
	pairs[n] = NULL;
	char *text = n ? srv_subst(rules, pairs) : strdup(rules);
	srv_write("legacy.rules", text, 0644);
	free(text);

	port = srv_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(rpath, sizeof(rpath), "%s", srv_path("legacy.rules"));
	snprintf(cgibin, sizeof(cgibin), "%s", srv_path("cgi-bin"));
	const char *keys[] = { "RG_STATE", "RG_LISTEN", "RG_RATEGATE", "RG_RULES", "RG_CGIBIN" };
	const char *vals[] = { state, listen, srv_rategate(), rpath, cgibin };
	char *conf = srv_source("examples/apache-cgi-wrapper.conf");
	for (int i = 0; i < 5; i++) {
		snprintf(prefix, sizeof(prefix), "Define %s ", keys[i]);
		snprintf(line, sizeof(line), "Define %s %s", keys[i], vals[i]);
		char *next = srv_set_line(conf, prefix, line);
		free(conf);
		conf = next;
	}
	srv_write("apache.conf", conf, 0644);
	free(conf);
	char *argv[] = { (char *)srv_need("apache2", "apache2"), "-f",
			 (char *)srv_path("apache.conf"), "-DFOREGROUND", NULL };
	apache = srv_spawn(argv, srv_path("apache.out"));
	srv_wait_ready(apache, port, NULL, srv_path("apache.out"), 15);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

/* Stop Apache; the ErrorLog (rategate's standard error) holds no
 * sanitizer report.  First wait until mod_cgid's daemon has reaped the
 * last CGI process: this process is a child subreaper (srv_setup), so one
 * that exited just before Apache stopped the daemon would come back to us
 * as a zombie, and the Apache worker that waits for it to go (kill(pid,
 * 0)) would hold the shutdown for 7 s. */
static void
finish(void)
{
	pid_t kids[16];

	for (int i = 0; i < 300; i++) {
		int n = srv_children_named(apache, NULL, kids, 16), busy = 0;
		for (int k = 0; k < n && k < 16; k++)
			busy += srv_children(kids[k], NULL) > 0;
		if (busy == 0)
			break;
		usleep(10000);
	}
	cr_expect_eq(srv_stop(apache, 15), 0, "%s", logs());
	char *log = errlog();

	cr_expect_null(strstr(log, "Sanitizer"), "%s", log);
	cr_expect_null(strstr(log, "runtime error"), "%s", log);
	free(log);
}

static const char *
field(const struct srv_resp *r, const char *name, char *buf, size_t cap)
{
	char key[64];
	size_t kl = (size_t)snprintf(key, sizeof(key), "%s=", name);

	buf[0] = '\0';
	for (const char *p = r->body; p != NULL && *p != '\0';) {
		if (strncmp(p, key, kl) == 0) {
			snprintf(buf, cap, "%.*s", (int)strcspn(p + kl, "\n"), p + kl);
			break;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return buf;
}

static void
expect_field(const struct srv_resp *r, const char *name, const char *want)
{
	char v[SRV_PATH_MAX];

	cr_expect_str_eq(field(r, name, v, sizeof(v)), want, "%s in:\n%s", name, r->body);
}

static char *
noise(size_t n)
{
	char *b = malloc(n);
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	cr_assert_not_null(b);
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[i] = (char)(x >> 56);
	}
	return b;
}

/* The checks every 429 of rategate's passes. */
static void
expect_429(const struct srv_resp *r, int i)
{
	char v[128];

	cr_assert_str_eq(r->status_line, "HTTP/1.1 429 Too Many Requests", "request %d: %s\n%s",
			 i, r->body, logs());
	cr_assert_not_null(srv_header(r, "Retry-After", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
	cr_expect_eq(srv_header_count(r, "Retry-After"), 1);
	cr_expect_str_eq(srv_header(r, "X-RateLimit-Limit", v, sizeof(v)), "3");
	cr_expect_str_eq(srv_header(r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
	cr_assert_not_null(srv_header(r, "X-RateLimit-Reset", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "X-RateLimit-Reset %s", v);
	cr_expect_str_eq(srv_header(r, "Cache-Control", v, sizeof(v)), "no-store");
	cr_expect_str_eq(srv_header(r, "Content-Type", v, sizeof(v)), "text/plain; charset=utf-8");
	cr_expect_str_eq(r->body, "Legacy app: 3 a minute\n");
}

/* Five POSTs of a 64 KiB body to path?x=1&y=%2F: the first three reach
 * the script intact, each from a new process that saw the counter go
 * down; the others get rategate's 429 and never run it. */
static void
three_of_five(const char *path)
{
	enum { LEN = 64 << 10 };
	char url[SRV_PATH_MAX], fnv[17], lenbuf[16];
	char *body = noise(LEN);

	snprintf(url, sizeof(url), "%s%s?x=1&y=%%2F", base, path);
	snprintf(lenbuf, sizeof(lenbuf), "%d", LEN);
	srv_fnv(body, LEN, fnv);
	for (int i = 0; i < 5; i++) {
		const char *hdrs[] = { "X-Test: wrapped  by apache", NULL };
		struct srv_resp r;
		srv_http_body("POST", url, hdrs, body, LEN, 0, &r);
		if (i < 3) {
			cr_assert_eq(r.status, 200, "request %d: %s\n%s\n%s", i, r.status_line,
				     r.body, logs());
			expect_field(&r, "method", "POST");
			expect_field(&r, "query", "x=1&y=%2F");
			expect_field(&r, "http_x_test", "wrapped  by apache");
			expect_field(&r, "content_length", lenbuf);
			expect_field(&r, "body_len", lenbuf);
			expect_field(&r, "body_fnv", fnv);
			expect_field(&r, "rl_client", "127.0.0.1");
			expect_field(&r, "http_proxy", "absent");
			expect_field(&r, "script_filename", srv_path("scripts/app.cgi"));
			/* nothing of ours on an allowed answer: rategate is gone */
			cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 0, "%s", r.headers);
		} else
			expect_429(&r, i);
		srv_resp_free(&r);
		cr_expect_eq(srv_count_lines(srv_path("www/calls")), i < 3 ? i + 1 : 3,
			     "after request %d\n%s", i, logs());
	}
	free(body);

	/* Three calls, three processes (exec keeps the PID: each is the
	 * rategate process Apache started), each told what was left. */
	char *calls = srv_read(srv_path("www/calls"));
	cr_assert_not_null(calls);
	long pids[3] = { 0, 0, 0 };
	const char *p = calls;
	for (int i = 0; i < 3; i++) {
		char method[16], rem[16], query[64];
		cr_assert_eq(sscanf(p, "%ld %15s %15s %63s", &pids[i], method, rem, query), 4,
			     "%s", calls);
		cr_expect_str_eq(method, "POST");
		snprintf(lenbuf, sizeof(lenbuf), "%d", 2 - i);
		cr_expect_str_eq(rem, lenbuf, "RL_REMAINING of call %d\n%s", i, calls);
		cr_expect_str_eq(query, "x=1&y=%2F");
		p = strchr(p, '\n') + 1;
	}
	cr_expect(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2], "%s", calls);
	free(calls);

	/* the counters live in the store, created by a CGI process */
	struct stat sb;
	uid_t uid;
	gid_t gid;
	srv_www_data(&uid, &gid);
	cr_assert_eq(stat(srv_path("www/store"), &sb), 0, "no store file\n%s", logs());
	cr_expect_eq(sb.st_uid, uid);

	char *log = errlog(), want[256];
	snprintf(want, sizeof(want),
		 "level=info event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=%s origin=rule limit=3/minute remaining=0 path=%s method=POST retry_after=",
		 strncmp(path, "/app", 4) == 0 ? "/app/**" : "/cgi-bin/**", path);
	const char *d = strstr(log, want);
	cr_expect_not_null(d, "%s\n%s", want, log);
	cr_expect_not_null(d ? strstr(d + 1, want) : NULL, "not two denials:\n%s", log);
	free(log);
}

Test(apache_cgi_wrapper, rategate_as_the_cgi_program_keeps_counters_between_runs,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start(rules_app);
	three_of_five("/app/guestbook");

	/* the bare prefix, another path of the rule: the same budget */
	struct srv_resp r;
	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/app", base);
	srv_http("GET", url, NULL, &r);
	expect_429(&r, 5);
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("www/calls")), 3, "%s", logs());
	finish();
}

Test(apache_cgi_wrapper, sh_script_running_rategate_cgi_with_the_script,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char stub[3 * SRV_PATH_MAX];

	snprintf(stub, sizeof(stub), "#!/bin/sh\nexec %s cgi -c %s %s\n", srv_rategate(),
		 srv_path("legacy.rules"), srv_path("scripts/app.cgi"));
	srv_write("cgi-bin/guestbook.cgi", stub, 0755);
	start(rules_app);
	three_of_five("/cgi-bin/guestbook.cgi");
	finish();
}

/* Apache (mod_cgi and mod_cgid alike) turns a query without '=' into
 * arguments of the CGI program, '+'-separated and %-decoded (the ISINDEX
 * convention).  With ScriptAlias onto rategate, "?WORD" thus starts
 * "rategate WORD": the client must not get to choose what rategate runs,
 * and such queries must reach the rules' script like any other. */
Test(apache_cgi_wrapper, isindex_query_words_do_not_choose_the_script,
     .init = setup, .fini = teardown, .timeout = 30)
{
	static const char shell[] =
		"echo Content-Type: text/plain\necho\necho a shell ran as $(id -un)\n";
	char url[SRV_PATH_MAX];
	struct srv_resp r;

	start("storage          @STORE@\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/**          100/minute\n");
	snprintf(url, sizeof(url), "%s/app/x?/bin/sh", base);
	srv_http_body("POST", url, NULL, shell, sizeof(shell) - 1, 0, &r);
	cr_expect_null(strstr(r.body, "a shell ran"),
		       "POST /app/x?/bin/sh made rategate exec /bin/sh with the body as its input:\n%s",
		       r.body);
	cr_expect_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
	expect_field(&r, "query", "/bin/sh");
	expect_field(&r, "script_filename", srv_path("scripts/app.cgi"));
	srv_resp_free(&r);

	snprintf(url, sizeof(url), "%s/app/search?hello+world", base);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
	expect_field(&r, "query", "hello+world");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("www/calls")), 2, "%s", logs());
	finish();
}

Test(apache_cgi_wrapper, storage_memory_is_refused_with_500_and_logged,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char url[SRV_PATH_MAX];

	start("storage          memory\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/**          3/minute\n");
	snprintf(url, sizeof(url), "%s/app/x?a=b", base);
	struct srv_resp r;
	srv_http_body("POST", url, NULL, "a=1&b=2", 7, 0, &r);
	cr_expect_eq(r.status, 500, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(r.body, "Internal Server Error: the rate limiter is misconfigured\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_count_lines(srv_path("www/calls")), 0, "the script ran\n%s", logs());
	char *log = errlog(), want[SRV_PATH_MAX + 200];
	snprintf(want, sizeof(want),
		 "level=error event=start msg=\"%s: storage memory in CGI wrapper mode would give every request a fresh, private budget: use storage shm: (the default)\"",
		 srv_path("legacy.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
	finish();
}
