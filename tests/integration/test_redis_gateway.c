/*
 * test_redis_gateway.c - rategate with "storage redis://127.0.0.1:PORT/0"
 * as a FastCGI authorizer behind a real lighttpd, against a real
 * redis-server started by the test on a free 127.0.0.1 port (its own
 * directory, no persistence) and stopped or killed by PID.
 *
 * Two rategate processes on two sockets, which lighttpd uses in turn
 * (fastcgi.balance "round-robin"), share one Redis budget exactly: 40
 * concurrent requests against 20/minute get exactly 20 answers 200 and 20
 * answers 429 with Retry-After, and the one key is in Redis with a TTL.
 * With Redis killed (SIGKILL): "store-failure deny" answers 503 with
 * Retry-After at once, logs the switch down once (and the 503s at most
 * once a second), and after a restart on
 * the same port Redis decides again (a fresh budget: 200 200 200 429) with
 * one "up" line; "store-failure fallback" limits exactly on the host's
 * shared-memory store; "store-failure allow" lets requests through
 * uncounted.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis.h>

#include "servers.h"

/* lighttpd asking the rategate processes on @BACKENDS@ in turn. */
static const char lighttpd_conf[] =
	"server.document-root = \"@DIR@/docroot\"\n"
	"server.bind          = \"127.0.0.1\"\n"
	"server.port          = @PORT@\n"
	"server.pid-file      = \"@DIR@/lighttpd.pid\"\n"
	"server.errorlog      = \"@DIR@/lighttpd-error.log\"\n"
	"server.modules       = ( \"mod_fastcgi\" )\n"
	"server.max-connections = 256\n"
	"mimetype.assign      = ( \".txt\" => \"text/plain\" )\n"
	"fastcgi.balance      = \"round-robin\"\n"
	"fastcgi.server = ( \"/\" => ( @BACKENDS@ ) )\n";

static const char backend[] =
	"\"rg@N@\" => ( \"mode\" => \"@MODE@\", \"socket\" => \"@DIR@/rg@N@.sock\", "
	"\"check-local\" => \"disable\" )";
static const char *mode = "authorizer";        /* or "responder" */

static int redis_port;
static pid_t redis_pid;
static int web_port;
static pid_t lighttpd;
static pid_t rg[2];
static int nrg;
static char base[64];

static void
setup(void)
{
	srv_setup();
	redis_pid = lighttpd = 0;
	nrg = 0;
	mode = "authorizer";
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
	cr_assert_eq(mkdir(srv_path("redis"), 0700), 0);
	srv_write("docroot/static.txt", "static file content\n", 0644);
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void
teardown(void)
{
	srv_cleanup();
}

/* ------------------------------------------------------------------ */
/* redis-server                                                        */

static redisContext *
redis(void)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);

	cr_assert(c != NULL && !c->err, "connect to redis on %d: %s", redis_port,
		  c ? c->errstr : "out of memory");
	return c;
}

/* redis-server on redis_port (a free one the first time), no persistence:
 * a restart starts empty. */
static void
start_redis(void)
{
	const char *bin = srv_need("redis-server", "redis-server");
	char port[16];

	if (redis_port == 0)
		redis_port = srv_free_port();
	snprintf(port, sizeof(port), "%d", redis_port);
	char *argv[] = { (char *)bin, "--port", port, "--bind", "127.0.0.1",
			 "--dir", (char *)srv_path("redis"), "--save", "",
			 "--appendonly", "no", "--daemonize", "no",
			 "--logfile", "", "--loglevel", "warning", NULL };
	redis_pid = srv_spawn(argv, srv_path("redis.out"));
	srv_wait_ready(redis_pid, redis_port, NULL, srv_path("redis.out"), 10);
	for (int i = 0; i < 200; i++) {
		redisContext *c = redis();
		redisReply *r = redisCommand(c, "PING");
		int ok = r != NULL && r->type == REDIS_REPLY_STATUS &&
			 strcmp(r->str, "PONG") == 0;
		if (r)
			freeReplyObject(r);
		redisFree(c);
		if (ok)
			return;
		srv_sleep_ms(10);
	}
	cr_assert_fail("redis-server on port %d does not answer PING", redis_port);
}

