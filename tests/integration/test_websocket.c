/*
 * test_websocket.c - rategate limiting new WebSocket connections: a real
 * lighttpd (examples/lighttpd-websocket.conf, var.* values replaced) with
 * rategate as the FastCGI authorizer of the handshake and mod_wstunnel in
 * front of a plain TCP echo backend (a thread of this test: mod_wstunnel
 * does the WebSocket framing and passes the payload on).
 *
 * Real handshakes over raw sockets (GET, Upgrade: websocket,
 * Sec-WebSocket-Key): N are answered 101 with the right
 * Sec-WebSocket-Accept and carry masked text frames to the backend and
 * back; the N+1st gets rategate's 429 and never reaches the backend;
 * messages on an open connection are not counted.  With the modules in
 * the wrong order the authorizer is never asked (the example's warning).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "servers.h"

static int port;
static pid_t lighttpd;

/* ------------------------------------------------------------------ */
/* SHA-1 (FIPS 180-4) and base64, for Sec-WebSocket-Accept.            */

static uint32_t
rol(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static void
sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
	size_t total = ((len + 8) / 64 + 1) * 64;
	unsigned char *m = calloc(1, total);

	cr_assert_not_null(m);
	memcpy(m, msg, len);
	m[len] = 0x80;
	uint64_t bits = (uint64_t)len * 8;
	for (int i = 0; i < 8; i++)
		m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (size_t off = 0; off < total; off += 64) {
		uint32_t w[80];
		for (int i = 0; i < 16; i++)
			w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
			       (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
		for (int i = 16; i < 80; i++)
			w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
		uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
		for (int i = 0; i < 80; i++) {
			uint32_t f, k;
			if (i < 20) {
				f = (b & c) | (~b & d);
				k = 0x5A827999;
			} else if (i < 40) {
				f = b ^ c ^ d;
				k = 0x6ED9EBA1;
			} else if (i < 60) {
				f = (b & c) | (b & d) | (c & d);
				k = 0x8F1BBCDC;
			} else {
				f = b ^ c ^ d;
				k = 0xCA62C1D6;
			}
			uint32_t t = rol(a, 5) + f + e + k + w[i];
			e = d;
			d = c;
			c = rol(b, 30);
			b = a;
			a = t;
		}
		h[0] += a;
		h[1] += b;
		h[2] += c;
		h[3] += d;
		h[4] += e;
	}
	free(m);
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void
base64(const unsigned char *in, size_t len, char *out)
{
	static const char tbl[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? tbl[v & 63] : '=';
	}
	out[o] = '\0';
}

/* RFC 6455 4.2.2: base64(SHA-1(key + GUID)). */
static void
ws_accept(const char *key, char out[32])
{
	char buf[128];
	unsigned char dig[20];

	snprintf(buf, sizeof(buf), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	sha1((const unsigned char *)buf, strlen(buf), dig);
	base64(dig, 20, out);
}

/* ------------------------------------------------------------------ */
/* The TCP backend: answers every read with "echo:" and the bytes.    */

static int backend_fd;
static atomic_int backend_accepted;

static void *
backend_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096], out[4200];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		memcpy(out, "echo:", 5);
		memcpy(out + 5, buf, (size_t)n);
		if (write(fd, out, (size_t)n + 5) != n + 5)
			break;
	}
	close(fd);
	return NULL;
}

static void *
backend_main(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(backend_fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		atomic_fetch_add(&backend_accepted, 1);
		pthread_t t;
		if (pthread_create(&t, NULL, backend_conn, (void *)(intptr_t)c) == 0)
			pthread_detach(t);
		else
			close(c);
	}
}

static int
start_backend(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int one = 1;

	backend_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(backend_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert(bind(backend_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		  listen(backend_fd, 16) == 0 &&
		  getsockname(backend_fd, (struct sockaddr *)&sa, &len) == 0,
		  "backend: %s", strerror(errno));
	atomic_store(&backend_accepted, 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, backend_main, NULL), 0);
	pthread_detach(t);
	return ntohs(sa.sin_port);
}

/* ------------------------------------------------------------------ */

static void
setup(void)
{
	srv_setup();
	cr_assert_eq(mkdir(srv_path("docroot"), 0755), 0);
}

static void
teardown(void)
{
	srv_cleanup();
}

/* lighttpd from the example; swap: the modules in the wrong order. */
static void
start(const char *rules, int swap)
{
	char backend_port[16];

	srv_write("websocket.rules", rules, 0644);
	port = srv_free_port();
	char *conf = srv_lighttpd_conf("lighttpd-websocket.conf", "websocket.rules", port, 0);
	snprintf(backend_port, sizeof(backend_port), "%d", start_backend());
	const char *vars[] = { "backend_port", backend_port, NULL };
	char *next = srv_set_vars(conf, vars);
	free(conf);
	conf = next;
	if (swap) {
		next = srv_set_line(conf, "server.modules ",
				    "server.modules = ( \"mod_wstunnel\", \"mod_fastcgi\" )");
		free(conf);
		conf = next;
	}
	lighttpd = srv_start_lighttpd(conf, port);
	free(conf);
}

static const char *
logs(void)
{
	static const char *const files[] = { "lighttpd error log", "lighttpd-error.log",
					     "rategate log", "rategate.log", NULL };

	return srv_logs(files);
}

/* Stop lighttpd: its rategate processes drain and exit by themselves
 * (nothing has to be killed), and in the sanitizer build report
 * nothing. */
static void
finish(void)
{
	srv_stop_spawner(lighttpd, srv_path("rategate.log"));
}

static int
connect_lighttpd(void)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 5, 0 };

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
		  "connect: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* A handshake's answer: the head (and whatever body followed it). */
