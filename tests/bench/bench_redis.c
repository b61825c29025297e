/*
 * bench_redis.c - decisions per second and p99 latency of the Redis store,
 * beside the shared-memory store and Flask-Limiter's `limits` library on
 * the same Redis, measured in one run; and round trips per decision,
 * counted on the Redis side (INFO commandstats: EVALSHA and EVAL calls).
 *
 * Every decision is one batch of NLIMITS ops (1 and 3) on the keys of one
 * client, CLIENTS clients (default 1000) in turn, with limits that are
 * never reached ("1000000/minute; 10000000/hour; 100000000/day"), for the
 * fixed window and the moving window.  rategate's stores run with 1 and
 * with 4 threads (the figure is all threads' decisions over the wall
 * time); Flask-Limiter runs as Flask-Limiter does (one hit() per limit:
 * tests/bench/flask_limiter.py on /usr/bin/python3) in 1 and in 4
 * processes (a Python process decides one request at a time), with and
 * without its X-RateLimit headers (with them it asks Redis for the current
 * limit's window after the hits, as Flask-Limiter 3.3 does; rategate's
 * answer carries remaining and reset in its one round trip, and its
 * headers are on by default).  The ratios compare 1 thread with 1 process
 * and 4 threads with 4 processes.  Then
 * one client over its limit, hammered: the over-limit cache answers
 * without Redis, while Flask-Limiter asks Redis on every request (the
 * same flood through flask_limiter.py).
 *
 * The floor: every decision one EVALSHA of an empty script ("return 1")
 * on the thread's own connection, with the same threads.  No Redis-based
 * limiter that makes a round trip per decision can go faster than this on
 * the machine; it tells how much of a figure is the round trip itself.
 *
 * A redis-server is started on a free 127.0.0.1 port in a fresh directory
 * and stopped by PID; the shm file lives there too.  SECONDS (default 2) per
 * figure.  Prints figures; asserts nothing.
 * Usage: bench_redis [SECONDS [CLIENTS]]   (FLASK_LIMITER_PY: the script)
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "rules.h"
#include "store_redis.h"
#include "store_shm.h"

#define MAX_THREADS 4
#define MAX_LIMITS 3
#define SAMPLES_MAX (1 << 22)   /* latencies kept per thread */

/* Never reached in a run.  Moving windows keep O(count) state (rategate
 * caps their counts at 100,000), so theirs are smaller. */
static const struct { uint64_t count, period; } limits[2][MAX_LIMITS] = {
	{ { 1000000, 60000 }, { 10000000, 3600000 }, { 100000000, 86400000 } },
	{ { 1000, 60000 }, { 2000, 3600000 }, { 5000, 86400000 } },
};

static double seconds = 2;
static int clients = 1000;
static int port;
static char dir[64];

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* redis-server                                                        */