/* SIGKILL, reaped. */
static void
kill_redis(void)
{
	cr_assert_eq(kill(redis_pid, SIGKILL), 0);
	srv_stop(redis_pid, 5);
	redis_pid = 0;
}

/* ------------------------------------------------------------------ */
/* rategate and lighttpd                                               */

static const char *
log_of(int i)
{
	static char p[2][SRV_PATH_MAX];

	snprintf(p[i], sizeof(p[i]), "%s/rg%d.log", srv_dir, i);
	return p[i];
}

/* Everything the servers wrote, for failure messages. */
static const char *
logs(void)
{
	static char *s;
	const char *names[] = { "lighttpd-error.log", "lighttpd.out", "rg0.log",
				"rg0.out", "rg1.log", "rg1.out", "redis.out" };
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *t = srv_read(srv_path(names[i]));
		if (t != NULL)
			fprintf(m, "--- %s:\n%s", names[i], t);
		free(t);
	}
	fclose(m);
	free(s);
	s = out;
	return s ? s : "";
}

/* n rategate processes with rules (@REDIS@ replaced by the redis URI's
 * port) on their own sockets, each logging to rgI.log, and lighttpd in
 * front of them. */
static void
start_gateways(const char *rules, int n)
{
	char portbuf[16], sock[SRV_PATH_MAX + 8], nbuf[8];

	srv_need("lighttpd", "lighttpd");
	snprintf(portbuf, sizeof(portbuf), "%d", redis_port);
	const char *rp[] = { "@REDIS@", portbuf, NULL };
	srv_write_subst("site.rules", rules, rp, 0644);

	char *backends = NULL;
	size_t blen = 0;
	FILE *m = open_memstream(&backends, &blen);
	for (int i = 0; i < n; i++) {
		char rel[32], out[32];
		snprintf(nbuf, sizeof(nbuf), "%d", i);
		snprintf(rel, sizeof(rel), "rg%d.sock", i);
		snprintf(out, sizeof(out), "rg%d.out", i);
		snprintf(sock, sizeof(sock), "unix:%s", srv_path(rel));
		rg[i] = srv_start_rategate(srv_path("site.rules"), sock, 4, log_of(i),
					   srv_path(out));
		const char *bp[] = { "@N@", nbuf, "@DIR@", srv_dir,
				     "@MODE@", mode, NULL };
		char *b = srv_subst(backend, bp);
		fprintf(m, "%s%s", i ? ",\n    " : "", b);
		free(b);
	}
	fclose(m);
	nrg = n;

	web_port = srv_free_port();
	snprintf(portbuf, sizeof(portbuf), "%d", web_port);
	const char *pairs[] = { "@DIR@", srv_dir, "@PORT@", portbuf,
				"@BACKENDS@", backends, NULL };
	char *conf = srv_subst(lighttpd_conf, pairs);
	free(backends);
	lighttpd = srv_start_lighttpd(conf, web_port);
	free(conf);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", web_port);
}

/* Stop lighttpd, then every rategate: each exits 0 on SIGTERM, with no
 * sanitizer report. */
static void
stop_gateways(void)
{
	srv_stop(lighttpd, 10);
	lighttpd = 0;
	for (int i = 0; i < nrg; i++) {
		char out[32];
		cr_expect_eq(srv_stop(rg[i], 15), 0, "rategate %d exit status\n%s",
			     i, logs());
		snprintf(out, sizeof(out), "rg%d.out", i);
		srv_expect_no_sanitizer(srv_path(out));
	}
	nrg = 0;
}

