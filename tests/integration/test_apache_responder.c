/*
 * test_apache_responder.c - rategate behind a real Apache 2.4 in the
 * set-ups of examples/apache-proxy-fcgi.conf and examples/apache-fcgid.conf
 * (run with their Define values replaced), in front of
 * tests/apps/echo_fcgi (upstream fcgi://127.0.0.1:PORT):
 *
 *   mod_proxy_fcgi  ProxyPass to rategate's unix socket (its group given
 *                   to www-data).  Allowed requests reach the app intact
 *                   (method, query, headers, a 4 MiB body, a chunked one);
 *                   denials are 429 Too Many Requests with Retry-After and
 *                   X-RateLimit-* and never reach the app.
 *   mod_fcgid       Apache spawns rategate (FcgidWrapper "rategate -c
 *                   RULES" virtual) on the socket it hands over as fd 0, as
 *                   many processes as the load asks for (up to 4), all
 *                   counting in one shm store: 8 requests at once against
 *                   5/minute give exactly 5 answers from the app.  And
 *                   FcgidAccessChecker rategate (RATEGATE_CONFIG from
 *                   FcgidInitialEnv) with ErrorDocument 401 -> a mod_asis
 *                   429: the client sees 429 with rategate's Retry-After
 *                   and X-RateLimit-*.  A rategate process killed
 *                   outright (as mod_fcgid does past FcgidBusyTimeout)
 *                   takes the CGI script it runs (upstream=cgi:) with it.
 *
 * Apache refuses to run as root and drops to www-data, so this needs root
 * (the tests are skipped otherwise); everything the workers or the
 * processes mod_fcgid starts write to belongs to www-data.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "servers.h"

static const char proxy_rules[] =
	"# Apache mod_proxy_fcgi test\n"
	"storage          shm:@DIR@/store?size=8M\n"
	"headers          on\n"
	"upstream         fcgi://127.0.0.1:@APP@\n"
	"stats            /rategate-status\n"
	"/app/**          3/minute   message=\"app: slow down\"\n"
	"/upload/**       100/minute\n"
	"/small/**        100/minute max-body=1000\n";

static const char fcgid_rules[] =
	"# Apache mod_fcgid test (rategate runs as www-data)\n"
	"storage          shm:@DIR@/shm/store?size=8M\n"
	"headers          on\n"
	"upstream         fcgi://127.0.0.1:@APP@\n"
	"/app/**          5/minute   message=\"app: slow down\"\n"
	"/app/upload/**   100/minute\n"
	"/app/cgi/**      100/minute upstream=cgi:@CGI@\n"
	"/static/**       2/minute\n";

static const char asis_429[] =
	"Status: 429 Too Many Requests\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"\n"
	"Too Many Requests: rate limit exceeded\n";

static int port, app_port;
static pid_t apache, rg, app;
static char base[64];

static const char *
logs(void)
{
	static const char *const files[] = { "apache error.log", "state/error.log",
					     "rategate log", "rategate.log", NULL };

	return srv_logs(files);
}

static int
app_calls(void)
{
	return srv_read_int(srv_path("count"));
}

/* Skip unless root; then the temporary directory, the state directory
 * and echo_fcgi on a TCP port (reachable by www-data too). */
static void
common_setup(void)
{
	srv_need("apache2", "apache2");
	if (geteuid() != 0)
		cr_skip_test("Apache refuses \"User root\" and drops to www-data, so this test starts apache2 as root: run make check as root");
	srv_setup();
	cr_assert_eq(mkdir(srv_path("state"), 0755), 0);
	app_port = srv_free_port();
	app = srv_start_echo_fcgi(app_port, NULL, 8, srv_path("count"));
}

static void
write_rules(const char *rules)
{
	char appport[16];
	snprintf(appport, sizeof(appport), "%d", app_port);
	char echo_cgi[SRV_PATH_MAX];
	srv_built("tests/apps/echo_cgi", echo_cgi);
	/* srv_write_subst wants every key in the template: @CGI@ last */
	const char *pairs[] = { "@DIR@", srv_dir, "@APP@", appport,
				strstr(rules, "@CGI@") ? "@CGI@" : NULL, echo_cgi, NULL };

	srv_write_subst("site.rules", rules, pairs, 0644);
}

/* examples/NAME with "Define KEY VALUE" lines replaced (defines: KEY,
 * VALUE, ..., NULL), started. */
