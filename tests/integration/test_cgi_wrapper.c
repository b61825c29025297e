/*
 * test_cgi_wrapper.c - rategate's CGI wrapper mode behind a real lighttpd
 * mod_cgi (examples/lighttpd-cgi-wrapper.conf, run with its var.* values
 * replaced): a new rategate process per request decides, then prints the
 * 429 or execs the script, so the counters must live in the shared-memory
 * store between invocations.
 *
 * Both forms of the example: rategate itself as the CGI program (alias.url
 * onto the binary, RATEGATE_CONFIG, the script from the rules' `upstream
 * cgi:`), and a two-line sh script running `rategate cgi -c RULES SCRIPT`
 * (the form for any CGI server).  Exactly 3 of 5 requests pass a
 * 3/minute limit; the others get rategate's 429 and never run the script;
 * the script gets body and environment intact (tests/apps/echo_cgi by
 * checksum, examples/legacy.cgi); `storage memory` and rules that do not
 * load are refused with a 500 and a log line; deduct-when= is counted as a
 * plain rule (and said in the log); max-body works from Content-Length.
 * And, without a web server, the way fcgiwrap (nginx) runs a CGI program:
 * the whole body written to a pipe before the answer is read, so a
 * denial must read the body it does not use.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "servers.h"

static int port;
static pid_t lighttpd;
static char base[64];
static char echo_cgi[SRV_PATH_MAX];

static void
setup(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("docroot/cgi-bin"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("scripts"), 0755), 0);
	srv_built("tests/apps/echo_cgi", echo_cgi);
}

static void
teardown(void)
{
	srv_cleanup();
}

/* Write rules (with @STORE@ and @CGI@ replaced) and start lighttpd from
 * the example. */
static void
start(const char *rules)
{
	char store[SRV_PATH_MAX + 32];

	snprintf(store, sizeof(store), "shm:%s?size=4M", srv_path("counters"));
	const char *pairs[] = { "@STORE@", store, "@CGI@", echo_cgi, NULL };
	char *text = srv_subst_some(rules, pairs);
	srv_write("legacy.rules", text, 0644);
	free(text);

	port = srv_free_port();
	char *conf = srv_lighttpd_conf("lighttpd-cgi-wrapper.conf", "legacy.rules", port, 0);
	lighttpd = srv_start_lighttpd(conf, port);
	free(conf);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

static const char *
logs(void)
{
	static const char *const files[] = { "lighttpd error log", "lighttpd-error.log",
					     "rategate log (CGI stderr)", "rategate.log", NULL };

	return srv_logs(files);
}

/* Stop lighttpd; the CGI programs' standard error (rategate's log) holds
 * no sanitizer report. */
static void
finish(void)
{
	srv_stop_tree(lighttpd, 15);
	srv_expect_no_sanitizer(srv_path("rategate.log"));
}

static char *
rglog(void)
{
	return srv_read_text(srv_path("rategate.log"));
}

/* Five POSTs with a body at path: exactly the first three reach the
 * script (which writes X-Done-File), the others get rategate's 429. */
static void
three_of_five(const char *path)
{
	char url[SRV_PATH_MAX], done[SRV_PATH_MAX + 32], fnv[17], v[64];
	static const char body[] = "name=legacy&comment=hello+world";

	snprintf(url, sizeof(url), "%s%s", base, path);
	srv_fnv(body, sizeof(body) - 1, fnv);
	for (int i = 0; i < 5; i++) {
		char donefile[64];
		snprintf(donefile, sizeof(donefile), "done-%d", i);
		snprintf(done, sizeof(done), "X-Done-File: %s", srv_path(donefile));
		const char *hdrs[] = { done, "X-Test: wrapped", NULL };
		struct srv_resp r;
		srv_http_body("POST", url, hdrs, body, sizeof(body) - 1, 0, &r);
		if (i < 3) {
			cr_assert_eq(r.status, 200, "request %d: %s\n%s", i, r.status_line, logs());
			srv_expect_field(&r, "method", "POST");
			srv_expect_field(&r, "http_x_test", "wrapped");
			srv_expect_field(&r, "body_len", "31");
			srv_expect_field(&r, "body_fnv", fnv);
			srv_expect_field(&r, "rl_client", "127.0.0.1");
			/* nothing of ours on an allowed answer: rategate is gone */
			cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 0, "%s", r.headers);
			cr_expect_eq(access(srv_path(donefile), F_OK), 0, "the script did not run");
		} else {
			cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests",
					 "request %d\n%s", i, logs());
			cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
			cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
			cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "3");
			cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
			cr_expect_str_eq(srv_header(&r, "Cache-Control", v, sizeof(v)), "no-store");
			cr_expect_str_eq(r.body, "Legacy app: 3 a minute\n");
			cr_expect_neq(access(srv_path(donefile), F_OK), 0,
				      "the script ran after a denial");
		}
		srv_resp_free(&r);
	}
	char *log = rglog(), want[256];
	snprintf(want, sizeof(want),
		 "level=info event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=%s origin=rule limit=3/minute remaining=0 path=%s method=POST retry_after=",
		 strncmp(path, "/app", 4) == 0 ? "/app/**" : "/cgi-bin/**", path);
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
}

