/*
 * test_store_redis.c - unit tests of gateway/store_redis.c against real
 * redis-server processes, each started by the test on a free 127.0.0.1
 * port with its own temporary directory, and stopped by PID.
 *
 * The strategy vectors and the probe rules on Redis (on a virtual clock:
 * the test-only client_clock), time from Redis TIME, batches all or
 * nothing, TTLs on every key, NOSCRIPT after SCRIPT FLUSH, one EVALSHA per
 * apply (INFO commandstats, up to 20 limits) and none for a cached
 * over-limit key, the over-limit cache's limits, a wrong password, a db
 * and a unix socket, a read-only replica, exactness with two processes of threads, in-flight
 * leases, a forked child, and Redis stopped, killed and restarted under
 * load with the deny and the fallback policies.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>
#include <valgrind/valgrind.h>

#include "clock.h"
#include "inspect_run.h"
#include "log.h"
#include "rules.h"
#include "store_redis.h"
#include "strategy_vectors.h"

#define T0 1700000000000LL      /* a virtual now, ms */

/* ------------------------------------------------------------------ */
/* redis-server processes                                              */

struct server {
	pid_t pid;
	int port;
	char dir[64];
	char sock[96];
};

static char tdir[64];           /* this test's directory */

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static redisContext *raw_connect(const struct server *s)
{
	struct timeval tv = { 1, 0 };

	return redisConnectWithTimeout("127.0.0.1", s->port, tv);
}

/* A reply to a command on a fresh raw connection (AUTH first when pw). */
static redisReply *raw(const struct server *s, const char *pw,
		       const char *fmt, ...)
{
	redisContext *c = raw_connect(s);
	redisReply *r;
	va_list ap;

	cr_assert(c && !c->err, "raw connect to %d", s->port);
	if (pw) {
		r = redisCommand(c, "AUTH %s", pw);
		cr_assert_not_null(r);
		freeReplyObject(r);
	}
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	cr_assert_not_null(r, "raw command: %s", c->errstr);
	redisFree(c);
	return r;
}

static long long raw_int(const struct server *s, const char *fmt,
			 const char *arg)
{
	redisReply *r = raw(s, NULL, fmt, arg);
	long long v;

	cr_assert_eq(r->type, REDIS_REPLY_INTEGER, "%s: %s", fmt,
		     r->type == REDIS_REPLY_ERROR ? r->str : "not an integer");
	v = r->integer;
	freeReplyObject(r);
	return v;
}

/* Starts redis-server on s->port (a free one when 0) with extra
 * arguments; waits until it answers PING (or, with a password, NOAUTH). */
static void start_argv(struct server *s, const char *const *extra)
{
	char port[16];

	if (s->port == 0)
		s->port = free_port();
	if (s->dir[0] == '\0') {
		snprintf(s->dir, sizeof(s->dir), "%s/r%d", tdir, s->port);
		mkdir(s->dir, 0700);
	}
	snprintf(port, sizeof(port), "%d", s->port);
	s->pid = fork();
	cr_assert(s->pid >= 0);
	if (s->pid == 0) {
		const char *argv[32] = { "redis-server", "--port", port,
			"--bind", "127.0.0.1", "--dir", s->dir, "--save", "",
			"--appendonly", "no", "--daemonize", "no",
			"--loglevel", "warning", "--logfile", "redis.log" };
		int n = 17, fd = open("/dev/null", O_RDWR);
		for (int i = 0; extra && extra[i]; i++)
			argv[n++] = extra[i];
		argv[n] = NULL;
		/* never outlive the test, even one that crashes */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
		}
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = raw_connect(s);
		if (c && !c->err) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r != NULL;
			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return;
		} else if (c) {
			redisFree(c);
		}
		cr_assert_eq(waitpid(s->pid, NULL, WNOHANG), 0,
			     "redis-server on port %d exited", s->port);
		sleep_ms(10);
	}
	cr_assert_fail("redis-server on port %d does not answer", s->port);
}

static void start(struct server *s)
{
	start_argv(s, NULL);
}

static void stop_sig(struct server *s, int sig)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, sig);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

static void stop(struct server *s)
{
	stop_sig(s, SIGKILL);
}

static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char p[512];

	if (d == NULL) {
		unlink(path);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		rm_tree(p);
	}
	closedir(d);
	rmdir(path);
}

static struct server srv;       /* the one most tests use */

