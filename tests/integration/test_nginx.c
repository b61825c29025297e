/*
 * test_nginx.c - rategate behind a real nginx 1.22, in the two set-ups of
 * examples/nginx-responder.conf and examples/nginx-auth-request.conf (run
 * with their paths and ports replaced):
 *
 *   responder     nginx fastcgi_pass -> rategate (responder, unix socket)
 *                 -> tests/apps/echo_fcgi (upstream fcgi+unix://).
 *                 Allowed requests reach the app with method, query,
 *                 headers and body intact (a 10 MiB upload, a chunked
 *                 one); denials are 429 Too Many Requests (nginx keeps
 *                 the reason phrase rategate writes) with Retry-After and
 *                 X-RateLimit-*, and never reach the app (its call
 *                 counter); two X-Forwarded-For lines, which nginx 1.22
 *                 passes as two params, are read as one list.  With
 *                 fastcgi_keep_conn and a keepalive pool larger than
 *                 rategate's workers no request is left waiting, and
 *                 rategate still stops at once.
 *   auth_request  nginx asks rategate (RATEGATE_ROLE auth-request) before
 *                 serving a static file: 200 with the file and
 *                 X-RateLimit-*, or 403 that nginx's error_page turns
 *                 into the client's 429 with Retry-After and X-RateLimit-*.
 *
 * As root, nginx's workers run as www-data: the state directory is given
 * to www-data and rategate's socket (mode 0660) to its group, as the
 * examples say.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"

static const char responder_rules[] =
	"# nginx responder test\n"
	"storage          shm:@DIR@/store?size=8M\n"
	"headers          on\n"
	"trusted-proxies  1\n"
	"upstream         fcgi+unix://@DIR@/app.sock\n"
	"/app/**          3/minute   message=\"app: slow down\"\n"
	"/xff             1/minute\n"
	"/upload/**       100/minute\n";

static const char auth_rules[] =
	"# nginx auth_request test\n"
	"storage          shm:@DIR@/store?size=8M\n"
	"headers          on\n"
	"/static.txt      2/minute\n"
	"/q.txt           1/minute   key=query:user\n"
	"/                3/minute\n";

static int port;
static pid_t nginx, rg, app;
static char base[64];

static const char *
logs(void)
{
	static const char *const files[] = { "nginx error.log", "state/error.log",
					     "rategate log", "rategate.log",
					     "", "rategate.out", NULL };

	return srv_logs(files);
}

/* How many requests reached echo_fcgi (its ECHO_FCGI_COUNT_FILE). */
static int
app_calls(void)
{
	return srv_read_int(srv_path("count"));
}

/* rategate on a unix socket in the test directory, with rules (@DIR@
 * replaced); the socket's group becomes www-data's. */
static void
start_rategate(const char *rules, int workers)
{
	const char *pairs[] = { "@DIR@", srv_dir, NULL };

	srv_write_subst("site.rules", rules, pairs, 0644);
	rg = srv_start_rategate(srv_path("site.rules"), srv_path("rg.sock"),
				workers ? workers : 4, srv_path("rategate.log"),
				srv_path("rategate.out"));
	if (geteuid() == 0) {
		uid_t uid;
		gid_t gid;
		srv_www_data(&uid, &gid);
		cr_assert_eq(chown(srv_path("rg.sock"), (uid_t)-1, gid), 0);
	}
}

/* nginx from examples/NAME with its paths and port replaced, then the
 * pairs of extra (NULL or NULL-terminated). */
