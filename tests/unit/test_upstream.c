/*
 * test_upstream.c - gateway/upstream.c against two upstreams:
 *
 *   tests/apps/echo_fcgi (libfcgi; found through $top_builddir, which make
 *   check sets), started on a unix socket in a temporary directory or on a
 *   127.0.0.1 listening socket this test binds and hands over as fd 0, and
 *   stopped by PID: the request seen by a real FastCGI library (params,
 *   httpoxy, extra_env, 10 MiB and chunked bodies), heads re-rendered with
 *   the extra headers, connection reuse, restarts, crashes, timeouts,
 *   max_body, clients that go away;
 *
 *   a fake upstream in this file (a socket and a thread per connection,
 *   written from the FastCGI spec) for what libfcgi never does: records
 *   cut anywhere and padded, long name-value lengths checked byte for byte,
 *   garbage, unknown record types and request ids, END_REQUEST with
 *   OVERLOADED and friends, closes at every stage, a connection that dies
 *   just after it was taken from the pool.
 *
 * Every test ends with the same number of open fds as it started with.
 */
#include <criterion/criterion.h>
#include <valgrind/valgrind.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "memclient.h"
#include "upstream.h"

#define MiB (1024u * 1024)
/* Generous: the whole suite also runs under valgrind. */
#define LONG_MS 60000

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t
fnv(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static int
fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* A buffer of n pseudo-random bytes (malloc'd). */
static char *
random_bytes(size_t n, uint32_t seed)
{
	char *p = malloc(n);
	uint32_t x = seed ? seed : 1;

	cr_assert_not_null(p);
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (char)(x >> 24);
	}
	return p;
}

/* ------------------------------------------------------------------ */
/* An in-memory client (memclient.h)                                  */

/* The response body (after the empty line), or "" without a head. */
static const char *
body_of(const struct mem *m)
{
	const char *b = mem_body(m, NULL);

	return b ? b : "";
}

/* The value of a "name=value" line of the body, in a static buffer; NULL
 * when absent. */
static const char *
field(const struct mem *m, const char *name)
{
	static char val[256];

	return mem_field(m, name, val, sizeof(val));
}

static void
expect_prefix(const struct mem *m, const char *prefix)
{
	cr_expect(m->out != NULL && strncmp(m->out, prefix, strlen(prefix)) == 0,
		  "expected a start of\n%s\ngot\n%s", prefix, m->out ? m->out : "(nothing)");
}

static void
expect_field(const struct mem *m, const char *name, const char *want)
{
	const char *v = field(m, name);

	cr_expect_not_null(v, "no %s= in: %s", name, m->out ? m->out : "(nothing)");
	if (v != NULL)
		cr_expect_str_eq(v, want, "%s: got \"%s\", want \"%s\"", name, v, want);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */

struct req {
	struct rl_param p[32];
	size_t n;
	struct proxy_spec spec;
	struct mem m;
	struct proxy_client c;
	struct proxy_result res;
	int ret;
};

static void
req_init(struct req *r, const char *method, const char *query)
{
	memset(r, 0, sizeof(*r));
	mem_init(&r->m, NULL, 0);
	r->spec.timeout_ms = LONG_MS;
	/* what the gateway names the request with in stderr lines */
	r->spec.what = "GET /t from 192.0.2.1 -> app";
	r->c = mem_client(&r->m);
	if (method != NULL) {
		r->p[r->n++] = (struct rl_param){ "REQUEST_METHOD", 14, method, strlen(method) };
		r->p[r->n++] = (struct rl_param){ "QUERY_STRING", 12, query, strlen(query) };
	}
}

static void
req_param(struct req *r, const char *name, const char *value)
{
	cr_assert(r->n < sizeof(r->p) / sizeof(r->p[0]));
	r->p[r->n++] = (struct rl_param){ name, strlen(name), value, strlen(value) };
}

static int
req_run(struct upstream *u, struct req *r)
{
	mem_reset(&r->m);
	r->m.body = NULL;
	r->ret = upstream_run(u, r->p, r->n, &r->spec, &r->c, &r->res);
	return r->ret;
}

/* A GET with query q. */
static struct req *
get(struct upstream *u, const char *q)
{
	static struct req r;

	req_init(&r, "GET", q);
	req_run(u, &r);
	return &r;
}

static void
req_free(struct req *r)
{
	mem_reset(&r->m);
}

static void
stats(struct upstream *u, uint64_t *c, uint64_t *r, uint64_t *f)
{
	upstream_stats(u, c, r, f);
}

/* ------------------------------------------------------------------ */
/* echo_fcgi processes                                                 */

static char dir[256];
static pid_t pids[8];
static int fds_at_start;

static const char *
path_in(const char *name)
{
	static char buf[4][320];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

static const char *
echo_path(void)
{
	static char buf[512];
	const char *b = getenv("top_builddir");

	snprintf(buf, sizeof(buf), "%s/tests/apps/echo_fcgi", b && *b ? b : ".");
	cr_assert(access(buf, X_OK) == 0, "%s not built (make check builds it)", buf);
	return buf;
}

static void
remember(pid_t pid)
{
	for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++)
		if (pids[i] == 0) {
			pids[i] = pid;
			return;
		}
	cr_assert_fail("too many processes");
}

/* Start echo_fcgi with arg (a socket) or, arg NULL, on listening socket
 * lfd as its fd 0. */
static pid_t
app_start(const char *arg, int lfd, const char *env)
{
	const char *prog = echo_path();
	const char *log = path_in("echo.log");
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		int in = lfd >= 0 ? lfd : open("/dev/null", O_RDONLY);
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(126);
		if (env != NULL)
			putenv((char *)env);
		setpgid(0, 0);
		execl(prog, prog, "-t", "8", arg, (char *)NULL);
		_exit(127);
	}
	remember(pid);
	return pid;
}

/* Wait until the unix socket accepts a connection. */
static void
wait_unix(const char *path, pid_t pid)
{
	int64_t end = clock_mono_ms() + 30000;

	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
		int r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
		close(fd);
		if (r == 0)
			return;
		int st;
		cr_assert(waitpid(pid, &st, WNOHANG) == 0, "echo_fcgi exited early");
		cr_assert(clock_mono_ms() < end, "echo_fcgi did not listen on %s", path);
		sleep_ms(20);
	}
}

static void
app_stop(pid_t pid)
{
	int st;

	kill(pid, SIGTERM);
	for (int i = 0; i < 500; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			goto done;
		sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
done:
	for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++)
		if (pids[i] == pid)
			pids[i] = 0;
}

/* Reap an app that is expected to have died (crash). */
static void
app_reap(pid_t pid)
{
	int st;

	for (int i = 0; i < 3000; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			for (size_t k = 0; k < sizeof(pids) / sizeof(pids[0]); k++)
				if (pids[k] == pid)
					pids[k] = 0;
			return;
		}
		sleep_ms(10);
	}
	cr_assert_fail("echo_fcgi %ld did not exit", (long)pid);
}

/* An echo_fcgi on a unix socket in dir; *u its upstream. */
static pid_t
unix_app(struct upstream **u)
{
	char err[256], uri[320];
	const char *sock = path_in("echo.sock");
	pid_t pid = app_start(sock, -1, NULL);

	wait_unix(sock, pid);
	if (u != NULL) {
		snprintf(uri, sizeof(uri), "fcgi+unix://%s", sock);
		*u = upstream_new(uri, err, sizeof(err));
		cr_assert_not_null(*u, "%s", err);
	}
	return pid;
}

/* A listening socket on 127.0.0.1 (backlog n; no listen when n < 0). */
static int
tcp_listener(int backlog, int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0);
	cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	if (backlog >= 0)
		cr_assert(listen(fd, backlog) == 0);
	cr_assert(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static struct upstream *
tcp_upstream(int port)
{
	char uri[64], err[256];

	snprintf(uri, sizeof(uri), "fcgi://127.0.0.1:%d", port);
	struct upstream *u = upstream_new(uri, err, sizeof(err));
	cr_assert_not_null(u, "%s", err);
	return u;
}

/* echo_fcgi on a 127.0.0.1 socket the test binds and hands over as fd 0
 * (how web servers start FastCGI programs).  *lfd stays the test's. */
static pid_t
tcp_app(struct upstream **u, int *lfd)
{
	int port;

	*lfd = tcp_listener(128, &port);
	/* The child gets it as fd 0 without close-on-exec (dup2 clears it). */
	pid_t pid = app_start(NULL, *lfd, NULL);
	*u = tcp_upstream(port);
	return pid;
}

static void
setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/rg-upstream-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	memset(pids, 0, sizeof(pids));
	signal(SIGPIPE, SIG_IGN);
	fds_at_start = fd_count();
}

