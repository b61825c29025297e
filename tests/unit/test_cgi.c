/*
 * test_cgi.c - gateway/cgi.c against tests/apps/echo_cgi (found through
 * $top_builddir, which make check sets): the environment the script gets
 * (httpoxy stripped, first duplicate wins, SCRIPT_FILENAME ours, no leaked
 * fds, default signals, its own directory), request bodies streamed intact
 * (10 MiB with CONTENT_LENGTH, chunked without), max_body as 413, every
 * failure before the head as 502 with its exact reason, failures after the
 * head cutting the body short, clients that go away, and no zombie left
 * after any test.  In-memory clients stand in for libfcgi.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cgi.h"
#include "memclient.h"

#define MiB (1024u * 1024)

/* ------------------------------------------------------------------ */
/* An in-memory client (memclient.h)                                  */

/* The response body: what follows the head; fails the test without one. */
static const char *
resp_body(const struct mem *m, size_t *len)
{
	const char *p = mem_body(m, len);

	cr_assert_not_null(p, "no head in the output: %s", m->out ? m->out : "(none)");
	return p;
}

/* The value of echo_cgi's "name=value" line, into buf; fails the test
 * without one. */
static const char *
field(const struct mem *m, const char *name, char *buf, size_t cap)
{
	const char *v = mem_field(m, name, buf, cap);

	if (v == NULL)
		cr_assert_fail("no %s= line in:\n%s", name, resp_body(m, NULL));
	return v;
}

#define cr_expect_field(m, name, want) do { \
	char fbuf_[4096]; \
	cr_expect_str_eq(field((m), (name), fbuf_, sizeof(fbuf_)), (want), \
			 "%s=%s, expected %s", (name), fbuf_, (want)); \
	} while (0)

/* ------------------------------------------------------------------ */
/* Requests                                                            */

static char echo[4096];         /* absolute path of echo_cgi */
static char echo_dir[4096];
static char tmpdir[64];