static void
start_nginx(const char *example, const char *listen_default,
	    const char *const *extra)
{
	const char *bin = srv_need("nginx", "nginx");
	char rel[128], listen[64];

	cr_assert_eq(mkdir(srv_path("state"), 0755), 0);
	if (geteuid() == 0)
		srv_chown_www(srv_path("state"));
	port = srv_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(rel, sizeof(rel), "examples/%s", example);
	char *conf = srv_source(rel);
	char state[SRV_PATH_MAX], sock[SRV_PATH_MAX], docroot[SRV_PATH_MAX];
	snprintf(state, sizeof(state), "%s", srv_path("state"));
	snprintf(sock, sizeof(sock), "%s", srv_path("rg.sock"));
	snprintf(docroot, sizeof(docroot), "%s", srv_path("docroot"));
	const char *pairs[] = { "/run/rategate-nginx", state,
				"/run/rategate/rategate.sock", sock,
				listen_default, listen, NULL };
	char *text = srv_subst(conf, pairs);
	free(conf);
	if (strstr(text, "/var/www/html") != NULL) {
		const char *p2[] = { "/var/www/html", docroot, NULL };
		char *t2 = srv_subst(text, p2);
		free(text);
		text = t2;
	}
	if (extra != NULL) {
		char *t3 = srv_subst(text, extra);
		free(text);
		text = t3;
	}
	srv_write("nginx.conf", text, 0644);
	free(text);
	char *argv[] = { (char *)bin, "-p", state, "-e", (char *)srv_path("state/error.log"),
			 "-c", (char *)srv_path("nginx.conf"), "-g", "daemon off;", NULL };
	nginx = srv_spawn(argv, srv_path("nginx.out"));
	srv_wait_ready(nginx, port, NULL, srv_path("nginx.out"), 15);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
}

static void
start_responder(int workers, const char *const *extra)
{
	app = srv_start_echo_fcgi(0, srv_path("app.sock"), 4, srv_path("count"));
	start_rategate(responder_rules, workers);
	start_nginx("nginx-responder.conf", "127.0.0.1:8082", extra);
}

static void
setup_responder(void)
{
	srv_setup();
	start_responder(0, NULL);
}