static void setup(void)
{
	snprintf(tdir, sizeof(tdir), "/tmp/rg-redis-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	memset(&srv, 0, sizeof(srv));
	start(&srv);
}

static void teardown(void)
{
	stop(&srv);
	rm_tree(tdir);
}

TestSuite(redis, .init = setup, .fini = teardown, .timeout = 60);

/* ------------------------------------------------------------------ */
/* Stores                                                              */

static struct redis_config config(const struct server *s)
{
	struct redis_config c = {
		.host = "127.0.0.1",
		.port = (unsigned)s->port,
		.connect_timeout_ms = 200,
		.timeout_ms = 200,
		.failure = RL_STORE_FAIL_DENY,
	};
	return c;
}

static void open_ok(const struct redis_config *c, struct rl_store *st)
{
	char err[512] = "";

	cr_assert_eq(redis_store_open(c, st, err, sizeof(err)), 0, "open: %s",
		     err);
}

static struct redis_stats stats(struct rl_store *st)
{
	struct redis_stats s;

	store_redis_stats(store_redis_of(st), &s);
	return s;
}

/* A fresh store on an empty database, on the virtual clock, no cache
 * (the cache runs on the real clock). */
static int make_vclock(struct rl_store *st, void *ctx)
{
	struct server *s = ctx;
	struct redis_config c = config(s);
	char err[512];

	freeReplyObject(raw(s, NULL, "FLUSHALL"));
	c.client_clock = 1;
	c.cache_off = 1;
	return redis_store_open(&c, st, err, sizeof(err));
}

static size_t dbsize(struct rl_store *st)
{
	(void)st;
	return (size_t)raw_int(&srv, "DBSIZE", NULL);
}

/* The script decides a batch by its plain path or by its general path
 * (see the top of gateway/store_redis.lua): each vector runs alone and
 * beside a GCRA op (the plain path with one op and with two), and beside
 * a moving window of 10,000 hits, a ring too large to read whole, which
 * sends the whole batch to the general path. */
Test(redis, strategy_vectors)
{
	run_vectors_on_store(make_vclock, &srv, "vec:");
	run_vectors_on_store_paired(make_vclock, &srv, "pair:",
				    (struct rl_step){ RL_GCRA, 1000000000, 1000, 0, 1 });
	run_vectors_on_store_paired(make_vclock, &srv, "general:",
				    (struct rl_step){ RL_MOVING_WINDOW, 10000, 1000, 0, 1 });
}

Test(redis, probes_are_checked_never_written)
{
	run_probe_on_store(make_vclock, &srv, dbsize);
}

Test(redis, batch_all_or_nothing_and_duplicates)
{
	struct rl_store st;

	cr_assert_eq(make_vclock(&st, &srv), 0);
	sv_batch_vector(&st, T0);
	/* a key holding another strategy or count reads as fresh */
	cr_expect_eq(sv_remaining(&st, "a", sv_limit(RL_GCRA, 5, 60000), T0 + 1000), 5);
	cr_expect_eq(sv_remaining(&st, "a", sv_limit(RL_MOVING_WINDOW, 5, 60000),
			       T0 + 1000), 5);
	cr_expect_eq(sv_remaining(&st, "m", sv_limit(RL_MOVING_WINDOW, 12, 60000),
			       T0 + 2000), 12);
	sv_hit(&st, "m", sv_limit(RL_FIXED_WINDOW, 3, 60000), T0 + 3000);
	cr_expect_eq(sv_remaining(&st, "m", sv_limit(RL_FIXED_WINDOW, 3, 60000),
			       T0 + 3000), 2);
	st.ops->destroy(st.impl);
}

/* Moving windows whose rings wrap many times: 1000 hits (8 KB, read whole
 * in one GET) and 10,000 (80 KB, above the script's SLURP_MAX: read one
 * GETRANGE per slot, each slot once per call). */
Test(redis, moving_window_large_ring)
{
	static const uint64_t counts[] = { 1000, 10000 };

	for (size_t c = 0; c < 2; c++) {
		struct rl_store st;
		uint64_t n = counts[c];
		struct rl_step p = sv_limit(RL_MOVING_WINDOW, n, 10000);
		char key[32];

		snprintf(key, sizeof(key), "ring%llu", (unsigned long long)n);
		cr_assert_eq(make_vclock(&st, &srv), 0);
		for (int round = 0; round < 3; round++) {
			int64_t t = T0 + round * 10000;
			p.cost = n * 6 / 10;
			cr_expect(sv_hit(&st, key, p, t).allowed);
			p.cost = n * 4 / 10;
			struct rl_verdict v = sv_hit(&st, key, p, t + 5000);
			cr_expect(v.allowed);
			cr_expect_eq(v.remaining, 0);
			cr_expect_eq(v.reset_ms, t + 5000 + 10000);
			p.cost = 1;
			v = sv_hit(&st, key, p, t + 9999);
			cr_expect(!v.allowed);
			cr_expect_eq(v.retry_ms, 1, "count %llu round %d: retry %lld",
				     (unsigned long long)n, round,
				     (long long)v.retry_ms);
			/* the 600 of t have left at t + 10000: 600 fit again,
			 * 601 do not (the 400 of t + 5000 are still in) */
			p.cost = n * 6 / 10 + 1;
			v = sv_hit(&st, key, p, t + 10000);
			cr_expect(!v.allowed);
			cr_expect_eq(v.retry_ms, 5000);
			cr_expect_eq(v.remaining, n * 6 / 10);
		}
		/* 32 bytes of header and 8 per slot */
		cr_expect_eq(raw_int(&srv, "STRLEN %s", key), 32 + 8 * (long long)n);
		st.ops->destroy(st.impl);
	}
}

/* ------------------------------------------------------------------ */
/* Time from Redis                                                     */

Test(redis, time_comes_from_redis)
{
	struct rl_store a, b;
	struct redis_config c = config(&srv);
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 3, 60000);

	open_ok(&c, &a);
	open_ok(&c, &b);
	/* two hosts whose clocks say 1970 and 2286: one window, and each
	 * says its reset on its own clock (a minute after the window opened,
	 * so X-RateLimit-Reset is right on both: found by a review, a host
	 * 10 minutes behind said 660 s) */
	struct rl_verdict v1 = sv_hit(&a, "t", p, 0);
	struct rl_verdict v2 = sv_hit(&b, "t", p, 10000000000000LL);
	cr_expect_eq(v1.remaining, 2);
	cr_expect_eq(v2.remaining, 1);
	cr_expect_eq(v1.reset_ms, 60000);
	cr_expect_leq(v2.reset_ms, 10000000000000LL + 60000);
	cr_expect_geq(v2.reset_ms, 10000000000000LL + 60000 - 1000);
	cr_expect_eq(sv_remaining(&a, "t", p, -5), 1);
	a.ops->destroy(a.impl);
	b.ops->destroy(b.impl);
}

/* ------------------------------------------------------------------ */
/* TTLs                                                                */

static int ttl_ok(const char *key, long long max)
{
	long long t = raw_int(&srv, "PTTL %s", key);

	cr_expect(t > 0 && t <= max, "%s: PTTL %lld, expected 1..%lld", key, t,
		  max);
	return t > 0;
}

Test(redis, every_key_has_a_ttl)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	uint64_t id, held;
	static const char *names[RL_STRATEGY_COUNT] = { "fw", "fwe", "mw",
							"swc", "gcra" };

	open_ok(&c, &st);
	for (unsigned s = 0; s < RL_STRATEGY_COUNT; s++) {
		struct rl_step p = sv_limit((enum rl_strategy)s, 2, 60000);
		sv_hit(&st, names[s], p, 0);
		/* sliding keeps the window for two periods */
		ttl_ok(names[s], s == RL_SLIDING_WINDOW ? 120000 : 60000);
	}
	/* an elastic denial moves the window: the TTL moves with it */
	struct rl_step e = sv_limit(RL_FIXED_WINDOW_ELASTIC, 1, 60000);
	sv_hit(&st, "fwe1", e, 0);
	sleep_ms(50);
	cr_expect(!sv_hit(&st, "fwe1", e, 0).allowed);
	ttl_ok("fwe1", 60000);
	cr_expect_gt(raw_int(&srv, "PTTL %s", "fwe1"), 60000 - 40);
	/* a test or a probe writes no key */
	struct rl_store_op pr = { "probe", 5, sv_limit(RL_GCRA, 2, 1000), { 0 }, 1 };
	cr_assert_eq(st.ops->apply(st.impl, &pr, 1, RL_HIT, 0, &err), 0);
	sv_remaining(&st, "test", sv_limit(RL_FIXED_WINDOW, 2, 1000), 0);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "probe"), 0);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "test"), 0);
	/* in-flight leases: the latest lease's expiry */
	cr_assert_eq(st.ops->acquire(st.impl, "lease", 5, 3, 30000, 0, &id,
				     &held, &err), 1, "%s", err.msg);
	ttl_ok("lease", 30000);
	/* and nothing without one */
	redisReply *keys = raw(&srv, NULL, "KEYS *");
	cr_assert_eq(keys->type, REDIS_REPLY_ARRAY);
	cr_expect_eq(keys->elements, 7);
	for (size_t i = 0; i < keys->elements; i++)
		ttl_ok(keys->element[i]->str, 120000);
	freeReplyObject(keys);
	st.ops->destroy(st.impl);
}

/* A hit inside a window that is already open leaves the window's end
 * where it was, and the script then writes the state with KEEPTTL rather
 * than a new PX: the key must still expire exactly at the window's end
 * (the reset the verdict reports), and must not lose its TTL. */
Test(redis, ttl_stays_at_the_window_end)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	static const struct { const char *key; enum rl_strategy s; } k[] = {
		{ "keep-fw", RL_FIXED_WINDOW }, { "keep-swc", RL_SLIDING_WINDOW },
	};

	open_ok(&c, &st);
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		struct rl_step p = sv_limit(k[i].s, 5, 60000);
		struct rl_verdict v1 = sv_hit(&st, k[i].key, p, clock_wall_ms());
		sleep_ms(400);
		struct rl_verdict v2 = sv_hit(&st, k[i].key, p, clock_wall_ms());
		long long ttl = raw_int(&srv, "PTTL %s", k[i].key);
		long long want = (long long)(v2.reset_ms - clock_wall_ms());

		cr_expect(v1.allowed && v2.allowed, "%s: allowed", k[i].key);
		cr_expect_eq(v2.remaining, 3, "%s: remaining %" PRIu64, k[i].key,
			     v2.remaining);
		/* on this host's clock, read a round trip apart from Redis's
		 * (tens of ms under valgrind): a moved window is 400 ms off */
		cr_expect(llabs((long long)(v2.reset_ms - v1.reset_ms)) <= 150,
			  "%s: the window moved", k[i].key);
		cr_expect(ttl > 0 && llabs(ttl - want) <= 150,
			  "%s: PTTL %lld, expected %lld (the window's end)",
			  k[i].key, ttl, want);
	}
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* rategate inspect on Redis                                           */

