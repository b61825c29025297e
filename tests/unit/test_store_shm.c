/*
 * test_store_shm.c - unit tests of gateway/store_shm.c: SipHash vectors,
 * the shared strategy vectors on the shared-memory store, persistence
 * across close and reopen (a gateway restart), the mismatch messages,
 * exactness with 4 processes x 8 threads on one key, all-or-nothing
 * batches across stripes under concurrency, kill -9 inside the critical
 * section (rolled back before the commit point, kept after it), eviction
 * under a random-key flood with one client staying limited, eviction when
 * every candidate is limiting (the least recently used denied entry goes,
 * never an in-flight lease), the moving-window and in-flight pools, and
 * leases of a dead holder.
 *
 * Every store lives in a fresh mkdtemp() directory under /tmp.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rules.h"
#include "store_shm.h"
#include "strategy_vectors.h"

#define T0 1700000000000LL      /* a virtual now, ms */

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/rg-shm-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

TestSuite(shm, .init = setup, .fini = teardown);

static const char *path_of(const char *name)
{
	static char p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

static struct shm_config config(const char *name, uint64_t size,
				uint64_t max_moving)
{
	struct shm_config c = {
		.path = path_of(name),
		.size = size,
		.max_moving = max_moving,
		.names = 1,
		.stripes = 2,
	};
	return c;
}

static void open_ok(const struct shm_config *c, struct rl_store *st)
{
	char err[512] = "";

	cr_assert_eq(shm_store_open(c, st, err, sizeof(err)), 0, "open: %s",
		     err);
}

static struct shm_stats stats(struct rl_store *st)
{
	struct shm_stats s;

	shm_stats(shm_of(st), &s);
	return s;
}

/* ------------------------------------------------------------------ */

static int vec_n;

static int make_shm(struct rl_store *st, void *ctx)
{
	char name[32];
	struct shm_config c;
	char err[512];

	(void)ctx;
	snprintf(name, sizeof(name), "vec%d", vec_n++);
	c = config(name, 1 << 20, 8);
	return shm_store_open(&c, st, err, sizeof(err));
}

Test(shm, strategy_vectors)
{
	run_vectors_on_store(make_shm, NULL, "vec:");
}

static size_t shm_keys(struct rl_store *st)
{
	return (size_t)stats(st).keys;
}

Test(shm, probes_are_checked_never_written)
{
	run_probe_on_store(make_shm, NULL, shm_keys);
}

Test(shm, key_isolation_and_test_mode)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_verdict v;
	static const char *keys[] = { "", "a", "ab", "abc", "12345678",
				      "12345679", "123456789" };
	char long_key[300];

	open_ok(&c, &st);
	/* RL_TEST creates nothing */
	for (int s = 0; s < RL_STRATEGY_COUNT; s++)
		cr_expect_eq(sv_remaining(&st, "t", sv_limit((enum rl_strategy)s, 5,
							1000), T0), 5);
	cr_expect_eq(stats(&st).keys, 0);
	for (size_t i = 0; i < 7; i++)
		for (size_t h = 0; h <= i; h++)
			cr_assert_eq(sv_one(&st, keys[i], sv_limit(RL_FIXED_WINDOW, 20,
							    1000),
					 RL_HIT, T0, &v, NULL), 0);
	for (size_t i = 0; i < 7; i++)
		cr_expect_eq(sv_remaining(&st, keys[i],
				       sv_limit(RL_FIXED_WINDOW, 20, 1000), T0),
			     20 - (i + 1), "key %zu", i);
	/* a key longer than a name record still counts on its own */
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	cr_assert_eq(sv_one(&st, long_key, sv_limit(RL_FIXED_WINDOW, 2, 1000),
			 RL_HIT, T0, &v, NULL), 0);
	long_key[298] = 'x';
	cr_expect_eq(sv_remaining(&st, long_key, sv_limit(RL_FIXED_WINDOW, 2, 1000),
			       T0), 2);
	cr_expect_eq(stats(&st).keys, 8);
	st.ops->destroy(st.impl);
}

Test(shm, batch_all_or_nothing_and_duplicates)
{
	struct shm_config c = config("s", 1 << 20, 10);
	struct rl_store st;

	open_ok(&c, &st);
	sv_batch_vector(&st, T0);
	st.ops->destroy(st.impl);
}

Test(shm, persists_across_close_and_reopen)
{
	struct shm_config c = config("s", 1 << 20, 10);
	struct rl_store st;
	struct rl_verdict v;

	open_ok(&c, &st);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(sv_one(&st, "client", sv_limit(RL_FIXED_WINDOW, 5,
						     3600000),
				 RL_HIT, T0 + i, &v, NULL), 0);
	cr_assert_eq(sv_one(&st, "ring", sv_limit(RL_MOVING_WINDOW, 10, 3600000),
			 RL_HIT, T0, &v, NULL), 0);
	st.ops->destroy(st.impl);       /* the gateway stops */
	open_ok(&c, &st);               /* and starts again */
	cr_expect_eq(sv_remaining(&st, "client", sv_limit(RL_FIXED_WINDOW, 5,
						   3600000), T0 + 10), 2);
	cr_expect_eq(sv_remaining(&st, "ring", sv_limit(RL_MOVING_WINDOW, 10,
						 3600000), T0 + 10), 9);
	cr_expect_eq(stats(&st).keys, 2);
	st.ops->destroy(st.impl);
	/* a process that needs less of the file attaches too */
	c.max_moving = 0;
	open_ok(&c, &st);
	cr_expect_eq(sv_remaining(&st, "client", sv_limit(RL_FIXED_WINDOW, 5,
						   3600000), T0 + 10), 2);
	st.ops->destroy(st.impl);
}

static void expect_open_error(const struct shm_config *c, const char *want)
{
	struct rl_store st;
	char err[512] = "";

	cr_assert_eq(shm_store_open(c, &st, err, sizeof(err)), -1);
	cr_expect_str_eq(err, want);
}

static void poke_u32(const char *path, off_t off, uint32_t v)
{
	int fd = open(path, O_RDWR);

	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, &v, 4, off), 4);
	close(fd);
}