static void
setup_auth(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	srv_write("docroot/static.txt", "static file content\n", 0644);
	srv_write("docroot/q.txt", "q\n", 0644);
	srv_write("docroot/index.html", "index\n", 0644);
	start_rategate(auth_rules, 0);
	start_nginx("nginx-auth-request.conf", "127.0.0.1:8083", NULL);
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

static void
send_body(const char *method, const char *path, const void *body, size_t len,
	  int chunked, struct srv_resp *r)
{
	char url[SRV_PATH_MAX];
	const char *hdrs[] = { "X-Test: upload", NULL };

	snprintf(url, sizeof(url), "%s%s", base, path);
	srv_http_body(method, url, hdrs, body, len, chunked, r);
}

/* GET path until it is not 429 (for up to 2 s): its status, and in *took
 * the seconds it took. */
static long
status_once_free(const char *path, double *took)
{
	struct srv_resp r;
	long st = 0;
	double t0 = srv_now();

	for (int i = 0; i < 100; i++) {
		get(path, NULL, &r);
		st = r.status;
		srv_resp_free(&r);
		if (st != 429)
			break;
		srv_sleep_ms(20);
	}
	*took = srv_now() - t0;
	return st;
}

/* A client that gives up: nginx closes its connection to rategate
 * (fastcgi_ignore_client_abort off, the default), and rategate stops the
 * application at once -- the CGI script killed with its child, the
 * FastCGI request dropped -- gives the concurrency slot back and logs
 * client-gone, instead of holding both until upstream-timeout (30 s). */
Test(nginx, client_giving_up_stops_the_app_and_frees_the_slot,
     .init = srv_setup, .fini = teardown, .timeout = 40)
{
	char cgi[SRV_PATH_MAX], rules[2 * SRV_PATH_MAX + 512];
	srv_built("tests/apps/echo_cgi", cgi);
	snprintf(rules, sizeof(rules),
		 "storage          shm:@DIR@/store?size=8M\n"
		 "upstream         fcgi+unix://@DIR@/app.sock\n"
		 "upstream-timeout 30s\n"
		 "/slot            100/minute  concurrency=1  upstream=cgi:%s\n"
		 "/fslot           100/minute  concurrency=1\n", cgi);
	app = srv_start_echo_fcgi(0, srv_path("app.sock"), 4, srv_path("count"));
	start_rategate(rules, 0);
	start_nginx("nginx-responder.conf", "127.0.0.1:8082", NULL);

	char rq[SRV_PATH_MAX + 160];
	size_t got;
	snprintf(rq, sizeof(rq), "GET /slot?hang HTTP/1.1\r\nHost: x\r\nX-Pid-File: %s\r\n"
		 "Connection: close\r\n\r\n", srv_path("hang.pids"));
	free(srv_raw(port, rq, strlen(rq), 0.5, &got));   /* gives up after 0.5 s */
	char *pids = srv_read(srv_path("hang.pids"));
	cr_assert_not_null(pids, "the hanging script wrote no pid file\n%s", logs());
	long script = 0, child = 0;
	cr_assert_eq(sscanf(pids, "%ld %ld", &script, &child), 2, "%s", pids);
	free(pids);
	double t0 = srv_now();
	for (int i = 0; i < 150 && (srv_alive((pid_t)script) || srv_alive((pid_t)child)); i++)
		srv_sleep_ms(20);
	cr_expect(!srv_alive((pid_t)script), "the script %ld outlived its client by %.1f s\n%s",
		  script, srv_now() - t0, logs());
	cr_expect(!srv_alive((pid_t)child), "the script's child %ld survived", child);
	/* the slot comes back once rategate has reaped the script, which
	 * can be a moment after the test sees it dead (under valgrind):
	 * asked again for up to 2 s, far below the 30 s upstream-timeout */
	double took;
	cr_expect_eq(status_once_free("/slot?next", &took), 200, "the slot was not given back\n%s", logs());
	cr_expect_lt(took, 2.5, "the CGI slot came back after %.1f s", took);

	const char *fq = "GET /fslot?sleep=5000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	free(srv_raw(port, fq, strlen(fq), 0.5, &got));
	/* the slot comes back well before the application's 5 s are up */
	cr_expect_eq(status_once_free("/fslot", &took), 200, "the FastCGI slot was not given back\n%s", logs());
	cr_expect_lt(took, 3.0, "the FastCGI slot came back after %.1f s", took);
	char *log = srv_read(srv_path("rategate.log"));
	cr_assert_not_null(log);
	cr_expect_not_null(strstr(log, "event=client-gone msg=\"GET /slot from 127.0.0.1 -> cgi:"), "%s", log);
	cr_expect_not_null(strstr(log, "the web server gave up on the request before the response head was sent"),
			   "%s", log);
	cr_expect_not_null(strstr(log, "event=client-gone msg=\"GET /fslot from 127.0.0.1 -> fcgi+unix://"), "%s", log);
	cr_expect_not_null(strstr(log, "the web server gave up on the request while the application was working on it"),
			   "%s", log);
	free(log);
	int zombies = 0;
	cr_expect_eq(srv_wait_no_children(rg, &zombies, 2), 0, "rategate has children left");
}

Test(nginx, responder_passes_requests_intact,
     .init = setup_responder, .fini = teardown, .timeout = 60)
{
	char v[128];
	struct srv_resp r;
	const char *hdrs[] = { "X-Test: hello  world", NULL };

	get("/upload/x?a=1&b=two%20words", hdrs, &r);
	cr_assert_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
	srv_expect_line(&r, "method=GET\nquery=a=1&b=two%20words\nuri=/upload/x?a=1&b=two%20words\n");
	srv_expect_line(&r, "http_x_test=hello  world\n");
	srv_expect_line(&r, "rl_client=127.0.0.1\n");
	srv_expect_line(&r, "body_len=0\n");
	cr_expect_str_eq(srv_header(&r, "Content-Type", v, sizeof(v)), "text/plain");
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "100");
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "99");
	srv_resp_free(&r);

	/* srv_http's POST sends "a=1&b=2" as a form */
	char url[SRV_PATH_MAX];
	snprintf(url, sizeof(url), "%s/upload/form?f", base);
	srv_http("POST", url, NULL, &r);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	srv_expect_line(&r, "method=POST\nquery=f\n");
	srv_expect_line(&r, "content_length=7\n");
	char fnv[17], line[64];
	srv_fnv("a=1&b=2", 7, fnv);
	snprintf(line, sizeof(line), "body_len=7\nbody_fnv=%s\n", fnv);
	srv_expect_line(&r, line);
	srv_resp_free(&r);

	/* nginx reads a chunked body whole and passes its length */
	srv_expect_upload(base, "PUT", "/upload/big?put", 10u << 20, 0, 1, logs);
	srv_expect_upload(base, "POST", "/upload/chunked", 3u << 20, 1, 1, logs);
	srv_expect_upload(base, "DELETE", "/upload/del", 100, 0, 1, logs);
	cr_expect_eq(app_calls(), 5);
}

