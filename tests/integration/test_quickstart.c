/*
 * test_quickstart.c - examples/quickstart.sh, the README's first command,
 * as a user runs it: the script starts lighttpd (which spawns two rategate
 * authorizers on examples/site.rules) in the background and returns; the
 * curl commands it prints get a 429 with Retry-After; the stop command it
 * prints stops lighttpd and every rategate it started.
 *
 * Run on a free port, from a temporary directory, with the rules' store
 * moved into that directory (STORAGE=shm:DIR/store) so that the test
 * neither touches nor depends on /dev/shm/rategate.  The test process is a
 * child subreaper (srv_setup), so the daemonized lighttpd and, once it is
 * gone, its rategate processes come back to it and are reaped here.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"

static pid_t lighttpd;
static pid_t rg[8];             /* the rategate processes lighttpd spawned */
static int nrg;

static void
setup(void)
{
	srv_setup();
	lighttpd = 0;
	nrg = 0;
}

static pid_t parent_of(pid_t pid, char *comm, size_t cap);

/* Running: neither gone nor a zombie. */
static int
alive(pid_t pid)
{
	return parent_of(pid, NULL, 0) > 0;
}

/* Reap whatever came back to us (we are a subreaper). */
static void
reap(void)
{
	int st;

	while (waitpid(-1, &st, WNOHANG) > 0)
		;
}

static void
teardown(void)
{
	/* The script's lighttpd is not one of srv_spawn's processes: stop it
	 * here, and then its rategate processes, if the test failed before
	 * its stop command ran or did not stop everything. */
	pid_t all[9];
	int n = 0;
	if (lighttpd > 0)
		all[n++] = lighttpd;
	for (int k = 0; k < nrg; k++)
		all[n++] = rg[k];
	for (int k = 0; k < n; k++) {
		if (!alive(all[k]))
			continue;
		kill(all[k], SIGTERM);
		for (int i = 0; i < 500 && alive(all[k]); i++) {
			reap();
			srv_sleep_ms(10);
		}
		if (alive(all[k]))
			kill(all[k], SIGKILL);
	}
	srv_cleanup();
}

/* The PID of a process's parent and its command name; 0 when gone. */
static pid_t
parent_of(pid_t pid, char *comm, size_t cap)
{
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
	int ppid = 0;
	char state = '?';
	if (lp == NULL || rp == NULL || sscanf(rp + 2, "%c %d", &state, &ppid) != 2)
		return 0;
	if (state == 'Z')
		return 0;       /* a zombie runs nothing */
	if (comm != NULL)
		snprintf(comm, cap, "%.*s", (int)(rp - lp - 1), lp + 1);
	return ppid;
}

/* Live processes whose parent is ppid (into pids, at most max), or, with
 * ppid 0, whose command line contains text. */
static int
find_procs(pid_t ppid, const char *text, pid_t *pids, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL && n < max) {
		pid_t pid = atoi(e->d_name);
		if (pid <= 1 || pid == getpid())
			continue;
		pid_t pp = parent_of(pid, NULL, 0);
		if (pp == 0)
			continue;
		if (ppid > 0) {
			if (pp == ppid)
				pids[n++] = pid;
			continue;
		}
		char path[64], buf[4096];
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		for (ssize_t i = 0; i < len; i++)
			if (buf[i] == '\0')
				buf[i] = ' ';
		buf[len] = '\0';
		if (strstr(buf, text) != NULL)
			pids[n++] = pid;
	}
	closedir(d);
	return n;
}

/* Run examples/quickstart.sh with the environment set; its output goes to
 * out_path.  Returns its exit status. */
static int
run_quickstart(int port, const char *out_path)
{
	char script[SRV_PATH_MAX], port_s[16], storage[SRV_PATH_MAX + 32];

	snprintf(script, sizeof(script), "%s/examples/quickstart.sh", srv_srcdir());
	snprintf(port_s, sizeof(port_s), "%d", port);
	snprintf(storage, sizeof(storage), "shm:%s?size=8M", srv_path("store"));
	const char *rategate = srv_rategate();
	const char *qsdir = srv_path("qs");
	const char *bash = srv_need("bash", "bash");
	srv_need("lighttpd", "lighttpd");
	/* The README runs it as examples/quickstart.sh. */
	cr_expect_eq(access(script, X_OK), 0, "%s is not executable (chmod +x, and commit the mode)",
		     script);

	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (in < 0 || out < 0)
			_exit(126);
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		setenv("PORT", port_s, 1);
		setenv("QUICKSTART_DIR", qsdir, 1);
		setenv("RATEGATE", rategate, 1);
		setenv("STORAGE", storage, 1);
		unsetenv("RULES");
		execl(bash, "bash", script, (char *)NULL);
		dprintf(2, "exec %s %s: %s\n", bash, script, strerror(errno));
		_exit(127);
	}
	int st;
	for (int i = 0; i < 3000; i++) {        /* 30 s */
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		srv_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	cr_assert_fail("examples/quickstart.sh did not finish in 30 s");
	return -1;
}

/* The line of text that starts with prefix (after leading spaces), without
 * them, in buf; NULL when none. */