/* Lines of rategate i's log containing needle. */
static int
count_in_log(int i, const char *needle)
{
	return srv_count_in_file(log_of(i), needle);
}

/* GET path; *secs gets how long the answer took. */
static struct srv_resp
get_timed(const char *path, double *secs)
{
	struct srv_resp r;
	double t0 = srv_now();

	srv_http_at("GET", base, path, NULL, &r);
	if (secs)
		*secs = srv_now() - t0;
	return r;
}

static long
get_status(const char *path)
{
	struct srv_resp r = get_timed(path, NULL);
	long s = r.status;

	srv_resp_free(&r);
	return s;
}

/* Exactly rategate's 503 for a failing store, answered within 2 s. */
static void
expect_503(const char *path)
{
	double secs;
	char v[128];
	struct srv_resp r = get_timed(path, &secs);

	cr_assert_str_eq(r.status_line, "HTTP/1.1 503 Service Unavailable",
			 "status line\n%s", logs());
	cr_expect_str_eq(srv_header(&r, "Retry-After", v, sizeof(v)), "5");
	cr_expect_str_eq(srv_header(&r, "Cache-Control", v, sizeof(v)), "no-store");
	cr_expect_str_eq(r.body,
			 "Service Unavailable: the rate limiter cannot reach its counters\n");
	cr_expect_lt(secs, 2.0, "a 503 took %.3f s", secs);
	srv_resp_free(&r);
}

/* Exactly a 429 of limit "N/minute". */
static void
expect_429(const char *path, const char *count)
{
	char v[128];
	struct srv_resp r = get_timed(path, NULL);

	cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests",
			 "status line\n%s", logs());
	cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Limit", v, sizeof(v)), count);
	cr_expect_str_eq(srv_header(&r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
	srv_resp_free(&r);
}

/* ------------------------------------------------------------------ */
/* Two processes, one budget                                           */

struct answer {
	long status;
	int retry_after;        /* the Retry-After value, -1 when absent */
};

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;

	if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
		a->retry_after = atoi(p + 12);
	return len;
}

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

/* n GETs of url at once (libcurl multi, one connection each). */
static void
get_parallel(const char *url, int n, struct answer *a)
{
	CURLM *m = curl_multi_init();
	CURL *easy[64];
	int running = 0;

	cr_assert(n <= 64);
	curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)n);
	for (int i = 0; i < n; i++) {
		a[i].status = 0;
		a[i].retry_after = -1;
		easy[i] = curl_easy_init();
		cr_assert_not_null(easy[i]);
		curl_easy_setopt(easy[i], CURLOPT_URL, url);
		curl_easy_setopt(easy[i], CURLOPT_PROXY, "");
		curl_easy_setopt(easy[i], CURLOPT_NOPROXY, "*");
		curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 20L);
		curl_easy_setopt(easy[i], CURLOPT_FORBID_REUSE, 1L);
		curl_easy_setopt(easy[i], CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(easy[i], CURLOPT_HEADERDATA, &a[i]);
		curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, discard);
		curl_multi_add_handle(m, easy[i]);
	}
	do {
		if (curl_multi_perform(m, &running) != CURLM_OK)
			break;
		if (running > 0)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	} while (running > 0);
	for (int i = 0; i < n; i++) {
		curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &a[i].status);
		curl_multi_remove_handle(m, easy[i]);
		curl_easy_cleanup(easy[i]);
	}
	curl_multi_cleanup(m);
}

