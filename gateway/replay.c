/*
 * replay.c - `rategate replay`: parse traces and access logs, decide each
 * request on a virtual clock, print the decisions or a summary.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"
#include "store.h"
#include "target.h"

#define MAX_LINE 65536

size_t replay_max_keys = 1u << 22;

static size_t
word(const char *s, size_t len, size_t *pos, const char **w)
{
	while (*pos < len && (s[*pos] == ' ' || s[*pos] == '\t'))
		(*pos)++;
	*w = s + *pos;
	size_t start = *pos;
	while (*pos < len && s[*pos] != ' ' && s[*pos] != '\t')
		(*pos)++;
	return *pos - start;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int
num(const char *s, size_t n, unsigned *out)
{
	unsigned v = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* "10/Oct/2000:13:55:36 -0700" -> ms since the epoch.  Returns 0, -1 when
 * it is not such a time, or -2 when it is before 1970 (the engine's clock
 * starts there, as a trace's does). */
static int
clf_time(const char *s, size_t len, int64_t *ms)
{
	static const char mons[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	unsigned d, y, hh, mm, ss, zh, zm;

	if (len != 26 || s[2] != '/' || s[6] != '/' || s[11] != ':' ||
	    s[14] != ':' || s[17] != ':' || s[20] != ' ' ||
	    (s[21] != '+' && s[21] != '-'))
		return -1;
	if (num(s, 2, &d) || num(s + 7, 4, &y) || num(s + 12, 2, &hh) ||
	    num(s + 15, 2, &mm) || num(s + 18, 2, &ss) ||
	    num(s + 22, 2, &zh) || num(s + 24, 2, &zm))
		return -1;
	const char *mp = NULL;
	for (int i = 0; i < 12; i++)
		if (memcmp(mons + 3 * i, s + 3, 3) == 0)
			mp = mons + 3 * i;
	if (mp == NULL || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60 ||
	    zh > 23 || zm > 59)
		return -1;
	unsigned m = (unsigned)((mp - mons) / 3) + 1;
	static const unsigned char mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
		return -1;      /* 31/Feb is no day (it was read as 3 March) */
	int64_t t = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss;
	int64_t off = (int64_t)zh * 3600 + zm * 60;
	t += s[21] == '+' ? -off : off;
	if (t < 0)
		return -2;
	*ms = t * 1000;
	return 0;
}

/* The first "[...]" in [p, end) without a '"' in it that clf_time reads
 * (*tr its answer: 0, or -2 before 1970; *t the time): its '[', with *rb
 * its ']'; NULL when there is none (*tr -1). */
static const char *
next_time(const char *p, const char *end, const char **rb, int *tr,
	  int64_t *t)
{
	const char *lb = p;

	*tr = -1;
	while ((lb = memchr(lb, '[', (size_t)(end - lb))) != NULL &&
	       (*rb = memchr(lb, ']', (size_t)(end - lb))) != NULL &&
	       memchr(lb, '"', (size_t)(*rb - lb)) == NULL &&
	       (*tr = clf_time(lb + 1, (size_t)(*rb - lb - 1), t)) == -1)
		lb++;
	return *tr == -1 ? NULL : lb;
}

/* Is there a "[...]" that clf_time reads in [p, end) outside the
 * '"'-quoted fields (their '"' and '\' escaped with '\'), or anywhere
 * when a quote is left open?  1 or 0. */
static int
time_outside_quotes(const char *p, const char *end, const char **rb,
		    int *tr, int64_t *t)
{
	int inq = 0;

	for (const char *c = p; c < end; c++) {
		if (inq && *c == '\\') {
			c++;
			continue;
		}
		if (*c == '"')
			inq = !inq;
		else if (!inq && *c == '[') {
			const char *q = memchr(c, '"', (size_t)(end - c));
			if (next_time(c, q != NULL ? q : end, rb, tr, t) != NULL)
				return 1;
		}
	}
	/* a quote left open: a line cut short inside a field, the next
	 * one run into it (then any time counts, as in a line whose
	 * fields cannot be told apart) */
	return inq && next_time(p, end, rb, tr, t) != NULL;
}

/* Split a request target into path and query as the gateway does
 * (target_parse: absolute-form targets lose their scheme and authority, a
 * raw '#' ends the target).  A path longer than RL_PATH_MAX keeps
 * RL_PATH_MAX + 1 bytes, so that the decision refuses it as the gateway
 * would (a bad request, "error" in the listing) instead of the line being
 * skipped as malformed.  Returns 0, -1 (no path) or -2 (a query longer
 * than RL_PATH_MAX). */
static int
target(const char *s, size_t len, struct replay_line *out)
{
	char *uri = malloc(len + 1);
	struct target t;
	int r = -1;

	if (uri == NULL)
		return -1;
	memcpy(uri, s, len);
	uri[len] = '\0';
	if (target_parse(uri, NULL, NULL, NULL, NULL, 0, &t) != 0 ||
	    t.path_len == 0)
		goto out;
	r = -2;
	if (t.query != NULL && t.query_len > RL_PATH_MAX)
		goto out;
	size_t plen = t.path_len > RL_PATH_MAX + 1 ? RL_PATH_MAX + 1 : t.path_len;
	memcpy(out->path, t.path, plen);
	out->path[plen] = '\0';
	out->has_query = t.query != NULL;
	if (t.query != NULL) {
		memcpy(out->query, t.query, t.query_len);
		out->query[t.query_len] = '\0';
	}
	r = 0;
out:
	free(uri);
	return r;
}

static int
copy(char *dst, size_t cap, const char *s, size_t n)
{
	if (n == 0 || n >= cap)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* Is w[0..n) a client address the engine takes (IPv4, IPv6)? */
static int
is_addr(const char *w, size_t n)
{
	struct rl_addr a;

	return rl_addr_parse_peer(w, n, &a) == 0;
}

static void
bad_addr(const char *w, size_t n, char *err, size_t errcap)
{
	char q[48];
	size_t k = 0;

	/* printable ASCII only, cut short: it goes to a terminal */
	for (size_t i = 0; i < n && k + 4 < sizeof(q); i++)
		q[k++] = w[i] > ' ' && w[i] < 0x7f && w[i] != '"' ? w[i] : '?';
	if (k < n)
		q[k++] = '.', q[k++] = '.', q[k++] = '.';
	q[k] = '\0';
	snprintf(err, errcap, "bad client address \"%s\": expected an IPv4 or IPv6 address (a log written with host names, HostnameLookups, cannot be replayed)",
		 q);
}

int
replay_parse_line(const char *s, size_t len, struct replay_line *out,
		  char *err, size_t errcap)
{
	size_t pos = 0, n;
	const char *w;
	int tr;

	out->t_ms = 0;
	out->addr[0] = out->method[0] = out->path[0] = out->query[0] = '\0';
	out->has_query = 0;
	out->cost = 0;
	out->status = 0;
	while (pos < len && (s[pos] == ' ' || s[pos] == '\t'))
		pos++;
	if (pos == len || s[pos] == '#')
		return 0;
	if (memchr(s, '\0', len) != NULL) {
		snprintf(err, errcap, "NUL byte in the line");
		return -1;
	}
	n = word(s, len, &pos, &w);
	const char *first = w;
	size_t firstlen = n;

	/* A trace starts with a number. */
	char *end;
	char tbuf[40];
	if (n < sizeof(tbuf) && (isdigit((unsigned char)w[0])) &&
	    memchr(w, ':', n) == NULL) {
		memcpy(tbuf, w, n);
		tbuf[n] = '\0';
		double t = strtod(tbuf, &end);
		if (*end == '\0') {
			if (!(t >= 0 && t < 1e11)) {
				snprintf(err, errcap, "bad time \"%s\": expected seconds since the epoch", tbuf);
				return -1;
			}
			out->t_ms = (int64_t)(t * 1000.0 + 0.5);
			if ((n = word(s, len, &pos, &w)) == 0 ||
			    copy(out->addr, sizeof(out->addr), w, n)) {
				snprintf(err, errcap, "expected a client address after the time");
				return -1;
			}
			if (!is_addr(w, n)) {
				bad_addr(w, n, err, errcap);
				return -1;
			}
			if ((n = word(s, len, &pos, &w)) == 0 ||
			    copy(out->method, sizeof(out->method), w, n)) {
				snprintf(err, errcap, "expected a method after the address");
				return -1;
			}
			if ((n = word(s, len, &pos, &w)) == 0 ||
			    (tr = target(w, n, out)) == -1) {
				snprintf(err, errcap, "expected a path after the method");
				return -1;
			}
			if (tr == -2) {
				snprintf(err, errcap, "query longer than %d bytes",
					 RL_PATH_MAX);
				return -1;
			}
			if ((n = word(s, len, &pos, &w)) > 0) {
				unsigned long long c;
				char cb[24];
				if (n >= sizeof(cb)) {
					snprintf(err, errcap, "bad cost: expected a number from 1 to %llu",
						 (unsigned long long)RL_MAX_COUNT);
					return -1;
				}
				memcpy(cb, w, n);
				cb[n] = '\0';
				c = strtoull(cb, &end, 10);
				if (*end != '\0' || c == 0 || c > RL_MAX_COUNT ||
				    !isdigit((unsigned char)cb[0])) {
					snprintf(err, errcap, "bad cost \"%s\": expected a number from 1 to %llu",
						 cb, (unsigned long long)RL_MAX_COUNT);
					return -1;
				}
				out->cost = c;
			}
			if (word(s, len, &pos, &w) > 0) {
				snprintf(err, errcap, "unexpected text after the cost");
				return -1;
			}
			return 1;
		}
	}
	/* Combined/common log: host ident user [time] "request" ...; Apache's
	 * vhost_combined puts "vhost:port" first.  The vhost may itself read
	 * as an address: Apache without a ServerName logs its own address
	 * there ("127.0.1.1:80", "2001:db8::1:80"), so the number of fields
	 * before the time tells the formats apart, not the first field. */
	size_t nf = 1;
	for (size_t p3 = pos; nf < 5;) {
		const char *w3;
		if (word(s, len, &p3, &w3) == 0 || w3[0] == '[')
			break;
		nf++;
	}
	if (nf == 4) {
		size_t p2 = pos;
		n = word(s, len, &p2, &w);
		if (is_addr(w, n)) {
			first = w;
			firstlen = n;
			pos = p2;
		}
	}
	if (!is_addr(first, firstlen)) {
		size_t p2 = pos;
		n = word(s, len, &p2, &w);
		if (n > 0 && is_addr(w, n) && memchr(first, '[', firstlen) == NULL) {
			first = w;
			firstlen = n;
			pos = p2;
		} else if (memchr(s + pos, '[', len - pos) != NULL) {
			bad_addr(first, firstlen, err, errcap);
			return -1;
		}
	}
	if (copy(out->addr, sizeof(out->addr), first, firstlen)) {
		snprintf(err, errcap, "expected a trace line or a combined log line");
		return -1;
	}
	/* The time is the first [...] that reads as one: fields before it
	 * may hold brackets too (lighttpd's default format logs the Host
	 * there, "[::1]:8080" for an IPv6 literal).  Of several before the
	 * request's '"', the last, the one next to it: the user field comes
	 * before it, and on a 401 it is what the client sent as its Basic
	 * user name, "[01/Jan/2100:00:00:00 +0000]" if it likes (Apache
	 * escapes a '"' in it, never a bracket or a space); taking the
	 * first let a client set its requests' time. */
	const char *rb = NULL;
	const char *lim = s + len;
	for (const char *c = s + pos; c < s + len; c++)
		if (*c == '"' && (c == s + pos || c[-1] != '\\')) {
			lim = c;
			break;
		}
	const char *lb = next_time(s + pos, lim, &rb, &tr, &out->t_ms);
	if (lb == NULL && lim < s + len)
		lb = next_time(s + pos, s + len, &rb, &tr, &out->t_ms);
	else
		for (const char *rb2, *lb2; lb != NULL; ) {
			int tr2;
			int64_t t2;
			if ((lb2 = next_time(rb + 1, lim, &rb2, &tr2, &t2)) == NULL)
				break;
			lb = lb2;
			rb = rb2;
			tr = tr2;
			if (tr2 == 0)
				out->t_ms = t2;
		}
	if (tr == -2) {
		snprintf(err, errcap, "bad time [%.*s]: before 1970",
			 (int)(rb - lb - 1), lb + 1);
		return -1;
	}
	if (tr != 0) {
		snprintf(err, errcap, "expected a trace line (<time> <addr> <method> <path> [cost]) or a combined log line with [dd/Mon/yyyy:HH:MM:SS +zzzz]");
		return -1;
	}
	/* The request line is quoted with its own '"' and '\\' escaped:
	 * Apache and lighttpd write \" and \\, nginx \x22 and \x5C, and
	 * all three write other bytes as \xHH.  Its end is the first
	 * unescaped '"', and it is decoded back to what the client sent (the
	 * REQUEST_URI the gateway saw) before it is read. */
	const char *q1 = memchr(rb, '"', (size_t)(s + len - rb));
	const char *q2 = NULL;
	for (const char *c = q1 ? q1 + 1 : s + len; c < s + len; c++) {
		if (*c == '\\' && c + 1 < s + len) {
			c++;
			continue;
		}
		if (*c == '"') {
			q2 = c;
			break;
		}
	}
	if (q2 == NULL) {
		snprintf(err, errcap, "expected a quoted request line \"METHOD /path HTTP/1.1\"");
		return -1;
	}
	/* a second [time] after the request: two lines run together (a
	 * rotated file without its final newline, then the next one).  Only
	 * one outside the quoted fields counts: the Referer and User-Agent
	 * are the client's to write, and a time in them ("Mozilla
	 * [10/Oct/2023:13:55:36 +0000]") must not get its request refused,
	 * while the next line's time comes before its own request's '"'. */
	const char *rb2;
	int tr2;
	int64_t t2;
	if (time_outside_quotes(q2 + 1, s + len, &rb2, &tr2, &t2)) {
		snprintf(err, errcap, "a second [time] after the request: two log lines run together (a file without its final newline?)");
		return -1;
	}
	/* the status the server answered with, right after the request
	 * (deduct-when= counts by it); anything else leaves it unknown */
	{
		size_t sp = (size_t)(q2 + 1 - s);
		unsigned code;
		if ((n = word(s, len, &sp, &w)) == 3 && num(w, 3, &code) == 0 &&
		    code >= 100 && code <= 599)
			out->status = (int)code;
	}
	size_t rp = 0, rlen = (size_t)(q2 - q1 - 1);
	const char *r = q1 + 1;
	/* "-": no request line (Apache's 408, nginx's 400 for a connection
	 * that sent nothing usable): nothing to decide */
	if (rlen == 1 && r[0] == '-')
		return 2;
	char *dec = malloc(rlen + 1);
	size_t dlen = 0;
	if (dec == NULL) {
		snprintf(err, errcap, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < rlen; i++) {
		int hi, lo;
		if (r[i] == '\\' && i + 1 < rlen &&
		    (r[i + 1] == '"' || r[i + 1] == '\\')) {
			dec[dlen++] = r[++i];
		} else if (r[i] == '\\' && i + 3 < rlen && r[i + 1] == 'x' &&
			   (hi = rl_hex_value((unsigned char)r[i + 2])) >= 0 &&
			   (lo = rl_hex_value((unsigned char)r[i + 3])) >= 0) {
			dec[dlen++] = (char)(hi * 16 + lo);
			i += 3;
		} else {
			dec[dlen++] = r[i];
		}
	}
	dec[dlen] = '\0';
	int rc = 1, ctl = 0;
	/* a control byte (written \xHH) splits no words: web servers refuse
	 * such a request line (400) before any gateway sees it */
	for (size_t i = 0; i < dlen; i++)
		ctl |= (unsigned char)dec[i] < 0x20 || dec[i] == 0x7f;
	if (ctl || (n = word(dec, dlen, &rp, &w)) == 0 ||
	    copy(out->method, sizeof(out->method), w, n) ||
	    (n = word(dec, dlen, &rp, &w)) == 0 || (tr = target(w, n, out)) == -1) {
		snprintf(err, errcap, "bad request line \"%.*s\": expected METHOD /path HTTP/x",
			 (int)(rlen > 60 ? 60 : rlen), r);
		rc = -1;
	} else if (tr == -2) {
		snprintf(err, errcap, "query longer than %d bytes", RL_PATH_MAX);
		rc = -1;
	}
	free(dec);
	return rc;
}

/* A small counting map for --summary. */
struct tally {
	char **keys;
	uint64_t *counts;
	size_t n, cap;
};

static void
tally_add(struct tally *t, const char *key)
{
	size_t mask, i;

	if (t->n * 2 >= t->cap) {
		struct tally nt = { NULL, NULL, 0, t->cap ? t->cap * 2 : 64 };
		nt.keys = calloc(nt.cap, sizeof(*nt.keys));
		nt.counts = calloc(nt.cap, sizeof(*nt.counts));
		if (nt.keys == NULL || nt.counts == NULL) {
			free(nt.keys);
			free(nt.counts);
			return;
		}
		for (size_t j = 0; j < t->cap; j++) {
			if (t->keys[j] == NULL)
				continue;
			uint64_t h = rl_fnv1a(t->keys[j], strlen(t->keys[j]));
			for (i = h & (nt.cap - 1); nt.keys[i]; i = (i + 1) & (nt.cap - 1))
				;
			nt.keys[i] = t->keys[j];
			nt.counts[i] = t->counts[j];
		}
		nt.n = t->n;
		free(t->keys);
		free(t->counts);
		*t = nt;
	}
	mask = t->cap - 1;
	uint64_t h = rl_fnv1a(key, strlen(key));
	for (i = h & mask; t->keys[i]; i = (i + 1) & mask) {
		if (strcmp(t->keys[i], key) == 0) {
			t->counts[i]++;
			return;
		}
	}
	t->keys[i] = strdup(key);
	if (t->keys[i] != NULL) {
		t->counts[i] = 1;
		t->n++;
	}
}

static const struct tally *sort_tally;

static int
cmp_tally(const void *a, const void *b)
{
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	uint64_t ci = sort_tally->counts[i], cj = sort_tally->counts[j];

	if (ci != cj)
		return ci > cj ? -1 : 1;
	return strcmp(sort_tally->keys[i], sort_tally->keys[j]);
}

/* s to out with its control bytes (below 0x20, and 0x7f) as '?': a log
 * line's text (a trace's path, a request line quoted in an error) is the
 * client's, and these lines go to a terminal, where an escape sequence
 * in them would be obeyed (a review: a path "/a\x1b[2Jb" in a trace
 * cleared the screen from --summary's list of denied paths). */
static void
put_text(FILE *out, const char *s)
{
	for (; *s != '\0'; s++)
		putc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static void
tally_print(struct tally *t, const char *title, FILE *out)
{
	size_t *idx = malloc((t->n + 1) * sizeof(*idx)), k = 0;

	fprintf(out, "%s\n", title);
	if (idx == NULL)
		return;
	for (size_t i = 0; i < t->cap; i++)
		if (t->keys[i])
			idx[k++] = i;
	sort_tally = t;
	qsort(idx, k, sizeof(*idx), cmp_tally);
	for (size_t i = 0; i < k; i++) {
		fprintf(out, "%10llu\t", (unsigned long long)t->counts[idx[i]]);
		put_text(out, t->keys[idx[i]]);
		putc('\n', out);
	}
	if (k == 0)
		fprintf(out, "%10s\t(none)\n", "");
	free(idx);
	for (size_t i = 0; i < t->cap; i++)
		free(t->keys[i]);
	free(t->keys);
	free(t->counts);
}

/* A limit as written, as one field of the tab-separated output: a tab
 * written inside the limit ("10\tper\thour" is a valid limit) is printed
 * as a space, so that the line keeps its five fields. */
static void
put_field(FILE *out, const char *s)
{
	for (; *s; s++)
		putc(*s == '\t' ? ' ' : *s, out);
}

/* Read one line of in into buf (cap bytes): up to cap - 1 bytes are kept,
 * NUL bytes included (fgets and strlen would cut the line at the first
 * one, so a line behind a run of NULs, as logrotate's copytruncate leaves,
 * would vanish without a word), and the rest of a longer line is read
 * and dropped (*over set).  The newline is not stored.  Returns the
 * length kept, or -1 at the end of the input. */
static long
read_line(FILE *in, char *buf, size_t cap, int *over)
{
	size_t n = 0;
	int c, any = 0;

	*over = 0;
	while ((c = getc_unlocked(in)) != EOF) {
		any = 1;
		if (c == '\n')
			break;
		if (n < cap - 1)
			buf[n++] = (char)c;
		else
			*over = 1;
	}
	if (!any)
		return -1;
	buf[n] = '\0';
	return (long)n;
}

/* --verbose: which rule and which limits decided. */
static void
why(FILE *out, const struct rl_decision *d)
{
	fprintf(out, "\trule=%s\torigin=%s",
		d->rule != NULL ? d->rule->pattern.text : "-",
		d->limit != NULL ? rl_origin_name(d->origin) : "-");
}

/* Notes said once a rule. */
enum { SAID_DEDUCT = 1, SAID_UNREPLAYED = 2 };

int
replay_run(const struct rl_ruleset *rs, FILE *in, const char *name,
	   int flags, FILE *out, FILE *errs)
{
	int summary = (flags & REPLAY_SUMMARY) != 0;
	int verbose = (flags & REPLAY_VERBOSE) != 0;
	struct rl_store st;
	char *line = malloc(MAX_LINE + 2);
	struct replay_line *rl = malloc(sizeof(*rl));
	struct tally clients = { 0 }, paths = { 0 };
	uint64_t index = 0, denied = 0, errors = 0, lineno = 0, dry = 0;
	uint64_t norequest = 0;
	int bad = 0;

	char serr[200] = "out of memory";
	/* per rule: what was said about it (SAID_*) */
	unsigned char *said = calloc(rl_ruleset_nrules(rs) + 1, 1);

	if (line == NULL || rl == NULL || said == NULL ||
	    store_memory_new(replay_max_keys, &st, serr, sizeof(serr)) != 0) {
		fprintf(errs, "rategate: %s\n", serr);
		free(line);
		free(rl);
		free(said);
		return 1;
	}
	/* full, it forgets as a gateway's store does (the expired first, then
	 * the least recently hit), rather than refusing every new client;
	 * said at the end */
	memstore_evict_lru(&st);
	/* The statistics path: a FastCGI gateway answers it itself (the
	 * counters, or 403) and never limits it, so it is not replayed. */
	const struct rl_settings *set = rl_ruleset_settings(rs);
	char *stats = NULL, *norm = NULL;
	uint64_t nstats = 0;
	if (set->stats != NULL) {
		size_t sl;
		struct rl_diag sd;
		stats = malloc(strlen(set->stats) + 1);
		norm = malloc(RL_PATH_MAX + 2);
		if (stats == NULL || norm == NULL ||
		    rl_path_normalize(set->stats, strlen(set->stats),
				      set->case_insensitive, stats, &sl, &sd) != 0) {
			free(stats);
			stats = NULL;   /* the loader checked it: out of memory */
		}
	}
	long got;
	int over;

	while ((got = read_line(in, line, MAX_LINE + 2, &over)) >= 0) {
		size_t len = (size_t)got;
		char err[300];

		lineno++;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (over || len > MAX_LINE) {
			fprintf(errs, "%s:%llu: line longer than %d bytes, skipped\n",
				name, (unsigned long long)lineno, MAX_LINE);
			bad = 1;
			continue;
		}
		int r = replay_parse_line(line, len, rl, err, sizeof(err));
		if (r == 0)
			continue;
		if (r == 2) {
			norequest++;
			continue;
		}
		if (r < 0) {
			fprintf(errs, "%s:%llu: ", name, (unsigned long long)lineno);
			put_text(errs, err);
			putc('\n', errs);
			bad = 1;
			continue;
		}
		size_t sn;
		struct rl_diag sdg;
		if (stats != NULL &&
		    rl_path_normalize(rl->path, strlen(rl->path),
				      set->case_insensitive, norm, &sn, &sdg) == 0 &&
		    strcmp(norm, stats) == 0) {
			nstats++;
			continue;
		}
		struct rl_request req = {
			.method = rl->method,
			.path = rl->path, .path_len = strlen(rl->path),
			.query = rl->has_query ? rl->query : NULL,
			.query_len = rl->has_query ? strlen(rl->query) : 0,
			.remote_addr = rl->addr,
			.remote_addr_len = strlen(rl->addr),
			.cost = rl->cost,
		};
		struct rl_decision d;
		enum rl_outcome o = rl_decide(rs, &st, &req, rl->t_ms, RL_HIT, &d);
		/* What a log cannot carry: how long a request was in flight
		 * (concurrency=) and the size of its body (bandwidth=; the
		 * logged size is the response's).  Those limits are not
		 * replayed, the rule's request limits are: said once a
		 * rule. */
		if (d.rule != NULL && !(said[d.rule->index] & SAID_UNREPLAYED) &&
		    (d.rule->concurrency > 0 || d.rule->nbandwidth > 0)) {
			int both = d.rule->concurrency > 0 && d.rule->nbandwidth > 0;
			fprintf(errs, "%s:%llu: rule %s (%s:%u) has %s%s%s, which replay cannot replay (a log records neither how long a request was in flight nor the size of its body): only its request limits are replayed\n",
				name, (unsigned long long)lineno,
				d.rule->pattern.text, d.rule->file, d.rule->line,
				d.rule->concurrency > 0 ? "concurrency=" : "",
				both ? " and " : "",
				d.rule->nbandwidth > 0 ? "bandwidth=" : "");
			said[d.rule->index] |= SAID_UNREPLAYED;
		}
		/* A deduct-when= rule's limits were only checked: the
		 * gateway counts them after the response when its status is
		 * in the set, and a log line says what the status was.  A
		 * trace line does not: it is counted as the CGI wrapper
		 * counts such a rule, as if every answer matched (said once
		 * a rule).  The remaining printed stays the check's, as the
		 * gateway's headers say it. */
		if (o == RL_ALLOW && d.rule != NULL && d.rule->deduct) {
			int code = rl->status;
			for (int c = 100; c <= 599 && code == 0; c++)
				if (rl_rule_deducts(d.rule, c))
					code = c;
			if (rl->status == 0 && !(said[d.rule->index] & SAID_DEDUCT)) {
				fprintf(errs, "%s:%llu: rule %s (%s:%u) has deduct-when=, which counts by the response status, and this line records none: its requests are counted as if every answer were one of those statuses\n",
					name, (unsigned long long)lineno,
					d.rule->pattern.text, d.rule->file,
					d.rule->line);
				said[d.rule->index] |= SAID_DEDUCT;
			}
			struct rl_diag e;
			if (code != 0 &&
			    rl_after_response(rs, &st, &req, code, 0, rl->t_ms, &e) != 0) {
				fprintf(errs, "%s:%llu: counting a deduct-when= rule: %s\n",
					name, (unsigned long long)lineno, e.msg);
				bad = 1;
			}
		}
		int refused = o == RL_BAD_REQUEST || o == RL_TOO_LARGE ||
			      o == RL_STORE_ERROR;
		if (refused) {
			errors++;
			fprintf(errs, "%s:%llu: ", name, (unsigned long long)lineno);
			put_text(errs, d.error);
			putc('\n', errs);
		}
		if (summary) {
			dry += d.would_deny && o == RL_ALLOW;
			/* a missing key under missing-key=deny is a denial
			 * too: the client was refused by the rules */
			if (o == RL_DENY || o == RL_DENY_KEY) {
				denied++;
				tally_add(&clients, d.client[0] ? d.client : "-");
				/* by the path the rules read: /login,
				 * //login and /%6cogin are one row */
				char np[RL_PATH_MAX + 1];
				size_t nl;
				struct rl_diag nd = { 0, "" };
				tally_add(&paths,
					  rl_path_normalize(rl->path, strlen(rl->path),
							    rl_ruleset_settings(rs)->case_insensitive,
							    np, &nl, &nd) == 0 ? np : rl->path);
			}
			index++;
			continue;
		}
		switch (o) {
		case RL_ALLOW:
			if (d.limit == NULL)
				fprintf(out, "%llu\tallow\t-\t-\t-",
					(unsigned long long)index);
			else {
				fprintf(out, "%llu\tallow\t",
					(unsigned long long)index);
				put_field(out, d.limit->text);
				fprintf(out, "\t%llu\t-",
					(unsigned long long)d.remaining);
			}
			if (d.would_deny)
				fputs("\tdry-run-deny", out);
			break;
		case RL_DENY:
			fprintf(out, "%llu\tdeny\t", (unsigned long long)index);
			put_field(out, d.limit->text);
			fprintf(out, "\t%llu\t%lld",
				(unsigned long long)d.remaining,
				(long long)rl_retry_seconds(d.retry_ms));
			break;
		case RL_DENY_KEY:
			fprintf(out, "%llu\tdeny\tmissing-key\t-\t-",
				(unsigned long long)index);
			break;
		case RL_BAD_REQUEST:
		case RL_TOO_LARGE:
		case RL_STORE_ERROR:
			fprintf(out, "%llu\terror\t-\t-\t-",
				(unsigned long long)index);
			break;
		}
		if (verbose)
			why(out, &d);
		fputc('\n', out);
		index++;
	}
	int read_errno = errno;         /* of the getc that ended the loop */
	if (summary) {
		fprintf(out, "%llu requests, %llu denied", (unsigned long long)index,
			(unsigned long long)denied);
		if (dry > 0)
			fprintf(out, ", %llu would be denied by dry-run limits",
				(unsigned long long)dry);
		if (errors > 0)
			fprintf(out, ", %llu refused as errors (see standard error)",
				(unsigned long long)errors);
		if (norequest > 0)
			fprintf(out, "; %llu log lines without a request (\"-\") skipped",
				(unsigned long long)norequest);
		if (nstats > 0)
			fprintf(out, "; %llu requests for the statistics path %s skipped",
				(unsigned long long)nstats, set->stats);
		fputc('\n', out);
		tally_print(&clients, "denied requests by client:", out);
		tally_print(&paths, "denied requests by path:", out);
	}
	if (!summary && norequest > 0)
		fprintf(errs, "%s: %llu log lines without a request (\"-\") skipped\n",
			name, (unsigned long long)norequest);
	if (!summary && nstats > 0)
		fprintf(errs, "%s: %llu requests for the statistics path %s skipped (the gateway answers them itself, never limited)\n",
			name, (unsigned long long)nstats, set->stats);
	if (ferror(in)) {
		fprintf(errs, "%s: read error: %s\n", name, strerror(read_errno));
		bad = 1;
	}
	uint64_t limiting, evicted = memstore_evictions(&st, &limiting);
	if (evicted + limiting > 0)
		fprintf(errs, "%s: the replay store holds %zu keys and forgot %llu live ones to take new ones (%llu of them limiting a client): later decisions are those of a store of that size\n",
			name, replay_max_keys,
			(unsigned long long)(evicted + limiting),
			(unsigned long long)limiting);
	st.ops->destroy(st.impl);
	free(stats);
	free(norm);
	free(said);
	free(line);
	free(rl);
	return bad;
}