static const char rules_app[] =
	"storage          @STORE@\n"
	"headers          on\n"
	"upstream         cgi:@CGI@\n"
	"message          \"Legacy app: 3 a minute\"\n"
	"/app/**          3/minute\n"
	"/cgi-bin/**      3/minute\n";

Test(cgi_wrapper, rategate_as_the_cgi_program_keeps_counters_between_runs,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start(rules_app);
	three_of_five("/app/guestbook");
	/* another path under the same rule: the same budget */
	struct srv_resp r;
	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/app", base);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 429, "%s", r.status_line);
	srv_resp_free(&r);
	finish();
}

Test(cgi_wrapper, generic_form_rategate_cgi_with_a_script,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char stub[3 * SRV_PATH_MAX];

	start(rules_app);
	snprintf(stub, sizeof(stub), "#!/bin/sh\nexec %s cgi -c %s %s\n", srv_rategate(),
		 srv_path("legacy.rules"), echo_cgi);
	srv_write("docroot/cgi-bin/guestbook.cgi", stub, 0755);
	three_of_five("/cgi-bin/guestbook.cgi");
	finish();
}

Test(cgi_wrapper, the_script_gets_body_and_environment_intact,
     .init = setup, .fini = teardown, .timeout = 30)
{
	enum { LEN = 1 << 20 };
	char url[SRV_PATH_MAX], fnv[17], dir[SRV_PATH_MAX];
	unsigned char *body = malloc(LEN);

	cr_assert_not_null(body);
	for (size_t i = 0; i < LEN; i++)
		body[i] = (unsigned char)(i * 7 + (i >> 11));
	srv_fnv(body, LEN, fnv);
	start("storage          @STORE@\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/**          100/minute\n");

	snprintf(url, sizeof(url), "%s/app/echo/more?x=1&y=%%2F", base);
	const char *hdrs[] = { "X-Test: binary body", "Proxy: http://evil.example/", NULL };
	for (int chunked = 0; chunked < 2; chunked++) {
		struct srv_resp r;
		srv_http_body("PUT", url, hdrs, body, LEN, chunked, &r);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
		srv_expect_field(&r, "method", "PUT");
		srv_expect_field(&r, "query", "x=1&y=%2F");
		srv_expect_field(&r, "http_x_test", "binary body");
		srv_expect_field(&r, "content_length", "1048576");
		srv_expect_field(&r, "body_len", "1048576");
		srv_expect_field(&r, "body_fnv", fnv);
		srv_expect_field(&r, "gateway_interface", "CGI/1.1");
		srv_expect_field(&r, "rl_client", "127.0.0.1");
		srv_expect_field(&r, "http_proxy", "absent");
		/* the script, not rategate, is SCRIPT_FILENAME; it runs in its
		 * own directory, as argv[0] with no arguments */
		srv_expect_field(&r, "script_filename", echo_cgi);
		srv_expect_field(&r, "argv0", echo_cgi);
		srv_expect_field(&r, "argc", "1");
		snprintf(dir, sizeof(dir), "%s", echo_cgi);
		*strrchr(dir, '/') = '\0';
		srv_expect_field(&r, "cwd", dir);
		srv_resp_free(&r);
	}
	free(body);
	finish();
}