Test(redis, inspect_lists_and_resets_a_client)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	char rules[160], text[128];
	uint64_t id, held;
	static const char *const keys7[] = {
		"rg:r/a:addr=192.0.2.7:2/60000/fw",
		"rg:r/c:addr=192.0.2.7:inflight/2",
		"rg:r/m:addr=192.0.2.7:5/60000/mw",
		"rg:r/s:addr=192.0.2.7:5/60000/swc",
	};

	open_ok(&c, &st);
	sv_hit(&st, keys7[0], sv_limit(RL_FIXED_WINDOW, 2, 60000), 0);
	sv_hit(&st, keys7[0], sv_limit(RL_FIXED_WINDOW, 2, 60000), 0);
	cr_assert_eq(st.ops->acquire(st.impl, keys7[1], strlen(keys7[1]), 2,
				     30000, 0, &id, &held, &err), 1, "%s", err.msg);
	sv_hit(&st, keys7[2], sv_limit(RL_MOVING_WINDOW, 5, 60000), 0);
	sv_hit(&st, keys7[3], sv_limit(RL_SLIDING_WINDOW, 5, 60000), 0);
	sv_hit(&st, "rg:r/a:addr=192.0.2.8:2/60000/fw",
	       sv_limit(RL_FIXED_WINDOW, 2, 60000), 0);
	freeReplyObject(raw(&srv, NULL, "SET other:x 1"));
	st.ops->destroy(st.impl);

	snprintf(rules, sizeof(rules), "%s/inspect.rules", tdir);
	snprintf(text, sizeof(text), "storage redis://127.0.0.1:%d/0\n", srv.port);
	FILE *f = fopen(rules, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);

	/* --stats: the keys under the prefix, not other:x */
	cr_assert_eq(run_inspect("-c", rules, "--stats", NULL), 0, "%s", err_text);
	snprintf(text, sizeof(text), "store: redis 127.0.0.1:%d\nkey prefix: rg\nkeys: 5\n",
		 srv.port);
	cr_expect_str_eq(out_text, text);
	/* --client: each key of 192.0.2.7, sorted, in words */
	cr_assert_eq(run_inspect("-c", rules, "--client", "192.0.2.7", NULL), 0, "%s", err_text);
	const char *p = out_text;
	static const char *const want[] = {
		"rg:r/a:addr=192.0.2.7:2/60000/fw\n  fixed-window, limit 2: 2 used, expires in ",
		"rg:r/c:addr=192.0.2.7:inflight/2\n  1 in-flight lease, expires in ",
		"rg:r/m:addr=192.0.2.7:5/60000/mw\n  moving-window, a ring of 1 hit, expires in ",
		"rg:r/s:addr=192.0.2.7:5/60000/swc\n  sliding-window-counter, limit 5: 0 in the previous window, 1 in this one, expires in ",
	};
	for (size_t i = 0; i < 4; i++) {
		cr_assert(strncmp(p, want[i], strlen(want[i])) == 0,
			  "line %zu: expected \"%s\" in:\n%s", i, want[i], out_text);
		p = strchr(strchr(p, '\n') + 1, '\n') + 1;
	}
	cr_expect_str_eq(p, "");
	/* --top: not on Redis */
	cr_expect_eq(run_inspect("-c", rules, "--top", "5", NULL), 2);
	cr_expect(strstr(err_text, "--top needs the shared-memory store") != NULL, "%s",
		  err_text);
	/* --reset: exactly those four go */
	cr_assert_eq(run_inspect("-c", rules, "--reset", "192.0.2.7", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "reset 4 keys containing \"192.0.2.7\"\n") != NULL,
		  "%s", out_text);
	for (size_t i = 0; i < 4; i++)
		cr_expect_eq(raw_int(&srv, "EXISTS %s", keys7[i]), 0, "%s", keys7[i]);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "rg:r/a:addr=192.0.2.8:2/60000/fw"), 1);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "other:x"), 1);
	/* and then there is nothing left to find */
	cr_expect_eq(run_inspect("-c", rules, "--client", "192.0.2.7", NULL), 1);
	cr_expect_str_eq(err_text, "rategate inspect: no key contains \"192.0.2.7\"\n");
	inspect_free();
}

/* ------------------------------------------------------------------ */
/* Scripts and round trips                                             */

static long long cmdstat(const char *cmd)
{
	redisReply *r = raw(&srv, NULL, "INFO commandstats");
	char want[64];
	const char *p;
	long long v = 0;

	snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
	p = strstr(r->str, want);
	if (p)
		v = atoll(p + strlen(want));
	freeReplyObject(r);
	return v;
}

Test(redis, noscript_after_script_flush)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 10, 60000);

	open_ok(&c, &st);
	sv_hit(&st, "k", p, 0);
	freeReplyObject(raw(&srv, NULL, "SCRIPT FLUSH"));
	cr_expect_eq(sv_hit(&st, "k", p, 0).remaining, 8);
	cr_expect_eq(stats(&st).noscript, 1);
	cr_expect_eq(sv_hit(&st, "k", p, 0).remaining, 7);
	cr_expect_eq(stats(&st).noscript, 1);
	cr_expect_eq(cmdstat("script|load"), 2, "one load at connect, one after the flush");
	st.ops->destroy(st.impl);
}

Test(redis, one_evalsha_per_apply_none_when_cached)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	struct rl_store_op ops[8];
	char keys[8][16];

	open_ok(&c, &st);
	for (size_t i = 0; i < 8; i++) {
		snprintf(keys[i], sizeof(keys[i]), "rt:%zu", i);
		ops[i] = (struct rl_store_op){ keys[i], strlen(keys[i]),
			sv_limit((enum rl_strategy)(i % RL_STRATEGY_COUNT), 100, 60000),
			{ 0 }, 0 };
	}
	long long load = cmdstat("script|load");
	long long hand = cmdstat("auth") + cmdstat("select");
	for (size_t n = 1; n <= 8; n++) {
		long long before = cmdstat("evalsha");
		cr_assert_eq(st.ops->apply(st.impl, ops, n, RL_HIT, 0, &err), 0,
			     "%s", err.msg);
		cr_expect_eq(cmdstat("evalsha") - before, 1, "%zu limits", n);
	}
	cr_expect_eq(cmdstat("script|load"), load, "the script was loaded again");
	cr_expect_eq(cmdstat("auth") + cmdstat("select"), hand,
		     "a new connection per apply");

	/* over the limit: Redis denies once, then the cache does */
	struct rl_step one1 = sv_limit(RL_FIXED_WINDOW, 1, 60000);
	sv_hit(&st, "flood", one1, 0);
	long long before = cmdstat("evalsha");
	struct rl_verdict v = sv_hit(&st, "flood", one1, 0);
	cr_expect(!v.allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 1);
	before = cmdstat("evalsha");
	for (int i = 0; i < 100; i++) {
		struct rl_verdict w = sv_hit(&st, "flood", one1, 0);
		cr_expect(!w.allowed);
		cr_expect(w.retry_ms >= 1 && w.retry_ms <= v.retry_ms,
			  "cached retry %lld, Redis said %lld",
			  (long long)w.retry_ms, (long long)v.retry_ms);
		cr_expect_eq(w.reset_ms, v.reset_ms);
	}
	/* and in a batch with other keys */
	struct rl_store_op two[2] = {
		{ "other", 5, one1, { 0 }, 0 },
		{ "flood", 5, one1, { 0 }, 0 },
	};
	cr_assert_eq(st.ops->apply(st.impl, two, 2, RL_HIT, 0, &err), 0);
	cr_expect(two[0].v.allowed && !two[1].v.allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 0, "a cached key went to Redis");
	cr_expect_eq(stats(&st).cache_denied, 101);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "other"), 0, "a denied batch consumed");
	st.ops->destroy(st.impl);
}

