/*
 * echo_cgi.c - a CGI/1.1 program for the tests of gateway/cgi.c.  What it
 * does is chosen by QUERY_STRING, '&'-separated words:
 *
 *   (default)        read the whole body (CONTENT_LENGTH bytes, or to EOF
 *                    without it), then answer text/plain with one
 *                    "name=value" line each: method, query, the variables
 *                    the tests look at, cwd, argv0, argc, body_len and
 *                    body_fnv (64-bit FNV-1a of the body, 16 hex digits);
 *                    with HTTP_X_DONE_FILE set, write "LEN FNV\n" into
 *                    that file once the body is read (so a test can tell
 *                    the script was killed before)
 *   status=N         add "Status: N" to the default answer
 *   exit=N           exit N after the default answer
 *   location=URL     answer with a Location header only
 *   crash            raise SIGSEGV before writing anything
 *   crash-after-head write the head and a little body, then SIGSEGV
 *   hang             sleep forever before writing anything; with
 *                    HTTP_X_PID_FILE set, first start a child that sleeps
 *                    too and write "SCRIPT_PID CHILD_PID\n" into that file
 *   hang-after-head  write the head and a little body, then sleep forever
 *   closeout=MS      write the head and "bye\n", close stdout, then go on
 *                    for MS milliseconds and exit 0 (HTTP_X_PID_FILE gets
 *                    "SCRIPT_PID 0")
 *   background       first start a child that keeps stdout open and sleeps
 *                    forever (HTTP_X_PID_FILE as for hang), then go on:
 *                    the default answer and exit 0 (or exit=N);
 *                    background=nohead: exit 0 without writing anything
 *   garbage          write something that is not a CGI head
 *   early            write the head and bigout bytes (default 1 MiB) of
 *                    body before reading anything; never read stdin
 *   early-echo       like early, then read the whole body and append
 *                    "\nbody_len=N\nbody_fnv=H\n"
 *   bigout=N         head, then N bytes of body: byte i is 'a' + i % 26
 *   fds              list the open fds: "fds=0,1,2"
 *   signals          "blocked=N" (signals blocked) and "sigpipe=default" or
 *                    "sigpipe=ignored"
 *   close-stdin      close stdin at once, then the default answer
 *   answer-first     write a complete answer and close stdout, then read
 *                    the body (and write HTTP_X_DONE_FILE)
 *
 * Built for the tests only (check_PROGRAMS); not instrumented by the
 * sanitizers, so that its signals and exit statuses are its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void
out(const char *s, size_t len)
{
	while (len > 0) {
		ssize_t w = write(1, s, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			_exit(4);
		}
		s += w;
		len -= (size_t)w;
	}
}

static void
outs(const char *s)
{
	out(s, strlen(s));
}

static void
line(const char *name, const char *value)
{
	outs(name);
	outs("=");
	outs(value ? value : "(unset)");
	outs("\n");
}

/* QUERY_STRING has the word w, alone or as "w=..."; *val gets what follows
 * '='. */
static int
has(const char *q, const char *w, const char **val)
{
	size_t wl = strlen(w);
	const char *p = q;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= wl && strncmp(p, w, wl) == 0 &&
		    (len == wl || p[wl] == '=')) {
			if (val != NULL)
				*val = len == wl ? "" : p + wl + 1;
			return 1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

static void
crash(void)
{
	signal(SIGSEGV, SIG_DFL);
	raise(SIGSEGV);
	_exit(5);
}

static void
hang(void)
{
	for (;;)
		pause();
}

/* A child that sleeps forever (holding our stdout, as every child does),
 * and "SCRIPT_PID CHILD_PID\n" in the file HTTP_X_PID_FILE names, if any. */
static void
sleeping_child(void)
{
	pid_t child = fork();

	if (child == 0)
		hang();
	const char *pf = getenv("HTTP_X_PID_FILE");
	FILE *f = pf != NULL ? fopen(pf, "w") : NULL;
	if (f != NULL) {
		fprintf(f, "%ld %ld\n", (long)getpid(), (long)child);
		fclose(f);
	}
}

struct body {
	uint64_t len;
	uint64_t fnv;
};

static struct body
read_body(void)
{
	struct body b = { 0, 14695981039346656037ULL };
	const char *cl = getenv("CONTENT_LENGTH");
	int64_t want = cl && *cl ? strtoll(cl, NULL, 10) : -1;
	char buf[65536];

	while (want < 0 || (int64_t)b.len < want) {
		size_t cap = sizeof(buf);
		if (want >= 0 && (uint64_t)(want - (int64_t)b.len) < cap)
			cap = (size_t)(want - (int64_t)b.len);
		ssize_t n = read(0, buf, cap);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			b.fnv ^= (unsigned char)buf[i];
			b.fnv *= 1099511628211ULL;
		}
		b.len += (uint64_t)n;
	}
	return b;
}

static void
body_lines(struct body b)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)b.len);
	line("body_len", tmp);
	snprintf(tmp, sizeof(tmp), "%016llx", (unsigned long long)b.fnv);
	line("body_fnv", tmp);
}

static void
pattern(uint64_t n)
{
	char buf[26 * 1024];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	while (n > 0) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		out(buf, k);
		n -= k;
	}
}

