/*
 * servers.c - start, probe and stop real servers for the integration
 * tests; HTTP through libcurl.  See servers.h.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "servers.h"

char srv_dir[SRV_PATH_MAX];

#define MAX_PROCS 16
static pid_t procs[MAX_PROCS];
static int nprocs;

double
srv_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
srv_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	/* a signal (a child exiting) must not cut a wait short */
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void
srv_setup(void)
{
	snprintf(srv_dir, sizeof(srv_dir), "/tmp/rategate-itest.XXXXXX");
	cr_assert_not_null(mkdtemp(srv_dir), "mkdtemp: %s", strerror(errno));
	cr_assert_eq(chmod(srv_dir, 0755), 0);
	/* FastCGI apps spawned by a web server come back to us when the
	 * server exits, so they are reaped (and checked) here. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	nprocs = 0;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* SIGKILL every process whose parent is this one (servers' orphans that
 * did not stop, reparented to us as subreaper). */
static void
kill_children(void)
{
	char path[300], buf[512];
	pid_t me = getpid();
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		int pid = atoi(e->d_name);
		if (pid <= 1)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		const char *rp = strrchr(buf, ')');
		int ppid = 0;
		if (rp != NULL && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == me)
			kill(pid, SIGKILL);
	}
	closedir(d);
}

void
srv_cleanup(void)
{
	for (int i = nprocs - 1; i >= 0; i--)
		if (procs[i] > 0)
			srv_stop(procs[i], 5);
	nprocs = 0;
	/* Anything left in our process groups or reparented to us. */
	int st[8];
	srv_reap_orphans(st, 8, 0.5);
	kill_children();
	srv_reap_orphans(st, 8, 0.5);
	if (srv_dir[0] != '\0' && getenv("RATEGATE_KEEP_TESTDIR") == NULL)
		nftw(srv_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *
srv_path(const char *rel)
{
	static char bufs[8][SRV_PATH_MAX];
	static int next;
	char *b = bufs[next++ % 8];

	snprintf(b, SRV_PATH_MAX, "%s/%s", srv_dir, rel);
	return b;
}

const char *
srv_srcdir(void)
{
	const char *s = getenv("top_srcdir");
	return s ? s : ".";
}

const char *
srv_builddir(void)
{
	const char *s = getenv("top_builddir");
	return s ? s : ".";
}

/* $RATEGATE_WRAPPER (tests/run-all.sh runs some suites with rategate
 * under valgrind: a script that execs it so), or NULL when unset or
 * empty. */
static const char *
wrapper(void)
{
	const char *wrap = getenv("RATEGATE_WRAPPER");

	return wrap != NULL && *wrap != '\0' ? wrap : NULL;
}

int
srv_slow(void)
{
	return wrapper() ? 10 : 1;
}

const char *
srv_rategate(void)
{
	static char path[SRV_PATH_MAX];
	char rel[SRV_PATH_MAX];
	const char *wrap = wrapper();

	if (wrap != NULL)
		snprintf(rel, sizeof(rel), "%s", wrap);
	else
		snprintf(rel, sizeof(rel), "%s/rategate", srv_builddir());
	cr_assert_not_null(realpath(rel, path),
			   "the built rategate is not at %s (run the tests with make check, which sets top_builddir)",
			   rel);
	cr_assert_eq(access(path, X_OK), 0, "%s is not executable", path);
	return path;
}

const char *
srv_need(const char *binary, const char *package)
{
	static char found[4][SRV_PATH_MAX];
	static int next;
	static const char *const dirs[] = { "/usr/sbin", "/usr/bin", "/sbin",
					    "/bin", "/usr/local/sbin",
					    "/usr/local/bin" };
	char *b = found[next++ % 4];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(b, SRV_PATH_MAX, "%s/%s", dirs[i], binary);
		if (access(b, X_OK) == 0)
			return b;
	}
	cr_assert_fail("%s not found: install the Debian package %s (apt-get install %s; it is listed in tests/debian-packages)",
		       binary, package, package);
	return NULL;
}

int
srv_free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		  getsockname(fd, (struct sockaddr *)&sa, &len) == 0,
		  "cannot find a free port: %s", strerror(errno));
	close(fd);
	return ntohs(sa.sin_port);
}