/* An empty Redis, a store opened on it with c, and key banned there:
 * allowed once by 1/hour, then denied by Redis. */
static void
open_banned(const struct redis_config *c, struct rl_store *st, const char *key)
{
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);

	freeReplyObject(raw(&srv, NULL, "FLUSHALL"));
	open_ok(c, st);
	cr_expect(sv_hit(st, key, one, 0).allowed);
	cr_expect(!sv_hit(st, key, one, 0).allowed);            /* Redis */
}

/* What rategate inspect --reset does: the key deleted and a new epoch
 * written (under the key prefix prefix, NULL: "rg"), by a store of its
 * own without a cache. */
static void
reset_as_inspect(const char *prefix, const char *key)
{
	struct rl_store in;
	struct redis_config ci = config(&srv);
	char e[256];

	ci.key_prefix = prefix;
	ci.cache_off = 1;
	open_ok(&ci, &in);
	freeReplyObject(raw(&srv, NULL, "DEL %s", key));
	cr_assert_eq(store_redis_new_epoch(store_redis_of(&in), e, sizeof(e)), 0, "%s", e);
	in.ops->destroy(in.impl);
}

/* The over-limit cache never outlives Redis's state: inspect --reset (a
 * new epoch) or a Redis that restarted empty (no epoch at all) empties
 * every gateway's cache within REDIS_EPOCH_CHECK_MS, and the next request
 * is decided by Redis again. */
Test(redis, cache_emptied_by_a_reset_or_an_empty_redis)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);

	open_ok(&c, &st);
	cr_expect(sv_hit(&st, "ban", one, 0).allowed);
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* Redis */
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* the cache */
	cr_expect_eq(stats(&st).cache_denied, 1);

	reset_as_inspect(NULL, "ban");
	/* within the check interval the cache still answers ... */
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);
	cr_expect_eq(stats(&st).cache_denied, 2);
	/* ... then it sees the new epoch and asks Redis */
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(sv_hit(&st, "ban", one, 0).allowed, "the ban outlived the reset");
	cr_expect_eq(stats(&st).cache_denied, 2);

	/* Redis restarted empty: no epoch at all, which is a new one too */
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* epoch unchanged */
	uint64_t cd = stats(&st).cache_denied;
	freeReplyObject(raw(&srv, NULL, "FLUSHALL"));
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(sv_hit(&st, "ban", one, 0).allowed, "the ban outlived Redis's data");
	cr_expect_eq(stats(&st).cache_denied, cd);
	cr_assert_eq(err.msg[0], '\0');
	st.ops->destroy(st.impl);
}

/* RL_PEEK (a responder's look before an in-flight slot): answered from
 * the cache and not counted (the hit after it counts the denial); and an
 * epoch change it sees first empties the cache for the hit after it (a
 * review found the change swallowed: the ban outlived the reset). */
Test(redis, peek_answers_from_the_cache_and_sees_a_reset)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	struct rl_verdict v;
	struct rl_diag err;

	open_banned(&c, &st, "pk2");
	long long ev = cmdstat("evalsha");
	cr_assert_eq(sv_one(&st, "pk2", one, RL_PEEK, 0, &v, &err), 0, "%s", err.msg);
	cr_expect(!v.allowed, "the cache's denial");
	cr_expect_eq(stats(&st).cache_denied, 0, "a peek counted a denial");
	cr_expect(!sv_hit(&st, "pk2", one, 0).allowed);         /* the cache */
	cr_expect_eq(stats(&st).cache_denied, 1);
	/* an unknown key: allowed, nothing asked */
	cr_assert_eq(sv_one(&st, "other", one, RL_PEEK, 0, &v, &err), 0, "%s", err.msg);
	cr_expect(v.allowed);
	cr_expect_eq(cmdstat("evalsha"), ev, "a peek asked Redis");

	reset_as_inspect(NULL, "pk2");
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_assert_eq(sv_one(&st, "pk2", one, RL_PEEK, 0, &v, &err), 0, "%s", err.msg);
	cr_expect(v.allowed, "the peek still saw the ban");
	cr_expect(sv_hit(&st, "pk2", one, 0).allowed, "the ban outlived the reset");
	st.ops->destroy(st.impl);
}

/* The same when the reset or the empty restart comes before the cache's
 * first epoch check: the gateway's first cached denial must not be learnt
 * under an unknown epoch (it was, and outlived both until its own end). */
Test(redis, cache_emptied_by_a_reset_before_its_first_check)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);

	open_banned(&c, &st, "ban");
	/* rategate inspect --reset before any request met the cache */
	reset_as_inspect(NULL, "ban");
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(sv_hit(&st, "ban", one, 0).allowed, "the ban outlived the reset");
	cr_expect_eq(stats(&st).cache_denied, 0);
	st.ops->destroy(st.impl);

	/* a Redis that restarted empty (FLUSHALL here) before the first check */
	open_banned(&c, &st, "ban2");
	freeReplyObject(raw(&srv, NULL, "FLUSHALL"));
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(sv_hit(&st, "ban2", one, 0).allowed, "the ban outlived Redis's data");
	st.ops->destroy(st.impl);
}

/* A user Redis does not allow the epoch key (or a Redis before 7, which
 * has no SET NX GET): the cache still works, and the epoch is not asked
 * for on every denial (it was, a round trip each; found by a review). */
Test(redis, cache_works_when_the_epoch_is_refused)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);

	freeReplyObject(raw(&srv, NULL, "ACL SETUSER lim on >limpw ~data* +@all"));
	c.user = "lim";
	c.password = "limpw";
	open_banned(&c, &st, "data1");
	long long ev = cmdstat("evalsha"), set = cmdstat("set");
	for (int i = 0; i < 20; i++)
		cr_expect(!sv_hit(&st, "data1", one, 0).allowed);
	cr_expect_eq(cmdstat("evalsha"), ev, "cached denials went to Redis");
	cr_expect_eq(cmdstat("set"), set, "the epoch was asked for again");
	cr_expect_eq(stats(&st).cache_denied, 20);
	st.ops->destroy(st.impl);
	freeReplyObject(raw(&srv, NULL, "ACL DELUSER lim"));
}

/* A reload that changes key-prefix: the cache is emptied and watches the
 * new prefix's epoch (it watched the old one: a reset written under the
 * new prefix never reached it; found by a review). */