static void
setup(void)
{
	const char *b = getenv("top_builddir");
	char *abs;

	snprintf(echo, sizeof(echo), "%s/tests/apps/echo_cgi", b ? b : ".");
	abs = realpath(echo, NULL);
	cr_assert_not_null(abs, "%s not built (run the tests with make check, which sets top_builddir)", echo);
	snprintf(echo, sizeof(echo), "%s", abs);
	free(abs);
	snprintf(echo_dir, sizeof(echo_dir), "%s", echo);
	*strrchr(echo_dir, '/') = '\0';
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_cgi.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

/* No zombie, and no child left at all: cgi_run reaps its own. */
static void
teardown(void)
{
	int st;
	pid_t p = waitpid(-1, &st, WNOHANG);
	int e = errno;

	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	cr_assert(p == -1 && e == ECHILD, "a child is left behind (waitpid: %d)", (int)p);
}

TestSuite(cgi, .init = setup, .fini = teardown);

#define MAXP 32

/* "NAME=value" strings into params (pointing into the strings). */
static size_t
params_of(const char *const *kv, struct rl_param *p)
{
	size_t n = 0;

	for (; kv[n] != NULL; n++) {
		const char *eq = strchr(kv[n], '=');
		cr_assert(n < MAXP && eq != NULL);
		p[n].name = kv[n];
		p[n].name_len = (size_t)(eq - kv[n]);
		p[n].value = eq + 1;
		p[n].value_len = strlen(eq + 1);
	}
	return n;
}

static struct proxy_spec
spec_default(void)
{
	struct proxy_spec s;

	memset(&s, 0, sizeof(s));
	s.timeout_ms = 60000;   /* generous: valgrind runs the script too */
	s.error_format = RESPOND_TEXT;
	return s;
}

/* Run echo_cgi with QUERY_STRING=query and the given extra params. */
static int
run(const char *script, const char *query, const char *const *extra,
    const struct proxy_spec *s, struct mem *m, struct proxy_result *res)
{
	struct rl_param p[MAXP];
	const char *kv[MAXP];
	char q[256];
	size_t n = 0;
	struct proxy_client c = mem_client(m);

	m->read_cap_max = CGI_BODY_CHUNK;       /* cgi.c reads in its chunks */
	snprintf(q, sizeof(q), "QUERY_STRING=%s", query);
	kv[n++] = "REQUEST_METHOD=GET";
	kv[n++] = q;
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
		kv[n++] = extra[i];
	kv[n] = NULL;
	size_t np = params_of(kv, p);
	return cgi_run(script, p, np, s, &c, res);
}

static uint64_t
fnv(const char *s, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* len pseudo-random bytes (every value, NULs included). */
static char *
random_body(size_t len)
{
	char *b = malloc(len);
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	cr_assert_not_null(b);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[i] = (char)(x >> 24);
	}
	return b;
}

/* A request with a body: len random bytes for the client to send, and
 * CONTENT_LENGTH, which is extra[0] (extra[1] may take one more param).
 * The test frees body. */
struct body_req {
	char *body;
	char cl[64];
	const char *extra[3];
};

static void
body_req(struct body_req *b, size_t len, struct proxy_spec *s, struct mem *m)
{
	b->body = random_body(len);
	snprintf(b->cl, sizeof(b->cl), "CONTENT_LENGTH=%zu", len);
	b->extra[0] = b->cl;
	b->extra[1] = NULL;
	b->extra[2] = NULL;
	s->content_length = len;
	mem_init(m, b->body, len);
}

static int
exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* ------------------------------------------------------------------ */
/* The environment and the response                                    */

Test(cgi, environment_and_head)
{
	static const char *const extra[] = {
		"HTTP_X_TEST=hello world",
		"HTTP_PROXY=http://evil.example:8080",
		"SCRIPT_FILENAME=/not/this/one",
		"DUP=first", "DUP=second",
		"BAD-NAME=x", "RL_CLIENT=spoofed",
		NULL
	};
	static const char *const env[] = { "RL_CLIENT=192.0.2.7", "no equals sign", NULL };
	static const char hdrs[] = "X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n";
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	s.extra_headers = hdrs;
	s.extra_len = sizeof(hdrs) - 1;
	s.extra_env = env;
	s.nextra_env = 2;
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "a=1&b=%20", extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_eq(res.head_sent, 1);
	cr_expect_eq(res.client_gone, 0);
	cr_expect_str_eq(res.error, "");
	static const char head[] = "Status: 200 OK\r\nContent-Type: text/plain\r\n"
		"X-RateLimit-Limit: 10\r\nX-RateLimit-Remaining: 9\r\n\r\n";
	cr_expect_eq(strncmp(m.out, head, sizeof(head) - 1), 0, "%s", m.out);
	size_t blen;
	resp_body(&m, &blen);
	cr_expect_eq(res.body_out, blen);
	cr_expect_eq(res.body_in, 0);
	cr_expect_field(&m, "method", "GET");
	cr_expect_field(&m, "query", "a=1&b=%20");
	cr_expect_field(&m, "http_x_test", "hello world");
	cr_expect_field(&m, "content_length", "(unset)");
	cr_expect_field(&m, "gateway_interface", "CGI/1.1");
	cr_expect_field(&m, "script_filename", echo);
	cr_expect_field(&m, "rl_client", "192.0.2.7");
	cr_expect_field(&m, "http_proxy", "absent");
	cr_expect_field(&m, "path", CGI_DEFAULT_PATH);
	cr_expect_field(&m, "dup", "first");
	cr_expect_field(&m, "bad_name", "absent");
	cr_expect_field(&m, "cwd", echo_dir);
	cr_expect_field(&m, "argv0", echo);
	cr_expect_field(&m, "argc", "1");
	cr_expect_field(&m, "body_len", "0");
	mem_free(&m);
}

Test(cgi, params_win_over_defaults)
{
	static const char *const extra[] = {
		"GATEWAY_INTERFACE=CGI/1.0", "PATH=/opt/bin", NULL
	};
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_field(&m, "gateway_interface", "CGI/1.0");
	cr_expect_field(&m, "path", "/opt/bin");
	mem_free(&m);
}

Test(cgi, relative_script_path)
{
	const char *b = getenv("top_builddir");
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char *old = getcwd(NULL, 0);

	cr_assert_eq(chdir(b ? b : "."), 0);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run("tests/apps/echo_cgi", "", NULL, &s, &m, &res), 0, "%s", res.error);
	cr_assert_eq(chdir(old), 0);
	free(old);
	cr_expect_field(&m, "script_filename", echo);
	cr_expect_field(&m, "argv0", echo);
	cr_expect_field(&m, "cwd", echo_dir);
	mem_free(&m);
}