void
srv_write(const char *rel, const char *text, int mode)
{
	const char *p = srv_path(rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
	size_t len = strlen(text);

	cr_assert(fd >= 0, "cannot create %s: %s", p, strerror(errno));
	cr_assert_eq(write(fd, text, len), (ssize_t)len, "write %s", p);
	close(fd);
	cr_assert_eq(chmod(p, (mode_t)mode), 0);
}

char *
srv_read(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;

	if (f == NULL)
		return NULL;
	FILE *m = open_memstream(&buf, &len);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, m);
	fclose(f);
	fclose(m);
	return buf;
}

int
srv_count_lines(const char *path)
{
	char *s = srv_read(path);
	int n = 0;

	if (s == NULL)
		return 0;
	for (char *p = s; *p; p++)
		n += *p == '\n';
	free(s);
	return n;
}

char *
srv_subst(const char *text, const char *const *pairs)
{
	char *cur = strdup(text);

	for (size_t i = 0; pairs[i] != NULL; i += 2) {
		const char *k = pairs[i], *v = pairs[i + 1];
		cr_assert_not_null(strstr(cur, k), "template has no %s", k);
		char *out = NULL;
		size_t olen = 0;
		FILE *m = open_memstream(&out, &olen);
		const char *p = cur, *hit;
		while ((hit = strstr(p, k)) != NULL) {
			fwrite(p, 1, (size_t)(hit - p), m);
			fputs(v, m);
			p = hit + strlen(k);
		}
		fputs(p, m);
		fclose(m);
		free(cur);
		cur = out;
	}
	return cur;
}

char *
srv_set_line(const char *text, const char *prefix, const char *line)
{
	char *out = NULL;
	size_t olen = 0;
	FILE *m = open_memstream(&out, &olen);
	const char *p = text;
	int found = 0;

	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		if (strncmp(p, prefix, strlen(prefix)) == 0) {
			fputs(line, m);
			found = 1;
		} else {
			fwrite(p, 1, len, m);
		}
		fputc('\n', m);
		p += len + (nl ? 1 : 0);
	}
	fclose(m);
	cr_assert(found, "no line starts with \"%s\"", prefix);
	return out;
}

pid_t
srv_spawn(char *const argv[], const char *out_path)
{
	cr_assert_lt(nprocs, MAX_PROCS);
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		setpgid(0, 0);
		if (in < 0 || out < 0)
			_exit(126);
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execv(argv[0], argv);
		dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	procs[nprocs++] = pid;
	return pid;
}

static int
can_connect(int port, const char *unix_path)
{
	int fd, ok;

	if (port > 0) {
		struct sockaddr_in sa;
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	} else {
		struct sockaddr_un su;
		memset(&su, 0, sizeof(su));
		su.sun_family = AF_UNIX;
		snprintf(su.sun_path, sizeof(su.sun_path), "%s", unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		ok = connect(fd, (struct sockaddr *)&su, sizeof(su)) == 0;
	}
	close(fd);
	return ok;
}

void
srv_wait_ready(pid_t pid, int port, const char *unix_path,
	       const char *log_path, double timeout_s)
{
	double end = srv_now() + timeout_s;

	for (;;) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			for (int i = 0; i < nprocs; i++)
				if (procs[i] == pid)
					procs[i] = 0;
			char *log = srv_read(log_path);
			cr_assert_fail("server %d exited (status %d) before it was ready; %s:\n%s",
				       (int)pid, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
				       log_path, log ? log : "(empty)");
		}
		if (can_connect(port, unix_path))
			return;
		if (srv_now() > end) {
			char *log = srv_read(log_path);
			cr_assert_fail("server %d not ready on %s%d after %.0f s; %s:\n%s",
				       (int)pid, port ? "port " : unix_path, port,
				       timeout_s, log_path, log ? log : "(empty)");
		}
		srv_sleep_ms(20);
	}
}

static int
decode(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int
srv_stop(pid_t pid, double timeout_s)
{
	int st = 0;
	double end = srv_now() + timeout_s;

	for (int i = 0; i < nprocs; i++)
		if (procs[i] == pid)
			procs[i] = 0;
	if (kill(pid, SIGTERM) != 0)
		return waitpid(pid, &st, WNOHANG) == pid ? decode(st) : -1;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0)
			return -1;
		if (srv_now() > end) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		srv_sleep_ms(10);
	}
	/* Whatever it left in its process group (it should have stopped its
	 * own children) is not ours to keep. */
	return decode(st);
}