static const char *
line_with(const char *text, const char *prefix, char *buf, size_t cap)
{
	for (const char *p = text; p != NULL && *p != '\0';) {
		const char *s = p + strspn(p, " ");
		size_t len = strcspn(s, "\n");
		if (strncmp(s, prefix, strlen(prefix)) == 0) {
			snprintf(buf, cap, "%.*s", (int)len, s);
			return buf;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return NULL;
}

Test(quickstart, script_gives_429_and_stop_command_stops_everything,
     .init = setup, .fini = teardown, .timeout = 90)
{
	int port = srv_free_port();
	const char *out_path = srv_path("quickstart.out");
	int rc = run_quickstart(port, out_path);
	char *out = srv_read(out_path);
	cr_assert_not_null(out);
	cr_assert_eq(rc, 0, "examples/quickstart.sh exited %d:\n%s", rc, out);

	/* It says where it runs and how to stop it. */
	char want[128], line[512];
	snprintf(want, sizeof(want), "on http://127.0.0.1:%d/", port);
	cr_assert_not_null(strstr(out, want), "no \"%s\" in:\n%s", want, out);
	snprintf(want, sizeof(want), "-d user=demo http://127.0.0.1:%d/login", port);
	cr_expect_not_null(strstr(out, want), "no \"%s\" in:\n%s", want, out);
	cr_assert_not_null(line_with(out, "kill ", line, sizeof(line)),
			   "no stop command in:\n%s", out);
	lighttpd = atoi(line + 5);
	cr_assert_gt(lighttpd, 1, "stop command \"%s\"", line);
	char *pidfile = srv_read(srv_path("qs/lighttpd.pid"));
	cr_assert_not_null(pidfile);
	cr_expect_eq(atoi(pidfile), lighttpd, "lighttpd.pid %s vs \"%s\"", pidfile, line);
	free(pidfile);
	char comm[64] = "";
	cr_assert_gt(parent_of(lighttpd, comm, sizeof(comm)), 0, "lighttpd %d is not running",
		     (int)lighttpd);
	cr_expect_str_eq(comm, "lighttpd");

	/* lighttpd spawned two rategate processes ("max-procs" 2). */
	nrg = find_procs(lighttpd, NULL, rg, 8);
	cr_expect_eq(nrg, 2, "%d processes under lighttpd", nrg);
	for (int i = 0; i < nrg; i++) {
		parent_of(rg[i], comm, sizeof(comm));
		cr_expect(srv_same_program(comm, "rategate"), "process %d is %s",
			  (int)rg[i], comm);
	}

	/* The README's loop: POST /login is 5/minute, the 6th is a 429. */
	char url[128], v[256];
	struct srv_resp r;
	int allowed = 0;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/login", port);
	for (int i = 0; i < 10; i++) {
		srv_http("POST", url, NULL, &r);
		if (r.status != 200)
			break;
		cr_expect_not_null(strstr(r.body, "login: POST accepted"), "body %s", r.body);
		allowed++;
		srv_resp_free(&r);
	}
	cr_assert_eq(allowed, 5, "%d POSTs allowed before %ld", allowed, r.status);
	cr_assert_str_eq(r.status_line, "HTTP/1.1 429 Too Many Requests");
	cr_assert_not_null(srv_header(&r, "Retry-After", v, sizeof(v)), "no Retry-After:\n%s",
			   r.headers);
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
	cr_expect_str_eq(r.body, "Too many login attempts\n");
	srv_resp_free(&r);
	/* Nothing in front of lighttpd here, and site.rules trusts no proxy:
	 * a client's own X-Forwarded-For does not give it a new key. */
	const char *xff[] = { "X-Forwarded-For: 10.9.9.1", NULL };
	srv_http("POST", url, xff, &r);
	cr_expect_eq(r.status, 429, "X-Forwarded-For chose the key: %s", r.status_line);
	srv_resp_free(&r);

	/* /pay: 1 per 10 seconds. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/pay", port);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 200);
	srv_resp_free(&r);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 429);
	cr_expect_not_null(srv_header(&r, "Retry-After", v, sizeof(v)));
	srv_resp_free(&r);

	/* The static page and the exempt health check. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	srv_http("GET", url, NULL, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_not_null(strstr(r.body, "rategate quickstart"));
	srv_resp_free(&r);

	/* The stop command, as printed. */
	cr_assert_eq(system(line), 0, "\"%s\" failed", line);
	for (int i = 0; i < 1000; i++) {        /* 10 s */
		reap();
		int left = alive(lighttpd);
		for (int k = 0; k < nrg; k++)
			left += alive(rg[k]);
		if (left == 0)
			break;
		srv_sleep_ms(10);
	}
	cr_expect(!alive(lighttpd), "lighttpd %d still running after \"%s\"", (int)lighttpd, line);
	for (int k = 0; k < nrg; k++)
		cr_expect(!alive(rg[k]), "rategate %d still running after \"%s\"", (int)rg[k], line);
	pid_t left[8];
	int nleft = find_procs(0, srv_dir, left, 8);
	cr_expect_eq(nleft, 0, "%d processes still running with %s in their command line (first %d)",
		     nleft, srv_dir, nleft ? (int)left[0] : 0);
	char *log = srv_read(srv_path("qs/rategate.log"));
	cr_expect(log != NULL && strstr(log, "event=stop") != NULL, "rategate log:\n%s",
		  log ? log : "(none)");
	free(log);
	free(out);
}