Test(nginx, responder_429_never_reaches_the_app,
     .init = setup_responder, .fini = teardown, .timeout = 30)
{
	char v[128];
	struct srv_resp r;

	for (int i = 0; i < 3; i++) {
		get("/app/page", NULL, &r);
		cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
		snprintf(v, sizeof(v), "%d", 2 - i);
		char rem[16];
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", rem, sizeof(rem)), v);
		srv_resp_free(&r);
	}
	cr_assert_eq(app_calls(), 3);

	get("/app/other?x=1", NULL, &r);
	/* nginx writes the reason phrase rategate sends (and none when it
	 * sends none) */
	srv_expect_429(&r, "3", "app: slow down\n", logs);
	srv_resp_free(&r);

	/* a denied upload: rategate answers without reading the body */
	char *body = srv_noise(1u << 20, 56);
	send_body("POST", "/app/upload", body, 1u << 20, 0, &r);
	free(body);
	cr_expect_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests");
	cr_expect_str_eq(r.body, "app: slow down\n");
	srv_resp_free(&r);

	/* JSON when the client prefers it */
	const char *json[] = { "Accept: application/json", NULL };
	get("/app/json", json, &r);
	cr_expect_eq(r.status, 429);
	cr_expect_not_null(strstr(r.body, "{\"error\":\"rate_limited\",\"message\":\"app: slow down\",\"retry_after\":"),
			   "%s", r.body);
	srv_resp_free(&r);

	cr_expect_eq(app_calls(), 3, "a denied request reached the app");
	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/app/** origin=rule limit=3/minute remaining=0 path=/app/other method=GET");

	cr_expect_eq(srv_stop(nginx, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", logs());
}

/* The client rategate saw, from the app's rl_client line. */
static const char *
client_of(const struct srv_resp *r, char *buf, size_t cap)
{
	const char *p = strstr(r->body, "rl_client=");

	if (p == NULL)
		return "(none)";
	p += strlen("rl_client=");
	snprintf(buf, cap, "%.*s", (int)strcspn(p, "\n"), p);
	return buf;
}

Test(nginx, responder_reads_every_x_forwarded_for_line,
     .init = setup_responder, .fini = teardown, .timeout = 30)
{
	char c[64];
	struct srv_resp r;

	/* nginx 1.22 passes these as two HTTP_X_FORWARDED_FOR params; with
	 * trusted-proxies 1 the client is the rightmost entry of them all. */
	const char *two[] = { "X-Forwarded-For: 192.0.2.1", "X-Forwarded-For: 198.51.100.7", NULL };
	get("/upload/xff", two, &r);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(client_of(&r, c, sizeof(c)), "198.51.100.7");
	srv_resp_free(&r);

	const char *three[] = { "X-Forwarded-For: 203.0.113.9, 192.0.2.1",
				"X-Forwarded-For: 192.0.2.2, 198.51.100.8", NULL };
	get("/upload/xff", three, &r);
	cr_assert_eq(r.status, 200);
	cr_expect_str_eq(client_of(&r, c, sizeof(c)), "198.51.100.8");
	srv_resp_free(&r);

	/* The per-client limit (1/minute on /xff) counts that client: */
	get("/xff", two, &r);
	cr_assert_eq(r.status, 200, "%s\n%s", r.status_line, logs());
	cr_expect_str_eq(client_of(&r, c, sizeof(c)), "198.51.100.7");
	srv_resp_free(&r);
	/* ... so the same client alone is over it, */
	const char *right[] = { "X-Forwarded-For: 198.51.100.7", NULL };
	get("/xff", right, &r);
	cr_expect_eq(r.status, 429, "%s", r.body);
	srv_resp_free(&r);
	/* the left entry (what a reader of the first param would count) is
	 * not, */
	const char *left[] = { "X-Forwarded-For: 192.0.2.1", NULL };
	get("/xff", left, &r);
	cr_expect_eq(r.status, 200, "%s", r.body);
	cr_expect_str_eq(client_of(&r, c, sizeof(c)), "192.0.2.1");
	srv_resp_free(&r);
	/* and a client cannot pick its key by sending its own left entries. */
	const char *forged[] = { "X-Forwarded-For: 10.9.9.9", "X-Forwarded-For: 198.51.100.7", NULL };
	get("/xff", forged, &r);
	cr_expect_eq(r.status, 429, "%s", r.body);
	srv_resp_free(&r);

	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=429 client=198.51.100.7 key=\"addr=198.51.100.7\" rule=/xff");
}