static void
teardown(void)
{
	for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++)
		if (pids[i] > 0)
			app_stop(pids[i]);
	DIR *d = opendir(dir);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, ".."))
				unlink(path_in(e->d_name));
		closedir(d);
	}
	rmdir(dir);
}

/* Call at the end of a test, after everything it opened is closed. */
static void
expect_no_fd_leak(void)
{
	cr_expect_eq(fd_count(), fds_at_start, "fds: %d at the start, %d now",
		     fds_at_start, fd_count());
}

TestSuite(upstream, .init = setup, .fini = teardown, .timeout = 300);

/* ------------------------------------------------------------------ */
/* URIs                                                                */

Test(upstream, uris)
{
	static const struct {
		const char *uri, *name_or_err;
		int ok;
		int line;
	} cases[] = {
		{ "fcgi://127.0.0.1:9000", "fcgi://127.0.0.1:9000", 1, __LINE__ },
		{ "fcgi://127.0.0.1:9000/", "fcgi://127.0.0.1:9000", 1, __LINE__ },
		{ "fcgi://[::1]:9000", "fcgi://[::1]:9000", 1, __LINE__ },
		{ "fcgi://localhost:9000", "fcgi://localhost:9000", 1, __LINE__ },
		{ "fcgi+unix:///run/app.sock", "fcgi+unix:///run/app.sock", 1, __LINE__ },
		{ "unix:/run/app.sock", "fcgi+unix:///run/app.sock", 1, __LINE__ },
		{ "/run/app.sock", "fcgi+unix:///run/app.sock", 1, __LINE__ },
		{ "http://127.0.0.1:9000", "upstream \"http://127.0.0.1:9000\": expected fcgi://HOST:PORT, fcgi+unix:///PATH, unix:/PATH or /PATH", 0, __LINE__ },
		{ "", "upstream \"\": expected fcgi://HOST:PORT, fcgi+unix:///PATH, unix:/PATH or /PATH", 0, __LINE__ },
		{ "fcgi://127.0.0.1", "upstream \"fcgi://127.0.0.1\": expected \":PORT\" after the host", 0, __LINE__ },
		{ "fcgi://127.0.0.1:0", "upstream \"fcgi://127.0.0.1:0\": expected a port from 1 to 65535", 0, __LINE__ },
		{ "fcgi://127.0.0.1:65536", "upstream \"fcgi://127.0.0.1:65536\": expected a port from 1 to 65535", 0, __LINE__ },
		{ "fcgi://127.0.0.1:90x", "upstream \"fcgi://127.0.0.1:90x\": expected a port from 1 to 65535", 0, __LINE__ },
		{ "fcgi://127.0.0.1:9000/x", "upstream \"fcgi://127.0.0.1:9000/x\": expected a port from 1 to 65535", 0, __LINE__ },
		{ "fcgi://:9000", "upstream \"fcgi://:9000\": empty host", 0, __LINE__ },
		{ "fcgi://::1:9000", "upstream \"fcgi://::1:9000\": an IPv6 address needs brackets ([::1]:9000)", 0, __LINE__ },
		{ "fcgi://[::1:9000", "upstream \"fcgi://[::1:9000\": missing ']' after an IPv6 address", 0, __LINE__ },
		{ "fcgi://[::1]", "upstream \"fcgi://[::1]\": expected \":PORT\" after the address", 0, __LINE__ },
		{ "fcgi://[zz]:9000", "upstream \"fcgi://[zz]:9000\": cannot resolve \"zz\": ", 0, __LINE__ },
		{ "fcgi+unix://run/app.sock", "upstream \"fcgi+unix://run/app.sock\": expected an absolute socket path", 0, __LINE__ },
		{ "unix:", "upstream \"unix:\": expected an absolute socket path", 0, __LINE__ },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		struct upstream *u = upstream_new(cases[i].uri, err, sizeof(err));
		if (cases[i].ok) {
			cr_expect_not_null(u, "line %d: %s", cases[i].line, err);
			if (u != NULL)
				cr_expect_str_eq(upstream_name(u), cases[i].name_or_err,
						 "line %d", cases[i].line);
		} else {
			cr_expect_null(u, "line %d", cases[i].line);
			cr_expect_eq(strncmp(err, cases[i].name_or_err,
					     strlen(cases[i].name_or_err)), 0,
				     "line %d: %s", cases[i].line, err);
		}
		upstream_free(u);
	}
	char longp[200];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	cr_expect_null(upstream_new(longp, err, sizeof(err)));
	cr_expect(strstr(err, "socket path longer than 107 bytes") != NULL, "%s", err);
	upstream_free(NULL);
	expect_no_fd_leak();
}

/* ------------------------------------------------------------------ */
/* echo_fcgi: the request and the answer                               */

Test(upstream, request_reaches_the_app_and_head_is_rerendered)
{
	struct upstream *u;
	int lfd;
	pid_t pid = tcp_app(&u, &lfd);
	struct req r;
	static const char *const env[] = { "RL_CLIENT=192.0.2.7", "RL_EMPTY=" };
	static const char extra[] = "X-RateLimit-Limit: 5\r\nX-RateLimit-Remaining: 4\r\n";

	req_init(&r, "GET", "a=1&b=%20two&env");
	req_param(&r, "REQUEST_URI", "/app/x?a=1&b=%20two&env");
	req_param(&r, "SCRIPT_NAME", "/app/x");
	req_param(&r, "HTTP_X_TEST", "hello world");
	req_param(&r, "HTTP_PROXY", "http://evil.example/");
	req_param(&r, "RL_CLIENT", "forged-by-the-request");
	r.spec.extra_env = env;
	r.spec.nextra_env = 2;
	r.spec.extra_headers = extra;
	r.spec.extra_len = strlen(extra);
	cr_assert_eq(req_run(u, &r), 0, "%s", r.res.error);
	cr_expect_str_eq(r.res.error, "");
	cr_expect_eq(r.res.status, 200);
	cr_expect(r.res.head_sent);
	cr_expect_not(r.res.client_gone);
	expect_prefix(&r.m, "Status: 200 OK\r\nContent-Type: text/plain\r\n"
		      "X-RateLimit-Limit: 5\r\nX-RateLimit-Remaining: 4\r\n\r\nmethod=GET\n");
	cr_expect_eq(r.res.body_out, strlen(body_of(&r.m)));
	expect_field(&r.m, "method", "GET");
	expect_field(&r.m, "query", "a=1&b=%20two&env");
	expect_field(&r.m, "uri", "/app/x?a=1&b=%20two&env");
	expect_field(&r.m, "script_name", "/app/x");
	expect_field(&r.m, "http_x_test", "hello world");
	expect_field(&r.m, "rl_client", "192.0.2.7");
	expect_field(&r.m, "http_proxy", "absent");
	expect_field(&r.m, "content_length", "(unset)");
	expect_field(&r.m, "calls", "1");
	expect_field(&r.m, "body_len", "0");
	/* Only our RL_CLIENT, once; RL_EMPTY with an empty value. */
	cr_expect(strstr(body_of(&r.m), "env RL_CLIENT=192.0.2.7\n") != NULL);
	cr_expect(strstr(body_of(&r.m), "forged") == NULL);
	cr_expect(strstr(body_of(&r.m), "env RL_EMPTY=\n") != NULL);
	cr_expect(strstr(body_of(&r.m), "HTTP_PROXY") == NULL);
	req_free(&r);

	upstream_free(u);
	app_stop(pid);
	close(lfd);
	expect_no_fd_leak();
}