Test(shm, mismatch_messages)
{
	struct shm_config c = config("s", 1 << 20, 10);
	struct rl_store st;
	char want[1024];
	int fd;

	open_ok(&c, &st);
	st.ops->destroy(st.impl);

	c.size = 2 << 20;
	snprintf(want, sizeof(want), "shm store \"%s/s\": the file holds size=1M but storage asks for size=2M: stop the gateways and delete the file (its counters are lost), or set size=1M", dir);
	expect_open_error(&c, want);

	c.size = 1 << 20;
	c.max_moving = 100;
	snprintf(want, sizeof(want), "shm store \"%s/s\": the rule set needs moving-window counts up to 100 but the file's slots hold counts up to 14: stop the gateways and delete the file (its counters are lost) so that it is recreated with bigger slots (moving-window-max=N on the storage line reserves room for later rules)", dir);
	expect_open_error(&c, want);

	c.max_moving = 10;
	poke_u32(c.path, 8, 9);         /* the layout version */
	snprintf(want, sizeof(want), "shm store \"%s/s\": layout version 9, this rategate reads version %d: stop the gateways and delete the file (its counters are lost), or run the rategate that created it",
		 dir, SHM_LAYOUT_VERSION);
	expect_open_error(&c, want);

	poke_u32(c.path, 8, SHM_LAYOUT_VERSION);
	poke_u32(c.path, 12, 4);        /* entries per bucket */
	snprintf(want, sizeof(want), "shm store \"%s/s\": slot geometry differs from this build (4 entries of 64 bytes per bucket, %zu-byte locks; this build: 8 of 64, %zu): stop the gateways and delete the file (its counters are lost)",
		 dir, sizeof(pthread_mutex_t), sizeof(pthread_mutex_t));
	expect_open_error(&c, want);

	/* someone else's file */
	fd = open(path_of("other"), O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0);
	for (int i = 0; i < 500; i++)
		cr_assert_eq(write(fd, "not a store\n", 12), 12);
	close(fd);
	c.path = path_of("other");
	snprintf(want, sizeof(want), "shm store \"%s/other\": not a rategate store (bad magic): move it away or choose another path", dir);
	expect_open_error(&c, want);

	/* inspect never creates */
	c.path = path_of("none");
	c.attach_only = 1;
	snprintf(want, sizeof(want), "shm store \"%s/none\": no such file (no gateway has created it yet)", dir);
	expect_open_error(&c, want);

	/* a file left blank by a creator that died is initialised */
	fd = open(path_of("blank"), O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 8192), 0);
	close(fd);
	c = config("blank", 1 << 20, 0);
	open_ok(&c, &st);
	cr_expect_eq(stats(&st).file_bytes, 1 << 20);
	st.ops->destroy(st.impl);

	/* too small for the moving-window slots the rules need */
	c = config("small", 1 << 20, 100000);
	snprintf(want, sizeof(want), "shm store \"%s/small\": size=1M is too small for moving-window counts up to 100000 (each of its 2 stripes needs a slot of 800064 bytes): raise size= to at least 4M", dir);
	expect_open_error(&c, want);
}

/* rategate -t: what opening would do, found without touching the file. */
Test(shm, probe_file_new_fits_refused)
{
	struct shm_config c = config("s", 1 << 20, 10);
	struct rl_store st;
	struct shm_plan p, q;
	struct stat sb;
	uint64_t keys = 99;
	char err[512] = "", open_err[512] = "";

	cr_assert_eq(shm_probe_file(&c, &p, &keys, err, sizeof(err)),
		     SHM_PROBE_NEW, "%s", err);
	cr_expect_eq(stat(c.path, &sb), -1, "the probe created the file");
	cr_assert_eq(shm_plan(&c, &q, err, sizeof(err)), 0);
	cr_expect_eq(p.slots, q.slots);
	cr_expect_eq(p.entry_bytes, 192);

	open_ok(&c, &st);
	cr_assert_eq(sv_one(&st, "a", sv_limit(RL_FIXED_WINDOW, 5, 60000),
			    RL_HIT, T0, NULL, NULL), 0);
	cr_assert_eq(sv_one(&st, "b", sv_limit(RL_MOVING_WINDOW, 5, 60000),
			    RL_HIT, T0, NULL, NULL), 0);
	/* a gateway needing fewer slots attaches: the file's geometry */
	c.max_moving = 0;
	cr_assert_eq(shm_probe_file(&c, &p, &keys, err, sizeof(err)),
		     SHM_PROBE_FITS, "%s", err);
	cr_expect_eq(keys, 2);
	cr_expect_eq(p.slots, stats(&st).slots);
	cr_expect_eq(p.max_moving, 14);
	cr_expect_eq(p.ring_slots, stats(&st).ring_slots);
	/* refused with the message opening gives */
	c.max_moving = 100;
	cr_assert_eq(shm_probe_file(&c, &p, &keys, err, sizeof(err)),
		     SHM_PROBE_REFUSED);
	cr_assert_eq(shm_store_open(&c, &st, open_err, sizeof(open_err)), -1);
	cr_expect_str_eq(err, open_err);
	c.max_moving = 10;
	c.size = 2 << 20;
	cr_assert_eq(shm_probe_file(&c, &p, &keys, err, sizeof(err)),
		     SHM_PROBE_REFUSED);
	cr_assert_eq(shm_store_open(&c, &st, open_err, sizeof(open_err)), -1);
	cr_expect_str_eq(err, open_err);
	st.ops->destroy(st.impl);
}

/* In a child running as another user: c refused by the probe (-t) and
 * by opening, each with the message want.  0, or 1 (the probe did not
 * refuse it), 2 (it opened), 3 (another message, printed). */
static int
refused_as(const struct shm_config *c, const char *want)
{
	char e1[1024] = "", e2[1024] = "";
	struct shm_plan p;
	struct rl_store st;
	uint64_t keys;

	if (shm_probe_file(c, &p, &keys, e1, sizeof(e1)) != SHM_PROBE_REFUSED)
		return 1;
	if (shm_store_open(c, &st, e2, sizeof(e2)) != -1)
		return 2;
	if (strcmp(e1, want) != 0 || strcmp(e2, want) != 0) {
		fprintf(stderr, "probe: %s\nopen:  %s\nwant:  %s\n", e1, e2, want);
		return 3;
	}
	return 0;
}

/* A file another user made (a quickstart run as root, then a www-data
 * gateway): refused by opening and by the probe (-t) with one message
 * naming its owner, its mode, this process's user and the two fixes. */
Test(shm, a_file_this_user_cannot_write_names_owner_mode_and_fix)
{
	struct passwd *pw = getpwnam("www-data");

	if (geteuid() != 0 || pw == NULL)
		cr_skip_test("needs root and a www-data user");
	struct shm_config c = config("theirs", 1 << 20, 0);
	struct rl_store st;
	mode_t old = umask(022);
	open_ok(&c, &st);
	st.ops->destroy(st.impl);
	umask(old);
	cr_assert_eq(chmod(dir, 0755), 0);
	char want[1024];
	snprintf(want, sizeof(want), "shm store \"%s/theirs\": Permission denied: the file is root:root mode 0640 and this process runs as www-data (uid %lu), which must read and write it: give it to the gateways' user (chown www-data %s/theirs) or delete it (its counters are lost) so that the first gateway creates it",
		 dir, (unsigned long)pw->pw_uid, dir);

	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
			_exit(10);
		int r = refused_as(&c, want);
		_exit(r ? 10 + r : 0);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child status %d (10 setuid, 11 probe not refused, 12 opened, 13 message)",
		  status);
}

/* No file yet, and a directory the gateway's user may not write (a
 * storage path under a root-owned directory, a CGI wrapper run as
 * www-data): opening and the probe (-t) say it is the directory, who
 * this process is and the fix, not a bare "Permission denied" about a
 * file that does not exist.  A missing directory says "(its directory)"
 * in both too. */
