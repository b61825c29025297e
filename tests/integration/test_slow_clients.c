/*
 * test_slow_clients.c - client-timeout: a web server that stalls never
 * holds a rategate worker for longer than that.  rategate (-j 4,
 * client-timeout 1s, upstream-timeout 1s) on a unix socket, spoken to in
 * raw FastCGI records from this file, with tests/apps/echo_fcgi and
 * echo_cgi behind it:
 *
 *   - 4 connections (= -j) that send FCGI_BEGIN_REQUEST and nothing more,
 *     or stop inside their params, or send nothing at all, are closed
 *     after client-timeout and logged once each (event=client-timeout,
 *     never a bad request); a request behind them is answered within
 *     client-timeout plus a margin, and SIGTERM still stops at once;
 *   - a body that stops arriving gets 408 Request Timeout after
 *     client-timeout, a client-timeout line with client and path and no
 *     upstream-error: a body of known length never reaches the
 *     application (FastCGI or CGI), a chunked one is aborted there;
 *   - a body trickled a byte every 400 ms completes (200, all of it),
 *     although it takes longer than upstream-timeout: the application's
 *     timer does not run while the web server is waited for;
 *   - 4 answers nobody reads free their workers after client-timeout;
 *   - params cut by a hang-up or an FCGI_ABORT_REQUEST are client-gone,
 *     not bad requests;
 *   - a web server that sends the empty FCGI_STDIN record ending a body
 *     late and then hangs up is client-gone at once, not the
 *     application's timeout.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "servers.h"

static const char rules[] =
	"storage          memory\n"
	"client-timeout   1s\n"
	"upstream-timeout 1s\n"
	"upstream         fcgi+unix://@DIR@/app.sock\n"
	"default          1000/minute\n"
	"/cgi/**          1000/minute  upstream=cgi:@CGI@\n"
	"/keyed           10/minute    key=header:X-Key  missing-key=deny\n"
	"/bw              1000/minute  bandwidth=100/minute\n"
	"stats            /rg-stats\n";

static pid_t rg, app;

static const char *
logs(void)
{
	static const char *const files[] = { "rategate log", "rategate.log",
					     "", "rategate.out", NULL };

	return srv_logs(files);
}

static void
setup(void)
{
	char cgi[SRV_PATH_MAX];

	srv_setup();
	srv_built("tests/apps/echo_cgi", cgi);
	const char *pairs[] = { "@DIR@", srv_dir, "@CGI@", cgi, NULL };
	srv_write_subst("site.rules", rules, pairs, 0644);
	app = srv_start_echo_fcgi(0, srv_path("app.sock"), 16, srv_path("count"));
	char listen[SRV_PATH_MAX + 8];
	snprintf(listen, sizeof(listen), "unix:%s", srv_path("rg.sock"));
	rg = srv_start_rategate(srv_path("site.rules"), listen, 4,
				srv_path("rategate.log"), srv_path("rategate.out"));
}

static void
teardown(void)
{
	srv_cleanup();
	unsetenv("ECHO_FCGI_COUNT_FILE");
}

TestSuite(slow, .init = setup, .fini = teardown, .timeout = 120);

/* rategate stopped and started again with -j workers on srv_dir/file,
 * written from text first unless text is NULL, on the same socket and
 * log. */
static void
restart_on(const char *file, const char *text, int workers)
{
	char listen[SRV_PATH_MAX + 8];

	cr_assert_eq(srv_stop(rg, 10), 0);
	if (text != NULL)
		srv_write(file, text, 0644);
	snprintf(listen, sizeof(listen), "unix:%s", srv_path("rg.sock"));
	rg = srv_start_rategate(srv_path(file), listen, workers,
				srv_path("rategate.log"), srv_path("rategate.out"));
}

/* ------------------------------------------------------------------ */
/* FastCGI from the web server's side                                  */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		cr_assert_not_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* One record of request 1 (content up to 65535 bytes). */
static void
record(struct buf *b, int type, const void *content, size_t n)
{
	unsigned char h[8] = { 1, (unsigned char)type, 0, 1,
			       (unsigned char)(n >> 8), (unsigned char)n, 0, 0 };

	cr_assert(n <= 65535);
	buf_add(b, h, 8);
	if (n > 0)
		buf_add(b, content, n);
}

static void
nv(struct buf *b, const char *name, const char *value)
{
	unsigned char l[2] = { (unsigned char)strlen(name), (unsigned char)strlen(value) };

	cr_assert(strlen(name) < 128 && strlen(value) < 128);
	buf_add(b, l, 2);
	buf_add(b, name, strlen(name));
	buf_add(b, value, strlen(value));
}

static void
begin(struct buf *b, int role)
{
	unsigned char body[8] = { 0, (unsigned char)role, 0, 0, 0, 0, 0, 0 };

	record(b, 1, body, sizeof(body));
}

/* BEGIN_REQUEST (responder) and the params of method uri from 127.0.0.1,
 * with CONTENT_LENGTH when content_length >= 0, ended. */
static void
head(struct buf *b, const char *method, const char *uri, long content_length)
{
	struct buf p = { 0 };
	char path[128], cl[32];
	const char *q = strchr(uri, '?');

	snprintf(path, sizeof(path), "%.*s", (int)(q ? q - uri : (long)strlen(uri)), uri);
	nv(&p, "REQUEST_METHOD", method);
	nv(&p, "REQUEST_URI", uri);
	nv(&p, "SCRIPT_NAME", path);
	nv(&p, "QUERY_STRING", q ? q + 1 : "");
	nv(&p, "REMOTE_ADDR", "127.0.0.1");
	nv(&p, "SERVER_PROTOCOL", "HTTP/1.1");
	if (content_length >= 0) {
		snprintf(cl, sizeof(cl), "%ld", content_length);
		nv(&p, "CONTENT_LENGTH", cl);
	}
	begin(b, 1);
	record(b, 4, p.p, p.len);
	record(b, 4, NULL, 0);
	free(p.p);
}

/* A connection to the unix socket at path. */
static int
conn_to(const char *path)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0,
		     "connect %s: %s", path, strerror(errno));
	return fd;
}

static int
conn(void)
{
	return conn_to(srv_path("rg.sock"));
}

static void
send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		cr_assert(w > 0, "send: %s\n%s", strerror(errno), logs());
		c += w;
		n -= (size_t)w;
	}
}

static void
send_buf(int fd, struct buf *b)
{
	send_all(fd, b->p, b->len);
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

struct answer {
	char *out;              /* FCGI_STDOUT, NUL-terminated */
	size_t len;
	int ended;              /* FCGI_END_REQUEST came */
	int closed;             /* then (or instead) the connection closed */
	double took;            /* seconds until END_REQUEST or the close */
};

/* Read records until FCGI_END_REQUEST and the close (to_end: until
 * FCGI_END_REQUEST only, on a connection kept open), or timeout_s. */
static struct answer
answer_upto(int fd, double timeout_s, int to_end)
{
	struct answer a = { 0 };
	struct buf in = { 0 };
	double t0 = srv_now(), end = t0 + timeout_s;
	char chunk[65536];
	size_t off = 0;

	a.out = calloc(1, 1);
	while (!a.closed && !(to_end && a.ended) && srv_now() < end) {
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n <= 0) {
			a.closed = 1;
			if (!a.ended)
				a.took = srv_now() - t0;
			break;
		}
		buf_add(&in, chunk, (size_t)n);
		while (in.len - off >= 8) {
			const unsigned char *h = in.p + off;
			size_t clen = (size_t)h[4] << 8 | h[5], rl = 8 + clen + h[6];
			if (in.len - off < rl)
				break;
			if (h[1] == 6 && clen > 0) {
				a.out = realloc(a.out, a.len + clen + 1);
				memcpy(a.out + a.len, h + 8, clen);
				a.len += clen;
				a.out[a.len] = '\0';
			} else if (h[1] == 3) {
				a.ended = 1;
				a.took = srv_now() - t0;
			}
			off += rl;
		}
	}
	free(in.p);
	return a;
}

/* Records until FCGI_END_REQUEST and the close, or timeout_s. */
static struct answer
answer(int fd, double timeout_s)
{
	return answer_upto(fd, timeout_s, 0);
}

/* The answer's status code (its "Status: NNN" line), or 0. */
static int
status_of(const struct answer *a)
{
	const char *s = strstr(a->out, "Status: ");

	return s ? atoi(s + 8) : 0;
}

/* A whole request on a new connection, its answer within timeout_s. */
static struct answer
request(const char *method, const char *uri, const char *body, double timeout_s)
{
	struct buf b = { 0 };
	int fd = conn();

	head(&b, method, uri, body ? (long)strlen(body) : -1);
	if (body != NULL && body[0] != '\0')
		record(&b, 5, body, strlen(body));
	record(&b, 5, NULL, 0);
	send_buf(fd, &b);
	struct answer a = answer(fd, timeout_s);
	close(fd);
	return a;
}

static int
app_calls(void)
{
	return srv_read_int(srv_path("count"));
}

/* Wait up to timeout_s for the log to hold needle n times. */
static int
wait_log(const char *needle, int n, double timeout_s)
{
	double end = srv_now() + timeout_s;
	int c;

	while ((c = srv_count_in_file(srv_path("rategate.log"), needle)) < n &&
	       srv_now() < end)
		srv_sleep_ms(50);
	return c;
}

/* The statistics, as JSON text (malloc'd). */
static char *
stats(void)
{
	struct answer a = request("GET", "/rg-stats", NULL, 5 * srv_slow());

	cr_assert_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	return a.out;
}

/* A margin for what should come at once (valgrind runs slower). */
static double
margin(void)
{
	return 1.5 * srv_slow();
}

/* ------------------------------------------------------------------ */