Test(upstream, status_and_headers_pass_through)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);

	struct req *r = get(u, "status=401&header=WWW-Authenticate:Basic+realm%3D%22x%22");
	cr_expect_eq(r->ret, 0);
	cr_expect_eq(r->res.status, 401);
	cr_expect_str_eq(r->res.error, "");
	expect_prefix(&r->m, "Status: 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"
		      "Content-Type: text/plain\r\n\r\nmethod=GET\n");
	req_free(r);

	r = get(u, "status=299+Custom+Reason");
	cr_expect_eq(r->res.status, 299);
	expect_prefix(&r->m, "Status: 299 Custom Reason\r\nContent-Type: text/plain\r\n\r\n");
	req_free(r);

	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, connection_reuse)
{
	struct upstream *u;
	int lfd;
	pid_t pid = tcp_app(&u, &lfd);
	uint64_t c, re, f;

	for (int i = 1; i <= 5; i++) {
		struct req *r = get(u, "");
		cr_expect_eq(r->res.status, 200, "%s", r->res.error);
		char want[16];
		snprintf(want, sizeof(want), "%d", i);
		expect_field(&r->m, "calls", want);
		req_free(r);
	}
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 1);
	cr_expect_eq(re, 4);
	cr_expect_eq(f, 0);
	upstream_free(u);
	app_stop(pid);
	close(lfd);
	expect_no_fd_leak();
}

Test(upstream, ten_mib_body_intact)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	size_t n = 10 * MiB;
	char *body = random_bytes(n + 100, 42);
	char cl[32], want[32];
	struct req r;

	snprintf(cl, sizeof(cl), "%zu", n);
	req_init(&r, "POST", "");
	req_param(&r, "CONTENT_LENGTH", cl);
	r.spec.content_length = n;
	r.spec.max_body = n;    /* exactly at the limit is fine */
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n + 100; /* more than CONTENT_LENGTH: never read */
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0, "%s", r.res.error);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	cr_expect_eq(r.res.body_in, n);
	cr_expect_eq(r.m.pos, n, "read past CONTENT_LENGTH");
	expect_field(&r.m, "method", "POST");
	expect_field(&r.m, "content_length", cl);
	expect_field(&r.m, "body_len", cl);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, n));
	expect_field(&r.m, "body_fnv", want);
	req_free(&r);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* upstream-timeout counts only the time the application is waited for:
 * a web server that takes 100 ms for each byte of an 8-byte body (and
 * each write of the answer) does not time out a request with a 300 ms
 * timeout. */
Test(upstream, slow_web_server_is_not_the_applications_time)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	struct req r;

	req_init(&r, "POST", "");
	req_param(&r, "CONTENT_LENGTH", "8");
	r.spec.content_length = 8;
	r.spec.timeout_ms = 300;
	mem_reset(&r.m);
	r.m.body = "abcdefgh";
	r.m.body_len = 8;
	r.m.read_max = 1;
	r.m.delay_ms = 100;
	int64_t t0 = clock_mono_ms();
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	int64_t took = clock_mono_ms() - t0;
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	cr_expect_str_eq(r.res.error, "");
	cr_expect_geq(took, 800, "took %lld ms", (long long)took);
	expect_field(&r.m, "body_len", "8");
	req_free(&r);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, chunked_body_without_content_length)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	size_t n = 300 * 1000 + 7;
	char *body = random_bytes(n, 7);
	char want[32];
	struct req r;

	req_init(&r, "PUT", "");
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.m.read_max = 1000;    /* a client trickling its chunks */
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	cr_expect_eq(r.res.body_in, n);
	expect_field(&r.m, "content_length", "(unset)");
	snprintf(want, sizeof(want), "%zu", n);
	expect_field(&r.m, "body_len", want);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, n));
	expect_field(&r.m, "body_fnv", want);
	/* The connection went back to the pool after a chunked body too. */
	req_free(&r);
	struct req *g = get(u, "");
	cr_expect_eq(g->res.status, 200);
	req_free(g);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 1);
	cr_expect_eq(re, 1);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, big_output_streamed)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);

	struct req *r = get(u, "bigout=3000001");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	cr_expect_eq(r->res.body_out, 3000001);
	const char *b = body_of(&r->m);
	cr_expect_eq(strlen(b), 3000001);
	int ok = 1;
	for (size_t i = 0; i < 3000001 && ok; i++)
		ok = b[i] == (char)('a' + i % 26);
	cr_expect(ok, "body bytes differ");
	req_free(r);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* The app writes 4 MiB before it reads a 4 MiB body: only reading while
 * sending avoids the deadlock. */
Test(upstream, early_writer_then_reader_does_not_deadlock)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	size_t n = 4 * MiB;
	char *body = random_bytes(n, 9);
	char want[32];
	struct req r;

	req_init(&r, "POST", "early-echo&bigout=4194304");
	r.spec.content_length = n;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	snprintf(want, sizeof(want), "%zu", n);
	expect_field(&r.m, "body_len", want);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, n));
	expect_field(&r.m, "body_fnv", want);
	req_free(&r);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* The app answers and ends the request without reading its body: the
 * answer is complete, the connection is not pooled, the next request
 * works. */
Test(upstream, early_answer_without_reading_the_body)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	size_t n = 8 * MiB;
	char *body = random_bytes(n, 3);
	struct req r;

	req_init(&r, "POST", "early&bigout=1000");
	r.spec.content_length = n;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	cr_expect_str_eq(r.res.error, "");
	cr_expect_eq(r.res.body_out, 1000);
	cr_expect_lt(r.res.body_in, n);
	req_free(&r);
	struct req *g = get(u, "");
	cr_expect_eq(g->res.status, 200, "%s", g->res.error);
	req_free(g);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 2, "the early connection was pooled");
	cr_expect_eq(f, 0);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* The first 64 KiB of a file, as a string (malloc'd). */
static char *
read_text_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text = calloc(1, 65536);

	cr_assert_not_null(f, "%s", path);
	cr_assert_not_null(text);
	size_t k = fread(text, 1, 65535, f);
	text[k] = '\0';
	fclose(f);
	return text;
}

Test(upstream, stderr_lines_are_logged)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	char err[256];
	struct log *lg = log_new(path_in("gw.log"), err, sizeof(err));

	cr_assert_not_null(lg, "%s", err);
	upstream_set_log(u, lg);
	struct req *r = get(u, "stderr");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	log_free(lg);
	char *text = read_text_file(path_in("gw.log"));
	cr_expect(strstr(text, "level=warn event=upstream-stderr msg=\"GET /t from 192.0.2.1 -> app: echo_fcgi stderr line\"") != NULL,
		  "%s", text);
	free(text);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* ------------------------------------------------------------------ */
/* echo_fcgi: restarts and failures                                    */

Test(upstream, app_restarted_between_requests)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	uint64_t c, re, f;

	struct req *r = get(u, "");
	cr_expect_eq(r->res.status, 200);
	req_free(r);
	app_stop(pid);
	pid = unix_app(NULL);
	r = get(u, "");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	expect_field(&r->m, "calls", "1");
	req_free(r);
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 2);
	cr_expect_eq(re, 0, "a dead idle connection was used");
	cr_expect_eq(f, 0);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, app_closing_after_end_request_is_not_pooled)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	uint64_t c, re, f;

	for (int i = 0; i < 3; i++) {
		struct req *r = get(u, "nokeep");
		cr_expect_eq(r->res.status, 200, "%s", r->res.error);
		req_free(r);
		/* time for the app's close to arrive (valgrind slows the
		 * app down some 50 times: 20 ms was once too short there) */
		sleep_ms(RUNNING_ON_VALGRIND ? 500 : 20);
	}
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 3);
	cr_expect_eq(re, 0);
	cr_expect_eq(f, 0);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, connect_refused_is_502_at_once)
{
	int port;
	int bound = tcp_listener(-1, &port);    /* bound, not listening */
	struct upstream *u = tcp_upstream(port);
	char want[128];

	int64_t t0 = clock_mono_ms();
	struct req *r = get(u, "");
	cr_expect_lt(clock_mono_ms() - t0, 1000);
	cr_expect_eq(r->ret, 0);
	cr_expect_eq(r->res.status, 502);
	cr_expect(r->res.head_sent);
	snprintf(want, sizeof(want), "connect to fcgi://127.0.0.1:%d: Connection refused", port);
	cr_expect_str_eq(r->res.error, want);
	expect_prefix(&r->m, "Status: 502 Bad Gateway\r\nCache-Control: no-store\r\n");
	cr_expect(strstr(r->m.out, "\r\n\r\nBad Gateway: the application failed to answer\n") != NULL,
		  "%s", r->m.out);
	req_free(r);

	/* JSON when the client asked for it. */
	struct req j;
	req_init(&j, "GET", "");
	j.spec.error_format = RESPOND_JSON;
	req_run(u, &j);
	cr_expect(strstr(j.m.out, "\"error\":\"bad_gateway\"") != NULL, "%s", j.m.out);
	req_free(&j);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(c, 0);
	cr_expect_eq(f, 2);
	upstream_free(u);
	close(bound);

	char err[256];
	u = upstream_new(path_in("nobody.sock"), err, sizeof(err));
	cr_assert_not_null(u, "%s", err);
	r = get(u, "");
	cr_expect_eq(r->res.status, 502);
	snprintf(want, sizeof(want), "connect to fcgi+unix://%s: No such file or directory",
		 path_in("nobody.sock"));
	cr_expect_str_eq(r->res.error, want);
	req_free(r);
	upstream_free(u);
	expect_no_fd_leak();
}