Test(redis_gateway, two_processes_share_one_redis_budget_exactly,
     .init = setup, .fini = teardown, .timeout = 30)
{
	enum { N = 40 };
	struct answer a[N];
	char url[SRV_PATH_MAX];

	start_redis();
	start_gateways("storage redis://127.0.0.1:@REDIS@/0?timeout=500&connect-timeout=500\n"
		       "headers on\n"
		       "/static.txt 20/minute\n", 2);
	snprintf(url, sizeof(url), "%s/static.txt", base);

	get_parallel(url, N, a);
	int ok = 0, denied = 0, with_retry = 0;
	for (int i = 0; i < N; i++) {
		ok += a[i].status == 200;
		denied += a[i].status == 429;
		with_retry += a[i].status == 429 && a[i].retry_after >= 1 &&
			      a[i].retry_after <= 60;
	}
	cr_assert_eq(ok + denied, N, "answers other than 200 and 429\n%s", logs());
	cr_expect_eq(ok, 20, "%d of %d allowed\n%s", ok, N, logs());
	cr_expect_eq(denied, 20);
	cr_expect_eq(with_retry, denied, "429s without a Retry-After of 1..60 s");

	/* Both processes answered: each logged some of the denials, which
	 * add up to all of them. */
	int d0 = count_in_log(0, "event=deny "), d1 = count_in_log(1, "event=deny ");
	cr_expect_eq(d0 + d1, 20, "deny lines %d + %d\n%s", d0, d1, logs());
	/* (Under valgrind, srv_slow(), lighttpd may well leave the slower of
	 * two cold processes idle: the budget is still checked above.) */
	cr_expect((d0 > 0 && d1 > 0) || srv_slow() > 1,
		  "deny lines %d and %d: one process did all the work\n%s",
		  d0, d1, logs());

	/* The budget lives in Redis: one key, with a TTL of at most the
	 * window (besides it, at most "rg.epoch", the over-limit caches'
	 * epoch, once a cache has denied). */
	redisContext *c = redis();
	redisReply *r = redisCommand(c, "KEYS rg:*");
	cr_assert_not_null(r);
	cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
	cr_assert_eq(r->elements, 1, "%zu keys in redis", r->elements);
	cr_expect_str_eq(r->element[0]->str, "rg:r/static.txt:addr=127.0.0.1:20/60000/fw");
	char key[256];
	snprintf(key, sizeof(key), "%s", r->element[0]->str);
	freeReplyObject(r);
	r = redisCommand(c, "PTTL %s", key);
	cr_assert_not_null(r);
	cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
	cr_expect(r->integer > 0 && r->integer <= 60000, "PTTL %lld", r->integer);
	freeReplyObject(r);
	/* "STRATEGY COUNT w0 w1": the window holds all 20 hits */
	r = redisCommand(c, "GET %s", key);
	cr_assert_not_null(r);
	cr_assert_eq(r->type, REDIS_REPLY_STRING);
	int strat = -1;
	unsigned long long cnt = 0;
	cr_expect_eq(sscanf(r->str, "%d %llu", &strat, &cnt), 2, "state \"%s\"", r->str);
	cr_expect_eq(cnt, 20, "state \"%s\"", r->str);
	freeReplyObject(r);
	redisFree(c);

	/* and one more request is denied, whichever process takes it */
	expect_429("/static.txt", "20");
	expect_429("/static.txt", "20");
	cr_expect_eq(count_in_log(0, "event=store-"), 0, "%s", logs());
	cr_expect_eq(count_in_log(1, "event=store-"), 0, "%s", logs());
	stop_gateways();
}

/* ------------------------------------------------------------------ */
/* Redis killed                                                        */

static const char rules_fmt[] =
	"storage redis://127.0.0.1:@REDIS@/0?timeout=200&connect-timeout=200&fallback=%s\n"
	"store-failure %s\n"
	"key-prefix rgtest-%ld\n"
	"headers on\n"
	"/static.txt 3/minute\n";

static void
start_policy(const char *policy)
{
	char rules[512];

	/* the fallback store in the test's own directory, never the host's
	 * /dev/shm/rategate (README command 1 uses that one) */
	snprintf(rules, sizeof(rules), rules_fmt, srv_path("fallback.shm"), policy,
		 (long)getpid());
	start_redis();
	start_gateways(rules, 1);
	/* Redis decides: one hit of three */
	cr_assert_eq(get_status("/static.txt"), 200, "%s", logs());
}

