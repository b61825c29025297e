/*
 * fuzz_upstream.c - libFuzzer target for what gateway/upstream.c reads from
 * a FastCGI application: the record stream (headers, STDOUT, STDERR,
 * END_REQUEST, padding, records cut anywhere) and the CGI head inside it.
 * A thread plays the application on a unix socket: it reads one request
 * (up to its empty FCGI_STDIN record) and answers with the fuzz input as
 * it is, then closes the connection.  upstream_run (no idle connections
 * kept) proxies a GET with no body to an in-memory client.
 *
 * Checks: upstream_run returns 0 (this client never goes away); the client
 * always gets a head (the application's, or our 502) that starts with
 * "Status: ", is made of "Name: value" lines ending in CRLF without any
 * other CR, LF or NUL, and ends with an empty line; the status is
 * 200..599; and no socket is left open.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_headcheck.h"
#include "upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *answer;
static size_t answer_len;
static struct upstream *up;
static int listen_fd = -1;
static int base_fds;            /* sockets open between runs */

/* ------------------------------------------------------------------ */
/* The application                                                     */

static int
read_full(int fd, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Reads records until the empty FCGI_STDIN (type 5) that ends a request. */
static int
read_request(int fd)
{
	unsigned char h[8], skip[512];

	for (;;) {
		if (read_full(fd, h, 8) != 0)
			return -1;
		size_t n = ((size_t)h[4] << 8 | h[5]) + h[6];
		int end = h[1] == 5 && h[4] == 0 && h[5] == 0;
		while (n > 0) {
			size_t k = n < sizeof skip ? n : sizeof skip;
			if (read_full(fd, skip, k) != 0)
				return -1;
			n -= k;
		}
		if (end)
			return 0;
	}
}

static void *
app(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(listen_fd, NULL, NULL);
		if (c < 0)
			continue;
		if (read_request(c) == 0) {
			pthread_mutex_lock(&mu);
			size_t off = 0;
			while (off < answer_len) {
				ssize_t k = write(c, answer + off, answer_len - off);
				if (k <= 0)
					break;
				off += (size_t)k;
			}
			pthread_mutex_unlock(&mu);
		}
		close(c);
	}
	return NULL;
}

/* Open sockets (libFuzzer's symbolizer may add pipes as it goes). */
static int
count_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], target[64];
	int n = 0;

	if (d == NULL)
		abort();
	while ((e = readdir(d)) != NULL) {
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, target, sizeof target - 1);
		if (k > 0) {
			target[k] = '\0';
			n += strncmp(target, "socket:", 7) == 0;
		}
	}
	closedir(d);
	return n;
}

static char dir[] = "/tmp/rg-fuzz-upstream-XXXXXX";
static struct sockaddr_un sa = { .sun_family = AF_UNIX };

/* libFuzzer ends with exit(): the socket and its directory go. */
static void
cleanup(void)
{
	unlink(sa.sun_path);
	rmdir(dir);
}

static void
setup(void)
{
	char uri[160], err[256];
	pthread_t t;

	signal(SIGPIPE, SIG_IGN);       /* as the gateway does */
	if (mkdtemp(dir) == NULL)
		abort();
	atexit(cleanup);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/app.sock", dir);
	listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(listen_fd, 16) != 0)
		abort();
	snprintf(uri, sizeof uri, "fcgi+unix://%s", sa.sun_path);
	up = upstream_new(uri, err, sizeof err);
	if (up == NULL)
		abort();
	upstream_set_idle_max(up, 0);
	if (pthread_create(&t, NULL, app, NULL) != 0)
		abort();
	pthread_detach(t);
	base_fds = count_sockets();
}

/* ------------------------------------------------------------------ */
/* The web server's side                                               */

struct client {
	char *out;
	size_t len, cap;
};

static long
c_read(void *ctx, char *buf, size_t cap)
{
	(void)ctx;
	(void)buf;
	(void)cap;
	return 0;       /* no request body */
}

static int
c_write(void *ctx, const char *buf, size_t len)
{
	struct client *c = ctx;

	if (c->len + len + 1 > c->cap) {
		c->cap = (c->len + len + 1) * 2;
		c->out = realloc(c->out, c->cap);
		if (c->out == NULL)
			abort();
	}
	memcpy(c->out + c->len, buf, len);
	c->len += len;
	c->out[c->len] = '\0';
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rl_param params[] = {
		{ "REQUEST_METHOD", 14, "GET", 3 },
		{ "SCRIPT_NAME", 11, "/app", 4 },
		{ "QUERY_STRING", 12, "", 0 },
	};
	struct proxy_spec spec = {
		.timeout_ms = 5000,
		.extra_headers = "X-RateLimit-Limit: 10\r\n",
		.extra_len = 23,
	};
	struct client cl = { NULL, 0, 0 };
	struct proxy_client c = { .ctx = &cl, .read = c_read, .write = c_write };
	struct proxy_result res;

	if (up == NULL)
		setup();
	pthread_mutex_lock(&mu);
	answer = data;
	answer_len = size;
	pthread_mutex_unlock(&mu);
	int r = upstream_run(up, params, 3, &spec, &c, &res);
	if (r != 0 || res.client_gone)
		abort();
	if (res.status < 200 || res.status > 599)
		abort();
	if (cl.out == NULL)
		abort();                        /* the client got nothing */
	fuzz_check_head(cl.out, cl.len);
	if (!res.head_sent)
		abort();                        /* our 502 is a head too */
	free(cl.out);
	/* the connection is closed (the app thread's side may lag a little) */
	for (int i = 0; count_sockets() > base_fds; i++) {
		if (i == 1000)
			abort();
		usleep(1000);
	}
	return 0;
}