/* A listener whose accept queue is full drops SYNs: connect hangs. */
Test(upstream, connect_timeout_is_502)
{
	int port;
	int lfd = tcp_listener(0, &port);
	int fill[4];
	size_t nfill = 0;

	/* Fill the accept queue (backlog 0 takes one on Linux). */
	for (; nfill < 2; nfill++) {
		fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		connect(fill[nfill], (struct sockaddr *)&a, sizeof(a));
	}
	sleep_ms(100);
	struct upstream *u = tcp_upstream(port);
	struct req r;
	req_init(&r, "GET", "");
	r.spec.timeout_ms = 300;
	int64_t t0 = clock_mono_ms();
	req_run(u, &r);
	int64_t took = clock_mono_ms() - t0;
	cr_expect_eq(r.res.status, 502);
	char want[128];
	snprintf(want, sizeof(want), "connect to fcgi://127.0.0.1:%d: timed out after 300 ms", port);
	cr_expect_str_eq(r.res.error, want);
	cr_expect(took >= 290 && took < 2000, "took %lld ms", (long long)took);
	req_free(&r);
	upstream_free(u);
	for (size_t i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
	expect_no_fd_leak();
}

Test(upstream, slow_app_times_out_with_502)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	struct req r;

	req_init(&r, "GET", "sleep=3000");
	r.spec.timeout_ms = 300;
	int64_t t0 = clock_mono_ms();
	req_run(u, &r);
	int64_t took = clock_mono_ms() - t0;
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 502);
	cr_expect_str_eq(r.res.error, "the application timed out after 300 ms waiting for the response head");
	cr_expect(took >= 290 && took < 2500, "took %lld ms", (long long)took);
	req_free(&r);
	/* The app is still there (its other workers answer). */
	struct req *g = get(u, "");
	cr_expect_eq(g->res.status, 200, "%s", g->res.error);
	req_free(g);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(f, 1);
	cr_expect_eq(c, 2, "the timed-out connection was pooled");
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

static const struct failure {
	const char *query;
	int status, head_sent;
	const char *error;
	int crashes;
	const char *error2;     /* another correct error, or NULL */
} echo_failures[] = {
	/* Whether the app read our empty FCGI_STDIN before it died decides
	 * between a close and a reset. */
	{ "crash", 502, 1, "the application closed the connection without answering", 1,
	  "the application reset the connection without answering (Connection reset by peer)" },
	{ "garbage", 502, 1, "malformed FastCGI record from the application (version 72, expected 1)", 0, NULL },
	/* ... and whether it shut down before we finished sending (slow
	 * under valgrind) between a close and a failed send. */
	{ "close", 502, 1, "the application closed the connection without answering", 0,
	  "the application closed the connection without answering (sending: Broken pipe)" },
	{ "badhead", 502, 1, "malformed response head from the application: malformed header line \"this is not a CGI head\" (expected \"Name: value\")", 0, NULL },
	/* a 1xx Status is no final answer: never passed on as one */
	{ "status=103+Early+Hints", 502, 1, "malformed response head from the application: malformed Status header \"103 Early Hints\" (an interim 1xx status; expected a final code from 200 to 599)", 0, NULL },
	{ "crash-after-head", 200, 1, "the application closed the connection before FCGI_END_REQUEST: response body cut short", 1,
	  "the application reset the connection before FCGI_END_REQUEST (Connection reset by peer): response body cut short" },
};

Test(upstream, app_failures)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	uint64_t c, re, f;

	for (size_t i = 0; i < sizeof(echo_failures) / sizeof(echo_failures[0]); i++) {
		const struct failure *e = &echo_failures[i];
		struct req *r = get(u, e->query);
		cr_expect_eq(r->ret, 0, "%s", e->query);
		cr_expect_eq(r->res.status, e->status, "%s: %d", e->query, r->res.status);
		cr_expect_eq(r->res.head_sent, e->head_sent, "%s", e->query);
		cr_expect(strcmp(r->res.error, e->error) == 0 ||
			  (e->error2 != NULL && strcmp(r->res.error, e->error2) == 0),
			  "%s: got \"%s\"", e->query, r->res.error);
		if (e->status == 502)
			cr_expect_eq(strncmp(r->m.out, "Status: 502 Bad Gateway\r\n", 25), 0,
				     "%s: %s", e->query, r->m.out);
		else
			cr_expect_str_eq(body_of(&r->m), "partial\n", "%s", e->query);
		req_free(r);
		if (e->crashes) {
			app_reap(pid);
			pid = unix_app(NULL);
		}
		/* The next request is fine. */
		r = get(u, "");
		cr_expect_eq(r->res.status, 200, "after %s: %s", e->query, r->res.error);
		req_free(r);
	}
	stats(u, &c, &re, &f);
	cr_expect_eq(f, 6);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, max_body)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	char *body = random_bytes(5000, 5);
	struct req r;

	/* Known too large: 413 at once, the app never sees it. */
	req_init(&r, "POST", "");
	req_param(&r, "CONTENT_LENGTH", "5000");
	r.spec.content_length = 5000;
	r.spec.max_body = 1000;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = 5000;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 413);
	cr_expect_eq(r.m.reads, 0);
	cr_expect_str_eq(r.res.error, "request body of 5000 bytes exceeds max_body (1000 bytes)");
	cr_expect_eq(strncmp(r.m.out, "Status: 413 Content Too Large\r\n", 31), 0, "%s", r.m.out);
	req_free(&r);
	struct req *g = get(u, "count");
	expect_field(&g->m, "calls", "0");
	req_free(g);

	/* Chunked: found out while streaming. */
	req_init(&r, "POST", "");
	r.spec.max_body = 1000;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = 5000;
	r.m.read_max = 300;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 413);
	cr_expect_leq(r.res.body_in, 1000);
	cr_expect_str_eq(r.res.error, "request body exceeds max_body (1000 bytes)");
	req_free(&r);

	/* That one reached the app (its params went first); the next works. */
	g = get(u, "");
	cr_expect_eq(g->res.status, 200, "%s", g->res.error);
	req_free(g);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(f, 0);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

Test(upstream, client_gone)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	struct req r;

	/* Mid-response. */
	req_init(&r, "GET", "bigout=2000000");
	mem_reset(&r.m);
	r.m.fail_write_after = 100000;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, -1);
	cr_expect(r.res.client_gone);
	cr_expect(r.res.head_sent);
	cr_expect_eq(r.res.status, 200);
	cr_expect_str_eq(r.res.error, "client went away during the response");
	req_free(&r);

	/* Before our 502 could be sent. */
	req_init(&r, "GET", "close");
	mem_reset(&r.m);
	r.m.fail_write_after = 1;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, -1);
	cr_expect(r.res.client_gone);
	req_free(&r);

	/* While reading its body. */
	req_init(&r, "POST", "");
	r.spec.content_length = 100;
	mem_reset(&r.m);
	r.m.fail_read_at = 0;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, -1);
	cr_expect(r.res.client_gone);
	cr_expect_not(r.res.head_sent);
	cr_expect_str_eq(r.res.error, "client went away while sending the request body");
	req_free(&r);

	/* Its body ends before CONTENT_LENGTH: gone too, and the app never
	 * sees a complete short body. */
	req_init(&r, "POST", "");
	r.spec.content_length = 1000;
	mem_reset(&r.m);
	r.m.body = "0123456789";
	r.m.body_len = 10;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, -1);
	cr_expect(r.res.client_gone);
	cr_expect_eq(r.m.len, 0);
	cr_expect_str_eq(r.res.error, "request body ended after 10 of 1000 bytes");
	req_free(&r);

	struct req *g = get(u, "");
	cr_expect_eq(g->res.status, 200, "%s", g->res.error);
	req_free(g);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* The app answers first, then reads a chunked body that passes max_body:
 * the head is out, so the body is cut short. */