Test(redis_gateway, deny_answers_503_while_redis_is_dead_then_redis_decides_again,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_policy("deny");
	kill_redis();

	/* 10 requests over a second: 503 at once each, one store-down line
	 * (the retries in the background log nothing) */
	for (int i = 0; i < 10; i++) {
		expect_503("/static.txt");
		srv_sleep_ms(100);
	}
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "(store-failure deny)"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=store-up"), 0, "%s", logs());
	/* and the 503s themselves are logged at most once a second (the
	 * outage so far lasted a little over one) */
	int errs = count_in_log(0, "event=store-error");
	cr_expect(errs >= 1 && errs <= 2, "%d store-error lines for 10 requests in ~1 s\n%s",
		  errs, logs());
	/* each says which request it was about */
	cr_expect_eq(count_in_log(0, "requests are answered 503; this one from 127.0.0.1, rule /static.txt)"),
		     errs, "%s", logs());

	/* Redis back on the same port, empty: once the next attempt is due,
	 * a fresh budget of 3 */
	start_redis();
	double end = srv_now() + 5;
	long st;
	while ((st = get_status("/static.txt")) == 503 && srv_now() < end)
		srv_sleep_ms(50);
	cr_assert_eq(st, 200, "first answer after the restart: %ld\n%s", st, logs());
	cr_expect_eq(get_status("/static.txt"), 200);
	cr_expect_eq(get_status("/static.txt"), 200);
	expect_429("/static.txt", "3");
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=store-up"), 1, "%s", logs());

	/* the budget is Redis's again (one counter key; the 429 also read
	 * the over-limit cache's epoch, "PREFIX.epoch", before caching it) */
	redisContext *c = redis();
	redisReply *r = redisCommand(c, "KEYS rgtest-%ld:*", (long)getpid());
	cr_assert_not_null(r);
	cr_expect_eq(r->elements, 1);
	freeReplyObject(r);
	redisFree(c);
	stop_gateways();
}

Test(redis_gateway, fallback_limits_exactly_on_shm_while_redis_is_dead,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_policy("fallback");
	kill_redis();

	/* The shared-memory store starts its own count: 3 then 429. */
	for (int i = 0; i < 3; i++) {
		double secs;
		struct srv_resp r = get_timed("/static.txt", &secs);
		cr_expect_eq(r.status, 200, "request %d: %s\n%s", i, r.status_line, logs());
		cr_expect_lt(secs, 2.0, "took %.3f s", secs);
		srv_resp_free(&r);
	}
	for (int i = 0; i < 3; i++)
		expect_429("/static.txt", "3");
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "(store-failure fallback)"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=store-error"), 0, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=deny "), 3, "%s", logs());
	stop_gateways();
}

Test(redis_gateway, allow_lets_requests_through_uncounted_while_redis_is_dead,
     .init = setup, .fini = teardown, .timeout = 30)
{
	start_policy("allow");
	kill_redis();

	for (int i = 0; i < 8; i++) {
		double secs;
		struct srv_resp r = get_timed("/static.txt", &secs);
		cr_expect_eq(r.status, 200, "request %d: %s\n%s", i, r.status_line, logs());
		cr_expect_str_eq(r.body, "static file content\n");
		cr_expect_lt(secs, 2.0, "took %.3f s", secs);
		srv_resp_free(&r);
	}
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "(store-failure allow)"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=deny "), 0, "%s", logs());
	stop_gateways();
}

/* store-failure fallback switched on or off by a reload needs a restart
 * (the fallback's store is opened at start): the reload says so, and
 * until the restart the gateway goes on as it started. */