Test(slow, stalled_heads_do_not_hold_the_workers)
{
	int fds[5];
	struct buf b = { 0 };

	/* three stop after BEGIN_REQUEST (the review's repro) */
	for (int i = 0; i < 3; i++) {
		fds[i] = conn();
		begin(&b, 1);
		send_buf(fds[i], &b);
	}
	/* one stops inside a name-value pair of its params */
	fds[3] = conn();
	begin(&b, 1);
	unsigned char part[] = { 1, 4, 0, 1, 0, 40, 0, 0, 14, 3, 'R', 'E', 'Q' };
	buf_add(&b, part, sizeof(part));
	send_buf(fds[3], &b);
	/* one sends nothing at all (it waits for a free worker first) */
	fds[4] = conn();
	srv_sleep_ms(200);      /* all four workers hold a stalled one */

	double t0 = srv_now();
	struct answer a = request("GET", "/f", NULL, 10 * srv_slow());
	double took = srv_now() - t0;
	cr_assert_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	cr_expect(a.ended);
	cr_expect_lt(took, 1.0 + margin(), "answered after %.1f s\n%s", took, logs());
	free(a.out);

	/* each stalled connection was closed without an answer */
	for (int i = 0; i < 5; i++) {
		struct answer s = answer(fds[i], 3 + margin());
		cr_expect(s.closed && !s.ended && s.len == 0,
			  "connection %d: closed %d, ended %d, %zu bytes", i, s.closed,
			  s.ended, s.len);
		cr_expect_lt(s.took, 2.0 + margin(), "connection %d closed after %.1f s", i, s.took);
		free(s.out);
		close(fds[i]);
	}
	cr_expect_eq(wait_log("event=client-timeout", 5, 2), 5, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "the web server sent an incomplete request (16 bytes, its params not complete) and then nothing for 1 s; connection closed"),
		     3, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "the web server opened a connection and sent nothing for 1 s; closed"),
		     1, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "bad-request"), 0, "%s", logs());
	char *st = stats();
	cr_expect_not_null(strstr(st, "\"client_timeouts\":5,"), "%s", st);
	cr_expect_not_null(strstr(st, "\"bad_request\":0"), "%s", st);
	free(st);

	/* stalled connections do not hold up a stop either */
	for (int i = 0; i < 4; i++) {
		fds[i] = conn();
		begin(&b, 1);
		send_buf(fds[i], &b);
	}
	srv_sleep_ms(200);
	t0 = srv_now();
	cr_expect_eq(srv_stop(rg, 10), 0, "%s", logs());
	took = srv_now() - t0;
	cr_expect_lt(took, margin(), "stopped after %.1f s\n%s", took, logs());
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	srv_expect_no_sanitizer(srv_path("rategate.out"));
}

/* POST uri with Content-Length cl (-1: none, a chunked body), 3 body
 * bytes, then nothing. */
static struct answer
stall_body(const char *uri, long cl)
{
	struct buf b = { 0 };
	int fd = conn();

	head(&b, "POST", uri, cl);
	record(&b, 5, "abc", 3);
	send_buf(fd, &b);
	struct answer a = answer(fd, 5 + margin());
	close(fd);
	return a;
}

Test(slow, a_stalled_body_gets_408)
{
	int calls = app_calls();

	/* a body of known length: the application is never called */
	struct answer a = stall_body("/f", 20);
	cr_expect_eq(status_of(&a), 408, "%s\n%s", a.out, logs());
	cr_expect_not_null(strstr(a.out, "Request Timeout: the request body stopped arriving"), "%s", a.out);
	cr_expect(a.ended && a.took > 0.9 && a.took < 1.0 + margin(),
		  "ended %d after %.1f s\n%s", a.ended, a.took, logs());
	free(a.out);
	cr_expect_eq(app_calls(), calls, "the application saw the request");
	cr_expect_eq(wait_log("event=client-timeout", 1, 2), 1, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "level=info event=client-timeout status=408 client=127.0.0.1 key=\"addr=127.0.0.1\" "
			   "rule=- path=/f method=POST msg=\"the web server sent 3 of 20 bytes of the request body "
			   "and then nothing for 1 s; the application was not called\"");

	/* the same for the CGI script */
	a = stall_body("/cgi/x", 20);
	cr_expect_eq(status_of(&a), 408, "%s\n%s", a.out, logs());
	free(a.out);
	cr_expect_eq(wait_log("event=client-timeout", 2, 2), 2, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "rule=/cgi/** path=/cgi/x method=POST msg=\"the web server sent 3 of 20 bytes "
			   "of the request body and then nothing for 1 s; the application was not called\"");

	/* a chunked body streams: the application's request is aborted */
	a = stall_body("/f?chunked", -1);
	cr_expect_eq(status_of(&a), 408, "%s\n%s", a.out, logs());
	cr_expect(a.took < 1.0 + margin(), "after %.1f s", a.took);
	free(a.out);
	cr_expect_eq(wait_log("event=client-timeout", 3, 2), 3, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "msg=\"the web server sent 3 bytes of the request body and then nothing for 1 s; "
			   "the application's request was aborted\"");

	/* never blamed on the application */
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-error"), 0, "%s", logs());
	char *st = stats();
	cr_expect_not_null(strstr(st, "\"upstream_errors\":0,\"client_timeouts\":3,"), "%s", st);
	free(st);
}

/* POST uri with a 6-byte body, a byte every 400 ms; with its length
 * (cl 6: read whole before the application is called) or chunked (cl -1:
 * streamed to the application as it comes). */
static struct answer
trickle(const char *uri, long cl)
{
	struct buf b = { 0 };
	int fd = conn();

	head(&b, "POST", uri, cl);
	send_buf(fd, &b);
	for (int i = 0; i < 6; i++) {
		srv_sleep_ms(400);
		record(&b, 5, &"abcdef"[i], 1);
		send_buf(fd, &b);
	}
	record(&b, 5, NULL, 0);
	send_buf(fd, &b);
	struct answer a = answer(fd, 5 * srv_slow());
	close(fd);
	return a;
}

Test(slow, a_trickled_body_completes)
{
	/* 2.4 s in all: more than upstream-timeout, never 1 s without a byte */
	static const char *const uris[] = { "/f", "/cgi/x" };
	static const long cls[] = { 6, -1 };
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < 2; k++) {
			struct answer a = trickle(uris[i], cls[k]);
			cr_expect_eq(status_of(&a), 200, "%s, length %ld: %s\n%s", uris[i],
				     cls[k], a.out, logs());
			cr_expect_not_null(strstr(a.out, "\nbody_len=6\n"), "%s", a.out);
			free(a.out);
		}
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-error"), 0, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "client-timeout"), 0, "%s", logs());
}

/* Connections trickling a chunked body, a byte every 300 ms, until stop
 * is set (plain sends: no assertion outside the test's thread). */
struct trickler {
	int fd[6];
	atomic_int stop;
};

static void *
trickle_on(void *arg)
{
	struct trickler *t = arg;

	while (!atomic_load(&t->stop)) {
		srv_sleep_ms(300);
		for (int i = 0; i < 6; i++) {
			struct buf b = { 0 };
			record(&b, 5, "x", 1);
			if (send(t->fd[i], b.p, b.len, MSG_NOSIGNAL) < 0) {
				/* the answer tells */
			}
			free(b.p);
		}
	}
	return NULL;
}

/* GET uri: its status is want (its body holds text, when not NULL), and
 * it came within limit seconds.  Returns the seconds it took. */
static double
get_within(const char *uri, int want, const char *text, double limit)
{
	double t0 = srv_now();
	struct answer a = request("GET", uri, NULL, 2 * limit);
	double took = srv_now() - t0;

	cr_expect_eq(status_of(&a), want, "%s: %s\n%s", uri, a.out, logs());
	if (text != NULL)
		cr_expect_not_null(strstr(a.out, text), "%s", a.out);
	cr_expect_lt(took, limit, "%s after %.1f s\n%s", uri, took, logs());
	free(a.out);
	return took;
}

/* More slow requests than -j workers (six bodies trickled through, as
 * Apache mod_proxy_fcgi streams a slow client's) do not stop the site:
 * more workers are started while all are busy, so what rategate answers
 * itself (the statistics, a denial) is answered at once, and a request
 * for the application waits for one of the -j application slots at most
 * upstream-timeout, then is a 503 that says why.  With a fixed 4 workers
 * (found by a review) all of them waited until the trickles ended. */
Test(slow, trickles_on_every_worker_do_not_stop_the_site)
{
	struct trickler t = { .stop = 0 };
	pthread_t tid;
	double hold = 4 * srv_slow();   /* the trickles last this long */

	for (int i = 0; i < 6; i++) {
		struct buf b = { 0 };
		t.fd[i] = conn();
		head(&b, "POST", "/f", -1);
		record(&b, 5, "x", 1);
		send_buf(t.fd[i], &b);
	}
	cr_assert_eq(pthread_create(&tid, NULL, trickle_on, &t), 0);
	srv_sleep_ms((unsigned)(500 * srv_slow()));     /* six workers hold them */
	get_within("/rg-stats", 200, NULL, hold / 4);
	get_within("/keyed", 429, NULL, hold / 4);
	double t0 = srv_now();
	double took = get_within("/f", 503, "Service Unavailable: the application is busy", hold / 2);
	cr_expect_gt(took, 0.9, "503 after %.1f s (upstream-timeout 1 s)", took);
	struct answer a;
	double left = hold - (srv_now() - t0);
	if (left > 0)
		srv_sleep_ms((unsigned)(left * 1000));
	atomic_store(&t.stop, 1);
	pthread_join(tid, NULL);
	int ok = 0, busy = 0;
	for (int i = 0; i < 6; i++) {
		struct buf b = { 0 };
		record(&b, 5, NULL, 0);
		if (send(t.fd[i], b.p, b.len, MSG_NOSIGNAL) < 0) {
			/* answered already: read it */
		}
		free(b.p);
		a = answer(t.fd[i], 5 * srv_slow());
		ok += status_of(&a) == 200 && strstr(a.out, "\nbody_len=") != NULL;
		busy += status_of(&a) == 503;
		free(a.out);
		close(t.fd[i]);
	}
	cr_expect_eq(ok, 4, "the four trickles with an application slot complete\n%s", logs());
	cr_expect_eq(busy, 2, "the two without one were told 503\n%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "answered 503: all 4 application slots of this process (-j) stayed busy for 1 s (upstream-timeout); the application was not called"),
		     3, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "level=info event=workers msg=\"all 7 workers are busy: 8 now (at most 256)\"");
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "client-timeout"), 0, "%s", logs());
}

