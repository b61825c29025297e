/*
 * log.c - logfmt lines for denials and errors, written whole with one
 * write(2) each so concurrent workers never interleave; client-supplied
 * key values hashed, request text escaped and cut.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

struct log {
	int fd;
	char *path;             /* the -L file, for log_reopen; NULL: stderr */
	int own;                /* close fd in log_free */
	/* log-format json: a reload sets it while workers write lines
	 * (a data race TSan found, a review) */
	atomic_int json;
	/* How a line is written without ever waiting for a reader that
	 * stopped reading (see write_line). */
	enum { W_PLAIN, W_NONBLOCK, W_SEND, W_POLL } how;
	unsigned long long dropped;     /* lines dropped since the last report */
	int torn;               /* a line was cut short and not ended: the
				   next one starts with a newline */
	pthread_mutex_t mu;
};

void *
log_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL) {
		static const char msg[] = "rategate: out of memory\n";
		ssize_t w = write(2, msg, sizeof(msg) - 1);
		(void)w;
		abort();
	}
	return q;
}

/* How to write to fd, which may be replaced by a descriptor of our own
 * (*fd, *own).  A regular file: plainly (a full disk fails, it does not
 * wait).  A pipe, FIFO or terminal: through a new open file description
 * of it with O_NONBLOCK (opened by /proc/self/fd/N, so the one we share
 * with the web server, and with the CGI scripts that inherit fd 2, keeps
 * its blocking mode): a line that does not fit fails with EAGAIN.  A
 * socket (journald's stream): send with MSG_DONTWAIT.  Else (no /proc):
 * poll before each write, which leaves a small window. */
static int
write_mode(int *fd, int *own)
{
	struct stat st;

	if (fstat(*fd, &st) != 0)
		return W_POLL;
	if (S_ISSOCK(st.st_mode))
		return W_SEND;
	if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
		return W_PLAIN;
	int fl = fcntl(*fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		return W_NONBLOCK;
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", *fd);
	int nfd = open(p, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (nfd < 0)
		return W_POLL;
	if (*own)
		close(*fd);
	*fd = nfd;
	*own = 1;
	return W_NONBLOCK;
}

/* The -L file, appended; O_NONBLOCK: a FIFO without a reader is an error,
 * not a wait (log_reopen runs in the thread that takes the stop
 * signals).  -1 with a message in err. */
static int
open_log_file(const char *path, char *err, size_t errcap)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
		      O_NONBLOCK, 0640);

	if (fd < 0)
		snprintf(err, errcap, "log file %s: %s", path, strerror(errno));
	return fd;
}

struct log *
log_new(const char *path, char *err, size_t errcap)
{
	struct log *l = log_xrealloc(NULL, sizeof(*l));

	l->fd = 2;
	l->own = 0;
	atomic_init(&l->json, 0);
	l->path = NULL;
	if (path != NULL && strcmp(path, "-") != 0) {
		l->fd = open_log_file(path, err, errcap);
		if (l->fd < 0) {
			free(l);
			return NULL;
		}
		l->own = 1;
		size_t n = strlen(path) + 1;
		l->path = log_xrealloc(NULL, n);
		memcpy(l->path, path, n);
	}
	l->how = write_mode(&l->fd, &l->own);
	l->dropped = 0;
	l->torn = 0;
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

void
log_free(struct log *l)
{
	if (l == NULL)
		return;
	if (l->own)
		close(l->fd);
	free(l->path);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

int
log_reopen(struct log *l, char *err, size_t errcap)
{
	if (l->path == NULL)
		return 0;
	int fd = open_log_file(l->path, err, errcap);
	if (fd < 0)
		return -1;
	int own = 1, how = write_mode(&fd, &own);
	/* dup3 replaces the fd in one step: a line being written goes
	 * wholly to the old file or wholly to the new one */
	pthread_mutex_lock(&l->mu);
	int r = dup3(fd, l->fd, O_CLOEXEC);
	if (r >= 0) {
		l->how = how;
		l->torn = 0;    /* a new file starts on a line of its own */
	}
	pthread_mutex_unlock(&l->mu);
	int e = errno;
	close(fd);
	if (r < 0) {
		snprintf(err, errcap, "log file %s: %s", l->path, strerror(e));
		return -1;
	}
	return 0;
}

/* n as exactly width decimal digits at p (no libc: async-signal-safe). */
static char *
digits(char *p, long long n, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + n % 10);
		n /= 10;
	}
	return p + width;
}