Test(nginx, auth_request_serves_the_file_or_429,
     .init = setup_auth, .fini = teardown, .timeout = 30)
{
	char v[128];
	struct srv_resp r;

	for (int i = 0; i < 2; i++) {
		get("/static.txt", NULL, &r);
		cr_assert_eq(r.status, 200, "%s\n%s\n%s", r.status_line, r.body, logs());
		cr_expect_str_eq(r.body, "static file content\n");
		/* copied by auth_request_set + add_header ... always */
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "2");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)),
				 i == 0 ? "1" : "0");
		cr_expect_eq(srv_header_count(&r, "Retry-After"), 0);
		srv_resp_free(&r);
	}

	for (int i = 0; i < 2; i++) {
		get("/static.txt", NULL, &r);
		cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests", "%s", logs());
		cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
		cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "2");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
		cr_assert_not_null(srv_header(&r, "X-RateLimit-Reset", v, sizeof(v)));
		cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "X-RateLimit-Reset %s", v);
		cr_expect_eq(srv_header_count(&r, "Retry-After"), 1);
		cr_expect_eq(srv_header_count(&r, "X-RateLimit-Limit"), 1);
		cr_expect_str_eq(srv_header(&r, "Cache-Control", v, sizeof(v)), "no-store");
		/* the body written in the nginx configuration */
		cr_expect_str_eq(r.body, "Too Many Requests: rate limit exceeded\n");
		srv_resp_free(&r);
	}

	/* The subrequest's QUERY_STRING is empty; rategate reads the
	 * client's query from REQUEST_URI (key=query:user). */
	get("/q.txt?user=alice", NULL, &r);
	cr_expect_eq(r.status, 200, "%s", logs());
	srv_resp_free(&r);
	get("/q.txt?user=alice", NULL, &r);
	cr_expect_eq(r.status, 429);
	srv_resp_free(&r);
	get("/q.txt?user=bob", NULL, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_str_eq(r.body, "q\n");
	srv_resp_free(&r);

	/* Allowed but missing: nginx's own 404, not a 429. */
	get("/missing.txt", NULL, &r);
	cr_expect_eq(r.status, 404);
	srv_resp_free(&r);

	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=403 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/static.txt");
	cr_expect_eq(srv_stop(nginx, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", logs());
}

/* nginx runs auth_request again after an internal redirect (here its
 * default `index index.html`: GET / is served as /index.html), with the
 * client's REQUEST_URI, so rategate decides on "/" both times.  With the
 * example's RATEGATE_DECIDED lines the second run looks and does not count:
 * "/ 3/minute" allows three requests for / with Remaining 2, 1, 0 (two hits
 * each would give 1, then a 429). */
Test(nginx, auth_request_counts_a_redirected_request_once,
     .init = setup_auth, .fini = teardown, .timeout = 30)
{
	char v[128];
	struct srv_resp r;

	for (int i = 0; i < 3; i++) {
		get("/", NULL, &r);
		cr_assert_eq(r.status, 200, "request %d: %s\n%s\n%s", i,
			     r.status_line, r.body, logs());
		cr_expect_str_eq(r.body, "index\n");
		/* the headers of the second run, which looked: current */
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), "3");
		cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)),
				 i == 0 ? "2" : i == 1 ? "1" : "0");
		srv_resp_free(&r);
	}
	get("/", NULL, &r);
	cr_expect_eq(r.status, 429, "%s", logs());
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
	srv_resp_free(&r);
	/* /index.html asked for by name is its own path (no rule): allowed */
	get("/index.html", NULL, &r);
	cr_expect_eq(r.status, 200);
	srv_resp_free(&r);

	/* a client cannot claim the repeat: its header is HTTP_RATEGATE_DECIDED */
	const char *h[] = { "Rategate-Decided: allow", "Rategate-Decision: allow", NULL };
	get("/", h, &r);
	cr_expect_eq(r.status, 429);
	srv_resp_free(&r);

	/* denials are logged with the 403 nginx got */
	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=403 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/ ");
	cr_expect_eq(srv_stop(nginx, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", logs());
}

struct grab { char buf[256]; size_t len; };

static size_t
grab_body(char *p, size_t size, size_t n, void *ud)
{
	struct grab *g = ud;
	size_t len = size * n, room = sizeof(g->buf) - 1 - g->len;

	memcpy(g->buf + g->len, p, len < room ? len : room);
	g->len += len < room ? len : room;
	g->buf[g->len] = '\0';
	return len;
}

/* What the application writes reaches the client as it writes it (found
 * by a review: rategate's answer sat in libfcgi's 8 KiB buffer, so a
 * stream's ticks came out at the end, or at upstream-timeout).  The app
 * writes "tick 0", waits 4 s, writes "tick 1"; nginx does not buffer
 * (fastcgi_buffering off); the client gives up after 2 s, and by then
 * must have "tick 0" and only that. */
Test(nginx, responder_streams_what_the_application_writes,
     .init = srv_setup, .fini = teardown, .timeout = 30)
{
	const char *extra[] = { "fastcgi_pass unix:", "fastcgi_buffering off; fastcgi_pass unix:", NULL };
	start_responder(0, extra);

	char url[128];
	struct grab g = { "", 0 };
	snprintf(url, sizeof(url), "%s/app/stream?trickle=4000", base);
	CURL *c = curl_easy_init();
	cr_assert_not_null(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grab_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &g);
	CURLcode rc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	cr_expect_eq(rc, CURLE_OPERATION_TIMEDOUT, "%s", curl_easy_strerror(rc));
	cr_expect_eq(status, 200, "%s", logs());
	cr_expect_str_eq(g.buf, "tick 0\n", "after 2 s the client had \"%s\"\n%s", g.buf, logs());

	/* and the whole stream when the client waits */
	struct srv_resp r;
	get("/app/stream?trickle=500", NULL, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_str_eq(r.body, "tick 0\ntick 1\n");
	srv_resp_free(&r);
	cr_expect_eq(srv_stop(nginx, 10), 0);
	cr_expect_eq(srv_stop(rg, 10), 0, "rategate after SIGTERM; %s", logs());
}

/* nginx keeping connections (fastcgi_keep_conn on + an upstream keepalive
 * pool) to a rategate with fewer workers than the connections nginx
 * opens: libfcgi would wait on each kept connection for its next request
 * and leave the others unanswered; rategate gives an idle kept connection
 * up when another one is waiting, and when it stops. */
Test(nginx, responder_kept_connections_do_not_starve_the_workers,
     .fini = teardown, .timeout = 40)
{
	char sock[SRV_PATH_MAX + 16];

	srv_setup();
	snprintf(sock, sizeof(sock), "unix:%s", srv_path("rg.sock"));
	const char *extra[] = {
		"    server {\n",
		"    upstream rategate_kept {\n        server @SOCK@;\n        keepalive 8;\n    }\n    server {\n",
		"@SOCK@", sock,
		"fastcgi_pass unix:", "fastcgi_keep_conn on;\n            fastcgi_pass rategate_kept; # ",
		NULL };
	start_responder(2, extra);

	char urls[12][SRV_PATH_MAX];
	const char *u[12];
	long st[12];
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 12; i++) {
			snprintf(urls[i], sizeof(urls[i]), "%s/upload/k%d?sleep=100", base, i);
			u[i] = urls[i];
		}
		cr_assert_eq(srv_http_parallel(u, 12, st), 12, "%s", logs());
		for (int i = 0; i < 12; i++)
			cr_expect_eq(st[i], 200, "request %d of round %d: %ld\n%s", i, round,
				     st[i], logs());
	}
	cr_expect_eq(app_calls(), 24);
	/* rategate stops without waiting for nginx to hang up */
	double t0 = srv_now();
	cr_expect_eq(srv_stop(rg, 10), 0, "%s", logs());
	double took = srv_now() - t0;
	cr_expect_lt(took, 5.0, "rategate took %.1f s to stop with kept connections", took);
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect_null(strstr(log ? log : "", "still in flight"), "%s", log);
	free(log);
}