Test(slow, answers_nobody_reads_free_their_workers)
{
	int fds[4];
	struct buf b = { 0 };

	for (int i = 0; i < 4; i++) {
		fds[i] = conn();
		int small = 4096;
		setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		head(&b, "GET", "/f?bigout=20000000", -1);
		record(&b, 5, NULL, 0);
		send_buf(fds[i], &b);
	}
	srv_sleep_ms(300);
	double t0 = srv_now();
	struct answer a = request("GET", "/f", NULL, 10 * srv_slow());
	double took = srv_now() - t0;
	cr_assert_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	cr_expect_lt(took, 1.0 + margin(), "answered after %.1f s\n%s", took, logs());
	free(a.out);
	cr_expect_eq(wait_log("the web server read nothing of the answer for 1 s", 4, 2), 4,
		     "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "event=client-timeout status=200 client=127.0.0.1 key=\"addr=127.0.0.1\" "
			   "rule=- path=/f method=GET msg=\"the web server read nothing of the answer for 1 s");
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-error"), 0, "%s", logs());
}

Test(slow, params_cut_short_are_no_bad_request)
{
	struct buf b = { 0 };

	/* the web server hangs up inside the params */
	int fd = conn();
	begin(&b, 1);
	unsigned char part[] = { 1, 4, 0, 1, 0, 40, 0, 0, 14, 3, 'R', 'E', 'Q' };
	buf_add(&b, part, sizeof(part));
	send_buf(fd, &b);
	srv_sleep_ms(100);
	close(fd);
	/* an FCGI_ABORT_REQUEST between two params */
	fd = conn();
	begin(&b, 1);
	struct buf p = { 0 };
	nv(&p, "REQUEST_METHOD", "GET");
	record(&b, 4, p.p, p.len);
	free(p.p);
	record(&b, 2, NULL, 0);
	send_buf(fd, &b);
	struct answer a = answer(fd, 3 + margin());
	cr_expect(a.closed && a.len == 0, "closed %d, %zu bytes: %s", a.closed, a.len, a.out);
	free(a.out);
	close(fd);

	cr_expect_eq(wait_log("event=client-gone", 2, 2), 2, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "the web server closed the connection after 29 bytes of a request, before its params were complete");
	srv_expect_in_file(srv_path("rategate.log"),
			   "the web server closed the connection or aborted the request before its params were complete");
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "bad-request"), 0, "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "client-timeout"), 0, "%s", logs());
	/* and the next request is served */
	a = request("GET", "/f", NULL, 5 * srv_slow());
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
}

/* POST uri with body (CONTENT_LENGTH its length, 0 for ""), then, 200 ms
 * later, the empty FCGI_STDIN record that ends it (a web server may send
 * it late, after the last body byte), then a hang-up 100 ms after that. */
static void
late_end_then_hang_up(const char *uri, const char *body)
{
	struct buf b = { 0 };
	int fd = conn();

	head(&b, "POST", uri, (long)strlen(body));
	if (body[0] != '\0')
		record(&b, 5, body, strlen(body));
	send_buf(fd, &b);
	srv_sleep_ms(200);
	record(&b, 5, NULL, 0);
	send_buf(fd, &b);
	srv_sleep_ms(100);
	close(fd);
}

/* The late end of the body is taken off the connection and the watch
 * goes on: the hang-up after it stops the application at once and is
 * client-gone, for the FastCGI application and the CGI script, not an
 * upstream-error when upstream-timeout runs out. */
/* What libfcgi cannot read as a request (another version) used to close
 * the connection with no line at all (found by a review): now a
 * bad-request line names the first record, the statistics count it, and
 * the next request is served.  A management record of an unknown type is
 * answered FCGI_UNKNOWN_TYPE and the request after it on the same
 * connection is served (libfcgi dropped it, leaking 48 bytes). */
Test(slow, malformed_records_are_logged_bad_requests)
{
	static const unsigned char v2[] = { 2, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
	int fd = conn();
	send_all(fd, v2, sizeof(v2));
	struct answer a = answer(fd, 3);
	cr_expect(a.closed, "connection not closed");
	free(a.out);
	close(fd);
	cr_expect_eq(wait_log("level=warn event=bad-request msg=\"the web server sent what is not a FastCGI request rategate can read (first record: version 2, type 1, request id 1, 8 bytes); connection closed\"", 1, 3), 1,
		     "%s", logs());
	a = request("GET", "/after", NULL, 3);
	cr_expect_eq(status_of(&a), 200, "%s", a.out);
	free(a.out);

	/* an unknown management record, then a request, one connection */
	static const unsigned char mgmt[] = { 1, 77, 0, 0, 0, 2, 0, 0, 'x', 'x' };
	struct buf b = { 0 };
	buf_add(&b, mgmt, sizeof(mgmt));
	head(&b, "GET", "/after-mgmt", -1);
	record(&b, 5, NULL, 0);
	fd = conn();
	send_buf(fd, &b);
	unsigned char unk[16];
	cr_assert_eq(recv(fd, unk, sizeof(unk), MSG_WAITALL), 16);
	static const unsigned char want_unk[16] = { 1, 11, 0, 0, 0, 8, 0, 0, 77 };
	cr_expect(memcmp(unk, want_unk, 16) == 0, "not FCGI_UNKNOWN_TYPE(77)");
	a = answer(fd, 3);
	close(fd);
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
	cr_expect_eq(wait_log("level=warn event=bad-request msg=\"the web server sent a FastCGI management record of unknown type 77: answered FCGI_UNKNOWN_TYPE\"", 1, 3), 1,
		     "%s", logs());
	char *st = stats();
	cr_expect_not_null(strstr(st, "\"bad_request\":1"), "%s", st);
	free(st);

	/* three in a row, then a request: each answered, one line */
	for (int i = 0; i < 3; i++)
		buf_add(&b, mgmt, sizeof(mgmt));
	head(&b, "GET", "/after-three", -1);
	record(&b, 5, NULL, 0);
	fd = conn();
	send_buf(fd, &b);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(recv(fd, unk, sizeof(unk), MSG_WAITALL), 16);
		cr_expect(memcmp(unk, want_unk, 16) == 0, "#%d not FCGI_UNKNOWN_TYPE(77)", i);
	}
	a = answer(fd, 3);
	close(fd);
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
	cr_expect_eq(wait_log("of unknown type 77: answered FCGI_UNKNOWN_TYPE\"", 2, 3), 2,
		     "%s", logs());

	/* 65 in a row: no web server does that; one line, hung up */
	for (int i = 0; i < 65; i++)
		buf_add(&b, mgmt, sizeof(mgmt));
	fd = conn();
	send_buf(fd, &b);
	a = answer(fd, 3);
	close(fd);
	cr_expect(a.closed, "connection not closed");
	free(a.out);
	cr_expect_eq(wait_log("level=warn event=bad-request msg=\"the web server sent 65 management records of unknown types in a row; connection closed\"", 1, 3), 1,
		     "%s", logs());
	cr_expect_eq(wait_log("of unknown type 77: answered FCGI_UNKNOWN_TYPE\"", 3, 3), 3,
		     "%s", logs());
	st = stats();
	cr_expect_not_null(strstr(st, "\"bad_request\":2"), "%s", st);
	free(st);
}

/* Params over 1 MiB: 400, and a line with the client and the path. */
Test(slow, params_over_the_limit_are_400_with_client_and_path)
{
	struct buf b = { 0 }, p = { 0 };
	static char big[60000];

	memset(big, 'v', sizeof(big));
	begin(&b, 1);
	nv(&p, "REQUEST_METHOD", "GET");
	nv(&p, "REQUEST_URI", "/big/head?token=SECRET123");
	nv(&p, "REMOTE_ADDR", "192.0.2.9");
	record(&b, 4, p.p, p.len);
	free(p.p);
	for (int i = 0; i < 20; i++) {
		unsigned char l[5] = { 4, 0x80, 0, (unsigned char)(sizeof(big) >> 8),
				       (unsigned char)sizeof(big) };
		char rec[5 + 4 + sizeof(big)];
		memcpy(rec, l, 5);
		snprintf(rec + 5, 5, "X_%02d", i);
		memcpy(rec + 9, big, sizeof(big));
		record(&b, 4, rec, sizeof(rec));
	}
	record(&b, 4, NULL, 0);
	record(&b, 5, NULL, 0);
	int fd = conn();
	send_buf(fd, &b);
	struct answer a = answer(fd, 5);
	close(fd);
	cr_expect_eq(status_of(&a), 400, "%s\n%s", a.out, logs());
	free(a.out);
	cr_expect_eq(wait_log("level=warn event=bad-request msg=\"request params exceed 1048576 bytes (REMOTE_ADDR 192.0.2.9, REQUEST_URI /big/head): answered 400\"", 1, 3), 1,
		     "%s", logs());
}

/* kB of /proc/PID/status's field (VmRSS:, VmSize:), or -1. */
static long
status_kb(pid_t pid, const char *field)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	char *s = srv_read(path);
	cr_assert_not_null(s);
	const char *f = strstr(s, field);
	long kb = f ? atol(f + strlen(field)) : -1;
	free(s);
	return kb;
}

/* A head of many small params (300,000 of them, 900 KB: under the 1 MiB
 * limit) is answered, and the memory it took is given back: workers kept
 * some 20 MB each for good, their copy of the params and their arena's
 * share of libfcgi's (found by a soak test: 64 such requests at once left
 * 1 GB behind).  Memory is measured only in the plain build: ASan keeps
 * freed memory in quarantine (its shadow mapping makes VmSize terabytes),
 * valgrind keeps its own heap. */