Test(redis, cache_follows_a_new_key_prefix)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);

	c.key_prefix = "aa";
	open_banned(&c, &st, "pk");
	long long before = cmdstat("evalsha");
	cr_expect(!sv_hit(&st, "pk", one, 0).allowed);          /* cache */
	cr_expect_eq(cmdstat("evalsha"), before);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "aa.epoch"), 1);

	store_redis_set_key_prefix(store_redis_of(&st), "bb");
	cr_expect(!sv_hit(&st, "pk", one, 0).allowed);          /* Redis again */
	cr_expect_eq(cmdstat("evalsha"), before + 1);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "bb.epoch"), 1);
	/* rategate inspect --reset with the new rules */
	reset_as_inspect("bb", "pk");
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(sv_hit(&st, "pk", one, 0).allowed, "the ban outlived the reset");
	st.ops->destroy(st.impl);
}

/* More ops than the call's stack arrays hold; all or nothing still. */
Test(redis, batch_of_20_limits_is_one_call)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	struct rl_store_op ops[20];
	char keys[20][16];

	open_ok(&c, &st);
	for (int mixed = 0; mixed < 2; mixed++) {
		for (size_t i = 0; i < 20; i++) {
			snprintf(keys[i], sizeof(keys[i]), "b%d:%zu", mixed, i);
			ops[i] = (struct rl_store_op){ keys[i], strlen(keys[i]),
				sv_limit(mixed ? (enum rl_strategy)(i % RL_STRATEGY_COUNT) :
				     RL_FIXED_WINDOW, 2, 60000), { 0 }, 0 };
		}
		for (int round = 0; round < 2; round++) {
			long long before = cmdstat("evalsha");
			cr_assert_eq(st.ops->apply(st.impl, ops, 20, RL_HIT, 0, &err),
				     0, "%s", err.msg);
			cr_expect_eq(cmdstat("evalsha") - before, 1);
			for (size_t i = 0; i < 20; i++)
				cr_expect(ops[i].v.allowed && ops[i].v.remaining == (uint64_t)(1 - round),
					  "mixed %d op %zu", mixed, i);
		}
		/* every limit is spent: the third batch is denied on each */
		cr_assert_eq(st.ops->apply(st.impl, ops, 20, RL_HIT, 0, &err), 0);
		for (size_t i = 0; i < 20; i++)
			cr_expect(!ops[i].v.allowed, "mixed %d op %zu allowed", mixed, i);
	}
	st.ops->destroy(st.impl);
}

Test(redis, cache_only_what_redis_would_deny)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 2, 1000);
	long long before;

	open_ok(&c, &st);
	/* a denial for cost 2 says nothing about cost 1 */
	sv_hit(&st, "c", p, 0);
	p.cost = 2;
	cr_expect(!sv_hit(&st, "c", p, 0).allowed);
	p.cost = 1;
	before = cmdstat("evalsha");
	cr_expect(sv_hit(&st, "c", p, 0).allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 1);
	cr_expect_eq(stats(&st).cache_denied, 0);
	/* cost 1 now denied: cost 2 is denied from the cache */
	struct rl_verdict v = sv_hit(&st, "c", p, 0);
	cr_expect(!v.allowed);
	p.cost = 2;
	v = sv_hit(&st, "c", p, 0);
	cr_expect(!v.allowed && !v.never);
	cr_expect_eq(stats(&st).cache_denied, 1);
	/* a cost above the limit is Redis's "never", not the cache's */
	p.cost = 3;
	before = cmdstat("evalsha");
	cr_expect(sv_hit(&st, "c", p, 0).never);
	cr_expect_eq(cmdstat("evalsha") - before, 1);
	/* when the window ends, Redis is asked again and allows */
	p.cost = 1;
	sleep_ms((int)v.retry_ms + 5);
	before = cmdstat("evalsha");
	cr_expect(sv_hit(&st, "c", p, 0).allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 1);

	/* elastic windows are never cached: each denial must move them */
	struct rl_step e = sv_limit(RL_FIXED_WINDOW_ELASTIC, 1, 60000);
	sv_hit(&st, "e", e, 0);
	for (int i = 0; i < 3; i++)
		cr_expect(!sv_hit(&st, "e", e, 0).allowed);
	uint64_t cd = stats(&st).cache_denied;
	/* nor is a batch with an elastic op denied locally */
	struct rl_step f = sv_limit(RL_FIXED_WINDOW, 1, 60000);
	sv_hit(&st, "f", f, 0);
	cr_expect(!sv_hit(&st, "f", f, 0).allowed);
	struct rl_store_op mix[2] = {
		{ "f", 1, f, { 0 }, 0 },
		{ "e2", 2, e, { 0 }, 0 },
	};
	before = cmdstat("evalsha");
	cr_assert_eq(st.ops->apply(st.impl, mix, 2, RL_HIT, 0, &err), 0);
	cr_expect(!mix[0].v.allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 1);
	cr_expect_eq(stats(&st).cache_denied, cd);
	/* a key twice in a batch: its denial depends on the other op */
	struct rl_step g = sv_limit(RL_FIXED_WINDOW, 3, 60000);
	struct rl_store_op twice[2] = {
		{ "g", 1, g, { 0 }, 0 },
		{ "g", 1, g, { 0 }, 0 },
	};
	twice[1].step.cost = 3;
	cr_assert_eq(st.ops->apply(st.impl, twice, 2, RL_HIT, 0, &err), 0);
	cr_expect(twice[0].v.allowed && !twice[1].v.allowed);
	before = cmdstat("evalsha");
	cr_expect(sv_hit(&st, "g", g, 0).allowed);
	cr_expect_eq(cmdstat("evalsha") - before, 1);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* Configuration Redis refuses, and other ways in                      */

Test(redis, wrong_password_says_so)
{
	struct server s = { 0 };
	const char *const args[] = { "--requirepass", "s3cret", NULL };
	struct redis_config c;
	struct rl_store st;
	char err[512] = "";

	start_argv(&s, args);
	c = config(&s);
	c.password = "wrong";
	cr_expect_eq(redis_store_open(&c, &st, err, sizeof(err)), -1);
	cr_expect(strstr(err, "AUTH failed") && strstr(err, "WRONGPASS") &&
		  strstr(err, "password"), "%s", err);
	c.password = NULL;
	cr_expect_eq(redis_store_open(&c, &st, err, sizeof(err)), -1);
	cr_expect(strstr(err, "wants a password") && strstr(err, "NOAUTH"),
		  "%s", err);
	c.password = "s3cret";
	c.db = 3;
	open_ok(&c, &st);
	sv_hit(&st, "pw", sv_limit(RL_FIXED_WINDOW, 2, 1000), 0);
	redisReply *r = raw(&s, "s3cret", "EVAL %s 0",
			    "redis.call('SELECT', 3) return redis.call('DBSIZE')");
	cr_expect_eq(r->type, REDIS_REPLY_INTEGER);
	cr_expect_eq(r->integer, 1);
	freeReplyObject(r);
	st.ops->destroy(st.impl);
	c.db = 70000;
	cr_expect_eq(redis_store_open(&c, &st, err, sizeof(err)), -1);
	cr_expect(strstr(err, "SELECT 70000 failed"), "%s", err);

	/* an ACL user (redis://rg:rgpw@host): AUTH with both */
	freeReplyObject(raw(&s, "s3cret", "ACL SETUSER rg on >rgpw ~* +@all"));
	c.db = 0;
	c.user = "rg";
	c.password = "rgpw";
	open_ok(&c, &st);
	cr_expect(sv_hit(&st, "acl", sv_limit(RL_FIXED_WINDOW, 2, 1000), 0).allowed);
	st.ops->destroy(st.impl);
	c.password = "s3cret";          /* the default user's: not rg's */
	cr_expect_eq(redis_store_open(&c, &st, err, sizeof(err)), -1);
	cr_expect(strstr(err, "AUTH failed") && strstr(err, "user and password"),
		  "%s", err);
	/* a user without a password (nopass): user= alone selects it */
	freeReplyObject(raw(&s, "s3cret", "ACL SETUSER np on nopass ~* +@all"));
	c.user = "np";
	c.password = NULL;
	open_ok(&c, &st);
	st.ops->destroy(st.impl);
	stop(&s);
}