Test(upstream, max_body_after_the_head_cuts_the_body)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	size_t n = 8 * MiB;
	char *body = random_bytes(n, 12);
	struct req r;

	req_init(&r, "POST", "early-echo&bigout=100000");
	r.spec.max_body = 4 * MiB;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200);
	cr_expect(r.res.head_sent);
	cr_expect_leq(r.res.body_in, 4 * MiB);
	cr_expect_str_eq(r.res.error, "request body exceeds max_body (4194304 bytes); response body cut short");
	/* the client's doing, though the head had gone out: too-large, not
	 * an application error */
	cr_expect(r.res.too_large);
	cr_expect(strstr(body_of(&r.m), "body_len=") == NULL, "the app saw the end of the body");
	req_free(&r);
	uint64_t c, re, f;
	stats(u, &c, &re, &f);
	cr_expect_eq(f, 0);
	free(body);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

struct worker_arg {
	struct upstream *u;
	int ok;
};

static void *
worker(void *p)
{
	struct worker_arg *a = p;

	for (int i = 0; i < 25; i++) {
		struct req r;
		char q[32];
		snprintf(q, sizeof(q), "w=%d", i);
		req_init(&r, "GET", q);
		mem_reset(&r.m);
		r.ret = upstream_run(a->u, r.p, r.n, &r.spec, &r.c, &r.res);
		const char *v = field(&r.m, "query");
		if (r.ret == 0 && r.res.status == 200 && v != NULL && strcmp(v, q) == 0)
			a->ok++;
		mem_reset(&r.m);
	}
	return NULL;
}

/* Threads share one upstream; the pool holds at most one connection per
 * thread. */