Test(shm, a_directory_this_user_cannot_write_names_it_and_the_user)
{
	struct passwd *pw = getpwnam("www-data");

	if (geteuid() != 0 || pw == NULL)
		cr_skip_test("needs root and a www-data user");
	/* config()'s path is one static buffer: each keeps a copy */
	char want[1024], want_gone[1024], path[512], gone_path[512];
	struct shm_config c = config("new", 1 << 20, 0);
	snprintf(path, sizeof(path), "%s", c.path);
	c.path = path;
	struct shm_config gone = config("nodir/new", 1 << 20, 0);
	snprintf(gone_path, sizeof(gone_path), "%s", gone.path);
	gone.path = gone_path;
	cr_assert_eq(chmod(dir, 0755), 0);
	snprintf(want, sizeof(want), "shm store \"%s/new\": Permission denied (its directory): this process runs as www-data (uid %lu), which must be able to create the file there: make the directory writable by that user, or name another in the storage line",
		 dir, (unsigned long)pw->pw_uid);
	snprintf(want_gone, sizeof(want_gone), "shm store \"%s/nodir/new\": No such file or directory (its directory)",
		 dir);

	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
			_exit(10);
		int r = refused_as(&c, want);
		if (r != 0)
			_exit(10 + r);
		r = refused_as(&gone, want_gone);
		_exit(r ? 20 + r : 0);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child status %d (10 setuid, 11 probe not refused, 12 opened, 13 message; 21-23 the same for the missing directory)",
		  status);
}

/* ------------------------------------------------------------------ */
/* Processes and threads                                               */

struct worker {
	struct rl_store *st;
	const char *key;
	struct rl_step p;
	int hits;
	uint64_t *allowed;      /* shared between processes */
	uint64_t *errors;
};

static void *hammer(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < w->hits; i++) {
		struct rl_verdict v;
		struct rl_diag err;
		if (sv_one(w->st, w->key, w->p, RL_HIT, T0 + i, &v, &err) < 0)
			__atomic_add_fetch(w->errors, 1, __ATOMIC_RELAXED);
		else if (v.allowed)
			__atomic_add_fetch(w->allowed, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void run_threads(struct worker *w, int nthreads)
{
	pthread_t t[16];

	for (int i = 0; i < nthreads; i++)
		pthread_create(&t[i], NULL, hammer, w);
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
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

Test(shm, exact_with_4_processes_of_8_threads)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	uint64_t *shared = shared_words(2);
	pid_t pids[4];

	open_ok(&c, &st);
	for (int i = 0; i < 4; i++) {
		pids[i] = fork();
		cr_assert(pids[i] >= 0);
		if (pids[i] == 0) {
			struct rl_store own;
			struct worker w = { &st, "one-key",
					    sv_limit(RL_FIXED_WINDOW, 1000, 60000),
					    40, &shared[0], &shared[1] };
			/* half the processes inherit the mapping, half open
			 * the file themselves */
			if (i % 2) {
				char err[512];
				if (shm_store_open(&c, &own, err, sizeof(err)))
					_exit(1);
				w.st = &own;
			}
			run_threads(&w, 8);
			_exit(0);
		}
	}
	wait_children(pids, 4);
	cr_expect_eq(shared[1], 0, "store errors");
	cr_expect_eq(shared[0], 1000, "allowed %llu of 1280",
		     (unsigned long long)shared[0]);
	cr_expect_eq(sv_remaining(&st, "one-key", sv_limit(RL_FIXED_WINDOW, 1000,
						    60000), T0), 0);
	cr_expect_eq(stats(&st).allowed, 1000);
	cr_expect_eq(stats(&st).denied, 280);
	st.ops->destroy(st.impl);
}

/* Two keys in different stripes (the store has 2). */
static void two_stripes(struct rl_store *st, char *a, char *b)
{
	struct shm *m = shm_of(st);
	unsigned sa;

	strcpy(a, "k0");
	sa = shm_key_stripe(m, a, 2);
	for (int i = 1; i < 100; i++) {
		snprintf(b, 8, "k%d", i);
		if (shm_key_stripe(m, b, strlen(b)) != sa)
			break;
	}
	cr_assert_neq(shm_key_stripe(m, b, strlen(b)), sa);
	if (sa > shm_key_stripe(m, b, strlen(b))) {
		char t[8];
		strcpy(t, a);
		strcpy(a, b);
		strcpy(b, t);
	}
}

struct batcher {
	struct rl_store *st;
	const char *ka, *kb;
	int batches;
	uint64_t *allowed;
};

static void *batch_hammer(void *arg)
{
	struct batcher *w = arg;

	for (int i = 0; i < w->batches; i++) {
		struct rl_store_op ops[2] = {
			{ w->ka, strlen(w->ka), sv_limit(RL_GCRA, 100, 60000), { 0 }, 0 },
			{ w->kb, strlen(w->kb), sv_limit(RL_SLIDING_WINDOW, 1000, 60000), { 0 }, 0 },
		};
		struct rl_diag err;
		if (w->st->ops->apply(w->st->impl, ops, 2, RL_HIT, T0, &err) == 0 &&
		    ops[0].v.allowed && ops[1].v.allowed)
			__atomic_add_fetch(w->allowed, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

Test(shm, batches_over_two_stripes_stay_all_or_nothing)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	uint64_t *allowed = shared_words(1);
	char ka[8], kb[8];
	pid_t pids[2];

	open_ok(&c, &st);
	two_stripes(&st, ka, kb);
	for (int i = 0; i < 2; i++) {
		pids[i] = fork();
		cr_assert(pids[i] >= 0);
		if (pids[i] == 0) {
			struct batcher w = { &st, ka, kb, 40, allowed };
			pthread_t t[4];
			for (int k = 0; k < 4; k++)
				pthread_create(&t[k], NULL, batch_hammer, &w);
			for (int k = 0; k < 4; k++)
				pthread_join(t[k], NULL);
			_exit(0);
		}
	}
	wait_children(pids, 2);
	/* a (GCRA 100) limits; b took exactly the batches a allowed */
	cr_expect_eq(*allowed, 100);
	cr_expect_eq(sv_remaining(&st, ka, sv_limit(RL_GCRA, 100, 60000), T0), 0);
	cr_expect_eq(sv_remaining(&st, kb, sv_limit(RL_SLIDING_WINDOW, 1000, 60000),
			       T0), 900);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* kill -9 inside the critical section                                 */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int hook_fd = -1;
static enum shm_hook hook_at;

static void stop_here(enum shm_hook where)
{
	char c = 'x';

	if (where != hook_at)
		return;
	if (write(hook_fd, &c, 1) != 1)
		_exit(3);
	for (;;)
		pause();
}

/* Forks a child that applies ops (n of them) with RL_HIT, or takes a
 * lease when n is 0, and stops at the hook; kills it there with SIGKILL. */
static void die_inside(struct rl_store *st, enum shm_hook at,
		       struct rl_store_op *ops, size_t n, const char *lease_key)
{
	int fds[2];
	pid_t pid;
	char c;
	int status;

	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct rl_diag err;
		uint64_t id, held;
		close(fds[0]);
		hook_fd = fds[1];
		hook_at = at;
		shm_test_hook = stop_here;
		if (n)
			st->ops->apply(st->impl, ops, n, RL_HIT, T0, &err);
		else
			st->ops->acquire(st->impl, lease_key, strlen(lease_key),
					 3, 10000, T0, &id, &held, &err);
		_exit(4);       /* the hook never returns */
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &c, 1), 1, "the child reached the hook");
	close(fds[0]);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* Children that carry on after the death: n hits each on (a, b). */
static void carry_on(struct rl_store *st, const char *a, const char *b,
		     uint64_t *allowed)
{
	pid_t pids[2];

	for (int i = 0; i < 2; i++) {
		pids[i] = fork();
		cr_assert(pids[i] >= 0);
		if (pids[i] == 0) {
			struct batcher w = { st, a, b, 60, allowed };
			batch_hammer(&w);
			_exit(0);
		}
	}
	wait_children(pids, 2);
}

Test(shm, kill9_before_commit_rolls_back)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	char ka[8], kb[8];
	uint64_t *allowed = shared_words(1);

	open_ok(&c, &st);
	two_stripes(&st, ka, kb);
	/* a few hits first, so there is a state to damage */
	struct rl_store_op ops[2] = {
		{ ka, strlen(ka), sv_limit(RL_GCRA, 100, 60000), { 0 }, 0 },
		{ kb, strlen(kb), sv_limit(RL_SLIDING_WINDOW, 1000, 60000), { 0 }, 0 },
	};
	struct rl_diag err;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, T0, &err), 0);
	/* killed with a's state written and b's not */
	die_inside(&st, SHM_HOOK_WRITING, ops, 2, NULL);
	/* b's stripe (a follower) first: its leader had not committed */
	cr_expect_eq(sv_remaining(&st, kb, ops[1].step, T0), 997);
	cr_expect_eq(sv_remaining(&st, ka, ops[0].step, T0), 97);
	cr_expect_eq(stats(&st).recoveries, 2);
	/* the others carry on, exactly */
	carry_on(&st, ka, kb, allowed);
	cr_expect_eq(*allowed, 97);
	cr_expect_eq(sv_remaining(&st, kb, ops[1].step, T0), 900);
	st.ops->destroy(st.impl);
}

/* A holder that stops inside the critical section (SIGSTOP, a debugger)
 * never blocks the others for ever: after 2 s their batch on that stripe
 * fails with a clear error (the gateway's store-failure policy applies),
 * and once the holder goes on, so do they. */
static int count_key(void *ctx, const struct shm_key_info *k)
{
	(void)k;
	if (ctx)
		++*(size_t *)ctx;
	return 0;
}

Test(shm, stopped_lock_holder_times_out, .timeout = 30)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	int fds[2];
	char ch;

	open_ok(&c, &st);
	struct rl_store_op op = { "k", 1, sv_limit(RL_FIXED_WINDOW, 100, 60000), { 0 }, 0 };
	struct rl_diag err;
	cr_assert_eq(pipe(fds), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		hook_fd = fds[1];
		hook_at = SHM_HOOK_WRITING;
		shm_test_hook = stop_here;
		st.ops->apply(st.impl, &op, 1, RL_HIT, T0, &err);
		_exit(4);
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &ch, 1), 1, "the child reached the hook");
	close(fds[0]);
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	double t0 = now_s();
	int r = st.ops->apply(st.impl, &op, 1, RL_HIT, T0, &err);
	double took = now_s() - t0;
	cr_expect_eq(r, -1);
	cr_expect(took > 1.9 && took < 4, "waited %.2f s", took);
	cr_expect(strstr(err.msg, "lock held for more than 2000 ms by a process that does not progress") != NULL,
		  "%s", err.msg);
	/* rategate inspect's walk says the same, not "cannot read" */
	struct rl_diag serr = { 0, "" };
	cr_expect_eq(shm_scan(shm_of(&st), count_key, NULL, &serr), -1);
	cr_expect(strstr(serr.msg, "lock held for more than 2000 ms by a process that does not progress") != NULL,
		  "%s", serr.msg);
	/* the holder dies (as it would be killed): recovered, the others go on */
	cr_assert_eq(kill(pid, SIGKILL), 0);
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect_eq(st.ops->apply(st.impl, &op, 1, RL_HIT, T0, &err), 0, "%s", err.msg);
	cr_expect(op.v.allowed);
	size_t keys = 0;
	cr_expect_eq(shm_scan(shm_of(&st), count_key, &keys, &serr), 0, "%s", serr.msg);
	cr_expect_eq(keys, 1);
	st.ops->destroy(st.impl);
}