int
srv_reap_orphans(int *statuses, int max, double timeout_s)
{
	double end = srv_now() + timeout_s;
	int n = 0;

	while (n < max) {
		int st;
		pid_t r = waitpid(-1, &st, WNOHANG);
		if (r > 0) {
			statuses[n++] = decode(st);
			continue;
		}
		if (r < 0 || srv_now() > end)
			break;  /* no children left, or time is up */
		srv_sleep_ms(10);
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */

struct sink {
	char *buf;
	size_t len;
};

static size_t
collect(char *p, size_t size, size_t n, void *arg)
{
	struct sink *s = arg;
	size_t len = size * n;

	s->buf = realloc(s->buf, s->len + len + 1);
	memcpy(s->buf + s->len, p, len);
	s->len += len;
	s->buf[s->len] = '\0';
	return len;
}

/* Perform c, whose URL, method and body the caller set, with what every
 * request here shares: never a proxy from the environment, timeout_s,
 * list as the request headers, head and body collected into r.  The
 * status line is the first head's, or with last_head the last one's (past
 * an "HTTP/1.1 100 Continue").  Frees list and c; fails the test when no
 * response arrives (what is method and url, for the message). */
static void
http_perform(CURL *c, struct curl_slist *list, long timeout_s, int last_head,
	     const char *what, const char *url, struct srv_resp *r)
{
	struct sink h = { NULL, 0 }, b = { NULL, 0 };
	char errbuf[CURL_ERROR_SIZE] = "";

	curl_easy_setopt(c, CURLOPT_URL, url);
	/* the path as the test wrote it: libcurl would resolve "." and ".."
	 * itself, and a spelling test would test nothing */
	curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");         /* never a proxy from the environment */
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	CURLcode rc = curl_easy_perform(c);
	curl_slist_free_all(list);
	cr_assert_eq(rc, CURLE_OK, "%s %s: %s", what, url,
		     errbuf[0] ? errbuf : curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(c);
	r->headers = h.buf ? h.buf : strdup("");
	r->body = b.buf ? b.buf : strdup("");
	r->body_len = b.len;
	const char *head = r->headers, *p = r->headers;
	while (last_head && (p = strstr(p, "\r\n\r\nHTTP/")) != NULL) {
		head = p + 4;
		p += 4;
	}
	size_t sl = strcspn(head, "\r\n");
	if (sl >= sizeof(r->status_line))
		sl = sizeof(r->status_line) - 1;
	memcpy(r->status_line, head, sl);
	r->status_line[sl] = '\0';
}

void
srv_http_at(const char *method, const char *base, const char *path,
	    const char *const *hdrs, struct srv_resp *r)
{
	size_t n = strlen(base) + strlen(path) + 1;
	char *url = malloc(n);

	cr_assert_not_null(url);
	snprintf(url, n, "%s%s", base, path);
	srv_http(method, url, hdrs, r);
	free(url);
}

void
srv_http(const char *method, const char *url, const char *const *hdrs,
	 struct srv_resp *r)
{
	CURL *c = curl_easy_init();
	struct curl_slist *list = NULL;

	memset(r, 0, sizeof(*r));
	cr_assert_not_null(c);
	for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++)
		list = curl_slist_append(list, hdrs[i]);
	if (method != NULL && strcmp(method, "POST") == 0) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "a=1&b=2");
	} else if (method != NULL && strcmp(method, "GET") != 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	}
	http_perform(c, list, 10L, 0, method ? method : "GET", url, r);
}