int
main(int argc, char **argv)
{
	const char *q = getenv("QUERY_STRING");
	const char *v;
	char tmp[64];

	if (q == NULL)
		q = "";
	if (has(q, "crash", NULL))
		crash();
	if (has(q, "hang", NULL)) {
		if (getenv("HTTP_X_PID_FILE") != NULL)
			sleeping_child();
		hang();
	}
	if (has(q, "closeout", &v)) {
		/* answer, close the output, then go on for v ms (the pid
		 * file gets "SCRIPT_PID 0") */
		const char *pf = getenv("HTTP_X_PID_FILE");
		if (pf != NULL) {
			FILE *f = fopen(pf, "w");
			if (f != NULL) {
				fprintf(f, "%ld 0\n", (long)getpid());
				fclose(f);
			}
		}
		outs("Content-Type: text/plain\r\n\r\nbye\n");
		close(1);
		long ms = atol(v);
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		return 0;
	}
	if (has(q, "background", &v)) {
		sleeping_child();
		if (strcmp(v, "nohead") == 0)
			return 0;
	}
	if (has(q, "garbage", NULL)) {
		outs("this is not a CGI head\n\n");
		return 0;
	}
	if (has(q, "location", &v)) {
		outs("Location: ");
		outs(v);
		outs("\r\n\r\n");
		return 0;
	}
	if (has(q, "crash-after-head", NULL) || has(q, "hang-after-head", NULL)) {
		outs("Content-Type: text/plain\r\n\r\npartial\n");
		if (has(q, "crash-after-head", NULL))
			crash();
		hang();
	}
	if (has(q, "early", NULL) || has(q, "early-echo", NULL)) {
		uint64_t n = 1u << 20;
		if (has(q, "bigout", &v))
			n = strtoull(v, NULL, 10);
		outs("Content-Type: application/octet-stream\r\n\r\n");
		pattern(n);
		if (has(q, "early-echo", NULL)) {
			outs("\n");
			body_lines(read_body());
		}
		return 0;
	}
	if (has(q, "bigout", &v)) {
		outs("Content-Type: application/octet-stream\r\n\r\n");
		pattern(strtoull(v, NULL, 10));
		return 0;
	}
	if (has(q, "fds", NULL)) {
		outs("Content-Type: text/plain\r\n\r\nfds=");
		long max = sysconf(_SC_OPEN_MAX);
		int first = 1;
		if (max < 0 || max > 65536)
			max = 65536;
		for (int fd = 0; fd < max; fd++) {
			if (fcntl(fd, F_GETFD) < 0)
				continue;
			snprintf(tmp, sizeof(tmp), "%s%d", first ? "" : ",", fd);
			outs(tmp);
			first = 0;
		}
		outs("\n");
		return 0;
	}
	if (has(q, "signals", NULL)) {
		sigset_t cur;
		struct sigaction sa;
		int blocked = 0;
		sigprocmask(SIG_BLOCK, NULL, &cur);
		for (int s = 1; s < NSIG; s++)
			if (sigismember(&cur, s) == 1)
				blocked++;
		sigaction(SIGPIPE, NULL, &sa);
		outs("Content-Type: text/plain\r\n\r\n");
		snprintf(tmp, sizeof(tmp), "%d", blocked);
		line("blocked", tmp);
		line("sigpipe", sa.sa_handler == SIG_IGN ? "ignored" : "default");
		return 0;
	}
	if (has(q, "close-stdin", NULL))
		close(0);
	if (has(q, "answer-first", NULL)) {
		outs("Content-Type: text/plain\r\n\r\naccepted\n");
		close(1);
	}

	struct body b = read_body();
	const char *done = getenv("HTTP_X_DONE_FILE");
	if (done != NULL) {
		FILE *f = fopen(done, "w");
		if (f != NULL) {
			fprintf(f, "%llu %016llx\n", (unsigned long long)b.len,
				(unsigned long long)b.fnv);
			fclose(f);
		}
	}
	if (has(q, "answer-first", NULL))
		return 0;
	if (has(q, "status", &v)) {
		outs("Status: ");
		outs(v);
		outs("\r\n");
	}
	outs("Content-Type: text/plain\r\n\r\n");
	line("method", getenv("REQUEST_METHOD"));
	line("query", q);
	line("http_x_test", getenv("HTTP_X_TEST"));
	line("content_length", getenv("CONTENT_LENGTH"));
	line("gateway_interface", getenv("GATEWAY_INTERFACE"));
	line("script_filename", getenv("SCRIPT_FILENAME"));
	line("rl_client", getenv("RL_CLIENT"));
	line("http_proxy", getenv("HTTP_PROXY") ? "present" : "absent");
	line("path", getenv("PATH"));
	line("dup", getenv("DUP"));
	line("bad_name", getenv("BAD-NAME") ? "present" : "absent");
	char *cwd = getcwd(NULL, 0);
	line("cwd", cwd);
	free(cwd);
	line("argv0", argv[0]);
	snprintf(tmp, sizeof(tmp), "%d", argc);
	line("argc", tmp);
	body_lines(b);
	if (has(q, "exit", &v))
		return atoi(v);
	return 0;
}
