/*
 * echo_fcgi.c - a FastCGI responder (libfcgi) for the tests of
 * gateway/upstream.c and for the integration tests that put it behind
 * rategate and a web server.
 *
 *   echo_fcgi [-t THREADS] [SOCKET]
 *
 * SOCKET is "HOST:PORT", ":PORT" (every address) or a unix socket path
 * (an old socket file there is replaced); without it the program serves
 * the listening socket it inherited as fd 0, the way lighttpd, Apache
 * mod_fcgid and spawn-fcgi start FastCGI programs.  THREADS workers
 * (default 4) accept at once; like every libfcgi program, a worker stays
 * with a connection kept open (FCGI_KEEP_CONN) until the server closes it,
 * so a server must not keep more connections than there are workers.  SIGPIPE is ignored: a client that went
 * away costs a request, not the process.  With ECHO_FCGI_COUNT_FILE set in
 * its environment the program rewrites that file with the call counter
 * after each counted request.
 *
 * What a request does is chosen by QUERY_STRING, '&'-separated words (the
 * same words as echo_cgi where they overlap):
 *
 *   (default)        read the whole body, then answer text/plain with one
 *                    "name=value" line each: method, query, uri,
 *                    script_name, http_x_test, content_length, rl_client,
 *                    http_proxy ("present"/"absent"), calls (this request
 *                    included), pid, body_len and body_fnv (64-bit FNV-1a of
 *                    the body, 16 hex digits)
 *   status=N         add "Status: N" to the default answer (%XX and '+'
 *                    decoded: status=299+Custom+Reason)
 *   header=NAME:VAL  add the header line "NAME: VAL" to the default answer
 *                    (decoded the same way)
 *   env              the default answer, then every param as
 *                    "env NAME=VALUE", in the order they came
 *   stderr           write "echo_fcgi stderr line" to FCGI_STDERR first
 *   sleep=MS         wait MS milliseconds before answering
 *   count            answer "calls=N" only: requests counted so far, this
 *                    one not included (count requests are never counted, so
 *                    a test can ask how many requests reached the app)
 *   crash            abort() once the params are read (no core file)
 *   crash-after-head write the head and "partial\n", flush, abort()
 *   trickle=MS       write the head and "tick 0\n", flush, wait MS
 *                    milliseconds, write "tick 1\n" and end (a stream:
 *                    server-sent events, progress output)
 *   garbage          write bytes that are not FastCGI records straight onto
 *                    the connection, then shut it down
 *   badhead          answer a malformed CGI head through FCGI_STDOUT
 *   close            shut the connection down without answering (no
 *                    FCGI_END_REQUEST)
 *   nokeep           the default answer, then close the connection after
 *                    FCGI_END_REQUEST although the server asked to keep it
 *   bigout=N         head, then N bytes of body: byte i is 'a' + i % 26
 *   early            head and bigout bytes (default 1 MiB) before reading
 *                    anything; never read the body
 *   early-echo       like early, then read the whole body and append
 *                    "\nbody_len=N\nbody_fnv=H\n"
 *
 * Built for the tests only (check_PROGRAMS), without the sanitizers.
 */
#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int listen_fd;
static atomic_ulong calls;
static pthread_mutex_t file_mu = PTHREAD_MUTEX_INITIALIZER;

/* QUERY_STRING has the word w, alone or as "w=..."; *val gets what follows
 * '=' (up to the next '&'; *vlen its length). */