Test(cgi_wrapper, legacy_example_script_behind_the_wrapper,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char url[SRV_PATH_MAX];
	char *script = srv_source("examples/legacy.cgi");

	srv_write("scripts/legacy.cgi", script, 0755);
	free(script);
	char rules[SRV_PATH_MAX + 256];
	snprintf(rules, sizeof(rules),
		 "storage          @STORE@\n"
		 "upstream         cgi:%s\n"
		 "/app/**          2/minute\n", srv_path("scripts/legacy.cgi"));
	start(rules);

	snprintf(url, sizeof(url), "%s/app/sign?who=me", base);
	for (int i = 0; i < 3; i++) {
		struct srv_resp r;
		srv_http_body("POST", url, NULL, "0123456789", 10, 0, &r);
		if (i == 2) {
			cr_expect_eq(r.status, 429);
			cr_expect_str_eq(r.body, "Too Many Requests: rate limit exceeded\n");
			srv_resp_free(&r);
			break;
		}
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
		char want[256];
		snprintf(want, sizeof(want),
			 "legacy.cgi: POST who=me\n"
			 "client: 127.0.0.1\n"
			 "limit: 2/minute, %d left, full again in ", 1 - i);
		cr_expect_eq(strncmp(r.body, want, strlen(want)), 0, "%s", r.body);
		cr_expect_not_null(strstr(r.body, " s\nbody: 10 bytes\n"), "%s", r.body);
		srv_resp_free(&r);
	}
	finish();
}

