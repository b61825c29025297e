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
	static const char *const files[] = {
		"apache error.log (rategate's log lines too)", "state/error.log",
		"calls of the script", "www/calls", NULL };

	return srv_logs(files);
}

static char *
errlog(void)
{
	return srv_read_text(srv_path("state/error.log"));
}

/* Skip unless root; the temporary directory with state/ (Apache's),
 * cgi-bin/ (its ScriptAlias directory), scripts/app.cgi (the wrapped
 * script, outside every URL) and www/ (owned by www-data: the store and
 * the script's call log). */
static void
setup(void)
{
	char echo_cgi[SRV_PATH_MAX], script[3 * SRV_PATH_MAX];

	srv_need("apache2", "apache2");
	if (geteuid() != 0)
		cr_skip_test("Apache refuses \"User root\" and drops to www-data, so this test starts apache2 as root: run make check as root");
	srv_setup();
	cr_assert_eq(mkdir(srv_path("state"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("cgi-bin"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("scripts"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("www"), 0755), 0);
	srv_chown_www(srv_path("www"));
	srv_built("tests/apps/echo_cgi", echo_cgi);
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
		rpath[SRV_PATH_MAX], cgibin[SRV_PATH_MAX];

	snprintf(store, sizeof(store), "shm:%s?size=4M", srv_path("www/store"));
	snprintf(cgi, sizeof(cgi), "%s", srv_path("scripts/app.cgi"));
	const char *pairs[] = { "@STORE@", store, "@CGI@", cgi, NULL };
	char *text = srv_subst_some(rules, pairs);
	srv_write("legacy.rules", text, 0644);
	free(text);

	port = srv_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(rpath, sizeof(rpath), "%s", srv_path("legacy.rules"));
	snprintf(cgibin, sizeof(cgibin), "%s", srv_path("cgi-bin"));
	const char *defines[] = { "RG_STATE", state, "RG_LISTEN", listen,
				  "RG_RATEGATE", srv_rategate(), "RG_RULES", rpath,
				  "RG_CGIBIN", cgibin, NULL };
	apache = srv_start_apache("apache-cgi-wrapper.conf", defines, port);
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
	srv_expect_no_sanitizer(srv_path("state/error.log"));
}

/* The checks every 429 of rategate's passes (Apache keeps rategate's one
 * Retry-After). */
static void
expect_429(const struct srv_resp *r, int i)
{
	cr_assert_str_eq(r->status_line, "HTTP/1.1 429 Too Many Requests", "request %d: %s\n%s",
			 i, r->body, logs());
	srv_expect_429(r, "3", "Legacy app: 3 a minute\n", logs);
	cr_expect_eq(srv_header_count(r, "Retry-After"), 1);
}

/* Five POSTs of a 64 KiB body to path?x=1&y=%2F: the first three reach
 * the script intact, each from a new process that saw the counter go
 * down; the others get rategate's 429 and never run it. */
static void
three_of_five(const char *path)
{
	enum { LEN = 64 << 10 };
	char url[SRV_PATH_MAX], fnv[17], lenbuf[16];
	char *body = srv_noise(LEN, 56);

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
			srv_expect_field(&r, "method", "POST");
			srv_expect_field(&r, "query", "x=1&y=%2F");
			srv_expect_field(&r, "http_x_test", "wrapped  by apache");
			srv_expect_field(&r, "content_length", lenbuf);
			srv_expect_field(&r, "body_len", lenbuf);
			srv_expect_field(&r, "body_fnv", fnv);
			srv_expect_field(&r, "rl_client", "127.0.0.1");
			srv_expect_field(&r, "http_proxy", "absent");
			srv_expect_field(&r, "script_filename", srv_path("scripts/app.cgi"));
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
	srv_expect_field(&r, "query", "/bin/sh");
	srv_expect_field(&r, "script_filename", srv_path("scripts/app.cgi"));
	srv_resp_free(&r);

	snprintf(url, sizeof(url), "%s/app/search?hello+world", base);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
	srv_expect_field(&r, "query", "hello+world");
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

/* Apache runs a CGI program whose name begins with "nph-" as a
 * non-parsed-header program and sends what it prints to the client
 * unread.  The sh-script form takes the name of the script it stands for,
 * so rategate's answers there must be whole HTTP responses: a "Status:"
 * head would reach the client as is (no status line: curl calls it
 * HTTP/0.9 and gives up, a browser shows the head as text). */
Test(apache_cgi_wrapper, an_nph_script_gets_a_whole_http_429,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char stub[3 * SRV_PATH_MAX], url[SRV_PATH_MAX];

	srv_write("scripts/nph-app.cgi",
		  "#!/bin/sh\nprintf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nnph ran\\n'\n",
		  0755);
	snprintf(stub, sizeof(stub), "#!/bin/sh\nexec %s cgi -c %s %s\n", srv_rategate(),
		 srv_path("legacy.rules"), srv_path("scripts/nph-app.cgi"));
	srv_write("cgi-bin/nph-report.cgi", stub, 0755);
	start(rules_app);
	snprintf(url, sizeof(url), "%s/cgi-bin/nph-report.cgi", base);
	for (int i = 0; i < 5; i++) {
		struct srv_resp r;
		srv_http("GET", url, NULL, &r);
		if (i < 3) {
			cr_expect_str_eq(r.status_line, "HTTP/1.0 200 OK", "request %d\n%s", i, logs());
			cr_expect_str_eq(r.body, "nph ran\n");
		} else {
			expect_429(&r, i);
			char v[64];
			cr_expect_str_eq(srv_header(&r, "Connection", v, sizeof(v)), "close");
		}
		srv_resp_free(&r);
	}
	finish();
}