Test(slow, a_large_head_leaves_no_memory_behind, .timeout = 60)
{
	enum { NPARAMS = 300000 };
	/* under valgrind two (its leak check), memory unmeasured */
	const int nreq = srv_slow() > 1 ? 2 : 12;
	struct buf p = { 0 };

	nv(&p, "REQUEST_METHOD", "GET");
	nv(&p, "REQUEST_URI", "/big/head");
	nv(&p, "SCRIPT_NAME", "/big/head");
	nv(&p, "REMOTE_ADDR", "192.0.2.9");
	for (int i = 0; i < NPARAMS; i++)
		nv(&p, "A", "");
	/* a first request, so that what every request costs is in the base */
	struct answer a0 = request("GET", "/small", NULL, 5 * srv_slow());
	cr_assert_eq(status_of(&a0), 200, "%s\n%s", a0.out, logs());
	free(a0.out);
	srv_sleep_ms(200);
	long base = status_kb(rg, "VmRSS:");
	int fds[12];
	for (int i = 0; i < nreq; i++) {
		struct buf b = { 0 };
		begin(&b, 2);   /* the authorizer: no application */
		for (size_t off = 0; off < p.len; off += 65535) {
			size_t n = p.len - off < 65535 ? p.len - off : 65535;
			record(&b, 4, p.p + off, n);
		}
		record(&b, 4, NULL, 0);
		fds[i] = conn();
		send_buf(fds[i], &b);
	}
	free(p.p);
	for (int i = 0; i < nreq; i++) {
		struct answer a = answer(fds[i], 20 * srv_slow());
		close(fds[i]);
		cr_expect_eq(status_of(&a), 200, "request %d: %s\n%s", i, a.out, logs());
		free(a.out);
	}
	srv_sleep_ms(500);
	long after = status_kb(rg, "VmRSS:");
	if (srv_slow() > 1 || status_kb(rg, "VmSize:") > (1L << 30))
		return;         /* valgrind or ASan: see above */
	cr_expect_lt(after - base, 32 * 1024,
		     "VmRSS %ld kB before %d heads of %d params, %ld kB after",
		     base, nreq, NPARAMS, after);
}

/* n requests for uri sent at once on connections of their own, then
 * their answers: each must be 200. */
static void
at_once(const char *uri, int n)
{
	int fds[16];

	cr_assert(n <= 16);
	for (int i = 0; i < n; i++) {
		struct buf b = { 0 };
		head(&b, "GET", uri, -1);
		record(&b, 5, NULL, 0);
		fds[i] = conn();
		send_buf(fds[i], &b);
	}
	for (int i = 0; i < n; i++) {
		struct answer a = answer(fds[i], 10 * srv_slow());
		close(fds[i]);
		cr_expect_eq(status_of(&a), 200, "%s %d: %s\n%s", uri, i, a.out, logs());
		free(a.out);
	}
}

/* A reload that moves the upstream elsewhere closes the connections kept
 * to the old one, and one that sets upstream-keepalive 0 keeps none: each
 * upstream a reload left behind held its kept connections for good (and
 * the application workers at their end), found by a soak test. */
Test(slow, a_reload_drops_the_kept_connections_it_no_longer_uses, .timeout = 60)
{
	static const char moved[] =
		"storage          memory\n"
		"upstream         fcgi+unix://@DIR@/app2.sock\n"
		"@KEEP@"
		"default          1000/minute\n";
	const char *pairs[] = { "@DIR@", srv_dir, "@KEEP@", "", NULL };

	srv_start_echo_fcgi(0, srv_path("app2.sock"), 16, NULL);
	at_once("/x?sleep=300", 4);     /* four kept (upstream-keepalive 4) */
	srv_sleep_ms(100);
	int kept = srv_count_fds(rg);
	srv_write_subst("site.rules", moved, pairs, 0644);
	cr_assert_eq(kill(rg, SIGHUP), 0);
	cr_assert_eq(wait_log("event=reload", 1, 5 * srv_slow()), 1, "%s", logs());
	srv_sleep_ms(100);
	int moved_fds = srv_count_fds(rg);
	cr_expect_leq(moved_fds, kept - 4, "%d fds with 4 connections kept to app.sock, %d after the move to app2.sock\n%s",
		      kept, moved_fds, logs());
	at_once("/x?sleep=300", 4);     /* now kept to app2.sock */
	srv_sleep_ms(100);
	cr_expect_eq(srv_count_fds(rg), kept, "%s", logs());
	pairs[3] = "upstream-keepalive 0\n";
	srv_write_subst("site.rules", moved, pairs, 0644);
	cr_assert_eq(kill(rg, SIGHUP), 0);
	cr_assert_eq(wait_log("event=reload", 2, 5 * srv_slow()), 2, "%s", logs());
	srv_sleep_ms(100);
	cr_expect_leq(srv_count_fds(rg), kept - 4, "upstream-keepalive 0 on reload\n%s", logs());
	at_once("/x?sleep=100", 4);
	srv_sleep_ms(100);
	cr_expect_leq(srv_count_fds(rg), kept - 4, "upstream-keepalive 0 after requests\n%s", logs());
}


/* Out of descriptors, a rategate waits for some to come back, and serves
 * again: accept's EMFILE stopped the process (found by a soak test).  A
 * second rategate with a descriptor limit of 32 gets 40 connections that
 * stall in their heads; client-timeout (1 s) frees them.  It is asked as
 * an authorizer afterwards: the workers started meanwhile stay (for
 * FCGI_RETIRE_S at least, longer than this test), and Linux
 * reserves a descriptor for each one waiting in accept(), so that under
 * this limit the process has none left for an application's socket. */
Test(slow, out_of_descriptors_waits_and_serves_again, .timeout = 60)
{
	enum { NSTALL = 40 };
	struct rlimit old, low;
	char listen[SRV_PATH_MAX + 8], sock[SRV_PATH_MAX];

	if (srv_slow() > 1)
		return;         /* valgrind keeps descriptors of its own under
				 * the limit (cr_skip_test here would skip .fini,
				 * leaving the rategate of setup running) */
	snprintf(sock, sizeof(sock), "%s", srv_path("rg2.sock"));
	snprintf(listen, sizeof(listen), "unix:%s", sock);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 32;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	pid_t rg2 = srv_start_rategate(srv_path("site.rules"), listen, 4,
				       srv_path("rategate2.log"), srv_path("rategate2.out"));
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	int fds[NSTALL];
	struct buf b = { 0 };
	begin(&b, 1);
	for (int i = 0; i < NSTALL; i++) {
		fds[i] = conn_to(sock);
		send_all(fds[i], b.p, b.len);
	}
	free(b.p);
	cr_expect(srv_wait_file(srv_path("rategate2.log"), "new connections wait in the backlog", 5),
		  "%s", srv_read_text(srv_path("rategate2.log")));
	srv_sleep_ms(2500);     /* client-timeout frees the stalled ones */
	for (int i = 0; i < NSTALL; i++)
		close(fds[i]);
	cr_assert(srv_alive(rg2), "%s", srv_read_text(srv_path("rategate2.log")));
	/* the workers see the hang-ups as they come to them */
	int status = 0;
	for (int i = 0; i < 20 && status != 200; i++) {
		struct buf r = { 0 }, p = { 0 };
		nv(&p, "REQUEST_METHOD", "GET");
		nv(&p, "REQUEST_URI", "/x");
		nv(&p, "REMOTE_ADDR", "127.0.0.1");
		begin(&r, 2);
		record(&r, 4, p.p, p.len);
		record(&r, 4, NULL, 0);
		free(p.p);
		int fd = conn_to(sock);
		send_buf(fd, &r);
		struct answer a = answer(fd, 5);
		close(fd);
		status = status_of(&a);
		free(a.out);
		if (status != 200)
			srv_sleep_ms(250);
	}
	cr_expect_eq(status, 200, "%s", srv_read_text(srv_path("rategate2.log")));
	cr_expect(srv_alive(rg2));
}

/* A path with no upstream: 502 whose body says it is the configuration,
 * and a no-upstream line naming the fix. */
Test(slow, no_upstream_is_502_saying_so)
{
	restart_on("bare.rules", "storage memory\n/x 10/minute\n", 2);
	struct answer a = request("GET", "/x", NULL, 3);
	cr_expect_eq(status_of(&a), 502, "%s", a.out);
	cr_expect_not_null(strstr(a.out, "\r\n\r\nBad Gateway: no application is set up for this path\n"), "%s", a.out);
	free(a.out);
	char want[SRV_PATH_MAX + 128];
	snprintf(want, sizeof(want), "level=error event=no-upstream msg=\"no upstream for /x: set \\\"upstream\\\" in %s or upstream= on its rule\"",
		 srv_path("bare.rules"));
	cr_expect_eq(wait_log(want, 1, 3), 1, "%s\n%s", want, logs());
}

/* A GET without CONTENT_LENGTH (nginx and Apache send none; the web
 * server's end of the body comes with the params) has its body's end sent
 * to the application with the params too, so an application that answers
 * before reading its input (echo_fcgi "early", as libfcgi programs that
 * never read it) keeps its connection: five requests, one connection.
 * The end went in a second write, after the answer had often come, and
 * the connection was closed (found through the statistics' connects). */
Test(slow, a_get_without_length_keeps_the_application_connection)
{
	for (int i = 0; i < 5; i++) {
		struct answer a = request("GET", "/f?early&bigout=3", NULL, 5 * srv_slow());
		cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
		cr_expect_not_null(strstr(a.out, "\r\n\r\nabc"), "%s", a.out);
		free(a.out);
	}
	char *st = stats();
	char want[SRV_PATH_MAX + 128];
	snprintf(want, sizeof(want),
		 "\"upstreams\":[{\"upstream\":\"fcgi+unix://%s\",\"connects\":1,\"reuses\":4,\"failures\":0}]",
		 srv_path("app.sock"));
	cr_expect_not_null(strstr(st, want), "%s in\n%s", want, st);
	free(st);
}

/* A RATEGATE_ROLE that is neither auth-request nor authorizer (nginx's
 * "auth_request" spelt as the directive) is a 502 and one line a minute:
 * it was served in the request's own role, so nginx's auth subrequest
 * went on to the application, unlimited by the role it asked for. */