Test(cgi, status_header)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "status=401", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 401);
	cr_expect_eq(strncmp(m.out, "Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\n", 54), 0,
		     "%s", m.out);
	mem_free(&m);
}

/* A bare local Location without Status (RFC 3875's local redirect
 * response) is not followed inside the gateway: the client gets a 302
 * with that Location and asks for the path itself. */
Test(cgi, location_is_302)
{
	static const char hdrs[] = "X-RateLimit-Limit: 10\r\n";
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	s.extra_headers = hdrs;
	s.extra_len = sizeof(hdrs) - 1;
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "location=/x", NULL, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 302);
	cr_expect_str_eq(m.out, "Status: 302 Found\r\nLocation: /x\r\nX-RateLimit-Limit: 10\r\n\r\n");
	cr_expect_eq(res.body_out, 0);
	mem_free(&m);
}

Test(cgi, no_fd_leaks)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	int leak = open("/dev/null", O_RDONLY);     /* no O_CLOEXEC */

	cr_assert_geq(leak, 3);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "fds", NULL, &s, &m, &res), 0, "%s", res.error);
	close(leak);
	cr_expect_str_eq(resp_body(&m, NULL), "fds=0,1,2\n");
	mem_free(&m);
}

/* Where close_range is missing (Linux before 5.9) or refused (a seccomp
 * profile), the fds are closed one by one: the script still runs and
 * still gets only 0, 1 and 2.  (A seccomp filter of our own here; not
 * under valgrind, which makes the system calls itself.) */
Test(cgi, no_close_range_still_closes_every_fd)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	const char *pre = getenv("LD_PRELOAD");

	if (pre != NULL && strstr(pre, "vgpreload") != NULL)
		cr_skip_test("under valgrind");
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close_range, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
	cr_assert_eq(syscall(__NR_close_range, 1000, 1001, 0), -1);
	cr_assert_eq(errno, ENOSYS);

	int leak = open("/dev/null", O_RDONLY);     /* no O_CLOEXEC */
	cr_assert_geq(leak, 3);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "fds", NULL, &s, &m, &res), 0, "%s", res.error);
	close(leak);
	cr_expect_eq(res.status, 200, "%s", res.error);
	cr_expect_str_eq(resp_body(&m, NULL), "fds=0,1,2\n");
	mem_free(&m);
}

Test(cgi, signals_reset_and_sigpipe_restored)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	sigset_t set, before, after;

	/* What the gateway's workers have: stop signals blocked, SIGPIPE
	 * ignored. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, &before), 0);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "signals", NULL, &s, &m, &res), 0, "%s", res.error);
	cr_expect_field(&m, "blocked", "0");
	cr_expect_field(&m, "sigpipe", "default");
	/* cgi_run gave back the caller's mask. */
	pthread_sigmask(SIG_SETMASK, NULL, &after);
	cr_expect_eq(sigismember(&after, SIGPIPE), 0);
	cr_expect_eq(sigismember(&after, SIGUSR1), 1);
	pthread_sigmask(SIG_SETMASK, &before, NULL);
	signal(SIGPIPE, SIG_DFL);
	mem_free(&m);
}

/* ------------------------------------------------------------------ */
/* Request bodies                                                      */

Test(cgi, ten_mib_body_intact)
{
	size_t len = 10 * MiB;
	char *body = random_body(len + 100);
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char cl[64], want[32];
	const char *extra[] = { cl, NULL };

	snprintf(cl, sizeof(cl), "CONTENT_LENGTH=%zu", len);
	s.content_length = len;
	s.max_body = len;       /* exactly at the limit is allowed */
	mem_init(&m, body, len + 100);  /* the client has more: never read */
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	cr_expect_eq(m.pos, len, "read %zu bytes of a %zu-byte body", m.pos, len);
	cr_expect_eq(res.body_in, len);
	snprintf(want, sizeof(want), "%zu", len);
	cr_expect_field(&m, "body_len", want);
	cr_expect_field(&m, "content_length", want);
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, len));
	cr_expect_field(&m, "body_fnv", want);
	free(body);
	free(m.out);
}