Test(upstream, threads_share_the_pool)
{
	struct upstream *u;
	pid_t pid = unix_app(&u);
	pthread_t t[6];
	struct worker_arg a[6];
	uint64_t c, re, f;

	for (int i = 0; i < 6; i++) {
		a[i] = (struct worker_arg){ u, 0 };
		cr_assert(pthread_create(&t[i], NULL, worker, &a[i]) == 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(a[i].ok, 25, "thread %d: %d of 25", i, a[i].ok);
	}
	stats(u, &c, &re, &f);
	cr_expect_leq(c, 6);
	cr_expect_eq(c + re, 150);
	cr_expect_eq(f, 0);
	struct req *g = get(u, "count");
	expect_field(&g->m, "calls", "150");
	req_free(g);
	upstream_free(u);
	app_stop(pid);
	expect_no_fd_leak();
}

/* ------------------------------------------------------------------ */
/* The fake upstream                                                   */

struct fake {
	int lfd, port;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int active;             /* connection threads running */
	int accepted;
};

struct fconn {
	struct fake *f;
	int fd;
};

/* One request as the fake read it. */
struct freq {
	int role, flags, id;
	int params_records;
	char *params;           /* the raw stream */
	size_t plen;
	char query[256];
	unsigned long long stdin_len;
	uint64_t stdin_fnv;
	int stdin_records;
};

static int
read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* One record: type and content (up to 65535 bytes) in c. */
static int
read_rec(int fd, int *type, int *id, unsigned char *c, size_t *clen)
{
	unsigned char h[8], pad[255];

	if (read_full(fd, h, 8) != 0)
		return -1;
	cr_expect_eq(h[0], 1, "version");
	*type = h[1];
	*id = h[2] << 8 | h[3];
	*clen = (size_t)h[4] << 8 | h[5];
	if (read_full(fd, c, *clen) != 0 || read_full(fd, pad, h[6]) != 0)
		return -1;
	return 0;
}

static unsigned long
nvlen(const unsigned char *p, size_t *i)
{
	if (p[*i] < 128)
		return p[(*i)++];
	unsigned long n = ((unsigned long)(p[*i] & 0x7f) << 24) | (unsigned long)p[*i + 1] << 16 |
			  (unsigned long)p[*i + 2] << 8 | p[*i + 3];
	*i += 4;
	return n;
}

/* Read BEGIN_REQUEST and the PARAMS stream.  -1 at EOF. */
static int
read_head(int fd, struct freq *q)
{
	static __thread unsigned char c[65536];
	int type, id;
	size_t n;

	memset(q, 0, sizeof(*q));
	q->stdin_fnv = 14695981039346656037ULL;
	if (read_rec(fd, &type, &id, c, &n) != 0)
		return -1;
	cr_expect_eq(type, 1, "BEGIN_REQUEST first");
	cr_expect_eq(n, 8);
	q->id = id;
	q->role = c[0] << 8 | c[1];
	q->flags = c[2];
	for (;;) {
		if (read_rec(fd, &type, &id, c, &n) != 0)
			return -1;
		cr_expect_eq(type, 4, "PARAMS");
		cr_expect_eq(id, q->id);
		q->params_records++;
		if (n == 0)
			break;
		q->params = realloc(q->params, q->plen + n);
		memcpy(q->params + q->plen, c, n);
		q->plen += n;
	}
	/* QUERY_STRING */
	for (size_t i = 0; i < q->plen;) {
		unsigned long nl = nvlen((unsigned char *)q->params, &i);
		unsigned long vl = nvlen((unsigned char *)q->params, &i);
		if (nl == 12 && memcmp(q->params + i, "QUERY_STRING", 12) == 0 &&
		    vl < sizeof(q->query)) {
			memcpy(q->query, q->params + i + nl, vl);
			q->query[vl] = '\0';
		}
		i += nl + vl;
	}
	return 0;
}

/* Read the STDIN stream to its end.  -1 at EOF. */
static int
read_stdin(int fd, struct freq *q)
{
	static __thread unsigned char c[65536];
	int type, id;
	size_t n;

	for (;;) {
		if (read_rec(fd, &type, &id, c, &n) != 0)
			return -1;
		cr_expect_eq(type, 5, "STDIN");
		q->stdin_records++;
		if (n == 0)
			return 0;
		q->stdin_len += n;
		for (size_t i = 0; i < n; i++) {
			q->stdin_fnv ^= c[i];
			q->stdin_fnv *= 1099511628211ULL;
		}
	}
}

static int
send_all(int fd, const void *p, size_t n, int frag)
{
	const char *s = p;

	while (n > 0) {
		size_t k = frag ? 1 : n;
		ssize_t w = send(fd, s, k, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A record with pad bytes of padding; frag: one byte per send. */
static int
send_rec(int fd, int type, int id, const void *data, size_t n, int pad, int frag)
{
	unsigned char h[8] = { 1, (unsigned char)type, (unsigned char)(id >> 8), (unsigned char)id,
			       (unsigned char)(n >> 8), (unsigned char)n, (unsigned char)pad, 0 };
	char zeros[255] = { 0 };

	if (send_all(fd, h, 8, frag) != 0 || send_all(fd, data, n, frag) != 0)
		return -1;
	return send_all(fd, zeros, (size_t)pad, frag);
}

static int
send_end(int fd, int id, int proto, size_t len)
{
	unsigned char b[8] = { 0, 0, 0, 7, (unsigned char)proto, 0, 0, 0 };

	return send_rec(fd, 3, id, b, len, 0, 0);
}

static int
send_out(int fd, const char *s)
{
	return send_rec(fd, 6, 1, s, strlen(s), 0, 0);
}

static const char OK_HEAD[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n";

/* The echo answer: what the fake saw, split into STDOUT records of 7
 * bytes with 3 bytes of padding each (frag: one byte per send). */
static int
fake_echo(int fd, const struct freq *q, int frag)
{
	struct respond_buf b;
	char line[512];

	respond_buf_init(&b);
	respond_buf_add(&b, OK_HEAD, strlen(OK_HEAD));
	snprintf(line, sizeof(line), "role=%d\nflags=%d\nparams_records=%d\nstdin_len=%llu\n"
		 "stdin_fnv=%016llx\n", q->role, q->flags, q->params_records, q->stdin_len,
		 (unsigned long long)q->stdin_fnv);
	respond_buf_add(&b, line, strlen(line));
	for (size_t i = 0; i < q->plen;) {
		unsigned long nl = nvlen((unsigned char *)q->params, &i);
		unsigned long vl = nvlen((unsigned char *)q->params, &i);
		const char *v = q->params + i + nl;
		if (vl > 64)
			snprintf(line, sizeof(line), "param %.*s=len:%lu,fnv:%016llx\n", (int)nl,
				 q->params + i, vl, (unsigned long long)fnv(v, vl));
		else
			snprintf(line, sizeof(line), "param %.*s=%.*s\n", (int)nl, q->params + i,
				 (int)vl, v);
		respond_buf_add(&b, line, strlen(line));
		i += nl + vl;
	}
	int r = 0;
	for (size_t off = 0; off < b.len && r == 0; off += 7) {
		size_t k = b.len - off < 7 ? b.len - off : 7;
		r = send_rec(fd, 6, q->id, b.data + off, k, 3, frag);
	}
	if (r == 0)
		r = send_rec(fd, 7, q->id, "fake stderr\n", 12, 4, frag);
	if (r == 0)
		r = send_rec(fd, 6, q->id, "", 0, 0, frag);
	if (r == 0)
		r = send_end(fd, q->id, 0, 8);
	respond_buf_free(&b);
	return r;
}

/* Serve one connection; returns when it should be closed. */
static void
fake_serve(int fd)
{
	struct freq q;
	int drop_next = 0;

	while (read_head(fd, &q) == 0) {
		const char *m = q.query;
		if (strcmp(m, "stuck") == 0) {
			/* Read nothing more until the peer goes away. */
			struct pollfd p = { .fd = fd, .events = POLLRDHUP };
			while (poll(&p, 1, -1) < 0 && errno == EINTR)
				;
			break;
		}
		if (strcmp(m, "early") == 0) {
			/* Answer before reading the body, then read it. */
			send_out(fd, "Status: 413 Content Too Large\r\nContent-Type: text/plain\r\n\r\nno\n");
			send_end(fd, 1, 0, 8);
			if (read_stdin(fd, &q) != 0)
				break;
			free(q.params);
			continue;
		}
		if (strcmp(m, "answer-first") == 0) {
			/* Answer once the params are in, as a libfcgi
			 * application that never reads its input does, then
			 * take the body's end off the connection */
			send_out(fd, OK_HEAD);
			send_end(fd, 1, 0, 8);
			if (read_stdin(fd, &q) != 0)
				break;
			free(q.params);
			q.params = NULL;
			if (!(q.flags & 1))
				break;
			continue;
		}
		if (read_stdin(fd, &q) != 0 || drop_next)
			break;
		if (strcmp(m, "echo") == 0 || strcmp(m, "frag") == 0) {
			if (fake_echo(fd, &q, strcmp(m, "frag") == 0) != 0)
				break;
		} else if (strcmp(m, "dropnext") == 0) {
			send_out(fd, OK_HEAD);
			send_end(fd, 1, 0, 8);
			drop_next = 1;
		} else if (strcmp(m, "garbage") == 0) {
			send_all(fd, "HTTP/1.1 200 OK\r\n\r\nhello", 24, 0);
			break;
		} else if (strcmp(m, "badtype") == 0) {
			send_rec(fd, 42, 1, "xx", 2, 0, 0);
		} else if (strcmp(m, "unknowntype") == 0) {
			unsigned char b[8] = { 42 };
			send_rec(fd, 11, 0, b, 8, 0, 0);
		} else if (strcmp(m, "mgmt") == 0) {
			send_rec(fd, 10, 0, "", 0, 0, 0);
		} else if (strcmp(m, "badid") == 0) {
			send_rec(fd, 6, 2, OK_HEAD, strlen(OK_HEAD), 0, 0);
		} else if (strcmp(m, "close") == 0) {
			break;
		} else if (strcmp(m, "close-mid-head") == 0) {
			send_out(fd, "Content-Type: text/pl");
			break;
		} else if (strcmp(m, "close-after-head") == 0) {
			send_out(fd, OK_HEAD);
			send_out(fd, "partial");
			break;
		} else if (strcmp(m, "overloaded") == 0) {
			send_end(fd, 1, 2, 8);
		} else if (strcmp(m, "cantmpx") == 0) {
			send_end(fd, 1, 1, 8);
		} else if (strcmp(m, "unknownrole") == 0) {
			send_end(fd, 1, 3, 8);
		} else if (strcmp(m, "status9") == 0) {
			send_end(fd, 1, 9, 8);
		} else if (strcmp(m, "endlen") == 0) {
			send_out(fd, OK_HEAD);
			send_end(fd, 1, 0, 4);
		} else if (strcmp(m, "nohead") == 0) {
			send_end(fd, 1, 0, 8);
		} else if (strcmp(m, "halfhead") == 0) {
			send_out(fd, "Content-Type: text/plain\r\n");
			send_end(fd, 1, 0, 8);
		} else if (strcmp(m, "trailing") == 0) {
			char buf[128];
			size_t hl = strlen(OK_HEAD);
			unsigned char h[8] = { 1, 6, 0, 1, 0, (unsigned char)hl, 0, 0 };
			unsigned char e[16] = { 1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
			memcpy(buf, h, 8);
			memcpy(buf + 8, OK_HEAD, hl);
			memcpy(buf + 8 + hl, e, 16);
			memcpy(buf + 24 + hl, "JUNKJUNK", 8);
			send_all(fd, buf, 32 + hl, 0);
		} else if (strcmp(m, "hang") == 0) {
			char c;
			while (read(fd, &c, 1) > 0)
				;
			break;
		} else if (strcmp(m, "hang-after-head") == 0) {
			send_out(fd, OK_HEAD);
			send_out(fd, "partial");
			char c;
			while (read(fd, &c, 1) > 0)
				;
			break;
		} else if (strcmp(m, "local-redirect") == 0) {
			/* RFC 3875's local redirect: a bare local Location */
			send_out(fd, "Location: /next?a=1\r\n\r\n");
			send_end(fd, 1, 0, 8);
		} else if (strncmp(m, "stderr=", 7) == 0) {
			/* N lines "fake stderr line I" on FCGI_STDERR, in
			 * records of 100 bytes that cut lines anywhere, then
			 * the answer */
			struct respond_buf e;
			char line[64];
			respond_buf_init(&e);
			for (long i = 1, n = atol(m + 7); i <= n; i++) {
				snprintf(line, sizeof(line), "fake stderr line %ld\n", i);
				respond_buf_add(&e, line, strlen(line));
			}
			int r = 0;
			for (size_t off = 0; off < e.len && r == 0; off += 100)
				r = send_rec(fd, 7, 1, e.data + off, e.len - off < 100 ? e.len - off : 100, 0, 0);
			respond_buf_free(&e);
			send_out(fd, OK_HEAD);
			send_end(fd, 1, 0, 8);
		} else {
			send_out(fd, OK_HEAD);
			send_end(fd, 1, 0, 8);
		}
		free(q.params);
		q.params = NULL;
		if (!(q.flags & 1))
			break;
	}
	free(q.params);
}

static void *
fake_conn_main(void *p)
{
	struct fconn *fc = p;
	struct fake *f = fc->f;

	fake_serve(fc->fd);
	close(fc->fd);
	free(fc);
	pthread_mutex_lock(&f->mu);
	f->active--;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static void *
fake_accept_main(void *p)
{
	struct fake *f = p;

	for (;;) {
		int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL;
		}
		struct fconn *fc = malloc(sizeof(*fc));
		cr_assert_not_null(fc);
		fc->f = f;
		fc->fd = fd;
		pthread_mutex_lock(&f->mu);
		f->active++;
		f->accepted++;
		pthread_mutex_unlock(&f->mu);
		pthread_t t;
		cr_assert(pthread_create(&t, NULL, fake_conn_main, fc) == 0);
		pthread_detach(t);
	}
}

static void
fake_start(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->lfd = tcp_listener(64, &f->port);
	cr_assert(pthread_create(&f->tid, NULL, fake_accept_main, f) == 0);
}

/* Stop accepting and wait for every connection thread (their peers must
 * be closed: free the upstream first). */
static void
fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->tid, NULL);
	pthread_mutex_lock(&f->mu);
	while (f->active > 0)
		pthread_cond_wait(&f->cv, &f->mu);
	pthread_mutex_unlock(&f->mu);
	close(f->lfd);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
}

/* ------------------------------------------------------------------ */
/* Fake upstream tests                                                 */

Test(upstream, params_encoding_and_fragmented_answers)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	char *big = random_bytes(200000, 11);
	char name300[301], want[160];
	char v127[128], v128[129];
	static const char *const env[] = { "RL_CLIENT=198.51.100.9", "NOVALUE" };

	for (size_t i = 0; i < 200000; i++)
		big[i] = (char)('A' + (unsigned char)big[i] % 26);
	big[199999] = '\0';
	memset(name300, 'N', 300);
	name300[300] = '\0';
	memset(v127, 'x', 127);
	v127[127] = '\0';
	memset(v128, 'y', 128);
	v128[128] = '\0';

	const char *modes[] = { "echo", "frag" };
	for (size_t k = 0; k < 2; k++) {
		struct req r;
		req_init(&r, "GET", modes[k]);
		req_param(&r, "V127", v127);
		req_param(&r, "V128", v128);
		req_param(&r, name300, "n");
		req_param(&r, "BIG", big);
		req_param(&r, "EMPTY", "");
		req_param(&r, "http_proxy", "lowercase-too");
		r.spec.extra_env = env;
		r.spec.nextra_env = 2;
		req_run(u, &r);
		cr_expect_eq(r.res.status, 200, "%s: %s", modes[k], r.res.error);
		cr_expect_str_eq(r.res.error, "");
		const char *b = body_of(&r.m);
		expect_field(&r.m, "role", "1");
		expect_field(&r.m, "flags", "1");
		/* 200 KB of params: four records and the empty one. */
		expect_field(&r.m, "params_records", "5");
		expect_field(&r.m, "stdin_len", "0");
		cr_expect(strstr(b, "param REQUEST_METHOD=GET\n") != NULL, "%s", b);
		snprintf(want, sizeof(want), "param V127=len:127,fnv:%016llx\n",
			 (unsigned long long)fnv(v127, 127));
		cr_expect(strstr(b, want) != NULL, "%s", want);
		snprintf(want, sizeof(want), "param V128=len:128,fnv:%016llx\n",
			 (unsigned long long)fnv(v128, 128));
		cr_expect(strstr(b, want) != NULL, "%s", want);
		snprintf(want, sizeof(want), "param BIG=len:199999,fnv:%016llx\n",
			 (unsigned long long)fnv(big, 199999));
		cr_expect(strstr(b, want) != NULL, "%s", want);
		cr_expect(strstr(b, "param NNNNNNNNNNNNNNNNNNNN") != NULL);
		cr_expect(strstr(b, "param EMPTY=\n") != NULL);
		cr_expect(strstr(b, "param RL_CLIENT=198.51.100.9\n") != NULL);
		cr_expect(strstr(b, "param NOVALUE=\n") != NULL);
		cr_expect(strstr(b, "proxy") == NULL, "%s", b);
		req_free(&r);
	}
	uint64_t c, re, fl;
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 1);
	cr_expect_eq(re, 1);
	free(big);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

Test(upstream, fake_body_and_stdin_records)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	size_t n = 100000;
	char *body = random_bytes(n, 77);
	char want[64];
	struct req r;

	req_init(&r, "POST", "echo");
	r.spec.content_length = n;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.res.status, 200, "%s", r.res.error);
	snprintf(want, sizeof(want), "%zu", n);
	expect_field(&r.m, "stdin_len", want);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, n));
	expect_field(&r.m, "stdin_fnv", want);
	req_free(&r);
	free(body);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