static int
has(const char *q, const char *w, const char **val, size_t *vlen)
{
	size_t wl = strlen(w);
	const char *p = q;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= wl && strncmp(p, w, wl) == 0 &&
		    (len == wl || p[wl] == '=')) {
			if (val != NULL) {
				*val = len == wl ? "" : p + wl + 1;
				*vlen = len == wl ? 0 : len - wl - 1;
			}
			return 1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

static unsigned long long
num(const char *q, const char *w, unsigned long long dflt)
{
	const char *v;
	size_t vl;

	if (!has(q, w, &v, &vl) || vl == 0)
		return dflt;
	return strtoull(v, NULL, 10);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* v[0..vl) with %XX and '+' decoded into buf (cut to cap - 1 bytes). */
static const char *
decode(const char *v, size_t vl, char *buf, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < vl && o + 1 < cap; i++) {
		int hi, lo;
		if (v[i] == '+') {
			buf[o++] = ' ';
		} else if (v[i] == '%' && i + 2 < vl && (hi = hexval(v[i + 1])) >= 0 &&
			   (lo = hexval(v[i + 2])) >= 0) {
			buf[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else {
			buf[o++] = v[i];
		}
	}
	buf[o] = '\0';
	return buf;
}

static void
line(FCGX_Stream *out, const char *name, const char *value)
{
	FCGX_FPrintF(out, "%s=%s\n", name, value ? value : "(unset)");
}

struct body {
	unsigned long long len;
	uint64_t fnv;
};

static struct body
read_body(FCGX_Stream *in)
{
	struct body b = { 0, 14695981039346656037ULL };
	char buf[65536];
	int n;

	while ((n = FCGX_GetStr(buf, sizeof(buf), in)) > 0) {
		for (int i = 0; i < n; i++) {
			b.fnv ^= (unsigned char)buf[i];
			b.fnv *= 1099511628211ULL;
		}
		b.len += (unsigned long long)n;
	}
	return b;
}

static void
body_lines(FCGX_Stream *out, struct body b)
{
	FCGX_FPrintF(out, "body_len=%llu\nbody_fnv=%016llx\n", b.len,
		     (unsigned long long)b.fnv);
}

static void
pattern(FCGX_Stream *out, unsigned long long n)
{
	char buf[26 * 1024];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)('a' + i % 26);
	while (n > 0) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		if (FCGX_PutStr(buf, (int)k, out) < 0)
			return;
		n -= k;
	}
}

static void
crash(void)
{
	struct rlimit no = { 0, 0 };

	setrlimit(RLIMIT_CORE, &no);
	abort();
}

/* Writes the counter as it is now, read under the lock: two threads that
 * counted at once must not write their own numbers in the wrong order
 * (the later write holding the smaller count), which a test read as a
 * request that never reached the application. */
static void
write_count(void)
{
	const char *path = getenv("ECHO_FCGI_COUNT_FILE");
	char tmp[32];

	if (path == NULL || *path == '\0')
		return;
	pthread_mutex_lock(&file_mu);
	int len = snprintf(tmp, sizeof(tmp), "%lu\n", atomic_load(&calls));
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write(fd, tmp, (size_t)len) < 0) {
			/* nothing to do: the file is a convenience */
		}
		close(fd);
	}
	pthread_mutex_unlock(&file_mu);
}