Test(shm, kill9_after_commit_keeps_the_batch)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	char ka[8], kb[8];
	uint64_t *allowed = shared_words(1);

	open_ok(&c, &st);
	two_stripes(&st, ka, kb);
	struct rl_store_op ops[2] = {
		{ ka, strlen(ka), sv_limit(RL_GCRA, 100, 60000), { 0 }, 0 },
		{ kb, strlen(kb), sv_limit(RL_SLIDING_WINDOW, 1000, 60000), { 0 }, 0 },
	};
	die_inside(&st, SHM_HOOK_COMMITTING, ops, 2, NULL);
	/* the follower asks its leader: committed, so kept on both */
	cr_expect_eq(sv_remaining(&st, kb, ops[1].step, T0), 999);
	cr_expect_eq(sv_remaining(&st, ka, ops[0].step, T0), 99);
	carry_on(&st, ka, kb, allowed);
	cr_expect_eq(*allowed, 99);
	cr_expect_eq(sv_remaining(&st, kb, ops[1].step, T0), 900);
	st.ops->destroy(st.impl);
}

Test(shm, kill9_leader_recovery_settles_followers)
{
	struct shm_config c = config("s", 1 << 20, 20);
	struct rl_store st;
	char ka[8], kb[8];

	open_ok(&c, &st);
	two_stripes(&st, ka, kb);
	/* a new moving-window key (ring slot, name, insert) half-written */
	struct rl_store_op ops[2] = {
		{ ka, strlen(ka), sv_limit(RL_MOVING_WINDOW, 20, 60000), { 0 }, 0 },
		{ kb, strlen(kb), sv_limit(RL_FIXED_WINDOW, 5, 60000), { 0 }, 0 },
	};
	die_inside(&st, SHM_HOOK_WRITING, ops, 2, NULL);
	/* both stripes at once: the leader settles the follower */
	struct rl_store_op test[2] = { ops[0], ops[1] };
	struct rl_diag err;
	cr_assert_eq(st.ops->apply(st.impl, test, 2, RL_TEST, T0, &err), 0);
	cr_expect_eq(test[0].v.remaining, 20);
	cr_expect_eq(test[1].v.remaining, 5);
	cr_expect_eq(stats(&st).keys, 0);
	cr_expect_eq(stats(&st).ring_used, 0);
	cr_expect_eq(stats(&st).recoveries, 2);
	cr_assert_eq(st.ops->apply(st.impl, ops, 2, RL_HIT, T0, &err), 0);
	cr_expect_eq(ops[0].v.remaining, 19);
	cr_expect_eq(stats(&st).keys, 2);
	st.ops->destroy(st.impl);
}