Test(redis, unix_socket_and_db_from_the_rules)
{
	struct server s = { 0 };
	char sock[128], text[512], err[512] = "";
	struct rl_report rep;
	struct rl_store st;

	snprintf(sock, sizeof(sock), "%s/redis.sock", tdir);
	const char *const args[] = { "--unixsocket", sock, "--unixsocketperm",
				     "700", NULL };
	start_argv(&s, args);
	snprintf(text, sizeof(text),
		 "storage redis+unix://%s?db=2&timeout=50&connect-timeout=70\n"
		 "store-failure fallback\n", sock);
	struct rl_ruleset *rs = rl_ruleset_parse("t", text, strlen(text), NULL, &rep);
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	rl_report_free(&rep);
	struct redis_config c;
	store_redis_config(rs, &c);
	cr_expect_str_eq(c.path, sock);
	cr_expect_null(c.host);
	cr_expect_eq(c.db, 2);
	cr_expect_eq(c.timeout_ms, 50);
	cr_expect_eq(c.connect_timeout_ms, 70);
	cr_expect_eq(c.failure, RL_STORE_FAIL_FALLBACK);
	cr_expect_str_eq(c.fallback.path, SHM_DEFAULT_PATH);
	/* the fallback file of this test, not the host's default */
	char fb[128];
	snprintf(fb, sizeof(fb), "%s/fallback", tdir);
	c.fallback.path = fb;
	c.fallback.size = 1 << 20;
	cr_assert_eq(redis_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	sv_hit(&st, "u", sv_limit(RL_GCRA, 2, 60000), 0);
	redisReply *r = raw(&s, NULL, "EVAL %s 0",
			    "redis.call('SELECT', 2) return redis.call('DBSIZE')");
	cr_expect_eq(r->integer, 1);
	freeReplyObject(r);
	st.ops->destroy(st.impl);
	rl_ruleset_free(rs);
	stop(&s);
}

Test(redis, read_only_replica_is_a_failure)
{
	struct server rep = { 0 };
	char master[16];
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct rl_verdict v;
	uint64_t id, held;

	snprintf(master, sizeof(master), "%d", srv.port);
	const char *const args[] = { "--replicaof", "127.0.0.1", master, NULL };
	start_argv(&rep, args);
	struct redis_config c = config(&rep);
	open_ok(&c, &st);
	cr_expect_eq(sv_one(&st, "ro", sv_limit(RL_FIXED_WINDOW, 2, 1000), RL_HIT, 0,
			 &v, &err), -1);
	cr_expect(strstr(err.msg, "READONLY") && strstr(err.msg, "replica"),
		  "%s", err.msg);
	cr_expect(strstr(err.msg, "redis 127.0.0.1:"), "%s", err.msg);
	/* the store is down now: the next call fails at once */
	int64_t t = clock_mono_ms();
	cr_expect_eq(st.ops->acquire(st.impl, "l", 1, 1, 1000, 0, &id, &held,
				     &err), -1);
	cr_expect(strstr(err.msg, "READONLY"), "%s", err.msg);
	cr_expect_lt(clock_mono_ms() - t, 100);
	cr_expect_eq(stats(&st).down_switches, 1);
	st.ops->destroy(st.impl);
	stop(&rep);
}

/* ------------------------------------------------------------------ */
/* In-flight leases                                                    */

Test(redis, leases_acquire_release_and_expire)
{
	struct rl_store st;
	struct redis_config c = config(&srv);
	struct rl_diag err = { 0, "" };
	uint64_t id[4], held;

	c.client_clock = 1;
	open_ok(&c, &st);
	for (int max = 1; max <= 3; max += 2) {
		const char *k = max == 1 ? "one" : "three";
		for (int i = 0; i < max; i++)
			cr_assert_eq(st.ops->acquire(st.impl, k, strlen(k), max,
						     1000, T0, &id[i], &held,
						     &err), 1, "%s", err.msg);
		cr_expect_eq(held, (uint64_t)max);
		cr_expect_eq(st.ops->acquire(st.impl, k, strlen(k), max, 1000,
					     T0, &id[3], &held, &err), 0);
		cr_expect_eq(held, (uint64_t)max);
		cr_expect_eq(st.ops->release(st.impl, k, strlen(k), id[0], T0,
					     &err), 0);
		cr_expect_eq(st.ops->acquire(st.impl, k, strlen(k), max, 1000,
					     T0, &id[0], &held, &err), 1);
		/* expired leases free their slots */
		cr_expect_eq(st.ops->acquire(st.impl, k, strlen(k), max, 1000,
					     T0 + 1000, &id[3], &held, &err), 1);
		cr_expect_eq(held, 1);
		cr_expect_eq(st.ops->release(st.impl, k, strlen(k), id[3],
					     T0 + 1000, &err), 0);
		/* released to zero: the key is gone */
		cr_expect_eq(raw_int(&srv, "EXISTS %s", k), 0);
	}
	/* lease ids are distinct */
	cr_expect_neq(id[0], id[3]);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* Exactness across processes                                          */

struct worker {
	struct rl_store *st;
	int hits;
	uint64_t *allowed;      /* shared between processes */
	uint64_t *errors;
};

static void *hammer(void *arg)
{
	struct worker *w = arg;
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 1000, 60000);

	for (int i = 0; i < w->hits; i++) {
		struct rl_verdict v;
		struct rl_diag err;
		if (sv_one(w->st, "one-key", p, RL_HIT, 0, &v, &err) < 0)
			__atomic_add_fetch(w->errors, 1, __ATOMIC_RELAXED);
		else if (v.allowed)
			__atomic_add_fetch(w->allowed, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint64_t *shared_words(size_t n)
{
	void *p = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	memset(p, 0, n * sizeof(uint64_t));
	return p;
}

static void wait_children(pid_t *pids, int n)
{
	for (int i = 0; i < n; i++) {
		int status;
		cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "child %d: status %d", i, status);
	}
}

Test(redis, exact_with_2_processes_of_4_threads)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	uint64_t *shared = shared_words(2);
	pid_t pids[2];

	c.timeout_ms = 2000;    /* slow under valgrind, never a failure */
	open_ok(&c, &st);
	sv_hit(&st, "warm", sv_limit(RL_FIXED_WINDOW, 1, 1000), 0);
	for (int i = 0; i < 2; i++) {
		pids[i] = fork();
		cr_assert(pids[i] >= 0);
		if (pids[i] == 0) {
			/* one child opens its own store, the other uses the
			 * parent's (and so its own connections) */
			struct rl_store own;
			char err[512];
			struct worker w = { &st, 150, &shared[0], &shared[1] };
			pthread_t t[4];
			if (i == 1) {
				if (redis_store_open(&c, &own, err, sizeof(err)))
					_exit(1);
				w.st = &own;
			}
			for (int k = 0; k < 4; k++)
				pthread_create(&t[k], NULL, hammer, &w);
			for (int k = 0; k < 4; k++)
				pthread_join(t[k], NULL);
			_exit(0);
		}
	}
	wait_children(pids, 2);
	cr_expect_eq(shared[1], 0, "store errors");
	cr_expect_eq(shared[0], 1000, "allowed %llu of 1200",
		     (unsigned long long)shared[0]);
	/* the parent's pooled connection still works after the fork */
	cr_expect_eq(sv_remaining(&st, "one-key", sv_limit(RL_FIXED_WINDOW, 1000,
						    60000), 0), 0);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* Redis stopped, killed, restarted                                    */

struct load {
	struct rl_store *st;
	volatile int stop;
	int64_t max_ms;         /* longest call */
	uint64_t calls, ok, fail;
	pthread_mutex_t mu;
};

static void *load_thread(void *arg)
{
	struct load *l = arg;
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 1000000, 60000);
	char key[32];
	unsigned i = 0;

	while (!l->stop) {
		struct rl_verdict v;
		struct rl_diag err;
		snprintf(key, sizeof(key), "load:%u", i++ % 50);
		int64_t t = clock_mono_ms();
		int r = sv_one(l->st, key, p, RL_HIT, clock_wall_ms(), &v, &err);
		t = clock_mono_ms() - t;
		pthread_mutex_lock(&l->mu);
		if (t > l->max_ms)
			l->max_ms = t;
		l->calls++;
		if (r == 0)
			l->ok++;
		else
			l->fail++;
		pthread_mutex_unlock(&l->mu);
		sleep_ms(1);
	}
	return NULL;
}

static int count_lines(const char *path, const char *what)
{
	FILE *f = fopen(path, "r");
	char line[LOG_LINE_MAX];
	int n = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* Calls made meanwhile: ok and failed. */
static void snap(struct load *l, uint64_t *ok, uint64_t *fail)
{
	pthread_mutex_lock(&l->mu);
	*ok = l->ok;
	*fail = l->fail;
	pthread_mutex_unlock(&l->mu);
}

/* Waits until the store is up again (a probe every backoff interval). */
static void wait_up(struct rl_store *st, int ms)
{
	for (int i = 0; i < ms / 10 && !stats(st).up; i++)
		sleep_ms(10);
	cr_assert(stats(st).up, "Redis never came back");
}

/* Checks the switches so far: n each way, each logged once. */
static void switches(struct rl_store *st, const char *logpath, uint64_t n)
{
	struct redis_stats rs = stats(st);

	cr_expect_eq(rs.down_switches, n, "down %llu times, expected %llu",
		     (unsigned long long)rs.down_switches, (unsigned long long)n);
	cr_expect_eq(rs.up_switches, n, "up %llu times, expected %llu",
		     (unsigned long long)rs.up_switches, (unsigned long long)n);
	/* a switch is counted just before its line is written */
	for (int i = 0; i < 100 && count_lines(logpath, "event=store-up") < (int)n; i++)
		sleep_ms(10);
	cr_expect_eq(count_lines(logpath, "event=store-down"), (int)n);
	cr_expect_eq(count_lines(logpath, "event=store-up"), (int)n);
}

/* Calls made while Redis does not answer: with the fallback every one is
 * decided (on shm), else they fail; none waits 10 timeouts. */
static void while_away(struct rl_store *st, struct load *l,
		       enum rl_store_failure policy, uint64_t ok0,
		       uint64_t fail0, const char *what)
{
	uint64_t ok1, fail1;

	snap(l, &ok1, &fail1);
	if (policy == RL_STORE_FAIL_FALLBACK) {
		cr_expect_eq(fail1, fail0, "%s: %llu calls failed with the fallback",
			     what, (unsigned long long)(fail1 - fail0));
		cr_expect_gt(ok1, ok0 + 10, "%s: no decisions meanwhile", what);
	} else {
		cr_expect_gt(fail1, fail0 + 10, "%s: calls did not fail", what);
	}
	cr_expect(!stats(st).up, "%s: still up", what);
}

static void kill_and_restart(enum rl_store_failure policy)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	struct load l = { .st = &st };
	pthread_t t[3];
	char logpath[128], fb[128], err[512];
	uint64_t ok0, fail0;

	snprintf(logpath, sizeof(logpath), "%s/log", tdir);
	snprintf(fb, sizeof(fb), "%s/fallback", tdir);
	struct log *lg = log_new(logpath, err, sizeof(err));
	cr_assert_not_null(lg, "%s", err);
	/* valgrind makes this process (not Redis) some 50 times slower */
	c.timeout_ms = RUNNING_ON_VALGRIND ? 400 : 100;
	c.connect_timeout_ms = c.timeout_ms;
	c.failure = policy;
	c.fallback.path = fb;
	c.fallback.size = 1 << 20;
	open_ok(&c, &st);
	store_redis_set_log(store_redis_of(&st), lg);
	pthread_mutex_init(&l.mu, NULL);
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, load_thread, &l);
	for (int i = 0; i < 500 && (snap(&l, &ok0, &fail0), ok0 < 30); i++)
		sleep_ms(10);
	cr_expect_geq(ok0, 30);
	cr_expect_eq(fail0, 0);

	/* stalled (SIGSTOP): calls time out, then it answers again */
	kill(srv.pid, SIGSTOP);
	sleep_ms(4 * (int)c.timeout_ms);
	while_away(&st, &l, policy, ok0, fail0, "stalled");
	kill(srv.pid, SIGCONT);
	wait_up(&st, 5000);
	switches(&st, logpath, 1);
	int64_t stalled_max = l.max_ms;

	/* killed under load, restarted on the same port */
	sleep_ms(100);
	snap(&l, &ok0, &fail0);
	stop_sig(&srv, SIGKILL);
	sleep_ms(4 * (int)c.timeout_ms);
	while_away(&st, &l, policy, ok0, fail0, "killed");
	start(&srv);
	wait_up(&st, 5000);
	sleep_ms(100);
	l.stop = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	switches(&st, logpath, 2);
	uint64_t calls = stats(&st).calls;
	sv_hit(&st, "after", sv_limit(RL_FIXED_WINDOW, 5, 60000), 0);
	cr_expect_eq(stats(&st).calls, calls + 1);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "after"), 1);
	if (policy == RL_STORE_FAIL_FALLBACK) {
		cr_expect_gt(stats(&st).fallback, 10);
		cr_expect_eq(count_lines(logpath, "store-failure fallback"), 4);
	}
	/* no call waited anywhere near 10 timeouts */
	cr_expect_lt(stalled_max, 10 * c.timeout_ms,
		     "a call took %lld ms while stalled", (long long)stalled_max);
	cr_expect_lt(l.max_ms, 10 * c.timeout_ms, "a call took %lld ms",
		     (long long)l.max_ms);
	st.ops->destroy(st.impl);
	log_free(lg);
	pthread_mutex_destroy(&l.mu);
}