/* How many times needle occurs in text. */
static int
occurrences(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* An application that writes a flood to its stderr: the first
 * UPSTREAM_STDERR_LINES_MAX lines of each request are logged, then one
 * line says how many more (and their bytes of text) were not. */
Test(upstream, stderr_flood_is_cut_per_request)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	char err[256], want[256];
	struct log *lg = log_new(path_in("gw.log"), err, sizeof(err));

	cr_assert_not_null(lg, "%s", err);
	upstream_set_log(u, lg);
	struct req *r = get(u, "stderr=500");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	/* the limit is per request: the next one logs its own */
	r = get(u, "stderr=3");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	log_free(lg);

	char *text = read_text_file(path_in("gw.log"));
	cr_expect_eq(occurrences(text, "level=warn event=upstream-stderr msg="),
		     UPSTREAM_STDERR_LINES_MAX + 3, "%s", text);
	for (int i = 1; i <= UPSTREAM_STDERR_LINES_MAX; i++) {
		snprintf(want, sizeof(want), "event=upstream-stderr msg=\"GET /t from 192.0.2.1 -> app: fake stderr line %d\"\n", i);
		cr_expect_eq(occurrences(text, want), i <= 3 ? 2 : 1, "%s\n%s", want, text);
	}
	snprintf(want, sizeof(want), "event=upstream-stderr msg=\"GET /t from 192.0.2.1 -> app: fake stderr line %d\"",
		 UPSTREAM_STDERR_LINES_MAX + 1);
	cr_expect_null(strstr(text, want), "%s", text);
	/* lines 21..500: "fake stderr line " and the number, no newline */
	unsigned long long bytes = 0;
	for (int i = UPSTREAM_STDERR_LINES_MAX + 1; i <= 500; i++)
		bytes += 17 + (i < 100 ? 2 : 3);
	snprintf(want, sizeof(want),
		 "level=warn event=upstream-stderr-dropped msg=\"fcgi://127.0.0.1:%d: %d more lines "
		 "(%llu bytes) of a request's stderr not logged: at most %d a request\"\n",
		 f.port, 500 - UPSTREAM_STDERR_LINES_MAX, bytes, UPSTREAM_STDERR_LINES_MAX);
	cr_expect_eq(occurrences(text, want), 1, "%s\n%s", want, text);
	cr_expect_eq(occurrences(text, "upstream-stderr-dropped"), 1, "%s", text);
	free(text);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

/* A bare local Location without Status (RFC 3875's local redirect
 * response) is not followed inside the gateway: the client gets it as a
 * 302 with that Location, as from a CGI script (test_cgi.c). */
Test(upstream, local_location_is_302_not_followed)
{
	static const char extra[] = "X-RateLimit-Limit: 10\r\n";
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	struct req r;

	req_init(&r, "GET", "local-redirect");
	r.spec.extra_headers = extra;
	r.spec.extra_len = sizeof(extra) - 1;
	cr_assert_eq(req_run(u, &r), 0, "%s", r.res.error);
	cr_expect_eq(r.res.status, 302);
	cr_expect_str_eq(r.res.error, "");
	cr_expect_str_eq(r.m.out, "Status: 302 Found\r\nLocation: /next?a=1\r\n"
			 "X-RateLimit-Limit: 10\r\n\r\n");
	cr_expect_eq(r.res.body_out, 0);
	req_free(&r);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

static const struct failure fake_failures[] = {
	{ "garbage", 502, 1, "malformed FastCGI record from the application (version 72, expected 1)", 0, NULL },
	{ "badtype", 502, 1, "unexpected FastCGI record type 42 from the application", 0, NULL },
	{ "unknowntype", 502, 1, "the application answered FCGI_UNKNOWN_TYPE (it does not speak FastCGI 1.0 as we do)", 0, NULL },
	{ "mgmt", 502, 1, "unexpected FastCGI record type 10 from the application", 0, NULL },
	{ "badid", 502, 1, "FastCGI record for request 2 from the application, expected 1", 0, NULL },
	{ "close", 502, 1, "the application closed the connection without answering", 0, NULL },
	{ "close-mid-head", 502, 1, "the application closed the connection before its response head was complete", 0, NULL },
	{ "close-after-head", 200, 1, "the application closed the connection before FCGI_END_REQUEST: response body cut short", 0, NULL },
	{ "overloaded", 502, 1, "the application rejected the request: FCGI_OVERLOADED (it is out of resources)", 0, NULL },
	{ "cantmpx", 502, 1, "the application rejected the request: FCGI_CANT_MPX_CONN (it cannot take another request on this connection)", 0, NULL },
	{ "unknownrole", 502, 1, "the application rejected the request: FCGI_UNKNOWN_ROLE (it is not a responder)", 0, NULL },
	{ "status9", 502, 1, "the application ended the request with unknown protocol status 9", 0, NULL },
	{ "endlen", 200, 1, "malformed FCGI_END_REQUEST from the application (4 bytes, expected 8)", 0, NULL },
	{ "nohead", 502, 1, "the application ended the request without a response", 0, NULL },
	{ "halfhead", 502, 1, "the application ended the request before its response head was complete", 0, NULL },
};

Test(upstream, protocol_errors)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	uint64_t c, re, fl;
	size_t n = sizeof(fake_failures) / sizeof(fake_failures[0]);

	for (size_t i = 0; i < n; i++) {
		const struct failure *e = &fake_failures[i];
		struct req *r = get(u, e->query);
		cr_expect_eq(r->ret, 0, "%s", e->query);
		cr_expect_eq(r->res.status, e->status, "%s: %d", e->query, r->res.status);
		cr_expect_eq(r->res.head_sent, e->head_sent, "%s", e->query);
		cr_expect_str_eq(r->res.error, e->error, "%s: got \"%s\"", e->query, r->res.error);
		if (e->status == 502)
			cr_expect_eq(strncmp(r->m.out, "Status: 502 Bad Gateway\r\n", 25), 0,
				     "%s: %s", e->query, r->m.out);
		req_free(r);
	}
	stats(u, &c, &re, &fl);
	cr_expect_eq(fl, n);
	cr_expect_eq(c, n, "a failed connection was pooled");
	cr_expect_eq(re, 0);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

Test(upstream, bytes_after_end_request_are_not_pooled)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	uint64_t c, re, fl;

	struct req *r = get(u, "trailing");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	cr_expect_str_eq(r->res.error, "");
	req_free(r);
	r = get(u, "ok");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 2);
	cr_expect_eq(re, 0);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

Test(upstream, idle_max_zero_asks_for_no_keep_conn)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	uint64_t c, re, fl;

	upstream_set_idle_max(u, 0);
	for (int i = 0; i < 3; i++) {
		struct req *r = get(u, "echo");
		cr_expect_eq(r->res.status, 200, "%s", r->res.error);
		expect_field(&r->m, "flags", "0");
		req_free(r);
	}
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 3);
	cr_expect_eq(re, 0);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