static int write_line(struct log *l, const char *buf, size_t len);

void
log_fatal(struct log *l, const char *event, const char *msg)
{
	char ts[32], buf[512], *p = ts;
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	/* civil date from days since 1970 (Howard Hinnant's algorithm) */
	long long secs = (long long)t.tv_sec, days = secs / 86400, sod = secs % 86400;
	long long z = days + 719468, era = z / 146097, doe = z - era * 146097;
	long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	long long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	long long y = yoe + era * 400 + (m <= 2);

	p = digits(p, y, 4);
	*p++ = '-';
	p = digits(p, m, 2);
	*p++ = '-';
	p = digits(p, d, 2);
	*p++ = 'T';
	p = digits(p, sod / 3600, 2);
	*p++ = ':';
	p = digits(p, sod / 60 % 60, 2);
	*p++ = ':';
	p = digits(p, sod % 60, 2);
	*p++ = '.';
	p = digits(p, t.tv_nsec / 1000000, 3);
	*p++ = 'Z';
	*p = '\0';
	char pid[24], *q = pid + sizeof(pid) - 1;
	long long v = (long long)getpid();
	*q = '\0';
	do {
		*--q = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	const char *lf[] = { "time=", ts, " pid=", q, " level=error event=", event, " msg=\"", msg, "\"\n" };
	const char *js[] = { "{\"time\":\"", ts, "\",\"pid\":", q, ",\"level\":\"error\",\"event\":\"", event,
			     "\",\"msg\":\"", msg, "\"}\n" };
	const char *const *parts = atomic_load_explicit(&l->json, memory_order_relaxed) ? js : lf;
	p = buf;
	for (size_t i = 0; i < sizeof(lf) / sizeof(lf[0]); i++) {
		size_t n = strlen(parts[i]);
		if (n > (size_t)(buf + sizeof(buf) - p))
			n = (size_t)(buf + sizeof(buf) - p);
		memcpy(p, parts[i], n);
		p += n;
	}
	/* never waits: a process stuck here would keep its store lock */
	write_line(l, buf, (size_t)(p - buf));
}

void
log_set_json(struct log *l, int json)
{
	atomic_store_explicit(&l->json, json, memory_order_relaxed);
}

/* A line under construction; appends past the end are dropped (the line
 * is cut, never overrun; a JSON line keeps room for its closing brace). */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
	int json;
};

static void
put(struct line *ln, const char *s, size_t n)
{
	/* keep one byte for '\n', and for a JSON line three for '"}' */
	size_t room = sizeof(ln->buf) - 4 - ln->len;

	if (n > room)
		n = room;
	memcpy(ln->buf + ln->len, s, n);
	ln->len += n;
}

static void
puts_(struct line *ln, const char *s)
{
	put(ln, s, strlen(s));
}

/* Bytes put may still write. */
static size_t
room(const struct line *ln)
{
	return sizeof(ln->buf) - 4 - ln->len;
}

/* A field's head (" name=" or ,"name":") when the line has room for it
 * and a value's closing "...\"" after it; else the field is left out
 * (the line is full), so that no line ends inside a quoted value. */
static int
field_head(struct line *ln, const char *name)
{
	size_t n = strlen(name);

	/* the head (n + 5 bytes in JSON, n + 2 in logfmt), an opening quote
	 * in logfmt, and the closing ..." */
	if (n + (ln->json ? 5 : 3) + 4 > room(ln))
		return 0;
	if (ln->json) {
		put(ln, ",\"", 2);
		puts_(ln, name);
		put(ln, "\":\"", 3);
	} else {
		put(ln, " ", 1);
		puts_(ln, name);
		put(ln, "=", 1);
	}
	return 1;
}

static int
needs_quotes(const char *s, size_t n)
{
	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f)
			return 1;
	}
	return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when s does not
 * start with one (overlongs, surrogates and values past U+10FFFF are not
 * valid). */
size_t
log_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min, cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2; cp = c & 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3; cp = c & 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4; cp = c & 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* ,"name":"value" with JSON escapes; invalid UTF-8 becomes U+FFFD so the
 * line stays valid JSON whatever the client sent. */