const char *
srv_header(const struct srv_resp *r, const char *name, char *buf, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = r->headers;

	while (p != NULL && *p != '\0') {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t len = strcspn(v, "\r\n");
			while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
				len--;
			snprintf(buf, cap, "%.*s", (int)len, v);
			return buf;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return NULL;
}

int
srv_header_count(const struct srv_resp *r, const char *name)
{
	size_t nl = strlen(name);
	const char *p = r->headers;
	int n = 0;

	while (p != NULL && *p != '\0') {
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':')
			n++;
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return n;
}

void
srv_resp_free(struct srv_resp *r)
{
	free(r->headers);
	free(r->body);
	r->headers = r->body = NULL;
}

/* ------------------------------------------------------------------ */
/* Added for the responder, CGI wrapper, WebSocket and bad-input tests. */

#include <stdint.h>
#include <sys/time.h>

char *
srv_source(const char *rel)
{
	char path[SRV_PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", srv_srcdir(), rel);
	char *s = srv_read(path);
	cr_assert_not_null(s, "cannot read %s", path);
	return s;
}

char *
srv_set_vars(const char *text, const char *const *pairs)
{
	char *cur = strdup(text);

	for (size_t i = 0; pairs[i] != NULL; i += 2) {
		char prefix[128], *line = NULL;
		snprintf(prefix, sizeof(prefix), "var.%s ", pairs[i]);
		cr_assert(asprintf(&line, "var.%s = %s", pairs[i], pairs[i + 1]) > 0);
		char *next = srv_set_line(cur, prefix, line);
		free(line);
		free(cur);
		cur = next;
	}
	return cur;
}

struct body_src {
	const char *p;
	size_t left;
};

static size_t
feed(char *buf, size_t size, size_t n, void *arg)
{
	struct body_src *b = arg;
	size_t k = size * n;

	if (k > b->left)
		k = b->left;
	memcpy(buf, b->p, k);
	b->p += k;
	b->left -= k;
	return k;
}

void
srv_http_body(const char *method, const char *url, const char *const *hdrs,
	      const void *body, size_t len, int chunked, struct srv_resp *r)
{
	CURL *c = curl_easy_init();
	struct curl_slist *list = NULL;
	struct body_src src = { body, len };

	memset(r, 0, sizeof(*r));
	cr_assert_not_null(c);
	for (size_t i = 0; hdrs != NULL && hdrs[i] != NULL; i++)
		list = curl_slist_append(list, hdrs[i]);
	list = curl_slist_append(list, "Expect:");      /* no 100-continue round trip */
	if (chunked)
		list = curl_slist_append(list, "Transfer-Encoding: chunked");
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, feed);
	curl_easy_setopt(c, CURLOPT_READDATA, &src);
	if (!chunked)
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	if (method != NULL && strcmp(method, "POST") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	/* the last head: skip "HTTP/1.1 100 Continue" */
	http_perform(c, list, 20L, 1, method ? method : "POST", url, r);
}

char *
srv_raw(int port, const void *req, size_t len, double timeout_s, size_t *outlen)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	*outlen = 0;
	if (fd < 0)
		return NULL;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return NULL;
	}
	const char *p = req;
	size_t left = len;
	while (left > 0) {
		ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
		if (w <= 0)
			break;  /* the server may answer and close early */
		p += w;
		left -= (size_t)w;
	}
	/* wake up at least every 100 ms to look at the deadline */
	double step = timeout_s < 0.1 ? timeout_s : 0.1;
	struct timeval tv = { 0, (suseconds_t)(step * 1e6) + 1 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char *buf = NULL;
	size_t blen = 0;
	FILE *m = open_memstream(&buf, &blen);
	double end = srv_now() + timeout_s;
	char chunk[65536];
	while (srv_now() < end) {
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n > 0) {
			fwrite(chunk, 1, (size_t)n, m);
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			break;
	}
	fclose(m);
	close(fd);
	*outlen = blen;
	return buf;
}

/* ppid, state and comm of /proc/PID/stat; -1 when gone. */
static int
proc_stat(pid_t pid, int *ppid, char *state, char *comm, size_t cap)
{
	char path[64], buf[1024];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	const char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
	if (lp == NULL || rp == NULL || rp < lp)
		return -1;
	snprintf(comm, cap, "%.*s", (int)(rp - lp - 1), lp + 1);
	if (sscanf(rp + 2, "%c %d", state, ppid) != 2)
		return -1;
	return 0;
}

int
srv_same_program(const char *comm, const char *name)
{
	if (strcmp(comm, name) == 0)
		return 1;
	return wrapper() != NULL && strcmp(name, "rategate") == 0 &&
	       strncmp(comm, "memcheck", 8) == 0;
}

int
srv_children_named(pid_t parent, const char *name, pid_t *pids, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		int pid = atoi(e->d_name), ppid;
		char st, comm[64];
		if (pid <= 1 || proc_stat(pid, &ppid, &st, comm, sizeof(comm)) != 0)
			continue;
		if (ppid != parent || st == 'Z' ||
		    (name != NULL && !srv_same_program(comm, name)))
			continue;
		if (pids != NULL && n < max)
			pids[n] = pid;
		n++;
	}
	closedir(d);
	return n;
}