Test(slow, an_unknown_rategate_role_is_502_saying_so)
{
	for (int i = 0; i < 2; i++) {
		struct buf b = { 0 }, p = { 0 };
		int fd = conn();
		nv(&p, "REQUEST_METHOD", "GET");
		nv(&p, "REQUEST_URI", "/f");
		nv(&p, "REMOTE_ADDR", "127.0.0.1");
		nv(&p, "RATEGATE_ROLE", "auth_request");
		begin(&b, 1);
		record(&b, 4, p.p, p.len);
		record(&b, 4, NULL, 0);
		record(&b, 5, NULL, 0);
		free(p.p);
		send_buf(fd, &b);
		struct answer a = answer(fd, 5 * srv_slow());
		close(fd);
		cr_expect_eq(status_of(&a), 502, "%s\n%s", a.out, logs());
		cr_expect_not_null(strstr(a.out, "\r\n\r\nBad Gateway: unknown RATEGATE_ROLE\n"), "%s", a.out);
		free(a.out);
	}
	cr_expect_eq(app_calls(), 0, "the application was called");
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"),
				       "level=error event=unsupported-role msg=\"RATEGATE_ROLE \\\"auth_request\\\": expected auth-request or authorizer; answered 502 (at most one line a minute)\""),
		     1, "%s", logs());
}

/* The answer on a connection kept open (until FCGI_END_REQUEST): its
 * status, 200 without a Status line, -1 when it did not end. */
static int
kept_answer(int fd, double timeout_s)
{
	struct answer a = answer_upto(fd, timeout_s, 1);
	int status = !a.ended ? -1 : status_of(&a) ? status_of(&a) : 200;

	free(a.out);
	return status;
}

/* The BEGIN_REQUEST that head() made in h asks to keep the connection
 * (FCGI_KEEP_CONN), as nginx's fastcgi_keep_conn and Apache's
 * enablereuse=on do. */
static void
keep_conn(struct buf *h)
{
	static const unsigned char keep[8] = { 0, 1, 1, 0, 0, 0, 0, 0 };

	memcpy(h->p + 8, keep, 8);
}

/* ms later, the empty FCGI_STDIN that ends request 1's body, on fd (a
 * web server may write it on its own, after the body). */
static void
send_end_after(int fd, unsigned ms)
{
	struct buf e = { 0 };

	srv_sleep_ms(ms);
	record(&e, 5, NULL, 0);
	send_buf(fd, &e);
}

/* GET /next on the kept connection fd: its status (kept_answer). */
static int
kept_next(int fd, double timeout_s)
{
	struct buf g = { 0 };

	head(&g, "GET", "/next", -1);
	keep_conn(&g);
	record(&g, 5, NULL, 0);
	send_buf(fd, &g);
	return kept_answer(fd, timeout_s);
}

/* On one connection kept open (FCGI_KEEP_CONN), rounds times: a POST of
 * 3000 bytes to uri, its body in writes of its own after the params,
 * answered post_status, then a GET of /next, answered 200 on the same
 * connection; and no bad-request line in the log (the POST's body was
 * not read as the next request). */
static void
kept_posts_are_no_next_request(const char *uri, int rounds, int post_status)
{
	static char body[3000];
	int fd = conn();

	memset(body, 'x', sizeof(body));
	for (int i = 0; i < rounds; i++) {
		struct buf h = { 0 }, b = { 0 };
		head(&h, "POST", uri, (long)sizeof(body));
		keep_conn(&h);
		send_buf(fd, &h);
		srv_sleep_ms(50);
		record(&b, 5, body, sizeof(body));
		record(&b, 5, NULL, 0);
		send_buf(fd, &b);
		cr_assert_eq(kept_answer(fd, 3), post_status, "POST %d to %s\n%s",
			     i, uri, logs());
		cr_assert_eq(kept_next(fd, 3), 200, "the request after POST %d\n%s",
			     i, logs());
	}
	close(fd);
	char *log = srv_read_text(srv_path("rategate.log"));
	cr_expect_null(strstr(log, "event=bad-request"), "%s", log);
	free(log);
}

/* A request denied before its body was read, on a connection the web
 * server keeps (nginx fastcgi_keep_conn, Apache enablereuse=on): the rest
 * of its body is no part of the next request, which is answered on the
 * same connection; nothing is a bad request (the body's records were read
 * as the next request: "bad-request ... first record: version 1, type 5",
 * or from the middle of a record "version 0, type 0", and the connection
 * closed). */
Test(slow, a_denied_body_on_a_kept_connection_is_no_next_request)
{
	char r[SRV_PATH_MAX + 128];
	snprintf(r, sizeof(r), "storage memory\nupstream fcgi+unix://%s\n/once 1/hour\n/**  1000/minute\n",
		 srv_path("app.sock"));
	restart_on("kept.rules", r, 2);
	struct answer a = request("GET", "/once", NULL, 3);
	cr_assert_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);

	kept_posts_are_no_next_request("/once", 3, 429);
}

/* A POST of body to uri on a connection of its own: CONTENT_LENGTH as
 * cl ("": as nginx passes a body it streams without a length; NULL:
 * none at all), no Transfer-Encoding (HTTP/2 has none), the body in a
 * write after the params.  Its status, or -1. */
static int
post_without_length(const char *uri, const char *cl, const char *body)
{
	struct buf b = { 0 }, p = { 0 };
	int fd = conn();

	nv(&p, "REQUEST_METHOD", "POST");
	nv(&p, "REQUEST_URI", uri);
	nv(&p, "SCRIPT_NAME", uri);
	nv(&p, "QUERY_STRING", "");
	nv(&p, "REMOTE_ADDR", "127.0.0.1");
	nv(&p, "SERVER_PROTOCOL", "HTTP/2.0");
	if (cl != NULL)
		nv(&p, "CONTENT_LENGTH", cl);
	begin(&b, 1);
	record(&b, 4, p.p, p.len);
	record(&b, 4, NULL, 0);
	free(p.p);
	send_buf(fd, &b);
	usleep(50 * 1000);
	record(&b, 5, body, strlen(body));
	record(&b, 5, NULL, 0);
	send_buf(fd, &b);
	struct answer a = answer(fd, 5);
	int status = !a.ended ? -1 : status_of(&a) ? status_of(&a) : 200;
	free(a.out);
	close(fd);
	return status;
}

/* A body without a length and without Transfer-Encoding (nginx's
 * CONTENT_LENGTH "" for an HTTP/2 client's body with
 * fastcgi_request_buffering off) is one of unknown length: bandwidth= is
 * checked on its arrival, as for a chunked one.  A review found each such
 * POST let through (and counted after) once the budget was used up. */
Test(slow, a_body_without_length_or_transfer_encoding_is_checked_against_bandwidth)
{
	const char *sixty = "0123456789012345678901234567890123456789"
			    "01234567890123456789";

	cr_assert_eq(post_without_length("/bw", "", sixty), 200, "%s", logs());
	cr_assert_eq(post_without_length("/bw", NULL, sixty), 200, "%s", logs());
	/* 120 of 100 bytes used, counted after they streamed */
	cr_expect_eq(post_without_length("/bw", "", sixty), 429, "%s", logs());
	cr_expect_eq(post_without_length("/bw", NULL, sixty), 429, "%s", logs());
	/* a GET without a length is no body: not denied for it, at once */
	double t0 = srv_now();
	struct answer a = request("GET", "/bw", NULL, 5);
	cr_expect(a.ended && (status_of(&a) == 0 || status_of(&a) == 200), "%s\n%s", a.out, logs());
	cr_expect_lt(srv_now() - t0, 0.5);
	free(a.out);
}

/* CONTENT_LENGTH 0 (a POST without a body; lighttpd gives it to a GET and
 * a HEAD too): the application gets the body's end with the params
 * (proxy_spec.no_body), but the web server's own empty FCGI_STDIN, here
 * 50 ms after the params in a write of its own, as Apache's mod_proxy_fcgi
 * sends it, must still be taken off the connection: on one the web server
 * keeps, the next request began with it ("bad-request ... first record:
 * version 1, type 5, request id 1, 0 bytes", the connection closed: one
 * POST in about 400 through Apache with enablereuse=on).  And while the
 * application works, the watch takes it and goes on, so that a hang-up
 * after it is client-gone at once, not the application's timeout. */
Test(slow, a_late_end_of_an_empty_body_is_no_next_request)
{
	static const char *const methods[] = { "POST", "HEAD", "GET" };
	int fd = conn();

	for (int i = 0; i < 3; i++) {
		struct buf h = { 0 };
		head(&h, methods[i], "/f", 0);
		keep_conn(&h);
		send_buf(fd, &h);
		send_end_after(fd, 50);
		cr_assert_eq(kept_answer(fd, 3 * srv_slow()), 200, "%s /f\n%s",
			     methods[i], logs());
		cr_assert_eq(kept_next(fd, 3 * srv_slow()), 200,
			     "the request after %s /f\n%s", methods[i], logs());
	}
	close(fd);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "bad-request"), 0,
		     "%s", logs());

	late_end_then_hang_up("/f?sleep=5000", "");
	cr_expect_eq(wait_log("event=client-gone", 1, 0.5 * srv_slow()), 1, "%s", logs());
	srv_expect_in_file(srv_path("rategate.log"),
			   "app.sock: no answer sent: the web server gave up on the request "
			   "while the application was working on it\"");
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-error"), 0,
		     "%s", logs());
}

/* A body of known length whose end (the empty FCGI_STDIN) the web server
 * writes on its own, after the application has answered: the proxy reads
 * CONTENT_LENGTH bytes and no further, so that end must still be taken off
 * a connection the web server keeps, or the next request began with it
 * ("bad-request ... first record: version 1, type 5, request id 1, 0
 * bytes", the connection closed: about one POST in a hundred through
 * Apache with enablereuse=on, found by a soak test; Apache then failed the
 * next request on it). */
Test(slow, a_late_end_of_a_body_is_no_next_request)
{
	static const char *const uris[] = { "/f", "/cgi/f", "/f?bigout=10" };
	static char body[3000];
	int fd = conn();

	memset(body, 'x', sizeof(body));
	for (int i = 0; i < 3; i++) {
		struct buf h = { 0 }, b = { 0 };
		head(&h, "POST", uris[i], (long)sizeof(body));
		keep_conn(&h);
		record(&b, 5, body, sizeof(body));
		buf_add(&h, b.p, b.len);
		free(b.p);
		send_buf(fd, &h);
		send_end_after(fd, 100);        /* answered by now: the watch is over */
		cr_assert_eq(kept_answer(fd, 3 * srv_slow()), 200, "POST %s\n%s",
			     uris[i], logs());
		cr_assert_eq(kept_next(fd, 3 * srv_slow()), 200,
			     "the request after POST %s\n%s", uris[i], logs());
	}
	close(fd);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "bad-request"), 0,
		     "%s", logs());
}