Test(redis, killed_and_restarted_deny)
{
	kill_and_restart(RL_STORE_FAIL_DENY);
}

Test(redis, killed_and_restarted_fallback)
{
	kill_and_restart(RL_STORE_FAIL_FALLBACK);
}

/* Redis restarted empty while a client was banned in the cache and the
 * store was down with a long backoff: the epoch probe that sees the empty
 * Redis also brings the store up, so the client gets one fresh budget
 * (Redis's), not a second one from a fresh fallback window. */
Test(redis, restart_seen_by_the_cache_asks_redis_not_the_fallback)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	char fb[128];

	snprintf(fb, sizeof(fb), "%s/fallback2", tdir);
	c.failure = RL_STORE_FAIL_FALLBACK;
	c.fallback.path = fb;
	c.fallback.size = 1 << 20;
	c.backoff_min_ms = 60000;
	c.backoff_max_ms = 60000;
	open_ok(&c, &st);
	cr_expect(sv_hit(&st, "ban", one, 0).allowed);
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* Redis */
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* the cache */
	cr_expect_eq(stats(&st).cache_denied, 1);               /* epoch known */
	stop_sig(&srv, SIGKILL);
	/* another key's call finds Redis gone: down, next try in 60 s */
	sv_hit(&st, "other", one, 0);
	cr_expect(!stats(&st).up);
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed);         /* the cache */
	start(&srv);                                            /* empty */
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	uint64_t fbn = stats(&st).fallback;
	cr_expect(sv_hit(&st, "ban", one, 0).allowed, "Redis starts afresh");
	cr_expect_eq(stats(&st).fallback, fbn, "decided on the fallback store");
	cr_expect(stats(&st).up);
	cr_expect(!sv_hit(&st, "ban", one, 0).allowed, "one budget, not two");
	cr_assert_eq(err.msg[0], '\0');
	st.ops->destroy(st.impl);
}