Test(shm, kill9_in_acquire_takes_no_lease)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_diag err;
	uint64_t id, held;

	open_ok(&c, &st);
	cr_assert_eq(st.ops->acquire(st.impl, "in", 2, 3, 10000, T0, &id,
				     &held, &err), 1);
	die_inside(&st, SHM_HOOK_WRITING, NULL, 0, "in");
	cr_assert_eq(st.ops->acquire(st.impl, "in", 2, 3, 10000, T0, &id,
				     &held, &err), 1);
	cr_expect_eq(held, 2);
	st.ops->destroy(st.impl);
}

/* A creator killed while it initialises a new file (header written, magic
 * not yet) leaves a file that the next opener initialises in place, as the
 * README says, rather than refusing it as "not a rategate store". */
Test(shm, creator_killed_while_initialising_is_initialised_again)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err;
	int fds[2], status;
	char ch;

	cr_assert_eq(pipe(fds), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		char e[512];
		close(fds[0]);
		hook_fd = fds[1];
		hook_at = SHM_HOOK_CREATING;
		shm_test_hook = stop_here;
		shm_store_open(&c, &st, e, sizeof(e));
		_exit(4);       /* the hook never returns */
	}
	close(fds[1]);
	cr_assert_eq(read(fds[0], &ch, 1), 1, "the creator reached the hook");
	close(fds[0]);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	open_ok(&c, &st);
	cr_assert_eq(sv_one(&st, "k", sv_limit(RL_FIXED_WINDOW, 2, 60000), RL_HIT,
			    T0, &v, &err), 0, "%s", err.msg);
	cr_expect(v.allowed);
	cr_expect_eq(v.remaining, 1);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* Bounded memory                                                      */

static uint64_t rng = 88172645463325252ULL;

static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

Test(shm, random_key_flood_never_resets_a_limited_client, .timeout = 60)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct stat sb;
	struct shm_stats s;
	uint64_t heavy_allowed = 0, errors = 0;
	int64_t now = T0;
	char key[64];

	open_ok(&c, &st);
	for (int i = 0; i < 200000; i++) {
		snprintf(key, sizeof(key), "rg:a:h.x-api-key=%016llx:10/60000/fw",
			 (unsigned long long)xorshift());
		errors += sv_one(&st, key, sv_limit(RL_FIXED_WINDOW, 10, 60000), RL_HIT,
			      now, &v, &err) != 0;
		if (i % 50 == 0) {
			cr_assert_eq(sv_one(&st, "rg:a:addr=192.0.2.7:5/60000/fw",
					 sv_limit(RL_FIXED_WINDOW, 5, 60000), RL_HIT,
					 now, &v, &err), 0, "%s", err.msg);
			heavy_allowed += v.allowed;
		}
		if (i % 1000 == 0)
			now++;
	}
	s = stats(&st);
	cr_expect_eq(errors, 0, "flood keys refused: %s", err.msg);
	cr_expect_eq(heavy_allowed, 5);
	cr_expect(s.evict_lru > 150000, "evictions %llu",
		  (unsigned long long)s.evict_lru);
	cr_expect(s.keys <= s.slots);
	cr_expect(s.keys > s.slots * 9 / 10, "keys %llu of %llu slots",
		  (unsigned long long)s.keys, (unsigned long long)s.slots);
	cr_assert_eq(stat(c.path, &sb), 0);
	cr_expect_eq(sb.st_size, 1 << 20);
	st.ops->destroy(st.impl);
}

Test(shm, full_of_limited_clients_evicts_their_lru_then_expired_go_first,
     .timeout = 60)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	struct shm_stats s;
	char key[32];
	int i;

	open_ok(&c, &st);
	/* every client is denied once: all of them are being limited, and
	 * there are 20 times more of them than slots */
	for (i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "ban-%d", i);
		cr_assert_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0,
			     "%s", err.msg);
		cr_assert_eq(v.allowed, 1);
		cr_assert_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0);
		cr_assert_eq(v.allowed, 0);
	}
	s = stats(&st);
	cr_expect_eq(s.full, 0);
	cr_expect_eq(s.evict_lru, 0);
	cr_expect_eq(s.evict_limiting, s.inserts - s.keys);
	cr_expect(s.evict_limiting > 90000, "%llu",
		  (unsigned long long)s.evict_limiting);
	/* the most recently denied client stays limited */
	cr_expect_eq(sv_one(&st, key, p, RL_HIT, T0 + 1, &v, &err), 0);
	cr_expect_eq(v.allowed, 0);
	/* an hour later they have expired: they go first */
	cr_expect_eq(sv_one(&st, "late", p, RL_HIT, T0 + 3600000, &v, &err), 0);
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(stats(&st).evict_expired, 1);
	cr_expect_eq(stats(&st).evict_limiting, s.evict_limiting);
	st.ops->destroy(st.impl);
}

/* A store of one stripe of a few buckets, so that keys sharing both
 * buckets of a given key are quick to find. */
static struct shm_config tiny(void)
{
	struct shm_config c = config("tiny", 64 << 10, 0);

	c.stripes = 1;
	return c;
}

/* The next key from "<prefix>-<*i>" on whose two buckets are exactly
 * those of target: it can only go into one of target's 16 entries. */
static void next_sharing(struct shm *m, const char *target,
			 const char *prefix, int *i, char *key, size_t cap)
{
	unsigned t1, t2, b1, b2;

	shm_key_place(m, target, strlen(target), NULL, &t1, &t2);
	for (;; (*i)++) {
		cr_assert_lt(*i, 10000000, "no key shares the buckets of %s",
			     target);
		snprintf(key, cap, "%s-%d", prefix, *i);
		shm_key_place(m, key, strlen(key), NULL, &b1, &b2);
		if ((b1 == t1 && b2 == t2) || (b1 == t2 && b2 == t1)) {
			(*i)++;
			return;
		}
	}
}

/* Whether key has an entry in one of target's two buckets. */
static int beside(struct shm *m, const char *key, const char *target)
{
	unsigned t1, t2;
	long b = shm_key_place(m, key, strlen(key), NULL, NULL, NULL);

	shm_key_place(m, target, strlen(target), NULL, &t1, &t2);
	return b >= 0 && ((unsigned long)b == t1 || (unsigned long)b == t2);
}