Test(cgi, chunked_body_without_content_length)
{
	size_t len = 300 * 1024 + 7;
	char *body = random_body(len);
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char want[32];

	s.max_body = len;
	mem_init(&m, body, len);
	cr_assert_eq(run(echo, "", NULL, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_eq(res.body_in, len);
	snprintf(want, sizeof(want), "%zu", len);
	cr_expect_field(&m, "body_len", want);
	cr_expect_field(&m, "content_length", "(unset)");
	snprintf(want, sizeof(want), "%016llx", (unsigned long long)fnv(body, len));
	cr_expect_field(&m, "body_fnv", want);
	free(body);
	free(m.out);
}

Test(cgi, content_length_over_max_body_is_413_without_running)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char done[128], dh[160];
	const char *extra[] = { "CONTENT_LENGTH=2000", dh, NULL };
	char *body = random_body(2000);

	snprintf(done, sizeof(done), "%s/done", tmpdir);
	snprintf(dh, sizeof(dh), "HTTP_X_DONE_FILE=%s", done);
	s.content_length = 2000;
	s.max_body = 1000;
	mem_init(&m, body, 2000);
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), 0);
	cr_expect_eq(res.status, 413);
	cr_expect_eq(res.head_sent, 0);
	cr_expect_str_eq(res.error, "request body of 2000 bytes exceeds max_body (1000 bytes)");
	cr_expect(res.too_large);
	cr_expect_str_eq(m.out,
		"Status: 413 Content Too Large\r\n"
		"Cache-Control: no-store\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"\r\n"
		"Content Too Large: the request body exceeds this path's max-body\n");
	cr_expect_eq(m.reads, 0);
	cr_expect(!exists(done));
	free(body);
	mem_free(&m);
}

Test(cgi, streamed_body_over_max_body_is_413_and_kills)
{
	size_t len = MiB;
	char *body = random_body(len);
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char done[128], dh[160];
	const char *extra[] = { dh, NULL };

	snprintf(done, sizeof(done), "%s/done", tmpdir);
	snprintf(dh, sizeof(dh), "HTTP_X_DONE_FILE=%s", done);
	s.max_body = 100 * 1024;
	s.error_format = RESPOND_JSON;
	mem_init(&m, body, len);
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), 0);
	cr_expect_eq(res.status, 413);
	cr_expect_str_eq(res.error, "request body exceeds max_body (102400 bytes); script killed");
	cr_expect(res.too_large);
	cr_expect_eq(strncmp(m.out, "Status: 413 Content Too Large\r\n", 31), 0, "%s", m.out);
	cr_expect_not_null(strstr(m.out, "application/json"), "%s", m.out);
	cr_expect_leq(m.pos, 100 * 1024 + 1, "read %zu bytes past the limit", m.pos);
	cr_expect_leq(res.body_in, 100 * 1024);
	/* Killed before it saw the end of its input: it never got to make
	 * the file, and it is reaped, so it never will. */
	cr_expect(!exists(done));
	free(body);
	mem_free(&m);
}