/* A pooled connection passes the checkout test, then the app closes it
 * before answering: retried once on a new connection -- unless body bytes
 * were already taken from the client. */
Test(upstream, pooled_connection_dying_is_retried_once)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	uint64_t c, re, fl;
	char err[256];
	struct log *lg = log_new(path_in("gw.log"), err, sizeof(err));

	cr_assert_not_null(lg, "%s", err);
	upstream_set_log(u, lg);
	struct req *r = get(u, "dropnext");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	r = get(u, "echo");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	cr_expect_str_eq(r->res.error, "");
	expect_field(&r->m, "flags", "1");
	req_free(r);
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 2);
	cr_expect_eq(re, 1);
	cr_expect_eq(fl, 0);
	/* the retry is said: an application that took the request and died
	 * on it has now seen it twice */
	char *text = read_text_file(path_in("gw.log"));
	char want[160];
	snprintf(want, sizeof(want), "level=warn event=upstream-retry msg=\"fcgi://127.0.0.1:%d: the application closed the connection without answering; sent again on a new connection\"",
		 f.port);
	cr_expect(strstr(text, want) != NULL, "%s\n%s", want, text);
	free(text);
	upstream_set_log(u, NULL);
	log_free(lg);

	/* The same with a body: it cannot be replayed, so 502. */
	r = get(u, "dropnext");      /* on the pooled connection 2 */
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	struct req b;
	req_init(&b, "POST", "echo");
	b.spec.content_length = 10;
	mem_reset(&b.m);
	b.m.body = "0123456789";
	b.m.body_len = 10;
	b.ret = upstream_run(u, b.p, b.n, &b.spec, &b.c, &b.res);
	cr_expect_eq(b.res.status, 502);
	cr_expect_eq(b.res.body_in, 10);
	cr_expect_str_eq(b.res.error, "the application closed the connection without answering");
	req_free(&b);
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 2);
	cr_expect_eq(re, 3);
	cr_expect_eq(fl, 1);

	/* Without a body, but POST is not idempotent: 502 as well. */
	r = get(u, "ok");            /* a new connection 3, pooled */
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	r = get(u, "dropnext");
	cr_expect_eq(r->res.status, 200, "%s", r->res.error);
	req_free(r);
	req_init(&b, "POST", "echo");
	req_run(u, &b);
	cr_expect_eq(b.res.status, 502);
	cr_expect_eq(b.res.body_in, 0);
	cr_expect_str_eq(b.res.error, "the application closed the connection without answering");
	req_free(&b);
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 3);
	cr_expect_eq(re, 5);
	cr_expect_eq(fl, 2);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

Test(upstream, early_answer_from_fake_is_complete_and_not_pooled)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	size_t n = 8 * MiB;
	char *body = random_bytes(n, 1);
	uint64_t c, re, fl;
	struct req r;

	req_init(&r, "POST", "early");
	r.spec.content_length = n;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 413, "%s", r.res.error);
	cr_expect_str_eq(r.res.error, "");
	cr_expect_str_eq(body_of(&r.m), "no\n");
	req_free(&r);
	struct req *g = get(u, "ok");
	cr_expect_eq(g->res.status, 200, "%s", g->res.error);
	req_free(g);
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 2);
	cr_expect_eq(re, 0);
	free(body);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

/* A request the web server says has no body (CONTENT_LENGTH 0: lighttpd's
 * GET) sends the body's end with its params, without reading the web
 * server for it.  Sent after them, it came too late for an application
 * that answers before reading its input (libfcgi's, fcgi_stub): the
 * answer ended before the request had, the kept connection was closed,
 * and every request paid a connect and a close (found by strace through
 * lighttpd). */
Test(upstream, no_body_goes_out_with_the_params)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	uint64_t c, re, fl;
	struct req r;

	for (int i = 0; i < 3; i++) {
		req_init(&r, "GET", "answer-first");
		r.spec.no_body = 1;
		r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
		cr_expect_eq(r.ret, 0);
		cr_expect_eq(r.res.status, 200, "%s", r.res.error);
		cr_expect_str_eq(r.res.error, "");
		cr_expect_eq(r.m.reads, 0, "request %d: the web server was read %zu times",
			     i, r.m.reads);
		req_free(&r);
	}
	stats(u, &c, &re, &fl);
	cr_expect_eq(c, 1, "%llu connections", (unsigned long long)c);
	cr_expect_eq(re, 2);
	cr_expect_eq(fl, 0);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}

Test(upstream, fake_timeouts)
{
	struct fake f;
	fake_start(&f);
	struct upstream *u = tcp_upstream(f.port);
	struct req r;

	req_init(&r, "GET", "hang");
	r.spec.timeout_ms = 200;
	req_run(u, &r);
	cr_expect_eq(r.res.status, 502);
	cr_expect_str_eq(r.res.error, "the application timed out after 200 ms waiting for the response head");
	req_free(&r);

	req_init(&r, "GET", "hang-after-head");
	r.spec.timeout_ms = 200;
	req_run(u, &r);
	cr_expect_eq(r.ret, 0);
	cr_expect_eq(r.res.status, 200);
	cr_expect(r.res.head_sent);
	cr_expect_str_eq(body_of(&r.m), "partial");
	cr_expect_str_eq(r.res.error, "the application timed out after 200 ms while reading the response body");
	req_free(&r);

	/* A body the app never reads: stuck sending. */
	size_t n = 64 * MiB;
	char *body = malloc(n);
	cr_assert_not_null(body);
	memset(body, 'b', n);
	req_init(&r, "POST", "stuck");
	r.spec.timeout_ms = 300;
	r.spec.content_length = n;
	mem_reset(&r.m);
	r.m.body = body;
	r.m.body_len = n;
	r.ret = upstream_run(u, r.p, r.n, &r.spec, &r.c, &r.res);
	cr_expect_eq(r.res.status, 502);
	cr_expect_str_eq(r.res.error, "the application timed out after 300 ms while sending the request");
	req_free(&r);
	free(body);
	upstream_free(u);
	fake_stop(&f);
	expect_no_fd_leak();
}