struct hs {
	int fd;                 /* open when 101 */
	int status;
	char head[4096];
	char body[1024];
	char key[32];
};

static const char *
head_value(const char *head, const char *name, char *buf, size_t cap)
{
	size_t nl = strlen(name);

	for (const char *p = strstr(head, "\r\n"); p != NULL; p = strstr(p, "\r\n")) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			snprintf(buf, cap, "%.*s", (int)strcspn(v, "\r\n"), v);
			return buf;
		}
	}
	return NULL;
}

static void
handshake(const char *path, int n, struct hs *h)
{
	unsigned char raw[16];
	char req[1024];

	memset(h, 0, sizeof(*h));
	for (int i = 0; i < 16; i++)
		raw[i] = (unsigned char)(rand() >> 3);
	base64(raw, 16, h->key);
	h->fd = connect_lighttpd();
	int len = snprintf(req, sizeof(req),
			   "GET %s HTTP/1.1\r\n"
			   "Host: 127.0.0.1:%d\r\n"
			   "Upgrade: websocket\r\n"
			   "Connection: Upgrade\r\n"
			   "Sec-WebSocket-Key: %s\r\n"
			   "Sec-WebSocket-Version: 13\r\n"
			   "Origin: http://127.0.0.1\r\n"
			   "X-Conn: %d\r\n"
			   "\r\n", path, port, h->key, n);
	cr_assert_eq(write(h->fd, req, (size_t)len), len);
	/* read the head */
	size_t got = 0;
	char *end = NULL;
	while (got < sizeof(h->head) - 1 && end == NULL) {
		ssize_t r = read(h->fd, h->head + got, sizeof(h->head) - 1 - got);
		cr_assert(r > 0, "handshake %d: no answer (%s)\n%s", n,
			  r < 0 ? strerror(errno) : "EOF", logs());
		got += (size_t)r;
		h->head[got] = '\0';
		end = strstr(h->head, "\r\n\r\n");
	}
	cr_assert_not_null(end, "handshake %d: head too long", n);
	snprintf(h->body, sizeof(h->body), "%s", end + 4);
	end[2] = '\0';
	cr_assert_eq(sscanf(h->head, "HTTP/1.1 %d", &h->status), 1, "%s", h->head);
	if (h->status != 101) {
		/* the rest of a short body, then the connection is ours to close */
		char v[32];
		if (head_value(h->head, "Content-Length", v, sizeof(v)) != NULL) {
			size_t want = (size_t)atoi(v), have = strlen(h->body);
			while (have < want && have < sizeof(h->body) - 1) {
				ssize_t r = read(h->fd, h->body + have, sizeof(h->body) - 1 - have);
				if (r <= 0)
					break;
				have += (size_t)r;
				h->body[have] = '\0';
			}
		}
		close(h->fd);
		h->fd = -1;
	}
}

/* Send text as one masked text frame, read one frame back. */
static void
ws_roundtrip(int fd, const char *text, char *reply, size_t cap)
{
	unsigned char frame[256], mask[4] = { 0x12, 0x34, (unsigned char)rand(), 0x78 };
	size_t len = strlen(text);

	cr_assert_lt(len, 126);
	frame[0] = 0x81;                        /* FIN, text */
	frame[1] = (unsigned char)(0x80 | len); /* masked (client to server) */
	memcpy(frame + 2, mask, 4);
	for (size_t i = 0; i < len; i++)
		frame[6 + i] = (unsigned char)text[i] ^ mask[i % 4];
	cr_assert_eq(write(fd, frame, 6 + len), (ssize_t)(6 + len));

	unsigned char in[256];
	size_t got = 0, need = 2;
	while (got < need) {
		ssize_t r = read(fd, in + got, sizeof(in) - got);
		cr_assert(r > 0, "no frame back for \"%s\"\n%s", text, logs());
		got += (size_t)r;
		if (got >= 2)
			need = 2 + (in[1] & 0x7f);
	}
	cr_assert_eq(in[0], 0x81, "frame type %02x", in[0]);
	cr_assert_eq(in[1] & 0x80, 0, "a server frame must not be masked");
	size_t plen = in[1] & 0x7f;
	cr_assert_lt(plen, cap);
	memcpy(reply, in + 2, plen);
	reply[plen] = '\0';
}