/* Down at open: the store opens, fails at once, comes up by itself. */
Test(redis, down_at_open_then_up)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct rl_verdict v;
	int64_t t;

	stop(&srv);
	c.backoff_min_ms = 50;
	c.backoff_max_ms = 200;
	open_ok(&c, &st);
	cr_expect(!stats(&st).up);
	t = clock_mono_ms();
	cr_expect_eq(sv_one(&st, "d", sv_limit(RL_FIXED_WINDOW, 1, 1000), RL_HIT, 0,
			 &v, &err), -1);
	cr_expect(strstr(err.msg, "connect") && strstr(err.msg, "next attempt"),
		  "%s", err.msg);
	cr_expect_lt(clock_mono_ms() - t, 100);
	start(&srv);
	for (int i = 0; i < 100 && sv_one(&st, "d", sv_limit(RL_FIXED_WINDOW, 1, 1000),
				       RL_HIT, 0, &v, &err) != 0; i++)
		sleep_ms(10);
	cr_expect(stats(&st).up);
	cr_expect_eq(stats(&st).up_switches, 1);
	st.ops->destroy(st.impl);
}

/* A Redis that refuses the epoch's SET for the moment (a replica after a
 * failover: READONLY; LOADING, OOM...) did not answer, as a timeout: the
 * cache goes on denying and nothing is logged.  The store-epoch warning
 * is for a refusal that lasts (a Redis before 7, a user not allowed the
 * key); it was written here, naming those causes, and only once in the
 * process's life, so a real refusal later went unsaid (found by a
 * review). */
Test(redis, epoch_refused_for_the_moment_is_no_store_epoch_warning)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	struct rl_step one = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	char logpath[128], err[512], port[16];

	snprintf(logpath, sizeof(logpath), "%s/log", tdir);
	struct log *lg = log_new(logpath, err, sizeof(err));
	cr_assert_not_null(lg, "%s", err);
	c.log = lg;
	open_banned(&c, &st, "ro1");
	cr_expect(!sv_hit(&st, "ro1", one, 0).allowed);         /* the cache */
	/* a replica of a master that is not there: writes refused */
	snprintf(port, sizeof(port), "%d", free_port());
	freeReplyObject(raw(&srv, NULL, "REPLICAOF 127.0.0.1 %s", port));
	sleep_ms(REDIS_EPOCH_CHECK_MS + 100);
	cr_expect(!sv_hit(&st, "ro1", one, 0).allowed, "the cache let it through");
	cr_expect_eq(stats(&st).cache_denied, 2);
	freeReplyObject(raw(&srv, NULL, "REPLICAOF NO ONE"));
	cr_expect_eq(count_lines(logpath, "store-epoch"), 0,
		     "a store-epoch warning for a READONLY answer");
	st.ops->destroy(st.impl);
	log_free(lg);
}

/* A host given by name: resolved (here from /etc/hosts), then used. */
Test(redis, host_name_is_resolved)
{
	struct redis_config c = config(&srv);
	struct rl_store st;

	c.host = "localhost";
	open_ok(&c, &st);
	cr_expect(stats(&st).up);
	cr_expect(sv_hit(&st, "named", sv_limit(RL_FIXED_WINDOW, 5, 60000), 0).allowed);
	cr_expect_eq(raw_int(&srv, "EXISTS %s", "named"), 1);
	st.ops->destroy(st.impl);
}

/* A DNS server that does not answer: the store's name is looked up on a
 * thread of its own, so neither the open nor a call waits past
 * connect-timeout (hiredis's getaddrinfo made each wait the resolver's
 * timeout, 10 s and more by default, whatever connect-timeout said; found
 * by a review).  Needs root, for a mount namespace of its own in which
 * /etc/resolv.conf names a server on 127.0.0.77:53 that reads and never
 * answers; skipped otherwise. */
Test(redis, unanswered_dns_waits_no_longer_than_connect_timeout)
{
	struct redis_config c = config(&srv);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct rl_verdict v;
	char conf[128], e[512];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53) };
	int fd;

	/* (not under valgrind: the lookup it leaves waiting on the server
	 * is a thread still running at exit) */
	if (RUNNING_ON_VALGRIND)
		cr_skip_test("under valgrind");
	if (geteuid() != 0 || unshare(CLONE_NEWNS) != 0)
		cr_skip_test("needs root and a mount namespace of its own");
	/* private first: the bind below must not reach the host */
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0,
		     "%s", strerror(errno));
	snprintf(conf, sizeof(conf), "%s/resolv.conf", tdir);
	FILE *f = fopen(conf, "w");
	cr_assert_not_null(f);
	fputs("nameserver 127.0.0.77\noptions timeout:3 attempts:1\n", f);
	fclose(f);
	cr_assert_eq(mount(conf, "/etc/resolv.conf", NULL, MS_BIND, NULL), 0,
		     "%s", strerror(errno));
	inet_pton(AF_INET, "127.0.0.77", &a.sin_addr);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s",
		     strerror(errno));

	c.host = "redis.rategate-test";
	c.connect_timeout_ms = 200;
	int64_t t = clock_mono_ms();
	cr_assert_eq(redis_store_open(&c, &st, e, sizeof(e)), 0, "%s", e);
	cr_expect_lt(clock_mono_ms() - t, 1000, "the open waited %lld ms",
		     (long long)(clock_mono_ms() - t));
	cr_expect(!stats(&st).up);
	/* the next attempt, once the backoff allows it: the lookup is
	 * still waited for, within connect-timeout */
	sleep_ms(REDIS_BACKOFF_MIN_MS + 50);
	t = clock_mono_ms();
	cr_expect_eq(sv_one(&st, "d", sv_limit(RL_FIXED_WINDOW, 1, 1000), RL_HIT, 0,
			    &v, &err), -1);
	cr_expect_lt(clock_mono_ms() - t, 1000, "a call waited %lld ms",
		     (long long)(clock_mono_ms() - t));
	cr_expect(strstr(err.msg, "resolving redis.rategate-test") != NULL, "%s",
		  err.msg);
	st.ops->destroy(st.impl);
	close(fd);
}