Test(cgi_wrapper, storage_memory_is_refused_with_500,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char url[SRV_PATH_MAX], done[SRV_PATH_MAX + 32];

	start("storage          memory\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/**          3/minute\n");
	snprintf(url, sizeof(url), "%s/app/x", base);
	snprintf(done, sizeof(done), "X-Done-File: %s", srv_path("done"));
	const char *hdrs[] = { done, NULL };
	struct srv_resp r;
	srv_http("GET", url, hdrs, &r);
	cr_expect_eq(r.status, 500, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(r.body, "Internal Server Error: the rate limiter is misconfigured\n");
	srv_resp_free(&r);
	cr_expect_neq(access(srv_path("done"), F_OK), 0, "the script ran");
	char *log = rglog(), want[SRV_PATH_MAX + 200];
	snprintf(want, sizeof(want),
		 "level=error event=start msg=\"%s: storage memory in CGI wrapper mode would give every request a fresh, private budget: use storage shm: (the default)\"",
		 srv_path("legacy.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
	finish();
}

Test(cgi_wrapper, rules_that_do_not_load_are_a_500,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char url[SRV_PATH_MAX];

	start("storage          @STORE@\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/**          3/minte\n");
	snprintf(url, sizeof(url), "%s/app/x", base);
	struct srv_resp r;
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 500, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(r.body, "Internal Server Error: the rate limiter's rules do not load\n");
	srv_resp_free(&r);
	char *log = rglog(), want[SRV_PATH_MAX + 200];
	snprintf(want, sizeof(want), "%s:3:20: bad limit unit \"minte\"", srv_path("legacy.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	snprintf(want, sizeof(want), "event=start msg=\"%s: rules not loaded\"", srv_path("legacy.rules"));
	cr_expect_not_null(strstr(log, want), "%s\n%s", want, log);
	free(log);
	finish();
}

/* What the wrapper cannot do: it never sees the response, so deduct-when=
 * is counted on every request (and the log says so); max-body works from
 * Content-Length. */
Test(cgi_wrapper, deduct_when_counts_every_request_and_max_body_works,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char url[SRV_PATH_MAX], body[4096];

	start("storage          @STORE@\n"
	      "upstream         cgi:@CGI@\n"
	      "/app/login       2/minute  deduct-when=401\n"
	      "/app/upload      100/minute  max-body=1K\n");
	snprintf(url, sizeof(url), "%s/app/login", base);
	struct srv_resp r;
	for (int i = 0; i < 3; i++) {
		srv_http("GET", url, NULL, &r);     /* echo_cgi answers 200 */
		cr_expect_eq(r.status, i < 2 ? 200 : 429, "login %d: %s", i, r.status_line);
		srv_resp_free(&r);
	}
	char *log = rglog();
	cr_expect_not_null(strstr(log, "level=warn event=cgi-wrapper msg=\"rule /app/login ("), "%s", log);
	cr_expect_not_null(strstr(log, "deduct-when= needs the responder mode; here every request is counted"),
			   "%s", log);
	free(log);

	memset(body, 'b', sizeof(body));
	snprintf(url, sizeof(url), "%s/app/upload", base);
	for (int chunked = 0; chunked < 2; chunked++) {
		srv_http_body("POST", url, NULL, body, 1025, chunked, &r);
		cr_expect_eq(r.status, 413, "chunked=%d: %s\n%s", chunked, r.status_line, logs());
		cr_expect_str_eq(r.body, "Content Too Large: the request body exceeds this path's max-body\n");
		srv_resp_free(&r);
	}
	srv_http_body("POST", url, NULL, body, 1024, 0, &r);
	cr_expect_eq(r.status, 200);
	srv_expect_field(&r, "body_len", "1024");
	srv_resp_free(&r);
	finish();
}

/* Run rategate as fcgiwrap does: the request body is written whole to
 * the program's standard input (a pipe) before its answer is read, and a
 * write that fails (the program gone with the body unread) makes fcgiwrap
 * drop the answer and send nginx its own 502.  Returns the bytes of the
 * body that could be written; the answer in out. */
static size_t
run_like_fcgiwrap(const char *uri, const char *body, size_t len, char *out, size_t cap)
{
	int in[2], res[2];
	char cl[32], ru[SRV_PATH_MAX], conf[SRV_PATH_MAX + 32];

	snprintf(cl, sizeof(cl), "CONTENT_LENGTH=%zu", len);
	snprintf(ru, sizeof(ru), "REQUEST_URI=%s", uri);
	snprintf(conf, sizeof(conf), "RATEGATE_CONFIG=%s", srv_path("legacy.rules"));
	char *envp[] = { "GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=POST",
			 "REMOTE_ADDR=192.0.2.7", cl, ru, conf, NULL };
	char *argv[] = { (char *)srv_rategate(), NULL };
	cr_assert_eq(pipe(in), 0);
	cr_assert_eq(pipe(res), 0);
	signal(SIGPIPE, SIG_IGN);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int err = open(srv_path("rategate.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(in[0], 0);
		dup2(res[1], 1);
		if (err >= 0)
			dup2(err, 2);
		close(in[0]);
		close(in[1]);
		close(res[0]);
		close(res[1]);
		signal(SIGPIPE, SIG_DFL);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	close(in[0]);
	close(res[1]);
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(in[1], body + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;          /* EPIPE: fcgiwrap's 502 */
		done += (size_t)w;
	}
	close(in[1]);
	size_t n = 0;
	for (;;) {
		ssize_t r = read(res[0], out + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	out[n] = '\0';
	close(res[0]);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rategate's exit status %d", st);
	return done;
}

/* A denied upload larger than a pipe's buffer (64 KiB): rategate reads
 * (and drops) the body the server is writing, so that the server gets to
 * read the 429 or 413 rather than a failed write. */
Test(cgi_wrapper, a_denial_reads_the_body_a_pipe_server_writes_first,
     .init = setup, .fini = teardown, .timeout = 30)
{
	enum { LEN = 256 * 1024 };
	char *body = malloc(LEN), out[4096];

	cr_assert_not_null(body);
	memset(body, 'b', LEN);
	char rules[3 * SRV_PATH_MAX];
	snprintf(rules, sizeof(rules),
		 "storage          shm:%s?size=4M\n"
		 "upstream         cgi:%s\n"
		 "/app/**          1/minute\n"
		 "/upload          100/minute  max-body=1K\n", srv_path("counters"), echo_cgi);
	srv_write("legacy.rules", rules, 0644);

	/* the first is allowed: echo_cgi reads the body itself */
	cr_expect_eq(run_like_fcgiwrap("/app/x", body, LEN, out, sizeof(out)), (size_t)LEN);
	cr_expect_not_null(strstr(out, "body_len=262144"), "%s", out);
	cr_expect_eq(run_like_fcgiwrap("/app/x", body, LEN, out, sizeof(out)), (size_t)LEN,
		     "the 429 left the body unread: fcgiwrap would answer 502");
	cr_expect_eq(strncmp(out, "Status: 429 Too Many Requests\r\n", 31), 0, "%s", out);
	cr_expect_eq(run_like_fcgiwrap("/upload", body, LEN, out, sizeof(out)), (size_t)LEN,
		     "the 413 left the body unread: fcgiwrap would answer 502");
	cr_expect_eq(strncmp(out, "Status: 413 ", 12), 0, "%s", out);
	free(body);
}