static void
serve(FCGX_Request *r)
{
	const char *q = FCGX_GetParam("QUERY_STRING", r->envp);
	const char *v;
	size_t vl;

	if (q == NULL)
		q = "";
	if (has(q, "count", NULL, NULL)) {
		FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\ncalls=%lu\n",
			     atomic_load(&calls));
		return;
	}
	unsigned long n = atomic_fetch_add(&calls, 1) + 1;
	write_count();
	if (has(q, "stderr", NULL, NULL))
		FCGX_FPrintF(r->err, "echo_fcgi stderr line\n");
	unsigned long long ms = num(q, "sleep", 0);
	if (ms > 0) {
		struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	if (has(q, "crash", NULL, NULL))
		crash();
	if (has(q, "garbage", NULL, NULL)) {
		static const char junk[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nnot FastCGI\n";
		if (write(r->ipcFd, junk, sizeof(junk) - 1) < 0) {
			/* the test sees the close instead */
		}
		shutdown(r->ipcFd, SHUT_RDWR);
		return;
	}
	if (has(q, "close", NULL, NULL)) {
		shutdown(r->ipcFd, SHUT_RDWR);
		return;
	}
	if (has(q, "badhead", NULL, NULL)) {
		FCGX_FPrintF(r->out, "this is not a CGI head\n\n");
		return;
	}
	unsigned long long tms = num(q, "trickle", 0);
	if (tms > 0) {
		FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\ntick 0\n");
		FCGX_FFlush(r->out);
		struct timespec ts = { (time_t)(tms / 1000), (long)(tms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		FCGX_FPrintF(r->out, "tick 1\n");
		return;
	}
	if (has(q, "crash-after-head", NULL, NULL)) {
		FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\npartial\n");
		FCGX_FFlush(r->out);
		crash();
	}
	if (has(q, "early", NULL, NULL) || has(q, "early-echo", NULL, NULL)) {
		FCGX_FPrintF(r->out, "Content-Type: application/octet-stream\r\n\r\n");
		pattern(r->out, num(q, "bigout", 1u << 20));
		if (has(q, "early-echo", NULL, NULL)) {
			FCGX_FPrintF(r->out, "\n");
			body_lines(r->out, read_body(r->in));
		}
		return;
	}
	if (has(q, "bigout", NULL, NULL)) {
		FCGX_FPrintF(r->out, "Content-Type: application/octet-stream\r\n\r\n");
		pattern(r->out, num(q, "bigout", 0));
		return;
	}

	struct body b = read_body(r->in);
	char dec[512];
	if (has(q, "status", &v, &vl))
		FCGX_FPrintF(r->out, "Status: %s\r\n", decode(v, vl, dec, sizeof(dec)));
	if (has(q, "header", &v, &vl)) {
		decode(v, vl, dec, sizeof(dec));
		char *colon = strchr(dec, ':');
		if (colon != NULL) {
			*colon = '\0';
			FCGX_FPrintF(r->out, "%s: %s\r\n", dec, colon + 1);
		}
	}
	FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\n");
	line(r->out, "method", FCGX_GetParam("REQUEST_METHOD", r->envp));
	line(r->out, "query", q);
	line(r->out, "uri", FCGX_GetParam("REQUEST_URI", r->envp));
	line(r->out, "script_name", FCGX_GetParam("SCRIPT_NAME", r->envp));
	line(r->out, "http_x_test", FCGX_GetParam("HTTP_X_TEST", r->envp));
	line(r->out, "content_length", FCGX_GetParam("CONTENT_LENGTH", r->envp));
	line(r->out, "rl_client", FCGX_GetParam("RL_CLIENT", r->envp));
	line(r->out, "http_proxy",
	     FCGX_GetParam("HTTP_PROXY", r->envp) ? "present" : "absent");
	FCGX_FPrintF(r->out, "calls=%lu\npid=%ld\n", n, (long)getpid());
	body_lines(r->out, b);
	if (has(q, "env", NULL, NULL))
		for (char **e = r->envp; *e != NULL; e++)
			FCGX_FPrintF(r->out, "env %s\n", *e);
	if (has(q, "nokeep", NULL, NULL))
		r->keepConnection = 0;  /* libfcgi closes after END_REQUEST */
}

static void *
worker(void *arg)
{
	FCGX_Request r;

	(void)arg;
	if (FCGX_InitRequest(&r, listen_fd, 0) != 0)
		return NULL;
	/* No lock around FCGX_Accept_r (libfcgi's threaded example has one):
	 * on a kept connection it waits for the next request on that
	 * connection, and holding a lock there would stop every other worker;
	 * concurrent accept() is fine on Linux. */
	for (;;) {
		if (FCGX_Accept_r(&r) < 0)
			break;
		serve(&r);
		FCGX_Finish_r(&r);
	}
	FCGX_Free(&r, 1);
	return NULL;
}

int
main(int argc, char **argv)
{
	int threads = 4, opt;

	while ((opt = getopt(argc, argv, "t:")) != -1) {
		if (opt == 't' && atoi(optarg) > 0 && atoi(optarg) <= 256) {
			threads = atoi(optarg);
			continue;
		}
		fprintf(stderr, "usage: echo_fcgi [-t THREADS] [HOST:PORT | :PORT | SOCKET_PATH]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (FCGX_Init() != 0) {
		fprintf(stderr, "echo_fcgi: FCGX_Init failed\n");
		return 1;
	}
	/* libfcgi's SIGTERM handler only sets a flag that a worker blocked in
	 * accept() never sees: let SIGTERM stop the program. */
	signal(SIGTERM, SIG_DFL);
	if (optind < argc) {
		const char *path = argv[optind];
		struct stat st;
		if (strchr(path, ':') == NULL && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path);
		listen_fd = FCGX_OpenSocket(path, 128);
		if (listen_fd < 0) {
			fprintf(stderr, "echo_fcgi: cannot listen on %s\n", path);
			return 1;
		}
	}
	pthread_t *tids = calloc((size_t)threads, sizeof(*tids));
	if (tids == NULL)
		return 1;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "echo_fcgi: cannot start a thread\n");
			return 1;
		}
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	return 0;
}