Test(shm, all_candidates_limiting_evicts_the_lru_denied_entry)
{
	struct shm_config c = tiny();
	struct rl_store st;
	struct shm *m;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	struct shm_stats s;
	char fill[16][32];
	uint64_t id, held;
	int i = 0;

	open_ok(&c, &st);
	m = shm_of(&st);
	cr_assert_eq(shm_key_place(m, "newcomer", 8, NULL, NULL, NULL), -1);
	/* the newcomer's 16 entries, oldest first: an in-flight counter
	 * holding a lease, then 15 clients denied at their last hit */
	for (int k = 0; k < 16; k++) {
		next_sharing(m, "newcomer", "ban", &i, fill[k], sizeof(fill[k]));
		if (k == 0) {
			cr_assert_eq(st.ops->acquire(st.impl, fill[k],
						     strlen(fill[k]), 1, 60000,
						     T0, &id, &held, &err), 1,
				     "%s", err.msg);
		} else {
			cr_assert_eq(sv_one(&st, fill[k], p, RL_HIT, T0, &v,
					    &err), 0, "%s", err.msg);
			cr_assert_eq(sv_one(&st, fill[k], p, RL_HIT, T0, &v,
					    &err), 0);
			cr_assert_eq(v.allowed, 0);
		}
		cr_assert(beside(m, fill[k], "newcomer"));
	}
	/* the oldest denied client keeps hitting: now most recently used */
	cr_assert_eq(sv_one(&st, fill[1], p, RL_HIT, T0 + 1, &v, &err), 0);
	cr_assert_eq(v.allowed, 0);
	s = stats(&st);
	cr_assert_eq(s.keys, 16);
	cr_assert_eq(s.evict_lru + s.evict_expired + s.evict_limiting, 0);

	/* the newcomer takes the least recently used denied entry */
	cr_assert_eq(sv_one(&st, "newcomer", p, RL_HIT, T0 + 2, &v, &err), 0,
		     "%s", err.msg);
	cr_expect_eq(v.allowed, 1);
	cr_expect(beside(m, "newcomer", "newcomer"));
	s = stats(&st);
	cr_expect_eq(s.evict_limiting, 1);
	cr_expect_eq(s.evict_lru, 0);
	cr_expect_eq(s.full, 0);
	/* that client's ban has lifted early: it is fresh again */
	cr_expect_eq(shm_key_place(m, fill[2], strlen(fill[2]), NULL, NULL,
				   NULL), -1, "%s was evicted", fill[2]);
	cr_expect_eq(sv_remaining(&st, fill[2], p, T0 + 2), 1);
	/* the lease holder and the others stay; the client that kept
	 * hitting is still denied */
	for (int k = 0; k < 16; k++)
		if (k != 2)
			cr_expect(beside(m, fill[k], "newcomer"),
				  "%s is still there", fill[k]);
	cr_expect_eq(st.ops->acquire(st.impl, fill[0], strlen(fill[0]), 1,
				     60000, T0 + 2, &id, &held, &err), 0);
	cr_expect_eq(sv_one(&st, fill[1], p, RL_HIT, T0 + 2, &v, &err), 0);
	cr_expect_eq(v.allowed, 0);
	st.ops->destroy(st.impl);
}

Test(shm, candidates_all_holding_leases_is_store_full)
{
	struct shm_config c = tiny();
	struct rl_store st;
	struct shm *m;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct rl_step p = sv_limit(RL_FIXED_WINDOW, 1, 3600000);
	char key[32];
	uint64_t id, held;
	int i = 0;

	open_ok(&c, &st);
	m = shm_of(&st);
	for (int k = 0; k < 16; k++) {
		next_sharing(m, "newcomer", "slow", &i, key, sizeof(key));
		cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 1, 10000,
					     T0, &id, &held, &err), 1, "%s",
			     err.msg);
		cr_assert(beside(m, key, "newcomer"));
	}
	cr_expect_eq(sv_one(&st, "newcomer", p, RL_HIT, T0 + 1, &v, &err), -1);
	cr_expect_str_eq(err.msg, "store full: both buckets of the key (16 entries) hold live in-flight leases or this request's other keys");
	cr_expect_eq(stats(&st).full, 1);
	cr_expect_eq(stats(&st).evict_limiting + stats(&st).evict_lru, 0);
	/* leases that have run out are expired entries: they go first */
	cr_expect_eq(sv_one(&st, "newcomer", p, RL_HIT, T0 + 10000, &v, &err), 0,
		     "%s", err.msg);
	cr_expect_eq(v.allowed, 1);
	cr_expect_eq(stats(&st).evict_expired, 1);
	st.ops->destroy(st.impl);
}

Test(shm, moving_window_pool_evicts_idle_then_lru_limited)
{
	struct shm_config c = config("s", 1 << 20, 20);
	struct rl_store st;
	struct rl_verdict v;
	struct rl_diag err = { 0, "" };
	struct rl_step p = sv_limit(RL_MOVING_WINDOW, 20, 60000);
	struct shm_stats s;
	char key[32];
	int i;

	c.ring_percent = 1;     /* 10485 bytes: 27 slots of 192 per stripe */
	open_ok(&c, &st);
	s = stats(&st);
	cr_assert_eq(s.ring_slots, 54, "%llu", (unsigned long long)s.ring_slots);
	/* idle keys recycle each other's slots */
	for (i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "idle-%d", i);
		cr_assert_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0, "%s",
			     err.msg);
	}
	s = stats(&st);
	cr_expect_eq(s.ring_used, 54);
	cr_expect_eq(s.evict_lru, 500 - 54);
	/* limited keys take the idle keys' slots first, then each other's,
	 * least recently used first */
	p.count = 1 + 1;
	for (i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "lim-%d", i);
		p.cost = 2;
		cr_assert_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0, "%s",
			     err.msg);
		p.cost = 1;
		cr_assert_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0);
		cr_assert_eq(v.allowed, 0);
	}
	s = stats(&st);
	cr_expect_eq(s.ring_used, 54);
	cr_expect_eq(s.evict_lru, 500);
	cr_expect_eq(s.evict_limiting, 1000 - 54);
	cr_expect_eq(s.full, 0);
	/* the last of them is still limited */
	cr_expect_eq(sv_one(&st, key, p, RL_HIT, T0, &v, &err), 0);
	cr_expect_eq(v.allowed, 0);
	st.ops->destroy(st.impl);
}

/* The entry of key in the mapped file m (bytes): the last 64-byte record
 * that starts with the key's hash and holds an expiry.  A name record
 * starts with the hash too, but holds lengths there; the journals' before
 * images, which hold copies of entries, come before the buckets. */
static uint64_t *entry_in_file(struct rl_store *st, uint8_t *m, size_t bytes,
			       const char *key)
{
	uint64_t h = shm_key_hash(shm_of(st), key, strlen(key));
	uint64_t *found = NULL;

	for (size_t off = 0; off + 64 <= bytes; off += 8) {
		uint64_t *w = (uint64_t *)(m + off);
		if (w[0] == h && (int64_t)w[1] > T0 / 2)
			found = w;
	}
	cr_assert_not_null(found, "no entry for %s", key);
	return found;
}

static int count_sane(void *ctx, const struct shm_key_info *k)
{
	cr_expect_leq(k->kind, SHM_KIND_INFLIGHT);
	++*(uint64_t *)ctx;
	return 0;
}

/* An entry damaged by a foreign write to the file (a pool slot outside
 * the pool or one it does not own, an unknown kind, a layout its state
 * cannot hold) is dropped where it is met, never followed: its key starts
 * afresh, the stripe is repaired (a recovery), and inspect, reset and the
 * eviction of damaged entries by a flood of new keys go on without
 * touching memory outside the table. */