/* Connections the web server keeps (nginx fastcgi_keep_conn with a
 * keepalive pool, Apache enablereuse=on) each hold a worker waiting for
 * their next request; a new connection gets a worker started for it, not
 * one of theirs.  Those workers counted as idle, so none was started, and
 * 10 ms later a kept connection was closed for the new one, while the web
 * server could be sending its next request on it: nginx answers a POST
 * that meets the close 502 ("writev() failed (32: Broken pipe) while
 * sending request to upstream"; only idempotent requests are sent again):
 * 100 POSTs in 16,604 through keepalive 8 and 16 clients, found by a soak
 * test.  Here -j 4, eight connections kept one after the other, then a
 * second request on each. */
Test(slow, a_new_connection_closes_no_kept_one)
{
	int fds[8];

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 8; i++) {
			struct buf g = { 0 };
			if (round == 0)
				fds[i] = conn();
			head(&g, "POST", "/f", 0);
			keep_conn(&g);
			record(&g, 5, NULL, 0);
			send_buf(fds[i], &g);
			cr_assert_eq(kept_answer(fds[i], 3 * srv_slow()), 200,
				     "round %d, connection %d\n%s", round, i, logs());
			srv_sleep_ms(30);       /* longer than keep_or_release's 10 ms */
		}
	}
	for (int i = 0; i < 8; i++)
		close(fds[i]);
}

/* GETs without CONTENT_LENGTH, their end in a write of its own after the
 * params (Apache's mod_proxy_fcgi), to an application that answers without
 * reading its input (echo_fcgi's bigout, fcgi_stub): when its answer was
 * seen before that end, the proxy never read the end at all, and it began
 * the kept connection's next request ("bad-request ... type 5, request id
 * 1, 0 bytes", the connection closed; one GET in a hundred through Apache
 * to fcgi_stub, found by a soak test).  Timing's: 8 x 1,000 GETs at once hit
 * it on the old code. */
Test(slow, an_unread_end_of_an_empty_body_is_no_next_request, .timeout = 60)
{
	char r[SRV_PATH_MAX + 128];
	snprintf(r, sizeof(r), "storage memory\nupstream fcgi+unix://%s\n/**  1000000/hour\n",
		 srv_path("app.sock"));
	restart_on("many.rules", r, 2);
	/* eight connections at once, as Apache's workers: the race wants
	 * the host busy */
	pid_t kids[8];
	for (int k = 0; k < 8; k++) {
		kids[k] = fork();
		cr_assert_geq(kids[k], 0);
		if (kids[k] > 0)
			continue;
		int fd = conn(), bad = 0;
		for (int i = 0; i < 1000 && !bad; i++) {
			struct buf h = { 0 }, e = { 0 };
			head(&h, "GET", "/f?bigout=10", -1);
			keep_conn(&h);
			send_buf(fd, &h);
			record(&e, 5, NULL, 0);
			send_buf(fd, &e);
			bad = kept_answer(fd, 3 * srv_slow()) != 200;
		}
		_exit(bad);
	}
	int failed = 0;
	for (int k = 0; k < 8; k++) {
		int st;
		cr_assert_eq(waitpid(kids[k], &st, 0), kids[k]);
		failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
	}
	cr_expect_eq(failed, 0, "%d of 8 connections lost a request\n%s", failed, logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "bad-request"), 0,
		     "%s", logs());
}

/* nginx gives a GET CONTENT_LENGTH "" (fastcgi_params' $content_length)
 * and writes the end of its empty body with the params.  That end went to
 * the application in a write after the params, so an application that
 * answers without reading its input (echo_fcgi's bigout, fcgi_stub) could
 * have answered and gone back to its accept loop before it came: libfcgi
 * read it as the next request on the kept connection and closed it, and
 * rategate's next request on that connection met the close (logged
 * "upstream-retry"; a POST with a body was answered 502).  Found by a soak
 * test: 11 retries in 2,348 such GETs through nginx, 12 POSTs in 24,000
 * answered 502.  Now the end goes with the params, as for CONTENT_LENGTH
 * 0 (af1d4d3: unknown_body read it before the decision).  The race is
 * timing's: 900 GETs (the default limit is 1000/minute) hit it a few times
 * on the old code. */
Test(slow, an_empty_body_seen_with_the_params_goes_with_them, .timeout = 60)
{
	int fd = conn();

	for (int i = 0; i < 900; i++) {
		struct buf g = { 0 };
		head(&g, "GET", "/f?bigout=10", -1);
		keep_conn(&g);
		record(&g, 5, NULL, 0);
		send_buf(fd, &g);
		cr_assert_eq(kept_answer(fd, 3 * srv_slow()), 200, "GET %d\n%s", i, logs());
	}
	close(fd);
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-retry"), 0,
		     "%s", logs());
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "upstream-error"), 0,
		     "%s", logs());
}

/* A stop kills the scripts still working after their answer and says so
 * in one line, "12 CGI scripts still working after answering: killed";
 * the workers that saw the stop first killed theirs as they ended, and
 * those came in a second line ("3 ... killed", "9 ... killed"), as if
 * they had detached while the stop drained (found by a soak test).  The
 * race is the host's: six stops of 12 scripts over 12 workers split the
 * line on the old code here about one stop in three. */
Test(slow, a_stop_says_the_scripts_working_after_their_answer_once, .timeout = 90)
{
	cr_assert_eq(srv_stop(rg, 10), 0);
	srv_write("bg12.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\nexec >&-\nsleep 30\n", 0755);
	char bg_rules[SRV_PATH_MAX * 2];
	snprintf(bg_rules, sizeof(bg_rules), "storage memory\nupstream-timeout 30s\n/bg 1000/minute upstream=cgi:%s\n",
		 srv_path("bg12.sh"));
	srv_write("bg12.rules", bg_rules, 0644);
	char listen[SRV_PATH_MAX + 8];
	snprintf(listen, sizeof(listen), "unix:%s", srv_path("rg.sock"));
	for (int round = 0; round < 6; round++) {
		char log[32];
		snprintf(log, sizeof(log), "stop%d.log", round);
		rg = srv_start_rategate(srv_path("bg12.rules"), listen, 12,
					srv_path(log), srv_path("rategate.out"));
		for (int i = 0; i < 12; i++) {
			struct answer a = request("GET", "/bg", NULL, 10);
			cr_assert_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
			free(a.out);
		}
		cr_assert_eq(srv_stop(rg, 10), 0, "%s", logs());
		char *text = srv_read_text(srv_path(log));
		cr_expect_eq(srv_count_in_file(srv_path(log), "still working after answering"), 1,
			     "round %d:\n%s", round, text);
		cr_expect_eq(srv_count_in_file(srv_path(log),
					       "msg=\"12 CGI scripts still working after answering: killed\""), 1,
			     "round %d:\n%s", round, text);
		free(text);
	}
}

/* Is pid running (not gone, not a zombie)? */
static int
running_pid(long pid)
{
	char path[64], st[256] = "";

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(st, 1, sizeof(st) - 1, f);
	fclose(f);
	st[n] = '\0';
	const char *rp = strrchr(st, ')');
	return rp != NULL && rp[1] == ' ' && rp[2] != 'Z';
}

/* An FCGI_ABORT_REQUEST on a connection the web server keeps
 * (FCGI_KEEP_CONN), sent while the application works: the request ends
 * (FCGI_END_REQUEST) and the record is taken off the connection, so the
 * web server's next request on it is answered.  It was left there and
 * read as the next request: "bad-request ... first record: version 1,
 * type 2", counted, and the connection closed under the next request.
 * Rounds: a GET without CONTENT_LENGTH (its end read before the
 * decision), a POST with CONTENT_LENGTH 0 whose end comes 50 ms late (as
 * Apache sends it; the watch takes it); then one whose end came with the
 * params, which libfcgi may hold unread: that connection is closed after
 * the abort, without a bad-request line. */
Test(slow, an_abort_on_a_kept_connection_is_no_next_request)
{
	int fd = conn();
	/* Timing: the abort must come after rategate read the head (else
	 * libfcgi reads it into its buffer with the head, where the watch
	 * never sees it) and before upstream-timeout (1 s) ends the request;
	 * under valgrind on a busy host rategate reads the head too late for
	 * that window (cr_skip_test here would skip .fini, leaving the
	 * rategate of setup running) */
	if (srv_slow() > 1) {
		close(fd);
		return;
	}
	for (int i = 0; i < 3; i++) {
		struct buf h = { 0 }, ab = { 0 };
		head(&h, i == 0 ? "GET" : "POST", "/f?sleep=3000", i == 0 ? -1 : 0);
		keep_conn(&h);
		if (i != 1)
			record(&h, 5, NULL, 0);
		send_buf(fd, &h);
		if (i == 1)
			send_end_after(fd, 50);
		srv_sleep_ms(200);
		record(&ab, 2, NULL, 0);        /* FCGI_ABORT_REQUEST */
		send_buf(fd, &ab);
		struct answer a = answer_upto(fd, 2, 1);
		cr_assert(a.ended && a.took < 1, "round %d: no end of the aborted request (%.1f s)\n%s",
			  i, a.took, logs());
		free(a.out);
		if (i == 2)
			break;
		cr_assert_eq(kept_next(fd, 3 * srv_slow()), 200,
			     "round %d: GET /next after an abort\n%s", i, logs());
	}
	struct answer a = answer(fd, 3 * srv_slow());
	cr_expect(a.closed, "round 2: the connection was kept");
	free(a.out);
	close(fd);
	cr_expect_eq(wait_log("event=client-gone", 3, 3), 3, "%s", logs());
	cr_expect_null(strstr(logs(), "bad-request"), "%s", logs());
}