Test(cgi, script_closing_stdin_early)
{
	/* Writing to a script that closed its stdin raises SIGPIPE; this test
	 * process does not ignore it, and must survive. */
	size_t len = MiB;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;
	sigset_t pend;

	signal(SIGPIPE, SIG_DFL);
	body_req(&rq, len, &s, &m);
	cr_assert_eq(run(echo, "close-stdin", rq.extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	cr_expect_field(&m, "body_len", "0");
	cr_expect_lt(res.body_in, len);
	sigpending(&pend);
	cr_expect_eq(sigismember(&pend, SIGPIPE), 0);
	free(rq.body);
	free(m.out);
}

Test(cgi, early_writer_does_not_deadlock)
{
	size_t len = MiB;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;
	size_t blen;

	body_req(&rq, len, &s, &m);
	cr_assert_eq(run(echo, "early", rq.extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	const char *b = resp_body(&m, &blen);
	cr_expect_eq(blen, MiB);
	cr_expect_eq(res.body_out, MiB);
	cr_expect(blen > 0 && b[0] == 'a' && b[blen - 1] == (char)('a' + (MiB - 1) % 26));
	free(rq.body);
	free(m.out);
}

Test(cgi, early_writer_then_reader_gets_the_whole_body)
{
	size_t len = MiB + 3;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;
	char want[96];

	body_req(&rq, len, &s, &m);
	cr_assert_eq(run(echo, "early-echo", rq.extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	cr_expect_eq(res.body_in, len);
	const char *tail = strstr(m.out + m.len - 60, "\nbody_len=");
	cr_assert_not_null(tail);
	snprintf(want, sizeof(want), "\nbody_len=%zu\nbody_fnv=%016llx\n", len,
		 (unsigned long long)fnv(rq.body, len));
	cr_expect_str_eq(tail, want);
	free(rq.body);
	free(m.out);
}

Test(cgi, answer_first_then_read_gets_the_whole_body)
{
	size_t len = MiB + 5;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;
	char done[128], dh[160], got[128] = "", want[128];

	snprintf(done, sizeof(done), "%s/done", tmpdir);
	snprintf(dh, sizeof(dh), "HTTP_X_DONE_FILE=%s", done);
	body_req(&rq, len, &s, &m);
	rq.extra[1] = dh;
	cr_assert_eq(run(echo, "answer-first", rq.extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	cr_expect_str_eq(resp_body(&m, NULL), "accepted\n");
	cr_expect_eq(res.body_in, len);
	FILE *f = fopen(done, "r");
	cr_assert_not_null(f, "the script did not finish reading its body");
	cr_assert_not_null(fgets(got, sizeof(got), f));
	fclose(f);
	snprintf(want, sizeof(want), "%zu %016llx\n", len, (unsigned long long)fnv(rq.body, len));
	cr_expect_str_eq(got, want);
	free(rq.body);
	mem_free(&m);
}

Test(cgi, big_output_streamed)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	size_t blen, n = 5 * MiB + 11;
	char q[64];

	snprintf(q, sizeof(q), "bigout=%zu", n);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, q, NULL, &s, &m, &res), 0, "%s", res.error);
	const char *b = resp_body(&m, &blen);
	cr_assert_eq(blen, n);
	cr_expect_eq(res.body_out, n);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		if (b[i] != (char)('a' + i % 26))
			bad++;
	cr_expect_eq(bad, 0);
	free(m.out);
}

/* ------------------------------------------------------------------ */
/* Failures before the head: 502                                       */

static const char bad_gateway[] =
	"Status: 502 Bad Gateway\r\n"
	"Cache-Control: no-store\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"\r\n"
	"Bad Gateway: the application failed to answer\n";

Test(cgi, crash_is_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "crash", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 502);
	cr_expect_eq(res.head_sent, 0);
	cr_expect_str_eq(res.error, "script killed by signal 11 before its response head was complete");
	cr_expect_str_eq(m.out, bad_gateway);
	mem_free(&m);
}

Test(cgi, crash_with_a_body_waiting_is_502)
{
	size_t len = MiB;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;

	body_req(&rq, len, &s, &m);
	cr_assert_eq(run(echo, "crash", rq.extra, &s, &m, &res), 0);
	cr_expect_eq(res.status, 502);
	cr_expect_str_eq(res.error, "script killed by signal 11 before its response head was complete");
	cr_expect_lt(res.body_in, len);
	free(rq.body);
	mem_free(&m);
}

Test(cgi, garbage_is_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "garbage", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 502);
	cr_expect_str_eq(res.error,
		"script output: malformed header line \"this is not a CGI head\" (expected \"Name: value\")");
	cr_expect_str_eq(m.out, bad_gateway);
	mem_free(&m);
}

/* A 1xx Status (an interim response) is no final answer: malformed, 502,
 * as from a FastCGI application. */
Test(cgi, interim_status_is_502)
{
	static const char *const queries[] = { "status=100", "status=199" };
	static const char *const errors[] = {
		"script output: malformed Status header \"100\" (an interim 1xx status; expected a final code from 200 to 599)",
		"script output: malformed Status header \"199\" (an interim 1xx status; expected a final code from 200 to 599)",
	};

	for (size_t i = 0; i < 2; i++) {
		struct proxy_spec s = spec_default();
		struct proxy_result res;
		struct mem m;

		mem_init(&m, NULL, 0);
		cr_assert_eq(run(echo, queries[i], NULL, &s, &m, &res), 0, "%s", queries[i]);
		cr_expect_eq(res.status, 502, "%s: %d", queries[i], res.status);
		cr_expect_str_eq(res.error, errors[i]);
		cr_expect_str_eq(m.out, bad_gateway, "%s", queries[i]);
		mem_free(&m);
	}
}

Test(cgi, hang_times_out_with_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	s.timeout_ms = 300;
	mem_init(&m, NULL, 0);
	int64_t t0 = clock_mono_ms();
	cr_assert_eq(run(echo, "hang", NULL, &s, &m, &res), 0);
	int64_t took = clock_mono_ms() - t0;
	cr_expect_eq(res.status, 502);
	cr_expect_str_eq(res.error, "script timed out after 300 ms");
	cr_expect_str_eq(m.out, bad_gateway);
	cr_expect_lt(took, 10000, "took %lld ms", (long long)took);
	mem_free(&m);
}

/* script timeouts count only the time the script is waited for: a web
 * server that takes 100 ms for each byte of an 8-byte body and for each
 * write of the answer does not time out a script with 300 ms. */
Test(cgi, slow_web_server_is_not_the_scripts_time)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	const char *extra[] = { "CONTENT_LENGTH=8", NULL };

	s.timeout_ms = 300;
	s.content_length = 8;
	mem_init(&m, "abcdefgh", 8);
	m.read_max = 1;
	m.delay_ms = 100;
	int64_t t0 = clock_mono_ms();
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), 0, "%s", res.error);
	int64_t took = clock_mono_ms() - t0;
	cr_expect_eq(res.status, 200, "%s", res.error);
	cr_expect_str_eq(res.error, "");
	cr_expect_geq(took, 800, "took %lld ms", (long long)took);
	cr_expect_field(&m, "body_len", "8");
	free(m.out);
}