static void
field_json(struct line *ln, const char *name, const char *v, size_t n,
	   int cut)
{
	static const char hex[] = "0123456789abcdef";

	if (!field_head(ln, name))
		return;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)v[i];
		/* room for the longest escape (6 bytes) and the closing
		 * "...\"": a line is cut between characters, never inside
		 * an escape or a string */
		if (room(ln) < 6 + 4) {
			cut = 1;
			break;
		}
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			put(ln, e, 2);
			i++;
		} else if (c == '\n') {
			put(ln, "\\n", 2);
			i++;
		} else if (c == '\t') {
			put(ln, "\\t", 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			put(ln, e, 6);
			i++;
		} else if (c < 0x80) {
			put(ln, (const char *)&v[i], 1);
			i++;
		} else {
			size_t l = log_utf8_len((const unsigned char *)v + i, n - i);
			if (l == 0) {
				put(ln, "\\ufffd", 6);
				i++;
			} else {
				put(ln, v + i, l);
				i += l;
			}
		}
	}
	if (cut)
		put(ln, "...", 3);
	put(ln, "\"", 1);
}

/* " name=value", quoting and escaping value when needed; value cut at max
 * bytes with "..." appended.  In a JSON line: ,"name":"value". */
static void
field(struct line *ln, const char *name, const char *v, size_t n, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	int cut = n > max;

	if (cut)
		n = max;
	if (ln->json) {
		field_json(ln, name, v, n, cut);
		return;
	}
	if (!field_head(ln, name))
		return;
	if (!cut && !needs_quotes(v, n) && n <= room(ln)) {
		put(ln, v, n);
		return;
	}
	put(ln, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (room(ln) < 4 + 4) {         /* an escape, then "...\"" */
			cut = 1;
			break;
		}
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			put(ln, e, 2);
		} else if (c == '\n') {
			put(ln, "\\n", 2);
		} else if (c == '\t') {
			put(ln, "\\t", 2);
		} else if (c < 0x20 || c == 0x7f) {
			char e[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
			put(ln, e, 4);
		} else {
			/* bytes >= 0x80 pass: UTF-8 paths stay readable, and
			 * they cannot end a line or a field */
			put(ln, (const char *)&v[i], 1);
		}
	}
	if (cut)
		put(ln, "...", 3);
	put(ln, "\"", 1);
}

static void
field_s(struct line *ln, const char *name, const char *v)
{
	if (v == NULL)
		v = "-";
	field(ln, name, v, strlen(v), LOG_FIELD_MAX);
}

static void
field_i64(struct line *ln, const char *name, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);

	if (ln->json) {
		/* a number, not a string */
		if (strlen(name) + (size_t)n + 4 > room(ln))
			return;         /* the line is full: left out whole */
		put(ln, ",\"", 2);
		puts_(ln, name);
		put(ln, "\":", 2);
		put(ln, tmp, (size_t)n);
		return;
	}
	field(ln, name, tmp, (size_t)n, sizeof(tmp));
}

static void
start(const struct log *l, struct line *ln, int64_t now_ms,
      enum log_level level, const char *event)
{
	static const char *const names[] = { "info", "warn", "error" };
	time_t t = (time_t)(now_ms / 1000);
	struct tm tm;
	char ts[40];

	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(now_ms % 1000));
	ln->len = 0;
	ln->json = atomic_load_explicit(&l->json, memory_order_relaxed);
	if (ln->json) {
		puts_(ln, "{\"time\":\"");
		puts_(ln, ts);
		puts_(ln, "\"");
	} else {
		puts_(ln, "time=");
		puts_(ln, ts);
	}
	/* which process: several share one log (lighttpd max-procs,
	 * mod_fcgid), and kill -HUP wants a pid */
	field_i64(ln, "pid", (int64_t)getpid());
	field_s(ln, "level", names[level]);
	field_s(ln, "event", event);
}

/* Writes buf whole, or drops it: returns 0 when written.  Never waits
 * for a reader (see write_mode): on a pipe a line up to PIPE_BUF bytes
 * (more than LOG_LINE_MAX) goes whole or fails with EAGAIN, so a reader
 * that stops reading (a stalled logger, a full pipe) costs lines, never a
 * worker or the stop.  A line cut short (a full disk, a terminal) is
 * ended with a newline when possible, so the next one starts on a line of
 * its own. */