/* A CGI script that answers, closes its output and goes on (with a child
 * of its own): its answer comes at once, and a stop kills it with its
 * process group, even though no request is in flight any more (a second
 * review found the child outliving the stop). */
Test(slow, stop_kills_scripts_working_after_their_answer)
{
	char script[SRV_PATH_MAX + 200];
	snprintf(script, sizeof(script),
		 "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\nexec >&-\nsleep 30 &\necho $! $$ > %s\nwait\n",
		 srv_path("child.pid"));
	srv_write("bg.sh", script, 0755);
	char bg_rules[SRV_PATH_MAX * 2];
	snprintf(bg_rules, sizeof(bg_rules), "storage memory\nupstream-timeout 30s\n/bg 10/minute upstream=cgi:%s\n",
		 srv_path("bg.sh"));
	restart_on("bg.rules", bg_rules, 2);
	struct answer a = request("GET", "/bg", NULL, 10);
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	cr_expect(a.took < 5, "the answer took %.1f s", a.took);
	free(a.out);
	long child = 0, shell = 0;
	for (int i = 0; i < 100 && (child == 0 || shell == 0); i++) {
		FILE *f = fopen(srv_path("child.pid"), "r");
		if (f != NULL) {
			if (fscanf(f, "%ld %ld", &child, &shell) != 2)
				child = shell = 0;
			fclose(f);
		}
		if (child == 0 || shell == 0)
			srv_sleep_ms(50);
	}
	cr_assert(child > 0, "no child pid");
	cr_expect_eq(kill((pid_t)child, 0), 0, "the child should still run");
	/* seen once in ~150 runs (CI), 1 in 15 under valgrind: the kernel
	 * killed the script alone when its worker ended (its death signal),
	 * before the stop could kill its group; say whether the script
	 * itself still ran before the stop, should it come back */
	int shell_ran = kill((pid_t)shell, 0) == 0;
	cr_assert_eq(srv_stop(rg, 10), 0, "%s", logs());
	/* gone, or a zombie (killed; reaped by whoever adopted it) */
	int gone = 0;
	for (int i = 0; i < 100 && !(gone = !running_pid(child)); i++)
		srv_sleep_ms(30);
	if (!gone)
		kill((pid_t)child, SIGKILL);
	cr_expect(gone, "the script's child %ld outlived the stop (the script %ld %s before the stop)",
		  child, shell, shell_ran ? "still ran" : "had exited");
	cr_expect_eq(wait_log("level=info event=stop msg=\"1 CGI script still working after answering: killed\"", 1, 3), 1,
		     "%s", logs());
}

Test(slow, late_end_of_body_then_hang_up_is_client_gone)
{
	const char *log = srv_path("rategate.log");

	late_end_then_hang_up("/f?sleep=5000", "abc");
	cr_expect_eq(wait_log("event=client-gone", 1, 3), 1, "%s", logs());
	srv_expect_in_file(log, "msg=\"POST /f from 127.0.0.1 -> fcgi+unix://");
	srv_expect_in_file(log, "app.sock: no answer sent: the web server gave up on the request "
			   "while the application was working on it\"");

	late_end_then_hang_up("/cgi/x?hang", "abc");
	cr_expect_eq(wait_log("event=client-gone", 2, 3), 2, "%s", logs());
	srv_expect_in_file(log, "msg=\"POST /cgi/x from 127.0.0.1 -> cgi:");
	srv_expect_in_file(log, "echo_cgi: no answer sent: the web server gave up on the request "
			   "before the response head was sent\"");

	cr_expect_eq(srv_count_in_file(log, "upstream-error"), 0, "%s", logs());
	cr_expect_eq(srv_count_in_file(log, "timed out"), 0, "%s", logs());
	/* and the workers are free again */
	struct answer a = request("GET", "/f", NULL, 5 * srv_slow());
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
}

/* A reload signal during start-up (here a Redis store at an address that
 * accepts connections and never answers: start-up waits out the command
 * timeout) is held until rategate is ready, then taken as a reload: never
 * a silent death (the default action of SIGHUP).  Not under valgrind,
 * whose own start-up, before rategate can hold anything, is longer than
 * the wait here. */
Test(slow_clients, hup_during_start_up_is_a_reload_not_a_death,
     .init = srv_setup, .fini = srv_cleanup, .timeout = 30)
{
	if (getenv("RATEGATE_WRAPPER") != NULL)
		cr_skip_test("under valgrind");
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(lfd, 16), 0);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	char text[256];
	snprintf(text, sizeof(text),
		 "storage        redis://127.0.0.1:%d/0?timeout=500&connect-timeout=500\n"
		 "store-failure  allow\n"
		 "/a             1/minute\n", ntohs(sa.sin_port));
	srv_write("r.rules", text, 0644);
	char sock[SRV_PATH_MAX + 8];
	snprintf(sock, sizeof(sock), "unix:%s", srv_path("rg.sock"));
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		execl(srv_rategate(), "rategate", "-c", srv_path("r.rules"), "-l", sock,
		      "-L", srv_path("rategate.log"), (char *)NULL);
		_exit(127);
	}
	srv_sleep_ms(100);
	cr_assert_eq(kill(pid, SIGHUP), 0);
	char *log = NULL;
	for (int i = 0; i < 250; i++) {
		free(log);
		log = srv_read(srv_path("rategate.log"));
		if (log != NULL && strstr(log, "event=reload ") != NULL)
			break;
		srv_sleep_ms(20);
	}
	cr_expect(srv_alive(pid), "rategate died of the SIGHUP sent during its start-up");
	cr_expect(log != NULL && strstr(log, "event=reload ") != NULL,
		  "the held SIGHUP was not taken as a reload:\n%s", log ? log : "(no log)");
	free(log);
	kill(pid, SIGTERM);
	int st = 0;
	cr_expect_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	close(lfd);
}

/* A body sent to the statistics path (by a client in stats-allow or not:
 * any client may POST there) on a connection the web server keeps is no
 * part of the next request: no bad-request line, no bad_request count. */
Test(slow, a_body_to_the_stats_path_on_a_kept_connection_is_no_next_request)
{
	kept_posts_are_no_next_request("/rg-stats", 2, 200);
	char *st = stats();
	cr_expect_not_null(strstr(st, "\"bad_request\":0"), "%s", st);
	free(st);
}

/* A connection to the unix socket rel (under the test's directory). */
static int
conn_at(const char *rel)
{
	return conn_to(srv_path(rel));
}

/* A CGI request that hangs, sent on a new connection to rel, the script
 * writing its and its child's pids into pid_rel.  Returns the fd. */
static int
hang_at(const char *rel, const char *pid_rel)
{
	struct buf b = { 0 }, p = { 0 };
	int fd = conn_at(rel);

	nv(&p, "REQUEST_METHOD", "GET");
	nv(&p, "REQUEST_URI", "/cgi/x?hang");
	nv(&p, "SCRIPT_NAME", "/cgi/x");
	nv(&p, "QUERY_STRING", "hang");
	nv(&p, "REMOTE_ADDR", "127.0.0.1");
	nv(&p, "SERVER_PROTOCOL", "HTTP/1.1");
	nv(&p, "HTTP_X_PID_FILE", srv_path(pid_rel));
	begin(&b, 1);
	record(&b, 4, p.p, p.len);
	record(&b, 4, NULL, 0);
	record(&b, 5, NULL, 0);
	free(p.p);
	send_buf(fd, &b);
	return fd;
}

/* A second rategate on rg2.sock with one application slot (-j 1) and
 * upstream-timeout timeout, in front of echo_cgi, whose slot a hanging
 * script holds (*a: its connection; the script's pids in a.pid). */
static pid_t
one_slot_held(const char *timeout, int *a)
{
	static const char slow_rules[] =
		"storage          memory\n"
		"upstream-timeout @TIMEOUT@\n"
		"/cgi/**          1000/minute  upstream=cgi:@CGI@\n";
	char cgi[SRV_PATH_MAX], listen[SRV_PATH_MAX + 8];

	srv_built("tests/apps/echo_cgi", cgi);
	const char *pairs[] = { "@CGI@", cgi, "@TIMEOUT@", timeout, NULL };
	srv_write_subst("slow.rules", slow_rules, pairs, 0644);
	snprintf(listen, sizeof(listen), "unix:%s", srv_path("rg2.sock"));
	pid_t rg2 = srv_start_rategate(srv_path("slow.rules"), listen, 1,
				       srv_path("rg2.log"), srv_path("rg2.out"));
	*a = hang_at("rg2.sock", "a.pid");
	cr_assert(srv_wait_file(srv_path("a.pid"), "\n", 10 * srv_slow()),
		  "the first script did not start");
	return rg2;
}

/* A request waiting for an application slot when rategate stops is not
 * given the slot of a CGI script the stop killed: it would start a new
 * script after the kill, which nothing kills any more, and the process
 * would leave it running behind it (found by a review: the stop then
 * "exited anyway" after the grace, the second script orphaned). */
Test(slow, a_stop_starts_no_application_for_requests_waiting_for_a_slot,
     .timeout = 90)
{
	char line[64];
	long spid = 0, cpid = 0;
	int a;
	pid_t rg2 = one_slot_held("60s", &a);
	int b = hang_at("rg2.sock", "b.pid");
	srv_sleep_ms(300);      /* the second waits for the only slot */
	cr_assert_eq(access(srv_path("b.pid"), F_OK), -1,
		     "the second script started with the first running");
	/* stop: the first is killed after the drain; the second must not
	 * start then */
	int status = srv_stop(rg2, 30);
	(void)status;
	srv_sleep_ms(500);
	FILE *f = fopen(srv_path("b.pid"), "r");
	if (f != NULL) {
		if (fgets(line, sizeof(line), f) != NULL)
			sscanf(line, "%ld %ld", &spid, &cpid);
		fclose(f);
	}
	int orphaned = (spid > 0 && kill((pid_t)spid, 0) == 0) ||
		       (cpid > 0 && kill((pid_t)cpid, 0) == 0);
	if (spid > 0)
		kill(-(pid_t)spid, SIGKILL);
	if (spid > 0)
		kill((pid_t)spid, SIGKILL);
	if (cpid > 0)
		kill((pid_t)cpid, SIGKILL);
	const char *files[] = { "rategate log", "rg2.log", "", "rg2.out", NULL };
	cr_expect_not(orphaned, "script %ld (child %ld) outlived the stop\n%s",
		      spid, cpid, srv_logs(files));
	cr_expect_eq(srv_count_in_file(srv_path("rg2.log"),
				       "answered 503: rategate is stopping, and all 1 application slots of this process (-j) were busy; the application was not called"),
		     1, "%s", srv_logs(files));
	close(a);
	close(b);
}