Test(redis_gateway, reload_switching_the_fallback_says_a_restart_is_needed,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[512];
	char port[16];

	start_policy("deny");
	snprintf(port, sizeof(port), "%d", redis_port);
	const char *rp[] = { "@REDIS@", port, NULL };
	snprintf(rules, sizeof(rules), rules_fmt, srv_path("fallback.shm"), "fallback",
		 (long)getpid());
	srv_write_subst("site.rules", rules, rp, 0644);
	cr_assert_eq(kill(rg[0], SIGHUP), 0);
	for (int i = 0; i < 250 && count_in_log(0, "event=reload ") < 2; i++)
		srv_sleep_ms(20);
	cr_expect_eq(count_in_log(0, "level=info event=reload msg=\"") , 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "level=warn event=reload msg=\"store-failure changed to fallback: restart rategate to open its shared-memory store; until then requests are answered as store-failure deny says while Redis is away\""),
		     1, "%s", logs());
	kill_redis();
	expect_503("/static.txt");
	stop_gateways();

	/* and the other way */
	cr_assert_eq(unlink(log_of(0)), 0);
	start_redis();
	start_gateways(rules, 1);
	snprintf(rules, sizeof(rules), rules_fmt, srv_path("fallback.shm"), "allow",
		 (long)getpid());
	srv_write_subst("site.rules", rules, rp, 0644);
	cr_assert_eq(kill(rg[0], SIGHUP), 0);
	for (int i = 0; i < 250 && count_in_log(0, "event=reload ") < 2; i++)
		srv_sleep_ms(20);
	cr_expect_eq(count_in_log(0, "level=warn event=reload msg=\"store-failure changed from fallback: restart rategate to close its shared-memory store; until then requests are decided there while Redis is away\""),
		     1, "%s", logs());
	stop_gateways();
}

/* Redis not running when the gateway starts: the store starts down, and
 * says so in the gateway's log file (-L), not on standard error, which a
 * daemon often sends to /dev/null; then Redis comes and decides. */