/* dead: gone, or a zombie waiting for init to reap it. */
static int
dead(long pid)
{
	char path[64], buf[512];

	if (kill((pid_t)pid, 0) != 0)
		return errno == ESRCH;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	return p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* dead() within 2 s. */
static int
dies(long pid)
{
	for (int i = 0; i < 200 && !dead(pid); i++)
		usleep(10000);
	return dead(pid);
}

/* Where echo_cgi's hang and background write "SCRIPT_PID CHILD_PID": the
 * file (removed) and the variable that names it, "HTTP_X_PID_FILE=...". */
static void
pid_file(char pidfile[128], char ph[160])
{
	snprintf(pidfile, 128, "%s/pids", tmpdir);
	snprintf(ph, 160, "HTTP_X_PID_FILE=%s", pidfile);
	unlink(pidfile);
}

/* echo_cgi with query under a 1000 ms timeout; the pids it wrote in
 * *script and *child. */
static void
run_with_pids(const char *query, struct mem *m, struct proxy_result *res,
	      long *script, long *child)
{
	struct proxy_spec s = spec_default();
	char pidfile[128], ph[160];
	const char *extra[] = { ph, NULL };

	pid_file(pidfile, ph);
	s.timeout_ms = 1000;
	mem_init(m, NULL, 0);
	cr_assert_eq(run(echo, query, extra, &s, m, res), 0, "%s", res->error);
	FILE *f = fopen(pidfile, "r");
	cr_assert_not_null(f, "the script wrote no pid file");
	cr_assert_eq(fscanf(f, "%ld %ld", script, child), 2);
	fclose(f);
}

Test(cgi, timeout_kills_the_whole_process_group)
{
	struct proxy_result res;
	struct mem m;
	long script = 0, child = 0;

	run_with_pids("hang", &m, &res, &script, &child);
	cr_expect_eq(res.status, 502);
	cr_expect_str_eq(res.error, "script timed out after 1000 ms");
	cr_assert(script > 0 && child > 0);
	cr_expect(dies(script), "script %ld still runs", script);
	cr_expect(dies(child), "the script's child %ld still runs", child);
	if (!dead(child))
		kill((pid_t)child, SIGKILL);
	mem_free(&m);
}

/* A gateway killed with SIGKILL (mod_fcgid does, some 9 s into a stop)
 * leaves no script behind: the kernel kills it (PR_SET_PDEATHSIG). */
Test(cgi, gateway_killed_takes_the_script_with_it)
{
	char pidfile[128], ph[160];
	long script = 0, child = 0;

	pid_file(pidfile, ph);
	pid_t gw = fork();
	cr_assert_geq(gw, 0);
	if (gw == 0) {
		struct proxy_spec s = spec_default();
		struct proxy_result res;
		struct mem m;
		const char *extra[] = { ph, NULL };
		s.timeout_ms = 60000;
		mem_init(&m, NULL, 0);
		run(echo, "hang", extra, &s, &m, &res);
		_exit(0);
	}
	for (int i = 0; i < 500 && script == 0; i++) {
		FILE *f = fopen(pidfile, "r");
		if (f != NULL) {
			if (fscanf(f, "%ld %ld", &script, &child) != 2)
				script = 0;
			fclose(f);
		}
		if (script == 0)
			usleep(10000);
	}
	cr_assert(script > 0 && child > 0, "the script wrote no pid file");
	cr_assert(!dead(script));
	cr_assert_eq(kill(gw, SIGKILL), 0);
	cr_assert_eq(waitpid(gw, NULL, 0), gw);
	cr_expect(dies(script), "script %ld outlived its gateway", script);
	/* what the script started itself is not covered (documented) */
	kill((pid_t)child, SIGKILL);
	if (!dead(script))
		kill((pid_t)script, SIGKILL);
}

Test(cgi, missing_script_is_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run("/nonexistent/dir/x.cgi", "", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 502);
	cr_expect_str_eq(res.error, "cannot run script /nonexistent/dir/x.cgi: No such file or directory");
	cr_expect_str_eq(m.out, bad_gateway);
	mem_free(&m);
}

Test(cgi, script_not_executable_is_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	char path[160], want[256];
	int fd;

	snprintf(path, sizeof(path), "%s/plain.cgi", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(path, "", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 502);
	snprintf(want, sizeof(want), "cannot run script %s: Permission denied", path);
	cr_expect_str_eq(res.error, want);
	mem_free(&m);
}

/* ------------------------------------------------------------------ */
/* Failures after the head: the response stands, cut short             */

Test(cgi, crash_after_head_keeps_200)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "crash-after-head", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 200);
	cr_expect_eq(res.head_sent, 1);
	cr_expect_str_eq(res.error, "script killed by signal 11 after its response head was sent");
	cr_expect_str_eq(resp_body(&m, NULL), "partial\n");
	mem_free(&m);
}