static void
start_apache(const char *example, const char *const *defines)
{
	apache = srv_start_apache(example, defines, port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

static void
setup_proxy(void)
{
	char listen[64], state[SRV_PATH_MAX], sock[SRV_PATH_MAX];

	common_setup();
	write_rules(proxy_rules);
	rg = srv_start_rategate(srv_path("site.rules"), srv_path("rg.sock"), 0,
				srv_path("rategate.log"), srv_path("rategate.out"));
	uid_t uid;
	gid_t gid;
	srv_www_data(&uid, &gid);
	cr_assert_eq(chown(srv_path("rg.sock"), (uid_t)-1, gid), 0);

	port = srv_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(sock, sizeof(sock), "%s", srv_path("rg.sock"));
	const char *defines[] = { "RG_STATE", state, "RG_LISTEN", listen, "RG_SOCKET", sock,
				  NULL };
	start_apache("apache-proxy-fcgi.conf", defines);
}

static void
setup_fcgid(void)
{
	char listen[64], state[SRV_PATH_MAX], docroot[SRV_PATH_MAX],
		rules[SRV_PATH_MAX], asis[SRV_PATH_MAX];

	common_setup();

	/* mod_fcgid's sockets and the store: written by www-data */
	cr_assert_eq(mkdir(srv_path("state/fcgid"), 0755), 0);
	srv_chown_www(srv_path("state/fcgid"));
	cr_assert_eq(mkdir(srv_path("shm"), 0755), 0);
	srv_chown_www(srv_path("shm"));
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("docroot/static"), 0755), 0);
	srv_write("docroot/static/s.txt", "static file content\n", 0644);
	srv_write("429.asis", asis_429, 0644);
	write_rules(fcgid_rules);

	port = srv_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(docroot, sizeof(docroot), "%s", srv_path("docroot"));
	snprintf(rules, sizeof(rules), "%s", srv_path("site.rules"));
	snprintf(asis, sizeof(asis), "%s", srv_path("429.asis"));
	const char *defines[] = { "RG_STATE", state, "RG_DOCROOT", docroot, "RG_LISTEN", listen,
				  "RG_RATEGATE", srv_rategate(), "RG_RULES", rules, "RG_429", asis,
				  NULL };
	start_apache("apache-fcgid.conf", defines);
}

static void
teardown(void)
{
	unsetenv("ECHO_FCGI_COUNT_FILE");
	srv_cleanup();
}

static void
get(const char *path, const char *const *hdrs, struct srv_resp *r)
{
	srv_http_at("GET", base, path, hdrs, r);
}

/* The checks every 429 from rategate passes (Apache keeps rategate's one
 * Retry-After). */
static void
expect_429(const struct srv_resp *r, const char *limit, const char *body)
{
	srv_expect_429(r, limit, body, logs);
	cr_expect_eq(srv_header_count(r, "Retry-After"), 1);
}

Test(apache_responder, proxy_fcgi_passes_requests_intact,
     .fini = teardown, .timeout = 60)
{
	char v[128], url[SRV_PATH_MAX], fnv[17], line[64];
	struct srv_resp r;
	const char *hdrs[] = { "X-Test: hello  world", NULL };

	setup_proxy();
	get("/upload/x?a=1&b=two%20words", hdrs, &r);
	cr_assert_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
	srv_expect_line(&r, "method=GET\nquery=a=1&b=two%20words\nuri=/upload/x?a=1&b=two%20words\n");
	srv_expect_line(&r, "http_x_test=hello  world\n");
	srv_expect_line(&r, "rl_client=127.0.0.1\n");
	srv_expect_line(&r, "body_len=0\n");
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "100");
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "99");
	srv_resp_free(&r);

	snprintf(url, sizeof(url), "%s/upload/form?f", base);
	srv_http("POST", url, NULL, &r);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_line(&r, "method=POST\nquery=f\n");
	srv_expect_line(&r, "content_length=7\n");
	srv_fnv("a=1&b=2", 7, fnv);
	snprintf(line, sizeof(line), "body_len=7\nbody_fnv=%s\n", fnv);
	srv_expect_line(&r, line);
	srv_resp_free(&r);

	srv_expect_upload(base, "PUT", "/upload/big?put", 4u << 20, 0, 0, logs);
	srv_expect_upload(base, "POST", "/upload/chunked", 1u << 20, 1, 0, logs);
	cr_expect_eq(app_calls(), 4);

	/* A chunked body has no length: max-body is counted while it
	 * streams (so the application sees the request begin), and the
	 * client gets rategate's 413, not the application's answer. */
	char *big = srv_noise(100000, 56);
	snprintf(url, sizeof(url), "%s/small/x", base);
	srv_http_body("POST", url, NULL, big, 100000, 1, &r);
	free(big);
	cr_expect_eq(r.status, 413, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(r.body, "Content Too Large: the request body exceeds this path's max-body\n");
	srv_resp_free(&r);
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect_not_null(strstr(log ? log : "", "level=info event=too-large msg=\"POST /small/x from 127.0.0.1 -> "),
			   "%s", log);
	cr_expect_null(strstr(log ? log : "", "upstream-error"), "%s", log);
	free(log);
	/* counted as the too-large denial it is, not as allowed (it was) */
	get("/rategate-status", NULL, &r);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_not_null(strstr(r.body, "\"too_large\":1"), "%s", r.body);
	cr_expect_not_null(strstr(r.body, "\"allowed\":4,"), "%s", r.body);
	srv_resp_free(&r);
}