pid_t
srv_child(pid_t parent, const char *name, double timeout_s)
{
	double end = srv_now() + timeout_s;
	pid_t pid = 0;

	for (;;) {
		if (srv_children_named(parent, name, &pid, 1) > 0)
			return pid;
		if (srv_now() > end)
			return 0;
		srv_sleep_ms(20);
	}
}

int
srv_children(pid_t parent, int *zombies)
{
	DIR *d;
	struct dirent *e;
	int n = 0, z = 0, ppid;
	char st, comm[64];

	if (proc_stat(parent, &ppid, &st, comm, sizeof(comm)) != 0)
		return -1;
	if ((d = opendir("/proc")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		int pid = atoi(e->d_name);
		if (pid <= 1 || proc_stat(pid, &ppid, &st, comm, sizeof(comm)) != 0 ||
		    ppid != parent)
			continue;
		n++;
		z += st == 'Z';
	}
	closedir(d);
	if (zombies != NULL)
		*zombies = z;
	return n;
}

int
srv_count_fds(pid_t pid)
{
	char path[64];
	DIR *d;
	struct dirent *e;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int
srv_alive(pid_t pid)
{
	int ppid;
	char st, comm[64];

	return proc_stat(pid, &ppid, &st, comm, sizeof(comm)) == 0 && st != 'Z';
}

int
srv_wait_file(const char *path, const char *needle, double timeout_s)
{
	double end = srv_now() + timeout_s;

	for (;;) {
		char *s = srv_read(path);
		int found = s != NULL && strstr(s, needle) != NULL;
		free(s);
		if (found)
			return 1;
		if (srv_now() > end)
			return 0;
		srv_sleep_ms(20);
	}
}

void
srv_fnv(const void *p, size_t len, char out[17])
{
	const unsigned char *b = p;
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 1099511628211ULL;
	}
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* ------------------------------------------------------------------ */
/* Added for the nginx and Apache responder tests.                     */

#include <grp.h>
#include <pwd.h>

int
srv_http_parallel(const char *const *urls, int n, long *statuses)
{
	CURLM *m = curl_multi_init();
	CURL *easy[64];
	struct sink bodies[64];
	int running = 0, answered = 0;

	cr_assert(n > 0 && n <= 64, "srv_http_parallel: %d urls", n);
	cr_assert_not_null(m);
	for (int i = 0; i < n; i++) {
		bodies[i].buf = NULL;
		bodies[i].len = 0;
		statuses[i] = 0;
		easy[i] = curl_easy_init();
		cr_assert_not_null(easy[i]);
		curl_easy_setopt(easy[i], CURLOPT_URL, urls[i]);
		curl_easy_setopt(easy[i], CURLOPT_PROXY, "");
		curl_easy_setopt(easy[i], CURLOPT_NOPROXY, "*");
		curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 20L);
		curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, collect);
		curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &bodies[i]);
		curl_multi_add_handle(m, easy[i]);
	}
	do {
		if (curl_multi_perform(m, &running) != CURLM_OK)
			break;
		if (running > 0)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	} while (running > 0);
	for (int i = 0; i < n; i++) {
		curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &statuses[i]);
		answered += statuses[i] != 0;
		curl_multi_remove_handle(m, easy[i]);
		curl_easy_cleanup(easy[i]);
		free(bodies[i].buf);
	}
	curl_multi_cleanup(m);
	return answered;
}

void
srv_www_data(uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam("www-data");

	cr_assert_not_null(pw, "no user www-data (the web servers' workers run as www-data)");
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
}

void
srv_chown_www(const char *path)
{
	uid_t uid;
	gid_t gid;

	srv_www_data(&uid, &gid);
	cr_assert_eq(chown(path, uid, gid), 0, "chown www-data %s: %s", path,
		     strerror(errno));
}

int
srv_stop_tree(pid_t server, double timeout_s)
{
	pid_t kids[64];
	int n = srv_children_named(server, NULL, kids, 64), killed = 0;

	if (n > 64)
		n = 64;
	srv_stop(server, timeout_s);
	double end = srv_now() + timeout_s;
	for (int i = 0; i < n; i++) {
		int st;
		for (;;) {
			waitpid(kids[i], &st, WNOHANG);    /* ours once reparented */
			if (!srv_alive(kids[i]))
				break;
			if (srv_now() > end) {
				kill(kids[i], SIGKILL);
				waitpid(kids[i], &st, 0);
				killed++;
				break;
			}
			srv_sleep_ms(10);
		}
	}
	return killed;
}