/* One write(2), or send(2) without waiting on a socket. */
static ssize_t
out(const struct log *l, const char *buf, size_t len)
{
	return l->how == W_SEND ?
	       send(l->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) :
	       write(l->fd, buf, len);
}

static int
write_line(struct log *l, const char *buf, size_t len)
{
	size_t off = 0;

	if (l->torn) {
		/* the end the last cut-short line could not be given (a full
		 * disk): before this one, so that it starts a line */
		if (out(l, "\n", 1) != 1)
			return -1;
		l->torn = 0;
	}
	while (off < len) {
		if (l->how == W_POLL) {
			struct pollfd p = { l->fd, POLLOUT, 0 };
			int r = poll(&p, 1, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r != 1 || !(p.revents & POLLOUT))
				break;
		}
		ssize_t w = out(l, buf + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;          /* EAGAIN: the reader is behind */
		off += (size_t)w;
	}
	if (off == len)
		return 0;
	if (off > 0 && out(l, "\n", 1) != 1)
		l->torn = 1;
	return -1;
}

/* Closes a line: its JSON brace, its newline (start keeps room for both). */
static void
line_end(struct line *ln)
{
	if (ln->json)
		ln->buf[ln->len++] = '}';
	ln->buf[ln->len++] = '\n';
}

static void
emit(struct log *l, struct line *ln)
{
	line_end(ln);
	pthread_mutex_lock(&l->mu);
	if (write_line(l, ln->buf, ln->len) != 0) {
		l->dropped++;   /* nowhere to report it now: counted */
	} else if (l->dropped > 0) {
		/* the log takes lines again: say how many it missed */
		struct line d;
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "%llu log line%s dropped: the log's reader did not take them (a stalled pipe or a full disk)",
			 l->dropped, l->dropped == 1 ? "" : "s");
		start(l, &d, clock_wall_ms(), LOG_LEVEL_WARN, "log-dropped");
		field(&d, "msg", msg, strlen(msg), sizeof(msg));
		line_end(&d);
		if (write_line(l, d.buf, d.len) == 0)
			l->dropped = 0;
	}
	pthread_mutex_unlock(&l->mu);
}