Test(redis_gateway, redis_down_at_start_is_logged_in_the_log_file,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[512];

	redis_port = srv_free_port();   /* nothing listens there yet */
	snprintf(rules, sizeof(rules), rules_fmt, srv_path("fallback.shm"), "deny",
		 (long)getpid());
	start_gateways(rules, 1);
	expect_503("/static.txt");
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	char *out = srv_read_text(srv_path("rg0.out"));
	cr_expect_null(strstr(out ? out : "", "store-down"), "on stderr:\n%s", out);
	free(out);

	start_redis();
	double end = srv_now() + 5;
	long st;
	while ((st = get_status("/static.txt")) == 503 && srv_now() < end)
		srv_sleep_ms(100);
	cr_expect_eq(st, 200, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=store-up"), 1, "%s", logs());
	stop_gateways();
}

/* ------------------------------------------------------------------ */
/* The over-limit cache and concurrency=                               */

static long long
evalsha_calls(void)
{
	redisContext *c = redis();
	redisReply *r = redisCommand(c, "INFO commandstats");
	long long n = 0;

	cr_assert(r != NULL && r->type == REDIS_REPLY_STRING);
	const char *p = strstr(r->str, "cmdstat_evalsha:calls=");
	if (p != NULL)
		n = atoll(p + strlen("cmdstat_evalsha:calls="));
	freeReplyObject(r);
	redisFree(c);
	return n;
}

/* A client its rates deny, on a concurrency= rule (responder mode), costs
 * Redis nothing: the over-limit cache answers before any slot is taken
 * (a slot was taken and given back, two EVALSHA per request of the flood;
 * found by a review). */
Test(redis_gateway, a_denied_flood_on_a_concurrency_rule_costs_redis_nothing,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[SRV_PATH_MAX + 256];

	start_redis();
	pid_t app = srv_start_echo_fcgi(0, srv_path("app.sock"), 4, srv_path("count"));
	snprintf(rules, sizeof(rules),
		 "storage redis://127.0.0.1:@REDIS@/0\n"
		 "key-prefix rgtest-%ld\n"
		 "upstream fcgi+unix://%s\n"
		 "/chat 1/hour concurrency=2\n", (long)getpid(), srv_path("app.sock"));
	mode = "responder";
	start_gateways(rules, 1);
	cr_expect_eq(get_status("/chat"), 200, "%s", logs());
	long long before = evalsha_calls();
	cr_expect_eq(get_status("/chat"), 429, "%s", logs());  /* Redis says */
	/* the slot's acquire and release, the rates' apply */
	cr_expect_eq(evalsha_calls() - before, 3);
	before = evalsha_calls();
	for (int i = 0; i < 10; i++)
		cr_expect_eq(get_status("/chat"), 429);
	cr_expect_eq(evalsha_calls() - before, 0, "the denied flood went to Redis");
	stop_gateways();
	srv_stop(app, 5);
}

/* A deduct-when= rule counts after the response: with Redis dead and
 * store-failure allow, that count fails for every request let through,
 * and its store-error line is bound to once a second like the others
 * (a review found one line per request: a flood while Redis is away). */
Test(redis_gateway, after_response_failures_are_logged_at_most_once_a_second,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[SRV_PATH_MAX + 256];

	start_redis();
	pid_t app = srv_start_echo_fcgi(0, srv_path("app.sock"), 4, NULL);
	snprintf(rules, sizeof(rules),
		 "storage redis://127.0.0.1:@REDIS@/0?timeout=200&connect-timeout=200\n"
		 "store-failure allow\n"
		 "key-prefix rgtest-%ld\n"
		 "upstream fcgi+unix://%s\n"
		 "/login 100/minute deduct-when=401\n", (long)getpid(),
		 srv_path("app.sock"));
	mode = "responder";
	start_gateways(rules, 1);
	cr_assert_eq(get_status("/login?status=401"), 401, "%s", logs());
	kill_redis();

	double t0 = srv_now();
	for (int i = 0; i < 10; i++)
		cr_expect_eq(get_status("/login?status=401"), 401, "%s", logs());
	double secs = srv_now() - t0;
	/* the check's line and the counts' share the bound: one line a
	 * second in all, and one more for a second boundary crossed */
	int lines = count_in_log(0, "event=store-error");
	cr_expect(lines >= 1 && lines <= (int)secs + 2,
		  "%d store-error lines for 10 requests in %.3f s\n%s", lines,
		  secs, logs());
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	stop_gateways();
	srv_stop(app, 5);
}

/* store-failure deny reloaded as allow applies at once, and the
 * store-down line that follows says allow, as the requests are answered
 * (it said "answered 503 (store-failure deny)", the policy of the start,
 * above requests let through: found by a review). */
Test(redis_gateway, store_down_line_says_the_policy_a_reload_set,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char rules[512], port[16];

	start_policy("deny");
	snprintf(port, sizeof(port), "%d", redis_port);
	const char *rp[] = { "@REDIS@", port, NULL };
	snprintf(rules, sizeof(rules), rules_fmt, srv_path("fallback.shm"), "allow",
		 (long)getpid());
	srv_write_subst("site.rules", rules, rp, 0644);
	cr_assert_eq(kill(rg[0], SIGHUP), 0);
	for (int i = 0; i < 250 && count_in_log(0, "event=reload ") < 1; i++)
		srv_sleep_ms(20);
	cr_assert_eq(count_in_log(0, "level=info event=reload msg=\""), 1, "%s", logs());
	kill_redis();
	for (int i = 0; i < 3; i++)
		cr_expect_eq(get_status("/static.txt"), 200, "%s", logs());
	cr_expect_eq(count_in_log(0, "event=store-down"), 1, "%s", logs());
	cr_expect_eq(count_in_log(0, "requests are let through uncounted until Redis answers again (store-failure allow)\""),
		     1, "%s", logs());
	cr_expect_eq(count_in_log(0, "(store-failure deny)"), 0, "%s", logs());
	stop_gateways();
}