Test(apache_responder, proxy_fcgi_429_never_reaches_the_app,
     .fini = teardown, .timeout = 30)
{
	char v[16], want[16];
	struct srv_resp r;

	setup_proxy();
	for (int i = 0; i < 3; i++) {
		get("/app/page", NULL, &r);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
		snprintf(want, sizeof(want), "%d", 2 - i);
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), want);
		srv_resp_free(&r);
	}
	cr_assert_eq(app_calls(), 3);

	get("/app/other?x=1", NULL, &r);
	expect_429(&r, "3", "app: slow down\n");
	srv_resp_free(&r);

	char *body = srv_noise(1u << 20, 56), url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/app/upload", base);
	srv_http_body("POST", url, NULL, body, 1u << 20, 0, &r);
	free(body);
	expect_429(&r, "3", "app: slow down\n");
	srv_resp_free(&r);

	cr_expect_eq(app_calls(), 3, "a denied request reached the app");
	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/app/** origin=rule limit=3/minute remaining=0 path=/app/other method=GET");
	cr_expect_eq(srv_stop(apache, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", logs());
}

/* Occurrences of needle in the ErrorLog (where mod_fcgid sends
 * rategate's standard error). */
static int
errlog_count(const char *needle)
{
	return srv_count_in_file(srv_path("state/error.log"), needle);
}

Test(apache_responder, fcgid_spawned_processes_share_one_count,
     .fini = teardown, .timeout = 90)
{
	setup_fcgid();
	/* A body through mod_fcgid and rategate (FcgidMaxRequestLen is
	 * raised in the example: mod_fcgid's default is 128 KiB). */
	srv_expect_upload(base, "POST", "/app/upload/x?y", 1u << 20, 0, 0, logs);
	cr_assert_eq(app_calls(), 1);

	/* 8 requests at once, each 400 ms in the app: mod_fcgid runs one
	 * request per process and starts more (FcgidMaxProcessesPerClass 4),
	 * and every rategate process counts in the one shm store. */
	char urls[8][SRV_PATH_MAX];
	const char *u[8];
	long st[8];
	for (int i = 0; i < 8; i++) {
		snprintf(urls[i], sizeof(urls[i]), "%s/app/p%d?sleep=400", base, i);
		u[i] = urls[i];
	}
	cr_assert_eq(srv_http_parallel(u, 8, st), 8, "%s", logs());
	int ok = 0, denied = 0;
	for (int i = 0; i < 8; i++) {
		ok += st[i] == 200;
		denied += st[i] == 429;
	}
	cr_expect_eq(ok, 5, "%d allowed of 8 against 5/minute\n%s", ok, logs());
	cr_expect_eq(denied, 3, "%d denied of 8\n%s", denied, logs());
	cr_expect_eq(app_calls(), 6, "the app saw %d requests, not 1 + 5", app_calls());
	int procs = errlog_count("event=start ");
	cr_log_info("mod_fcgid started %d rategate processes", procs);
	cr_expect_geq(procs, 2, "mod_fcgid started only %d rategate process(es): the test did not show several processes sharing the store\n%s",
		      procs, logs());
	cr_expect_eq(errlog_count("event=deny status=429"), 3, "%s", logs());
	/* every process on the inherited socket */
	cr_expect_eq(errlog_count("on the inherited socket (fd 0)"), procs, "%s", logs());

	struct srv_resp r;
	get("/app/after", NULL, &r);
	expect_429(&r, "5", "app: slow down\n");
	srv_resp_free(&r);
	cr_expect_eq(app_calls(), 6);
	cr_expect_eq(srv_stop(apache, 15), 0);
	/* Apache stopped them: each drained and said so (and, in the
	 * sanitizer build, found nothing) */
	cr_expect_eq(errlog_count("event=stop msg=stopped"), procs, "%s", logs());
	cr_expect_eq(errlog_count("Sanitizer"), 0, "%s", logs());
}