void
log_printf(struct log *l, enum log_level level, const char *event,
	   const char *fmt, ...)
{
	struct line ln;
	char msg[LOG_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	start(l, &ln, clock_wall_ms(), level, event);
	field(&ln, "msg", msg, strlen(msg), sizeof(msg));
	emit(l, &ln);
}

const char *
log_path(const char *path, size_t len, char buf[LOG_FIELD_MAX + 1])
{
	if (path == NULL)
		return "-";
	if (len > LOG_FIELD_MAX)
		len = LOG_FIELD_MAX;
	memcpy(buf, path, len);
	buf[len] = '\0';
	return buf;
}

void
log_bad_content_length(struct log *l, const struct rl_request *rq,
		       const char *addr, const char *cl)
{
	char pb[LOG_FIELD_MAX + 1];

	log_printf(l, LOG_LEVEL_WARN, "bad-request",
		   "%s %s from %.64s: Content-Length \"%.40s\" is not a number: answered 400",
		   rq->method ? rq->method : "-",
		   log_path(rq->path, rq->path_len, pb), addr ? addr : "-",
		   cl ? cl : "");
}

void
log_responder_only(struct log *l, const char *event, const struct rl_rule *r,
		   const char *here, const char *deduct_does,
		   const char *concurrency_does)
{
	int both = r->deduct && r->concurrency > 0;

	log_printf(l, LOG_LEVEL_WARN, event,
		   "rule %s (%s:%u): %s%s%s need%s the responder mode; %s %s%s%s",
		   r->pattern.text, r->file, r->line,
		   r->deduct ? "deduct-when=" : "", both ? " and " : "",
		   r->concurrency > 0 ? "concurrency=" : "", both ? "" : "s",
		   here, r->deduct ? deduct_does : "", both ? " and " : "",
		   r->concurrency > 0 ? concurrency_does : "");
}

void
log_key(const char *key, char *out, size_t cap)
{
	size_t o = 0, max = cap - 4 < LOG_KEY_MAX ? cap - 4 : LOG_KEY_MAX;
	const char *p = key;

	/* Parts are joined by '+', and a value never holds '+' or '=':
	 * rl_key_escape writes them as %2B and %3D. */
	while (*p != '\0' && o < max) {
		const char *end = strchr(p, '+');
		size_t plen = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', plen);
		int secret = rl_key_part_secret(p, plen);
		char part[64];
		size_t n;

		if (secret && eq != NULL) {
			size_t nl = (size_t)(eq - p) + 1;
			if (nl > 40)
				nl = 40;
			char hb[17];
			rl_hash_text(eq + 1, plen - (size_t)(eq + 1 - p), hb);
			snprintf(part, sizeof(part), "%.*s%.17s", (int)nl, p, hb);
			n = strlen(part);
			if (o + n > max)
				n = max - o;
			memcpy(out + o, part, n);
		} else {
			n = plen;
			if (o + n > max)
				n = max - o;
			memcpy(out + o, p, n);
		}
		o += n;
		if (end == NULL || o >= max)
			break;
		out[o++] = '+';
		p = end + 1;
	}
	if (*p != '\0' && o >= max) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* path= and method= of a request, escaped and cut. */
static void
field_request(struct line *ln, const struct log_request *r)
{
	if (r->path != NULL)
		field(ln, "path", r->path, r->path_len, LOG_FIELD_MAX);
	else
		field_s(ln, "path", "-");
	field(ln, "method", r->method ? r->method : "-",
	      r->method ? strlen(r->method) : 1, 16);
}

void
log_decision(struct log *l, const struct log_request *r,
	     const struct rl_decision *d, int status)
{
	const char *event;
	enum log_level level = LOG_LEVEL_INFO;
	struct line ln;
	char key[LOG_KEY_MAX + 4];

	switch (d->outcome) {
	case RL_ALLOW:
		if (!d->would_deny)
			return;
		event = "dry-run-deny";
		break;
	case RL_DENY:
		event = "deny";
		break;
	case RL_DENY_KEY:
		event = "deny-key";
		break;
	case RL_BAD_REQUEST:
		event = "bad-request";
		level = LOG_LEVEL_WARN;
		break;
	case RL_TOO_LARGE:
		event = "too-large";
		break;
	case RL_STORE_ERROR:
	default:
		event = "store-error";
		level = LOG_LEVEL_ERROR;
		break;
	}
	start(l, &ln, r->now_ms, level, event);
	field_i64(&ln, "status", status);
	field_s(&ln, "client", d->client);
	log_key(d->key[0] ? d->key : "-", key, sizeof(key));
	field(&ln, "key", key, strlen(key), sizeof(key));
	field_s(&ln, "rule", d->rule ? d->rule->pattern.text : "-");
	if (d->limit != NULL) {
		field_s(&ln, "origin", rl_origin_name(d->origin));
		field_s(&ln, "limit", d->limit->text);
		field_i64(&ln, "remaining", (int64_t)d->remaining);
	}
	field_request(&ln, r);
	/* a would-be denial with no wait (a dry-run max-body: the size is
	 * what is wrong, not the time) says none */
	if (d->outcome == RL_DENY || (d->would_deny && d->retry_ms > 0))
		field_i64(&ln, "retry_after", rl_retry_seconds(d->retry_ms));
	if (d->error[0] != '\0')
		field(&ln, "error", d->error, strlen(d->error), LOG_FIELD_MAX);
	emit(l, &ln);
}

void
log_request_event(struct log *l, enum log_level level, const char *event,
		  const struct log_request *r, const struct rl_decision *d,
		  int status, const char *msg)
{
	struct line ln;
	char key[LOG_KEY_MAX + 4];

	start(l, &ln, clock_wall_ms(), level, event);
	field_i64(&ln, "status", status);
	field_s(&ln, "client", d != NULL && d->client[0] != '\0' ? d->client : "-");
	log_key(d != NULL && d->key[0] != '\0' ? d->key : "-", key, sizeof(key));
	field(&ln, "key", key, strlen(key), sizeof(key));
	field_s(&ln, "rule", d != NULL && d->rule != NULL ? d->rule->pattern.text : "-");
	field_request(&ln, r);
	field(&ln, "msg", msg, strlen(msg), LOG_LINE_MAX);
	emit(l, &ln);
}