/* ------------------------------------------------------------------ */
/* Set-up and checks that several test files share.                    */

void
srv_built(const char *rel, char out[SRV_PATH_MAX])
{
	char path[SRV_PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", srv_builddir(), rel);
	cr_assert_not_null(realpath(path, out), "%s is not built (make check builds it)", path);
}

pid_t
srv_start_echo_fcgi(int port, const char *sock, int threads, const char *count_file)
{
	char bin[SRV_PATH_MAX], addr[SRV_PATH_MAX], nthreads[16];

	srv_built("tests/apps/echo_fcgi", bin);
	if (port > 0) {
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	} else {
		snprintf(addr, sizeof(addr), "%s", sock);
		/* a restarted app finds its predecessor's socket file */
		unlink(sock);
	}
	snprintf(nthreads, sizeof(nthreads), "%d", threads);
	/* echo_fcgi rewrites this file with its call counter. */
	if (count_file != NULL)
		setenv("ECHO_FCGI_COUNT_FILE", count_file, 1);
	char *argv[] = { bin, "-t", nthreads, addr, NULL };
	pid_t pid = srv_spawn(argv, srv_path("app.out"));
	srv_wait_ready(pid, port, port > 0 ? NULL : sock, srv_path("app.out"), 10);
	return pid;
}

int
srv_read_int(const char *path)
{
	char *s = srv_read(path);
	int n = s ? atoi(s) : 0;

	free(s);
	return n;
}

pid_t
srv_start_rategate(const char *rules, const char *listen, int workers,
		   const char *log, const char *out)
{
	char nworkers[16];
	char *argv[10];
	int n = 0;

	argv[n++] = (char *)srv_rategate();
	argv[n++] = "-c";
	argv[n++] = (char *)rules;
	argv[n++] = "-l";
	argv[n++] = (char *)listen;
	if (workers > 0) {
		snprintf(nworkers, sizeof(nworkers), "%d", workers);
		argv[n++] = "-j";
		argv[n++] = nworkers;
	}
	argv[n++] = "-L";
	argv[n++] = (char *)log;
	argv[n] = NULL;
	pid_t pid = srv_spawn(argv, out);
	/* "unix:PATH" or a PATH is a unix socket, anything else HOST:PORT */
	if (strncmp(listen, "unix:", 5) == 0)
		srv_wait_ready(pid, 0, listen + 5, out, 10);
	else if (strchr(listen, '/') != NULL)
		srv_wait_ready(pid, 0, listen, out, 10);
	else
		srv_wait_ready(pid, atoi(strrchr(listen, ':') + 1), NULL, out, 10);
	return pid;
}

char *
srv_lighttpd_conf(const char *example, const char *rules_rel, int port, int max_procs)
{
	char rel[128], v[5][SRV_PATH_MAX + 8], line[64];

	snprintf(v[0], sizeof(v[0]), "\"%s\"", srv_rategate());
	snprintf(v[1], sizeof(v[1]), "\"%s\"", srv_path(rules_rel));
	snprintf(v[2], sizeof(v[2]), "\"%s\"", srv_dir);
	snprintf(v[3], sizeof(v[3]), "\"%s\"", srv_path("docroot"));
	snprintf(v[4], sizeof(v[4]), "%d", port);
	const char *vars[] = { "rategate", v[0], "rategate_rules", v[1],
			       "state_dir", v[2], "docroot", v[3], "port", v[4], NULL };
	snprintf(rel, sizeof(rel), "examples/%s", example);
	char *tmpl = srv_source(rel);
	char *conf = srv_set_vars(tmpl, vars);
	free(tmpl);
	if (max_procs > 0) {
		snprintf(line, sizeof(line), "      \"max-procs\"   => %d,", max_procs);
		char *next = srv_set_line(conf, "      \"max-procs\"", line);
		free(conf);
		conf = next;
	}
	return conf;
}

pid_t
srv_start_lighttpd(const char *conf, int port)
{
	srv_write("lighttpd.conf", conf, 0644);
	char *argv[] = { (char *)srv_need("lighttpd", "lighttpd"), "-D", "-f",
			 (char *)srv_path("lighttpd.conf"), NULL };
	pid_t pid = srv_spawn(argv, srv_path("lighttpd.out"));
	srv_wait_ready(pid, port, NULL, srv_path("lighttpd.out"), 10);
	return pid;
}

pid_t
srv_start_apache(const char *example, const char *const *defines, int port)
{
	char rel[128], prefix[64], line[SRV_PATH_MAX + 64];

	snprintf(rel, sizeof(rel), "examples/%s", example);
	char *conf = srv_source(rel);
	for (size_t i = 0; defines[i] != NULL; i += 2) {
		snprintf(prefix, sizeof(prefix), "Define %s ", defines[i]);
		snprintf(line, sizeof(line), "Define %s %s", defines[i], defines[i + 1]);
		char *next = srv_set_line(conf, prefix, line);
		free(conf);
		conf = next;
	}
	srv_write("apache.conf", conf, 0644);
	free(conf);
	char *argv[] = { (char *)srv_need("apache2", "apache2"), "-f",
			 (char *)srv_path("apache.conf"), "-DFOREGROUND", NULL };
	pid_t pid = srv_spawn(argv, srv_path("apache.out"));
	srv_wait_ready(pid, port, NULL, srv_path("apache.out"), 15);
	return pid;
}

char *
srv_subst_some(const char *text, const char *const *pairs)
{
	const char *some[32];
	size_t n = 0;

	for (size_t i = 0; pairs[i] != NULL; i += 2)
		if (strstr(text, pairs[i]) != NULL) {
			cr_assert_lt(n, sizeof(some) / sizeof(some[0]) - 2);
			some[n++] = pairs[i];
			some[n++] = pairs[i + 1];
		}
	some[n] = NULL;
	return n ? srv_subst(text, some) : strdup(text);
}

void
srv_write_subst(const char *rel, const char *text, const char *const *pairs, int mode)
{
	char *s = srv_subst(text, pairs);

	srv_write(rel, s, mode);
	free(s);
}

char *
srv_read_text(const char *path)
{
	char *s = srv_read(path);

	return s ? s : strdup("");
}

int
srv_count_in_file(const char *path, const char *needle)
{
	char *s = srv_read(path);
	int n = 0;

	for (const char *p = s; p != NULL && (p = strstr(p, needle)) != NULL;
	     p += strlen(needle))
		n++;
	free(s);
	return n;
}

void
srv_expect_in_file(const char *path, const char *needle)
{
	char *s = srv_read(path);

	cr_assert_not_null(s, "cannot read %s", path);
	cr_expect_not_null(strstr(s, needle), "%s", s);
	free(s);
}

void
srv_expect_no_sanitizer(const char *path)
{
	char *s = srv_read(path);

	cr_expect(s == NULL || strstr(s, "Sanitizer") == NULL, "%s:\n%s", path, s);
	cr_expect(s == NULL || strstr(s, "runtime error") == NULL, "%s:\n%s", path, s);
	free(s);
}

const char *
srv_logs(const char *const *pairs)
{
	static char *s;
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);

	for (size_t i = 0; pairs[i] != NULL; i += 2) {
		char *t = srv_read(srv_path(pairs[i + 1]));
		if (pairs[i][0] != '\0')
			fprintf(m, "--- %s:\n", pairs[i]);
		fputs(t ? t : "", m);
		free(t);
	}
	fclose(m);
	free(s);
	s = out;
	return s ? s : "";
}