/* GET /app/cgi/x?hang (echo_cgi, which writes its pid and its child's to
 * the X-Pid-File, then sleeps), in a thread. */
static void *
fcgid_hang_get(void *arg)
{
	const char *hdr = arg;
	char rq[SRV_PATH_MAX + 128];
	size_t got = 0;

	snprintf(rq, sizeof(rq), "GET /app/cgi/x?hang HTTP/1.1\r\nHost: x\r\n%s\r\nConnection: close\r\n\r\n",
		 hdr);
	free(srv_raw(port, rq, strlen(rq), 30, &got));
	return NULL;
}

/* The parent of pid (from /proc/PID/stat), or 0. */
static pid_t
parent_of(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	long ppid = 0;
	if (p == NULL || sscanf(p + 1, " %*c %ld", &ppid) != 1)
		return 0;
	return (pid_t)ppid;
}

/* A rategate process that mod_fcgid kills outright (SIGKILL: it does when
 * a request passes FcgidBusyTimeout, and on a stop that takes too long)
 * while a CGI script runs behind it: the kernel kills the script too
 * (parent-death signal), so nothing is left behind.  (What the script
 * started itself is not covered: documented.) */
Test(apache_responder, fcgid_killed_rategate_leaves_no_cgi_script_behind,
     .fini = teardown, .timeout = 90)
{
	char hdr[SRV_PATH_MAX + 32];
	pthread_t th;
	long script = 0, child = 0;

	setup_fcgid();
	cr_assert_eq(mkdir(srv_path("pids"), 0755), 0);
	srv_chown_www(srv_path("pids"));
	snprintf(hdr, sizeof(hdr), "X-Pid-File: %s", srv_path("pids/hang"));
	cr_assert_eq(pthread_create(&th, NULL, fcgid_hang_get, hdr), 0);
	for (int i = 0; i < 500 && script == 0; i++) {
		char *p = srv_read(srv_path("pids/hang"));
		if (p == NULL || sscanf(p, "%ld %ld", &script, &child) != 2)
			script = 0;
		free(p);
		if (script == 0)
			srv_sleep_ms(20);
	}
	cr_assert(script > 0 && child > 0, "the script wrote no pid file\n%s", logs());
	pid_t gw = parent_of((pid_t)script);
	cr_assert(gw > 1 && srv_alive(gw), "no parent for script %ld", script);
	cr_assert_eq(kill(gw, SIGKILL), 0);
	int i;
	for (i = 0; i < 100 && srv_alive((pid_t)script); i++)
		srv_sleep_ms(20);
	cr_expect(!srv_alive((pid_t)script), "the script %ld outlived its rategate %ld\n%s",
		  script, (long)gw, logs());
	kill((pid_t)child, SIGKILL);
	if (srv_alive((pid_t)script))
		kill((pid_t)script, SIGKILL);
	srv_stop(apache, 30);
	pthread_join(th, NULL);
}

Test(apache_responder, fcgid_access_checker_with_the_401_workaround,
     .fini = teardown, .timeout = 60)
{
	char v[128];
	struct srv_resp r;

	setup_fcgid();
	for (int i = 0; i < 2; i++) {
		get("/static/s.txt", NULL, &r);
		cr_assert_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
		cr_expect_str_eq(r.body, "static file content\n");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "2");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)),
				 i == 0 ? "1" : "0");
		/* mod_fcgid passes an access checker's Variable-* headers on
		 * to the client (documented in the example) */
		cr_expect_str_eq(srv_header(&r, "Variable-RL_CLIENT", v, sizeof(v)), "127.0.0.1");
		srv_resp_free(&r);
	}
	for (int i = 0; i < 2; i++) {
		get("/static/s.txt", NULL, &r);
		/* mod_fcgid made it a 401; ErrorDocument 401 -> the .asis 429,
		 * which keeps rategate's headers */
		expect_429(&r, "2", "Too Many Requests: rate limit exceeded\n");
		cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 1);
		cr_expect_eq(srv_header_count(&r, "WWW-Authenticate"), 0);
		srv_resp_free(&r);
	}
	/* the checker runs before Apache looks for the file: a missing
	 * one under the spent budget of /static/ is a 429 too */
	get("/static/none.txt", NULL, &r);
	cr_expect_eq(r.status, 429);
	srv_resp_free(&r);
	cr_expect_eq(errlog_count("event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/static/**"),
		     3, "%s", logs());
	cr_expect_eq(srv_stop(apache, 15), 0);
	cr_expect_eq(errlog_count("Sanitizer"), 0, "%s", logs());
}