Test(cgi, hang_after_head_times_out)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	/* Long enough for the script to write its head under valgrind. */
	s.timeout_ms = 1500;
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "hang-after-head", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "script timed out after 1500 ms; response body cut short");
	cr_expect(!res.too_large);
	cr_expect_str_eq(resp_body(&m, NULL), "partial\n");
	mem_free(&m);
}

/* A script that answers and exits 0, leaving a child in the background
 * that keeps its output open: the answer can only end at the timeout (as
 * behind Apache), the whole process group is killed then, and the error
 * says the script exited, not that it timed out.  Likewise before a head
 * (502).  A background child left running is killed here, not leaked. */
static void
background(const char *query, int status, const char *error)
{
	struct proxy_result res;
	struct mem m;
	long script = 0, child = 0;

	run_with_pids(query, &m, &res, &script, &child);
	cr_expect_eq(res.status, status, "%s", res.error);
	cr_expect_str_eq(res.error, error);
	cr_expect(dies(child), "the script's child %ld still runs", child);
	if (!dead(child))
		kill((pid_t)child, SIGKILL);
	if (status == 200)
		cr_expect_field(&m, "query", query);
	else
		cr_expect_str_eq(m.out, bad_gateway);
	free(m.out);
}

Test(cgi, background_child_keeping_the_output_open)
{
	background("background", 200,
		   "script exited with status 0, but another process (one it started?) kept its "
		   "output open until the timeout (1000 ms): the response was ended there and its "
		   "process group killed");
	background("background=nohead", 502,
		   "script exited with status 0 before its response head was complete, and another "
		   "process (one it started?) kept its output open until the timeout (1000 ms): "
		   "its process group was killed");
}

static double
now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The pid is gone entirely: exited and reaped (no zombie), within ms. */
static int
gone_within(long pid, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
			return 1;
		usleep(10000);
	}
	return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* A script that answers, closes its output and goes on working: its
 * answer ends when its output closes (a review found it held until
 * upstream-timeout, then logged as a timeout); the script is left to
 * finish and is reaped (no zombie), or its process group is killed at
 * the deadline. */