static pid_t start_redis(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char ports[16];
	pid_t pid;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	port = ntohs(a.sin_port);
	close(fd);
	snprintf(ports, sizeof(ports), "%d", port);
	pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(nul, 0);
		dup2(nul, 1);
		execlp("redis-server", "redis-server", "--port", ports, "--bind",
		       "127.0.0.1", "--dir", dir, "--save", "", "--appendonly",
		       "no", "--daemonize", "no", "--logfile", "redis.log",
		       (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct timeval tv = { 1, 0 };
		redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
		redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
		int ok = r != NULL;
		if (r)
			freeReplyObject(r);
		if (c)
			redisFree(c);
		if (ok)
			return pid;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	return -1;
}

/* The top-level commands a side sends, counted in INFO commandstats:
 * rategate only EVALSHA (EVAL once per connection); Flask-Limiter's
 * scripts too, and with its headers on a GET and a TTL for a fixed window.
 * The commands scripts run inside Redis (its GET, SET, INCRBY...) are
 * listed there too but are not round trips, and the script's usec already
 * holds their time, so they are not counted. */
static const char *const rategate_cmds[] = { "evalsha", "eval", NULL };
static const char *const flask_cmds[] = { "evalsha", "eval", "get", "ttl",
					    NULL };

/* Calls of the commands in names so far (one round trip each: neither
 * client pipelines), the microseconds Redis spent in them (*usec), and
 * FLUSHALL. */
static long long scripts(int flush, long long *usec,
			 const char *const *names)
{
	struct timeval tv = { 2, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	long long n = 0, us = 0;

	if (c == NULL || c->err)
		return -1;
	redisReply *r = redisCommand(c, "INFO commandstats");
	if (r && r->type == REDIS_REPLY_STRING) {
		for (size_t i = 0; names[i] != NULL; i++) {
			char tag[64];
			snprintf(tag, sizeof(tag), "cmdstat_%s:calls=", names[i]);
			const char *p = strstr(r->str, tag);
			if (p) {
				n += atoll(p + strlen(tag));
				p = strstr(p, ",usec=");
				if (p)
					us += atoll(p + 6);
			}
		}
	}
	if (r)
		freeReplyObject(r);
	if (flush) {
		r = redisCommand(c, "FLUSHALL");
		if (r)
			freeReplyObject(r);
	}
	redisFree(c);
	if (usec)
		*usec = us;
	return n;
}

/* ------------------------------------------------------------------ */
/* One measurement                                                     */

struct run {
	struct rl_store *st;
	enum rl_strategy strategy;
	int nlimits;
	int threads;
	int over;               /* one client over a 1/minute limit */
	int floor;              /* an empty script per decision, no store */
	volatile int stop;
};

struct thread {
	struct run *run;
	int id;
	uint64_t n, allowed, errors;
	uint32_t *lat;          /* ns, capped */
};

static void *worker(void *arg)
{
	struct thread *t = arg;
	struct run *r = t->run;
	char keys[MAX_LIMITS][96];
	struct rl_store_op ops[MAX_LIMITS];
	unsigned c = (unsigned)t->id * 7919u;
	redisContext *fc = NULL;
	char sha[41] = "";

	if (r->floor) {
		struct timeval tv = { 2, 0 };
		fc = redisConnectWithTimeout("127.0.0.1", port, tv);
		redisReply *l = fc && !fc->err ?
				redisCommand(fc, "SCRIPT LOAD %s", "return 1") : NULL;
		if (l && l->type == REDIS_REPLY_STRING && l->len == 40)
			memcpy(sha, l->str, 41);
		if (l)
			freeReplyObject(l);
		if (!sha[0]) {
			if (fc)
				redisFree(fc);
			t->errors++;
			return NULL;
		}
	}
	while (!r->stop) {
		if (fc) {
			int64_t t0 = now_ns();
			redisReply *e = redisCommand(fc, "EVALSHA %s 0", sha);
			int64_t dt = now_ns() - t0;
			if (t->n < SAMPLES_MAX)
				t->lat[t->n] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
			t->n++;
			if (e == NULL || e->type != REDIS_REPLY_INTEGER)
				t->errors++;
			else
				t->allowed++;
			if (e)
				freeReplyObject(e);
			if (e == NULL)
				break;
			continue;
		}
		int n = r->nlimits;
		c = (c + 1) % (unsigned)clients;
		for (int i = 0; i < n; i++) {
			int m = r->strategy == RL_MOVING_WINDOW;
			struct rl_step p = { r->strategy, limits[m][i].count,
					     limits[m][i].period, 0, 1 };
			if (r->over)
				p.count = 1;
			int len = snprintf(keys[i], sizeof(keys[i]),
					   "rg:r/api:addr=10.%u.%u.%u:%llu/%llu/%s",
					   r->over ? 0 : c >> 16 & 255,
					   r->over ? 0 : c >> 8 & 255,
					   r->over ? 0 : c & 255,
					   (unsigned long long)p.count,
					   (unsigned long long)p.period_ms,
					   r->strategy == RL_MOVING_WINDOW ? "mw" : "fw");
			ops[i] = (struct rl_store_op){ keys[i], (size_t)len, p,
						       { 0, 0, 0, 0, 0 }, 0 };
		}
		struct rl_diag err;
		int64_t t0 = now_ns();
		int rc = r->st->ops->apply(r->st->impl, ops, (size_t)n, RL_HIT,
					   real_ms(), &err);
		int64_t dt = now_ns() - t0;
		if (t->n < SAMPLES_MAX)
			t->lat[t->n] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
		t->n++;
		if (rc != 0)
			t->errors++;
		else if (ops[0].v.allowed)
			t->allowed++;
	}
	if (fc)
		redisFree(fc);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

struct result {
	double rate;            /* decisions per second */
	double p99_us;
	double scripts;         /* Redis script calls per decision */
	double redis_us;        /* Redis CPU in those calls per decision */
	uint64_t errors;
};

static struct result measure(struct run *r)
{
	struct thread t[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	struct result res = { 0, 0, 0, 0, 0 };
	uint64_t total = 0, kept = 0;
	long long u0, u1, s0 = scripts(0, &u0, rategate_cmds);
	int64_t start = now_ns();

	r->stop = 0;
	for (int i = 0; i < r->threads; i++) {
		t[i] = (struct thread){ r, i, 0, 0, 0,
					malloc(SAMPLES_MAX * sizeof(uint32_t)) };
		pthread_create(&th[i], NULL, worker, &t[i]);
	}
	usleep((useconds_t)(seconds * 1e6));
	r->stop = 1;
	for (int i = 0; i < r->threads; i++)
		pthread_join(th[i], NULL);
	double took = (double)(now_ns() - start) / 1e9;
	for (int i = 0; i < r->threads; i++) {
		total += t[i].n;
		kept += t[i].n < SAMPLES_MAX ? t[i].n : SAMPLES_MAX;
		res.errors += t[i].errors;
	}
	uint32_t *all = malloc(kept * sizeof(uint32_t)), *p = all;
	for (int i = 0; i < r->threads; i++) {
		size_t k = t[i].n < SAMPLES_MAX ? t[i].n : SAMPLES_MAX;
		memcpy(p, t[i].lat, k * sizeof(uint32_t));
		p += k;
		free(t[i].lat);
	}
	qsort(all, kept, sizeof(uint32_t), cmp_u32);
	res.rate = (double)total / took;
	res.p99_us = kept ? all[kept * 99 / 100] / 1000.0 : 0;
	res.scripts = total ? (double)(scripts(1, &u1, rategate_cmds) - s0) /
			      (double)total : 0;
	res.redis_us = total ? (double)(u1 - u0) / (double)total : 0;
	free(all);
	return res;
}

/* Flask-Limiter's loop in python (flask_limiter.py), in procs processes
 * at once: their rates summed, the worst of their p99s. */
static struct result flask(const char *py, const char *kind, int nlimits,
			   int procs, int headers)
{
	char cmd[1024], line[256];
	struct result res = { 0, 0, 0, 0, 0 };
	long long u0, u1, s0 = scripts(0, &u0, flask_cmds);
	unsigned long long total = 0;
	FILE *f[MAX_THREADS];

	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' %d %s %d %.1f %d %d",
		 py, port, kind, nlimits, seconds, clients, headers);
	for (int i = 0; i < procs; i++)
		f[i] = popen(cmd, "r");
	for (int i = 0; i < procs; i++) {
		unsigned long long n = 0;
		double rate, p99;
		if (f[i] == NULL)
			continue;
		while (fgets(line, sizeof(line), f[i]))
			if (sscanf(line, "decisions=%llu seconds=%*f rate=%lf p99_us=%lf",
				   &n, &rate, &p99) == 3) {
				total += n;
				res.rate += rate;
				if (p99 > res.p99_us)
					res.p99_us = p99;
			}
		pclose(f[i]);
	}
	res.scripts = total ? (double)(scripts(1, &u1, flask_cmds) - s0) /
			      (double)total : 0;
	res.redis_us = total ? (double)(u1 - u0) / (double)total : 0;
	return res;
}

int main(int argc, char **argv)
{
	const char *py = getenv("FLASK_LIMITER_PY");
	char err[512], shm_path[128];
	struct rl_store shm, rs;
	struct redis_config rc = { 0 };
	struct shm_config sc = { 0 };
	pid_t pid;

	if (argc > 1)
		seconds = atof(argv[1]);
	if (argc > 2)
		clients = atoi(argv[2]);
	if (seconds <= 0 || clients < 1 || clients > (1 << 24)) {
		fprintf(stderr, "usage: bench_redis [SECONDS [CLIENTS]]\n");
		return 2;
	}
	if (py == NULL)
		py = "tests/bench/flask_limiter.py";
	snprintf(dir, sizeof(dir), "/tmp/rg-bench-redis-XXXXXX");
	if (mkdtemp(dir) == NULL || (pid = start_redis()) < 0) {
		fprintf(stderr, "bench_redis: cannot start redis-server\n");
		return 1;
	}
	snprintf(shm_path, sizeof(shm_path), "%s/shm", dir);
	sc.path = shm_path;
	sc.size = 256 << 20;
	sc.max_moving = 5000;
	sc.ring_percent = 60;   /* 3 moving windows per client */
	sc.names = 1;
	rc.host = "127.0.0.1";
	rc.port = (unsigned)port;
	rc.timeout_ms = 1000;
	rc.connect_timeout_ms = 1000;
	if (shm_store_open(&sc, &shm, err, sizeof(err)) != 0 ||
	    redis_store_open(&rc, &rs, err, sizeof(err)) != 0) {
		fprintf(stderr, "bench_redis: %s\n", err);
		kill(pid, SIGKILL);
		return 1;
	}
	printf("bench_redis: %d clients, %.1f s per figure, redis-server 127.0.0.1:%d\n",
	       clients, seconds, port);
	printf("decisions/s, p99 latency in us, and round trips per decision (rt: top-level commands, INFO commandstats);\n"
	       "last column: Redis CPU per decision in us (INFO commandstats, 1-thread and 1-process runs);\n"
	       "the second line of each: Flask-Limiter with its X-RateLimit headers on, as rategate's are by default\n");
	struct run fl = { NULL, RL_FIXED_WINDOW, 1, 1, 0, 1, 0 };
	struct result f1 = measure(&fl);
	fl.threads = 4;
	struct result f4 = measure(&fl);
	printf("floor (an empty script, EVALSHA \"return 1\", per decision): 1 thread %.0f/s p99 %.1f us, 4 threads %.0f/s p99 %.1f us, Redis CPU %.1f us\n",
	       f1.rate, f1.p99_us, f4.rate, f4.p99_us, f1.redis_us);
	printf("%-14s %2s | %-17s %-17s | %-23s %-23s | %-23s %-23s | %s\n",
	       "strategy", "n", "shm 1 thread", "shm 4 threads",
	       "redis 1 thread", "redis 4 threads", "Flask-Limiter 1 proc",
	       "Flask-Limiter 4 procs", "redis/Flask 1, 4 | CPU rg, Flask");
	for (int s = 0; s < 2; s++) {
		enum rl_strategy strat = s ? RL_MOVING_WINDOW : RL_FIXED_WINDOW;
		for (int nl = 1; nl <= MAX_LIMITS; nl += 2) {
			struct run r = { &shm, strat, nl, 1, 0, 0, 0 };
			struct result a = measure(&r);
			r.threads = 4;
			struct result b = measure(&r);
			r.st = &rs;
			r.threads = 1;
			struct result c = measure(&r);
			r.threads = 4;
			struct result d = measure(&r);
			struct result f = flask(py, s ? "moving" : "fixed", nl, 1, 0);
			struct result g = flask(py, s ? "moving" : "fixed", nl, 4, 0);
			struct result fh = flask(py, s ? "moving" : "fixed", nl, 1, 1);
			struct result gh = flask(py, s ? "moving" : "fixed", nl, 4, 1);
			printf("%-14s %2d | %9.0f %6.1f  %9.0f %6.1f  | %6.0f %6.0f rt %4.2f  %6.0f %6.0f rt %4.2f  | %6.0f %6.0f rt %4.2f  %6.0f %6.0f rt %4.2f  | %.1fx, %.1fx | %4.1f %4.1f\n",
			       rl_strategy_name(strat), nl, a.rate, a.p99_us,
			       b.rate, b.p99_us, c.rate, c.p99_us, c.scripts,
			       d.rate, d.p99_us, d.scripts, f.rate, f.p99_us,
			       f.scripts, g.rate, g.p99_us, g.scripts,
			       f.rate > 0 ? c.rate / f.rate : 0,
			       g.rate > 0 ? d.rate / g.rate : 0,
			       c.redis_us, f.redis_us);
			printf("%-14s %2s   %-37s   %-47s | %6.0f %6.0f rt %4.2f  %6.0f %6.0f rt %4.2f  | %.1fx, %.1fx | %4s %4.1f\n",
			       "", "", "", "  with Flask-Limiter's headers on:",
			       fh.rate, fh.p99_us, fh.scripts, gh.rate, gh.p99_us,
			       gh.scripts, fh.rate > 0 ? c.rate / fh.rate : 0,
			       gh.rate > 0 ? d.rate / gh.rate : 0, "", fh.redis_us);
			if (a.errors + b.errors + c.errors + d.errors)
				printf("  (errors: %llu)\n", (unsigned long long)
				       (a.errors + b.errors + c.errors + d.errors));
		}
	}
	/* one client over its limit: the cache answers */
	struct run o = { &rs, RL_FIXED_WINDOW, 1, 1, 1, 0, 0 };
	struct result e = measure(&o);
	struct redis_stats st;
	store_redis_stats(store_redis_of(&rs), &st);
	printf("one client over 1/minute, redis 1 thread: %.0f decisions/s, p99 %.1f us, %.4f round trips per decision (%llu denied from the cache)\n",
	       e.rate, e.p99_us, e.scripts, (unsigned long long)st.cache_denied);
	/* and Flask-Limiter under the same flood, which asks Redis each time */
	struct result fo = flask(py, "over", 1, 1, 0);
	struct result fho = flask(py, "over", 1, 1, 1);
	printf("the same for Flask-Limiter, 1 process: %.0f decisions/s, p99 %.1f us, rt %.2f; with its headers on %.0f/s, rt %.2f; rategate/Flask %.0fx, %.0fx\n",
	       fo.rate, fo.p99_us, fo.scripts, fho.rate, fho.scripts,
	       fo.rate > 0 ? e.rate / fo.rate : 0,
	       fho.rate > 0 ? e.rate / fho.rate : 0);

	rs.ops->destroy(rs.impl);
	shm.ops->destroy(shm.impl);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(shm_path);
	char p[128];
	snprintf(p, sizeof(p), "%s/redis.log", dir);
	unlink(p);
	rmdir(dir);
	return 0;
}