Test(shm, damaged_entries_are_dropped_never_followed)
{
	struct shm_config c = config("s", 1 << 20, 8);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct rl_step mw = sv_limit(RL_MOVING_WINDOW, 5, 60000);
	struct rl_step fw = sv_limit(RL_FIXED_WINDOW, 10, 60000);
	uint64_t id, held, n = 0;
	struct stat sb;
	char key[32], e2[256];

	open_ok(&c, &st);
	for (int i = 0; i < 2; i++) {
		sv_hit(&st, "mw", mw, T0);
		sv_hit(&st, "ring", mw, T0);
		sv_hit(&st, "fw", fw, T0);
	}
	cr_assert_eq(st.ops->acquire(st.impl, "lease", 5, 3, 10000, T0, &id,
				     &held, &err), 1, "%s", err.msg);
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "old-%d", i);
		sv_hit(&st, key, mw, T0);
	}
	int fd = open(path_of("s"), O_RDWR);
	cr_assert(fd >= 0 && fstat(fd, &sb) == 0);
	uint8_t *m = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE,
			  MAP_SHARED, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	close(fd);
	size_t bytes = (size_t)sb.st_size;
	uint8_t *kind_flags;

	entry_in_file(&st, m, bytes, "mw")[2] = 1ull << 40;  /* w[0] */
	entry_in_file(&st, m, bytes, "ring")[2] ^= 1;        /* not its slot */
	entry_in_file(&st, m, bytes, "lease")[2] = ~0ull;
	kind_flags = (uint8_t *)entry_in_file(&st, m, bytes, "fw") + 60;
	kind_flags[0] = RL_MOVING_WINDOW;        /* 7 words in 3, count 10 */
	kind_flags = (uint8_t *)entry_in_file(&st, m, bytes, "old-0") + 60;
	kind_flags[0] = 200;                     /* no such kind */
	munmap(m, bytes);

	/* inspect lists only sound entries; the damaged keys start afresh */
	cr_assert_eq(shm_scan(shm_of(&st), count_sane, &n, &err), 0);
	cr_expect_eq(n, 199, "old-1 to old-199 are sound: %llu listed",
		     (unsigned long long)n);
	cr_expect_eq(sv_hit(&st, "mw", mw, T0).remaining, 4);
	cr_expect_eq(sv_hit(&st, "ring", mw, T0).remaining, 4);
	struct rl_step fw_as_mw = sv_limit(RL_MOVING_WINDOW, 10, 60000);
	cr_expect_eq(sv_hit(&st, "fw", fw_as_mw, T0).remaining, 9);
	cr_expect_eq(st.ops->acquire(st.impl, "lease", 5, 3, 10000, T0, &id,
				     &held, &err), 1, "%s", err.msg);
	cr_expect_eq(held, 1);
	cr_expect_eq(shm_remove(shm_of(&st), shm_key_hash(shm_of(&st), "old-0",
							  5), e2, sizeof(e2)),
		     0, "a damaged entry is no key to reset");
	cr_expect_geq(stats(&st).recoveries, 1);
	/* a flood of new keys meets damaged entries only as victims: they are
	 * evicted, and their pool slots taken, without following them; the
	 * counts stay true (the stripes are repaired after such a batch) */
	fd = open(path_of("s"), O_RDWR);
	cr_assert(fd >= 0);
	m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	close(fd);
	for (int i = 1; i < 200; i++) {
		snprintf(key, sizeof(key), "old-%d", i);
		sv_hit(&st, key, mw, T0);       /* afresh, or still there */
		uint64_t *w = entry_in_file(&st, m, bytes, key);
		if (i % 2)
			w[2] = (uint64_t)i << 36;       /* outside the pool */
		else
			w[2] ^= 1;      /* a slot another entry owns */
	}
	munmap(m, bytes);
	uint64_t recoveries = stats(&st).recoveries;
	struct shm_stats s = stats(&st);
	for (uint64_t i = 0; i < 3 * s.slots; i++) {
		snprintf(key, sizeof(key), "new-%llu", (unsigned long long)i);
		sv_hit(&st, key, mw, T0 + 1);
	}
	s = stats(&st);
	n = 0;
	cr_assert_eq(shm_scan(shm_of(&st), count_sane, &n, &err), 0);
	cr_expect_eq(n, s.keys, "scan %llu, counted %llu",
		     (unsigned long long)n, (unsigned long long)s.keys);
	cr_expect_leq(s.ring_used, s.ring_slots);
	cr_expect_eq(s.full, 0);
	cr_expect_gt(s.recoveries, recoveries, "the stripes were repaired");
	st.ops->destroy(st.impl);
}

Test(shm, lease_pool_full_of_live_leases_is_store_full)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	struct shm_stats s;
	uint64_t id, held;
	char key[32], want[256];
	int i, r = 0;

	open_ok(&c, &st);
	s = stats(&st);
	cr_assert_eq(s.lease_slots, 18, "%llu", (unsigned long long)s.lease_slots);
	/* concurrency=3 counters take a pool slot each and keep it while a
	 * lease is live */
	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "conc-%d", i);
		r = st.ops->acquire(st.impl, key, strlen(key), 3, 10000, T0, &id,
				    &held, &err);
		if (r < 0)
			break;
		cr_assert_eq(r, 1);
	}
	cr_assert_eq(r, -1);
	snprintf(want, sizeof(want), "store full: all 9 in-flight slots of stripe %u hold live leases or this request's other keys",
		 shm_key_stripe(shm_of(&st), key, strlen(key)));
	cr_expect_str_eq(err.msg, want);
	s = stats(&st);
	cr_expect_eq(s.full, 1);
	cr_expect_geq(s.lease_used, 9);
	cr_expect_eq(s.evict_lru + s.evict_limiting + s.evict_expired, 0);
	st.ops->destroy(st.impl);
}

Test(shm, slot_capacity_errors)
{
	struct shm_config c = config("s", 1 << 20, 10);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	char want[512];
	uint64_t id, held;

	open_ok(&c, &st);
	cr_expect_eq(sv_one(&st, "m", sv_limit(RL_MOVING_WINDOW, 100, 1000), RL_HIT,
			 T0, NULL, &err), -1);
	snprintf(want, sizeof(want), "shm store \"%s/s\": moving-window count 100 is above the 14 its slots hold: stop the gateways and delete the file so that it is recreated for these rules", dir);
	cr_expect_str_eq(err.msg, want);
	cr_expect_eq(st.ops->acquire(st.impl, "in", 2, 67, 1000, T0, &id,
				     &held, &err), 1);
	cr_expect_eq(st.ops->acquire(st.impl, "in", 2, 68, 1000, T0, &id,
				     &held, &err), -1);
	snprintf(want, sizeof(want), "shm store \"%s/s\": concurrency=68 is above the 67 in-flight requests per key its slots hold: stop the gateways and delete the file so that it is recreated for these rules", dir);
	cr_expect_str_eq(err.msg, want);
	st.ops->destroy(st.impl);
}

/* ------------------------------------------------------------------ */
/* In-flight leases                                                    */

Test(shm, leases_acquire_release_and_expire)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	uint64_t id[4], held;

	open_ok(&c, &st);
	for (int max = 1; max <= 3; max += 2) {     /* in the entry; pooled */
		const char *k = max == 1 ? "one" : "three";
		for (int i = 0; i < max; i++)
			cr_assert_eq(st.ops->acquire(st.impl, k, strlen(k), max,
						     1000, T0, &id[i], &held,
						     &err), 1, "%s", err.msg);
		cr_expect_eq(held, (uint64_t)max);
		cr_expect_eq(st.ops->acquire(st.impl, k, strlen(k), max, 1000,
					     T0, &id[3], &held, &err), 0);
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
	}
	/* released to zero: dropped */
	cr_expect_eq(stats(&st).keys, 0);
	cr_expect_eq(stats(&st).lease_used, 0);
	st.ops->destroy(st.impl);
}