/* A request that waited for an application slot has what is left of
 * upstream-timeout for the application: when that runs out, the line
 * says how long it waited for the slot, or "timed out after 1000 ms"
 * would contradict an upstream-timeout of 2 s. */
Test(slow, a_timeout_after_waiting_for_a_slot_says_so, .timeout = 60)
{
	int a;
	pid_t rg2 = one_slot_held("2s", &a);
	srv_sleep_ms(1000);
	int b = hang_at("rg2.sock", "b.pid");
	struct answer x = answer(a, 10 * srv_slow());
	struct answer y = answer(b, 10 * srv_slow());
	const char *files[] = { "rategate log", "rg2.log", "", "rg2.out", NULL };
	cr_expect_eq(status_of(&x), 502, "%s", srv_logs(files));
	cr_expect_eq(status_of(&y), 502, "%s", srv_logs(files));
	cr_expect_eq(srv_count_in_file(srv_path("rg2.log"), "timed out after"),
		     2, "%s", srv_logs(files));
	cr_expect_eq(srv_count_in_file(srv_path("rg2.log"),
				       "ms for an application slot (-j) first, which upstream-timeout 2 s counts"),
		     1, "%s", srv_logs(files));
	free(x.out);
	free(y.out);
	close(a);
	close(b);
	srv_stop(rg2, 30);
}

/* The threads of process pid (/proc/PID/status). */
static int
threads_of(pid_t pid)
{
	char path[64], *text, *t;
	int n = -1;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	text = srv_read_text(path);
	if (text != NULL && (t = strstr(text, "\nThreads:")) != NULL)
		n = atoi(t + 9);
	free(text);
	return n;
}

/* Wait up to timeout_s for pid to have want threads; the last count. */
static int
wait_threads(pid_t pid, int want, double timeout_s)
{
	double end = srv_now() + timeout_s;
	int n;

	while ((n = threads_of(pid)) != want && srv_now() < end)
		srv_sleep_ms(50);
	return n;
}

/* Stalls on n connections at once (each holds a worker for client-timeout,
 * 1 s): the workers grow to serve them, and what else comes is answered.
 * Returns rategate's threads while they were held. */
static int
stall_workers(int n)
{
	int fds[8];
	struct buf b = { 0 };

	cr_assert(n <= 8);
	for (int i = 0; i < n; i++) {
		fds[i] = conn();
		begin(&b, 1);
		send_buf(fds[i], &b);
	}
	srv_sleep_ms((unsigned)(300 * srv_slow()));
	struct answer a = request("GET", "/f", NULL, 5 * srv_slow());
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
	int threads = threads_of(rg);
	for (int i = 0; i < n; i++) {   /* client-timeout closes them */
		struct answer s = answer(fds[i], 3 * srv_slow());
		free(s.out);
		close(fds[i]);
	}
	return threads;
}

/* rategate restarted on rules_file (in srv_dir) with -j workers and a
 * retirement round of 1 s; its threads once its workers are started. */
static int
restart_retiring(const char *rules_file, int workers)
{
	setenv("RATEGATE_TEST_RETIRE_MS", "1000", 1);
	restart_on(rules_file, NULL, workers);
	unsetenv("RATEGATE_TEST_RETIRE_MS");
	/* its workers are started once the start line is written (the
	 * socket comes before: under valgrind, well before) */
	char started[64];
	snprintf(started, sizeof(started), "%d worker%s (more while all are busy",
		 workers, workers == 1 ? "" : "s");
	cr_assert_eq(wait_log(started, 1, 10 * srv_slow()), 1, "%s", logs());
	int base = threads_of(rg);
	cr_assert_gt(base, workers, "%s", logs());
	return base;
}

/* Workers started while all were busy go again once they are not needed
 * (they stayed until the process stopped, 256 of them after one burst of
 * slow clients).  rategate -j 2 with a retirement round of 1 s: six stalls
 * grow it to 7 or 8 workers (at least 6: under valgrind the last may come
 * late); once they are closed, the rounds find those beyond -j idle all
 * through them and retire them (lines say so), the thread
 * count comes back to what it was at start, and it grows again in the
 * slots they left on the next burst.  A stop afterwards frees everything
 * (valgrind, in CI's run). */

Test(slow, workers_beyond_j_retire_when_idle, .timeout = 90)
{
	int base = restart_retiring("site.rules", 2);

	for (int round = 1; round <= 2; round++) {
		int grown = stall_workers(6);
		cr_expect_geq(grown, base + 4, "round %d: %d threads, %d at start\n%s",
			      round, grown, base, logs());
		cr_expect_eq(wait_threads(rg, base, 6 * srv_slow()), base,
			     "round %d: not back to %d threads\n%s", round, base, logs());
		/* the round after says so, once down to -j (the stalls may
		 * end inside a round: then the one before it retires fewer) */
		cr_expect_eq(wait_log("retired, idle all through a round of 1 s; 2 now (-j 2)",
				      round, 3), round, "round %d\n%s", round, logs());
	}
	struct answer a = request("GET", "/f", NULL, 5 * srv_slow());
	cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
	free(a.out);
	cr_expect_eq(srv_stop(rg, 10), 0, "%s", logs());
	rg = 0;
	cr_expect_eq(srv_count_in_file(srv_path("rategate.log"), "level=info event=stop msg=stopped\n"),
		     2, "the first rategate's stop and this one's\n%s", logs());
}

/* A worker that started a CGI script still working after its answer does
 * not retire: the kernel kills a script when the thread that started it
 * ends (its death signal), so a retired worker took its scripts with it.
 * rategate -j 1, a round of 1 s: stalls grow it, then seven scripts that
 * answer and go on (sleep 300 in the background) are started, one after
 * the other, by the workers in turn; after three rounds every one still
 * runs, and the stop kills them all. */
Test(slow, workers_with_scripts_still_working_do_not_retire, .timeout = 90)
{
	enum { NSCRIPTS = 7 };
	char script[SRV_PATH_MAX + 200], bg_rules[SRV_PATH_MAX * 2];

	snprintf(script, sizeof(script),
		 "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nbye\\n'\nexec >&-\nsleep 300 &\necho $$ >> %s\nwait\n",
		 srv_path("shells"));
	srv_write("bg2.sh", script, 0755);
	snprintf(bg_rules, sizeof(bg_rules),
		 "storage memory\nclient-timeout 1s\nupstream-timeout 30s\n/f 1000/minute upstream=cgi:%s\n",
		 srv_path("bg2.sh"));
	srv_write("bg2.rules", bg_rules, 0644);
	restart_retiring("bg2.rules", 1);
	int grown = stall_workers(6);
	cr_assert_gt(grown, 2, "%d threads: it did not grow\n%s", grown, logs());
	long pids[NSCRIPTS];
	int n = 0;
	for (int i = 0; i < NSCRIPTS; i++) {
		struct answer a = request("GET", "/f", NULL, 5 * srv_slow());
		cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
		free(a.out);
	}
	for (int i = 0; i < 100 && n < NSCRIPTS; i++) {
		char *t = srv_read_text(srv_path("shells"));
		n = 0;
		for (char *p = t; p != NULL && *p != '\0' && n < NSCRIPTS; n++) {
			pids[n] = strtol(p, &p, 10);
			while (*p == '\n')
				p++;
		}
		free(t);
		if (n < NSCRIPTS)
			srv_sleep_ms(50);
	}
	cr_assert_eq(n, NSCRIPTS, "%s", logs());
	/* three rounds and more (not scaled by srv_slow: the rounds are
	 * not slower under valgrind) */
	srv_sleep_ms(3500);
	int alive = 0;
	for (int i = 0; i < n; i++)
		alive += running_pid(pids[i]);
	cr_expect_eq(alive, NSCRIPTS, "%d of %d scripts still work\n%s", alive,
		     NSCRIPTS, logs());
	cr_expect_eq(srv_stop(rg, 15), 0, "%s", logs());
	rg = 0;
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < 100 && running_pid(pids[i]); k++)
			srv_sleep_ms(30);
		cr_expect(!running_pid(pids[i]), "script %ld outlived the stop", pids[i]);
		kill((pid_t)pids[i], SIGKILL);
	}
}

/* Workers beyond -j retire under a steady trickle of requests too, while
 * at most one is busy at a time: a worker asked to go learned of it only
 * when accept() had waited a second without a connection, and the kernel
 * hands connections to the workers waiting in turn, so with a request
 * every 50 ms none of 8 ever waited that long: the rounds logged
 * "retiring them" every second and all stayed (with 256 workers after a
 * burst, any site with 256 requests a second kept them for good). */
Test(slow, workers_beyond_j_retire_under_a_steady_trickle, .timeout = 90)
{
	int base = restart_retiring("site.rules", 2);
	int grown = stall_workers(6);
	cr_assert_geq(grown, base + 4, "%d threads, %d at start\n%s", grown, base, logs());

	double end = srv_now() + 6 * srv_slow();
	int n, asked = 0;
	while ((n = threads_of(rg)) != base && srv_now() < end) {
		struct answer a = request("GET", "/rg-stats", NULL, 5 * srv_slow());
		cr_expect_eq(status_of(&a), 200, "%s\n%s", a.out, logs());
		free(a.out);
		asked++;
		srv_sleep_ms(50);
	}
	cr_expect_eq(n, base, "%d threads after %d requests, %d at start\n%s",
		     n, asked, base, logs());
	cr_expect_eq(wait_log("retired, idle all through a round of 1 s; 2 now (-j 2)", 1, 3), 1,
		     "%s", logs());
	cr_expect_eq(srv_stop(rg, 10), 0, "%s", logs());
	rg = 0;
}