static const char rules[] =
	"storage          shm:@DIR@/counters?size=4M\n"
	"headers          on\n"
	"message          \"Too many new connections\"\n"
	"/ws/**           3/minute\n";

static char *
rules_text(void)
{
	const char *pairs[] = { "@DIR@", srv_dir, NULL };
	return srv_subst(rules, pairs);
}

Test(websocket, handshakes_over_the_limit_get_429,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char *r = rules_text();
	start(r, 0);
	free(r);

	struct hs open[3];
	char v[64], want[32], reply[256], msg[64];
	for (int i = 0; i < 3; i++) {
		handshake("/ws/chat?room=1", i, &open[i]);
		cr_assert_eq(open[i].status, 101, "handshake %d:\n%s\n%s", i, open[i].head, logs());
		ws_accept(open[i].key, want);
		cr_expect_str_eq(head_value(open[i].head, "Sec-WebSocket-Accept", v, sizeof(v)), want);
		cr_expect_str_eq(head_value(open[i].head, "Upgrade", v, sizeof(v)), "websocket");
		snprintf(msg, sizeof(msg), "hello %d", i);
		ws_roundtrip(open[i].fd, msg, reply, sizeof(reply));
		snprintf(want, sizeof(want), "echo:hello %d", i);
		cr_expect_str_eq(reply, want);
	}
	cr_expect_eq(atomic_load(&backend_accepted), 3);

	/* the 4th (and 5th) new connection: rategate's 429, no tunnel */
	for (int i = 3; i < 5; i++) {
		struct hs h;
		handshake("/ws/chat?room=2", i, &h);
		cr_assert_eq(h.status, 429, "handshake %d:\n%s\n%s", i, h.head, logs());
		cr_expect_eq(strncmp(h.head, "HTTP/1.1 429 Too Many Requests\r\n", 32), 0, "%s", h.head);
		cr_assert_not_null(head_value(h.head, "Retry-After", v, sizeof(v)), "%s", h.head);
		cr_expect(atoi(v) >= 1 && atoi(v) <= 60, "Retry-After %s", v);
		cr_expect_str_eq(head_value(h.head, "X-RateLimit-Limit", v, sizeof(v)), "3");
		cr_expect_str_eq(head_value(h.head, "X-RateLimit-Remaining", v, sizeof(v)), "0");
		cr_expect_null(head_value(h.head, "Sec-WebSocket-Accept", v, sizeof(v)));
		cr_expect_str_eq(h.body, "Too many new connections\n");
	}
	cr_expect_eq(atomic_load(&backend_accepted), 3, "a denied handshake reached the backend");

	/* messages on the open connections are not counted */
	for (int k = 0; k < 10; k++) {
		snprintf(msg, sizeof(msg), "again %d", k);
		ws_roundtrip(open[k % 3].fd, msg, reply, sizeof(reply));
		snprintf(want, sizeof(want), "echo:again %d", k);
		cr_expect_str_eq(reply, want);
	}
	for (int i = 0; i < 3; i++)
		close(open[i].fd);

	srv_expect_in_file(srv_path("rategate.log"),
			   "event=deny status=429 client=127.0.0.1 key=\"addr=127.0.0.1\" rule=/ws/** origin=rule limit=3/minute remaining=0 path=/ws/chat method=GET retry_after=");
	finish();
}

Test(websocket, sha1_and_accept_match_rfc6455_sample)
{
	char out[32];

	ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out);
	cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* The example's warning: mod_wstunnel before mod_fastcgi takes the
 * handshake before the authorizer is asked. */
Test(websocket, wrong_module_order_bypasses_the_authorizer,
     .init = setup, .fini = teardown, .timeout = 30)
{
	char *r = rules_text();
	start(r, 1);
	free(r);

	for (int i = 0; i < 5; i++) {
		struct hs h;
		handshake("/ws/chat", i, &h);
		cr_expect_eq(h.status, 101, "handshake %d:\n%s", i, h.head);
		if (h.fd >= 0)
			close(h.fd);
	}
	char *log = srv_read(srv_path("rategate.log"));
	cr_expect(log == NULL || strstr(log, "event=deny") == NULL, "%s", log);
	free(log);
	finish();
}