Test(cgi, answer_ends_when_the_output_closes)
{
	struct proxy_result res;
	struct mem m;
	long script = 0, child = 0;
	struct proxy_spec s = spec_default();
	char pidfile[128], ph[160];
	const char *extra[] = { ph, NULL };

	/* goes on 4 s, well within a 10 s timeout; the answer must come
	 * long before (a margin for valgrind starting the script) */
	pid_file(pidfile, ph);
	s.timeout_ms = 10000;
	mem_init(&m, NULL, 0);
	double t0 = now_s();
	cr_assert_eq(run(echo, "closeout=4000", extra, &s, &m, &res), 0, "%s", res.error);
	double took = now_s() - t0;
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	cr_expect_str_eq(resp_body(&m, NULL), "bye\n");
	cr_expect(took < 3.0, "the answer took %.2f s: it waited for the script", took);
	FILE *f = fopen(pidfile, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%ld %ld", &script, &child), 2);
	fclose(f);
	cr_expect(!dead(script), "the script should still run");
	cr_expect(gone_within(script, 8000), "script %ld not reaped", script);
	mem_free(&m);

	/* goes on 30 s, past a 1 s timeout: killed at the deadline */
	pid_file(pidfile, ph);
	s.timeout_ms = 1000;
	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "closeout=30000", extra, &s, &m, &res), 0, "%s", res.error);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "");
	f = fopen(pidfile, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%ld %ld", &script, &child), 2);
	fclose(f);
	cr_expect(gone_within(script, 5000), "script %ld not killed at its deadline", script);
	mem_free(&m);
}

Test(cgi, exit_status_noted)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	cr_assert_eq(run(echo, "exit=3", NULL, &s, &m, &res), 0);
	cr_expect_eq(res.status, 200);
	cr_expect_str_eq(res.error, "script exited with status 3 after its response head was sent");
	cr_expect_field(&m, "query", "exit=3");
	mem_free(&m);
}

/* ------------------------------------------------------------------ */
/* Clients that go away                                                */

Test(cgi, client_gone_mid_response)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	m.fail_write_after = 100 * 1024;
	cr_assert_eq(run(echo, "bigout=4194304", NULL, &s, &m, &res), -1);
	cr_expect_eq(res.client_gone, 1);
	cr_expect_eq(res.status, 200);
	cr_expect_eq(res.head_sent, 1);
	cr_expect_eq(m.failed_writes, 1);
	cr_expect_str_eq(res.error, "client went away during the response body");
	cr_expect_lt(res.body_out, 100 * 1024);
	free(m.out);
}

Test(cgi, client_gone_before_head)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	m.fail_write_after = 0;
	cr_assert_eq(run(echo, "", NULL, &s, &m, &res), -1);
	cr_expect_eq(res.client_gone, 1);
	cr_expect_eq(res.status, 0);
	cr_expect_eq(res.head_sent, 0);
	cr_expect_str_eq(res.error, "client went away before the response head was sent");
	mem_free(&m);
}

Test(cgi, client_gone_before_our_502)
{
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;

	mem_init(&m, NULL, 0);
	m.fail_write_after = 0;
	cr_assert_eq(run(echo, "crash", NULL, &s, &m, &res), -1);
	cr_expect_eq(res.client_gone, 1);
	cr_expect_eq(res.status, 0);
	cr_expect_str_eq(res.error, "script killed by signal 11 before its response head was complete");
	mem_free(&m);
}

Test(cgi, client_read_fails)
{
	size_t len = MiB;
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	struct body_req rq;

	body_req(&rq, len, &s, &m);
	m.fail_read_at = 200 * 1024;
	cr_assert_eq(run(echo, "", rq.extra, &s, &m, &res), -1);
	cr_expect_eq(res.client_gone, 1);
	cr_expect_eq(res.status, 0);
	cr_expect_eq(m.len, 0);
	cr_expect_str_eq(res.error, "client went away while sending the request body");
	free(rq.body);
	mem_free(&m);
}

Test(cgi, body_shorter_than_content_length)
{
	char body[500];
	struct proxy_spec s = spec_default();
	struct proxy_result res;
	struct mem m;
	const char *extra[] = { "CONTENT_LENGTH=1000", NULL };

	memset(body, 'x', sizeof(body));
	s.content_length = 1000;
	mem_init(&m, body, sizeof(body));
	cr_assert_eq(run(echo, "", extra, &s, &m, &res), -1);
	cr_expect_eq(res.client_gone, 1);
	cr_expect_eq(m.len, 0);
	cr_expect_str_eq(res.error, "request body ended after 500 of 1000 bytes");
	mem_free(&m);
}