Test(shm, leases_of_a_dead_holder_expire)
{
	struct shm_config c = config("s", 1 << 20, 0);
	struct rl_store st;
	struct rl_diag err = { 0, "" };
	uint64_t id, held;
	pid_t pid;

	open_ok(&c, &st);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct rl_store own;
		char e[512];
		if (shm_store_open(&c, &own, e, sizeof(e)) ||
		    own.ops->acquire(own.impl, "slow", 4, 2, 2000, T0, &id,
				     &held, &err) != 1 ||
		    own.ops->acquire(own.impl, "slow", 4, 2, 2000, T0, &id,
				     &held, &err) != 1)
			_exit(1);
		_exit(0);       /* dies holding both leases */
	}
	wait_children(&pid, 1);
	cr_expect_eq(st.ops->acquire(st.impl, "slow", 4, 2, 2000, T0 + 1999,
				     &id, &held, &err), 0);
	cr_expect_eq(held, 2);
	cr_expect_eq(st.ops->acquire(st.impl, "slow", 4, 2, 2000, T0 + 2000,
				     &id, &held, &err), 1);
	cr_expect_eq(held, 1);
	st.ops->destroy(st.impl);
}

/* names=off in the storage URI: no key text, three times the keys. */
Test(shm, names_off_from_the_rules)
{
	char tdir[] = "/tmp/rg-names-XXXXXX", text[256];
	struct rl_report rep;
	struct rl_store on, off;
	struct shm_stats son, soff;
	char err[512] = "";

	cr_assert_not_null(mkdtemp(tdir));
	snprintf(text, sizeof(text), "storage shm:%s/on?size=4M\n", tdir);
	struct rl_ruleset *a = rl_ruleset_parse("t", text, strlen(text), NULL, &rep);
	cr_assert_not_null(a);
	rl_report_free(&rep);
	snprintf(text, sizeof(text), "storage shm:%s/off?size=4M&names=off\n", tdir);
	struct rl_ruleset *b = rl_ruleset_parse("t", text, strlen(text), NULL, &rep);
	cr_assert_not_null(b);
	rl_report_free(&rep);
	cr_assert_eq(store_shm_open(a, &on, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(store_shm_open(b, &off, err, sizeof(err)), 0, "%s", err);
	shm_stats(shm_of(&on), &son);
	shm_stats(shm_of(&off), &soff);
	cr_expect_gt(son.name_bytes, 0);
	cr_expect_eq(soff.name_bytes, 0);
	cr_expect_gt(soff.slots, 2 * son.slots);
	on.ops->destroy(on.impl);
	off.ops->destroy(off.impl);
	snprintf(text, sizeof(text), "%s/on", tdir);
	unlink(text);
	snprintf(text, sizeof(text), "%s/off", tdir);
	unlink(text);
	rmdir(tdir);
	rl_ruleset_free(a);
	rl_ruleset_free(b);
}

/* ------------------------------------------------------------------ */
/* A healthy store never takes the damaged-entry paths                 */

struct churn {
	struct rl_store *st;
	unsigned seed;
	int fails;
};

static unsigned churn_rand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	static const enum rl_strategy strat[] = {
		RL_FIXED_WINDOW, RL_MOVING_WINDOW, RL_GCRA,
		RL_SLIDING_WINDOW,
	};
	char keys[4][32];
	struct rl_diag err = { 0, "" };

	for (int it = 0; it < 40000; it++) {
		int64_t now = T0 + it * 3;
		unsigned n = 1 + churn_rand(&c->seed) % 4;
		struct rl_store_op ops[4];
		unsigned what = churn_rand(&c->seed) % 10;

		if (what < 2) {
			uint64_t id = 0, held;
			unsigned k = churn_rand(&c->seed) % 20000;
			snprintf(keys[0], sizeof(keys[0]), "k%u", k);
			int r = c->st->ops->acquire(c->st->impl, keys[0],
						    strlen(keys[0]),
						    1 + k % 5, 200, now, &id,
						    &held, &err);
			if (r == 1 && churn_rand(&c->seed) % 2)
				c->st->ops->release(c->st->impl, keys[0],
						    strlen(keys[0]), id, now,
						    &err);
			continue;
		}
		if (what == 2) {
			unsigned k = churn_rand(&c->seed) % 20000;
			char e2[256];
			snprintf(keys[0], sizeof(keys[0]), "k%u", k);
			shm_remove(shm_of(c->st), shm_key_hash(shm_of(c->st),
				   keys[0], strlen(keys[0])), e2, sizeof(e2));
			continue;
		}
		for (unsigned i = 0; i < n; i++) {
			unsigned k = churn_rand(&c->seed) % 20000;
			/* the layout of a key changes with time */
			unsigned sidx = (k + (unsigned)(it / 5000)) % 4;
			snprintf(keys[i], sizeof(keys[i]), "k%u", k);
			ops[i].key = keys[i];
			ops[i].key_len = strlen(keys[i]);
			ops[i].step = sv_limit(strat[sidx],
					       2 + (k + (unsigned)(it / 7000)) % 7,
					       1000);
			ops[i].probe = 0;
			for (unsigned j = 0; j < i; j++)
				if (strcmp(keys[j], keys[i]) == 0)
					ops[i].step = ops[j].step;
		}
		c->st->ops->apply(c->st->impl, ops, n, RL_HIT, now, &err);
	}
	return NULL;
}

/* Churn on a small store (evictions of entries and of pool slots, layouts
 * changing between the ring pool, the lease pool and the entry, batches
 * over both stripes, removes) from four threads: no entry is ever found
 * damaged (a false "damaged" would reset a live client's counter), and
 * the counts stay true. */
Test(shm, a_healthy_store_under_churn_is_never_repaired, .timeout = 120)
{
	struct shm_config c = config("s", 1 << 20, 8);
	struct rl_store st;
	struct churn ch[4];
	pthread_t t[4];
	struct rl_diag err = { 0, "" };
	size_t n = 0;

	c.max_leases = 5;
	c.ring_percent = 3;
	open_ok(&c, &st);
	for (int i = 0; i < 4; i++) {
		ch[i].st = &st;
		ch[i].seed = 1234u + (unsigned)i;
		ch[i].fails = 0;
		cr_assert_eq(pthread_create(&t[i], NULL, churn_main, &ch[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	struct shm_stats s = stats(&st);
	cr_assert_eq(shm_scan(shm_of(&st), count_key, &n, &err), 0);
	cr_expect_eq(s.recoveries, 0, "a healthy store was repaired");
	cr_expect_eq(n, s.keys, "scan %llu, counted %llu",
		     (unsigned long long)n, (unsigned long long)s.keys);
	cr_expect_gt(s.evict_lru, 0);
	cr_expect_gt(s.full, 0, "no batch met a full pool");
	cr_expect_leq(s.ring_used, s.ring_slots);
	cr_expect_leq(s.lease_used, s.lease_slots);
	st.ops->destroy(st.impl);
}