const char *
srv_field(const char *body, const char *name, char *buf, size_t cap)
{
	char key[64];
	size_t kl = (size_t)snprintf(key, sizeof(key), "%s=", name);

	buf[0] = '\0';
	for (const char *p = body; p != NULL && *p != '\0';) {
		if (strncmp(p, key, kl) == 0) {
			snprintf(buf, cap, "%.*s", (int)strcspn(p + kl, "\n"), p + kl);
			break;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return buf;
}

void
srv_expect_field(const struct srv_resp *r, const char *name, const char *want)
{
	char v[SRV_PATH_MAX];

	cr_expect_str_eq(srv_field(r->body, name, v, sizeof(v)), want, "%s in:\n%s", name,
			 r->body);
}

void
srv_expect_line(const struct srv_resp *r, const char *line)
{
	cr_expect_not_null(strstr(r->body, line), "no \"%s\" in:\n%s", line, r->body);
}

char *
srv_noise(size_t n, int shift)
{
	char *b = malloc(n);
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	cr_assert_not_null(b);
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[i] = (char)(x >> shift);
	}
	return b;
}

void
srv_expect_upload(const char *base, const char *method, const char *path, size_t len,
		  int chunked, int chunked_length, const char *(*logs)(void))
{
	char *body = srv_noise(len, 56);
	char fnv[17], line[64], url[SRV_PATH_MAX];
	const char *hdrs[] = { "X-Test: upload", NULL };
	struct srv_resp r;

	srv_fnv(body, len, fnv);
	snprintf(url, sizeof(url), "%s%s", base, path);
	srv_http_body(method, url, hdrs, body, len, chunked, &r);
	free(body);
	cr_assert_eq(r.status, 200, "%s %s (%zu bytes%s): %s\n%s\n%s", method, path,
		     len, chunked ? ", chunked" : "", r.status_line, r.body, logs ? logs() : "");
	snprintf(line, sizeof(line), "method=%s\n", method);
	srv_expect_line(&r, line);
	snprintf(line, sizeof(line), "body_len=%zu\n", len);
	srv_expect_line(&r, line);
	snprintf(line, sizeof(line), "body_fnv=%s\n", fnv);
	srv_expect_line(&r, line);
	if (chunked && !chunked_length)
		srv_expect_line(&r, "content_length=(unset)\n");
	else {
		snprintf(line, sizeof(line), "content_length=%zu\n", len);
		srv_expect_line(&r, line);
	}
	srv_expect_line(&r, "http_x_test=upload\n");
	srv_resp_free(&r);
}

void
srv_expect_429(const struct srv_resp *r, const char *limit, const char *body,
	       const char *(*logs)(void))
{
	char v[256];

	cr_assert_str_eq(r->status_line, "HTTP/1.1 429 Too Many Requests", "%s\n%s",
			 r->body, logs ? logs() : "");
	cr_assert_not_null(srv_header(r, "Retry-After", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
	cr_expect_str_eq(srv_header(r, "X-RateLimit-Limit", v, sizeof(v)), limit);
	cr_expect_str_eq(srv_header(r, "X-RateLimit-Remaining", v, sizeof(v)), "0");
	cr_assert_not_null(srv_header(r, "X-RateLimit-Reset", v, sizeof(v)));
	cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "X-RateLimit-Reset %s", v);
	cr_expect_str_eq(srv_header(r, "Cache-Control", v, sizeof(v)), "no-store");
	cr_expect_str_eq(srv_header(r, "Content-Type", v, sizeof(v)),
			 "text/plain; charset=utf-8");
	cr_expect_str_eq(r->body, body);
}

int
srv_wait_no_children(pid_t parent, int *zombies, double timeout_s)
{
	double end = srv_now() + timeout_s;
	int n;

	while ((n = srv_children(parent, zombies)) != 0 && srv_now() < end)
		srv_sleep_ms(20);
	return n;
}

void
srv_stop_spawner(pid_t server, const char *log_path)
{
	/* A rategate stopped before it has started (slow under valgrind, and
	 * never asked in some tests) would die without a stop line. */
	srv_wait_file(log_path, "level=info event=start", 5 * srv_slow());
	int killed = srv_stop_tree(server, 15);
	/* Once seen: the log read 0.02 s after the processes were gone
	 * lacked the stop line.  The line must still come, but a process the
	 * walk of /proc did not see as lighttpd's child is given time. */
	srv_wait_file(log_path, "level=info event=stop msg=stopped", 5 * srv_slow());
	char *log = srv_read(log_path);

	cr_assert_not_null(log);
	cr_expect_eq(killed, 0, "rategate did not stop with its server\n%s", log);
	cr_expect_not_null(strstr(log, "level=info event=stop msg=stopped"), "%s", log);
	cr_expect_null(strstr(log, "Sanitizer"), "%s", log);
	cr_expect_null(strstr(log, "runtime error"), "%s", log);
	free(log);
}

long
srv_status(const char *url)
{
	CURL *c = curl_easy_init();
	long status = -1;

	if (c == NULL)
		return -1;
	FILE *devnull = fopen("/dev/null", "w");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fwrite);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (devnull != NULL)
		fclose(devnull);
	return status;
}
